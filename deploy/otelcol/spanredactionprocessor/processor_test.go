package spanredactionprocessor

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestSpanTextAndLinksAreScrubbed(t *testing.T) {
	r, err := newSpanRedaction(&Config{
		IgnoredKeys:          []string{"user_id_hash"},
		DropKeys:             []string{"user.email"},
		DropKeyPatterns:      []string{`^gen_ai\.prompt\.\d+\.content$`},
		BlockedValues:        []string{`[a-z.]+@[a-z]+\.com`, `\bsk-[a-z0-9]{8,}`, `(?i)\bbearer\s+\S{8,}`},
		Replacement:          "****",
		NameQueryReplacement: "?****",
	})
	if err != nil {
		t.Fatal(err)
	}
	td := ptrace.NewTraces()
	resource := td.ResourceSpans().AppendEmpty()
	resource.Resource().Attributes().PutStr("owner", "ops bob@corp.com")
	scope := resource.ScopeSpans().AppendEmpty()
	scope.Scope().Attributes().PutStr("k", "Bearer abcdefgh12")
	span := scope.Spans().AppendEmpty()
	attrs := span.Attributes()
	attrs.PutStr("user_id_hash", "sk-abcdef123456")
	attrs.PutInt("tokens", 120)
	attrs.PutEmptyMap("request").PutStr("to", "jane@example.com")
	attrs.PutStr("gen_ai.request.model", "gpt-4.1")
	attrs.PutStr("user.email", "jane@example.com")
	attrs.PutStr("gen_ai.prompt.3.content", "hi")
	span.SetName("GET /users/jane@example.com?token=abc")
	span.Status().SetMessage("401 for BEARER abcdefgh12 and sk-abcdef123456")
	mail := span.Events().AppendEmpty()
	mail.SetName("mail to bob@corp.com")
	mail.Attributes().PutStr("body", "from jane@example.com")
	span.Events().AppendEmpty().SetName("chat gpt-4.1")
	link := span.Links().AppendEmpty().Attributes()
	link.PutStr("user.email", "jane@example.com")
	link.PutStr("gen_ai.prompt.0.content", "hello")
	link.PutStr("note", "key sk-abcdef123456")
	link.PutEmptySlice("list").AppendEmpty().SetStr("x bob@corp.com")

	if _, err := r.process(t.Context(), td); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want string }{
		{span.Name(), "GET /users/****?****"},
		{span.Status().Message(), "401 for **** and ****"},
		{span.Events().At(0).Name(), "mail to ****"},
		{span.Events().At(1).Name(), "chat gpt-4.1"},
		{link.AsRaw()["note"].(string), "key ****"},
		{resource.Resource().Attributes().AsRaw()["owner"].(string), "ops ****"},
		{scope.Scope().Attributes().AsRaw()["k"].(string), "****"},
		{mail.Attributes().AsRaw()["body"].(string), "from ****"},
		// The hash target is never masked; a list or map is masked in its string form.
		{attrs.AsRaw()["user_id_hash"].(string), "sk-abcdef123456"},
		{attrs.AsRaw()["request"].(string), `{"to":"****"}`},
		{attrs.AsRaw()["gen_ai.request.model"].(string), "gpt-4.1"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if v, _ := attrs.Get("tokens"); v.Int() != 120 {
		t.Errorf("an unmatched number changed: %v", v.AsRaw())
	}
	for _, k := range []string{"user.email", "gen_ai.prompt.3.content"} {
		if _, ok := attrs.Get(k); ok {
			t.Errorf("span attribute %s was not removed", k)
		}
	}
	if link.Len() != 2 {
		t.Errorf("link attributes %v: the dropped keys are still there", link.AsRaw())
	}
	if got := link.AsRaw()["list"].([]any)[0]; got != "x ****" {
		t.Errorf("nested value %q not masked", got)
	}
}

func TestIdentitiesAreHashedAndURLsCut(t *testing.T) {
	t.Setenv("TEST_PII_SALT", "s3cr3t")
	r, err := newSpanRedaction(&Config{
		IgnoredKeys: []string{"user_id_hash"},
		DropKeys:    []string{"user_id", "enduser.id", "user.id"},
		Replacement: "****",
		HashTarget:  "user_id_hash",
		HashKeys:    []string{"user_id", "enduser.id", "user.id"},
		HashSaltEnv: "TEST_PII_SALT",
		URLKeys:     []string{"http.url", "url.full"},
		URLPartKeys: []string{"url.query"},
	})
	if err != nil {
		t.Fatal(err)
	}
	digest := func(v string) string {
		sum := sha256.Sum256([]byte("s3cr3t" + v))
		return hex.EncodeToString(sum[:])
	}
	kept := digest("already")
	td := ptrace.NewTraces()
	resource := td.ResourceSpans().AppendEmpty()
	resource.Resource().Attributes().PutStr("user_id_hash", "raw-id")
	scope := resource.ScopeSpans().AppendEmpty()
	scope.Scope().Attributes().PutStr("user_id_hash", kept)
	span := scope.Spans().AppendEmpty()
	attrs := span.Attributes()
	attrs.PutStr("user_id", "")
	attrs.PutStr("enduser.id", "u-1")
	attrs.PutStr("user.id", "u-2")
	attrs.PutStr("http.url", "https://h/p?a=1&b=2#frag")
	attrs.PutStr("url.full", "https://h/p#x?y")
	attrs.PutStr("url.query", "a=1")
	event := span.Events().AppendEmpty().Attributes()
	event.PutInt("user_id", 42)
	event.PutStr("url.query", "")
	event.PutInt("http.url", 7)

	if _, err := r.process(t.Context(), td); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want any }{
		// the first key with a value, in the configured order; "" is no value
		{attrs.AsRaw()["user_id_hash"], digest("u-1")},
		// a target holding no digest is hashed; a digest is kept
		{resource.Resource().Attributes().AsRaw()["user_id_hash"], digest("raw-id")},
		{scope.Scope().Attributes().AsRaw()["user_id_hash"], kept},
		// a number is hashed in its string form
		{event.AsRaw()["user_id_hash"], digest("42")},
		{attrs.AsRaw()["http.url"], "https://h/p?****#****"},
		{attrs.AsRaw()["url.full"], "https://h/p#****"},
		{attrs.AsRaw()["url.query"], "****"},
		{event.AsRaw()["url.query"], ""},
		{event.AsRaw()["http.url"], int64(7)},
	} {
		if c.got != c.want {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
	for _, k := range []string{"user_id", "enduser.id", "user.id"} {
		if _, ok := attrs.Get(k); ok {
			t.Errorf("identity key %s was not removed", k)
		}
	}

	t.Setenv("TEST_PII_SALT", "")
	if _, err := newSpanRedaction(&Config{HashTarget: "user_id_hash", HashSaltEnv: "TEST_PII_SALT"}); err == nil {
		t.Error("an empty salt was accepted")
	}
}

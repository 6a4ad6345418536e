package spanredactionprocessor

import (
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"
	"testing"
)

// policyPatterns reads the value patterns of the shipped policy, so the test follows its edits. The
// file's [redact.patterns] entries are TOML literal strings, one per line.
func policyPatterns(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../pii-policy.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Entries are 'literal' or '''literal''' (a pattern holding a single quote).
	entry := regexp.MustCompile(`^([A-Za-z0-9_]+)\s*=\s*(?:'''(.*)'''|'(.*)')\s*$`)
	patterns := map[string]string{}
	inPatterns := false
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "[") {
			inPatterns = strings.TrimSpace(line) == "[redact.patterns]"
			continue
		}
		if m := entry.FindStringSubmatch(line); inPatterns && m != nil {
			patterns[m[1]] = m[2] + m[3]
		}
	}
	if len(patterns) < 10 {
		t.Fatalf("found %d patterns in ../pii-policy.toml: the reader no longer follows its layout", len(patterns))
	}
	return patterns
}

func literalsOf(t *testing.T, pattern string) []string {
	t.Helper()
	p, err := newPrefilter(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		return nil
	}
	var out []string
	for _, set := range p.sets {
		var texts []string
		for c := 0; c < 256; c++ {
			if set.bytes.has(byte(c)) {
				texts = append(texts, string(rune(c)))
			}
		}
		for _, l := range set.multi {
			if l.fold {
				texts = append(texts, "(?i)"+l.text)
			} else {
				texts = append(texts, l.text)
			}
		}
		sort.Strings(texts)
		out = append(out, strings.Join(texts, "|"))
	}
	return out
}

func TestRequiredLiterals(t *testing.T) {
	cases := map[string]string{
		`[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+\.[A-Za-z]{2,}`: "%40|@ .",
		`\bsk-[A-Za-z0-9_-]{16,}`:                               "sk-",
		`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`:                         "KIA|SIA A",
		`(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}`:                 "(?i)bearer \t|\n|\f|\r| ",
		`\beyJ[A-Za-z0-9_-]{5,}`:                                "eyJ",
		`\+\d[\d\s().-]{6,18}\d`:                                "+ 0|1|2|3|4|5|6|7|8|9",
		`\b[2-6]\d{3}`:                                          "2|3|4|5|6 0|1|2|3|4|5|6|7|8|9",
		`x*`:                                                    "",
		`(?:a|.)b?`:                                             "",
		`[^\s]+`:                                                "",
	}
	for pattern, want := range cases {
		if got := strings.Join(literalsOf(t, pattern), " "); got != want {
			t.Errorf("%s: literals %q, want %q", pattern, got, want)
		}
	}
}

// TestPrefilterNeverHidesAMatch: on texts built from the pieces PII is made of, every pattern that
// matches must pass its prefilter (a prefilter may only ever skip a pattern that cannot match).
func TestPrefilterNeverHidesAMatch(t *testing.T) {
	pieces := []string{
		"jane.doe@example.com", "jane%40example.org", "+44 20 7946 0958", "(555) 123-4567", "555.123.4567",
		"4111111111111111", "4111 1111 1111 1111", "3782 822463 10005", "Bearer abcdefgh12345678",
		"BEARER xyz.abc.def-ghij", "eyJhbGciOi.eyJzdWIiOi.sig_nature", "sk-proj-abcdefghijklmnop1234",
		"sk_live_abcdefghijklmnop1234", "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123456",
		"xoxb-1234567890-abc", "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", "api_key=s3cr3t", "Password: hunter2",
		"TOKEN='abc'", "\u212Aey=zzz", "ſecret=1", "chat gpt-4.1", "POST /v1/route3?q=1", " ", "é", "_", "-", ".",
		"0", "9", "@", "%40", "key", "=", ":", "\t",
	}
	patterns := policyPatterns(t)
	rng := rand.New(rand.NewSource(1))
	texts := append([]string{}, pieces...)
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for n := rng.Intn(4) + 1; n > 0; n-- {
			b.WriteString(pieces[rng.Intn(len(pieces))])
		}
		texts = append(texts, b.String())
	}
	matched := 0
	for name, source := range patterns {
		re := regexp.MustCompile(source)
		filter, err := newPrefilter(source)
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range texts {
			if !re.MatchString(text) {
				continue
			}
			matched++
			tx := newText(text)
			if !filter.mayMatch(&tx) {
				t.Fatalf("pattern %s matches %q but its prefilter skipped it", name, text)
			}
		}
	}
	if matched < 1000 {
		t.Fatalf("only %d matches: the corpus no longer exercises the patterns", matched)
	}
}

func TestShorterTextsCannotMatch(t *testing.T) {
	for pattern, want := range map[string]int{
		`\b[2-6]\d{12,18}\b`: 13, `x*`: 0, `(?:ab|c)d+`: 2, `(?i)sk-`: 3, `[a-z]{2}\.(?:x|yz)`: 4,
	} {
		re, err := syntax.Parse(pattern, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		if got := minRunes(re.Simplify()); got != want {
			t.Errorf("%s: at least %d runes, want %d", pattern, got, want)
		}
	}
}

func TestRunsOfOneClass(t *testing.T) {
	for pattern, want := range map[string][]int{
		`\b[2-6]\d{12,18}\b`:                    {12},
		`\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b`: {3, 3, 4},
		`\d+x`:                                  nil,
		`(?:\d{5}|a)`:                           nil,
		`[é]{3}`:                                nil,
	} {
		re, err := syntax.Parse(pattern, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, run := range requiredRuns(re.Simplify()) {
			got = append(got, run.min)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: runs %v, want %v", pattern, got, want)
		}
	}
	card, _ := newPrefilter(`\b[2-6]\d{12,18}\b`)
	for text, want := range map[string]bool{
		"card 4111111111111111": true, "POST /v1/route3 claude-sonnet-4-5": false, "12345678901 2": false,
	} {
		tx := newText(text)
		if card.mayMatch(&tx) != want {
			t.Errorf("card prefilter on %q: %v, want %v", text, !want, want)
		}
	}
}

func TestEveryShippedPatternHasAPrefilter(t *testing.T) {
	for name, source := range policyPatterns(t) {
		if literalsOf(t, source) == nil {
			t.Errorf("pattern %s has no required literal: it runs on every value", name)
		}
	}
}

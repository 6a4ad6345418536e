// Package spanredactionprocessor masks the PII policy's value patterns everywhere in a span, and
// removes the policy's keys from its attributes.
//
// Values: attribute values of resources, scopes, spans and span events (in their string form, as
// the contrib redaction processor's redact_all_types does: a masked number, list or map becomes a
// string), span names, status messages, span event names and span link attributes. The contrib
// redaction processor and OTTL's replace_pattern do the same with Go's regexp alone, which finds no
// literal prefix in most patterns (they start with \b or a class) and runs its backtracker from every
// position of every text: at saturation they took 57 % of the Collector's CPU (pprof, 2026-11-28).
// Here a pattern runs only on text holding what it requires (prefilter.go).
//
// Keys: the policy's keys are removed from the same attribute maps and from span links, which
// neither the redaction processor nor OTTL reaches at the pinned release (contrib v0.155.0). An
// exact key is a map lookup here; as one OTTL delete_matching_keys regex it took 12-18 % of the
// Collector's CPU.
//
// Before that, in each attribute map but span links': the first identity key present is hashed into
// the hash target, and URLs lose their query strings and fragments. OTTL statements did this until
// 2026-11-28 (sixteen per attribute map), with the salt expanded into them, where the Collector's
// print-config and debug logs could show it; here the salt is read from the environment at start.
package spanredactionprocessor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processorhelper"
)

// Config lists what to remove and mask.
type Config struct {
	// IgnoredKeys are attribute keys whose values are never masked (the hash target holds a digest).
	IgnoredKeys []string `mapstructure:"ignored_keys"`
	// DropKeys are attribute keys removed outright (raw identities, e-mail keys, prompt content):
	// at the top of each attribute map, and at any depth in span links.
	DropKeys []string `mapstructure:"drop_keys"`
	// DropKeyPatterns are regular expressions; matching keys are removed like DropKeys.
	DropKeyPatterns []string `mapstructure:"drop_key_patterns"`
	// BlockedValues are regular expressions; their matches are replaced in attribute values, span
	// names, span status messages and span event names.
	BlockedValues []string `mapstructure:"blocked_values"`
	// Replacement is written in place of each match (default "****").
	Replacement string `mapstructure:"replacement"`
	// NameQueryReplacement, when set, replaces a query string ("?" and what follows up to a space)
	// in span names: a span name should hold none (OpenTelemetry naming rules).
	NameQueryReplacement string `mapstructure:"name_query_replacement"`
	// HashTarget receives the hash of the first of HashKeys present (in their order) with a value:
	// lowercase hex SHA-256 of the salt followed by the value's string form. A target already set that
	// is not 64 lowercase hex characters is a raw value in the wrong place, and is hashed itself.
	HashTarget string   `mapstructure:"hash_target"`
	HashKeys   []string `mapstructure:"hash_keys"`
	// HashSaltEnv names the environment variable holding the secret salt: read at start, so the
	// salt is never in the configuration (nor in print-config's output).
	HashSaltEnv string `mapstructure:"hash_salt_env"`
	// URLKeys hold whole URLs or targets: the query string becomes "?" + Replacement and the
	// fragment "#" + Replacement (string values only).
	URLKeys []string `mapstructure:"url_keys"`
	// URLPartKeys hold a query or a fragment on their own: a value that is not "" becomes Replacement.
	URLPartKeys []string `mapstructure:"url_part_keys"`
}

// Validate compiles every pattern so a bad one fails at start-up, not per span, and checks that
// hashing has a target and a salt.
func (c *Config) Validate() error {
	if len(c.HashKeys) > 0 && (c.HashTarget == "" || c.HashSaltEnv == "") {
		return fmt.Errorf("hash_keys need hash_target and hash_salt_env")
	}
	for _, list := range [][]string{c.DropKeyPatterns, c.BlockedValues} {
		for _, p := range list {
			if _, err := regexp.Compile(p); err != nil {
				return fmt.Errorf("invalid regular expression %q: %w", p, err)
			}
		}
	}
	return nil
}

var componentType = component.MustNewType("spanredaction")

// NewFactory returns the factory of the spanredaction processor (traces only).
func NewFactory() processor.Factory {
	return processor.NewFactory(
		componentType,
		func() component.Config { return &Config{Replacement: "****"} },
		processor.WithTraces(createTraces, component.StabilityLevelDevelopment),
	)
}

type pattern struct {
	re     *regexp.Regexp
	filter *prefilter
}

type spanRedaction struct {
	ignoredKeys  map[string]struct{}
	dropKeys     map[string]struct{}
	dropPatterns []*regexp.Regexp
	blocked      []pattern
	replacement  string
	nameQuery    string
	hashTarget   string
	hashKeys     []string
	salt         string
	urlKeys      []string
	urlPartKeys  []string
}

var (
	queryString = regexp.MustCompile(`\?\S+`)
	urlQuery    = regexp.MustCompile(`\?[^#]*`)
	urlFragment = regexp.MustCompile(`#.*`)
	hexDigest   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func newSpanRedaction(c *Config) (*spanRedaction, error) {
	r := &spanRedaction{
		ignoredKeys: map[string]struct{}{},
		dropKeys:    map[string]struct{}{},
		replacement: c.Replacement,
		nameQuery:   c.NameQueryReplacement,
		hashTarget:  c.HashTarget,
		hashKeys:    c.HashKeys,
		urlKeys:     c.URLKeys,
		urlPartKeys: c.URLPartKeys,
	}
	if c.HashTarget != "" {
		r.salt = os.Getenv(c.HashSaltEnv)
		if r.salt == "" {
			return nil, fmt.Errorf("the hash salt's environment variable %s is empty", c.HashSaltEnv)
		}
	}
	for _, k := range c.IgnoredKeys {
		r.ignoredKeys[k] = struct{}{}
	}
	for _, k := range c.DropKeys {
		r.dropKeys[k] = struct{}{}
	}
	for _, p := range c.DropKeyPatterns {
		r.dropPatterns = append(r.dropPatterns, regexp.MustCompile(p))
	}
	for _, p := range c.BlockedValues {
		filter, err := newPrefilter(p)
		if err != nil {
			return nil, fmt.Errorf("invalid regular expression %q: %w", p, err)
		}
		r.blocked = append(r.blocked, pattern{re: regexp.MustCompile(p), filter: filter})
	}
	return r, nil
}

func createTraces(ctx context.Context, set processor.Settings, cfg component.Config, next consumer.Traces) (processor.Traces, error) {
	r, err := newSpanRedaction(cfg.(*Config))
	if err != nil {
		return nil, err
	}
	return processorhelper.NewTraces(ctx, set, cfg, next, r.process,
		processorhelper.WithCapabilities(consumer.Capabilities{MutatesData: true}))
}

func (r *spanRedaction) process(_ context.Context, td ptrace.Traces) (ptrace.Traces, error) {
	for _, rs := range td.ResourceSpans().All() {
		r.scrubAttributes(rs.Resource().Attributes())
		for _, ss := range rs.ScopeSpans().All() {
			r.scrubAttributes(ss.Scope().Attributes())
			for _, span := range ss.Spans().All() {
				r.processSpan(span)
			}
		}
	}
	return td, nil
}

func (r *spanRedaction) processSpan(span ptrace.Span) {
	r.scrubAttributes(span.Attributes())
	if name, changed := r.mask(span.Name()); changed {
		span.SetName(name)
	}
	if r.nameQuery != "" && queryString.MatchString(span.Name()) {
		span.SetName(queryString.ReplaceAllLiteralString(span.Name(), r.nameQuery))
	}
	if message, changed := r.mask(span.Status().Message()); changed {
		span.Status().SetMessage(message)
	}
	for _, event := range span.Events().All() {
		r.scrubAttributes(event.Attributes())
		if name, changed := r.mask(event.Name()); changed {
			event.SetName(name)
		}
	}
	for _, link := range span.Links().All() {
		r.scrubNested(link.Attributes())
	}
}

// scrubAttributes hashes the identity, cuts URLs, removes the policy's keys and masks each value in
// its string form (a number, list or map is read as it prints); only a value that changes is
// replaced, by the masked string.
func (r *spanRedaction) scrubAttributes(attrs pcommon.Map) {
	r.hashIdentity(attrs)
	r.cutURLs(attrs)
	attrs.RemoveIf(r.dropped)
	for k, v := range attrs.All() {
		if _, ignored := r.ignoredKeys[k]; ignored {
			continue
		}
		if s, changed := r.mask(v.AsString()); changed {
			v.SetStr(s)
		}
	}
}

// mask replaces every pattern's matches, one pattern after the other.
func (r *spanRedaction) mask(s string) (string, bool) {
	if s == "" {
		return s, false
	}
	t := newText(s)
	changed := false
	for _, p := range r.blocked {
		if !p.filter.mayMatch(&t) || !p.re.MatchString(t.s) {
			continue
		}
		t = newText(p.re.ReplaceAllLiteralString(t.s, r.replacement))
		changed = true
	}
	return t.s, changed
}

func (r *spanRedaction) dropped(k string, _ pcommon.Value) bool {
	if _, ok := r.dropKeys[k]; ok {
		return true
	}
	for _, re := range r.dropPatterns {
		if re.MatchString(k) {
			return true
		}
	}
	return false
}

// scrubNested removes the policy's keys and masks strings at any depth, keeping each value's type
// (span links, which the contrib processors never reached and which have been scrubbed so since).
func (r *spanRedaction) scrubNested(attrs pcommon.Map) {
	attrs.RemoveIf(r.dropped)
	for _, v := range attrs.All() {
		r.maskValue(v)
	}
}

func (r *spanRedaction) maskValue(v pcommon.Value) {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		if s, changed := r.mask(v.Str()); changed {
			v.SetStr(s)
		}
	case pcommon.ValueTypeSlice:
		for _, e := range v.Slice().All() {
			r.maskValue(e)
		}
	case pcommon.ValueTypeMap:
		r.scrubNested(v.Map())
	}
}

// present is an attribute with a value ("" counts as none unless allowEmpty).
func present(attrs pcommon.Map, key string, allowEmpty bool) (pcommon.Value, bool) {
	v, ok := attrs.Get(key)
	if !ok || v.Type() == pcommon.ValueTypeEmpty {
		return v, false
	}
	return v, allowEmpty || v.Type() != pcommon.ValueTypeStr || v.Str() != ""
}

// hashIdentity sets the hash target from the first identity key present, or hashes a target that
// holds no digest; the identity keys themselves are removed afterwards (they are drop keys).
func (r *spanRedaction) hashIdentity(attrs pcommon.Map) {
	if r.hashTarget == "" {
		return
	}
	if v, ok := present(attrs, r.hashTarget, true); ok {
		if s := v.AsString(); !hexDigest.MatchString(s) {
			v.SetStr(r.digest(s))
		}
		return
	}
	for _, k := range r.hashKeys {
		if v, ok := present(attrs, k, false); ok {
			attrs.PutStr(r.hashTarget, r.digest(v.AsString()))
			return
		}
	}
}

func (r *spanRedaction) digest(value string) string {
	sum := sha256.Sum256([]byte(r.salt + value))
	return hex.EncodeToString(sum[:])
}

// cutURLs replaces query strings and fragments in URL values, and URL parts whole.
func (r *spanRedaction) cutURLs(attrs pcommon.Map) {
	for _, k := range r.urlKeys {
		v, ok := attrs.Get(k)
		if !ok || v.Type() != pcommon.ValueTypeStr || !strings.ContainsAny(v.Str(), "?#") {
			continue
		}
		s := urlQuery.ReplaceAllLiteralString(v.Str(), "?"+r.replacement)
		v.SetStr(urlFragment.ReplaceAllLiteralString(s, "#"+r.replacement))
	}
	for _, k := range r.urlPartKeys {
		if v, ok := present(attrs, k, false); ok {
			v.SetStr(r.replacement)
		}
	}
}

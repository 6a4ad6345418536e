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
// Collector's CPU. Identity keys are hashed before, by the transform processor (OTTL).
package spanredactionprocessor

import (
	"context"
	"fmt"
	"regexp"

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
}

// Validate compiles every pattern so a bad one fails at start-up, not per span.
func (c *Config) Validate() error {
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
}

var queryString = regexp.MustCompile(`\?\S+`)

func newSpanRedaction(c *Config) (*spanRedaction, error) {
	r := &spanRedaction{
		ignoredKeys: map[string]struct{}{},
		dropKeys:    map[string]struct{}{},
		replacement: c.Replacement,
		nameQuery:   c.NameQueryReplacement,
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

// scrubAttributes removes the policy's keys and masks each value in its string form (a number, list
// or map is read as it prints); only a value that changes is replaced, by the masked string.
func (r *spanRedaction) scrubAttributes(attrs pcommon.Map) {
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

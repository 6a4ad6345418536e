// Package linkredactionprocessor applies the PII policy to span link attributes.
//
// At the pinned release (contrib v0.155.0) neither the redaction processor nor OTTL
// reaches span links (OTTL has no span-link context; the redaction processor walks
// resource, scope, span and span-event attributes only), so this small processor
// covers that one gap with the same regular expressions. Everything else in the PII
// policy is done by those well-kept components.
package linkredactionprocessor

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

// Config lists what to remove from and mask in every span link's attributes.
type Config struct {
	// DropKeys are removed outright (raw identities, e-mail keys, prompt content).
	DropKeys []string `mapstructure:"drop_keys"`
	// DropKeyPatterns are regular expressions; matching keys are removed.
	DropKeyPatterns []string `mapstructure:"drop_key_patterns"`
	// BlockedValues are regular expressions; matches inside string values are replaced.
	BlockedValues []string `mapstructure:"blocked_values"`
	// Replacement is written in place of each match (default "****").
	Replacement string `mapstructure:"replacement"`
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

var componentType = component.MustNewType("linkredaction")

// NewFactory returns the factory of the linkredaction processor (traces only).
func NewFactory() processor.Factory {
	return processor.NewFactory(
		componentType,
		func() component.Config { return &Config{Replacement: "****"} },
		processor.WithTraces(createTraces, component.StabilityLevelDevelopment),
	)
}

type linkRedaction struct {
	dropKeys     map[string]struct{}
	dropPatterns []*regexp.Regexp
	blocked      []*regexp.Regexp
	replacement  string
}

func createTraces(ctx context.Context, set processor.Settings, cfg component.Config, next consumer.Traces) (processor.Traces, error) {
	c := cfg.(*Config)
	r := &linkRedaction{dropKeys: map[string]struct{}{}, replacement: c.Replacement}
	for _, k := range c.DropKeys {
		r.dropKeys[k] = struct{}{}
	}
	for _, p := range c.DropKeyPatterns {
		r.dropPatterns = append(r.dropPatterns, regexp.MustCompile(p))
	}
	for _, p := range c.BlockedValues {
		r.blocked = append(r.blocked, regexp.MustCompile(p))
	}
	return processorhelper.NewTraces(ctx, set, cfg, next, r.process,
		processorhelper.WithCapabilities(consumer.Capabilities{MutatesData: true}))
}

func (r *linkRedaction) process(_ context.Context, td ptrace.Traces) (ptrace.Traces, error) {
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, span := range ss.Spans().All() {
				for _, link := range span.Links().All() {
					r.scrub(link.Attributes())
				}
			}
		}
	}
	return td, nil
}

func (r *linkRedaction) scrub(attrs pcommon.Map) {
	attrs.RemoveIf(func(k string, _ pcommon.Value) bool {
		if _, ok := r.dropKeys[k]; ok {
			return true
		}
		for _, re := range r.dropPatterns {
			if re.MatchString(k) {
				return true
			}
		}
		return false
	})
	for _, v := range attrs.All() {
		r.maskValue(v)
	}
}

// maskValue masks strings, and strings nested in arrays and maps, in place.
func (r *linkRedaction) maskValue(v pcommon.Value) {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		s := v.Str()
		for _, re := range r.blocked {
			s = re.ReplaceAllLiteralString(s, r.replacement)
		}
		if s != v.Str() {
			v.SetStr(s)
		}
	case pcommon.ValueTypeSlice:
		for _, e := range v.Slice().All() {
			r.maskValue(e)
		}
	case pcommon.ValueTypeMap:
		r.scrub(v.Map())
	}
}

// Command mp-otelcol is the metrics platform's own OpenTelemetry Collector
// distribution. We build it ourselves (instead of using a prebuilt contrib
// binary) so that the exact component set and versions are pinned in go.mod
// and the binary can be produced from the Go module proxy alone.
package main

import (
	"log"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/memorylimiterprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/kafkaexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/bearertokenauthextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/healthcheckextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/attributesprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/transformprocessor"

	"github.com/metrics-platform/deploy/otelcol/spanredactionprocessor"
)

// version is overridable at link time (-ldflags "-X main.version=...") so a
// build can carry the repo revision; the default names the pinned release.
var version = "0.155.0-mp"

// components lists every factory the distribution ships. Keeping the set
// small keeps the binary, the build time and the dependency surface small;
// anything not listed here cannot be referenced from config.yaml.
func components() (otelcol.Factories, error) {
	var err error
	f := otelcol.Factories{
		// Required at this release (config loading fails without it): the
		// collector's own logs and metrics, including the Prometheus endpoint
		// that exposes otelcol_exporter_queue_size, come from this factory.
		Telemetry: otelconftelemetry.NewFactory(),
	}

	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](
		otlpreceiver.NewFactory(),
	); err != nil {
		return f, err
	}
	if f.Processors, err = otelcol.MakeFactoryMap[processor.Factory](
		memorylimiterprocessor.NewFactory(),
		// No batch processor: it holds spans in memory after the receiver has
		// answered 200, so a crash loses them. Batching happens in the kafka
		// exporter's persistent sending queue instead (config.yaml).
		transformprocessor.NewFactory(),
		// Our own, with the transform processor the PII policy (pii-policy.toml,
		// rendered by the launcher): the value patterns everywhere in a span, each
		// run only on text holding what it requires, and the key removal on span
		// links, which no component at this release reaches.
		spanredactionprocessor.NewFactory(),
		// Not used by config.yaml, but cheap to include and handy for ad-hoc
		// redaction configs.
		attributesprocessor.NewFactory(),
	); err != nil {
		return f, err
	}
	if f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](
		kafkaexporter.NewFactory(),
		// Debug exporter is for local troubleshooting (print spans to stderr).
		debugexporter.NewFactory(),
	); err != nil {
		return f, err
	}
	if f.Extensions, err = otelcol.MakeFactoryMap[extension.Factory](
		healthcheckextension.NewFactory(),
		// Persists the kafka exporter's sending queue, so spans accepted while Kafka is
		// unreachable survive a Collector restart.
		filestorage.NewFactory(),
		// Optional bearer-token authentication on the OTLP receivers (the launcher adds it to
		// the config only when METRICS_PLATFORM_OTLP_AUTH is on).
		bearertokenauthextension.NewFactory(),
	); err != nil {
		return f, err
	}
	return f, nil
}

func main() {
	info := component.BuildInfo{
		Command:     "mp-otelcol",
		Description: "Metrics platform OpenTelemetry Collector (OTLP -> PII scrub -> Kafka)",
		Version:     version,
	}

	set := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		// Only file: (the --config path) and env: (the ${env:VAR} references
		// in config.yaml) are needed; leaving out http/https/yaml providers
		// means a config can never pull settings from the network.
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(),
					envprovider.NewFactory(),
				},
			},
		},
	}

	// NewCommand gives us the standard CLI (--config, `validate`, `components`)
	// so operators use the same flags as any upstream collector build.
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		log.Fatalf("collector server run finished with error: %v", err)
	}
}

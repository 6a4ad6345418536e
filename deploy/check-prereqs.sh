#!/usr/bin/env bash
# Checks the toolchains the platform builds and runs with, and installs the Debian ones that
# are missing (Java for Kafka, Maven to fetch its jars). Go must be 1.26+ for the Collector;
# Debian's is older, so a missing Go is reported rather than installed.
set -euo pipefail

missing_debs=()
command -v python3 >/dev/null || missing_debs+=(python3 python3-venv)
command -v java >/dev/null || missing_debs+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing_debs+=(maven)
# The network tests make their certificates with it (a private CA for TLS on OTLP, Kafka, ClickHouse).
command -v openssl >/dev/null || missing_debs+=(openssl)
if ((${#missing_debs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${missing_debs[*]} from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}"
  else
    echo "missing: ${missing_debs[*]} (install them, then re-run)" >&2
    exit 1
  fi
fi

# Headless Chromium renders Superset dashboards in the tests and for the docs' screenshots. Only
# the tests need it, so a machine where it cannot be installed gets a warning, not a failure.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver from Debian's packages (dashboard rendering tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  else
    echo "warning: chromium and chromium-driver are missing; the dashboard rendering tests need them" >&2
  fi
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required" >&2; exit 1; }
java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
[[ ${java_major%%.*} -ge 17 ]] || { echo "Java 17+ is required by Kafka 4 (found $java_major)" >&2; exit 1; }
if ! command -v go >/dev/null; then
  echo "Go 1.26+ is required to build the OpenTelemetry Collector (deploy/otelcol)" >&2
  exit 1
fi
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ $go_minor -ge 26 ]] || { echo "Go 1.26+ is required (found $(go env GOVERSION))" >&2; exit 1; }

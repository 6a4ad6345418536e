# Everything installs into this checkout's ignored folders: .venv, .cache (pip, Maven, Go,
# Collector binary) and .state (data, logs, pids). See README.md.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
DEMO_RATE ?= 20
DEMO_SECONDS ?= 30

.PHONY: install up down status demo test lint bench clean-state manifest-tools dashboards

# Helm, for validating the chart in tests/test_manifests.py: built from the Go module proxy, cached.
# (The Kubernetes and Compose JSON schemas come with the dev extras in pyproject.toml.)
HELM_VERSION := v3.22.0
HELM := .cache/helm/$(HELM_VERSION)/helm

$(BIN)/.installed: pyproject.toml deploy/check-prereqs.sh
	@bash deploy/check-prereqs.sh
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

# Go's caches inside the checkout, as the launcher's Collector build uses them.
GO_ENV := GOMODCACHE=$(CURDIR)/.cache/go/mod GOCACHE=$(CURDIR)/.cache/go/build GOFLAGS=-modcacherw \
	GOTOOLCHAIN=local CGO_ENABLED=0

$(HELM):
	@mkdir -p $(@D)
	GOBIN=$(CURDIR)/$(@D) $(GO_ENV) go install -trimpath \
	  -ldflags='-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

manifest-tools: $(HELM)

up: install
	$(BIN)/metrics-platform up
	$(BIN)/metrics-platform demo --rate $(DEMO_RATE) --duration $(DEMO_SECONDS)
	$(BIN)/metrics-platform summary

# `up` provisions deploy/superset/dashboards/*.yaml into Superset; after editing one, run this.
dashboards: install
	$(BIN)/metrics-platform dashboards provision

down: install
	$(BIN)/metrics-platform down

status: install
	$(BIN)/metrics-platform status

demo: install
	$(BIN)/metrics-platform demo --rate $(DEMO_RATE) --duration $(DEMO_SECONDS)

test: install manifest-tools
	$(BIN)/ruff check metrics_platform tests bench
	$(BIN)/dg check defs
	cd deploy/otelcol && $(GO_ENV) go test ./spanredactionprocessor/
	$(BIN)/metrics-platform install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check metrics_platform tests bench
	$(BIN)/ruff format --check metrics_platform tests bench

bench: install
	$(BIN)/python bench/e2e_throughput.py

# Ours against the contrib clickhouseexporter path, same load, one run (~6 min; own ports 33000+/33500+).
.PHONY: bench-peer
bench-peer: install
	$(BIN)/python bench/compare_peer.py --profile

clean-state: down
	rm -rf .state

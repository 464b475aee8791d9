# voxgate: `make run` serves a demo, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: run test lint typecheck pytest sysdeps setup clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

sysdeps:
	scripts/install-sysdeps.sh

run: setup
	$(PY) -m voxgate.server.demo

lint: setup
	$(VENV)/bin/ruff check voxgate tests loadtest
	$(VENV)/bin/ruff format --check voxgate tests loadtest

typecheck: setup
	$(VENV)/bin/mypy --strict voxgate

pytest: setup sysdeps
	$(VENV)/bin/pytest -q -p no:cacheprovider

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .voxgate .mypy_cache .ruff_cache

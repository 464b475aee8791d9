# voxgate: `make run` serves a demo, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: run test lint typecheck pytest sysdeps setup clean bench web web-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	@if command -v npm >/dev/null; then $(MAKE) web; \
	else echo "npm not found: using the committed console build in voxgate/server/console"; fi
	$(PIP) install --quiet -e '.[all,dev]'
	touch $(STAMP)

# The web console (web/, React + Vite) builds into voxgate/server/console, which
# is committed so that an install without Node still serves /console/.
CONSOLE_OUT := voxgate/server/console

web:
	npm ci --prefix web --no-audit --no-fund
	npm run build --prefix web

# Rebuild and fail when the committed build differs from what web/ produces.
web-check:
	@if command -v npm >/dev/null; then \
	  $(MAKE) web && git diff --exit-code --stat -- $(CONSOLE_OUT) \
	  && test -z "$$(git status --porcelain --untracked-files=all -- $(CONSOLE_OUT))" \
	  || { echo "voxgate/server/console is stale: run 'make web' and commit it" >&2; exit 1; }; \
	else echo "npm not found: skipping the console build check"; fi

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

test: lint typecheck web-check pytest

clean:
	rm -rf $(VENV) .voxgate .mypy_cache .ruff_cache

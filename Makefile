# voxgate: `make run` serves a demo, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Every Python package the server, the tests and the tools use, at exact versions
# with hashes (CPython 3.11 on Linux x86_64). `make run`, `make test` and the
# Dockerfile install from it; `make lock` refreshes it, on purpose only.
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | md5sum | cut -c1-12)

.PHONY: run test lint typecheck pytest sysdeps setup clean bench web web-check lock lock-check

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml $(LOCK)
	@if command -v npm >/dev/null; then $(MAKE) web; \
	else echo "npm not found: using the committed console build in voxgate/server/console"; fi
	$(PIP) install --quiet --require-hashes -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@$(MAKE) --no-print-directory lock-check
	touch $(STAMP)

# Fails when pyproject asks for something the lock does not hold (no index is
# consulted: every requirement must already be installed from the lock).
lock-check:
	@$(PIP) install --quiet --dry-run --no-index --no-build-isolation -e '.[all,dev]' \
	  || { echo "$(LOCK) does not satisfy pyproject.toml: run 'make lock' and commit it" >&2; exit 1; }

lock: $(PY)
	@test -x $(VENV)/bin/uv || $(PIP) install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command 'make lock' -o $(LOCK)

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

# Extra serve flags: make run ARGS="--http-port 8081"
run: setup
	@$(PY) -m voxgate.server.demo $(ARGS)

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

# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
# The web UI's front-end libraries (package-lock.json pins them): reinstalled when the lock changes.
ASSETS_STAMP := node_modules/.installed-$(shell cat package.json package-lock.json | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench system-deps venv assets clean harnesses

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || "$$(scripts/find-python)" -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

$(ASSETS_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

assets: $(ASSETS_STAMP)

system-deps:
	@scripts/install-system-deps

## The harness CLIs (claude, codex, opencode) and the Agent SDK, into LAP_TOOLS_DIR (./.lap-tools)
harnesses:
	@scripts/install-harnesses

## Start the platform on the embedded default (SQLite, local sandboxes) at http://$(HOST):$(PORT)
run: system-deps venv assets
	$(PY) manage.py migrate --no-input -v 0
	$(PY) manage.py lap_bootstrap
	$(PY) manage.py lap_serve --host $(HOST) --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

## The whole suite (SQLite unless DATABASE_URL / REDIS_URL are set)
test: system-deps venv assets lint
	$(PY) manage.py makemigrations --check --dry-run -v 0 --settings lapsite.settings_test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: system-deps venv
	$(PY) -m bench

clean:
	if [ -x $(VENV)/bin/python ] && [ -e .lap-state/lap.sqlite3 ]; then \
		$(VENV)/bin/python manage.py lap_down; fi
	rm -rf $(VENV) .lap-state node_modules

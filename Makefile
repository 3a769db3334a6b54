# Aether — the two commands first: `make run` and `make test`. `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help run test test-unit lint fmt typecheck check migrate demo clean fuzz bench console soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=24'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,dev]'
	@touch $(STAMP)

run: $(STAMP) ## migrate the embedded SQLite database, load the demo account, serve on :8000 (or PORT=8080 make run)
	@mkdir -p var
	$(BIN)/aether migrate
	@echo "demo account API key: $$($(BIN)/aether demo)"
	@echo "try: curl -H \"X-API-Key: <key>\" http://127.0.0.1:$(PORT)/v3/crud/event"
	$(BIN)/aether serve --host 127.0.0.1 --port $(PORT)

test: $(STAMP) ## the whole suite (SQLite always; MariaDB, PostgreSQL, Redis when they answer)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

test-unit: $(STAMP) ## the unit tests alone
	$(BIN)/pytest tests/unit

lint: $(STAMP) ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: $(STAMP) ## mypy --strict on engine, registry and models
	$(BIN)/mypy

fmt: $(STAMP) ## format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test ## what CI runs

fuzz: $(STAMP) ## schemathesis against a real server on a fresh SQLite DB (bounded; not in `make test`)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[fuzz]'
	$(BIN)/python -m tests.fuzz.run_schemathesis --max-examples 20 --max-time 150

PERF_KIT ?= ../shared/perf
bench: $(STAMP) ## side by side with the hand-written reference on MariaDB when $(PERF_KIT) exists, else the quick SQLite run
	@if [ -f "$(PERF_KIT)/compare.sh" ]; then \
		bash "$(PERF_KIT)/compare.sh"; \
	else \
		echo "no $(PERF_KIT)/compare.sh: the quick SQLite run (one server, no reference)"; \
		$(BIN)/python -m tests.bench.run; \
	fi

soak: $(STAMP) ## two workers, 64 clients, 3 minutes of nested reads with writes and deletes (MariaDB + Redis; not in `make test`)
	$(BIN)/python -m tests.soak.run --duration 180 --clients 64 --workers 2

console: ## rebuild the web console into engine/console/static (npm ci, then esbuild; needs Node 18+)
	cd console && npm ci --no-audit --no-fund && node build.mjs

migrate: $(STAMP) ## bring the database in AE_DATABASE_URL to the latest migration
	$(BIN)/aether migrate

demo: $(STAMP) ## load the demo account and print its key
	$(BIN)/aether demo

clean: ## remove the virtualenv, caches and the local database and blobs
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

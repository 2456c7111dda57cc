# Two commands on a fresh machine: `make run` (demo) and `make test` (every test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUN := $(CURDIR)/.run
MULTIPROC := $(RUN)/prometheus-multiproc
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_ISSUES ?= 1000

.PHONY: venv bootstrap run serve test test-sqlite test-postgres bench screenshots lint format clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(BIN)/.installed

# System packages the tests use (promtool from Debian's prometheus, the PostgreSQL
# server, Node.js), when missing; then the TypeScript client is built (type-checked)
# when its dist/ is missing or older than its sources.
bootstrap:
	scripts/bootstrap.sh
	scripts/build-client.sh

# The multiprocess folder is emptied first: old files would add a previous run's
# counts. seed_demo --reset recreates the demo rows so the counters served equal
# the database's truth.
# demo_heartbeats keeps the demo's live loops' heartbeats fresh through the state API
# while the server runs, as Tamma would (it exits when the server does).
# DEBUG=true for the demo only (static files for the admin, error pages with details);
# everything else runs with DEBUG off.
run: venv
	MAKE_TARGET=run scripts/preflight.sh $(HOST) $(PORT)
	rm -rf $(MULTIPROC) && mkdir -p $(MULTIPROC)
	export PROMETHEUS_MULTIPROC_DIR=$(MULTIPROC) DEBUG=$${DEBUG:-true} && \
	$(BIN)/python manage.py migrate --noinput && \
	$(BIN)/python manage.py seed_demo --reset --issues $(DEMO_ISSUES) && \
	$(BIN)/python manage.py seed_roles && \
	$(BIN)/python manage.py demo_admin && \
	$(BIN)/python manage.py demo_scrape_token --target $(HOST):$(PORT) && \
	$(BIN)/python manage.py demo_orchestrator_token --target $(HOST):$(PORT) && \
	echo "Admin: http://$(HOST):$(PORT)/admin/  Metrics: http://$(HOST):$(PORT)/metrics  API docs: http://$(HOST):$(PORT)/api/docs" && \
	echo "$$$$ make run on $(HOST):$(PORT)" > $(RUN)/instance.pid && \
	{ $(BIN)/python manage.py demo_heartbeats --target $(HOST):$(PORT) & } && \
	exec $(BIN)/python manage.py runserver $(HOST):$(PORT)

# Production-style serving: gunicorn with WEB_CONCURRENCY workers (3), the folder
# checked and emptied by project/gunicorn.conf.py, dead workers' files archived.
# METRICS_PORT=9100 adds an address that serves only /metrics and /metrics/health.
serve: venv
	MAKE_TARGET=serve scripts/preflight.sh $(HOST) $(PORT) $(METRICS_PORT)
	mkdir -p $(MULTIPROC)
	export PROMETHEUS_MULTIPROC_DIR=$(MULTIPROC) HOST=$(HOST) PORT=$(PORT) && \
	$(BIN)/python manage.py migrate --noinput && \
	$(BIN)/python manage.py seed_roles && \
	$(BIN)/python manage.py demo_scrape_token --target $(HOST):$(or $(METRICS_PORT),$(PORT)) && \
	$(BIN)/python manage.py demo_orchestrator_token --target $(HOST):$(PORT) && \
	echo "Metrics: http://$(HOST):$(or $(METRICS_PORT),$(PORT))/metrics  Site: http://$(HOST):$(PORT)/" && \
	echo "$$$$ make serve on $(HOST):$(PORT)" > $(RUN)/instance.pid && \
	exec $(BIN)/gunicorn -c project/gunicorn.conf.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy tamma_metrics

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The whole suite twice: on SQLite (in memory) with the per-process cache, then as
# production runs, on a private PostgreSQL cluster and a private Redis that
# scripts/with-postgres.sh and scripts/with-redis.sh start on 127.0.0.1 and remove
# afterwards. The second run leaves out the end-to-end tests, which start the servers
# they need themselves, and draws half the state API's property examples (20 of 40: the
# slowest test, about 2 minutes at 40; the first run draws all of them).
test: venv bootstrap lint
	$(BIN)/python -m pytest
	PROPERTY_EXAMPLES=20 scripts/with-postgres.sh scripts/with-redis.sh $(BIN)/python -m pytest -m "not e2e"

test-sqlite: venv
	$(BIN)/python -m pytest

test-postgres: venv bootstrap
	scripts/with-postgres.sh scripts/with-redis.sh $(BIN)/python -m pytest -m "not e2e"

# Speed and memory targets: medians and ratios measured in one run, written with the
# machine and the date to benchmarks/RESULTS.md.
bench: venv bootstrap
	benchmarks/run.sh

# Screenshots of the landing, velocity, health and delivery pages (docs/images/), as a product
# manager sees them with the demo's data, in Debian's Chromium.
screenshots: venv bootstrap
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) $(RUN) .pytest_cache .ruff_cache .hypothesis .import_linter_cache .mypy_cache

# OpenSpark — `make run` starts the whole product, `make flower` watches its Celery workers,
# `make test` runs ruff, the import contracts (import-linter) and the test suite; `make fuzz`
# a long schema-fuzzing run; `make load` (3 min) and `make soak` (30 min) run the Locust
# scenario against the whole stack (docs/reliability.md; LOAD_ARGS passes options to
# bench/load/run.py).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run flower test fuzz lint format install install-dev local-model clean load soak

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.deps-run: requirements.txt | $(PY)
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.deps-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.deps-run

install: $(VENV)/.deps-run
install-dev: $(VENV)/.deps-dev

# The local embedder's int8 file, made once per machine (~30 s) where it is used: not on the
# first upload or question, nor inside a test's time limit (docs/knowledge.md).
local-model: install
	$(PY) manage.py build_local_model

run: install local-model
	$(PY) -m openspark.devstack

# Flower on the broker of the running `make run` (or REDIS_URL), behind basic auth.
flower: install
	$(PY) -m openspark.flower

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint local-model
	$(PY) -m pytest $(PYTEST_ARGS)

# Schemathesis against a live server for longer than the suite does (docs/reliability.md):
# FUZZ_EXAMPLES per operation and identity, FUZZ_STATEFUL runs of the linked operations.
# The table of what was tried lands in var/fuzz-report.md.
FUZZ_EXAMPLES ?= 100
FUZZ_STATEFUL ?= 50
fuzz: install-dev
	OPENSPARK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OPENSPARK_FUZZ_STATEFUL_EXAMPLES=$(FUZZ_STATEFUL) \
	OPENSPARK_FUZZ_REPORT=var/fuzz-report.md \
		$(PY) -m pytest -q tests/reliability/test_fuzz.py --timeout=0 $(PYTEST_ARGS)

load: install-dev
	$(PY) bench/load/run.py --duration 180 $(LOAD_ARGS)

soak: install-dev
	$(PY) bench/load/run.py --duration 1800 --sample-every 15 $(LOAD_ARGS)

clean:
	rm -rf var .pytest_cache .ruff_cache

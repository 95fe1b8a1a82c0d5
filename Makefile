# tagwatch — two commands on a fresh machine: `make up` (run the stack), `make test` (tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TAGWATCH_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: help install model up up-fleet serve down demo test lint format bench clean

help:
	@echo "make up      train the model if needed, start the stack, print the URLs"
	@echo "make up-fleet  the same with a throwaway PostgreSQL store and two predictor replicas"
	@echo "make serve   only the predictor, in the foreground"
	@echo "make down    stop the stack started by make up (or up-fleet, demo)"
	@echo "make demo    make up + replay real 2011→2020 questions (drift and alerts fire)"
	@echo "make test    install if needed, then lint + the whole test suite"
	@echo "make lint    ruff, ruff format --check, mypy, promtool/amtool/compose/workflow checks"
	@echo "make bench   run the benchmarks (benchmarks/*.py)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

models/LATEST: | $(STAMP)
	$(PY) -m tagger.train --output models

model: models/LATEST

# feedback needs its token (README "Security"): the stack's random secrets in var/secrets, unless
# the caller names its own files
serve: install model
	bash scripts/make-secrets.sh var/secrets >/dev/null
	TAGWATCH_FEEDBACK_TOKEN_FILE="$${TAGWATCH_FEEDBACK_TOKEN_FILE:-var/secrets/feedback_token}" \
	TAGWATCH_ID_SECRET_FILE="$${TAGWATCH_ID_SECRET_FILE:-var/secrets/id_secret}" \
	$(PY) -m exporter serve

up: install
	bash scripts/up.sh

# the fleet (docs/scaling.md): PostgreSQL (Debian's postgresql-15) + two predictor replicas
up-fleet: install
	STACK_FLEET=1 bash scripts/up.sh

down:
	bash scripts/down.sh

demo: install model
	bash scripts/demo.sh

test: install
	$(MAKE) lint
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	bash scripts/lint-config.sh
	bash scripts/lint-monitoring.sh

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install model
	$(PY) benchmarks/predictor.py
	$(PY) -m benchmarks.drift
	$(PY) -m benchmarks.lifecycle
	$(PY) -m benchmarks.stores

clean:
	rm -rf $(VENV) var reports .mypy_cache .ruff_cache .pytest_cache

# Quick start: `make demo` and `make test` each do all set-up from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
DATA_ENV := $(if $(wildcard $(SHARED_DATA)),SUPERLEVEL_DATA=$(SHARED_DATA),)

.PHONY: demo test lint bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(DATA_ENV) $(VENV)/bin/superlevel demo

test: $(STAMP)
	$(DATA_ENV) $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

bench: $(STAMP)
	$(DATA_ENV) $(PY) benchmarks/step_cost.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

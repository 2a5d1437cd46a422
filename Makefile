# Two commands for a fresh machine (see README):  make reproduce   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2 --durations=25

.PHONY: setup reproduce reproduce-paper test test-fast browser-test clean-results

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

## The main job: the quick (CPU-scale) reproduction of every table, into results/.
reproduce: setup
	$(PY) -m course_utils reproduce all --quick

## The paper-scale grids (hours; meant for a GPU).
reproduce-paper: setup
	$(PY) -m course_utils reproduce all

## The whole test suite: unit tests, every notebook in smoke mode, nbval, DDP, and the browser tests.
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## Everything but the browser and DDP tests.
test-fast: setup
	$(PY) -m pytest -m "not browser and not ddp" $(PYTEST_ARGS)

browser-test: setup
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

clean-results:
	rm -rf results

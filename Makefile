# Two commands for a fresh machine (see README):  make reproduce   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2 --durations=25

.PHONY: setup reproduce reproduce-paper panel test test-nodata test-fast browser-test benchmarks gpu-check clean-results

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

## The live threshold panel as a standalone page (Voila, no code cells), over the trained edCNN's saved logits.
## PANEL_BUNDLE=path/to/edcnn_logits.npz shows another bundle; the page says what to run when there is none.
## It runs in pages/, whose voila.json loads only the widget extensions.
panel: setup
	cd pages && COURSE_EDCNN_BUNDLE=$(abspath $(PANEL_BUNDLE)) $(abspath $(VENV))/bin/voila edcnn_panel.ipynb --port=8866

## The whole test suite: unit tests, every notebook in smoke mode, nbval, DDP, and the browser tests.
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## Every notebook's smoke run on a machine with no datasets: an empty COURSE_DATA_DIR, so each falls back to digits.
test-nodata: setup
	@empty=$$(mktemp -d) && COURSE_DATA_DIR=$$empty $(PY) -m pytest -m notebook -k smoke_mode $(PYTEST_ARGS); \
	  status=$$?; rmdir $$empty; exit $$status

## Everything but the browser and DDP tests.
test-fast: setup
	$(PY) -m pytest -m "not browser and not ddp" $(PYTEST_ARGS)

browser-test: setup
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

## On a CUDA machine: the cuda-marked tests and the paper tier of both papers with one seed (about 10 min).
gpu-check: setup
	$(PY) tools/gpu_check.py

## Speed goals live here, never in tests: each script prints its measured figures and the CPU they ran on.
benchmarks: setup
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

clean-results:
	rm -rf results

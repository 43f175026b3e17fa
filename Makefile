PY ?= .venv/bin/python

.PHONY: install train test lint format
install:
	python3 -m venv .venv
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"

train: install
	$(PY) -m src.training.trainer --config configs/ct.yaml

test: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

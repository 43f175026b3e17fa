PY ?= .venv/bin/python

.PHONY: install train train-all test lint format
install:
	python3 -m venv .venv
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"

train: install
	$(PY) -m src.training.trainer --config configs/ct.yaml

# 2D radiographs (phantom X-ray set): both split strategies, one after the other; each run has
# its own folder (outputs/xray-stratified-*, outputs/xray-center-*) and checkpoint names.
train-all: install
	$(PY) -m src.training.trainer --config configs/xray.yaml --set data.split.strategy=stratified
	$(PY) -m src.training.trainer --config configs/xray.yaml --set data.split.strategy=center_holdout

test: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench data clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/onelip train --data mnist-5k --model mlp --loss hinge --margin 1.5 \
	  --epochs 30 --out runs/demo --force
	$(BIN)/onelip certify runs/demo --eps 0.5 1.0 1.58

test: $(STAMP)
	$(BIN)/python -m pytest -q -x

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

data:
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

bench: $(STAMP)
	$(BIN)/python benchmarks/dense.py

clean:
	rm -rf $(VENV) runs

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

# Dense layers vs nn.Linear, deel-torchlip and orthogonium (by hand: minutes; writes
# benchmarks/results/dense.{json,md}). The peers live in benchmarks/.peers-venv (created on
# first use, torch pinned) or PEERS_VENV=path; BENCH_ARGS=--quick for a smoke run.
bench: $(STAMP)
	$(BIN)/python benchmarks/dense.py $(if $(PEERS_VENV),--peers-venv $(PEERS_VENV)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint test-slow bench bench-layers bench-fashion-mnist data clean

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

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -x

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

data:
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

# onelip vs nn.Linear/nn.Conv2d, deel-torchlip and orthogonium, run by hand on a quiet machine:
# bench-layers (dense + conv layers: ~15 min) writes benchmarks/results/{dense,conv}.{json,md};
# bench-fashion-mnist (5 networks trained 15 epochs and certified: ~1 h on 2 cores, needs
# `make data`) writes benchmarks/results/fashion_mnist.{json,md}. The peers live in
# benchmarks/.peers-venv (created on first use, torch pinned) or PEERS_VENV=path.
PEERS_ARG = $(if $(PEERS_VENV),--peers-venv $(PEERS_VENV))
bench: bench-layers bench-fashion-mnist

bench-layers: $(STAMP)
	$(BIN)/python benchmarks/dense.py $(PEERS_ARG)
	$(BIN)/python benchmarks/conv.py $(PEERS_ARG)

bench-fashion-mnist: $(STAMP)
	$(BIN)/python benchmarks/fashion_mnist.py $(PEERS_ARG)

# CIFAR-10 (JPEG) side by side, ConvNet XS of onelip / orthogonium / deel-torchlip, 20 min of
# training each on one thread, two at a time, after a loss sweep (~1 h on 2 cores):
# `make bench-cifar10 DATA=/path/to/cifar` (DATA/train/<class>/*.jpg; the test split is never
# read) writes benchmarks/results/cifar10.{json,md} and benchmarks/models/cifar10-*.
.PHONY: bench-cifar10
ifneq ($(filter bench-cifar10,$(MAKECMDGOALS)),)
ifeq ($(DATA),)
$(error usage: make bench-cifar10 DATA=/path/to/cifar (DATA/train/<class>/*.jpg))
endif
endif
bench-cifar10: $(STAMP)
	$(BIN)/python benchmarks/cifar10.py --data $(DATA) --sweep --time-decode $(PEERS_ARG)

clean:
	rm -rf $(VENV) runs

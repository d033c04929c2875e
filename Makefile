# `make test` is the test command: it builds .venv when missing, installs the project with
# its dev extra, then runs ruff and the default (not slow) test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif
PYTEST_ARGS ?=

.PHONY: install test test-all lint demo demo-antialias demo-segmentation bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev]" $(TORCH_PINS)
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow and not cuda" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -m "slow and not cuda" $(PYTEST_ARGS)

demo-segmentation: install
	OMP_NUM_THREADS=2 $(PY) -m zoo.train.segmentation

demo: install
	$(VENV)/bin/zoo finetune --config configs/finetune/digits.yaml

# anti-alias a trained resnet18 and recover it by distillation without labels (reuses runs/digits_antialias)
demo-antialias: install
	OMP_NUM_THREADS=2 $(VENV)/bin/zoo finetune --config configs/finetune/digits_antialias.yaml \
		$$(test -f runs/digits_antialias/config.yaml && echo train.resume=runs/digits_antialias)

bench: install
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# `make test` and `make demo` each do ALL set-up on a fresh machine: venv, pinned CPU torch
# (installed FIRST so pip never resolves a multi-GB CUDA build), the package, and the data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_DIR ?= runs/demo
# The CPU torch wheel lies in /opt/wheels on our machines; let pip find it even when the
# environment does not say so (otherwise torch==2.13.0 would come from PyPI as a CUDA build).
export PIP_FIND_LINKS := $(or $(PIP_FIND_LINKS),$(wildcard /opt/wheels))

.PHONY: all install data test demo bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test]" $(TORCH)
	touch $@

install: $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files in /usr/share/datasets).
data:
	@if [ -f $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "Fashion-MNIST is missing and apt-get is not usable here: run 'sudo apt-get install dataset-fashion-mnist'," \
		     "or put the four IDX files in a folder and pass data.root=FOLDER"; exit 1; \
	fi

test: $(STAMP) data
	$(PY) -m pytest tests

demo: $(STAMP) data
	$(VENV)/bin/mimkit train mae_demo_fmnist train.overwrite=true --out $(DEMO_DIR)
	$(VENV)/bin/mimkit reconstruct $(DEMO_DIR) --data fashion-mnist --split test --n 12 --out $(DEMO_DIR)/reconstruction.png
	$(VENV)/bin/mimkit eval probes $(DEMO_DIR) --data fashion-mnist --pool both | tee $(DEMO_DIR)/probes.txt

bench: $(STAMP)
	$(PY) benchmarks/mae_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache

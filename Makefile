# The two set-up commands of the README are `make demo` and `make test`: both create (or reuse)
# the virtual environment in .venv and install dualchain with what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint proto proto-check container-test ci clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: on these machines pip takes the CPU build of exactly this version
	# from a local file; anything else would pull gigabytes of CUDA packages.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dualchain up --workdir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

# ruff, and the layering contracts of pyproject.toml's [tool.importlinter] (docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo --no-cache

proto: $(STAMP)
	$(BIN)/python -m dualchain.proto.codegen

proto-check: $(STAMP)
	$(BIN)/python -m dualchain.proto.codegen --check

# A real Docker engine, image, compose stack and single-node swarm (deploy/container-test.sh);
# skips, saying why, where Docker cannot run.
container-test: $(STAMP)
	deploy/container-test.sh

ci: test lint proto-check container-test

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis

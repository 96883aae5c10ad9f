# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make run   -> the study (Snakemake, `quick` profile of the embedded default teacher)
#   make test  -> the test suite, lint and dry runs, and the `smoke` workflow end to end; with
#                 XTC_SLURM_CHECKS=1 (CI) also the smoke study through a single-node Slurm (.ci/slurm-checks)
# Each one creates .venv on first use (torch==2.13.0 first, so pip takes the CPU build, then exact pins).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
export XTC_GLUE_DIR ?= $(abspath ../shared/glue)
# 1: bring up a single-node Slurm (root, Debian 12: apt + daemons) and run the study through it
export XTC_SLURM_CHECKS ?= 0

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m xtc.native || echo "serving will use the Python integer path (see the line above)"
	touch $@

.PHONY: install run test clean-smoke
install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/default

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q
	bash .ci/workflow-checks
	bash .ci/slurm-checks

clean-smoke:
	rm -rf scratch/smoke

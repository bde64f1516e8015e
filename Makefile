# Two commands on a fresh machine: `make demo` and `make test`.
# Each sets up .venv (once, again when pyproject.toml changes) and runs its job.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint install clean bench bench-quick tutorials

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/keras-distill demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# Re-executes the tutorials with their full settings and saves them with their outputs (~10 min).
tutorials: $(STAMP)
	$(BIN)/python tutorials/execute_in_place.py

# Benchmarks (not part of the tests): quick versions take minutes, full ones about an hour.
BENCHMARKS := quality_benchmark speed_benchmark stored_teacher_benchmark micro_benchmark \
	labelling_workers_benchmark optimize_benchmark

bench-quick: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py --quick || exit 1; done

bench: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

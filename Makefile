# Two commands on a fresh machine: `make demo` and `make test`.
# Each sets up .venv (once, again when pyproject.toml changes) and runs its job.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast lint fuzz install clean bench bench-quick bench-speed tutorials firmware-tools docs dist

# uv installs from PyPI in a third of pip's time (29-38 s against 95 s here); --compile-bytecode
# writes the .pyc files at install time, as pip does (a machine with PYTHONDONTWRITEBYTECODE=1
# would otherwise compile TensorFlow from source in every new process).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/keras-distill demo

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# Property tests with many random examples (not derandomized), for exploration; `make test` runs
# them with a fixed profile. Turn what this finds into an `@example` on the test.
fuzz: $(STAMP)
	KERAS_DISTILL_HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_properties.py

# The firmware tests build the exported C++ with TFLite Micro's Makefile and run it on the host
# and on a Cortex-M4 emulated by QEMU. As root with apt-get, install what they need; otherwise
# they skip with the reason.
FIRMWARE_PACKAGES := make g++ gcc-arm-none-eabi libnewlib-arm-none-eabi \
	libstdc++-arm-none-eabi-newlib qemu-system-arm
firmware-tools:
	@if command -v arm-none-eabi-g++ >/dev/null && command -v qemu-system-arm >/dev/null \
		&& command -v g++ >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing the Arm toolchain and QEMU for the firmware tests (apt-get) ..."; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $(FIRMWARE_PACKAGES) >/dev/null 2>&1 \
		|| (apt-get update -qq && apt-get install -y -qq $(FIRMWARE_PACKAGES) >/dev/null) \
		|| echo "apt-get failed: the Cortex-M firmware tests will skip."; \
	else echo "Not root or no apt-get: the Cortex-M firmware tests will skip (see README)."; fi

# The suite runs on every core up to four (pytest-xdist); tests that share a costly module fixture
# carry an `xdist_group` mark and run in one worker. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --maxprocesses=4 --dist loadgroup

test: lint firmware-tools
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

# Everything not marked slow (no tutorials, docs build, release, subprocesses): the inner loop.
test-fast: lint
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow"

# The documentation site (Sphinx + MyST-NB + furo) into docs/_build/html, offline, warnings as
# errors; `make test` builds it too (tests/test_docs_site.py).
docs: $(STAMP)
	$(BIN)/python -m sphinx -b html -W --keep-going -q docs docs/_build/html
	@echo "Open docs/_build/html/index.html"

# The sdist and the wheel in dist/, built offline from the installed build tools, then checked.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/python -m twine check --strict dist/*
	$(BIN)/check-wheel-contents dist/*.whl

# Re-executes the tutorials with their full settings and saves them with their outputs (~10 min).
tutorials: $(STAMP)
	$(BIN)/python tutorials/execute_in_place.py

# Benchmarks (not part of the tests): quick versions take minutes, full ones about an hour.
BENCHMARKS := quality_benchmark speed_benchmark stored_teacher_benchmark micro_benchmark \
	labelling_workers_benchmark optimize_benchmark features_benchmark generation_benchmark \
	beam_benchmark on_policy_benchmark search_benchmark

# The training step's speed guard: ratios against Keras' Distiller and a plain student, measured
# in one run; exits non-zero when one misses its target.
bench-speed: $(STAMP)
	$(BIN)/python benchmarks/speed_benchmark.py --quick

bench-quick: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py --quick || exit 1; done

bench: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache docs/_build docs/api/generated

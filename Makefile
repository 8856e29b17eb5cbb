# dataferry: `make demo` sets up and runs the main job on the local sandbox;
# `make test` sets up and runs lint, types and the whole test suite.
# Both work as root on a fresh Debian machine with Python 3.11, make and git.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.installed
# Test workers (pytest-xdist): most tests wait on servers they start, not on CPU, so 4
# workers on a 2-core machine cut the suite from ~18 to ~7 minutes (measured 2026-12-03).
PYTEST_WORKERS ?= 4
# nrp-cmd needs Python >= 3.12: its own venv (tests/test_official_clients_nrp.py uses it).
NRP_VENV   := .venv-nrp
NRP_STAMP  := $(NRP_VENV)/.installed
NRP_PYTHON ?= $(shell for p in python3.12 python3.13 $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { command -v $$p; break; }; done)

.PHONY: setup test-setup system-deps venv nrp-venv demo test lint typecheck pytest bench clean

# The Debian packages, the venv and nrp-cmd's venv are fetched at the same time: each waits
# mostly on the network or on dpkg, not on the CPU (about a minute saved on a fresh machine).
setup:
	@$(MAKE) --no-print-directory -j2 system-deps venv

test-setup:
	@$(MAKE) --no-print-directory -j3 system-deps venv nrp-venv

# Debian packages: the XRootD server and client (xrootd, xrdcp, xrdfs), curl for benchmarks,
# tmux (the progress bar tested on a real terminal), chromium (the HTML report opened headless),
# rclone (the peer of bench/bench_archive.py).
system-deps:
	@if ! command -v xrootd >/dev/null 2>&1 || ! command -v xrdcp >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
		|| ! command -v tmux >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
		|| ! command -v rclone >/dev/null 2>&1; then \
		echo ">> installing Debian packages xrootd-server xrootd-client curl tmux chromium rclone"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q xrootd-server xrootd-client curl tmux chromium rclone; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml requirements_upload.txt requirements.txt requirements_dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check \
		-r requirements_upload.txt -r requirements.txt -r requirements_dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

nrp-venv: $(NRP_STAMP)

$(NRP_STAMP): requirements_nrp.txt
	@if [ -z "$(NRP_PYTHON)" ]; then \
		echo ">> WARNING: no Python >= 3.12 found: nrp-cmd is not installed and its tests will fail"; \
	else \
		{ test -x $(NRP_VENV)/bin/python || $(NRP_PYTHON) -m venv $(NRP_VENV); } && \
		$(NRP_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements_nrp.txt && \
		touch $(NRP_STAMP); \
	fi

demo: setup
	$(BIN)/ferry demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# worksteal: a worker that runs out of tests takes queued ones from a busy worker, so a few
# long tests do not leave the others idle at the end.
pytest: test-setup
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist worksteal

test: test-setup
	@$(MAKE) --no-print-directory lint typecheck pytest

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(NRP_VENV) .pytest_cache .mypy_cache .ruff_cache

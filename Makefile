# relaystream — `make run` starts the service, `make test` runs the whole suite.
# Both install what they need first, and only what is missing.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# `make run PORT=9000 CONFIG=my.toml DATA_DIR=data`: where it listens, its config file
# (none: a demo account kept in the data dir), and where it keeps tasks.
PORT ?= 8080
HOST ?= 127.0.0.1
CONFIG ?=
DATA_DIR ?= data

.PHONY: run test lint docs bench bench-deps bench-quick check-system-deps clean

run: $(VENV)/.run-installed
	$(BIN)/relaystream serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) \
		$(if $(CONFIG),--config $(CONFIG))

# docs/config.md is made from the config model; a test fails when it is out of date.
docs: $(VENV)/.run-installed
	$(BIN)/python -m relaystream.config_docs > docs/config.md

test: $(VENV)/.test-installed check-system-deps lint
	$(BIN)/pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update && \
		$(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@ $(VENV)/.run-installed

# What the scripts in bench/ need on top of the tests' (matplotlib for the plots, py-spy
# to profile the server and the workers: `py-spy record --subprocesses --pid PID`).
bench-deps: $(VENV)/.bench-installed

# Every figure of BENCHMARKS.md, each against its reference measured in the same run,
# one line each, with short windows: under a minute once the reference clip is cached.
bench-quick: $(VENV)/.test-installed check-system-deps
	$(BIN)/python -m bench.run --quick

# The full run (about 10 minutes): writes its numbers and plots into BENCHMARKS.md,
# between the bench:begin/bench:end markers, and the plots into bench/results/.
bench: $(VENV)/.bench-installed check-system-deps
	$(BIN)/python -m bench.run --write BENCHMARKS.md

$(VENV)/.bench-installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@ $(VENV)/.test-installed $(VENV)/.run-installed

# System packages the tests use, installed only when missing: the ffmpeg CLI (reference
# and live RTMP publisher), nginx with the RTMP module (a real RTMP server), Chromium
# (a real browser viewer), Janus (a real room server), PostgreSQL (a throwaway cluster
# for the shared store), and nftables (the 1:1 NAT in front of a server, built inside a
# test's own network namespaces).
check-system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing="$$missing libnginx-mod-rtmp"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v janus >/dev/null || [ -x /usr/bin/janus ] || missing="$$missing janus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing="$$missing nftables"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

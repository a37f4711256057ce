# Zhongtai — every entry point a developer, CI or a platform team needs.
# `make run` and `make test` set themselves up (venv, packages, codegen, Kafka jars).
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.zt-installed
GEN_STAMP := gen/.stamp
PROTOS := $(shell find proto -name '*.proto' -not -path '*/baseline/*' 2>/dev/null)
PYTEST_ARGS ?=
# The staff console (console/): pinned npm packages (package-lock.json) + its sources, copied
# into gateway/static/console/ (package data the gateway serves under /console/).
CONSOLE_STAMP := gateway/static/console/.stamp
CONSOLE_SRC := $(shell find console/src -type f 2>/dev/null)

.PHONY: setup proto run test test-unit test-integration test-browser lint contract contract-release contract-examples bench chart chaos clean

setup: $(STAMP) $(GEN_STAMP) $(CONSOLE_STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "python3 (>= 3.11) is required: apt-get install -y python3 python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PY) -c "import os, site; open(os.path.join(site.getsitepackages()[0], 'zhongtai-gen.pth'), 'w').write(os.path.abspath('gen') + '\n')"
	touch $@

# Generated code is not committed: it is rebuilt here whenever a .proto changes.
$(GEN_STAMP): $(STAMP) $(PROTOS) devtools/protogen.py
	$(PY) -m devtools.protogen
	touch $@

console/node_modules/.package-lock.json: console/package.json console/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required for the console: apt-get install -y nodejs npm"; exit 1; }
	cd console && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

$(CONSOLE_STAMP): $(STAMP) console/node_modules/.package-lock.json $(CONSOLE_SRC) devtools/console_build.py
	$(PY) -m devtools.console_build
	touch $@

proto: $(STAMP)
	$(PY) -m devtools.protogen
	touch $(GEN_STAMP)

run: setup
	$(PY) -m devtools.run

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit tests/contract $(PYTEST_ARGS)

test-integration: setup
	$(PY) -m pytest tests/integration tests/e2e $(PYTEST_ARGS)

test-browser: setup
	$(PY) -m pytest tests/e2e/console $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

contract: setup
	$(PY) -m devtools.contract

# Record the contract baselines of a release (docs/contracts.md): make contract-release VERSION=v1.1
# [BREAK="why a breaking change is accepted"] [NOTE="what is in it"] [FORCE=1 to re-record].
contract-release: setup
	@[ -n "$(VERSION)" ] || { echo 'usage: make contract-release VERSION=v1.x [BREAK="why"] [NOTE="..."] [FORCE=1]'; exit 2; }
	$(PY) -m devtools.contract_release "$(VERSION)" --note "$(NOTE)" --accepts-break "$(BREAK)" $(if $(FORCE),--force)

# Re-record the example events (contracts/examples/events) from the producers' own code.
contract-examples: setup
	$(PY) -m devtools.contract_examples

bench: setup
	@for b in bench/*.py; do n=$$(basename $$b .py); case $$n in _*) continue;; esac; echo "== $$b"; $(PY) -m bench.$$n || exit 1; done

chart: setup
	$(PY) -m devtools.chart

# Fault injection on real processes (docs/RESILIENCE.md); `make test` runs a short version.
CHAOS_ARGS ?=
chaos: setup
	$(PY) -m devtools.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) gen build var .pytest_cache .mypy_cache .ruff_cache .hypothesis gateway/static/console console/node_modules

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

.PHONY: setup proto run test test-unit test-integration lint contract bench chart clean

setup: $(STAMP) $(GEN_STAMP)

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

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

contract: setup
	$(PY) -m devtools.contract

bench: setup
	@for b in bench/*.py; do n=$$(basename $$b .py); case $$n in _*) continue;; esac; echo "== $$b"; $(PY) -m bench.$$n || exit 1; done

chart: setup
	$(PY) -m devtools.chart

clean:
	rm -rf $(VENV) gen build var .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Two entry points: `make run` (a local cluster) and `make test` (the whole suite).
# Each bootstraps what it needs on first use: Python packages into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-quick bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m localcluster

test: $(STAMP)
	sh tests/support/ensure_postgres.sh
	$(PY) -m pytest -q

test-quick: $(STAMP)
	sh tests/support/ensure_postgres.sh
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m bench.tree --hosts 1000

clean:
	rm -rf $(VENV) .run *.egg-info

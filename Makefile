# Two entry points: `make run` (a local cluster) and `make test` (the whole suite).
# Each bootstraps what it needs on first use: Debian packages (the hypervisor stack: libvirt
# and QEMU, which libvirt-python also builds against) and Python packages into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-quick bench clean

$(STAMP): pyproject.toml scripts/ensure-libvirt.sh
	sh scripts/ensure-libvirt.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[hypervisor,test]'
	touch $(STAMP)

# FRONTENDS=3: standby frontends on a PostgreSQL server of the run's own (docs/ha.md)
FRONTENDS ?= 1

run: $(STAMP)
	if [ "$(FRONTENDS)" != 1 ]; then sh tests/support/ensure_postgres.sh; fi
	$(PY) -m localcluster --frontends $(FRONTENDS)

# Two workers: much of the suite waits on guests, leases and timeouts rather than on the CPU
# (tests/conftest.py keeps each file, and everything that needs libvirtd, on one worker).
test: $(STAMP)
	sh tests/support/ensure_postgres.sh
	sh scripts/ensure-test-tools.sh
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-quick: $(STAMP)
	sh tests/support/ensure_postgres.sh
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m bench.tree --hosts 1000

clean:
	if [ -x $(PY) ]; then $(PY) -m localcluster.purge .run; $(PY) -m localcluster.purge .run-ha; fi
	rm -rf $(VENV) .run .run-ha *.egg-info

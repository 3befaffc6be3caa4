# kvmtop: the two commands a newcomer needs (see README.md).
#   make demo   install everything, bring up the lab when no guests exist, run kvmtop
#   make test   install everything and run the whole test suite (lab included)
#   make bench  the benchmark suite and its budgets (bench/__main__.py; needs the lab)
# Both must be run as root on a fresh Debian 12 machine (apt packages, libvirtd, KVM).

VENV ?= .venv
PY := $(VENV)/bin/python
LAB := tests/lab/lab

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(LAB) install
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[libvirt,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	tests/lab/demo

lint: setup
	$(PY) -m ruff check kvmtop tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) -m bench

clean:
	$(LAB) down
	rm -rf $(VENV)

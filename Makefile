# kvmtop: the two commands a newcomer needs (see README.md).
#   make demo   install everything, bring up the lab when no guests exist, run kvmtop
#   make test   install everything and run the whole test suite (lab included), then
#               the tests marked `nested` inside the nested SVM lab (test-nested)
#   make test-nested  the tests marked `nested`, inside an SVM KVM host (L1) that
#               TCG emulates here, against Linux guests under its KVM (tests/lab/nested.py);
#               NESTED_ARGS="-k ..." narrows them
#   make bench  the benchmark suite and its budgets (bench/__main__.py; needs the lab)
# Both must be run as root on a fresh Debian 12 machine (apt packages, libvirtd, KVM).

VENV ?= .venv
PY := $(VENV)/bin/python
LAB := tests/lab/lab

.PHONY: setup demo test test-nested lint bench clean

# Python and the dev tools (pytest, ruff, mypy, import-linter): all `make lint` needs.
$(VENV)/.dev: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# Everything else: the lab's Debian packages (libvirt, QEMU, OVS, ...) and
# libvirt-python, which builds against libvirt-dev.
$(VENV)/.installed: $(VENV)/.dev
	$(LAB) install
	$(PY) -m pip install -q -c constraints.txt -e '.[libvirt,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	tests/lab/demo

lint: $(VENV)/.dev
	$(PY) -m ruff check kvmtop tests bench
	$(PY) -m ruff format --check kvmtop tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

test: setup lint
	$(PY) -m pytest
	$(MAKE) test-nested

# The host lab is down by now (the pytest session takes it down): L1 takes a whole CPU.
test-nested: setup
	$(LAB) up nested
	$(LAB) nested test $(NESTED_ARGS); status=$$?; $(LAB) nested down; exit $$status

bench: setup
	$(PY) -m bench

clean:
	$(LAB) down
	rm -rf $(VENV)

# SPDX-License-Identifier: GPL-2.0-or-later
# Every target installs what it needs by itself on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
CACHE   ?= $(HOME)/.cache/diskdump
export DISKDUMP_CACHE := $(CACHE)

# Debian packages: the differential readers, the QEMU tier, loop-device tests, codec builds.
APT_PACKAGES := python3 python3-venv python3-dev gcc make \
	qemu-system-x86 qemu-utils makedumpfile crash kexec-tools busybox-static \
	python3-libkdumpfile cpio zstd xz-utils kmod util-linux e2fsprogs gdisk \
	lvm2 mdadm dosfstools liblzo2-dev libsnappy-dev

.PHONY: help deps venv lint test test-fast demo bench fuzz clean

help:
	@echo "make test    install everything, lint, type-check and run every test tier"
	@echo "make demo    a real kernel panics under QEMU; diskdump captures it; savecore saves it"
	@echo "make bench   benchmarks against dd, cp and makedumpfile on the same inputs"
	@echo "make fuzz    long fuzzing runs of every parser"

deps:
	@tools/install-apt.sh $(APT_PACKAGES)

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[all,test]'
	@touch $@

venv: deps $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check src tests tools bench
	$(VENV)/bin/ruff format --check src tests tools bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# unit tier only, for quick iterations
test-fast: venv
	$(PY) -m pytest -p no:cacheprovider -m "not vm and not slow" $(PYTEST_ARGS)

demo: venv
	$(PY) -m diskdump.cli.main demo

bench: venv
	$(PY) bench/run.py

fuzz: venv
	$(PY) -m pytest -p no:cacheprovider tests/fuzz --fuzz-seconds=600

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache artefacts

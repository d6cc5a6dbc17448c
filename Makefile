# kprobekit — build, set up and test.  Run as root on Debian 12.
SHELL := /bin/bash
# Debian's interpreter, never a pyenv shim: the entry point's start-up time is a feature.
SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
CLANG ?= clang
ARCH := $(shell uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')

BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,src/kprobekit/objects/%.bpf.o,$(BPF_SRC))
BPF_HDR := $(wildcard bpf/include/*.h)
SYSCALLS := src/kprobekit/objects/syscalls.txt
# Headers for compiling users' programs at run time (kprobekit.compile), shipped as
# package data so that an installed kprobekit needs neither this tree nor libbpf-dev.
INCLUDE_DIR := src/kprobekit/include
LIBBPF_HDRS := $(addprefix /usr/include/bpf/,bpf_helpers.h bpf_helper_defs.h bpf_core_read.h bpf_tracing.h bpf_endian.h)

APT_PACKAGES := clang llvm libbpf-dev libbpf1 bpftool linux-libc-dev python3-venv iproute2 \
	qemu-system-x86 linux-image-amd64 linux-image-6.12-amd64 busybox-static \
	prometheus

.PHONY: all setup deps bpf venv pyc system-python entry wheel test test-host vmtest bench bench-deps bench-build clean

all: bpf

setup: deps bpf venv pyc system-python entry

# Bytecode ahead of time: without it every start compiles the imports (8 ms -> 23 ms).
pyc: venv
	$(PY) -m compileall -q src/kprobekit

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Programs tests load as targets (progtrace); built with the rest, never shipped.
TEST_BPF_OBJ := $(patsubst %.bpf.c,%.bpf.o,$(wildcard tests/bpf/*.bpf.c))

bpf: $(BPF_OBJ) $(INCLUDE_DIR)/.copied $(TEST_BPF_OBJ) $(SYSCALLS)

# Syscall numbers of this architecture, from the uapi headers (linux-libc-dev), shipped with the
# package: funclatency's syscalls backend filters raw_syscalls:sys_enter/sys_exit by number.
$(SYSCALLS):
	@mkdir -p $(@D)
	(uname -m; echo '#include <asm/unistd.h>' | $(CLANG) -E -dM - | \
		sed -n 's/^#define __NR_\([a-z0-9_]*\) \([0-9]*\)$$/\1 \2/p' | sort) > $@.tmp
	mv $@.tmp $@

$(INCLUDE_DIR)/.copied: $(BPF_HDR) $(LIBBPF_HDRS)
	@mkdir -p $(INCLUDE_DIR)/bpf
	cp $(BPF_HDR) $(INCLUDE_DIR)/
	cp $(LIBBPF_HDRS) $(INCLUDE_DIR)/bpf/
	@touch $@

tests/bpf/%.bpf.o: tests/bpf/%.bpf.c $(BPF_HDR)
	$(CLANG) -target bpf -D__TARGET_ARCH_$(ARCH) -g -O2 -Wall -Werror -Ibpf/include -c $< -o $@

src/kprobekit/objects/%.bpf.o: bpf/%.bpf.c $(BPF_HDR)
	@mkdir -p $(@D)
	$(CLANG) -target bpf -D__TARGET_ARCH_$(ARCH) -g -O2 -Wall -Werror -Ibpf/include -c $< -o $@
	@# keeps .BTF and .BTF.ext (CO-RE), drops DWARF: smaller objects open faster
	llvm-strip -g $@

venv: $(VENV)/.installed $(VENV)/bin/vng

# vmtest's VM runner (virtme-ng); it boots with qemu-system-x86 and busybox-static.
$(VENV)/bin/vng: | $(VENV)/.installed
	$(PY) -m pip install -q virtme-ng

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Our own entry point, rewritten by every `make setup` (another checkout may have written it).
# `python -IS`: no site module, .pth files or PYTHON* variables (~2 ms of start-up, and root's
# tool ignores the environment's PYTHONPATH); kprobekit and the venv's packages are put on
# sys.path by name instead.  A Ctrl-C while it imports ends it quietly, as after.
VENV_SITE = $(abspath $(VENV))/lib/python$(shell $(SYSTEM_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages
entry: venv
	printf '#!%s -IS\nimport sys\nsys.path[:0] = ["%s"]\nsys.path.append("%s")\ntry:\n    from kprobekit.cli.main import main\nexcept KeyboardInterrupt:\n    sys.exit(0)\nsys.exit(main())\n' \
		"$(abspath $(PY))" "$(abspath src)" "$(VENV_SITE)" > /usr/local/bin/kprobekit
	chmod 755 /usr/local/bin/kprobekit

# Debian's own python3 (/usr/bin/python3, what docs/library.md runs) imports kprobekit from
# this checkout: a .pth file in its site directory, as an editable install would write.
SYSTEM_SITE = $(shell $(SYSTEM_PYTHON) -c 'import site; print(site.getsitepackages()[0])')
system-python:
	mkdir -p $(SYSTEM_SITE)
	echo "$(abspath src)" > $(SYSTEM_SITE)/kprobekit.pth

# A wheel for any Python >= 3.9 (pip install dist/kprobekit-*.whl): the package, its compiled
# BPF objects and the headers users' programs include.
wheel: bpf venv
	rm -rf dist build
	$(PY) -m pip wheel -q --no-deps -w dist .
	@ls dist/*.whl

# The host suite, then the same privileged suite inside each stock kernel.
test: bpf venv
	$(PY) -m pytest -q tests --junitxml=tests/vm/logs/host.xml
	$(MAKE) --no-print-directory vmtest VMTEST_ARGS='--host-junit tests/vm/logs/host.xml'

test-host: bpf venv
	$(PY) -m pytest -q tests

vmtest: bpf venv
	$(PY) tests/vm/run.py $(VMTEST_ARGS)

# Peers to measure against, only for `make bench`: never part of setup or test.
BENCH_APT := libbpf-tools bpftrace bpfcc-tools
bench-deps: venv
	@missing=$$(for p in $(BENCH_APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(PY) -c 'import cffi, orjson' 2>/dev/null || $(PY) -m pip install -q cffi orjson

bench-build: bench/build/storm bench/build/events.bpf.o

bench/build/storm: bench/storm.c
	@mkdir -p $(@D)
	$(CLANG) -O2 -Wall -Werror -o $@ $<

bench/build/events.bpf.o: bench/bpf/events.bpf.c $(BPF_HDR)
	@mkdir -p $(@D)
	$(CLANG) -target bpf -D__TARGET_ARCH_$(ARCH) -g -O2 -Wall -Werror -Ibpf/include -c $< -o $@
	llvm-strip -g $@

bench: bpf venv bench-deps bench-build
	$(PY) bench/run.py

clean:
	rm -rf src/kprobekit/objects/*.bpf.o $(SYSCALLS) src/kprobekit/include build dist src/*.egg-info bench/build

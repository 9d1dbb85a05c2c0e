# execd — one non-recursive Makefile.
#   make            build build/execd
#   make run        set up, start Kafka + FerretDB, run execd with all roles
#   make check      unit tests (no servers)
#   make test       set up, start services, unit + integration suites
#   make SAN=asan test   the same under AddressSanitizer + UBSan (SAN=tsan too)
#   make test-container  podman image + replicas of it (part of `make test` when podman exists)
#   make lint | format | format-check | bench | reference

CC      ?= cc
SAN     ?=
V       ?= 0
Q       := $(if $(filter 1,$(V)),,@)

ifeq ($(SAN),)
BUILD   := build
else
BUILD   := build/$(SAN)
endif

PKGS    := rdkafka libmongoc-1.0 libcjson libcurl uuid libseccomp libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null | sed 's/-I/-isystem /g')
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wold-style-definition -Wpointer-arith -Wwrite-strings -Wformat=2 -Wvla -Wundef \
           -Wcast-qual -Wnull-dereference -Wimplicit-fallthrough -fno-common
CFLAGS  := -std=c17 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(WARN) -Iinclude -Isrc \
           $(PKG_CFLAGS) -MMD -MP -pthread
LDLIBS  := $(PKG_LIBS) -lcivetweb -lcrypt -lpthread -lm

ifeq ($(SAN),asan)
CFLAGS  += -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else ifeq ($(SAN),tsan)
CFLAGS  += -O1 -g -fsanitize=thread
LDFLAGS += -fsanitize=thread
else
CFLAGS  += -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
LDFLAGS += -pie -Wl,-z,relro,-z,now
endif

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)
CFLAGS  += -DEXECD_VERSION='"$(VERSION)"'

LIB_SRC  := $(shell find src -name '*.c' ! -name main.c | sort)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
FAKE_SRC := $(wildcard test/fakes/*.c)
FAKE_OBJ := $(FAKE_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard test/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:test/unit/%.c=$(BUILD)/test/%)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
EXECD    := $(BUILD)/execd
PY       := .cache/venv/bin/python
# `make test` also runs the container suite when podman is installed (PODMAN= skips it).
PODMAN   ?= $(shell command -v podman 2>/dev/null)

.PHONY: all run check test test-unit test-integration setup services-up services-down lint \
        format format-check clean bench reference test-container
all: $(EXECD)

# Keep test and bench objects between runs (they are intermediates of pattern rules).
.SECONDARY:

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libexecd.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(EXECD): $(BUILD)/src/main.o $(BUILD)/libexecd.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test/%: $(BUILD)/test/unit/%.o $(FAKE_OBJ) $(BUILD)/libexecd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libexecd.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

setup:
	$(Q)scripts/setup.sh

services-up:
	$(Q)scripts/services.sh up

services-down:
	$(Q)scripts/services.sh down

run: setup services-up $(EXECD)
	$(Q)exec $(EXECD)

check: $(UNIT_BIN)
	$(Q)set -e; for t in $(UNIT_BIN); do echo "  UNIT    $$t"; $$t; done

test-unit: check

test-integration: $(EXECD) $(BENCH_BIN)
	$(Q)EXECD_BIN=$(abspath $(EXECD)) EXECD_SAN=$(SAN) $(PY) -m pytest -q -x --timeout=600 \
	    test/integration test/e2e $(PYTEST_ARGS)

test: setup services-up
	$(Q)$(MAKE) --no-print-directory check
	$(Q)$(MAKE) --no-print-directory test-integration
	$(Q)if [ -n "$(PODMAN)" ]; then \
	    $(MAKE) --no-print-directory test-container; \
	else echo "  SKIP    test-container: podman is absent (make test-container installs it)"; fi

# The container image (podman; see scripts/container.sh) and the replicas-of-one-image suite.
test-container: setup
	$(Q)scripts/container.sh build
	$(Q)$(PY) -m pytest -q -x --timeout=600 test/container $(PYTEST_ARGS)

bench: $(EXECD) $(BENCH_BIN)
	$(Q)scripts/bench.sh $(BUILD)

reference: $(EXECD)
	$(Q)$(EXECD) --print-reference > config/reference.md
	$(Q)$(EXECD) --print-example-config > config/execd.conf

lint:
	$(Q)clang-tidy --quiet $(LIB_SRC) src/main.c -- $(CFLAGS)
	$(Q)cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	    --inline-suppr -Iinclude -Isrc src

format:
	$(Q)clang-format -i $$(find src include test bench -name '*.[ch]')

format-check:
	$(Q)clang-format --dry-run --Werror $$(find src include test bench -name '*.[ch]')

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

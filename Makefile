# lockfence: leased named locks with fence tokens, built with PGXS.
#
#   make test   install what is missing (as root), build, install, and run
#               pg_regress, isolation and TAP suites on throwaway servers
#   make demo   start a throwaway server, show two clients contending, then
#               the race conditions with and without lockfence
#   make test-versions
#               the suites and the demo on PostgreSQL 15 and on 18 built
#               from source with assertions (17 when its source is
#               served), and a table
#   make check-versions
#               compile and link against PostgreSQL 17 and 18 (part of test)
#
# Plain PGXS targets work as usual: make, make install, make installcheck.

EXTENSION = lockfence
MODULE_big = lockfence
OBJS = \
	src/lockfence.o \
	src/shmem.o \
	src/lock_key.o \
	src/fence_token.o \
	src/token_band.o \
	src/lock_table.o \
	src/lock_wait.o \
	src/backend_locks.o \
	src/sql_api.o \
	src/views.o \
	src/fence_check.o \
	src/row_locks.o \
	src/lock_version.o \
	src/role_quota.o \
	src/lease_expiry.o
DATA = $(wildcard sql/lockfence--*.sql)
PGFILEDESC = "lockfence - leased named locks with fence tokens"

PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter

# Tests: pg_regress inputs in sql_tests/, isolation specs in specs/, the
# expected outputs of both in expected/, TAP tests in t/.  The isolation
# tester finds specs/ and expected/ where they are; pg_regress wants its
# inputs in <inputdir>/sql, which holds the install scripts here, so
# test_input/ points sql and expected at sql_tests/ and expected/.
REGRESS = $(patsubst sql_tests/%.sql,%,$(sort $(wildcard sql_tests/*.sql)))
REGRESS_OPTS = --inputdir=test_input --outputdir=test_output/regress \
	--temp-instance=test_output/regress_instance \
	--temp-config=sql_tests/lockfence.conf --load-extension=lockfence
ISOLATION = $(patsubst specs/%.spec,%,$(sort $(wildcard specs/*.spec)))
ISOLATION_OPTS = --outputdir=test_output/isolation \
	--temp-instance=test_output/isolation_instance \
	--temp-config=sql_tests/lockfence.conf --load-extension=lockfence
TAP_TESTS = 1
REGRESS_PREP = test_input
EXTRA_CLEAN = test_input test_output .lockfence-built-for

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

ifneq ($(PGXS),)
include $(PGXS)
else
all install installcheck:
	@echo "pg_config was not found; run 'make test' as root to install the build dependencies, or set PG_CONFIG" >&2
	@exit 1
endif

.DEFAULT_GOAL := all

$(OBJS): src/lockfence.h src/lock_table_internal.h src/compat.h .lockfence-built-for

# The server headers the objects were built against, rewritten (when make
# reads this file) only when they change: another PG_CONFIG (make
# test-versions) makes the objects rebuild.
LOCKFENCE_BUILT_FOR := $(shell $(PG_CONFIG) --includedir-server 2>/dev/null) $(VERSION)
$(shell echo '$(LOCKFENCE_BUILT_FOR)' | cmp -s - .lockfence-built-for || echo '$(LOCKFENCE_BUILT_FOR)' >.lockfence-built-for)

test_input:
	mkdir -p test_input test_output
	ln -sfn ../sql_tests test_input/sql
	ln -sfn ../expected test_input/expected

test:
	@./tools/test.sh

demo:
	@./tools/demo.sh

bench:
	@./bench/run.sh

bench-scale:
	@SECTIONS=scale ./bench/run.sh

bench-pooler:
	@SECTIONS=pooler ./bench/run.sh

valgrind:
	@./tools/valgrind.sh

check-versions:
	@./tools/check_pg_versions.sh

test-versions:
	@./tools/test_versions.sh

.PHONY: test test-versions demo bench bench-scale bench-pooler valgrind check-versions test_input

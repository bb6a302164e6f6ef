# pg_atrest: built with PGXS.  Two extensions: pg_atrest (the C module and its SQL)
# and pg_atrest_proxy (SQL only, for a PL/Proxy database in front of pg_atrest shards).

EXTENSION = pg_atrest pg_atrest_proxy
MODULE_big = pg_atrest
OBJS = \
	src/pg_atrest.o \
	src/secure_mem.o \
	src/envelope.o \
	src/envelope_core.o \
	src/keywrap.o \
	src/keytables.o \
	src/keyring.o \
	src/keyshare.o \
	src/keyadmin.o \
	src/keyretire.o \
	src/keyscrub.o \
	src/pagescrub.o \
	src/convert.o \
	src/types.o \
	src/provider.o \
	src/provider_service.o \
	src/provider_pkcs11.o \
	src/provider_command.o \
	src/subprocess.o \
	src/provider_azure.o \
	src/azure_client.o \
	src/provider_kmip.o \
	src/kmip_conn.o \
	src/kmip_ttlv.o \
	src/parse_core.o \
	src/kms_answer.o \
	src/store.o \
	src/owner.o \
	src/retention.o \
	src/reencrypt.o \
	src/wire.o \
	src/operators.o \
	src/guard.o \
	src/subscript.o

DATA = sql/pg_atrest--1.0.sql sql/pg_atrest--1.1.sql sql/pg_atrest--1.0--1.1.sql \
	sql/pg_atrest_proxy--1.0.sql

# every sql/*.sql but the install and update scripts, found next to this Makefile (also in an
# out-of-tree build)
srcroot := $(dir $(firstword $(MAKEFILE_LIST)))
REGRESS = $(patsubst $(srcroot)sql/%.sql,%,$(filter-out $(srcroot)sql/pg_atrest--% $(srcroot)sql/pg_atrest_proxy--%,$(sort $(wildcard $(srcroot)sql/*.sql))))
# PGXS passes --inputdir=$(srcdir), so an out-of-tree build finds sql/ and expected/.
REGRESS_OPTS = --load-extension=pg_atrest

# Warnings are errors in development and CI; a distribution build may turn that off
# (debian/rules: WERROR=).
WERROR ?= -Werror
PG_CPPFLAGS = -I/usr/include/p11-kit-1 $(shell pkg-config --cflags libzstd 2>/dev/null) -Wall -Wextra $(WERROR) \
	-Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers
SHLIB_LINK = -lssl -lcrypto -llz4 $(shell pkg-config --libs libzstd 2>/dev/null || echo -lzstd) -lcurl

EXTRA_CLEAN = results regression.diffs regression.out tmp_check log

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Out-of-tree builds (make -f SRCDIR/Makefile VPATH=SRCDIR, as Debian's pg_buildext does)
# put the objects in src/ of the build directory.
ifdef VPATH
$(shell mkdir -p src)
endif

# make dist: pg_atrest-VERSION.tar.gz (VERSION from META.json) of the committed tree, as
# PGXN and a user without git take it: it builds with "make && make install" alone.
# DIST_DIR says where to write it.  The extension's default_version, META.json and
# debian/changelog must name the same version.
DIST_VERSION = $(shell sed -n 's/^   "version": "\(.*\)",$$/\1/p' $(srcroot)META.json)
DIST_DIR ?= .
.PHONY: dist
dist:
	@test -n "$(DIST_VERSION)" || { echo "no version in META.json" >&2; exit 1; }
	@grep -q "^default_version = '$(basename $(DIST_VERSION))'" $(srcroot)pg_atrest.control || \
		{ echo "pg_atrest.control's default_version is not $(basename $(DIST_VERSION)) (META.json: $(DIST_VERSION))" >&2; exit 1; }
	@head -n 1 $(srcroot)debian/changelog | grep -q "($(DIST_VERSION))" || \
		{ echo "debian/changelog's version is not $(DIST_VERSION)" >&2; exit 1; }
	git -C $(srcroot) archive --format=tar.gz --prefix=pg_atrest-$(DIST_VERSION)/ \
		-o $(abspath $(DIST_DIR))/pg_atrest-$(DIST_VERSION).tar.gz HEAD

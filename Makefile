# pg_atrest: built with PGXS.

EXTENSION = pg_atrest
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

DATA = sql/pg_atrest--1.0.sql sql/pg_atrest--1.1.sql sql/pg_atrest--1.0--1.1.sql

REGRESS = $(patsubst sql/%.sql,%,$(filter-out sql/pg_atrest--%,$(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --outputdir=. --load-extension=pg_atrest

PG_CPPFLAGS = -I/usr/include/p11-kit-1 -Wall -Wextra -Werror \
	-Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers
SHLIB_LINK = -lssl -lcrypto -llz4 -lcurl

EXTRA_CLEAN = results regression.diffs regression.out tmp_check log

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

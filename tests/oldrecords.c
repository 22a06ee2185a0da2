/* Raw LMDB access to state.mdb for the tests (see oldrecords.h).  It
 * repeats what it needs of the schema on purpose: a change of layout in
 * broker/store.c must not change what "an old record" means here. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>

#include "oldrecords.h"

_Static_assert(sizeof(struct old_record) == OLD_RECORD_V2_SIZE, "version 2 layout");

static MDB_env *open_state(const char *dir, unsigned flags)
{
	char path[512];
	MDB_env *env;
	int rc;
	snprintf(path, sizeof path, "%s/state.mdb", dir);
	cr_assert_eq(mdb_env_create(&env), 0, "mdb_env_create");
	mdb_env_set_maxdbs(env, 2);
	mdb_env_set_mapsize(env, 64u << 20);
	rc = mdb_env_open(env, path, flags | MDB_NOSUBDIR, 0600);
	cr_assert_eq(rc, 0, "opening %s: %s", path, mdb_strerror(rc));
	return env;
}

void old_record_put(const char *dir, const char *name, const struct old_record *r)
{
	MDB_env *env = open_state(dir, 0);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen(name), (void *)name };
	MDB_val v = { r->version == 1 ? OLD_RECORD_V1_SIZE : OLD_RECORD_V2_SIZE, (void *)r };
	int rc = mdb_txn_begin(env, NULL, 0, &txn);
	cr_assert_eq(rc, 0, "mdb_txn_begin: %s", mdb_strerror(rc));
	rc = mdb_dbi_open(txn, "resources", MDB_CREATE, &dbi);
	cr_assert_eq(rc, 0, "mdb_dbi_open resources: %s", mdb_strerror(rc));
	rc = mdb_put(txn, dbi, &k, &v, 0);
	cr_assert_eq(rc, 0, "mdb_put %s: %s", name, mdb_strerror(rc));
	rc = mdb_txn_commit(txn);
	cr_assert_eq(rc, 0, "mdb_txn_commit: %s", mdb_strerror(rc));
	mdb_env_close(env);
}

/* The value of key in db of DIR/state.mdb into buf; its length or -1. */
static long get(const char *dir, const char *db, const char *key, void *buf, size_t size)
{
	MDB_env *env = open_state(dir, MDB_RDONLY);
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen(key), (void *)key }, v;
	long n = -1;
	int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	cr_assert_eq(rc, 0, "mdb_txn_begin: %s", mdb_strerror(rc));
	if (mdb_dbi_open(txn, db, 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0) {
		n = (long)v.mv_size;
		memcpy(buf, v.mv_data, v.mv_size < size ? v.mv_size : size);
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

long old_record_get(const char *dir, const char *name, void *buf, size_t size)
{
	return get(dir, "resources", name, buf, size);
}

uint64_t old_meta_get(const char *dir, const char *key)
{
	uint64_t v = 0;
	return get(dir, "meta", key, &v, sizeof v) == (long)sizeof v ? v : 0;
}

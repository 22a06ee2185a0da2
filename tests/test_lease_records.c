/* Unit tests of broker/store.c's lease records in leases.mdb: a record of
 * the fixed 720-byte layout earlier brokers wrote (put with the LMDB C API
 * directly) is handed back with every field, so a restarted broker of this
 * version adopts the leases of an older one; records written now are only
 * as long as their name and label, and come back as they went in, the
 * longest and the empty ones included; a record of no known layout is
 * deleted, never handed back. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "store.h"

/* The layout of earlier brokers' records, repeated here on purpose: a
 * change in broker/store.c must not change what "an old record" is. */
struct old_lease {
	uint64_t id, token;
	uint32_t mode, uid;
	uint64_t pid, pid_start, slot;
	int64_t granted_wall_ms, granted_ms;
	uint64_t client_id, secret;
	char name[512];
	char label[128];
};
_Static_assert(sizeof(struct old_lease) == 720, "the old lease layout");

static char dir[256];
static struct store *s;

/* What store_open() handed back. */
static struct store_lease got[8];
static size_t ngot;

static void setup(void)
{
	harness_tmpdir(dir, sizeof dir, "coord-lease-records");
	s = NULL;
	ngot = 0;
}

static void teardown(void)
{
	store_close(s);
	harness_rmtree(dir);
}

TestSuite(lease_records, .init = setup, .fini = teardown, .timeout = 60);

static void collect(void *ud, const struct store_lease *l)
{
	(void)ud;
	cr_assert_lt(ngot, sizeof got / sizeof got[0], "more records than the test put");
	got[ngot++] = *l;
}

static struct store *open_store(void)
{
	struct store_options o = { .state_map_mb = 16, .max_leases = 16 };
	struct store *st;
	uint64_t next_id;
	char err[256] = "";
	int rc = store_open(&st, dir, &o, collect, NULL, &next_id, err, sizeof err);
	cr_assert_eq(rc, 0, "store_open(%s): %d %s", dir, rc, err);
	return st;
}

static MDB_env *open_leases(void)
{
	char path[512];
	MDB_env *env;
	int rc;
	snprintf(path, sizeof path, "%s/leases.mdb", dir);
	cr_assert_eq(mdb_env_create(&env), 0, "mdb_env_create");
	mdb_env_set_maxdbs(env, 2);
	mdb_env_set_mapsize(env, 16u << 20);
	rc = mdb_env_open(env, path, MDB_NOSUBDIR, 0600);
	cr_assert_eq(rc, 0, "opening %s: %s", path, mdb_strerror(rc));
	return env;
}

/* Puts raw records (id -> n bytes) into leases.mdb, with this boot's id
 * so that store_open() hands them back. */
static void raw_put(uint64_t id, const void *v, size_t n)
{
	MDB_env *env = open_leases();
	MDB_txn *txn;
	MDB_dbi meta, table;
	char boot[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	MDB_val k = { 7, "boot_id" }, val;
	int rc;
	cr_assert(f && fgets(boot, sizeof boot, f), "reading the boot id");
	fclose(f);
	boot[strcspn(boot, "\n")] = 0;
	rc = mdb_txn_begin(env, NULL, 0, &txn);
	cr_assert_eq(rc, 0, "mdb_txn_begin: %s", mdb_strerror(rc));
	cr_assert_eq(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0, "meta db");
	cr_assert_eq(mdb_dbi_open(txn, "leases", MDB_CREATE | MDB_INTEGERKEY, &table), 0,
	             "leases db");
	val = (MDB_val){ strlen(boot), boot };
	cr_assert_eq(mdb_put(txn, meta, &k, &val, 0), 0, "put boot_id");
	k = (MDB_val){ sizeof id, &id };
	val = (MDB_val){ n, (void *)v };
	rc = mdb_put(txn, table, &k, &val, 0);
	cr_assert_eq(rc, 0, "put lease %llu: %s", (unsigned long long)id, mdb_strerror(rc));
	cr_assert_eq(mdb_txn_commit(txn), 0, "commit");
	mdb_env_close(env);
}

/* The size of lease id's raw record, or -1 if there is none. */
static long raw_size(uint64_t id)
{
	MDB_env *env = open_leases();
	MDB_txn *txn;
	MDB_dbi table;
	MDB_val k = { sizeof id, &id }, v;
	long n = -1;
	cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0, "mdb_txn_begin");
	if (mdb_dbi_open(txn, "leases", MDB_INTEGERKEY, &table) == 0 &&
	    mdb_get(txn, table, &k, &v) == 0)
		n = (long)v.mv_size;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

static void expect_same(const struct store_lease *a, const struct store_lease *b)
{
	cr_assert_eq(a->id, b->id, "id %llu, want %llu", (unsigned long long)a->id,
	             (unsigned long long)b->id);
	cr_assert(a->token == b->token && a->mode == b->mode && a->uid == b->uid &&
	                  a->pid == b->pid && a->pid_start == b->pid_start &&
	                  a->slot == b->slot && a->granted_wall_ms == b->granted_wall_ms &&
	                  a->granted_ms == b->granted_ms && a->client_id == b->client_id &&
	                  a->secret == b->secret,
	          "lease %llu: a number changed on the way", (unsigned long long)a->id);
	cr_assert_str_eq(a->name, b->name, "lease %llu: name", (unsigned long long)a->id);
	cr_assert_str_eq(a->label, b->label, "lease %llu: label", (unsigned long long)a->id);
}

Test(lease_records, an_older_brokers_record_is_handed_back_with_every_field)
{
	struct old_lease old = {
		.id = 5, .token = 77, .mode = 2, .uid = 1000, .pid = 4242, .pid_start = 123456,
		.slot = 3, .granted_wall_ms = 1700000000123, .granted_ms = 987654,
		.client_id = 9, .secret = 0x1122334455667788u,
	};
	struct store_lease want = {
		.id = 5, .token = 77, .mode = 2, .uid = 1000, .pid = 4242, .pid_start = 123456,
		.slot = 3, .granted_wall_ms = 1700000000123, .granted_ms = 987654,
		.client_id = 9, .secret = 0x1122334455667788u,
	};
	char garbage[100];
	snprintf(old.name, sizeof old.name, "key:old");
	snprintf(old.label, sizeof old.label, "an old label");
	snprintf(want.name, sizeof want.name, "key:old");
	snprintf(want.label, sizeof want.label, "an old label");
	memset(garbage, 0x5a, sizeof garbage);
	raw_put(old.id, &old, sizeof old);
	raw_put(6, garbage, sizeof garbage);

	s = open_store();
	cr_assert_eq(ngot, 1, "the old record, and only it, is handed back (got %zu)", ngot);
	expect_same(&got[0], &want);
	cr_assert_eq(raw_size(6), -1, "a record of no known layout is deleted");
	cr_assert_eq(raw_size(5), (long)sizeof old, "the old record stays for the caller");
}

Test(lease_records, records_are_as_long_as_their_strings_and_load_back)
{
	struct store_lease l[3] = {
		{ .id = 1, .token = 10, .mode = 2, .uid = 7, .pid = 100, .pid_start = 1000,
		  .slot = 0, .granted_wall_ms = 5, .granted_ms = 6, .client_id = 1, .secret = 11,
		  .name = "key:short", .label = "" },
		{ .id = 2, .token = 10, .mode = 1, .uid = 7, .pid = 101, .pid_start = 1001,
		  .slot = 1, .granted_wall_ms = -5, .granted_ms = -6, .client_id = 2, .secret = 12 },
		{ .id = 3, .token = 0, .mode = 1, .pid = 102, .slot = 2, .client_id = 3 },
	};
	memset(l[1].name, 'n', COORD_NAME_MAX);
	memset(l[1].label, 'l', COORD_LABEL_MAX);
	snprintf(l[2].name, sizeof l[2].name, "/a/file");

	s = open_store();
	for (int i = 0; i < 3; i++)
		cr_assert_eq(store_lease_put(s, &l[i]), 0, "put lease %d", i + 1);
	cr_assert_eq(store_commit(s), 0, "commit");
	store_close(s);
	s = NULL;
	cr_assert_lt(raw_size(1), 128, "a short name and no label take %ld bytes, not a fixed "
	             "record", raw_size(1));
	cr_assert_lt(raw_size(3), raw_size(1), "a shorter name takes fewer bytes (%ld, %ld)",
	             raw_size(3), raw_size(1));

	s = open_store();
	cr_assert_eq(ngot, 3, "every record is handed back (got %zu)", ngot);
	for (int i = 0; i < 3; i++)
		expect_same(&got[i], &l[i]);
}

Test(lease_records, a_delete_removes_the_record)
{
	struct store_lease l = { .id = 4, .token = 1, .mode = 2, .name = "key:gone" };
	s = open_store();
	cr_assert_eq(store_lease_put(s, &l), 0, "put");
	cr_assert_eq(store_commit(s), 0, "commit");
	cr_assert_eq(store_lease_del(s, l.id), 0, "delete");
	cr_assert_eq(store_commit(s), 0, "commit the delete");
	store_close(s);
	s = NULL;
	cr_assert_eq(raw_size(4), -1, "the deleted record is gone");
	s = open_store();
	cr_assert_eq(ngot, 0, "nothing is handed back (got %zu)", ngot);
}

/* LMDB persistence for the broker.
 *
 * Two environments live in the instance directory, because they need
 * different durability:
 *
 *   state.mdb   synced on every commit.  Per-resource records: the fencing
 *               token ceiling, the checkpoint policy and the last
 *               checkpoint's result; and the lease-id ceiling.  Written
 *               rarely (once per 1024 write grants of a resource, once per
 *               65536 grants in all, on policy changes and checkpoints).
 *   leases.mdb  MDB_NOSYNC.  One record per held lease, written at every
 *               grant and release.  It must survive a broker crash (the
 *               page cache does that) but not a machine crash: after a
 *               reboot every holder is dead anyway, so a boot id stored in
 *               it tells stale tables apart and they are dropped.  If a
 *               machine crash left it unreadable, it is recreated.
 *
 * Only the broker writes either environment; tools may open them with
 * read-only transactions.  Nothing here is reachable by clients. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

#define ID_RESERVE 65536

struct store {
	MDB_env *state, *leases;
	MDB_dbi resources, state_meta, meta, table;
	uint64_t id_reserved;      /* no lease id at or above this was handed out */
};

static MDB_val key(const char *k)
{
	return (MDB_val){ strlen(k), (void *)k };
}

static int lmdb_err(int rc)
{
	if (rc == ENOMEM || rc == MDB_MAP_FULL)
		return COORD_ENOMEM;
	if (rc == EACCES || rc == EPERM)
		return COORD_EPERM;
	return COORD_ESYS;
}

static void read_boot_id(char *buf, size_t size)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	buf[0] = 0;
	if (f) {
		if (!fgets(buf, (int)size, f))
			buf[0] = 0;
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = 0;
}

static int open_env(MDB_env **env, const char *dir, const char *file, unsigned flags,
                    size_t mapsize, int ndbs, char *err, size_t errsize)
{
	char path[4200];
	int rc;
	snprintf(path, sizeof path, "%s/%s", dir, file);
	rc = mdb_env_create(env);
	if (rc)
		goto fail;
	mdb_env_set_mapsize(*env, mapsize);
	mdb_env_set_maxdbs(*env, (MDB_dbi)ndbs);
	rc = mdb_env_open(*env, path, flags | MDB_NOSUBDIR | MDB_NOTLS, 0600);
	if (rc)
		goto fail;
	return 0;
fail:
	snprintf(err, errsize, "%s: %s", path, mdb_strerror(rc));
	if (*env)
		mdb_env_close(*env);
	*env = NULL;
	return lmdb_err(rc);
}

static int open_leases(struct store *s, const char *dir,
                       void (*old)(void *ud, const struct store_lease *l), void *ud,
                       uint64_t *next_id, char *err, size_t errsize)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	char boot[64], stored[64] = "";
	int rc;

	rc = open_env(&s->leases, dir, "leases.mdb", MDB_NOSYNC, 64u << 20, 2, err, errsize);
	if (rc < 0)
		return rc;
	read_boot_id(boot, sizeof boot);
	rc = mdb_txn_begin(s->leases, NULL, 0, &txn);
	if (rc)
		goto fail;
	if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) ||
	    (rc = mdb_dbi_open(txn, "leases", MDB_CREATE | MDB_INTEGERKEY, &s->table)))
		goto fail;
	k = key("boot_id");
	if (mdb_get(txn, s->meta, &k, &v) == 0 && v.mv_size < sizeof stored) {
		memcpy(stored, v.mv_data, v.mv_size);
		stored[v.mv_size] = 0;
	}
	/* Brokers before lease ids moved to state.mdb kept them here. */
	k = key("next_id");
	if (mdb_get(txn, s->meta, &k, &v) == 0 && v.mv_size == sizeof(uint64_t)) {
		uint64_t old_next;
		memcpy(&old_next, v.mv_data, sizeof old_next);
		if (old_next > *next_id)
			*next_id = old_next;
	}

	if (strcmp(stored, boot) != 0) {
		/* Another boot: every holder is dead. */
		if ((rc = mdb_drop(txn, s->table, 0)))
			goto fail;
	} else {
		/* This boot: hand every record to the caller, which adopts the
		 * leases of live holders and deletes the others.  Records of
		 * another layout cannot be adopted; they go. */
		rc = mdb_cursor_open(txn, s->table, &cur);
		if (rc)
			goto fail;
		while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
			struct store_lease l;
			if (v.mv_size != sizeof l) {
				if ((rc = mdb_cursor_del(cur, 0)))
					goto fail;
				continue;
			}
			memcpy(&l, v.mv_data, sizeof l);
			l.name[COORD_NAME_MAX] = 0;
			l.label[COORD_LABEL_MAX] = 0;
			if (old)
				old(ud, &l);
		}
		mdb_cursor_close(cur);
		cur = NULL;
	}
	k = key("boot_id");
	v.mv_data = boot;
	v.mv_size = strlen(boot);
	if ((rc = mdb_put(txn, s->meta, &k, &v, 0)))
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto fail;
	return 0;
fail:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	snprintf(err, errsize, "%s/leases.mdb: %s", dir, mdb_strerror(rc));
	return lmdb_err(rc);
}

int store_open(struct store **out, const char *dir,
               void (*old)(void *ud, const struct store_lease *l), void *ud,
               uint64_t *next_lease_id, char *err, size_t errsize)
{
	struct store *s = calloc(1, sizeof *s);
	MDB_txn *txn = NULL;
	int rc;

	if (!s)
		return COORD_ENOMEM;
	rc = open_env(&s->state, dir, "state.mdb", 0, 256u << 20, 2, err, errsize);
	if (rc < 0)
		goto fail;
	rc = mdb_txn_begin(s->state, NULL, 0, &txn);
	if (!rc)
		rc = mdb_dbi_open(txn, "resources", MDB_CREATE, &s->resources);
	if (!rc)
		rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->state_meta);
	if (!rc) {
		MDB_val k = key("next_lease_id"), v;
		*next_lease_id = 1;
		if (mdb_get(txn, s->state_meta, &k, &v) == 0 && v.mv_size == sizeof(uint64_t))
			memcpy(next_lease_id, v.mv_data, sizeof *next_lease_id);
		rc = mdb_txn_commit(txn);
		txn = NULL;
	}
	if (rc) {
		snprintf(err, errsize, "%s/state.mdb: %s", dir, mdb_strerror(rc));
		rc = lmdb_err(rc);
		goto fail;
	}
	rc = open_leases(s, dir, old, ud, next_lease_id, err, errsize);
	/* The old broker may have used ids up to its reservation: skip them. */
	s->id_reserved = *next_lease_id;
	if (rc < 0 && s->leases == NULL)
		goto fail;
	if (rc < 0) {
		/* Unreadable after a machine crash (MDB_NOSYNC): it only held
		 * leases of dead processes.  Start it afresh. */
		char path[4200];
		mdb_env_close(s->leases);
		s->leases = NULL;
		snprintf(path, sizeof path, "%s/leases.mdb", dir);
		unlink(path);
		snprintf(path, sizeof path, "%s/leases.mdb-lock", dir);
		unlink(path);
		rc = open_leases(s, dir, old, ud, next_lease_id, err, errsize);
		if (rc < 0)
			goto fail;
	}
	s->id_reserved = *next_lease_id;
	*out = s;
	return 0;
fail:
	if (txn)
		mdb_txn_abort(txn);
	store_close(s);
	return rc;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->leases) {
		mdb_env_sync(s->leases, 1);
		mdb_env_close(s->leases);
	}
	if (s->state)
		mdb_env_close(s->state);
	free(s);
}

int store_resource_load(struct store *s, const char *name, struct store_resource *out)
{
	MDB_txn *txn;
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc;
	memset(out, 0, sizeof *out);
	rc = mdb_txn_begin(s->state, NULL, MDB_RDONLY, &txn);
	if (rc)
		return lmdb_err(rc);
	rc = mdb_get(txn, s->resources, &k, &v);
	if (rc == 0) {
		/* Older, shorter records load with the new fields zeroed. */
		memcpy(out, v.mv_data, v.mv_size < sizeof *out ? v.mv_size : sizeof *out);
		out->command[STORE_COMMAND_MAX] = 0;
		out->message[STORE_MESSAGE_MAX] = 0;
	}
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return COORD_ENOENT;
	return rc ? lmdb_err(rc) : 0;
}

int store_resource_save(struct store *s, const char *name, const struct store_resource *r)
{
	MDB_txn *txn;
	MDB_val k = { strlen(name), (void *)name }, v = { sizeof *r, (void *)r };
	int rc = mdb_txn_begin(s->state, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc);
	rc = mdb_put(txn, s->resources, &k, &v, 0);
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lmdb_err(rc) : 0;
}

/* Durably reserves lease ids up to past `id` (a synced commit of
 * state.mdb), so ids stay unique for the life of the directory even when
 * leases.mdb is recreated. */
static int reserve_ids(struct store *s, uint64_t id)
{
	uint64_t next = id + ID_RESERVE;
	MDB_val k = key("next_lease_id"), v = { sizeof next, &next };
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->state, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc);
	rc = mdb_put(txn, s->state_meta, &k, &v, 0);
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc);
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return lmdb_err(rc);
	s->id_reserved = next;
	return 0;
}

int store_lease_put(struct store *s, const struct store_lease *l)
{
	MDB_txn *txn;
	MDB_val k = { sizeof l->id, (void *)&l->id }, v = { sizeof *l, (void *)l };
	int rc = l->id >= s->id_reserved ? reserve_ids(s, l->id) : 0;
	if (rc < 0)
		return rc;
	rc = mdb_txn_begin(s->leases, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc);
	rc = mdb_put(txn, s->table, &k, &v, 0);
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lmdb_err(rc) : 0;
}

int store_lease_del(struct store *s, uint64_t id)
{
	MDB_txn *txn;
	MDB_val k = { sizeof id, &id };
	int rc = mdb_txn_begin(s->leases, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc);
	rc = mdb_del(txn, s->table, &k, NULL);
	if (rc && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return lmdb_err(rc);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lmdb_err(rc) : 0;
}

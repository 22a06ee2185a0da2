/* LMDB persistence for the broker.
 *
 * Two environments live in the instance directory, because they need
 * different durability:
 *
 *   state.mdb   synced on every commit.  Per-resource records (compact,
 *               well under a page: the checkpoint policy, hold limits, the
 *               last checkpoint's result, a token lower bound); the
 *               fencing-token ceiling and the lease-id ceiling.  Written
 *               rarely (once per STORE_TOKEN_BLOCK write grants in all,
 *               once per 65536 grants, on policy changes and checkpoints).
 *   leases.mdb  MDB_NOSYNC.  One record per held lease, written at every
 *               grant and release, batched: one commit per loop
 *               iteration (store_commit()).  It must survive a broker crash (the
 *               page cache does that) but not a machine crash: after a
 *               reboot every holder is dead anyway, so a boot id stored in
 *               it tells stale tables apart and they are dropped.  If a
 *               machine crash left it unreadable, it is recreated.
 *
 * Only the broker writes either environment; tools may open them with
 * read-only transactions.  Nothing here is reachable by clients.
 *
 * Bad states (docs/design.md, "Bad states").  A full map (MDB_MAP_FULL)
 * and a full filesystem (ENOSPC, EDQUOT) make a write fail with
 * COORD_EFULL or COORD_ENOSPC and change nothing; they are logged once per
 * interval with a count, never once per request.  leases.mdb's map is
 * sized for --max-leases records, so it cannot fill before the lease
 * table does; state.mdb's is --map-size.  A delete that fails (it needs
 * pages too) is kept and done again, so a released lease's record goes
 * as soon as there is room.  If the files are removed or replaced under
 * the broker, store_restore() copies the open environments back into
 * place. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "store.h"

#define ID_RESERVE 65536
#define STATE_MAP_MB_DEFAULT 1024
/* A lease record with its node fits in half a page; a page per record
 * leaves room for half-full pages after splits, branch pages and the
 * pages a transaction copies. */
#define LEASES_MAP_PER_RECORD 4096
#define LEASES_MAP_BASE (4u << 20)

/* The conditions logged once per interval. */
enum store_condition {
	STORE_STATE_FULL,          /* state.mdb: MDB_MAP_FULL */
	STORE_LEASES_FULL,         /* leases.mdb: MDB_MAP_FULL */
	STORE_NO_SPACE,            /* either: ENOSPC or EDQUOT */
	STORE_CONDITIONS
};

struct store_condition_log {
	uint64_t pending;          /* failures since the last line */
	uint64_t total;            /* failures since writes last succeeded */
	int64_t logged_ms;
	const char *file;          /* of the last failure */
	int err;                   /* errno of the last failure */
};

/* A lease-record change of the batch. */
struct store_op {
	int del;                   /* 1: delete id; 0: put the record */
	uint64_t id;
	size_t off, len;           /* a put: its encoded record, in bytes */
};

struct store {
	MDB_env *state, *leases;
	MDB_dbi resources, state_meta, meta, table;
	uint64_t id_reserved;      /* no lease id at or above this was handed out */
	uint64_t token_ceiling;    /* durable: no token above it was handed out */
	uint64_t token_next;       /* the next token to hand out */
	char dir[4096];
	size_t state_map, leases_map;
	struct log *log;
	uint64_t *undeleted;       /* lease records whose delete failed */
	size_t nundeleted, undeleted_cap;
	int64_t retry_ms;          /* when they are tried again */
	struct store_op *ops;      /* the batch: changes not committed yet */
	size_t nops, ops_cap;
	char *bytes;               /* the batch's encoded records */
	size_t nbytes, bytes_cap;
	struct store_condition_log cond[STORE_CONDITIONS];
};

static MDB_val key(const char *k)
{
	return (MDB_val){ strlen(k), (void *)k };
}

static int lmdb_err(int rc)
{
	if (rc == MDB_MAP_FULL)
		return COORD_EFULL;
	if (rc == ENOSPC || rc == EDQUOT)
		return COORD_ENOSPC;
	if (rc == ENOMEM)
		return COORD_ENOMEM;
	if (rc == EACCES || rc == EPERM)
		return COORD_EPERM;
	return COORD_ESYS;
}

/* ---- conditions, logged once per interval ---- */

static void log_condition(struct store *s, enum store_condition k, int64_t now)
{
	struct store_condition_log *c = &s->cond[k];
	if (s->log && k == STORE_NO_SPACE)
		log_event(s->log, "no-space",
		          "dir=%s file=%s errno=%s failures=%llu hint=%s", log_quote(s->log, s->dir),
		          log_quote(s->log, c->file), c->err == EDQUOT ? "EDQUOT" : "ENOSPC",
		          (unsigned long long)c->pending,
		          "\"free space on the instance directory's filesystem; held leases are "
		          "kept and grants resume by themselves\"");
	else if (s->log)
		log_event(s->log, "store-full", "file=%s map_size_mb=%llu failures=%llu hint=%s",
		          log_quote(s->log, c->file),
		          (unsigned long long)((k == STORE_STATE_FULL ? s->state_map : s->leases_map) >> 20),
		          (unsigned long long)c->pending,
		          k == STORE_STATE_FULL ? "\"restart coordd with a larger --map-size MB\""
		                                : "\"restart coordd with a larger --max-leases\"");
	c->pending = 0;
	c->logged_ms = now;
}

/* A write to env failed with LMDB or errno code rc: counts and maybe logs
 * a full map or filesystem.  Returns the COORD_E* code. */
static int failed(struct store *s, MDB_env *env, int rc)
{
	int code = lmdb_err(rc);
	enum store_condition k;
	struct store_condition_log *c;
	int64_t now;
	if (code == COORD_EFULL)
		k = env == s->state ? STORE_STATE_FULL : STORE_LEASES_FULL;
	else if (code == COORD_ENOSPC)
		k = STORE_NO_SPACE;
	else
		return code;
	c = &s->cond[k];
	c->pending++;
	c->total++;
	c->file = env == s->state ? COORD_STATE_NAME : COORD_LEASES_NAME;
	c->err = rc;
	now = now_ms();
	if (now - c->logged_ms >= STORE_LOG_INTERVAL_MS)
		log_condition(s, k, now);
	return code;
}

/* A write to env succeeded: the conditions of its file are over. */
static void succeeded(struct store *s, MDB_env *env)
{
	const char *file = env == s->state ? COORD_STATE_NAME : COORD_LEASES_NAME;
	for (int k = 0; k < STORE_CONDITIONS; k++) {
		struct store_condition_log *c = &s->cond[k];
		if (!c->total || strcmp(c->file, file))
			continue;
		if (c->pending)
			log_condition(s, (enum store_condition)k, now_ms());
		if (s->log)
			log_event(s->log, "store-writable", "file=%s after_failures=%llu",
			          log_quote(s->log, file), (unsigned long long)c->total);
		c->total = 0;
	}
}

int64_t store_next_deadline(const struct store *s)
{
	int64_t next = -1;
	for (int k = 0; k < STORE_CONDITIONS; k++) {
		int64_t due = s->cond[k].logged_ms + STORE_LOG_INTERVAL_MS;
		if (s->cond[k].pending && (next < 0 || due < next))
			next = due;
	}
	if (s->nundeleted && (next < 0 || s->retry_ms < next))
		next = s->retry_ms;
	return next;
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

/* ---- lease records ----
 *
 * On disk: struct lease_v2 (numbers only, first a tag no lease id ever
 * takes), then name_len bytes of name and label_len bytes of label,
 * unterminated.  Brokers before it wrote struct store_lease as it was
 * then, name and label in full arrays (struct lease_fixed, 720 bytes,
 * its id first): such records still load, so a broker of either kind is
 * adopted by this one. */

#define LEASE_V2_TAG UINT64_C(0xc00dc00d00000002)

struct lease_v2 {
	uint64_t tag;
	uint64_t id, token;
	uint32_t mode, uid;
	uint64_t pid, pid_start, slot;
	int64_t granted_wall_ms, granted_ms;
	uint64_t client_id, secret;
	uint16_t name_len, label_len;
	uint32_t reserved;
};

struct lease_fixed {
	uint64_t id, token;
	uint32_t mode, uid;
	uint64_t pid, pid_start, slot;
	int64_t granted_wall_ms, granted_ms;
	uint64_t client_id, secret;
	char name[512];
	char label[128];
};
static_assert(sizeof(struct lease_fixed) == 720, "the old lease layout moved");
static_assert(COORD_NAME_MAX < 512 && COORD_LABEL_MAX < 128, "fields outgrew the old layout");
#define LEASE_RECORD_MAX (sizeof(struct lease_v2) + COORD_NAME_MAX + COORD_LABEL_MAX)

/* Decodes the lease record v of n bytes into out.  0, or -1 for a record
 * of no known layout. */
static int lease_decode(const void *v, size_t n, struct store_lease *out)
{
	struct lease_v2 h;
	memset(out, 0, sizeof *out);
	if (n >= sizeof h) {
		memcpy(&h, v, sizeof h);
		if (h.tag == LEASE_V2_TAG) {
			if (h.name_len > COORD_NAME_MAX || h.label_len > COORD_LABEL_MAX ||
			    n != sizeof h + h.name_len + h.label_len)
				return -1;
			*out = (struct store_lease){
				.id = h.id, .token = h.token, .mode = h.mode, .uid = h.uid,
				.pid = h.pid, .pid_start = h.pid_start, .slot = h.slot,
				.granted_wall_ms = h.granted_wall_ms, .granted_ms = h.granted_ms,
				.client_id = h.client_id, .secret = h.secret,
			};
			memcpy(out->name, (const char *)v + sizeof h, h.name_len);
			memcpy(out->label, (const char *)v + sizeof h + h.name_len, h.label_len);
			return 0;
		}
	}
	if (n == sizeof(struct lease_fixed)) {
		struct lease_fixed f;
		memcpy(&f, v, sizeof f);
		*out = (struct store_lease){
			.id = f.id, .token = f.token, .mode = f.mode, .uid = f.uid, .pid = f.pid,
			.pid_start = f.pid_start, .slot = f.slot,
			.granted_wall_ms = f.granted_wall_ms, .granted_ms = f.granted_ms,
			.client_id = f.client_id, .secret = f.secret,
		};
		snprintf(out->name, sizeof out->name, "%.*s", COORD_NAME_MAX, f.name);
		snprintf(out->label, sizeof out->label, "%.*s", COORD_LABEL_MAX, f.label);
		return 0;
	}
	return -1;
}

/* Encodes l into buf (LEASE_RECORD_MAX bytes); returns its length. */
static size_t lease_encode(const struct store_lease *l, char *buf)
{
	size_t nl = strnlen(l->name, COORD_NAME_MAX), ll = strnlen(l->label, COORD_LABEL_MAX);
	struct lease_v2 h = {
		.tag = LEASE_V2_TAG, .id = l->id, .token = l->token, .mode = l->mode,
		.uid = l->uid, .pid = l->pid, .pid_start = l->pid_start, .slot = l->slot,
		.granted_wall_ms = l->granted_wall_ms, .granted_ms = l->granted_ms,
		.client_id = l->client_id, .secret = l->secret,
		.name_len = (uint16_t)nl, .label_len = (uint16_t)ll,
	};
	memcpy(buf, &h, sizeof h);
	memcpy(buf + sizeof h, l->name, nl);
	memcpy(buf + sizeof h + nl, l->label, ll);
	return sizeof h + nl + ll;
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

	rc = open_env(&s->leases, dir, COORD_LEASES_NAME, MDB_NOSYNC, s->leases_map, 2, err, errsize);
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
			if (lease_decode(v.mv_data, v.mv_size, &l) < 0) {
				if ((rc = mdb_cursor_del(cur, 0)))
					goto fail;
				continue;
			}
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

int store_open(struct store **out, const char *dir, const struct store_options *opts,
               void (*old)(void *ud, const struct store_lease *l), void *ud,
               uint64_t *next_lease_id, char *err, size_t errsize)
{
	struct store *s = calloc(1, sizeof *s);
	MDB_txn *txn = NULL;
	int rc;

	if (!s)
		return COORD_ENOMEM;
	snprintf(s->dir, sizeof s->dir, "%s", dir);
	s->log = opts->log;
	s->state_map = (size_t)(opts->state_map_mb ? opts->state_map_mb : STATE_MAP_MB_DEFAULT) << 20;
	s->leases_map = LEASES_MAP_BASE + (size_t)opts->max_leases * LEASES_MAP_PER_RECORD;
	for (int k = 0; k < STORE_CONDITIONS; k++)
		s->cond[k] = (struct store_condition_log){ .logged_ms = -STORE_LOG_INTERVAL_MS, .file = "" };
	rc = open_env(&s->state, dir, COORD_STATE_NAME, 0, s->state_map, 2, err, errsize);
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
		/* An earlier broker may have handed out every token up to the
		 * ceiling; none above (0: none recorded, as before version 3,
		 * when each record held its own, a lower bound of its own). */
		k = key("token_ceiling");
		if (mdb_get(txn, s->state_meta, &k, &v) == 0 && v.mv_size == sizeof(uint64_t))
			memcpy(&s->token_ceiling, v.mv_data, sizeof s->token_ceiling);
		s->token_next = s->token_ceiling + 1;
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

static void delete_undeleted(struct store *s);

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->leases && s->nops)
		store_commit(s);
	if (s->leases && s->nundeleted)
		delete_undeleted(s);
	free(s->undeleted);
	free(s->ops);
	free(s->bytes);
	if (s->leases) {
		mdb_env_sync(s->leases, 1);
		mdb_env_close(s->leases);
	}
	if (s->state)
		mdb_env_close(s->state);
	free(s);
}

/* ---- resource records ----
 *
 * Version 3 on disk: struct resource_v3 (numbers only), then command_len
 * bytes of command and message_len bytes of message, unterminated.
 * Versions 1 and 2: struct resource_fixed, the fixed layout of earlier
 * brokers, 2 with the hold limits at the end and 1 without them.  Each
 * is known by its version field (first, in every layout) and its size.
 * Native byte order, like every record here: the files never leave the
 * machine. */

struct resource_v3 {
	uint32_t version, policy, sqlite_mode, timeout_ms;
	uint64_t token_ceiling, checkpoints, last_at_ms, last_duration_us;
	int64_t wal_before, wal_after;
	int32_t last_result;
	uint32_t max_hold_ms, recall_grace_ms;
	uint16_t command_len, message_len;
};

struct resource_fixed {
	uint32_t version, policy, sqlite_mode, timeout_ms;
	uint64_t token_ceiling, checkpoints, last_at_ms, last_duration_us;
	int32_t last_result;
	uint32_t reserved;
	int64_t wal_before, wal_after;
	char command[1024];
	char message[256];
	uint32_t max_hold_ms, recall_grace_ms; /* version 2 */
};
#define RESOURCE_V1_SIZE offsetof(struct resource_fixed, max_hold_ms)
#define RESOURCE_V2_SIZE sizeof(struct resource_fixed)
/* The sizes records of versions 1 and 2 were written with. */
static_assert(RESOURCE_V1_SIZE == 1352 && RESOURCE_V2_SIZE == 1360, "old record layouts moved");
static_assert(STORE_COMMAND_MAX < 1024 && STORE_MESSAGE_MAX < 256, "fields outgrew the old layouts");
static_assert(STORE_COMMAND_MAX <= UINT16_MAX && STORE_MESSAGE_MAX <= UINT16_MAX,
              "lengths are 16 bits");

/* Decodes the record v of n bytes into out (zeroed).  0 or COORD_EPROTO. */
static int resource_decode(const void *v, size_t n, struct store_resource *out)
{
	uint32_t version;
	memset(out, 0, sizeof *out);
	if (n < sizeof version)
		return COORD_EPROTO;
	memcpy(&version, v, sizeof version);
	if (version == 3 && n >= sizeof(struct resource_v3)) {
		struct resource_v3 h;
		memcpy(&h, v, sizeof h);
		if (h.command_len > STORE_COMMAND_MAX || h.message_len > STORE_MESSAGE_MAX ||
		    n != sizeof h + h.command_len + h.message_len)
			return COORD_EPROTO;
		*out = (struct store_resource){
			.version = 3, .policy = h.policy, .sqlite_mode = h.sqlite_mode,
			.timeout_ms = h.timeout_ms, .token_ceiling = h.token_ceiling,
			.checkpoints = h.checkpoints, .last_at_ms = h.last_at_ms,
			.last_duration_us = h.last_duration_us, .last_result = h.last_result,
			.wal_before = h.wal_before, .wal_after = h.wal_after,
			.max_hold_ms = h.max_hold_ms, .recall_grace_ms = h.recall_grace_ms,
		};
		memcpy(out->command, (const char *)v + sizeof h, h.command_len);
		memcpy(out->message, (const char *)v + sizeof h + h.command_len, h.message_len);
		return 0;
	}
	if ((version == 1 && n == RESOURCE_V1_SIZE) || (version == 2 && n == RESOURCE_V2_SIZE)) {
		struct resource_fixed f = { 0 }; /* version 1: the limits stay 0 */
		memcpy(&f, v, n);
		*out = (struct store_resource){
			.version = version, .policy = f.policy, .sqlite_mode = f.sqlite_mode,
			.timeout_ms = f.timeout_ms, .token_ceiling = f.token_ceiling,
			.checkpoints = f.checkpoints, .last_at_ms = f.last_at_ms,
			.last_duration_us = f.last_duration_us, .last_result = f.last_result,
			.wal_before = f.wal_before, .wal_after = f.wal_after,
			.max_hold_ms = f.max_hold_ms, .recall_grace_ms = f.recall_grace_ms,
		};
		snprintf(out->command, sizeof out->command, "%.*s", (int)(sizeof f.command - 1),
		         f.command);
		snprintf(out->message, sizeof out->message, "%.*s", (int)(sizeof f.message - 1),
		         f.message);
		return 0;
	}
	return COORD_EPROTO;
}

/* Encodes r as version 3 into buf (of at least sizeof(struct resource_v3)
 * + STORE_COMMAND_MAX + STORE_MESSAGE_MAX bytes).  Returns its length, or
 * 0 if a string is not terminated within its array. */
static size_t resource_encode(const struct store_resource *r, char *buf)
{
	size_t cl = strnlen(r->command, sizeof r->command);
	size_t ml = strnlen(r->message, sizeof r->message);
	struct resource_v3 h = {
		.version = 3, .policy = r->policy, .sqlite_mode = r->sqlite_mode,
		.timeout_ms = r->timeout_ms, .token_ceiling = r->token_ceiling,
		.checkpoints = r->checkpoints, .last_at_ms = r->last_at_ms,
		.last_duration_us = r->last_duration_us, .wal_before = r->wal_before,
		.wal_after = r->wal_after, .last_result = r->last_result,
		.max_hold_ms = r->max_hold_ms, .recall_grace_ms = r->recall_grace_ms,
	};
	if (cl > STORE_COMMAND_MAX || ml > STORE_MESSAGE_MAX)
		return 0;
	h.command_len = (uint16_t)cl;
	h.message_len = (uint16_t)ml;
	memcpy(buf, &h, sizeof h);
	memcpy(buf + sizeof h, r->command, cl);
	memcpy(buf + sizeof h + cl, r->message, ml);
	return sizeof h + cl + ml;
}

/* ---- the record in memory ---- */

int store_resource_mem_set(struct store_resource_mem *m, const struct store_resource *r)
{
	size_t cl = strnlen(r->command, sizeof r->command);
	size_t ml = strnlen(r->message, sizeof r->message);
	char *strings = NULL;
	int rc = 0;
	if (cl >= sizeof r->command || ml >= sizeof r->message)
		return COORD_EINVAL;
	if (cl || ml) {
		strings = malloc(cl + 1 + ml + 1);
		if (strings) {
			memcpy(strings, r->command, cl + 1);
			memcpy(strings + cl + 1, r->message, ml + 1);
		}
	}
	if (strings || (!cl && !ml)) {
		free(m->strings);
	} else {
		rc = COORD_ENOMEM; /* m keeps the strings it had */
		strings = m->strings;
	}
	*m = (struct store_resource_mem){
		.version = r->version, .policy = r->policy, .sqlite_mode = r->sqlite_mode,
		.timeout_ms = r->timeout_ms, .token_ceiling = r->token_ceiling,
		.checkpoints = r->checkpoints, .last_at_ms = r->last_at_ms,
		.last_duration_us = r->last_duration_us, .wal_before = r->wal_before,
		.wal_after = r->wal_after, .last_result = r->last_result,
		.max_hold_ms = r->max_hold_ms, .recall_grace_ms = r->recall_grace_ms,
		.strings = strings,
	};
	return rc;
}

const char *store_resource_mem_command(const struct store_resource_mem *m)
{
	return m->strings ? m->strings : "";
}

const char *store_resource_mem_message(const struct store_resource_mem *m)
{
	return m->strings ? m->strings + strlen(m->strings) + 1 : "";
}

void store_resource_mem_get(const struct store_resource_mem *m, struct store_resource *r)
{
	*r = (struct store_resource){
		.version = m->version, .policy = m->policy, .sqlite_mode = m->sqlite_mode,
		.timeout_ms = m->timeout_ms, .token_ceiling = m->token_ceiling,
		.checkpoints = m->checkpoints, .last_at_ms = m->last_at_ms,
		.last_duration_us = m->last_duration_us, .last_result = m->last_result,
		.wal_before = m->wal_before, .wal_after = m->wal_after,
		.max_hold_ms = m->max_hold_ms, .recall_grace_ms = m->recall_grace_ms,
	};
	snprintf(r->command, sizeof r->command, "%s", store_resource_mem_command(m));
	snprintf(r->message, sizeof r->message, "%s", store_resource_mem_message(m));
}

void store_resource_mem_free(struct store_resource_mem *m)
{
	free(m->strings);
	m->strings = NULL;
}

int store_resource_load(struct store *s, const char *name, struct store_resource *out)
{
	MDB_txn *txn;
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc;
	memset(out, 0, sizeof *out);
	if (!s->state) /* a restore failed half way: see store_restore() */
		return COORD_ESYS;
	rc = mdb_txn_begin(s->state, NULL, MDB_RDONLY, &txn);
	if (rc)
		return lmdb_err(rc);
	rc = mdb_get(txn, s->resources, &k, &v);
	if (rc == 0) {
		rc = resource_decode(v.mv_data, v.mv_size, out);
		mdb_txn_abort(txn);
		if (rc < 0 && s->log)
			log_event(s->log, "error", "op=resource-load resource=%s size=%zu code=%s",
			          log_quote(s->log, name), v.mv_size, coord_proto_errname(rc));
		return rc;
	}
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return COORD_ENOENT;
	return lmdb_err(rc);
}

int store_resource_save(struct store *s, const char *name, const struct store_resource *r)
{
	MDB_txn *txn = NULL;
	char buf[sizeof(struct resource_v3) + STORE_COMMAND_MAX + STORE_MESSAGE_MAX];
	MDB_val k = { strlen(name), (void *)name }, v = { resource_encode(r, buf), buf };
	int rc;
	if (!v.mv_size)
		return COORD_EINVAL;
	if (!s->state)
		return COORD_ESYS;
	rc = mdb_txn_begin(s->state, NULL, 0, &txn);
	if (rc)
		goto fail;
	rc = mdb_put(txn, s->resources, &k, &v, 0);
	if (rc)
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto fail;
	succeeded(s, s->state);
	return 0;
fail:
	if (txn)
		mdb_txn_abort(txn);
	return failed(s, s->state, rc);
}

/* ---- fencing tokens ---- */

/* Durably writes one 64-bit value of state.mdb's meta (a synced
 * commit). */
static int meta_put(struct store *s, const char *name, uint64_t value)
{
	MDB_val k = key(name), v = { sizeof value, &value };
	MDB_txn *txn = NULL;
	int rc;
	if (!s->state)
		return COORD_ESYS;
	rc = mdb_txn_begin(s->state, NULL, 0, &txn);
	if (rc)
		goto fail;
	rc = mdb_put(txn, s->state_meta, &k, &v, 0);
	if (rc)
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto fail;
	succeeded(s, s->state);
	return 0;
fail:
	if (txn)
		mdb_txn_abort(txn);
	return failed(s, s->state, rc);
}

/* Durably raises the token ceiling to `ceiling`. */
static int reserve_tokens(struct store *s, uint64_t ceiling)
{
	int rc = meta_put(s, "token_ceiling", ceiling);
	if (rc == 0)
		s->token_ceiling = ceiling;
	return rc;
}

int store_token_take(struct store *s, uint64_t above, uint64_t *token)
{
	uint64_t t = s->token_next > above ? s->token_next : above + 1;
	if (t > s->token_ceiling) {
		int rc = reserve_tokens(s, t + STORE_TOKEN_BLOCK - 1);
		if (rc < 0)
			return rc;
	}
	s->token_next = t + 1;
	*token = t;
	return 0;
}

uint64_t store_token_ceiling(const struct store *s)
{
	return s->token_ceiling;
}

/* Durably reserves lease ids up to past `id` (a synced commit of
 * state.mdb), so ids stay unique for the life of the directory even when
 * leases.mdb is recreated. */
static int reserve_ids(struct store *s, uint64_t id)
{
	uint64_t next = id + ID_RESERVE;
	int rc = meta_put(s, "next_lease_id", next);
	if (rc == 0)
		s->id_reserved = next;
	return rc;
}

/* Deletes the records of txn's undeleted leases (in the same transaction
 * as whatever follows, so a put that fits takes them along).  Returns 0
 * or an LMDB code. */
static int del_undeleted_in(struct store *s, MDB_txn *txn)
{
	for (size_t i = 0; i < s->nundeleted; i++) {
		MDB_val k = { sizeof s->undeleted[i], &s->undeleted[i] };
		int rc = mdb_del(txn, s->table, &k, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return rc;
	}
	return 0;
}

/* Remembers id as undeleted; out of memory, the record stays behind (a
 * restarted broker would adopt it, and its holder give it back). */
static void remember_undeleted(struct store *s, uint64_t id)
{
	if (s->nundeleted == s->undeleted_cap) {
		size_t cap = s->undeleted_cap ? 2 * s->undeleted_cap : 16;
		uint64_t *v = realloc(s->undeleted, cap * sizeof *v);
		if (!v) {
			if (s->log)
				log_event(s->log, "error", "op=lease-record-delete lease=%llu code=%s",
				          (unsigned long long)id, coord_proto_errname(COORD_ENOMEM));
			return;
		}
		s->undeleted = v;
		s->undeleted_cap = cap;
	}
	if (!s->nundeleted)
		s->retry_ms = now_ms() + STORE_LOG_INTERVAL_MS;
	s->undeleted[s->nundeleted++] = id;
}

/* One transaction deleting the undeleted records; if it fails, they are
 * tried again an interval later. */
static void delete_undeleted(struct store *s)
{
	MDB_txn *txn = NULL;
	int rc = s->leases ? mdb_txn_begin(s->leases, NULL, 0, &txn) : EIO;
	if (rc)
		goto fail;
	rc = del_undeleted_in(s, txn);
	if (rc)
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto fail;
	succeeded(s, s->leases);
	s->nundeleted = 0;
	return;
fail:
	if (txn)
		mdb_txn_abort(txn);
	failed(s, s->leases, rc);
	s->retry_ms = now_ms() + STORE_LOG_INTERVAL_MS;
}

void store_expire(struct store *s, int64_t now)
{
	for (int k = 0; k < STORE_CONDITIONS; k++)
		if (s->cond[k].pending && now - s->cond[k].logged_ms >= STORE_LOG_INTERVAL_MS)
			log_condition(s, (enum store_condition)k, now);
	if (s->nundeleted && now >= s->retry_ms)
		delete_undeleted(s);
}

/* ---- the batch: one transaction per loop iteration ---- */

/* Appends a put (rec) or a delete (id) to the batch.  Returns 0 or
 * COORD_ENOMEM. */
static int batch_add(struct store *s, int del, const struct store_lease *rec, uint64_t id)
{
	struct store_op *op;
	if (!del && s->bytes_cap - s->nbytes < LEASE_RECORD_MAX) {
		size_t cap = s->bytes_cap ? 2 * s->bytes_cap : 16 * LEASE_RECORD_MAX;
		char *v = realloc(s->bytes, cap);
		if (!v)
			return COORD_ENOMEM;
		s->bytes = v;
		s->bytes_cap = cap;
	}
	if (s->nops == s->ops_cap) {
		size_t cap = s->ops_cap ? 2 * s->ops_cap : 64;
		struct store_op *v = realloc(s->ops, cap * sizeof *v);
		if (!v)
			return COORD_ENOMEM;
		s->ops = v;
		s->ops_cap = cap;
	}
	op = &s->ops[s->nops++];
	op->del = del;
	op->id = del ? id : rec->id;
	op->off = s->nbytes;
	op->len = del ? 0 : lease_encode(rec, s->bytes + s->nbytes);
	s->nbytes += op->len;
	return 0;
}

int store_lease_put(struct store *s, const struct store_lease *l)
{
	int rc = l->id >= s->id_reserved ? reserve_ids(s, l->id) : 0;
	if (rc < 0)
		return rc;
	if (!s->leases)
		return COORD_ESYS;
	return batch_add(s, 0, l, 0);
}

int store_lease_del(struct store *s, uint64_t id)
{
	if (batch_add(s, 1, NULL, id) < 0) {
		/* Out of memory for the batch: remembered instead, and done
		 * with the next transaction or at the retry. */
		remember_undeleted(s, id);
		return COORD_ENOMEM;
	}
	return 0;
}

int store_pending(const struct store *s)
{
	return s->nops > 0;
}

int store_commit(struct store *s)
{
	MDB_txn *txn = NULL;
	int rc;
	if (!s->nops)
		return 0;
	rc = s->leases ? mdb_txn_begin(s->leases, NULL, 0, &txn) : EIO;
	if (rc)
		goto fail;
	rc = del_undeleted_in(s, txn);
	if (rc)
		goto fail;
	for (size_t i = 0; i < s->nops && !rc; i++) {
		struct store_op *op = &s->ops[i];
		MDB_val k = { sizeof op->id, &op->id }, v = { op->len, s->bytes + op->off };
		if (op->del) {
			rc = mdb_del(txn, s->table, &k, NULL);
			if (rc == MDB_NOTFOUND)
				rc = 0; /* put and deleted in one batch, or never put */
		} else {
			rc = mdb_put(txn, s->table, &k, &v, 0);
		}
	}
	if (rc)
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto fail;
	succeeded(s, s->leases);
	s->nundeleted = 0;
	s->nops = 0;
	s->nbytes = 0;
	return 0;
fail:
	if (txn)
		mdb_txn_abort(txn);
	/* Nothing of the batch is in the file.  Its puts are the caller's to
	 * undo; its deletes are remembered and done again. */
	for (size_t i = 0; i < s->nops; i++)
		if (s->ops[i].del)
			remember_undeleted(s, s->ops[i].id);
	s->nops = 0;
	s->nbytes = 0;
	if (s->nundeleted)
		s->retry_ms = now_ms() + STORE_LOG_INTERVAL_MS;
	return failed(s, s->leases, rc);
}

/* ---- the files removed or replaced under the broker ---- */

/* 1 if DIR/file no longer leads to the file env has open. */
static int moved_away(const struct store *s, MDB_env *env, const char *file)
{
	char path[4200];
	struct stat named, open_st;
	mdb_filehandle_t fd;
	snprintf(path, sizeof path, "%s/%s", s->dir, file);
	if (mdb_env_get_fd(env, &fd) || fstat(fd, &open_st) < 0)
		return 0;
	if (stat(path, &named) < 0)
		return errno == ENOENT;
	return named.st_dev != open_st.st_dev || named.st_ino != open_st.st_ino;
}

/* The named databases of env, opened again after env was. */
static int open_dbis(struct store *s, MDB_env *env)
{
	MDB_txn *txn = NULL;
	int rc = mdb_txn_begin(env, NULL, 0, &txn);
	if (rc)
		return rc;
	if (env == s->state)
		rc = mdb_dbi_open(txn, "resources", MDB_CREATE, &s->resources);
	if (!rc && env == s->state)
		rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->state_meta);
	if (!rc && env == s->leases)
		rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta);
	if (!rc && env == s->leases)
		rc = mdb_dbi_open(txn, "leases", MDB_CREATE | MDB_INTEGERKEY, &s->table);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	return mdb_txn_commit(txn);
}

/* Copies *env to DIR/.FILE.restore, renames that to DIR/FILE and opens
 * it as *env instead.  Returns 0 or COORD_E* with the reason in err. */
static int put_back(struct store *s, MDB_env **env, const char *file, unsigned flags,
                    size_t map, char *err, size_t errsize)
{
	char path[4200], tmp[4300];
	int fd = -1, rc;
	snprintf(path, sizeof path, "%s/%s", s->dir, file);
	snprintf(tmp, sizeof tmp, "%s/.%s.restore", s->dir, file);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = errno;
		goto fail;
	}
	rc = mdb_env_copyfd2(*env, fd, 0);
	if (!rc && fsync(fd) < 0)
		rc = errno;
	close(fd);
	if (!rc && rename(tmp, path) < 0)
		rc = errno;
	if (rc) {
		unlink(tmp);
		goto fail;
	}
	/* From here the copy is the environment: the open one goes. */
	mdb_env_close(*env);
	*env = NULL;
	rc = open_env(env, s->dir, file, flags, map, 2, err, errsize);
	if (rc < 0)
		return rc;
	rc = open_dbis(s, *env);
	if (rc) {
		mdb_env_close(*env);
		*env = NULL;
		goto fail;
	}
	return 0;
fail:
	snprintf(err, errsize, "%s: %s", path, rc > 0 ? strerror(rc) : mdb_strerror(rc));
	return lmdb_err(rc);
}

/* Opens DIR/file as *env again after an earlier put_back() failed half
 * way (the copy in place, the environment closed). */
static int reopen(struct store *s, MDB_env **env, const char *file, unsigned flags,
                  size_t map, char *err, size_t errsize)
{
	int rc = open_env(env, s->dir, file, flags, map, 2, err, errsize);
	if (rc < 0)
		return rc;
	rc = open_dbis(s, *env);
	if (rc) {
		mdb_env_close(*env);
		*env = NULL;
		snprintf(err, errsize, "%s/%s: %s", s->dir, file, mdb_strerror(rc));
		return lmdb_err(rc);
	}
	return 0;
}

int store_restore(struct store *s, int *restored, char *err, size_t errsize)
{
	int rc = 0;
	*restored = 0;
	if (!s->state)
		rc = reopen(s, &s->state, COORD_STATE_NAME, 0, s->state_map, err, errsize);
	else if (moved_away(s, s->state, COORD_STATE_NAME))
		rc = put_back(s, &s->state, COORD_STATE_NAME, 0, s->state_map, err, errsize);
	else
		rc = 1;
	if (rc < 0)
		return rc;
	if (rc == 0)
		*restored |= 1;
	if (!s->leases)
		rc = reopen(s, &s->leases, COORD_LEASES_NAME, MDB_NOSYNC, s->leases_map, err, errsize);
	else if (moved_away(s, s->leases, COORD_LEASES_NAME))
		rc = put_back(s, &s->leases, COORD_LEASES_NAME, MDB_NOSYNC, s->leases_map, err,
		              errsize);
	else
		rc = 1;
	if (rc < 0)
		return rc;
	if (rc == 0)
		*restored |= 2;
	return 0;
}

/* LMDB persistence for the broker: durable per-resource state and the
 * boot-scoped lease table.  See docs/design.md, "LMDB schema". */
#ifndef COORD_STORE_H
#define COORD_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "coord_proto.h"

#define STORE_COMMAND_MAX COORD_COMMAND_MAX
#define STORE_MESSAGE_MAX 255

/* A record of the "resources" database of state.mdb (durable), in memory.
 * On disk it is version 3, a fixed header and then the command and the
 * message only as long as they are (encoded and decoded in store.c only;
 * docs/design.md, "LMDB schema"); versions 1 and 2, this struct's fixed
 * layout without and with the hold limits, still load. */
struct store_resource {
	uint32_t version;          /* STORE_RESOURCE_VERSION once saved */
	uint32_t policy;           /* COORD_POLICY_* */
	uint32_t sqlite_mode;      /* COORD_SQLITE_* */
	uint32_t timeout_ms;       /* checkpoint time limit, 0: default */
	uint64_t token_ceiling;    /* a lower bound: every write token ever granted
	                              on it is at most max(this, the directory's
	                              token ceiling).  Versions 1-2: the resource's
	                              own reservation; version 3: its last write
	                              token as of this save (see grants.c) */
	uint64_t checkpoints;
	uint64_t last_at_ms;       /* wall clock */
	uint64_t last_duration_us;
	int32_t last_result;
	uint32_t reserved;
	int64_t wal_before, wal_after;
	char command[STORE_COMMAND_MAX + 1];
	char message[STORE_MESSAGE_MAX + 1];
	/* version 2: hold limits, 0: none (coord_set_limits()) */
	uint32_t max_hold_ms;
	uint32_t recall_grace_ms;
};
#define STORE_RESOURCE_VERSION 3

/* The same record as the broker keeps it in memory for every resource it
 * has open (struct resource_ext): the numbers of struct store_resource,
 * and its command and message in one allocation of their length
 * ("command\0message\0"), or none while both are empty (strings NULL). */
struct store_resource_mem {
	uint32_t version, policy, sqlite_mode, timeout_ms;
	uint64_t token_ceiling, checkpoints, last_at_ms, last_duration_us;
	int64_t wal_before, wal_after;
	int32_t last_result;
	uint32_t max_hold_ms, recall_grace_ms;
	char *strings;
};
/* Makes *m a copy of r, freeing what m held before.  Returns 0;
 * COORD_ENOMEM with r's numbers copied but m's strings as they were; or
 * COORD_EINVAL (m unchanged) if r's command or message is not terminated
 * within its array. */
int store_resource_mem_set(struct store_resource_mem *m, const struct store_resource *r);
/* The full record of m, in *r. */
void store_resource_mem_get(const struct store_resource_mem *m, struct store_resource *r);
/* m's command and message ("" when empty), valid until m changes. */
const char *store_resource_mem_command(const struct store_resource_mem *m);
const char *store_resource_mem_message(const struct store_resource_mem *m);
/* Frees m's strings (m is empty then). */
void store_resource_mem_free(struct store_resource_mem *m);

/* A lease record of leases.mdb, decoded (for adoption); on disk it is
 * only as long as its name and label are (store.c). */
struct store_lease {
	uint64_t id;
	uint64_t token;
	uint32_t mode;
	uint32_t uid;
	uint64_t pid;
	uint64_t pid_start;        /* /proc/PID/stat starttime: pid + this names a process */
	uint64_t slot;
	int64_t granted_wall_ms;
	int64_t granted_ms;        /* CLOCK_MONOTONIC: valid for the whole boot */
	uint64_t client_id;        /* the connection it was granted to (or
	                              last re-attached to) */
	uint64_t secret;           /* what its holder shows to re-attach it */
	char name[COORD_NAME_MAX + 1];
	char label[COORD_LABEL_MAX + 1];
};

struct store;
struct log;

/* How big the environments may grow, and where failures are logged. */
struct store_options {
	uint64_t state_map_mb;     /* state.mdb's map (coordd --map-size); 0: 1024 */
	uint64_t max_leases;       /* leases.mdb's map is sized for this many records */
	struct log *log;           /* full and no-space conditions; NULL: none */
};

/* Opens (creating) state.mdb and leases.mdb in dir.  Leases recorded in
 * an earlier boot are dropped; leases of an earlier broker of this boot
 * are passed to `old` one by one and kept: the caller adopts them or
 * deletes them with store_lease_del().  *next_lease_id receives the first id that
 * was never used.  Returns 0 or COORD_E*, with a reason in err. */
int store_open(struct store **out, const char *dir, const struct store_options *opts,
               void (*old)(void *ud, const struct store_lease *l), void *ud,
               uint64_t *next_lease_id, char *err, size_t errsize);
/* Commits the batch, deletes what store_lease_del() could not (see
 * below), then closes. */
void store_close(struct store *s);

/* Every write below fails with COORD_EFULL when the environment's map is
 * full, COORD_ENOSPC when the filesystem is (or the quota is reached), and
 * changes nothing then.  Each condition is logged at most once per
 * STORE_LOG_INTERVAL_MS with a count (event=store-full, event=no-space),
 * and once more when writes succeed again (event=store-writable). */
#define STORE_LOG_INTERVAL_MS 1000
/* 1 for the codes the store logs itself (once per interval): callers
 * should not log them once per request. */
static inline int store_condition(int rc)
{
	return rc == COORD_EFULL || rc == COORD_ENOSPC;
}

/* 0 and *out filled (any version; out->version says which), COORD_ENOENT
 * if never stored (out zeroed), COORD_EPROTO for a record of no known
 * layout (a newer broker's, or damaged), or another error. */
int store_resource_load(struct store *s, const char *name, struct store_resource *out);
/* Durable: returns only once the record is on disk, as version 3
 * (whatever r->version says).  COORD_EINVAL if r's command or message is
 * not terminated within its array. */
int store_resource_save(struct store *s, const char *name, const struct store_resource *r);

/* Fencing tokens: one counter for the whole directory, so tokens rise
 * across resources, brokers, crashes and reboots.  The meta record
 * `token_ceiling` of state.mdb is durable before any token above its old
 * value is handed out: a broker starts counting above it. */
#define STORE_TOKEN_BLOCK 4096
/* Takes the next token: the smallest above `above` (the resource's own
 * lower bound) and above every token taken before in this directory.
 * When it is above the durable ceiling, the ceiling is first raised to
 * it + STORE_TOKEN_BLOCK - 1 with one synced commit; otherwise nothing is
 * written.  Returns 0 and *token, or COORD_EFULL, COORD_ENOSPC, COORD_ESYS
 * with nothing taken. */
int store_token_take(struct store *s, uint64_t above, uint64_t *token);
/* The durable ceiling: no token above it was ever handed out. */
uint64_t store_token_ceiling(const struct store *s);

/* Lease records are changed in batches (docs/design.md, "Group commit"):
 * store_lease_put() and store_lease_del() only add to the batch, and
 * store_commit() writes it to leases.mdb in one transaction, once per
 * loop iteration.  A crash before the commit loses the whole batch, never
 * part of it, and batches are committed in order, so leases.mdb always
 * holds the records as they were at the end of some iteration.
 *
 * store_lease_put() adds a put: 0, or COORD_ENOMEM; or the error of the
 * synced commit of state.mdb that reserves lease ids (when l->id reaches
 * the reservation), which is done at once, before the record is. */
int store_lease_put(struct store *s, const struct store_lease *l);
/* Adds the delete of a lease record to the batch.  A delete that fails
 * (deletes need free pages too) is remembered and done again with every
 * later commit and at every store_expire(), so a record of a released
 * lease never outlives the shortage (a broker restarted meanwhile would
 * adopt it for its holder, whose next call gives it back).  Returns 0, or
 * COORD_ENOMEM (remembered as failed then). */
int store_lease_del(struct store *s, uint64_t id);
/* 1 while the batch holds changes not committed yet. */
int store_pending(const struct store *s);
/* Commits the batch (with the deletes that failed before) in one write
 * transaction, and empties it.  Returns 0, or the error (COORD_EFULL,
 * COORD_ENOSPC, ... logged as above): then nothing of the batch is in the
 * file; its deletes are remembered and done again, and the puts are the
 * caller's to undo (the grants they record must be refused). */
int store_commit(struct store *s);

/* The earliest time something of the store's is due (a condition's count
 * logged, a failed delete done again), or -1; and doing it. */
int64_t store_next_deadline(const struct store *s);
void store_expire(struct store *s, int64_t now);

/* Puts state.mdb and leases.mdb back when the names in the directory no
 * longer lead to the environments the broker has open (removed, or
 * replaced): each is copied from the open environment to a new file,
 * renamed into place and opened again, so nothing committed is lost.
 * Sets bit 1 (state.mdb) and 2 (leases.mdb) of *restored for each one
 * put back.  Returns 0 or COORD_E* with the reason in err. */
int store_restore(struct store *s, int *restored, char *err, size_t errsize);

#endif

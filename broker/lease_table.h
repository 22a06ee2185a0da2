/* The lease table: who holds which resource, who waits, and in what order.
 * Pure bookkeeping, no I/O: the broker reacts to its events through the
 * callbacks in struct lt_events, so it can be unit-tested on its own.
 * Callbacks never call back into the table; where the broker must change
 * the grant rules from inside one (a checkpoint starting), the callback
 * says so in its return value. */
#ifndef COORD_LEASE_TABLE_H
#define COORD_LEASE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "coord.h"
#include "deadline_heap.h"

struct lt_resource;
struct cache_page;

struct lt_lease {
	uint64_t id;
	uint64_t token;
	int mode;                   /* COORD_READ or COORD_WRITE */
	struct lt_resource *res;
	void *owner;                /* the broker's struct owner: a process,
	                               not a connection, so it can be
	                               re-attached to a new connection */
	int64_t granted_ms;         /* monotonic */
	int64_t recalled_ms;        /* monotonic time of the recall, or -1 */
	int64_t granted_wall_ms;    /* wall clock, for display and LMDB */
	uint64_t slot;              /* shared-region slot, set by the broker */
	uint64_t secret;            /* proves the holder at re-attach, set by
	                               the broker */
	int adopted;                /* taken over from an earlier broker */
	int limit_fired;            /* its hold limit fell due (once) */
	int kernel_wait;            /* its library waits for the kernel lock
	                               (KERNEL_WAIT) */
	struct lt_timer timer;      /* LT_TIMER_LEASE: in the heap while its
	                               resource has hold limits; LT_NEVER while
	                               none is due yet */
	struct lt_lease *res_next, *res_prev;
	struct lt_lease *own_next, *own_prev; /* the broker's per-owner list */
	/* The broker's, for a cached read grant (cache.c): */
	int cached;                 /* bound to an entry of a cache page */
	int cache_drop;             /* queued to be taken back */
	uint32_t cache_entry;
	int cache_fd;               /* its kernel lock, or -1 (when cached) */
	struct cache_page *cache_page; /* its connection's, NULL once gone */
	struct lt_lease *drop_next, *drop_prev;
	char label[];               /* at most COORD_LABEL_MAX bytes, allocated
	                               to its length */
};

struct lt_waiter {
	void *owner;
	int mode;
	uint32_t seq;               /* request to answer */
	int purpose;                /* LT_FOR_CLIENT or LT_FOR_CHECKPOINT */
	int64_t since_ms;
	struct lt_timer timer;      /* deadline_ms -1: waits forever */
	struct lt_resource *res;
	struct lt_waiter *next, *prev;
	struct lt_waiter *owner_next, *owner_prev; /* the table's own index of
	                                              each owner's waiters */
	char label[];               /* like lt_lease's */
};

enum { LT_FOR_CLIENT = 0, LT_FOR_CHECKPOINT = 1 };

/* Bits of lt_resource.blocked: a checkpoint runs and keeps these out. */
enum { LT_BLOCK_WRITERS = 1, LT_BLOCK_READERS = 2 };

struct lt_resource {
	char *name;
	uint64_t token;             /* last write token granted */
	int writers;                /* 0 or 1 */
	int readers;
	int blocked;                /* LT_BLOCK_* */
	size_t nwaiters;
	struct lt_lease *holders;
	struct lt_waiter *head, *tail;
	uint32_t max_hold_ms;       /* hold limits, 0: none (lease_table_set_limits) */
	uint32_t recall_grace_ms;
	void *ext;                  /* the broker's per-resource state */
	uint64_t walk_read, walk_write; /* the table's own: marks of the
	                                   deadlock walk */
	uint64_t hash;              /* the table's own: of the name, and */
	struct lt_resource *hash_next; /* the next in its bucket */
};

/* One owner of a wait-for cycle (see lease_table_request()).  The owner
 * before it in the cycle waits for `holds`, where this owner holds a
 * conflicting lease (`queued` 0) or waits ahead of it in the queue
 * (`queued` 1), in `holds_mode`; and this owner waits for `waits` in
 * `waits_mode`, where the next owner stands in its way.  The last owner
 * stands in the way of the first. */
struct lt_cycle_step {
	void *owner;
	const struct lt_resource *holds;
	int holds_mode;
	int queued;
	const struct lt_resource *waits;
	int waits_mode;
};

#define LT_CYCLE_MAX 16

/* step[0] is the requester, and its `waits` the resource it asked for;
 * the others follow in wait-for order.  When len > LT_CYCLE_MAX, step[]
 * holds the first LT_CYCLE_MAX - 1 owners and the last one. */
struct lt_cycle {
	size_t len;                 /* owners in the cycle, >= 1 */
	struct lt_cycle_step step[LT_CYCLE_MAX];
};

struct lease_table;

struct lt_events {
	/* Monotonic milliseconds, for the start time of queued grants. */
	int64_t (*now)(void *ud);
	/* A resource entered the table.  Load its token (and whatever else)
	 * into res; return 0 or a COORD_E* code to refuse it. */
	int (*resource_open)(void *ud, struct lt_resource *res);
	/* The resource is idle: return 1 to keep it in memory anyway. */
	int (*resource_keep)(void *ud, struct lt_resource *res);
	/* The resource is idle and about to be freed. */
	void (*resource_close)(void *ud, struct lt_resource *res);
	/* A lease is about to be granted, to a waiter (w != NULL) or at once
	 * (w == NULL).  The broker persists it (token ceiling, LMDB record,
	 * slot).  Returning a COORD_E* code refuses the grant: the lease is
	 * dropped and the requester gets that error. */
	int (*grant)(void *ud, struct lt_lease *l, struct lt_waiter *w);
	/* A queued waiter was granted: answer w->seq with lease l.  For
	 * LT_FOR_CHECKPOINT waiters l is NULL: the resource is now free of
	 * conflicting holders and the checkpoint may start; return the
	 * LT_BLOCK_* bits it needs (0 if it does not run), which the table
	 * sets before it grants anyone else.  Client waiters return 0. */
	int (*granted)(void *ud, struct lt_waiter *w, struct lt_lease *l);
	/* The waiter gave up (timeout, refused grant) with this code. */
	void (*waiter_failed)(void *ud, struct lt_waiter *w, int err);
	/* The lease left the table; `why` is "release", "reclaim", ...
	 * Return LT_BLOCK_* bits to set on the resource before the queue is
	 * dispatched (a checkpoint starting on a write release), else 0. */
	int (*released)(void *ud, struct lt_lease *l, const char *why);
	/* A conflicting request was queued behind holder l, which has not
	 * been recalled before (l->recalled_ms is set): ask it to let go.
	 * May be NULL. */
	void (*recall)(void *ud, struct lt_lease *l);
	/* Optional: 1 if l leaves at its recall without its holder's help (a
	 * cached read grant nobody reads under: the broker takes it back), so
	 * the deadlock walk follows no edge to it. */
	int (*lets_go)(void *ud, const struct lt_lease *l);
	/* l's hold limit fell due: LT_LIMIT_MAX_HOLD (held max_hold_ms), or
	 * LT_LIMIT_RECALL_GRACE (recalled recall_grace_ms ago and still held).
	 * Once per lease.  The lease stays held: the broker revokes it.  May
	 * be NULL. */
	void (*limit)(void *ud, struct lt_lease *l, int why);
};

enum { LT_LIMIT_MAX_HOLD = 1, LT_LIMIT_RECALL_GRACE = 2 };
#define LT_NEVER INT64_MAX

struct lease_table *lease_table_new(const struct lt_events *ev, void *ud, size_t max_leases,
                                    size_t max_waiters, uint64_t first_lease_id);

/* Sets the seed of the table's hash of resource names: random, so that
 * clients cannot choose names that share a bucket.  Only while the table
 * holds no resource (right after lease_table_new()); 0 until set. */
void lease_table_seed_hash(struct lease_table *t, uint64_t seed);
void lease_table_free(struct lease_table *t);

/* Asks for `mode` on `name` for `owner`.  Returns:
 *   > 0 and *lease set:  granted at once (callbacks grant already ran);
 *   0 and *waiter set:   queued; one of granted/waiter_failed follows;
 *   < 0:                 COORD_EBUSY (timeout 0), COORD_EDEADLK,
 *                        COORD_ELIMIT, COORD_ENOMEM, or what a callback
 *                        refused with.  Nothing changed.
 * deadline_ms is monotonic, -1 forever; timeout 0 is deadline == now.
 *
 * COORD_EDEADLK has two causes:
 *   - self-deadlock: a client request (LT_FOR_CLIENT) for a resource the
 *     owner already holds, except a read on a held read (granted);
 *   - a wait-for cycle: the request would have to wait, and waiting would
 *     close a cycle back to `owner`.  A waiter waits for every holder of
 *     its resource whose lease conflicts with its mode and for every
 *     owner queued ahead of it (FIFO); an owner that waits (any of its
 *     waiters, client or checkpoint) waits for what they wait for.
 *     Readers sharing a resource are not edges, nor is a checkpoint's
 *     block (it ends on its own).  Then lease_table_cycle() tells the
 *     cycle.  The walk visits each owner and each resource at most once.
 * A request with timeout 0 never waits, so it gets COORD_EBUSY, never a
 * cycle. */
int lease_table_request(struct lease_table *t, const char *name, void *owner, int mode,
                        int64_t now_ms, int64_t deadline_ms, int purpose, uint32_t seq,
                        const char *label, struct lt_lease **lease, struct lt_waiter **waiter);

/* A lease an earlier broker granted, as its record says. */
struct lt_adoption {
	const char *name;
	void *owner;
	int mode;
	uint64_t id, token, secret, slot;
	int64_t granted_ms;         /* monotonic, as the earlier broker's clock
	                               reads in this one (same boot) */
	int64_t granted_wall_ms;
	const char *label;
};

/* Puts a lease an earlier broker granted back in the table as held, with
 * its id, token and slot, calling no grant callback (it is already
 * persisted) and granting nobody.  The resource's token rises to the
 * lease's if it is below.  Meant for a broker's start, before any
 * request.  Returns 0 and *out (adopted set), or COORD_EBUSY (it
 * conflicts with a lease adopted before it), COORD_EINVAL (bad mode, or
 * an id at or above the first id this table hands out), COORD_ELIMIT,
 * COORD_ENOMEM, or what resource_open refused with. */
int lease_table_adopt(struct lease_table *t, const struct lt_adoption *a, struct lt_lease **out);

/* Sets res's hold limits (0: none) and re-arms its holders' limit timers:
 * a holder falls due max_hold_ms after its grant, or recall_grace_ms after
 * its recall, whichever is first, once.  A limit already passed falls due
 * at the next lease_table_expire().  resource_open may set the two fields
 * directly instead (no holder yet).  Returns 0, or COORD_ENOMEM with
 * nothing changed. */
int lease_table_set_limits(struct lease_table *t, struct lt_resource *res, uint32_t max_hold_ms,
                           uint32_t recall_grace_ms);

/* The cycle that made the last lease_table_request() fail with
 * COORD_EDEADLK, or NULL if that call did not fail for a cycle (a
 * self-deadlock, or any other result).  Read it right away: its resources
 * and owners are the table's, and the next request, release, cancel,
 * expiry or block clears it (NULL from then on). */
const struct lt_cycle *lease_table_cycle(const struct lease_table *t);

/* Removes the lease (released/reclaimed/revoked, as `why` says), then
 * grants whatever the queue allows. */
void lease_table_release(struct lease_table *t, struct lt_lease *l, const char *why);

/* Removes a waiter without answering it (its owner is gone). */
void lease_table_cancel(struct lease_table *t, struct lt_waiter *w);

/* Fails every waiter whose deadline is <= now with COORD_ETIMEDOUT, and
 * calls ev.limit for every lease whose hold limit is due. */
void lease_table_expire(struct lease_table *t, int64_t now_ms);

/* Earliest deadline in the heap, or -1 if none (LT_NEVER counts as none). */
int64_t lease_table_next_deadline(const struct lease_table *t);

/* Sets the checkpoint block bits of a resource (0 clears them), then grants
 * what the queue allows.  Never from inside a callback: callbacks return
 * the bits instead. */
void lease_table_block(struct lease_table *t, struct lt_resource *res, int bits);

struct lt_resource *lease_table_find(struct lease_table *t, const char *name);
/* Calls fn for every resource (order unspecified). */
void lease_table_foreach(struct lease_table *t, void (*fn)(struct lt_resource *, void *), void *arg);
/* Frees the resource if it is idle (no holders, waiters or block) and
 * resource_keep does not keep it. */
void lease_table_maybe_close(struct lease_table *t, struct lt_resource *res);

size_t lease_table_leases(const struct lease_table *t);
size_t lease_table_waiters(const struct lease_table *t);
size_t lease_table_resources(const struct lease_table *t);

#endif

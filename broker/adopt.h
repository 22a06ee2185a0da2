/* Adoption: a starting broker takes over the leases an earlier broker of
 * this boot granted to processes that still live, and hands them back to
 * those processes when they reconnect (ATTACH).  See docs/design.md,
 * "Broker restarts". */
#ifndef COORD_ADOPT_H
#define COORD_ADOPT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct broker;
struct owner;
struct lt_lease;

/* The records store_open() passed on, collected for adopt_leases(). */
struct adopt_records {
	struct store_lease *v;
	size_t n, cap;
	int failed;                /* out of memory: some were not kept */
};

/* store_open()'s callback: keeps a copy of *l in the struct adopt_records
 * at ud. */
void adopt_collect(void *ud, const struct store_lease *l);

/* Before the broker accepts anyone, once broker_init() has run and the
 * region is open but not ready: adopts every recorded lease whose holder
 * lives (same pid and start time) into a detached owner per earlier
 * connection, watching the holder's pidfd; makes the region ready (every
 * slot not adopted is cleared); then reclaims the leases of dead holders
 * through the table, as after any death (a write lease checkpoints).
 * Frees the records.  Returns the number of leases adopted. */
size_t adopt_leases(struct broker *b, struct adopt_records *recs);

/* ATTACH from the connection of owner `o`: takes lease `lease_id` of the
 * detached owner that was connection `client_id` of o's process, if
 * `secret` is the lease's, and gives it to o (*out).  lease_id 0 gives
 * back every lease of that detached owner not attached.  Returns 0 or
 * COORD_ENOLEASE (no such lease, another process's, or a wrong secret;
 * logged as event=attach-refused). */
int adopt_attach(struct broker *b, struct owner *o, uint64_t client_id, uint64_t lease_id,
                 uint64_t secret, struct lt_lease **out);

/* Frees every detached owner without releasing its leases (shutdown: the
 * next broker adopts them again). */
void adopt_fini(struct broker *b);

#endif

/* Revoke: taking leases back from holders that do not let go, by
 * escalation (recall, grace, SIGTERM, grace, SIGKILL), reclaiming only
 * once the holder really exited.  See revoke.c. */
#ifndef COORD_REVOKE_H
#define COORD_REVOKE_H

#include <stdint.h>

struct broker;
struct client;
struct owner;
struct request;

/* Starts revoking what req selects (a lease id, every lease of a pid, or
 * every holder of a resource) for client c; c is answered when every
 * selected lease is gone, or at once with an error. */
void revoke_start(struct broker *b, struct client *c, const struct request *req);
/* l's hold limit fell due (LT_LIMIT_*, see lease_table.h): revoke it by
 * the same escalation, unless a revocation already covers it. */
struct lt_lease;
void revoke_limit(struct broker *b, struct lt_lease *l, int why);
/* A lease left the table (released, reclaimed): revocations waiting for it
 * may be done. */
void revoke_lease_gone(struct broker *b, uint64_t lease_id);
/* The next escalation time, or -1; and taking the steps that are due. */
int64_t revoke_next_deadline(const struct broker *b);
void revoke_expire(struct broker *b, int64_t now);
/* The owner is going away: as a requester it gets no answer. */
void revoke_forget(struct broker *b, const struct owner *o);
/* Frees every revocation (broker shutdown). */
void revoke_fini(struct broker *b);

#endif

/* Grant persistence: the lease table's events that make a grant durable
 * and visible (token reservation, LMDB record, shared-region slot, log
 * line) and undo it at release. */
#ifndef COORD_GRANTS_H
#define COORD_GRANTS_H

#include "lease_table.h"

/* All take the struct broker as ud; see struct lt_events for when the
 * table calls them. */
int grants_resource_open(void *ud, struct lt_resource *res);
int grants_resource_keep(void *ud, struct lt_resource *res);
void grants_resource_close(void *ud, struct lt_resource *res);
int grants_grant(void *ud, struct lt_lease *l, struct lt_waiter *w);
int grants_released(void *ud, struct lt_lease *l, const char *why);
void grants_recall(void *ud, struct lt_lease *l);

struct broker;
struct client;
struct owner;

/* Wakes c's NOTIFY pipe, if it has one (a byte; a full pipe is awake
 * already). */
void grants_notify(struct client *c);

/* (Re)writes l's record in leases.mdb, as l's owner now holds it. */
int grants_record(struct broker *b, const struct lt_lease *l);
/* Puts l on / takes l off o's list of leases. */
void grants_link(struct owner *o, struct lt_lease *l);
void grants_unlink(struct owner *o, struct lt_lease *l);

/* Queues the GRANT of l (granted now, or re-attached) for o's connection,
 * as the answer to request seq; it goes out only after this iteration's
 * grants_commit(), which refuses it instead if l's record fails. */
void grants_send(struct broker *b, struct owner *o, uint32_t seq, const struct lt_lease *l);
/* o is going (its connection closed): its queued answers are dropped. */
void grants_forget(struct broker *b, struct owner *o);
/* Commits the iteration's lease records (store_commit()); if that fails,
 * the grants and re-attachments they record are refused: taken back,
 * their answers turned into the error.  Called once per loop iteration,
 * before the queued output is flushed. */
void grants_commit(struct broker *b);

/* "read" or "write", for log lines. */
const char *grants_mode_name(int mode);

#endif

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

/* "read" or "write", for log lines. */
const char *grants_mode_name(int mode);

#endif

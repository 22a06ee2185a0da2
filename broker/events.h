/* The event feed: what happened in the broker, appended to the ring file
 * coordd.events that readers map read-only (see events.c), and counted
 * for the metrics (metrics.c) on the way, with the feed's own figures
 * (records published, watchers). */
#ifndef COORD_EVENTS_H
#define COORD_EVENTS_H

#include <stddef.h>
#include <stdint.h>

struct broker;
struct client;
struct lt_lease;
struct lt_waiter;

/* Opens (or reuses) DIR/coordd.events and appends the START record.  A
 * feed that cannot be opened is logged and left off: the broker runs on
 * without one, and the other calls do nothing but count. */
void events_open(struct broker *b);
/* Makes the records appended since the last call visible (head, then the
 * wake word) and wakes the watchers if there are any.  Once per batch of
 * events, after the commit. */
void events_publish(void);
/* Appends STOP, publishes, marks the feed as without a broker, unmaps. */
void events_close(void);

/* The hooks, one per event, called where the event happens. */
void events_grant(const struct lt_lease *l, const struct lt_waiter *w);
void events_wait(const struct lt_waiter *w);
void events_recall(const struct lt_lease *l);
void events_released(const struct lt_lease *l, const char *why);
void events_waiter_failed(const struct lt_waiter *w, int err);
void events_cancel(const struct lt_waiter *w, const char *why);
void events_checkpoint_start(const char *name, int kind, int pid);
void events_checkpoint_done(const char *name, int kind, int code, int64_t duration_us,
                            int64_t wal_before, int64_t wal_after);

/* Connection c sleeps on the feed (METRICS{COORD_METRICS_WATCH}, which
 * requests.c answers with this): wake it after each publish until it
 * goes.  Returns 0, or COORD_ELIMIT
 * (EVENTS_WATCHERS_MAX watchers already), COORD_ENOTSUP (no feed). */
#define EVENTS_WATCHERS_MAX 256
int events_watch(struct client *c);
/* c is going: no more wakes for it (a no-op if it never watched). */
void events_unwatch(struct client *c);

#endif

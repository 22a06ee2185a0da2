/* Request handlers: what the broker does with each decoded client request,
 * and the answers that come later (a queued grant, a timeout, a finished
 * checkpoint). */
#ifndef COORD_REQUESTS_H
#define COORD_REQUESTS_H

#include <stddef.h>
#include <stdint.h>

#include "state.h"

/* One packet from c: decoded, checked, acted on and answered. */
void requests_handle(struct broker *b, struct client *c, const void *buf, size_t len);
/* Decides the try-once requests (timeout 0) of this batch of events that
 * found their resource held: once the whole batch is read, so that a
 * release read after them in it counts.  Called before the commit. */
void requests_decide_tries(struct broker *b);

/* struct lt_events.granted and .waiter_failed (ud is the broker). */
int requests_granted(void *ud, struct lt_waiter *w, struct lt_lease *l);
void requests_waiter_failed(void *ud, struct lt_waiter *w, int err);

/* struct ckpt_jobs.done: a checkpoint asked for by `requester` (a struct
 * owner) finished. */
void requests_checkpoint_done(void *ud, struct lt_resource *res, void *requester, uint32_t seq,
                              int status);

#endif

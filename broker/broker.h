/* coordd's life: the broker's parts wired together (broker.c), for main.c. */
#ifndef COORD_BROKER_H
#define COORD_BROKER_H

#include <stddef.h>

#include "state.h"

/* Sets up the table, the loop, signals and checkpoint jobs; b->store and
 * b->region must be open.  Returns 0 or COORD_E* with the reason in err. */
int broker_init(struct broker *b, char *err, size_t errsize);
/* Binds and listens on the socket of b->cfg.dir, once adoption is done,
 * so a client that can connect finds the region ready.  Returns 0 or
 * COORD_E* with the reason in err. */
int broker_listen(struct broker *b, char *err, size_t errsize);
/* Runs until SIGTERM or SIGINT.  Returns 0, or COORD_ESYS. */
int broker_run(struct broker *b);
/* Kills running checkpoints, drops every client, frees the table. */
void broker_fini(struct broker *b);

#endif

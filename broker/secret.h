/* Lease secrets: random bytes from a pool (secret.c). */
#ifndef COORD_SECRET_H
#define COORD_SECRET_H

#include <stddef.h>

/* Fills out with n random bytes, none of which stays anywhere else. */
void secret_draw(void *out, size_t n);
/* Wipes the pool: a forked child (the checkpoint's) keeps no secret of a
 * lease to come. */
void secret_forget(void);

#endif

/* The random secrets of leases (the proof a client gives that a lease is
 * its own).  They are drawn from a pool that one arc4random_buf() call
 * (getrandom(2)) fills 4 KiB at a time, instead of a system call per
 * grant; each secret is wiped from the pool as it is drawn, and a forked
 * child wipes the rest.  Nothing here is ever written to a file or sent
 * anywhere but to the lease's own client. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "secret.h"

static unsigned char pool[4096];
static size_t left;

void secret_forget(void)
{
	explicit_bzero(pool, sizeof pool);
	left = 0;
}

void secret_draw(void *out, size_t n)
{
	if (n > sizeof pool) {
		arc4random_buf(out, n);
		return;
	}
	if (left < n) {
		arc4random_buf(pool, sizeof pool);
		left = sizeof pool;
	}
	memcpy(out, pool + sizeof pool - left, n);
	explicit_bzero(pool + sizeof pool - left, n);
	left -= n;
}

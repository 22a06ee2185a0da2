/* coordctl, private: which holders of coord_list() still wait for their
 * kernel lock (coord.h, section 7) because a process the broker does not
 * count among the resource's holders has the file flock()ed, and who that
 * process is.  Used by `coordctl list` and `coordctl show`.  Not
 * installed. */
#ifndef COORD_KERNEL_LOCKS_H
#define COORD_KERNEL_LOCKS_H

#include <stddef.h>
#include <sys/types.h>

#include "coord.h"
#include "ctl.h"

/* How many of the processes holding one lock are named. */
#define KERNEL_LOCKS_NAMED 4

/* A flock(2) on a resource's file, held outside the broker's view, that
 * conflicts with a holder's mode. */
struct kernel_lock_outsider {
	dev_t dev;           /* the file locked */
	ino_t ino;
	long locked_by;      /* the pid /proc/locks names: the process that
	                        took the lock; 0 if not visible here */
	int locked_by_alive; /* that process still runs (not gone, no zombie) */
	int write;           /* the lock is exclusive (else shared) */
	size_t nholders;     /* live processes found holding it through a
	                        descriptor (/proc/PID/fdinfo); the first
	                        KERNEL_LOCKS_NAMED are in holder[] */
	struct {
		long pid;
		char comm[32];
	} holder[KERNEL_LOCKS_NAMED];
	size_t unseen;       /* nholders 0: processes whose descriptors could
	                        not be looked at (another user's, not root) */
	char locked_by_comm[32]; /* "?" when gone or unreadable */
};

/* What kernel_locks_check() found for one coord_list() answer. */
struct kernel_locks {
	struct kernel_lock_outsider *outsiders;
	size_t noutsiders;
	int *waits_for; /* per entry: index in outsiders[] of the lock that
	                   holder waits for, or -1 (a waiter, a holder that
	                   has its lock, a file without one) */
};

/* Looks up the kernel locks of the resources held in v (n entries, in the
 * order coord_list() and coord_show() give them; ctl_list() keeps them so)
 * for the instance directory
 * `dir` (coord_dir(), where keys' lock files are).  Only resources with a
 * holder whose kernel_wait is not COORD_KERNEL_NOT_WAITING are looked up:
 * for them it reads /proc/locks once, stat()s each once, and walks the
 * descriptors in /proc only for a lock held outside the broker whose
 * taker does not hold it any more (gone: a descendant holds it now).
 * Where there is no
 * /proc/locks, nobody is found waiting.  Returns 0, or -1 when out of
 * memory; either way free k with kernel_locks_free(). */
int kernel_locks_check(const struct ctl_lease *v, size_t n, const char *dir,
                       struct kernel_locks *k);

/* The lock holder i of the list waits for, or NULL. */
const struct kernel_lock_outsider *kernel_locks_waits_for(const struct kernel_locks *k, size_t i);

/* "waiting for kernel lock held by pid N (COMM), outside this broker"
 * and what else is known (the taker, gone; a lock that could not be
 * looked up further), into buf. */
void kernel_locks_describe(const struct kernel_lock_outsider *o, char *buf, size_t size);

void kernel_locks_free(struct kernel_locks *k);

#endif

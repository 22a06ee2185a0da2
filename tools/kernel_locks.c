/* Which of the broker's holders still wait for their kernel lock, and
 * for whom: `coordctl list` and `show` mark them.
 *
 * The library takes a lease's flock(2) after the broker grants it, and
 * when someone the broker cannot see holds the file (a holder from before
 * a restart, another instance's, a descendant that outlived its holder)
 * it polls with LOCK_NB inside the acquire's timeout (libcoord.c, 8.6):
 * the broker counts it as a holder all along, and no "->" line in
 * /proc/locks shows it waiting.  So this file works it out from what the
 * kernel shows: a holder waits when it has no lock on its resource's file
 * while a process that is not among the resource's holders has one that
 * conflicts with the holder's mode.  /proc/locks names the process that
 * took that lock; after a fork() a descendant may hold it instead, so
 * when the taker no longer holds it, the descriptors of every process are
 * looked at (once for all such locks) to name those that do.
 *
 * Most of the time nothing needs working out: a library of protocol 7
 * tells the broker while it waits for a kernel lock (KERNEL_WAIT), so a
 * holder listed as COORD_KERNEL_NOT_WAITING has its lock.  Only the
 * resources with a holder that waits, or that cannot tell (an older
 * library, a lease adopted after a restart), are looked up, and
 * /proc/locks is read only when there is one: with thousands of locks on
 * the machine that read alone takes tens of milliseconds, since the
 * kernel walks the list from its start for every page it gives out.
 *
 * Nothing here asks the broker anything or changes anything (procfs.c
 * only reads); /proc/locks is read at most once per call, each distinct
 * resource stat()ed at most once, however many leases there are. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernel_locks.h"
#include "procfs.h"

/* A holder of the list, to sort by resource. */
struct held {
	const char *resource;
	size_t i;
};

static int by_resource(const void *a, const void *b)
{
	const struct held *x = a, *y = b;
	int c = strcmp(x->resource, y->resource);
	return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* The file that carries a resource's kernel lock, as libcoord.c names it:
 * the path itself, or for "key:NAME" DIR/keys/k-NAME (DIR/keys/h- and the
 * FNV-1a hash of NAME, for a NAME longer than 200 bytes), written into
 * buf.  Returns the path, or NULL when there is no such file name. */
static const char *lock_file_of(const char *resource, const char *dir, char *buf, size_t size)
{
	const char *key = resource;
	size_t len;
	int n;
	if (resource[0] == '/')
		return resource;
	if (!dir || !dir[0])
		return NULL;
	if (!strncmp(key, "key:", 4))
		key += 4;
	len = strlen(key);
	if (len <= 200) {
		n = snprintf(buf, size, "%s/keys/k-%s", dir, key);
	} else {
		uint64_t h = 14695981039346656037ull;
		for (size_t i = 0; i < len; i++)
			h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
		n = snprintf(buf, size, "%s/keys/h-%016llx", dir, (unsigned long long)h);
	}
	return n < 0 || (size_t)n >= size ? NULL : buf;
}

static int pid_order(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

/* 1 if pid is in the sorted pids[0..n). */
static int has_pid(const long *pids, size_t n, long pid)
{
	return bsearch(&pid, pids, n, sizeof *pids, pid_order) != NULL;
}

/* The index in k->outsiders of lock l on dev:ino, added if new; -1 when
 * out of memory. */
static int outsider_of(struct kernel_locks *k, const struct procfs_flock *l)
{
	struct kernel_lock_outsider *grown, *o;
	for (size_t j = 0; j < k->noutsiders; j++) {
		o = &k->outsiders[j];
		if (o->dev == l->dev && o->ino == l->ino && o->locked_by == l->pid &&
		    o->write == l->write)
			return (int)j;
	}
	grown = realloc(k->outsiders, (k->noutsiders + 1) * sizeof *grown);
	if (!grown)
		return -1;
	k->outsiders = grown;
	o = &grown[k->noutsiders];
	memset(o, 0, sizeof *o);
	o->dev = l->dev;
	o->ino = l->ino;
	o->locked_by = l->pid;
	o->write = l->write;
	snprintf(o->locked_by_comm, sizeof o->locked_by_comm, "?");
	return (int)k->noutsiders++;
}

/* Marks, among the holders g[0..ng) of one resource, those that wait for
 * a conflicting lock held outside the broker; locks[0..nlocks) are the
 * flocks on the resource's file.  hp and lp are room for ng and nlocks
 * pids.  Sorting both keeps it O((ng + nlocks) log) however many readers
 * share a file.  Returns 0, or -1 when out of memory. */
static int check_resource(struct kernel_locks *k, const struct ctl_lease *v, const struct held *g,
                          size_t ng, const struct procfs_flock *locks, size_t nlocks, long *hp,
                          long *lp)
{
	const struct procfs_flock *any = NULL, *exclusive = NULL;
	for (size_t j = 0; j < ng; j++)
		hp[j] = (long)v[g[j].i].pid;
	qsort(hp, ng, sizeof *hp, pid_order);
	for (size_t l = 0; l < nlocks; l++) {
		lp[l] = locks[l].pid;
		if (has_pid(hp, ng, locks[l].pid))
			continue;
		if (!any)
			any = &locks[l];
		if (!exclusive && locks[l].write)
			exclusive = &locks[l];
	}
	if (!any)
		return 0; /* every lock on it is a holder's own */
	qsort(lp, nlocks, sizeof *lp, pid_order);
	for (size_t j = 0; j < ng; j++) {
		const struct ctl_lease *e = &v[g[j].i];
		/* a writer waits for any outside lock, a reader for a writer */
		const struct procfs_flock *outside = e->mode == COORD_WRITE ? any : exclusive;
		if (!outside || has_pid(lp, nlocks, (long)e->pid))
			continue;
		k->waits_for[g[j].i] = outsider_of(k, outside);
		if (k->waits_for[g[j].i] < 0)
			return -1;
	}
	return 0;
}

/* The walk of descriptors that finds who holds the outside locks. */
struct find {
	struct kernel_locks *k;
	const int *pending;  /* per outsider: 1 if it is looked for */
	long *last;          /* per outsider: the last pid counted */
};

static void add_holder(struct kernel_lock_outsider *o, long *last, long pid)
{
	if (*last == pid)
		return; /* another descriptor of the same process */
	*last = pid;
	if (o->nholders < KERNEL_LOCKS_NAMED) {
		o->holder[o->nholders].pid = pid;
		procfs_comm(pid, o->holder[o->nholders].comm, sizeof o->holder[0].comm);
	}
	o->nholders++;
}

static int find_fd(void *arg, long pid, int fd, int dirfd, const char *name)
{
	struct find *f = arg;
	struct stat st;
	if (fstatat(dirfd, name, &st, 0) < 0)
		return 0;
	for (size_t j = 0; j < f->k->noutsiders; j++) {
		struct kernel_lock_outsider *o = &f->k->outsiders[j];
		struct procfs_flock l;
		if (!f->pending[j] || st.st_dev != o->dev || st.st_ino != o->ino)
			continue;
		/* The lock line of every descriptor sharing the lock names the
		 * same taker: that tells this lock from others on the file. */
		if (procfs_fd_flock(pid, fd, o->dev, o->ino, &l) == 1 && l.pid == o->locked_by &&
		    l.write == o->write)
			add_holder(o, &f->last[j], pid);
	}
	return 0;
}

/* Names who holds each outside lock: its taker if it still does, else
 * every process found holding it, in one walk of /proc for all of them.
 * Returns 0, or -1 when out of memory. */
static int find_holders(struct kernel_locks *k)
{
	struct find f = { .k = k };
	int *pending = calloc(k->noutsiders, sizeof *pending), rc = -1, walk = 0;
	long *last = calloc(k->noutsiders, sizeof *last);
	size_t unseen = 0;
	if (!pending || !last)
		goto done;
	f.pending = pending;
	f.last = last;
	/* First each taker that is still there, alone. */
	for (size_t j = 0; j < k->noutsiders; j++) {
		struct kernel_lock_outsider *o = &k->outsiders[j];
		o->locked_by_alive = o->locked_by > 0 && !procfs_exited(o->locked_by) &&
		                     procfs_comm(o->locked_by, o->locked_by_comm,
		                                 sizeof o->locked_by_comm) == 0;
		if (!o->locked_by_alive)
			continue;
		pending[j] = 1;
		procfs_walk_fds_of(o->locked_by, find_fd, &f);
		pending[j] = 0;
	}
	/* Then everyone, for the locks whose taker does not hold them. */
	for (size_t j = 0; j < k->noutsiders; j++)
		if (!k->outsiders[j].nholders)
			walk = pending[j] = 1;
	if (walk)
		procfs_walk_fds(find_fd, &f, &unseen);
	for (size_t j = 0; j < k->noutsiders; j++)
		if (pending[j] && !k->outsiders[j].nholders)
			k->outsiders[j].unseen = unseen;
	rc = 0;
done:
	free(pending);
	free(last);
	return rc;
}

int kernel_locks_check(const struct ctl_lease *v, size_t n, const char *dir,
                       struct kernel_locks *k)
{
	struct procfs_flock *locks = NULL;
	struct held *held = NULL;
	long *hp = NULL, *lp = NULL;
	size_t nlocks = 0, nheld = 0, unsure = 0;
	int rc = -1;

	memset(k, 0, sizeof *k);
	if (!n)
		return 0;
	k->waits_for = malloc(n * sizeof *k->waits_for);
	held = malloc(n * sizeof *held);
	if (!k->waits_for || !held)
		goto done;
	for (size_t i = 0; i < n; i++) {
		k->waits_for[i] = -1;
		if (!v[i].waiting)
			held[nheld++] = (struct held){ v[i].resource, i };
		if (!v[i].waiting && v[i].kernel_wait != COORD_KERNEL_NOT_WAITING)
			unsure++;
	}
	/* No holder that may wait: the broker knows each one has its lock.
	 * No /proc/locks (not Linux, no /proc): nothing can be told. */
	if (!unsure || procfs_read_flocks(&locks, &nlocks) < 0 || !nlocks) {
		rc = 0;
		goto done;
	}
	hp = malloc(nheld * sizeof *hp);
	lp = malloc(nlocks * sizeof *lp);
	if (!hp || !lp)
		goto done;
	qsort(held, nheld, sizeof *held, by_resource);
	for (size_t a = 0, b; a < nheld; a = b) {
		char buf[COORD_DIR_MAX + COORD_NAME_MAX + 16];
		const char *path;
		const struct procfs_flock *on;
		struct stat st;
		size_t count;
		int may_wait = 0; /* a holder of this resource that may wait */
		for (b = a + 1; b < nheld && !strcmp(held[b].resource, held[a].resource); b++)
			;
		for (size_t j = a; j < b; j++)
			may_wait |= v[held[j].i].kernel_wait != COORD_KERNEL_NOT_WAITING;
		if (!may_wait)
			continue;
		path = lock_file_of(held[a].resource, dir, buf, sizeof buf);
		if (!path || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		on = procfs_flocks_on(locks, nlocks, st.st_dev, st.st_ino, &count);
		if (on && check_resource(k, v, &held[a], b - a, on, count, hp, lp) < 0)
			goto done;
	}
	rc = k->noutsiders ? find_holders(k) : 0;
done:
	free(locks);
	free(held);
	free(hp);
	free(lp);
	return rc;
}

const struct kernel_lock_outsider *kernel_locks_waits_for(const struct kernel_locks *k, size_t i)
{
	if (!k->waits_for || k->waits_for[i] < 0)
		return NULL;
	return &k->outsiders[k->waits_for[i]];
}

void kernel_locks_describe(const struct kernel_lock_outsider *o, char *buf, size_t size)
{
	size_t len;
	if (o->nholders) {
		len = (size_t)snprintf(buf, size, "waiting for kernel lock held by pid %ld (%s)",
		                       o->holder[0].pid, o->holder[0].comm);
		if (len < size && o->nholders > 1)
			len += (size_t)snprintf(buf + len, size - len, " and %zu other process(es)",
			                        o->nholders - 1);
		if (len < size && o->locked_by != o->holder[0].pid && o->locked_by > 0)
			len += (size_t)snprintf(buf + len, size - len, ", locked by pid %ld%s",
			                        o->locked_by, o->locked_by_alive ? "" : " (gone)");
		if (len < size)
			snprintf(buf + len, size - len, ", outside this broker");
		return;
	}
	if (o->locked_by > 0 && o->locked_by_alive)
		len = (size_t)snprintf(buf, size,
		                       "waiting for kernel lock held by pid %ld (%s), outside this "
		                       "broker",
		                       o->locked_by, o->locked_by_comm);
	else if (o->locked_by > 0)
		len = (size_t)snprintf(buf, size,
		                       "waiting for kernel lock taken by pid %ld (gone: a descendant "
		                       "holds it), outside this broker",
		                       o->locked_by);
	else
		len = (size_t)snprintf(buf, size,
		                       "waiting for kernel lock held by a process of another PID "
		                       "namespace, outside this broker");
	if (len < size && o->unseen)
		snprintf(buf + len, size - len,
		         "; could not look further (%zu process(es) not readable; run as root)",
		         o->unseen);
	else if (len < size)
		snprintf(buf + len, size - len, "; no process found holding it now");
}

void kernel_locks_free(struct kernel_locks *k)
{
	free(k->outsiders);
	free(k->waits_for);
	k->outsiders = NULL;
	k->waits_for = NULL;
	k->noutsiders = 0;
}

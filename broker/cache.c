/* Cached read grants (docs/design.md, "Cached read leases").
 *
 * A client that releases a read lease may keep it instead, as a cached
 * grant: RELEASE{COORD_RELEASE_CACHE, entry} binds the lease, still held
 * in the lease table, to an entry of the connection's cache page, a
 * memfd this file makes (CACHE), sealed at one page, which the client
 * maps read-write and the broker read-only.  While the grant stays
 * cached the client takes and drops reads under it in that page alone:
 * `inside` goes 0 -> 1 -> 0, each time followed by a look at the lease's
 * slot of the shared region, which only the broker writes.
 *
 * When someone conflicting waits, the lease table recalls the lease:
 * grants_recall() sets COORD_SLOT_RECALL in its slot, and then, after a
 * full fence, cache_recalled() reads the entry.  Either the client's next
 * look sees the recall (and it takes no new read under the grant), or the
 * broker sees the client inside (and waits for its release): never
 * neither (the store-buffering pattern, ordered by sequentially
 * consistent operations on both sides).  An entry found idle is dropped
 * by the broker itself once the batch of events is handled
 * (cache_drops_run()): the kernel lock the client passed with the bind is
 * unlocked and closed, then the lease is released like any other, which
 * clears its slot, so the client knows the broker is done with its
 * descriptor when it sees the slot cleared.
 *
 * Nothing in the page is trusted.  It is the connection's own (no other
 * process has the memfd), the broker only reads it, and a value the
 * client got wrong can only keep its own grant held (inside stuck at 1:
 * hold limits and revoke apply) or let it read unprotected (a client that
 * ignores its leases can do that anyway).  The descriptor it passed is
 * checked to be a regular file on a local filesystem (ufd.c) before the
 * broker makes any system call on it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "state.h"
#include "cache.h"
#include "grants.h"
#include "ufd.h"

struct cache_page {
	const coord_cache_entry *e; /* COORD_CACHE_ENTRIES, mapped read-only */
	struct lt_lease *bound[COORD_CACHE_ENTRIES];
	unsigned fds;               /* descriptors its grants hold */
};

/* Descriptors kept for cached grants, and how many may be: a client could
 * otherwise spend the broker's descriptors (one per grant, 256 per
 * connection) and keep others from connecting.  A grant refused for
 * want of one is released as usual: only the cache is lost.  The
 * library knows COORD_CACHE_FDS_PER_CONN and does not ask past it. */
static unsigned long cache_fds, cache_fds_max;

static int fd_budget_ok(const struct cache_page *p)
{
	if (!cache_fds_max) {
		struct rlimit rl;
		/* An eighth of the descriptors: the clients' own two each come
		 * first (client.c sizes --max-clients from the rest). */
		cache_fds_max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
		                        ? (unsigned long)rl.rlim_cur / 8
		                        : 128;
	}
	return p->fds < COORD_CACHE_FDS_PER_CONN && cache_fds < cache_fds_max;
}

int cache_page_make(struct client *c, int *fd_out)
{
	struct cache_page *p = NULL;
	void *map = MAP_FAILED;
	int fd = -1, rc = COORD_ESYS;

	if (c->cache)
		return COORD_EINVAL; /* one page per connection */
	fd = memfd_create("coord-cache", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		goto fail;
	/* Sealed at its size: the client can neither shrink it (our reads
	 * would fault) nor grow it. */
	if (ftruncate(fd, COORD_CACHE_PAGE_SIZE) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		goto fail;
	map = mmap(NULL, COORD_CACHE_PAGE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		goto fail;
	rc = COORD_ENOMEM;
	p = calloc(1, sizeof *p);
	if (!p)
		goto fail;
	p->e = map;
	c->cache = p;
	*fd_out = fd;
	return 0;
fail:
	if (rc == COORD_ESYS && (errno == EMFILE || errno == ENFILE || errno == ENOMEM))
		rc = COORD_ELIMIT;
	if (map != MAP_FAILED)
		munmap(map, COORD_CACHE_PAGE_SIZE);
	if (fd >= 0)
		close(fd);
	return rc;
}

void cache_client_gone(struct client *c)
{
	struct cache_page *p = c->cache;
	if (!p)
		return;
	/* Its leases were released (or, in a stopping broker, are left for
	 * the next one): none points here any more. */
	for (size_t i = 0; i < COORD_CACHE_ENTRIES; i++)
		if (p->bound[i])
			p->bound[i]->cache_page = NULL;
	munmap((void *)p->e, COORD_CACHE_PAGE_SIZE);
	free(p);
	c->cache = NULL;
}

/* 1 if the client is not inside the grant of l: its entry is still bound
 * to l (the client writes the id before it binds) and nobody reads under
 * it.  Only conclusive once COORD_SLOT_RECALL is set and fenced. */
static int entry_idle(const struct lt_lease *l)
{
	const coord_cache_entry *e = &l->cache_page->e[l->cache_entry];
	uint64_t inside = atomic_load_explicit(&e->inside, memory_order_seq_cst);
	uint64_t id = atomic_load_explicit(&e->lease, memory_order_acquire);
	return inside == 0 && id == l->id;
}

static void drop_queue(struct broker *b, struct lt_lease *l)
{
	if (l->cache_drop)
		return;
	l->cache_drop = 1;
	l->drop_prev = NULL;
	l->drop_next = b->cache_drops;
	if (b->cache_drops)
		b->cache_drops->drop_prev = l;
	b->cache_drops = l;
}

static void drop_unqueue(struct broker *b, struct lt_lease *l)
{
	if (!l->cache_drop)
		return;
	if (l->drop_prev)
		l->drop_prev->drop_next = l->drop_next;
	else
		b->cache_drops = l->drop_next;
	if (l->drop_next)
		l->drop_next->drop_prev = l->drop_prev;
	l->drop_next = l->drop_prev = NULL;
	l->cache_drop = 0;
}

/* Gives up the client's kernel lock, which it passed at the bind. */
static void unlock_fd(struct lt_lease *l)
{
	if (l->cache_fd < 0)
		return;
	flock(l->cache_fd, LOCK_UN);
	close(l->cache_fd);
	l->cache_fd = -1;
	cache_fds--;
	if (l->cache_page)
		l->cache_page->fds--;
}

int cache_bind(struct broker *b, struct client *c, struct lt_lease *l, uint32_t entry, int *fd)
{
	struct cache_page *p = c->cache;
	int rc = COORD_EINVAL;

	if (*fd >= 0 && !ufd_local(*fd)) {
		/* The library passes only locks on local filesystems. */
		ufd_close(*fd);
		*fd = -1;
		return COORD_EPROTO;
	}
	if (!p || !l || l->mode != COORD_READ || l->cached || entry >= COORD_CACHE_ENTRIES ||
	    p->bound[entry] || (*fd >= 0 && !fd_budget_ok(p)))
		goto refuse;
	if (*fd >= 0) {
		p->fds++;
		cache_fds++;
	}
	l->cached = 1;
	l->cache_page = p;
	l->cache_entry = entry;
	l->cache_fd = *fd;
	*fd = -1;
	p->bound[entry] = l;
	log_event(&b->log, "cache", "lease=%llu resource=%s pid=%d entry=%u",
	          (unsigned long long)l->id, log_quote(&b->log, l->res->name),
	          (int)((struct owner *)l->owner)->pid, entry);
	/* Recalled already: if nobody is inside, it goes at once. */
	if (l->recalled_ms >= 0)
		cache_recalled(b, l);
	return 0;
refuse:
	/* The client keeps the lock locked only for the grant it asked to
	 * keep: without one, the lock goes now, before the lease does. */
	if (*fd >= 0) {
		flock(*fd, LOCK_UN);
		close(*fd);
		*fd = -1;
	}
	return rc;
}

/* ThreadSanitizer does not model fences, and GCC says so; the one below
 * orders accesses to memory shared with other processes, which it does
 * not see anyway. */
#if defined(__SANITIZE_THREAD__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wtsan"
#endif

void cache_recalled(struct broker *b, struct lt_lease *l)
{
	if (!l->cached || !l->cache_page)
		return;
	/* The recall flag is stored (release) in the slot before this: the
	 * fence orders that store before the entry's loads. */
	atomic_thread_fence(memory_order_seq_cst);
	if (entry_idle(l))
		drop_queue(b, l);
}

int cache_lets_go(void *ud, const struct lt_lease *l)
{
	const coord_cache_entry *e;
	(void)ud;
	if (!l->cached || !l->cache_page)
		return 0;
	e = &l->cache_page->e[l->cache_entry];
	return atomic_load_explicit(&e->inside, memory_order_acquire) == 0 &&
	       atomic_load_explicit(&e->lease, memory_order_acquire) == l->id;
}

int cache_in_use(const struct lt_lease *l)
{
	const coord_cache_entry *e;
	if (!l->cached || !l->cache_page)
		return 0;
	e = &l->cache_page->e[l->cache_entry];
	return atomic_load_explicit(&e->inside, memory_order_acquire) != 0 &&
	       atomic_load_explicit(&e->lease, memory_order_acquire) == l->id;
}

void cache_unbind(struct broker *b, struct lt_lease *l)
{
	drop_unqueue(b, l);
	if (!l->cached)
		return;
	unlock_fd(l);
	if (l->cache_page)
		l->cache_page->bound[l->cache_entry] = NULL;
	l->cache_page = NULL;
	l->cached = 0;
}

void cache_drops_run(struct broker *b)
{
	while (b->cache_drops) {
		struct lt_lease *l = b->cache_drops;
		drop_unqueue(b, l);
		/* The release unbinds it (grants_released()): its lock goes
		 * before its slot is cleared. */
		lease_table_release(b->table, l, "cached-idle");
	}
}

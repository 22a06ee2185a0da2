/* The shared region.  The broker is its only writer; clients map it
 * PROT_READ from a file opened O_RDONLY, so nothing in this file ever
 * reads a byte a client could have written.  Slot words are written with
 * release stores after the lease is recorded, and cleared before a
 * conflicting lease is granted, so a client's acquire-load of its slot
 * never sees a lease the broker no longer honours.
 *
 * The file is reused, never unlinked, across broker restarts: a client that
 * still maps the old broker's file sees its slots cleared by the new broker.
 * It only ever grows, because shrinking a file another process has mapped
 * would make that process's next read of a slot a SIGBUS.  Its blocks are
 * allocated at open (posix_fallocate), so that a slot write on a full
 * filesystem never meets a hole.
 *
 * Free slots are handed out lowest first, so a quiet broker touches only
 * the first pages of the file: those given back (and those below an
 * adopted one) from a stack, the ones never used from a mark that rises
 * once the stack is empty.  The broker's own memory for the slots (the
 * shadow, the stack) is touched only as far as slots are used.  The file is mode 0644: every slot
 * holds only a lease id, which `coordctl list` shows anyway, and a group
 * instance (stage 3) will need its clients to read it.
 *
 * Bad states (docs/design.md, "Bad states").  What the broker wrote is
 * kept in a private shadow of the slots, so the file can be rebuilt
 * whatever happens to it.  A file truncated under the broker is grown
 * back and rewritten (by region_check() on the broker's timer, or at once
 * by the SIGBUS handler when a slot write meets the missing pages).  A
 * file removed or replaced is written anew from the shadow and renamed
 * into place; the old one stays mapped and written, since the clients
 * that mapped it still read their slots there.  The header names the
 * file it belongs to (device and inode), so a client can tell a copy or
 * an impostor from the broker's live file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coord_proto.h"
#include "region.h"

/* Files the broker writes at once: the one at the path and those that
 * clients connected earlier still map.  Past this many, the oldest is
 * cleared and dropped (its readers see their leases as not valid). */
#define REGION_FILES_MAX 8

struct region_file {
	char *map;
	size_t size;
	int fd;
	dev_t dev;
	ino_t ino;
};

struct shadow_slot {
	uint64_t lease, flags;
};

struct region {
	struct region_file files[REGION_FILES_MAX]; /* the last is at the path */
	int nfiles;
	char path[4200];
	mode_t mode;
	uint64_t epoch;
	struct shadow_slot *shadow; /* what every file's slots should hold */
	uint64_t nslots;           /* in the file (it may be larger than asked) */
	uint64_t slot_count;       /* asked for; slots at or above are never used */
	uint64_t *free;            /* stack of free slots below `fresh` */
	uint64_t nfree;
	uint64_t fresh;            /* from region_ready(): slots from here to
	                              slot_count are free and never used */
	unsigned char *claimed;    /* until region_ready(): slots adopted */
	int repaired;              /* after a SIGBUS: for region_check() to tell */
};

/* ---- the SIGBUS handler ---- */

/* What the handler may look at: plain copies of the files' ranges, set
 * outside the handler with the signal blocked. */
static struct {
	char *base;
	size_t size;
	int fd;
} bus_files[REGION_FILES_MAX];
static volatile sig_atomic_t bus_nfiles;
static volatile sig_atomic_t bus_faulted;

/* A write of ours met a page past the end of a file someone truncated:
 * grow it back (ftruncate is async-signal-safe) and let the write be
 * retried; the content is rewritten from the shadow right after. */
static void bus_handler(int sig, siginfo_t *si, void *uc)
{
	char *addr = si->si_addr;
	(void)uc;
	for (int i = 0; i < bus_nfiles; i++) {
		if (addr >= bus_files[i].base && addr < bus_files[i].base + bus_files[i].size &&
		    ftruncate(bus_files[i].fd, (off_t)bus_files[i].size) == 0) {
			bus_faulted = 1;
			return;
		}
	}
	/* Not ours, or not repairable: die of it as without a handler. */
	signal(sig, SIG_DFL);
}

static void bus_publish(const struct region *r)
{
	sigset_t set, old;
	struct sigaction sa = { 0 };
	sigemptyset(&set);
	sigaddset(&set, SIGBUS);
	sigprocmask(SIG_BLOCK, &set, &old);
	bus_nfiles = 0;
	for (int i = 0; i < r->nfiles; i++) {
		bus_files[i].base = r->files[i].map;
		bus_files[i].size = r->files[i].size;
		bus_files[i].fd = r->files[i].fd;
	}
	bus_nfiles = r->nfiles;
	sa.sa_sigaction = bus_handler;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);
}

/* ---- files ---- */

static coord_shm_header *header(const struct region_file *f)
{
	return (coord_shm_header *)f->map;
}

static coord_shm_slot *slots_of(const struct region_file *f)
{
	return (coord_shm_slot *)(f->map + COORD_SHM_HEADER_SIZE);
}

/* Writes the header (the slot count last, after a fence, as at open) and
 * every slot of f from the shadow. */
static void rewrite(const struct region *r, const struct region_file *f)
{
	coord_shm_header *h = header(f);
	coord_shm_slot *sl = slots_of(f);
	memcpy(h->magic, COORD_SHM_MAGIC, 8);
	h->version = COORD_PROTO_VERSION;
	h->header_size = COORD_SHM_HEADER_SIZE;
	h->broker_pid = (uint64_t)getpid();
	h->broker_epoch = r->epoch;
	h->slot_size = sizeof(coord_shm_slot);
	h->file_dev = (uint64_t)f->dev;
	h->file_ino = (uint64_t)f->ino;
	for (uint64_t i = 0; i < r->nslots; i++) {
		atomic_store_explicit(&sl[i].flags, r->shadow[i].flags, memory_order_release);
		atomic_store_explicit(&sl[i].lease, r->shadow[i].lease, memory_order_release);
	}
	atomic_thread_fence(memory_order_release);
	h->slot_count = r->slot_count;
}

/* Maps the open file fd (size bytes, grown and allocated here) into f.
 * Returns 0 or -1 with errno set. */
static int map_file(struct region_file *f, int fd, size_t size)
{
	struct stat st;
	int err;
	if (fstat(fd, &st) < 0)
		return -1;
	if ((size_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0)
		return -1;
	/* Blocks for every page now: a slot write must never need space. */
	err = posix_fallocate(fd, 0, (off_t)size);
	if (err && err != EOPNOTSUPP && err != EINVAL) {
		errno = err;
		return -1;
	}
	f->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (f->map == MAP_FAILED) {
		f->map = NULL;
		return -1;
	}
	f->size = size;
	f->fd = fd;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	return 0;
}

static void unmap_file(struct region_file *f)
{
	if (f->map)
		munmap(f->map, f->size);
	if (f->fd >= 0)
		close(f->fd);
	f->map = NULL;
	f->fd = -1;
}

int region_open(struct region **out, const char *dir, uint64_t slots, char *err, size_t errsize)
{
	struct region *r = calloc(1, sizeof *r);
	struct region_file *f;
	struct stat st;
	size_t size = COORD_SHM_HEADER_SIZE + slots * sizeof(coord_shm_slot);
	int fd = -1;

	if (!r)
		return COORD_ENOMEM;
	f = &r->files[0];
	f->fd = -1;
	r->free = malloc(slots * sizeof *r->free);
	r->claimed = calloc(slots, 1);
	r->slot_count = slots;
	r->fresh = slots; /* none free before region_ready() */
	r->mode = 0644;
	snprintf(r->path, sizeof r->path, "%s/%s", dir, COORD_SHM_NAME);
	if (!r->free || !r->claimed) {
		errno = ENOMEM;
		goto fail;
	}
	fd = open(r->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || fstat(fd, &st) < 0)
		goto fail;
	if ((st.st_mode & 0777) != 0644 && fchmod(fd, 0644) < 0)
		goto fail;
	if ((size_t)st.st_size > size)
		size = (size_t)st.st_size;
	if (map_file(f, fd, size) < 0)
		goto fail;
	fd = -1;
	r->nfiles = 1;
	r->nslots = (size - COORD_SHM_HEADER_SIZE) / sizeof(coord_shm_slot);
	r->shadow = calloc(r->nslots, sizeof *r->shadow);
	if (!r->shadow) {
		errno = ENOMEM;
		goto fail;
	}
	/* Until region_ready() the slots keep what the last broker left, for
	 * adoption: the shadow starts as a copy. */
	for (uint64_t i = 0; i < r->nslots; i++) {
		uint64_t lease = atomic_load(&slots_of(f)[i].lease);
		uint64_t flags = atomic_load(&slots_of(f)[i].flags);
		if (lease || flags) { /* calloc's zeros stay untouched */
			r->shadow[i].lease = lease;
			r->shadow[i].flags = flags;
		}
	}
	if (!memcmp(header(f)->magic, COORD_SHM_MAGIC, 8))
		r->epoch = header(f)->broker_epoch;
	r->epoch++;
	rewrite(r, f);
	bus_publish(r);
	*out = r;
	return 0;
fail:
	snprintf(err, errsize, "%s: %s", r->path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unmap_file(f);
	free(r->shadow);
	free(r->free);
	free(r->claimed);
	free(r);
	return errno == ENOSPC || errno == EDQUOT ? COORD_ENOSPC : COORD_ESYS;
}

/* ---- slots: the shadow first, then every file ---- */

static void store_slot(struct region *r, uint64_t slot)
{
	for (int i = 0; i < r->nfiles; i++) {
		coord_shm_slot *s = &slots_of(&r->files[i])[slot];
		atomic_store_explicit(&s->flags, r->shadow[slot].flags, memory_order_release);
		atomic_store_explicit(&s->lease, r->shadow[slot].lease, memory_order_release);
	}
	if (bus_faulted) {
		/* A file was truncated and grown back by the handler: its
		 * pages are zero now, ours included. */
		bus_faulted = 0;
		for (int i = 0; i < r->nfiles; i++)
			rewrite(r, &r->files[i]);
		r->repaired = 1;
	}
}

int region_claim(struct region *r, uint64_t slot, uint64_t lease_id)
{
	if (!r->claimed || slot >= r->slot_count || r->claimed[slot])
		return COORD_EINVAL;
	r->claimed[slot] = 1;
	r->shadow[slot].flags = 0;
	r->shadow[slot].lease = lease_id;
	store_slot(r, slot);
	return 0;
}

void region_unclaim(struct region *r, uint64_t slot)
{
	if (r->claimed && slot < r->slot_count)
		r->claimed[slot] = 0;
}

void region_ready(struct region *r)
{
	r->fresh = 0;
	for (uint64_t i = 0; i < r->slot_count; i++)
		if (r->claimed[i])
			r->fresh = i + 1;
	for (uint64_t i = r->nslots; i-- > 0;) {
		if (i < r->slot_count && r->claimed[i])
			continue;
		if (r->shadow[i].lease || r->shadow[i].flags)
			r->shadow[i].lease = r->shadow[i].flags = 0;
		store_slot(r, i);
		if (i < r->fresh)
			r->free[r->nfree++] = i;
	}
	free(r->claimed);
	r->claimed = NULL;
}

uint64_t region_epoch(const struct region *r)
{
	return r->epoch;
}

void region_close(struct region *r)
{
	if (!r)
		return;
	/* The slots stay as they are: a broker that starts next adopts the
	 * leases of live holders from leases.mdb and clears the rest. */
	bus_nfiles = 0;
	for (int i = 0; i < r->nfiles; i++)
		unmap_file(&r->files[i]);
	free(r->shadow);
	free(r->free);
	free(r->claimed);
	free(r);
}

int region_slot_alloc(struct region *r, uint64_t *slot)
{
	if (r->nfree)
		*slot = r->free[--r->nfree];
	else if (r->fresh < r->slot_count)
		*slot = r->fresh++;
	else
		return COORD_ELIMIT;
	return 0;
}

void region_slot_set(struct region *r, uint64_t slot, uint64_t lease_id)
{
	r->shadow[slot].lease = lease_id;
	store_slot(r, slot);
}

void region_slot_flag(struct region *r, uint64_t slot, uint64_t bits)
{
	r->shadow[slot].flags |= bits;
	store_slot(r, slot);
}

void region_slot_free(struct region *r, uint64_t slot)
{
	r->shadow[slot].flags = 0;
	r->shadow[slot].lease = 0;
	store_slot(r, slot);
	r->free[r->nfree++] = slot;
}

/* ---- the file changed under us ---- */

void region_set_mode(struct region *r, unsigned mode)
{
	r->mode = (mode_t)mode;
}

/* A new file at the path, written from the shadow, renamed over whatever
 * is there; the earlier files stay mapped for their readers.  Returns 0
 * or -1 with errno set. */
static int replace_file(struct region *r)
{
	char tmp[4300];
	struct region_file nf = { .fd = -1 };
	size_t size = r->files[r->nfiles - 1].size;
	int fd;
	snprintf(tmp, sizeof tmp, "%s.restore", r->path);
	unlink(tmp);
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	if (fchmod(fd, r->mode) < 0 || map_file(&nf, fd, size) < 0)
		goto fail;
	fd = -1;
	rewrite(r, &nf);
	if (rename(tmp, r->path) < 0)
		goto fail;
	if (r->nfiles == REGION_FILES_MAX) {
		/* The oldest file's readers lose sight of their leases (every
		 * slot cleared: never a stale "valid"), and it goes. */
		struct region_file *old = &r->files[0];
		for (uint64_t i = 0; i < r->nslots; i++) {
			atomic_store_explicit(&slots_of(old)[i].lease, 0, memory_order_release);
			atomic_store_explicit(&slots_of(old)[i].flags, 0, memory_order_release);
		}
		bus_nfiles = 0;
		unmap_file(old);
		memmove(&r->files[0], &r->files[1], (REGION_FILES_MAX - 1) * sizeof r->files[0]);
		r->nfiles--;
	}
	r->files[r->nfiles++] = nf;
	bus_publish(r);
	return 0;
fail:
	{
		int e = errno;
		if (fd >= 0)
			close(fd);
		unmap_file(&nf);
		unlink(tmp);
		errno = e;
	}
	return -1;
}

int region_check(struct region *r, int *what, char *err, size_t errsize)
{
	struct region_file *cur = &r->files[r->nfiles - 1];
	struct stat st;
	*what = 0;
	for (int i = 0; i < r->nfiles; i++) {
		struct region_file *f = &r->files[i];
		if (fstat(f->fd, &st) == 0 && (size_t)st.st_size >= f->size)
			continue;
		if (ftruncate(f->fd, (off_t)f->size) < 0)
			goto fail;
		posix_fallocate(f->fd, 0, (off_t)f->size);
		rewrite(r, f);
		*what |= REGION_TRUNCATED;
	}
	if (bus_faulted || r->repaired) {
		bus_faulted = r->repaired = 0;
		for (int i = 0; i < r->nfiles; i++)
			rewrite(r, &r->files[i]);
		*what |= REGION_TRUNCATED;
	}
	if (lstat(r->path, &st) == 0) {
		if (st.st_dev == cur->dev && st.st_ino == cur->ino)
			return 0;
		/* another file in its place: ours goes back over it */
	} else if (errno != ENOENT) {
		goto fail; /* cannot tell (the directory is not searchable) */
	}
	if (replace_file(r) < 0)
		goto fail;
	*what |= REGION_REPLACED;
	return 0;
fail:
	snprintf(err, errsize, "%s: %s", r->path, strerror(errno));
	return errno == ENOSPC || errno == EDQUOT ? COORD_ENOSPC : COORD_ESYS;
}

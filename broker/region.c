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
 * would make that process's next read of a slot a SIGBUS.
 *
 * Free slots are kept on a stack, lowest first, so a quiet broker touches
 * only the first pages of the file.  The file is mode 0644: every slot
 * holds only a lease id, which `coordctl list` shows anyway, and a group
 * instance (stage 3) will need its clients to read it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coord_proto.h"
#include "region.h"

struct region {
	void *map;
	size_t size;
	coord_shm_header *hdr;
	coord_shm_slot *slots;
	uint64_t nslots;           /* in the file (it may be larger than asked) */
	uint64_t slot_count;       /* asked for; slots at or above are never used */
	uint64_t *free;            /* stack of free slots below slot_count */
	uint64_t nfree;
	unsigned char *claimed;    /* until region_ready(): slots adopted */
};

int region_open(struct region **out, const char *dir, uint64_t slots, char *err, size_t errsize)
{
	char path[4200];
	struct region *r = calloc(1, sizeof *r);
	struct stat st;
	size_t size = COORD_SHM_HEADER_SIZE + slots * sizeof(coord_shm_slot);
	uint64_t epoch = 0;
	int fd = -1, rc = COORD_ESYS;

	if (!r)
		return COORD_ENOMEM;
	r->free = malloc(slots * sizeof *r->free);
	r->claimed = calloc(slots, 1);
	if (!r->free || !r->claimed) {
		free(r->free);
		free(r->claimed);
		free(r);
		return COORD_ENOMEM;
	}
	r->slot_count = slots;
	snprintf(path, sizeof path, "%s/%s", dir, COORD_SHM_NAME);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || fstat(fd, &st) < 0)
		goto fail;
	if ((st.st_mode & 0777) != 0644 && fchmod(fd, 0644) < 0)
		goto fail;
	if ((size_t)st.st_size > size)
		size = (size_t)st.st_size;
	if ((size_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0)
		goto fail;
	r->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		goto fail;
	}
	r->size = size;
	r->hdr = r->map;
	r->slots = (coord_shm_slot *)((char *)r->map + COORD_SHM_HEADER_SIZE);
	r->nslots = (size - COORD_SHM_HEADER_SIZE) / sizeof(coord_shm_slot);
	if (!memcmp(r->hdr->magic, COORD_SHM_MAGIC, 8))
		epoch = r->hdr->broker_epoch;
	memcpy(r->hdr->magic, COORD_SHM_MAGIC, 8);
	r->hdr->version = COORD_PROTO_VERSION;
	r->hdr->header_size = COORD_SHM_HEADER_SIZE;
	r->hdr->broker_pid = (uint64_t)getpid();
	r->hdr->broker_epoch = epoch + 1;
	r->hdr->slot_size = sizeof(coord_shm_slot);
	atomic_thread_fence(memory_order_release);
	r->hdr->slot_count = slots;
	close(fd);
	*out = r;
	return 0;
fail:
	snprintf(err, errsize, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(r->free);
	free(r->claimed);
	free(r);
	return rc;
}

int region_claim(struct region *r, uint64_t slot, uint64_t lease_id)
{
	if (!r->claimed || slot >= r->slot_count || r->claimed[slot])
		return COORD_EINVAL;
	r->claimed[slot] = 1;
	atomic_store_explicit(&r->slots[slot].flags, 0, memory_order_release);
	atomic_store_explicit(&r->slots[slot].lease, lease_id, memory_order_release);
	return 0;
}

void region_unclaim(struct region *r, uint64_t slot)
{
	if (r->claimed && slot < r->slot_count)
		r->claimed[slot] = 0;
}

void region_ready(struct region *r)
{
	for (uint64_t i = r->nslots; i-- > 0;) {
		if (i < r->slot_count && r->claimed[i])
			continue;
		atomic_store_explicit(&r->slots[i].lease, 0, memory_order_release);
		atomic_store_explicit(&r->slots[i].flags, 0, memory_order_release);
		if (i < r->slot_count)
			r->free[r->nfree++] = i;
	}
	free(r->claimed);
	r->claimed = NULL;
}

uint64_t region_epoch(const struct region *r)
{
	return r->hdr->broker_epoch;
}

void region_close(struct region *r)
{
	if (!r)
		return;
	/* The slots stay as they are: a broker that starts next adopts the
	 * leases of live holders from leases.mdb and clears the rest. */
	munmap(r->map, r->size);
	free(r->free);
	free(r->claimed);
	free(r);
}

int region_slot_alloc(struct region *r, uint64_t *slot)
{
	if (!r->nfree)
		return COORD_ELIMIT;
	*slot = r->free[--r->nfree];
	return 0;
}

void region_slot_set(struct region *r, uint64_t slot, uint64_t lease_id)
{
	atomic_store_explicit(&r->slots[slot].lease, lease_id, memory_order_release);
}

void region_slot_flag(struct region *r, uint64_t slot, uint64_t bits)
{
	atomic_fetch_or_explicit(&r->slots[slot].flags, bits, memory_order_release);
}

void region_slot_free(struct region *r, uint64_t slot)
{
	atomic_store_explicit(&r->slots[slot].flags, 0, memory_order_release);
	atomic_store_explicit(&r->slots[slot].lease, 0, memory_order_release);
	r->free[r->nfree++] = slot;
}

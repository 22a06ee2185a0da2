/* The shared region: one file the broker writes and clients map
 * read-only, holding one slot per lease, and the allocator of its slots. */
#ifndef COORD_REGION_H
#define COORD_REGION_H

#include <stddef.h>
#include <stdint.h>

struct region;

/* Opens or creates DIR/coordd.shm with at least `slots` slots, clears
 * every slot (leases of an earlier broker are void) and bumps the epoch.
 * Returns 0 or COORD_E*, with the reason in err. */
int region_open(struct region **out, const char *dir, uint64_t slots, char *err, size_t errsize);
/* Clears all slots and unmaps. */
void region_close(struct region *r);

/* Takes a free slot for a lease.  Returns 0, or COORD_ELIMIT when every
 * slot is taken. */
int region_slot_alloc(struct region *r, uint64_t *slot);
/* Publishes lease_id in the slot: from here on its holder's
 * coord_lease_valid() is true. */
void region_slot_set(struct region *r, uint64_t slot, uint64_t lease_id);
/* Sets COORD_SLOT_* bits in the slot's flags word, for its holder to see
 * (coord_lease_recalled()). */
void region_slot_flag(struct region *r, uint64_t slot, uint64_t bits);
/* Clears the slot (its holder's coord_lease_valid() turns false at once)
 * and makes it free again. */
void region_slot_free(struct region *r, uint64_t slot);

#endif

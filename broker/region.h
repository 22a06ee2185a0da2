/* The shared region: one file the broker writes and clients map
 * read-only, holding one slot per lease, and the allocator of its slots. */
#ifndef COORD_REGION_H
#define COORD_REGION_H

#include <stddef.h>
#include <stdint.h>

struct region;

/* Opens or creates DIR/coordd.shm with at least `slots` slots, its blocks
 * allocated, and bumps the epoch; a SIGBUS handler grows the file back if
 * a slot write finds it truncated.  The slots keep what an earlier broker left in them until
 * region_ready().  Returns 0 or COORD_E*, with the reason in err. */
int region_open(struct region **out, const char *dir, uint64_t slots, char *err, size_t errsize);
/* Before region_ready(): keeps `slot` for an adopted lease and publishes
 * its id there (clearing its flags).  Returns 0, or COORD_EINVAL if the
 * slot is out of range or claimed already. */
int region_claim(struct region *r, uint64_t slot, uint64_t lease_id);
/* Gives a claimed slot up again (before region_ready()). */
void region_unclaim(struct region *r, uint64_t slot);
/* How many brokers have opened this region, this one included. */
uint64_t region_epoch(const struct region *r);
/* Clears every slot not claimed (the leases of an earlier broker that
 * were not adopted are void from here) and makes them free.  Call once,
 * after the claims and before any grant. */
void region_ready(struct region *r);
/* Unmaps, leaving the slots as they are for the next broker to adopt. */
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

/* The mode a file written anew by region_check() gets (0644 unless a
 * shared instance says otherwise). */
void region_set_mode(struct region *r, unsigned mode);

enum { REGION_TRUNCATED = 1, REGION_REPLACED = 2 };
/* On the broker's timer: a file truncated under the broker is grown back
 * and rewritten from what the broker knows; a file at the path that is
 * not the broker's (removed, replaced) is written anew and renamed into
 * place, while the old one stays mapped and up to date for the clients
 * that map it.  Sets REGION_* bits in *what.  Returns 0, or COORD_ENOSPC
 * or COORD_ESYS with the reason in err (tried again at the next check). */
int region_check(struct region *r, int *what, char *err, size_t errsize);

#endif

/* The shared region: one file the broker writes and clients map
 * read-only, holding one 64-bit word per lease slot. */
#ifndef COORD_REGION_H
#define COORD_REGION_H

#include <stdint.h>

struct region;

/* Opens or creates DIR/coordd.shm with at least `slots` slots, clears
 * every slot (leases of an earlier broker are void) and bumps the epoch.
 * Returns 0 or COORD_E*. */
int region_open(struct region **out, const char *dir, uint64_t slots, char *err, size_t errsize);
/* Clears all slots and unmaps. */
void region_close(struct region *r);
void region_set(struct region *r, uint64_t slot, uint64_t lease_id);
uint64_t region_slots(const struct region *r);

#endif

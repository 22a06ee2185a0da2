/* Cached read grants: the connection's cache page, binding a read lease
 * to one of its entries, and taking idle grants back at a recall. */
#ifndef COORD_CACHE_H
#define COORD_CACHE_H

#include <stdint.h>

struct broker;
struct client;
struct lt_lease;

/* CACHE: makes c's page and returns its memfd in *fd, for the client (the
 * caller closes it once sent; the mapping stays).  Returns 0, or
 * COORD_EINVAL (c has one), COORD_ELIMIT (out of descriptors or memory),
 * COORD_ENOMEM, COORD_ESYS. */
int cache_page_make(struct client *c, int *fd_out);
/* c is being destroyed: unmaps its page. */
void cache_client_gone(struct client *c);

/* RELEASE{COORD_RELEASE_CACHE}: keeps l (c's owner's lease, or NULL if
 * not found) as a cached grant in entry `entry` of c's page, with the
 * kernel-lock descriptor *fd (or -1), which it takes (*fd becomes -1).
 * Returns 0; COORD_EINVAL when l does not qualify (the caller releases
 * it: the descriptor was unlocked and closed already); COORD_EPROTO when
 * the descriptor is not a local file (the caller drops the connection). */
int cache_bind(struct broker *b, struct client *c, struct lt_lease *l, uint32_t entry, int *fd);
/* After COORD_SLOT_RECALL was set in l's slot: queues l to be taken back
 * if its client is not inside it. */
void cache_recalled(struct broker *b, struct lt_lease *l);
/* l leaves the table: unlocks and closes its descriptor (before its slot
 * is cleared) and frees its entry. */
void cache_unbind(struct broker *b, struct lt_lease *l);
/* Releases the idle grants queued by cache_recalled() (after each batch
 * of events). */
void cache_drops_run(struct broker *b);
/* The lease table's lets_go: 1 if l is a cached grant nobody reads under
 * now, which its recall takes back (a hint, for the deadlock walk only:
 * the client may enter it until the recall is set). */
int cache_lets_go(void *ud, const struct lt_lease *l);
/* 1 if l is cached and its client reads under it now (for listings). */
int cache_in_use(const struct lt_lease *l);

#endif

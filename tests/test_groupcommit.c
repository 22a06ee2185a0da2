/* Group commit under a crash: many grants answered in one loop iteration,
 * then the broker SIGKILLed at once.  The broker sends a GRANT only after
 * the iteration's commit of the lease records (docs/design.md, "Group
 * commit"), so whatever the moment of the kill, every process that was
 * told "granted" holds a lease the next broker adopted: it reads valid,
 * and nobody else gets the key; never two writers. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "harness.h"

HARNESS_SUITE(groupcommit, 120);

#define ACTORS 12
#define KEYS 4
#define ROUNDS 6

Test(groupcommit, sigkill_right_after_a_burst_of_grants_loses_no_granted_lease)
{
	struct actor a[ACTORS];
	coord_t *probe;
	char got[ACTORS][64];
	int checked = 0;

	for (int i = 0; i < ACTORS; i++)
		actor_start(&a[i], &h);
	for (int round = 0; round < ROUNDS; round++) {
		int writers[KEYS] = { 0 };
		/* Three try-once writers per key, all at once: one of each three
		 * is granted, mostly in one iteration with the others. */
		for (int i = 0; i < ACTORS; i++)
			actor_send(&a[i], "acquire write 0 key:gc-%d-%d", round, i % KEYS);
		/* The first answer out: kill the broker now, mid-burst. */
		while (!actor_has_reply(&a[round % ACTORS]))
			;
		harness_kill_broker(&h);
		for (int i = 0; i < ACTORS; i++)
			snprintf(got[i], sizeof got[i], "%s", actor_reply(&a[i], 10000));
		harness_start_broker(&h, NULL);
		cr_assert_eq(coord_connect(&probe, NULL), 0, "the probe must connect");
		for (int i = 0; i < ACTORS; i++) {
			char key[64];
			coord_lease_t *l = NULL;
			int rc;
			snprintf(key, sizeof key, "key:gc-%d-%d", round, i % KEYS);
			if (strncmp(got[i], "ok", 2))
				continue; /* refused (EBUSY), or lost with the broker (EIO) */
			writers[i % KEYS]++;
			checked++;
			cr_assert_leq(writers[i % KEYS], 1,
			              "round %d: two processes were told they hold the write lease on %s",
			              round, key);
			actor_send(&a[i], "valid");
			cr_assert_str_eq(actor_reply(&a[i], 10000), "1",
			                 "round %d: actor %d was granted %s before the SIGKILL, so its "
			                 "record was committed and the next broker must have adopted it",
			                 round, i, key);
			rc = coord_acquire(probe, key, COORD_WRITE, 0, "probe", &l);
			cr_assert_eq(rc, COORD_EBUSY,
			             "round %d: %s is held by actor %d (adopted), so a second writer must "
			             "get COORD_EBUSY, got %s",
			             round, key, i, coord_errname(rc));
			actor_send(&a[i], "release");
			cr_assert_str_eq(actor_reply(&a[i], 10000), "ok",
			                 "round %d: actor %d must release its adopted lease on %s", round, i,
			                 key);
		}
		coord_disconnect(probe);
	}
	for (int i = 0; i < ACTORS; i++)
		actor_stop(&a[i]);
	cr_log_info("%d grants answered before a SIGKILL, all adopted", checked);
	cr_assert_geq(checked, ROUNDS,
	              "at least the first answer of each round is a grant, so %d grants must have "
	              "been checked, not %d",
	              ROUNDS, checked);
}

/* Integration tests of state.mdb's records through a real coordd: a
 * directory left by an older broker (version-1 and version-2 resource
 * records, per-resource token ceilings, no directory-wide ceiling) shows
 * its policy, limits and tokens, and continues them; write tokens rise
 * above every old one after the broker is SIGKILLed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "harness.h"
#include "oldrecords.h"

static struct harness h;

static void setup(void)
{
	harness_init(&h);
}

static void teardown(void)
{
	harness_fini(&h);
}

TestSuite(records, .init = setup, .fini = teardown, .timeout = 60);

/* One write lease on resource, released; returns its token. */
static uint64_t write_token(const char *resource)
{
	coord_t *c;
	coord_lease_t *l;
	uint64_t t;
	int rc = coord_connect(&c, NULL);
	cr_assert_eq(rc, 0, "coord_connect: %s", coord_strerror(rc));
	rc = coord_acquire(c, resource, COORD_WRITE, 5000, NULL, &l);
	cr_assert_eq(rc, 0, "write lease on %s: %s", resource, coord_strerror(rc));
	t = coord_lease_token(l);
	coord_release(l);
	coord_disconnect(c);
	return t;
}

Test(records, old_directory_shows_and_continues_its_records)
{
	struct old_record v2 = { .version = 2, .policy = COORD_POLICY_NONE, .token_ceiling = 5000,
	                         .max_hold_ms = 30000, .recall_grace_ms = 2000 };
	struct old_record v1 = { .version = 1, .policy = COORD_POLICY_EXEC, .token_ceiling = 700 };
	char out[8192], raw[4096];
	uint32_t version;
	uint64_t t;
	long n;

	snprintf(v1.command, sizeof v1.command, "true checkpointed");
	old_record_put(h.dir, "key:v2", &v2);
	old_record_put(h.dir, "key:v1", &v1);
	cr_assert_eq(old_meta_get(h.dir, "token_ceiling"), 0, "an old directory has no ceiling");
	harness_start_broker(&h, NULL);

	cr_assert_eq(harness_coordctl(out, sizeof out, "show key:v2"), 0, "show: %s", out);
	cr_assert(strstr(out, "policy:     none"), "the v2 record's policy must show: %s", out);
	cr_assert(strstr(out, "max hold 30 s, recall grace 2 s"), "and its limits: %s", out);
	cr_assert(strstr(out, "token:      5000"), "and its token ceiling: %s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "show key:v1"), 0, "show: %s", out);
	cr_assert(strstr(out, "exec") && strstr(out, "true checkpointed"),
	          "the v1 record's exec policy must show: %s", out);
	cr_assert(strstr(out, "token:      700"), "and its token ceiling: %s", out);

	t = write_token("key:v2");
	cr_assert_gt(t, 5000, "the first new token on key:v2 must be above its old ceiling 5000, "
	             "got %llu", (unsigned long long)t);
	cr_assert_gt(write_token("key:v1"), t, "tokens are one rising sequence");
	cr_assert_gt(write_token("key:fresh"), t, "on a new resource too");
	cr_assert_gt(old_meta_get(h.dir, "token_ceiling"), t,
	             "the directory's ceiling is durable above every token handed out");

	/* The next save writes version 3, with the last token as its bound. */
	cr_assert_eq(harness_coordctl(out, sizeof out, "policy key:v2 auto"), 0, "policy: %s", out);
	n = old_record_get(h.dir, "key:v2", raw, sizeof raw);
	memcpy(&version, raw, sizeof version);
	cr_assert_eq(version, 3, "a saved record is version 3, got %u (%ld bytes)", version, n);
	cr_assert_lt(n, 128, "and compact: %ld bytes", n);
	harness_stop_broker(&h);
	harness_start_broker(&h, NULL);
	cr_assert_eq(harness_coordctl(out, sizeof out, "show key:v2"), 0, "show: %s", out);
	cr_assert(strstr(out, "max hold 30 s, recall grace 2 s"), "the limits survive: %s", out);
	cr_assert_gt(write_token("key:v2"), t + 2, "tokens rise across the restart");
}

/* (a): the broker SIGKILLed with tokens handed out on several
 * resources: after a restart every resource's next write token is above
 * every old one. */
Test(records, tokens_rise_across_broker_sigkill)
{
	static const char *names[] = { "key:a", "key:b", "key:c", "key:d" };
	uint64_t max = 0;
	harness_start_broker(&h, NULL);
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
			uint64_t t = write_token(names[i]);
			cr_assert_gt(t, max, "tokens rise: %llu after %llu", (unsigned long long)t,
			             (unsigned long long)max);
			max = t;
		}
	/* A release the broker had not read yet would leave a lease the
	 * restarted broker adopts for this (live) process. */
	cr_assert(harness_wait_count(&h, "key:d", 0, 0, 0), "the last release must be done");
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		uint64_t t = write_token(names[i]);
		cr_assert_gt(t, max, "after SIGKILL %s got token %llu, not above the old %llu",
		             names[i], (unsigned long long)t, (unsigned long long)max);
	}
}

/* Unit tests of broker/store.c's resource records and fencing tokens:
 * records of versions 1 and 2 (written with the LMDB C API, as older
 * brokers did) load with every field and are saved back as compact
 * version-3 records; the directory's token counter rises above every
 * token taken before, across a SIGKILL, and writes state.mdb only once
 * per block. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "oldrecords.h"
#include "store.h"

static char dir[256];
static struct store *s;

static void setup(void)
{
	harness_tmpdir(dir, sizeof dir, "coord-store");
	s = NULL;
}

static void teardown(void)
{
	store_close(s);
	harness_rmtree(dir);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

static struct store *open_store(void)
{
	struct store_options o = { .state_map_mb = 16, .max_leases = 16 };
	struct store *st;
	uint64_t next_id;
	char err[256] = "";
	int rc = store_open(&st, dir, &o, NULL, NULL, &next_id, err, sizeof err);
	cr_assert_eq(rc, 0, "store_open(%s): %d %s", dir, rc, err);
	return st;
}

static struct old_record old_record(uint32_t version)
{
	struct old_record r = {
		.version = version, .policy = COORD_POLICY_EXEC, .sqlite_mode = 3,
		.timeout_ms = 1234, .token_ceiling = 5000, .checkpoints = 7,
		.last_at_ms = 1700000000123ull, .last_duration_us = 4567, .last_result = -5,
		.wal_before = 8192, .wal_after = 4096, .max_hold_ms = 30000,
		.recall_grace_ms = 2000,
	};
	snprintf(r.command, sizeof r.command, "sqlite3 \"$1\" 'PRAGMA wal_checkpoint'");
	snprintf(r.message, sizeof r.message, "checkpointed 2 frames");
	return r;
}

ParameterizedTestParameters(store, old_layouts_load_and_save_as_v3)
{
	static uint32_t versions[] = { 1, 2 };
	return cr_make_param_array(uint32_t, versions, 2);
}

ParameterizedTest(uint32_t *version, store, old_layouts_load_and_save_as_v3)
{
	struct old_record want = old_record(*version);
	struct store_resource r, again;
	char raw[4096];
	uint32_t raw_version;
	long n;

	old_record_put(dir, "key:old", &want);
	s = open_store();
	cr_assert_eq(store_resource_load(s, "key:old", &r), 0, "a version-%u record must load",
	             *version);
	cr_assert_eq(r.version, *version, "version: %u", r.version);
	cr_assert_eq(r.policy, want.policy, "policy: %u", r.policy);
	cr_assert_eq(r.sqlite_mode, want.sqlite_mode, "sqlite_mode: %u", r.sqlite_mode);
	cr_assert_eq(r.timeout_ms, want.timeout_ms, "timeout_ms: %u", r.timeout_ms);
	cr_assert_eq(r.token_ceiling, 5000, "token_ceiling: %llu",
	             (unsigned long long)r.token_ceiling);
	cr_assert_eq(r.checkpoints, want.checkpoints, "checkpoints");
	cr_assert_eq(r.last_at_ms, want.last_at_ms, "last_at_ms");
	cr_assert_eq(r.last_duration_us, want.last_duration_us, "last_duration_us");
	cr_assert_eq(r.last_result, want.last_result, "last_result: %d", r.last_result);
	cr_assert_eq(r.wal_before, want.wal_before, "wal_before");
	cr_assert_eq(r.wal_after, want.wal_after, "wal_after");
	cr_assert_str_eq(r.command, want.command, "command");
	cr_assert_str_eq(r.message, want.message, "message");
	cr_assert_eq(r.max_hold_ms, *version == 1 ? 0 : 30000,
	             "max_hold_ms: a version-1 record has none, got %u", r.max_hold_ms);
	cr_assert_eq(r.recall_grace_ms, *version == 1 ? 0 : 2000, "recall_grace_ms: %u",
	             r.recall_grace_ms);

	cr_assert_eq(store_resource_save(s, "key:old", &r), 0, "saving it back");
	n = old_record_get(dir, "key:old", raw, sizeof raw);
	memcpy(&raw_version, raw, sizeof raw_version);
	cr_assert_eq(raw_version, 3, "the next save must write version 3, wrote %u", raw_version);
	cr_assert_lt(n, 200, "a version-3 record is a header and the strings (%zu + %zu bytes), "
	             "got %ld bytes", strlen(want.command), strlen(want.message), n);
	cr_assert_eq(store_resource_load(s, "key:old", &again), 0, "the version-3 record loads");
	again.version = r.version;
	cr_assert_eq(memcmp(&again, &r, sizeof r), 0, "it loads as it was saved");
}

Test(store, v3_round_trip_of_longest_and_empty_strings)
{
	struct store_resource r = { .policy = COORD_POLICY_EXEC, .token_ceiling = 99 }, got;
	memset(r.command, 'c', STORE_COMMAND_MAX);
	memset(r.message, 'm', STORE_MESSAGE_MAX);
	s = open_store();
	cr_assert_eq(store_resource_save(s, "key:long", &r), 0, "longest strings save");
	cr_assert_eq(store_resource_load(s, "key:long", &got), 0, "and load");
	cr_assert_eq(strlen(got.command), STORE_COMMAND_MAX, "command length %zu",
	             strlen(got.command));
	cr_assert_eq(strlen(got.message), STORE_MESSAGE_MAX, "message length %zu",
	             strlen(got.message));
	cr_assert_eq(got.version, 3, "version %u", got.version);
	memset(&r, 0, sizeof r);
	cr_assert_eq(store_resource_save(s, "key:empty", &r), 0, "empty strings save");
	cr_assert_eq(store_resource_load(s, "key:empty", &got), 0, "and load");
	cr_assert_str_eq(got.command, "", "command");
	cr_assert_str_eq(got.message, "", "message");
}

Test(store, unknown_layout_is_refused)
{
	struct old_record bad = old_record(2);
	struct store_resource r;
	bad.version = 9; /* a newer broker's, or damage */
	old_record_put(dir, "key:bad", &bad);
	s = open_store();
	cr_assert_eq(store_resource_load(s, "key:bad", &r), COORD_EPROTO,
	             "a record of no known layout must not load as if it were one "
	             "(its token bound would be garbage)");
}

/* Takes n tokens, each with the lower bound `above`; asserts they rise
 * and returns the last. */
static uint64_t take(struct store *st, int n, uint64_t above)
{
	uint64_t last = 0, t;
	for (int i = 0; i < n; i++) {
		cr_assert_eq(store_token_take(st, above, &t), 0, "store_token_take");
		cr_assert_gt(t, above, "token %llu not above its bound %llu", (unsigned long long)t,
		             (unsigned long long)above);
		cr_assert_gt(t, last, "tokens must rise: %llu after %llu", (unsigned long long)t,
		             (unsigned long long)last);
		last = t;
	}
	return last;
}

Test(store, one_ceiling_commit_per_block)
{
	uint64_t first;
	s = open_store();
	cr_assert_eq(store_token_ceiling(s), 0, "a new directory has no ceiling");
	first = take(s, 1, 0);
	cr_assert_eq(store_token_ceiling(s), first + STORE_TOKEN_BLOCK - 1,
	             "the first token reserves one block");
	take(s, STORE_TOKEN_BLOCK - 1, 0);
	cr_assert_eq(store_token_ceiling(s), first + STORE_TOKEN_BLOCK - 1,
	             "a block's tokens need no other commit");
	take(s, 1, 0);
	cr_assert_eq(store_token_ceiling(s), first + 2 * STORE_TOKEN_BLOCK - 1,
	             "the next block is reserved when the first is used up");
	cr_assert_eq(old_meta_get(dir, "token_ceiling"), store_token_ceiling(s),
	             "the ceiling in memory is the one on disk");
}

Test(store, per_resource_bound_above_the_counter)
{
	s = open_store();
	take(s, 3, 0);
	cr_assert_gt(take(s, 1, 5000), 5000, "an old record's ceiling 5000 bounds the next token");
	cr_assert_gt(old_meta_get(dir, "token_ceiling"), 5000, "and is durable before it is used");
}

/* (a) of issue 10: a store SIGKILLed after handing out tokens (never
 * closed, nothing flushed) is reopened: the next token is above them. */
Test(store, tokens_rise_across_sigkill)
{
	int p[2], status;
	uint64_t last = 0, next;
	pid_t pid;
	cr_assert_eq(pipe(p), 0, "pipe");
	pid = fork();
	cr_assert_geq(pid, 0, "fork");
	if (pid == 0) {
		struct store_options o = { .state_map_mb = 16, .max_leases = 16 };
		struct store *st;
		uint64_t id, t = 0;
		char err[256];
		if (store_open(&st, dir, &o, NULL, NULL, &id, err, sizeof err) < 0)
			_exit(1);
		for (int i = 0; i < STORE_TOKEN_BLOCK + 10; i++)
			if (store_token_take(st, 0, &t) < 0)
				_exit(2);
		if (write(p[1], &t, sizeof t) != sizeof t)
			_exit(3);
		raise(SIGKILL);
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &last, sizeof last), (ssize_t)sizeof last,
	             "the child must report its last token");
	close(p[0]);
	waitpid(pid, &status, 0);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child must die by SIGKILL");
	s = open_store();
	cr_assert_eq(store_token_take(s, 0, &next), 0, "store_token_take");
	cr_assert_gt(next, last, "after SIGKILL the next token %llu must be above %llu",
	             (unsigned long long)next, (unsigned long long)last);
}

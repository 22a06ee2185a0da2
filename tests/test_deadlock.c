/* Integration tests of deadlock detection against a real coordd: processes
 * that hold leases and wait for each other's.  The request that would close
 * a wait-for cycle fails at once with COORD_EDEADLK, the others keep
 * waiting, the broker log names the cycle, and readers that share a
 * resource are never taken for a cycle. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

HARNESS_SUITE(deadlock, 60);

/* Long enough for any broker answer; a hang shows as an empty reply. */
#define REPLY_MS 5000

static void start(struct actor *a)
{
	actor_start(a, &h);
}

/* The actor asks for `mode` on res, waiting forever, and must be granted
 * at once. */
static void hold(struct actor *a, const char *mode, const char *res)
{
	const char *got;
	actor_send(a, "acquire %s -1 %s", mode, res);
	got = actor_reply(a, REPLY_MS);
	cr_assert(!strncmp(got, "ok ", 3), "actor %d: %s on idle-or-shared %s must be granted, got '%s'",
	          (int)a->pid, mode, res, got);
}

/* The actor asks for `mode` on res and must be queued: the broker lists
 * `waiters` waiters on res once it is. */
static void queue(struct actor *a, const char *mode, const char *res, int waiters)
{
	actor_send(a, "acquire %s -1 %s", mode, res);
	cr_assert(harness_wait_count(&h, res, 0, 1, waiters),
	          "actor %d asking %s on %s must be queued (%d waiter(s) expected, the broker lists %d); "
	          "its reply: '%s'",
	          (int)a->pid, mode, res, waiters, harness_count(&h, res, 0, 1),
	          actor_has_reply(a) ? actor_reply(a, 0) : "(none)");
}

/* The actor asks for `mode` on res and must be refused at once. */
static void refused(struct actor *a, const char *mode, const char *res)
{
	const char *got;
	actor_send(a, "acquire %s -1 %s", mode, res);
	got = actor_reply(a, REPLY_MS);
	cr_assert_str_eq(got, "err COORD_EDEADLK",
	                 "actor %d asking %s on %s closes a wait-for cycle: it must fail at once with "
	                 "COORD_EDEADLK, got '%s' ('' means it hung)",
	                 (int)a->pid, mode, res, got);
	cr_assert_eq(harness_count(&h, res, 0, 1), 0,
	             "the refused request of actor %d must not stay queued on %s", (int)a->pid, res);
}

static void still_waiting(struct actor *a, const char *res)
{
	cr_assert(!actor_has_reply(a),
	          "actor %d waits for %s and must go on waiting after another's refusal, but got '%s'",
	          (int)a->pid, res, actor_reply(a, 0));
}

static void granted_later(struct actor *a, const char *res)
{
	const char *got = actor_reply(a, REPLY_MS);
	cr_assert(!strncmp(got, "ok ", 3),
	          "actor %d waiting for %s must be granted once the holder lets go, got '%s'",
	          (int)a->pid, res, got);
}

/* "pid P (COMM) holds RES (write), waits NEXT (write)" for actor a. */
static void step_text(char *buf, size_t size, const struct actor *a, const char *holds,
                      const char *waits)
{
	char comm[64] = "";
	cr_assert_gt(harness_read_proc(a->pid, "comm", comm, sizeof comm), 0,
	             "cannot read the comm of actor %d", (int)a->pid);
	comm[strcspn(comm, "\n")] = 0;
	snprintf(buf, size, "pid %d (%s) holds %s (write), waits %s (write)", (int)a->pid, comm, holds,
	         waits);
}

struct log_has {
	const char *needle[4];
};

static char *read_log(void)
{
	FILE *f = fopen(harness_path(&h, "broker.log"), "r");
	char *text = NULL;
	size_t size = 0;
	if (!f)
		return NULL;
	if (getdelim(&text, &size, 0, f) < 0) {
		free(text);
		text = NULL;
	}
	fclose(f);
	return text;
}

/* 1 if one line of the broker log holds every needle. */
static int log_line_has(void *arg)
{
	struct log_has *want = arg;
	char *text = read_log(), *line, *save = NULL;
	int found = 0;
	for (line = text ? strtok_r(text, "\n", &save) : NULL; line && !found;
	     line = strtok_r(NULL, "\n", &save)) {
		found = 1;
		for (int i = 0; i < 4 && want->needle[i]; i++)
			found = found && strstr(line, want->needle[i]) != NULL;
	}
	free(text);
	return found;
}

static int log_mentions(void *needle)
{
	char *text = read_log();
	int found = text && strstr(text, needle);
	free(text);
	return found;
}

/* The broker log must hold an event=deadlock line whose cycle is `cycle`. */
static void expect_logged(const char *cycle)
{
	char field[2048];
	struct log_has want = { { "event=deadlock", field, "code=COORD_EDEADLK", NULL } };
	char *text;
	snprintf(field, sizeof field, "cycle=\"%s\"", cycle);
	if (harness_wait(log_line_has, &want, REPLY_MS))
		return;
	text = read_log();
	cr_assert_fail("the broker log must name the cycle in one event=deadlock line:\n  %s\nlog:\n%s",
	               field, text ? text : "(unreadable)");
}

Test(deadlock, two_processes)
{
	struct actor a, b;
	char sa[512], sb[512], cycle[1100];
	start(&a);
	start(&b);
	hold(&a, "write", "key:x");
	hold(&b, "write", "key:y");
	queue(&a, "write", "key:y", 1);
	refused(&b, "write", "key:x");
	still_waiting(&a, "key:y");
	cr_assert_eq(harness_count(&h, "key:y", 0, 1), 1, "A's request for y must still be queued");
	step_text(sb, sizeof sb, &b, "key:y", "key:x");
	step_text(sa, sizeof sa, &a, "key:x", "key:y");
	snprintf(cycle, sizeof cycle, "%s; %s", sb, sa);
	expect_logged(cycle);
	actor_send(&b, "release");
	cr_assert_str_eq(actor_reply(&b, REPLY_MS), "ok", "B's release of y failed");
	granted_later(&a, "key:y");
	actor_stop(&a);
	actor_stop(&b);
}

Test(deadlock, three_processes)
{
	struct actor a, b, c;
	char sa[512], sb[512], sc[512], cycle[1600];
	start(&a);
	start(&b);
	start(&c);
	hold(&a, "write", "key:x");
	hold(&b, "write", "key:y");
	hold(&c, "write", "key:z");
	queue(&a, "write", "key:y", 1);
	queue(&b, "write", "key:z", 1);
	refused(&c, "write", "key:x");
	still_waiting(&a, "key:y");
	still_waiting(&b, "key:z");
	step_text(sc, sizeof sc, &c, "key:z", "key:x");
	step_text(sa, sizeof sa, &a, "key:x", "key:y");
	step_text(sb, sizeof sb, &b, "key:y", "key:z");
	snprintf(cycle, sizeof cycle, "%s; %s; %s", sc, sa, sb);
	expect_logged(cycle);
	/* C lets go of z: B gets it; B's exit frees y and z: A gets y */
	actor_send(&c, "release");
	cr_assert_str_eq(actor_reply(&c, REPLY_MS), "ok", "C's release of z failed");
	granted_later(&b, "key:z");
	still_waiting(&a, "key:y");
	actor_stop(&b);
	granted_later(&a, "key:y");
	actor_stop(&a);
	actor_stop(&c);
}

/* A and B read x together; A waits to write y, which C holds.  C reading
 * x waits for nobody (readers share), and B asking to write y waits
 * behind A for C: neither is a cycle. */
Test(deadlock, readers_sharing_are_no_cycle)
{
	struct actor a, b, c;
	const char *got;
	start(&a);
	start(&b);
	start(&c);
	hold(&a, "read", "key:x");
	hold(&b, "read", "key:x");
	hold(&c, "write", "key:y");
	queue(&a, "write", "key:y", 1);
	queue(&b, "write", "key:y", 2);
	actor_send(&c, "acquire read -1 key:x");
	got = actor_reply(&c, REPLY_MS);
	cr_assert(!strncmp(got, "ok ", 3),
	          "C reading x beside readers A and B must be granted at once (readers share; A "
	          "waiting for C is no cycle), got '%s'",
	          got);
	cr_assert_eq(harness_count(&h, "key:x", COORD_READ, 0), 3, "A, B and C must all read x");
	still_waiting(&a, "key:y");
	still_waiting(&b, "key:y");
	cr_assert(!log_mentions("event=deadlock"), "no request here closes a cycle, yet the broker "
	                                           "logged event=deadlock");
	/* C's exit frees y: A, then B, gets to write it */
	actor_stop(&c);
	granted_later(&a, "key:y");
	still_waiting(&b, "key:y");
	actor_send(&a, "release");
	cr_assert_str_eq(actor_reply(&a, REPLY_MS), "ok", "A's release of y failed");
	granted_later(&b, "key:y");
	actor_stop(&a);
	actor_stop(&b);
}

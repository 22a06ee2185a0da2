/* Recall: when a conflicting request waits behind a held lease, its holder
 * sees coord_lease_recalled() turn 1 through the shared region, and
 * `coordctl list` shows when the recall was sent. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

HARNESS_SUITE(recall, 30);

struct recall_wait {
	struct actor *a;
	const char *want;
};

static int actor_says(void *p)
{
	struct recall_wait *rw = p;
	actor_send(rw->a, "recalled");
	return !strcmp(actor_reply(rw->a, 5000), rw->want);
}

Test(recall, a_waiting_writer_recalls_the_reader_and_it_lets_go)
{
	const char *res = harness_path(&h, "dash.db");
	struct actor dash, writer;
	struct recall_wait rw = { &dash, "1" };
	char out[4096];
	const char *r;

	actor_start(&dash, &h);
	actor_start(&writer, &h);
	actor_send(&dash, "acquire read -1 %s", res);
	r = actor_reply(&dash, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the dashboard's read lease: '%s'", r);
	actor_send(&dash, "recalled");
	cr_assert_str_eq(actor_reply(&dash, 5000), "0", "nobody waits yet: the lease is not recalled");

	actor_send(&writer, "acquire write -1 %s", res);
	cr_assert(harness_wait_count(&h, res, COORD_WRITE, 1, 1), "the writer must queue");
	cr_assert(harness_wait(actor_says, &rw, 5000),
	          "a queued writer must recall the reader it waits for");
	cr_assert_eq(harness_coordctl(out, sizeof out, "list --json"), 0, "coordctl list --json: %s",
	             out);
	cr_assert(strstr(out, "\"recalled_ms\":") && !strstr(out, "\"recalled_ms\":null"),
	          "coordctl list --json must show how long ago the reader was recalled: %s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "list"), 0, "coordctl list: %s", out);
	cr_assert(strstr(out, "(recalled "), "coordctl list must mark the recalled lease: %s", out);

	/* the dashboard's next safe point */
	actor_send(&dash, "release");
	cr_assert_str_eq(actor_reply(&dash, 5000), "ok", "the recalled reader releases");
	r = actor_reply(&writer, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the writer must be granted once the reader let go: '%s'", r);
	actor_send(&writer, "recalled");
	cr_assert_str_eq(actor_reply(&writer, 5000), "0", "the writer's fresh lease is not recalled");
	actor_stop(&dash);
	actor_stop(&writer);
}

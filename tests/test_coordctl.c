/* Integration tests of coordctl against a real broker: the exit-status
 * contract of `run`, `list --json`, `status`, and the lease environment
 * a command sees. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

HARNESS_SUITE(coordctl, 60);

struct status_case {
	char args[200];
	int expect;
};

ParameterizedTestParameters(coordctl, run_exit_status)
{
	static struct status_case cases[] = {
		{ "run --write k1 -- true", 0 },
		{ "run --write k1 -- sh -c 'exit 7'", 7 },
		{ "run --read k1 --timeout 2.5 -- false", 1 },
		{ "run k1 -- true", 64 },
		{ "run --write --read k1 -- true", 64 },
		{ "run --write k1", 64 },
		{ "run --write '' -- true", 64 },
		{ "run --write k1 -- /nonexistent/cmd", 127 },
		{ "frobnicate", 64 },
	};
	return cr_make_param_array(struct status_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct status_case *c, coordctl, run_exit_status)
{
	int st = harness_coordctl(NULL, 0, "%s", c->args);
	cr_assert_eq(st, c->expect, "coordctl %s: exit %d, expected %d", c->args, st, c->expect);
}

Test(coordctl, timeout_is_75_and_no_broker_is_69)
{
	struct actor a;
	actor_start(&a, &h);
	actor_send(&a, "acquire write -1 key:busy-key");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok 1", "actor must hold key:busy-key");
	int st = harness_coordctl(NULL, 0, "run --read key:busy-key --timeout 0.2 -- true");
	cr_assert_eq(st, 75, "a lease not granted within --timeout must exit 75, got %d", st);
	st = harness_coordctl(NULL, 0, "run --read key:busy-key --timeout 0 -- true");
	cr_assert_eq(st, 75, "--timeout 0 on a held resource must exit 75, got %d", st);
	actor_stop(&a);
	harness_stop_broker(&h);
	st = harness_coordctl(NULL, 0, "run --read key:busy-key -- true");
	cr_assert_eq(st, 69, "no broker and no autostart must exit 69, got %d", st);
	st = harness_coordctl(NULL, 0, "status");
	cr_assert_eq(st, 69, "status with no broker must exit 69, got %d", st);
}

Test(coordctl, command_sees_its_lease)
{
	char out[512];
	int st = harness_coordctl(out, sizeof out,
	             "run --write key:env-key --label job -- sh -c 'echo $COORD_RESOURCE $COORD_MODE "
	             "$COORD_TOKEN'");
	cr_assert_eq(st, 0, "run failed with %d", st);
	cr_assert_str_eq(out, "key:env-key write 1\n", "the command's environment is wrong: '%s'", out);
}

Test(coordctl, list_json_and_status)
{
	struct actor w, r;
	char out[8192], expect[600];
	const char *res = harness_path(&h, "list.db");
	actor_writer_then_reader(&h, &w, &r, res);
	cr_assert_eq(harness_coordctl(out, sizeof out, "list --json"), 0, "list --json failed");
	snprintf(expect, sizeof expect, "{\"leases\":[{\"id\":");
	cr_assert(!strncmp(out, expect, strlen(expect)), "JSON must start with the leases: %s", out);
	snprintf(expect, sizeof expect, "\"resource\":\"%s\",\"mode\":\"write\",\"pid\":%d,", res,
	         (int)w.pid);
	cr_assert(strstr(out, expect), "the writer is missing from %s", out);
	cr_assert(strstr(out, "\"label\":\"actor\""), "labels must be listed: %s", out);
	snprintf(expect, sizeof expect, "\"waiters\":[{\"resource\":\"%s\",\"mode\":\"read\",\"pid\":%d,",
	         res, (int)r.pid);
	cr_assert(strstr(out, expect), "the waiting reader is missing from %s", out);
	cr_assert(strstr(out, "\"waited_ms\":"), "waiters must carry waited_ms: %s", out);

	cr_assert_eq(harness_coordctl(out, sizeof out, "list"), 0, "list failed");
	cr_assert(strstr(out, "held   write") && strstr(out, "wait   read"),
	          "the table must show the holder and the waiter:\n%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "status"), 0, "status failed");
	cr_assert(strstr(out, "running (pid") && strstr(out, "1 held, 1 waiting"),
	          "status must show the broker and the counts:\n%s", out);
	actor_stop(&w);
	actor_stop(&r);
}

/* A command that exits while its child runs on: coordctl run keeps the
 * lease until that child is gone too, and returns the command's status. */
Test(coordctl, run_keeps_the_lease_until_the_commands_children_are_gone)
{
	const char *fifo = harness_path(&h, "go");
	int st;
	pid_t run;
	cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo");
	run = fork();
	cr_assert_geq(run, 0, "fork");
	if (run == 0)
		_exit(harness_coordctl(NULL, 0,
		                       "run --write key:bg -- sh -c 'timeout 30 cat %s >/dev/null & exit 3'",
		                       fifo));
	cr_assert(harness_wait_count(&h, "key:bg", COORD_WRITE, 0, 1), "the job holds the lease");
	/* the command itself has exited by now, or soon: its child has not */
	st = harness_coordctl(NULL, 0, "run --write key:bg --timeout 0.3 -- true");
	cr_assert_eq(st, 75, "a second writer must not get in while the job's child runs (%d)", st);
	{
		FILE *f = fopen(fifo, "w"); /* the child reads EOF, and exits */
		cr_assert(f, "open the fifo");
		fclose(f);
	}
	cr_assert_eq(waitpid(run, &st, 0), run, "coordctl run ends");
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3, "with the command's status 3 (0x%x)", st);
	cr_assert_eq(harness_coordctl(NULL, 0, "run --write key:bg --timeout 0 -- true"), 0,
	             "then the next writer gets in");
}

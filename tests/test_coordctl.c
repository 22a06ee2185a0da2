/* Integration tests of coordctl against a real broker: the exit-status
 * contract of `run`, `list --json`, `status`, and the lease environment
 * a command sees. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
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

/* ---- errors that name the cause ---- */

/* How every failure reads: a line "coordctl: WHAT: COORD_EXXX: ..." with
 * the expected code, then (detail lines, and) the hint as the last line. */
static void assert_failure_shape(const char *args, const char *out, const char *code)
{
	char want[64];
	const char *line, *hint;
	snprintf(want, sizeof want, ": %s: ", code);
	line = strstr(out, want);
	cr_assert(line, "coordctl %s must name %s:\n%s", args, code, out);
	while (line > out && line[-1] != '\n')
		line--;
	cr_assert(!strncmp(line, "coordctl: ", 10), "the line naming %s must start with "
	          "\"coordctl: \" and what was tried:\n%s", code, out);
	hint = strstr(out, "coordctl: hint: ");
	cr_assert(hint && hint > line, "coordctl %s must end with a hint, after the code:\n%s", args,
	          out);
	cr_assert(!strchr(hint, '\n') || !strchr(hint, '\n')[1],
	          "the hint must be the last line:\n%s", out);
	cr_assert(!strstr(out, "coordctl: \n"), "no empty message:\n%s", out);
}

struct failure_case {
	char args[160];
	int status;
	char code[24];
};

ParameterizedTestParameters(coordctl, failures_say_what_code_and_hint)
{
	static struct failure_case cases[] = {
		{ "show ''", 64, "COORD_ENAME" },
		{ "show /nonexistent-dir/x.db", 64, "COORD_ENAME" },
		{ "list --mode exclusive", 64, "COORD_EINVAL" },
		{ "list --pid nobody", 64, "COORD_EINVAL" },
		{ "run --write key:k -- true --timeout", 0, "" },
		{ "run --write key:k --timeout soon -- true", 64, "COORD_EINVAL" },
		{ "revoke 999999", 1, "COORD_ENOLEASE" },
		{ "policy key:k sometimes", 64, "COORD_EINVAL" },
		{ "limit key:k --max-hold -1", 64, "COORD_EINVAL" },
		{ "frobnicate", 64, "COORD_EINVAL" },
		{ "--frobnicate status", 64, "COORD_EINVAL" },
		{ "checkpoint key:k", 1, "COORD_ENOTSUP" },
		{ "doctor", 64, "COORD_EINVAL" },
		{ "share", 64, "COORD_EINVAL" },
		{ "share /tmp/x.db --dir /nonexistent-dir/instance", 1, "COORD_ENOENT" },
		{ "setup-shared --dir relative/dir", 64, "COORD_EINVAL" },
	};
	return cr_make_param_array(struct failure_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct failure_case *fc, coordctl, failures_say_what_code_and_hint)
{
	char out[4096];
	int st = harness_coordctl(out, sizeof out, "%s", fc->args);
	cr_assert_eq(st, fc->status, "coordctl %s: exit %d, expected %d:\n%s", fc->args, st,
	             fc->status, out);
	if (fc->code[0])
		assert_failure_shape(fc->args, out, fc->code);
}

/* A broker that cannot start (its state.mdb is not LMDB): coordctl shows
 * coordd's own words, not a generic hint. */
Test(coordctl, a_failed_autostart_shows_the_brokers_message)
{
	char bad[256], out[4096];
	int st;
	harness_tmpdir(bad, sizeof bad, "coord-badstate");
	{
		FILE *f = fopen(harness_file(bad, "state.mdb"), "w");
		cr_assert(f, "create state.mdb");
		for (int i = 0; i < 4096; i++)
			fputs("not lmdb ", f);
		fclose(f);
	}
	unsetenv("COORD_NO_AUTOSTART"); /* coordctl starts $COORD_BROKER, the test's coordd */
	st = harness_coordctl(out, sizeof out, "--dir '%s' run --write key:k -- true", bad);
	setenv("COORD_NO_AUTOSTART", "1", 1);
	harness_rmtree(bad);
	cr_assert_eq(st, 69, "a broker that cannot start is exit 69, got %d:\n%s", st, out);
	assert_failure_shape("run", out, "COORD_ENOBROKER");
	cr_assert(strstr(out, "start the broker ("), "it must say it tried to start coordd:\n%s", out);
	cr_assert(strstr(out, "coordd said: ") && strstr(out, "MDB_INVALID"),
	          "it must show what coordd said about state.mdb:\n%s", out);
	cr_assert(strstr(out, "state.mdb"), "and name the file:\n%s", out);
}

/* `coordctl checkpoint` of what is not a database says why, with a fix. */
struct checkpoint_case {
	char name[32];
	char content[16];
	char says[64];
	char hint[48];
};

ParameterizedTestParameters(coordctl, checkpoint_of_a_non_database_says_why)
{
	static struct checkpoint_case cases[] = {
		{ "notes.txt", "hello\n", "neither a SQLite nor a DuckDB database", "coordctl policy" },
		{ "missing.db", "", "there is no file", "check the path" },
		{ "key:k", "", "is a key", "checkpoint the database file itself" },
	};
	return cr_make_param_array(struct checkpoint_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct checkpoint_case *cc, coordctl, checkpoint_of_a_non_database_says_why)
{
	const char *res = strncmp(cc->name, "key:", 4) ? harness_path(&h, cc->name) : cc->name;
	char out[4096];
	int st;
	if (cc->content[0]) {
		FILE *f = fopen(res, "w");
		cr_assert(f && fputs(cc->content, f) >= 0 && fclose(f) == 0, "write %s", res);
	}
	st = harness_coordctl(out, sizeof out, "checkpoint '%s'", res);
	cr_assert_eq(st, 1, "checkpoint of %s must exit 1, got %d:\n%s", cc->name, st, out);
	assert_failure_shape("checkpoint", out, "COORD_ENOTSUP");
	cr_assert(strstr(out, cc->says), "it must say \"%s\":\n%s", cc->says, out);
	cr_assert(strstr(out, cc->hint), "its hint must say \"%s\":\n%s", cc->hint, out);
}

/* ---- --dir never makes an instance by accident ---- */

/* The pid of the broker of dir, from `status --json`, or 0. */
static long broker_of(const char *dir)
{
	char out[4096];
	const char *p;
	if (harness_coordctl(out, sizeof out, "--dir '%s' status --json", dir) != 0)
		return 0;
	p = strstr(out, "\"pid\":");
	return p ? strtol(p + 6, NULL, 10) : 0;
}

static int gone(void *arg)
{
	return kill((pid_t)*(long *)arg, 0) < 0;
}

struct typo_case {
	char args[80];
	int status;
	int can_create;
};

ParameterizedTestParameters(coordctl, a_dir_without_an_instance_is_refused)
{
	static struct typo_case cases[] = {
		{ "run --write key:k -- true", 69, 1 },
		{ "policy key:k none", 69, 1 },
		{ "limit key:k", 69, 1 },
		{ "checkpoint key:k", 69, 1 },
		{ "status", 69, 0 },
		{ "list", 69, 0 },
		{ "show key:k", 69, 0 },
	};
	return cr_make_param_array(struct typo_case, cases, sizeof cases / sizeof cases[0]);
}

/* A typo in --dir: nothing is created, no broker started, and the message
 * names the directory and --create. */
ParameterizedTest(struct typo_case *tc, coordctl, a_dir_without_an_instance_is_refused)
{
	char typo[300], empty[300], out[4096];
	struct stat st;
	int rc;
	snprintf(typo, sizeof typo, "%s/instnace", h.dir);
	snprintf(empty, sizeof empty, "%s/empty", h.dir);
	cr_assert_eq(mkdir(empty, 0700), 0, "mkdir %s", empty);
	unsetenv("COORD_NO_AUTOSTART");
	for (int i = 0; i < 2; i++) {
		const char *d = i ? empty : typo;
		rc = harness_coordctl(out, sizeof out, "--dir '%s' %s", d, tc->args);
		cr_assert_eq(rc, tc->status, "coordctl --dir %s %s: exit %d, expected %d:\n%s", d,
		             tc->args, rc, tc->status, out);
		assert_failure_shape(tc->args, out, "COORD_ENOBROKER");
		cr_assert(strstr(out, d), "the message must name %s:\n%s", d, out);
		cr_assert(strstr(out, "--create"), "and say how to make an instance:\n%s", out);
	}
	setenv("COORD_NO_AUTOSTART", "1", 1);
	cr_assert(stat(typo, &st) < 0, "%s must not be created", typo);
	cr_assert(stat(harness_file(empty, "coordd.lock"), &st) < 0,
	          "no broker may be started in %s", empty);
}

/* --create, and the default directory ($COORD_DIR), do start a broker. */
Test(coordctl, create_and_the_default_dir_start_a_broker)
{
	char fresh[300], out[4096];
	long pid;
	int rc;
	snprintf(fresh, sizeof fresh, "%s/fresh", h.dir);
	unsetenv("COORD_NO_AUTOSTART");
	rc = harness_coordctl(out, sizeof out, "--dir '%s' --create run --write key:k -- true", fresh);
	cr_assert_eq(rc, 0, "--create must start a broker in %s: %d\n%s", fresh, rc, out);
	pid = broker_of(fresh);
	cr_assert_gt(pid, 0, "a broker must run in %s", fresh);
	kill((pid_t)pid, SIGTERM);
	cr_assert(harness_wait(gone, &pid, 5000), "the broker of %s must stop", fresh);

	/* The default directory: COORD_DIR names it, no --dir. */
	snprintf(fresh, sizeof fresh, "%s/default", h.dir);
	setenv("COORD_DIR", fresh, 1);
	rc = harness_coordctl(out, sizeof out, "run --write key:k -- true");
	cr_assert_eq(rc, 0, "the default directory needs no --create: %d\n%s", rc, out);
	rc = harness_coordctl(out, sizeof out, "--dir '%s' run --write key:k -- true", fresh);
	cr_assert_eq(rc, 0, "nor does --dir naming it: %d\n%s", rc, out);
	pid = broker_of(fresh);
	setenv("COORD_DIR", h.dir, 1);
	setenv("COORD_NO_AUTOSTART", "1", 1);
	cr_assert_gt(pid, 0, "a broker must run in %s", fresh);
	kill((pid_t)pid, SIGTERM);
	cr_assert(harness_wait(gone, &pid, 5000), "the broker of %s must stop", fresh);
}

/* ---- list for real instances ---- */

Test(coordctl, an_empty_instance_says_so)
{
	char out[4096], real[PATH_MAX], want[PATH_MAX + 64];
	cr_assert_eq(harness_coordctl(out, sizeof out, "list"), 0, "list: %s", out);
	cr_assert(realpath(h.dir, real), "realpath");
	snprintf(want, sizeof want, "no leases held or waited for in %s\n", real);
	cr_assert_str_eq(out, want, "an empty instance must say so in one line");
	cr_assert_eq(harness_coordctl(out, sizeof out, "show key:nobody"), 0, "show: %s", out);
	cr_assert(strstr(out, "no leases held or waited for on this resource"),
	          "show of a resource nobody holds must say so:\n%s", out);
}

/* The lines of `coordctl list ARGS` after the header that mention needle
 * (NULL: all), counted. */
static int list_lines(const char *args, const char *needle, char *out, size_t size)
{
	int n = 0;
	harness_coordctl(out, size, "list %s", args);
	for (const char *p = strchr(out, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
		const char *end = strchr(p + 1, '\n');
		if (!needle || (end && memmem(p + 1, (size_t)(end - p - 1), needle, strlen(needle))))
			n++;
	}
	return n;
}

Test(coordctl, list_filters_and_wide_form)
{
	struct actor w, r, k;
	char out[8192], pid[32];
	const char *res = harness_path(&h, "filters.db");
	actor_writer_then_reader(&h, &w, &r, res);
	actor_start(&k, &h);
	actor_send(&k, "acquire read -1 key:other");
	cr_assert_str_eq(actor_reply(&k, 5000), "ok 0", "the key reader");

	cr_assert_eq(list_lines("", NULL, out, sizeof out), 3, "three leases:\n%s", out);
	cr_assert_eq(list_lines("--resource key:other", NULL, out, sizeof out), 1,
	             "--resource keeps one:\n%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "list --resource"), 64,
	             "--resource without a value is a usage error:\n%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "list --resource '%s'", res), 0, "list");
	cr_assert(strstr(out, "held") && strstr(out, "wait") && !strstr(out, "key:other"),
	          "--resource %s keeps its holder and waiter:\n%s", res, out);
	snprintf(pid, sizeof pid, "--pid %d", (int)r.pid);
	cr_assert_eq(list_lines(pid, NULL, out, sizeof out), 1, "--pid keeps one:\n%s", out);
	cr_assert_eq(list_lines(pid, "wait", out, sizeof out), 1, "the waiter:\n%s", out);
	cr_assert_eq(list_lines("--mode read", NULL, out, sizeof out), 2, "two readers:\n%s", out);
	cr_assert_eq(list_lines("--mode write", "write", out, sizeof out), 1, "one writer:\n%s", out);
	cr_assert_eq(list_lines("--waiting", "wait", out, sizeof out), 1, "one waiter:\n%s", out);
	cr_assert_eq(list_lines("--waiting --mode write", NULL, out, sizeof out), 0,
	             "no waiting writer:\n%s", out);
	cr_assert(strstr(out, "no leases held or waited for in ") && strstr(out, "that match"),
	          "a filter that keeps nothing says so:\n%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "list --json --waiting"), 0, "json");
	cr_assert(!strncmp(out, "{\"leases\":[],\"waiters\":[{", 25),
	          "--json --waiting keeps the waiter only: %s", out);

	cr_assert_eq(harness_coordctl(out, sizeof out, "list --wide"), 0, "list --wide");
	cr_assert(strstr(out, "UID") && strstr(out, "LEASE") && strstr(out, "TOKEN") &&
	          strstr(out, "LABEL"), "--wide has more columns:\n%s", out);
	cr_assert(strstr(out, "  actor  "), "--wide shows the label in its column:\n%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "list"), 0, "list");
	cr_assert(!strstr(out, "TOKEN") && strstr(out, "[actor]"),
	          "the narrow form has the label after the resource:\n%s", out);
	cr_assert(strstr(out, "ms  ") || strstr(out, "s  "), "ages are human:\n%s", out);
	actor_stop(&w);
	actor_stop(&r);
	actor_stop(&k);
}

/* A harness_wait() condition: `list --wide --resource key:job`, into arg
 * (8192 bytes), shows sh. */
static int wide_job_shows_sh(void *arg)
{
	harness_coordctl(arg, 8192, "list --wide --resource key:job");
	return strstr(arg, "sh -c") != NULL;
}

/* The COMMAND of a `coordctl run` holder is the command it runs. */
Test(coordctl, list_names_the_command_coordctl_run_runs)
{
	const char *fifo = harness_path(&h, "hold");
	char out[8192];
	pid_t run;
	int st;
	cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo");
	run = fork();
	cr_assert_geq(run, 0, "fork");
	if (run == 0)
		_exit(harness_coordctl(NULL, 0, "run --write key:job -- sh -c 'timeout 30 cat %s' update.sh nightly",
		                       fifo));
	cr_assert(harness_wait_count(&h, "key:job", COORD_WRITE, 0, 1), "the job holds the lease");
	/* until coordctl's child has exec()ed the command */
	cr_assert(harness_wait(wide_job_shows_sh, out, 5000), "list never showed sh:\n%s", out);
	cr_assert(strstr(out, "sh -c 'timeout 30 cat ") && strstr(out, "update.sh nightly"),
	          "COMMAND must be the wrapped command line:\n%s", out);
	cr_assert(!strstr(out, " coordctl "), "not coordctl itself:\n%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "list --json"), 0, "json");
	cr_assert(strstr(out, "\"command\":\"coordctl\""), "JSON keeps the broker's comm: %s", out);
	cr_assert(strstr(out, "\"cmdline\":[\"sh\",\"-c\","), "and adds the cmdline: %s", out);
	{
		FILE *f = fopen(fifo, "w");
		cr_assert(f, "open the fifo");
		fclose(f);
	}
	cr_assert_eq(waitpid(run, &st, 0), run, "coordctl run ends");
}

/* ---- help ---- */

struct help_case {
	char command[16];
	char option[24];
};

ParameterizedTestParameters(coordctl, every_command_has_help)
{
	static struct help_case cases[] = {
		{ "status", "--json" },     { "list", "--waiting" },    { "show", "--wide" },
		{ "run", "--label" },       { "checkpoint", "RESOURCE" }, { "policy", "--timeout" },
		{ "limit", "--recall-grace" }, { "revoke", "--grace" }, { "doctor", "PATH" },
		{ "setup-shared", "--group" }, { "share", "--dir" },
	};
	return cr_make_param_array(struct help_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct help_case *hc, coordctl, every_command_has_help)
{
	char out[8192], want[64];
	snprintf(want, sizeof want, "usage: coordctl %s", hc->command);
	cr_assert_eq(harness_coordctl(out, sizeof out, "%s --help", hc->command), 0, "%s --help",
	             hc->command);
	cr_assert(!strncmp(out, want, strlen(want)) && strstr(out, hc->option) &&
	          strstr(out, "Exit status:"),
	          "%s --help must give its usage, %s and its exit status:\n%s", hc->command,
	          hc->option, out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "help %s", hc->command), 0, "help %s",
	             hc->command);
	cr_assert(!strncmp(out, want, strlen(want)), "`coordctl help %s` says the same", hc->command);
	cr_assert_eq(harness_coordctl(out, sizeof out, "--help"), 0, "--help");
	cr_assert(strstr(out, hc->command), "coordctl --help must list %s", hc->command);
}

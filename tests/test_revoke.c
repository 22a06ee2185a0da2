/* Revoke: `coordctl revoke` takes a lease back by escalation (recall,
 * grace, SIGTERM, grace, SIGKILL), and only by the holder's release or
 * exit, never from a living process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbutil.h"
#include "harness.h"

HARNESS_SUITE(revoke, 60);

/* Starts an actor holding a write lease on res. */
static void holder(struct actor *a, const char *res)
{
	const char *r;
	actor_start(a, &h);
	actor_send(a, "acquire write -1 %s", res);
	r = actor_reply(a, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the holder's write lease: '%s'", r);
}

/* How the actor ended: the signal that killed it, or 0. */
static int death_signal(struct actor *a)
{
	int status = 0;
	cr_assert_eq(waitpid(a->pid, &status, 0), a->pid, "the holder %d must be gone", (int)a->pid);
	a->pid = 0;
	return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static int log_has(const char *needle)
{
	char buf[65536];
	FILE *f = fopen(harness_path(&h, "broker.log"), "r");
	size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = 0;
	return strstr(buf, needle) != NULL;
}

Test(revoke, a_holder_that_does_not_let_go_gets_sigterm)
{
	const char *res = harness_path(&h, "stuck.db");
	struct actor a;
	char out[2048];
	write_file(res, "x", 1);
	holder(&a, res);
	cr_assert_eq(harness_coordctl(out, sizeof out, "revoke --grace 0.2 '%s'", res), 0,
	             "revoke must succeed once the holder is gone: %s", out);
	cr_assert_eq(death_signal(&a), SIGTERM, "after the grace the holder must get SIGTERM");
	cr_assert_eq(harness_count(&h, res, 0, 0), 0, "the revoked lease must be gone");
	cr_assert(log_has("step=recall") && log_has("step=sigterm"),
	          "the log must show each step of the escalation");
}

Test(revoke, sigterm_ignored_escalates_to_sigkill)
{
	const char *res = harness_path(&h, "stubborn.db");
	struct actor a;
	char out[2048];
	write_file(res, "x", 1);
	holder(&a, res);
	actor_send(&a, "ignore-term");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok", "the holder must ignore SIGTERM");
	cr_assert_eq(harness_coordctl(out, sizeof out, "revoke --grace 0.2 --pid %d", (int)a.pid), 0,
	             "revoke must succeed once the holder is gone: %s", out);
	cr_assert_eq(death_signal(&a), SIGKILL, "a holder that ignores SIGTERM must get SIGKILL");
	cr_assert(log_has("step=sigkill"), "the log must show the SIGKILL step");
}

struct said {
	struct actor *a;
};

static int recalled(void *p)
{
	struct said *s = p;
	actor_send(s->a, "recalled");
	return !strcmp(actor_reply(s->a, 5000), "1");
}

/* A holder that lets go when recalled is never signalled. */
Test(revoke, a_holder_that_lets_go_on_recall_is_not_signalled)
{
	const char *res = "revoke-key";
	struct actor a;
	struct said s = { &a };
	int status;
	pid_t ctl;
	holder(&a, res);
	ctl = fork();
	cr_assert(ctl >= 0, "fork");
	if (ctl == 0)
		_exit(harness_coordctl(NULL, 0, "revoke --grace 30 '%s'", res));
	cr_assert(harness_wait(recalled, &s, 10000), "revoke must recall the lease first");
	actor_send(&a, "release");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok", "the recalled holder releases");
	cr_assert_eq(waitpid(ctl, &status, 0), ctl, "coordctl revoke");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	          "revoke must end with 0 once the holder released (status 0x%x)", status);
	actor_send(&a, "valid");
	cr_assert_str_eq(actor_reply(&a, 5000), "0", "the holder must still be alive to answer");
	actor_stop(&a);
	cr_assert(!log_has("step=sigterm"), "a holder that let go must not be signalled");
}

Test(revoke, nothing_to_revoke_is_exit_1)
{
	char out[2048];
	cr_assert_eq(harness_coordctl(out, sizeof out, "revoke 999999"), 1,
	             "revoking a lease nobody holds must exit 1: %s", out);
	cr_assert(strstr(out, "COORD_ENOLEASE"), "and say COORD_ENOLEASE: %s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "revoke"), 64, "no target is a usage error");
}

/* ---- hold limits (coordctl limit) ---- */

/* 1 if the process is a zombie: it exited and is not reaped yet (so its
 * exit, not a guess, is what the broker's pidfd saw). */
static int exited(pid_t pid)
{
	char stat[512];
	const char *p;
	if (harness_read_proc(pid, "stat", stat, sizeof stat) < 0)
		return 1;
	p = strrchr(stat, ')');
	return p && p[1] == ' ' && p[2] == 'Z';
}

Test(revoke, a_lease_held_past_max_hold_is_revoked)
{
	const char *res = harness_path(&h, "hung.db");
	struct actor a;
	char out[4096];
	write_file(res, "x", 1);
	holder(&a, res);
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit '%s' --max-hold 0.3 --recall-grace 0.2",
	                              res), 0, "coordctl limit: %s", out);
	cr_assert(strstr(out, "max hold 0.3 s, recall grace 0.2 s"), "limit says what it set: %s",
	          out);
	cr_assert_eq(death_signal(&a), SIGTERM,
	             "a holder past its max hold must be recalled, then get SIGTERM");
	cr_assert(harness_wait_count(&h, res, 0, 0, 0), "its lease must be reclaimed");
	cr_assert(log_has("step=recall reason=max-hold") && log_has("step=sigterm reason=max-hold"),
	          "the log must show each step and why");
	cr_assert_eq(harness_coordctl(out, sizeof out, "show '%s'", res), 0, "show: %s", out);
	cr_assert(strstr(out, "limits:     max hold 0.3 s, recall grace 0.2 s"),
	          "show must print the limits: %s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit '%s' --max-hold 0", res), 0, "%s", out);
	cr_assert(strstr(out, "limits recall grace 0.2 s"), "--max-hold 0 turns only it off: %s",
	          out);
}

/* A lease adopted by a restarted broker keeps its hold limit, timed from
 * the start, not from the first event: here nothing connects to the new
 * broker at all (the holder is asleep, the test only waits for it). */
Test(revoke, an_adopted_lease_past_max_hold_is_revoked_with_no_client_event)
{
	const char *res = harness_path(&h, "adopted.db");
	struct actor a;
	char out[4096];
	int status = 0;
	pid_t got = 0;
	write_file(res, "x", 1);
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit '%s' --max-hold 1.5 --recall-grace 0.2",
	                              res), 0, "coordctl limit: %s", out);
	holder(&a, res);
	harness_kill_broker(&h);
	harness_start_broker_undialed(&h, NULL);
	for (int i = 0; i < 1500 && got == 0; i++) { /* 15 s */
		got = waitpid(a.pid, &status, WNOHANG);
		if (got == 0)
			usleep(10000);
	}
	cr_assert_eq(got, a.pid, "the holder of an adopted lease past its max hold must be "
	                         "recalled and get SIGTERM, with no other event in the broker");
	a.pid = 0;
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
	          "the holder ends by SIGTERM (status %d)", status);
}

/* An idle reader that ignores the recall (and SIGTERM) is killed after the
 * grace, and the waiting writer is granted only once it has exited. */
Test(revoke, a_recalled_reader_that_does_not_let_go_is_revoked_before_the_writer_gets_in)
{
	const char *res = harness_path(&h, "dash.db");
	struct actor dash, writer;
	const char *r;
	char out[4096];
	write_file(res, "x", 1);
	actor_start(&dash, &h);
	actor_send(&dash, "acquire read -1 %s", res);
	r = actor_reply(&dash, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the dashboard's read lease: '%s'", r);
	actor_send(&dash, "ignore-term");
	cr_assert_str_eq(actor_reply(&dash, 5000), "ok", "the reader must ignore SIGTERM");
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit '%s' --recall-grace 0.2", res), 0,
	             "coordctl limit: %s", out);
	actor_start(&writer, &h);
	actor_send(&writer, "acquire write 20000 %s", res);
	r = actor_reply(&writer, 15000);
	cr_assert(!strncmp(r, "ok", 2), "the writer must be granted after the revoke: '%s'", r);
	cr_assert(exited(dash.pid), "the writer must not get in while the reader %d lives",
	          (int)dash.pid);
	cr_assert_eq(death_signal(&dash), SIGKILL, "a reader ignoring SIGTERM must get SIGKILL");
	cr_assert(log_has("step=sigterm reason=recall-grace") &&
	                  log_has("step=sigkill reason=recall-grace"),
	          "the log must show the recall-grace escalation");
	cr_assert(!log_has("step=recall reason=recall-grace"),
	          "the queued writer recalled the lease already; the limit must not recall again");
	actor_stop(&writer);
}

/* Limits are durable and apply to leases a restarted broker adopted, from
 * their original grant. */
Test(revoke, limits_survive_a_broker_restart_and_cover_adopted_leases)
{
	const char *res = "key:nightly";
	struct actor a;
	char out[4096];
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit %s --max-hold 1 --recall-grace 0.2", res),
	             0, "coordctl limit: %s", out);
	holder(&a, res);
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	cr_assert_eq(harness_coordctl(out, sizeof out, "show %s", res), 0, "show: %s", out);
	cr_assert(strstr(out, "limits:     max hold 1 s, recall grace 0.2 s"),
	          "the limits must survive the restart: %s", out);
	cr_assert(strstr(out, "(adopted)") || harness_count(&h, res, COORD_WRITE, 0) == 1,
	          "the holder's lease must be adopted: %s", out);
	cr_assert_eq(death_signal(&a), SIGTERM, "the adopted lease must be revoked at its max hold");
	cr_assert(log_has("step=sigterm reason=max-hold"), "the new broker revoked it");
}

Test(revoke, limit_usage_errors)
{
	char out[2048];
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit key:x --max-hold -1"), 64, "%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit key:x --max-hold 99999999"), 64, "%s",
	             out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit key:x --bogus 1"), 64, "%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit key:x --max-hold"), 64, "%s", out);
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit key:x"), 0, "%s", out);
	cr_assert(strstr(out, "limits none"), "without options, limit shows them: %s", out);
}

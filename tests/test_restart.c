/* Broker restarts keep every live lease.  A real broker is SIGKILLed (a
 * crash, an OOM kill) or SIGTERMed (an upgrade) under real holder
 * processes, a new one starts, and the tests check what a user relies on:
 * the holder's lease stays valid and exclusive (no second writer gets in),
 * `coordctl list` shows it adopted, the holder releases it as if nothing
 * happened, a holder that dies before or after the restart is reclaimed,
 * a waiting request is queued again, `coordctl run` keeps its lease, and
 * no other process can take an adopted lease over. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord.h"
#include "harness.h"

HARNESS_SUITE(restart, 90);

#define REPLY_MS 10000

struct restart_case {
	int key;                    /* a key, else a file */
	int term;                   /* SIGTERM (upgrade), else SIGKILL */
};

static const char *resource_of(const struct restart_case *rc)
{
	if (rc->key)
		return "key:restart-job";
	const char *db = harness_path(&h, "restart.db");
	int fd = open(db, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "create %s: %s", db, strerror(errno));
	close(fd);
	return db;
}

static void restart_broker(int term)
{
	if (term) {
		int st = harness_stop_broker(&h);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM must end coordd with 0 (%d)",
		          st);
	} else {
		harness_kill_broker(&h);
	}
	harness_start_broker(&h, NULL);
}

static void expect_reply(struct actor *a, const char *want, const char *what)
{
	const char *r = actor_reply(a, REPLY_MS);
	cr_assert_str_eq(r, want, "%s: got '%s'", what, r);
}

static unsigned long long acquire_ok(struct actor *a, const char *mode, const char *res)
{
	unsigned long long token = 0;
	const char *r;
	actor_send(a, "acquire %s -1 %s", mode, res);
	r = actor_reply(a, REPLY_MS);
	cr_assert(sscanf(r, "ok %llu", &token) == 1, "%s lease on %s: '%s'", mode, res, r);
	return token;
}

ParameterizedTestParameters(restart, live_holder_keeps_its_lease)
{
	static struct restart_case cases[] = { { 0, 0 }, { 0, 1 }, { 1, 0 }, { 1, 1 } };
	return cr_make_param_array(struct restart_case, cases, 4);
}

ParameterizedTest(struct restart_case *rc, restart, live_holder_keeps_its_lease)
{
	const char *res = resource_of(rc);
	char out[8192];
	struct actor a, b;
	unsigned long long t1, t2;

	actor_start(&a, &h);
	t1 = acquire_ok(&a, "write", res);
	restart_broker(rc->term);

	actor_send(&a, "valid");
	expect_reply(&a, "1", "a live holder's lease must stay valid across a broker restart");
	cr_assert_eq(harness_coordctl(out, sizeof out, "list --json"), 0, "coordctl list: %s", out);
	cr_assert(strstr(out, "\"adopted\":true"), "the restarted broker must list the lease as "
	                                           "adopted: %s", out);

	actor_start(&b, &h);
	actor_send(&b, "acquire write 0 %s", res);
	expect_reply(&b, "err COORD_EBUSY",
	             "a second writer must not be granted while the adopted writer holds");
	actor_send(&b, "acquire read 0 %s", res);
	expect_reply(&b, "err COORD_EBUSY", "nor a reader");

	actor_send(&a, "release");
	expect_reply(&a, "ok", "the holder's release after the restart must succeed");
	t2 = acquire_ok(&b, "write", res);
	cr_assert_gt(t2, t1, "tokens must rise across the restart: %llu then %llu", t1, t2);
	actor_stop(&a);
	actor_stop(&b);
}

/* The holder reconnects on its own next call and re-attaches: from then
 * on the lease is its connection's, and a second restart adopts it
 * again. */
Test(restart, two_restarts_and_a_reconnect_in_between)
{
	const char *res = "key:twice";
	struct actor a, b;
	actor_start(&a, &h);
	acquire_ok(&a, "write", res);
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	/* a call that talks to the broker reconnects and re-attaches */
	actor_send(&a, "acquire read 0 key:other");
	cr_assert(!strncmp(actor_reply(&a, REPLY_MS), "ok", 2), "a call after the restart");
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	actor_start(&b, &h);
	actor_send(&b, "acquire write 0 %s", res);
	expect_reply(&b, "err COORD_EBUSY", "the lease must survive a second restart too");
	actor_stop(&a);
	actor_send(&b, "acquire write 5000 %s", res);
	cr_assert(!strncmp(actor_reply(&b, REPLY_MS), "ok", 2),
	          "once the holder exits, its adopted lease must be reclaimed");
	actor_stop(&b);
}

Test(restart, holder_that_dies_while_no_broker_runs_is_reclaimed)
{
	const char *res = harness_path(&h, "dead.db");
	struct actor a, b;
	close(open(res, O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
	actor_start(&a, &h);
	acquire_ok(&a, "write", res);
	harness_kill_broker(&h);
	actor_kill(&a);
	harness_start_broker(&h, NULL);
	actor_start(&b, &h);
	actor_send(&b, "acquire write 0 %s", res);
	cr_assert(!strncmp(actor_reply(&b, REPLY_MS), "ok", 2),
	          "the lease of a holder that died while no broker ran must be free at start");
	actor_stop(&b);
}

Test(restart, adopted_holder_that_dies_later_is_reclaimed)
{
	const char *res = "key:later";
	struct actor a, b;
	actor_start(&a, &h);
	acquire_ok(&a, "write", res);
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	actor_start(&b, &h);
	actor_send(&b, "acquire write -1 %s", res);
	cr_assert(harness_wait_count(&h, res, COORD_WRITE, 1, 1), "the second writer must wait");
	actor_kill(&a);
	cr_assert(!strncmp(actor_reply(&b, REPLY_MS), "ok", 2),
	          "an adopted holder that dies must be reclaimed through its pidfd");
	actor_stop(&b);
}

Test(restart, waiting_request_is_queued_again)
{
	const char *res = "key:queue";
	struct actor a, b;
	actor_start(&a, &h);
	acquire_ok(&a, "write", res);
	actor_start(&b, &h);
	actor_send(&b, "acquire write 60000 %s", res);
	cr_assert(harness_wait_count(&h, res, COORD_WRITE, 1, 1), "the second writer must wait");
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	cr_assert(harness_wait_count(&h, res, COORD_WRITE, 1, 1),
	          "the waiting request must be queued again at the new broker");
	cr_assert(!actor_has_reply(&b), "the waiter must not be answered while the holder holds: %s",
	          actor_reply(&b, 0));
	actor_send(&a, "release");
	expect_reply(&a, "ok", "release");
	cr_assert(!strncmp(actor_reply(&b, REPLY_MS), "ok", 2), "then the waiter is granted");
	actor_stop(&a);
	actor_stop(&b);
}

/* ---- nobody else can attach an adopted lease ---- */

static uint64_t region_epoch(void)
{
	coord_shm_header hdr;
	int fd = open(harness_path(&h, COORD_SHM_NAME), O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open the region: %s", strerror(errno));
	cr_assert_eq(read(fd, &hdr, sizeof hdr), (ssize_t)sizeof hdr, "read the region header");
	close(fd);
	return hdr.broker_epoch;
}

/* Sends ATTACH on a raw connection and returns the status of the answer
 * (0 for a GRANT). */
static int raw_attach(int fd, uint32_t seq, uint64_t client_id, uint64_t lease_id)
{
	coord_msg_attach m = { { COORD_MSG_ATTACH, seq }, client_id, lease_id, 0 };
	union {
		coord_msg_hdr h;
		coord_msg_reply r;
		char raw[COORD_MSG_MAX];
	} in;
	ssize_t n;
	cr_assert_eq(send(fd, &m, sizeof m, 0), (ssize_t)sizeof m, "send ATTACH");
	n = recv(fd, &in, sizeof in, 0);
	cr_assert_geq(n, (ssize_t)sizeof in.h, "an answer to ATTACH");
	cr_assert_eq(in.h.seq, seq, "answer to the ATTACH");
	if (in.h.type == COORD_MSG_GRANT)
		return 0;
	cr_assert_eq(in.h.type, COORD_MSG_REPLY, "ATTACH is answered by GRANT or REPLY");
	return in.r.status;
}

Test(restart, another_process_cannot_attach_an_adopted_lease)
{
	const char *res = "key:mine";
	struct actor a, b;
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
	char buf[COORD_MSG_MAX];
	uint64_t epoch = region_epoch();
	uint32_t seq = 2;
	int fd;

	actor_start(&a, &h);
	acquire_ok(&a, "write", res);
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);

	fd = harness_dial(h.dir);
	cr_assert_geq(fd, 0, "raw connect: %s", strerror(errno));
	cr_assert_eq(send(fd, &hello, sizeof hello, 0), (ssize_t)sizeof hello, "HELLO");
	cr_assert_gt(recv(fd, buf, sizeof buf, 0), 0, "WELCOME");
	/* Every connection id the first broker could have handed out, with
	 * the right lease id (1, the first lease of the instance) and a wrong
	 * secret; then "done" for each, which must not give the lease back
	 * either: they are another process's. */
	for (uint64_t id = (epoch << 32) + 1; id <= (epoch << 32) + 8; id++) {
		cr_assert_eq(raw_attach(fd, seq++, id, 1), COORD_ENOLEASE,
		             "a stranger attached lease 1 of connection %llu", (unsigned long long)id);
		cr_assert_eq(raw_attach(fd, seq++, id, 0), 0, "done");
	}
	close(fd);
	actor_start(&b, &h);
	actor_send(&b, "acquire write 0 %s", res);
	expect_reply(&b, "err COORD_EBUSY", "the adopted lease must still be held by its process");
	actor_send(&a, "valid");
	expect_reply(&a, "1", "and still valid for it");
	actor_stop(&a);
	actor_stop(&b);
}

/* ---- coordctl run ---- */

static int file_exists(void *path)
{
	return access(path, F_OK) == 0;
}

ParameterizedTestParameters(restart, coordctl_run_keeps_its_lease)
{
	static struct restart_case cases[] = { { 0, 0 }, { 1, 0 }, { 0, 1 } };
	return cr_make_param_array(struct restart_case, cases, 3);
}

ParameterizedTest(struct restart_case *rc, restart, coordctl_run_keeps_its_lease)
{
	const char *res = resource_of(rc);
	char ready[512], go[512], err[512], cmd[2048], text[4096] = "";
	const char *ctl = getenv("COORD_TEST_COORDCTL");
	struct actor b;
	int st, fd;
	ssize_t n;
	pid_t pid;

	snprintf(ready, sizeof ready, "%s", harness_path(&h, "ready"));
	snprintf(go, sizeof go, "%s", harness_path(&h, "go"));
	snprintf(err, sizeof err, "%s", harness_path(&h, "run.err"));
	cr_assert_eq(mkfifo(go, 0600), 0, "mkfifo: %s", strerror(errno));
	snprintf(cmd, sizeof cmd, "touch '%s'; read x < '%s'", ready, go);
	pid = fork();
	cr_assert_geq(pid, 0, "fork");
	if (pid == 0) {
		int e = open(err, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
		dup2(e, 2);
		execl(ctl, "coordctl", "run", "--write", res, "--", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	cr_assert(harness_wait(file_exists, ready, 10000), "the command must start under its lease");
	restart_broker(rc->term);

	actor_start(&b, &h);
	actor_send(&b, "acquire write 0 %s", res);
	expect_reply(&b, "err COORD_EBUSY",
	             "a second writer got in while `coordctl run`'s command still ran");

	fd = open(go, O_WRONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open the fifo: %s", strerror(errno));
	cr_assert_eq(write(fd, "x\n", 2), 2, "write the fifo");
	close(fd);
	cr_assert_eq(waitpid(pid, &st, 0), pid, "wait for coordctl");
	fd = open(err, O_RDONLY | O_CLOEXEC);
	n = fd >= 0 ? read(fd, text, sizeof text - 1) : 0;
	if (fd >= 0)
		close(fd);
	text[n > 0 ? n : 0] = 0;
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	          "coordctl run must exit with its command's status 0 (%d): %s", st, text);
	cr_assert_str_empty(text, "coordctl run must not report a lost lease: %s", text);
	actor_send(&b, "acquire write 5000 %s", res);
	cr_assert(!strncmp(actor_reply(&b, REPLY_MS), "ok", 2), "after the command, the next writer");
	actor_stop(&b);
}

/* The lease records are lost with the broker (leases.mdb removed): the
 * holder's lease reads invalid once the new broker runs, and its release
 * says the lease was lost. */
Test(restart, lost_records_make_a_lost_lease)
{
	coord_t *c;
	coord_lease_t *l;
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, "key:forgotten", COORD_WRITE, -1, NULL, &l), 0, "write");
	harness_kill_broker(&h);
	cr_assert_eq(unlink(harness_path(&h, "leases.mdb")), 0, "remove leases.mdb: %s",
	             strerror(errno));
	unlink(harness_path(&h, "leases.mdb-lock"));
	harness_start_broker(&h, NULL);
	cr_assert_eq(coord_lease_valid(l), 0, "a lease the new broker does not know is not valid");
	cr_assert_eq(coord_release(l), COORD_ELOST, "its release must say it was lost");
	coord_disconnect(c);
}

/* Waiting without blocking: coord_acquire_start(), coord_pending_wait(),
 * coord_pending_cancel() and coord_pending_fd() against a real broker.
 * A cancelled request leaves the queue at once, a grant that crosses the
 * cancel is given back, a signal ends a wait, and other calls on the
 * connection go on (and keep the pending answer) meanwhile. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "harness.h"

HARNESS_SUITE(pending, 30);

static coord_t *connect_here(void)
{
	coord_t *c;
	int rc = coord_connect(&c, NULL);
	cr_assert_eq(rc, 0, "coord_connect: %s", coord_strerror(rc));
	return c;
}

static coord_resource_t *open_res(coord_t *c, const char *name)
{
	coord_resource_t *r;
	int rc = coord_resource_open(c, name, &r);
	cr_assert_eq(rc, 0, "open %s: %s", name, coord_strerror(rc));
	return r;
}

/* An actor holding a write lease on name. */
static void holder(struct actor *a, const char *name)
{
	const char *r;
	actor_start(a, &h);
	actor_send(a, "acquire write -1 %s", name);
	r = actor_reply(a, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the holder's lease: '%s'", r);
}

static coord_pending_t *start_queued(coord_resource_t *r, int mode, int timeout_ms)
{
	coord_pending_t *p = NULL;
	coord_lease_t *l = NULL;
	int rc = coord_acquire_start(r, mode, timeout_ms, "pending", &l, &p);
	cr_assert_eq(rc, 0, "a request behind a holder stays pending: %s",
	             rc < 0 ? coord_strerror(rc) : "granted");
	cr_assert(p, "and gives a pending handle");
	return p;
}

static int readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, ms) == 1;
}

Test(pending, a_free_resource_is_granted)
{
	coord_t *c = connect_here();
	coord_resource_t *r = open_res(c, "key:free");
	coord_pending_t *p = NULL;
	coord_lease_t *l = NULL;
	int rc = coord_acquire_start(r, COORD_WRITE, 1000, "x", &l, &p);
	cr_assert_geq(rc, 0, "start: %s", coord_strerror(rc));
	if (rc == 0)
		rc = coord_pending_wait(p, -1, &l);
	cr_assert_eq(rc, 1, "granted: %s", rc < 0 ? coord_strerror(rc) : "pending");
	cr_assert_eq(coord_lease_valid(l), 1, "the lease is valid");
	cr_assert_eq(coord_release(l), 0, "release");
	coord_resource_close(r);
	coord_disconnect(c);
}

Test(pending, the_descriptor_wakes_when_the_holder_lets_go)
{
	const char *name = harness_path(&h, "db");
	struct actor a;
	coord_t *c = connect_here();
	coord_resource_t *r;
	coord_pending_t *p;
	coord_lease_t *l = NULL;
	int fd;
	FILE *f = fopen(name, "w");
	cr_assert(f, "create the file");
	fclose(f);
	holder(&a, name);
	r = open_res(c, name);
	p = start_queued(r, COORD_WRITE, 10000);
	fd = coord_pending_fd(p);
	cr_assert_geq(fd, 0, "coord_pending_fd: %s", coord_strerror(fd));
	cr_assert_eq(coord_pending_wait(p, 0, &l), 0, "still pending while the holder holds");
	cr_assert(harness_wait_count(&h, name, COORD_WRITE, 1, 1), "the request waits in the queue");
	actor_send(&a, "release");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok", "the holder lets go");
	cr_assert(readable(fd, 5000), "the descriptor turns readable");
	cr_assert_eq(coord_pending_wait(p, 5000, &l), 1, "granted");
	cr_assert(coord_lease_fd(l) >= 0, "with its kernel lock on the file");
	cr_assert_eq(coord_release(l), 0, "release");
	actor_stop(&a);
	coord_resource_close(r);
	coord_disconnect(c);
}

Test(pending, cancel_leaves_the_queue_clean)
{
	struct actor a, b;
	coord_t *c = connect_here();
	coord_resource_t *r;
	coord_pending_t *p;
	const char *got;
	holder(&a, "key:q");
	r = open_res(c, "key:q");
	p = start_queued(r, COORD_WRITE, -1);
	cr_assert(harness_wait_count(&h, "key:q", COORD_WRITE, 1, 1), "the request waits");
	cr_assert_eq(coord_pending_cancel(p), 0, "cancel");
	cr_assert_eq(harness_count(&h, "key:q", 0, 1), 0, "no waiter is left once cancel returns");
	actor_start(&b, &h);
	actor_send(&b, "acquire write 5000 key:q");
	cr_assert(harness_wait_count(&h, "key:q", COORD_WRITE, 1, 1), "the next writer queues");
	actor_send(&a, "release");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok", "the holder lets go");
	got = actor_reply(&b, 5000);
	cr_assert(!strncmp(got, "ok", 2), "the next writer is granted, not the cancelled one: '%s'",
	          got);
	actor_stop(&a);
	actor_stop(&b);
	coord_resource_close(r);
	coord_disconnect(c);
}

Test(pending, a_grant_that_crosses_the_cancel_is_given_back)
{
	struct actor a;
	coord_t *c = connect_here();
	coord_resource_t *r;
	coord_pending_t *p;
	holder(&a, "key:cross");
	r = open_res(c, "key:cross");
	p = start_queued(r, COORD_WRITE, -1);
	cr_assert(harness_wait_count(&h, "key:cross", COORD_WRITE, 1, 1), "the request waits");
	actor_send(&a, "release");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok", "the holder lets go");
	/* the broker grants us now; the GRANT sits unread on the socket */
	cr_assert(harness_wait_count(&h, "key:cross", COORD_WRITE, 0, 1), "we are granted");
	cr_assert_eq(coord_pending_cancel(p), 0, "cancel");
	cr_assert(harness_wait_count(&h, "key:cross", 0, 0, 0),
	          "the crossed grant must be released by the cancel");
	actor_stop(&a);
	coord_resource_close(r);
	coord_disconnect(c);
}

Test(pending, the_requests_own_timeout_ends_it)
{
	struct actor a;
	coord_t *c = connect_here();
	coord_resource_t *r;
	coord_pending_t *p;
	coord_lease_t *l = NULL;
	holder(&a, "key:t");
	r = open_res(c, "key:t");
	p = start_queued(r, COORD_READ, 200);
	cr_assert_eq(coord_pending_wait(p, -1, &l), COORD_ETIMEDOUT, "the broker's timeout answers");
	cr_assert_eq(harness_count(&h, "key:t", 0, 1), 0, "and the queue is clean");
	actor_stop(&a);
	coord_resource_close(r);
	coord_disconnect(c);
}

static void on_alarm(int sig)
{
	(void)sig;
}

Test(pending, a_signal_ends_the_wait_so_the_caller_can_act)
{
	struct actor a;
	struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
	struct itimerval it = { { 0, 0 }, { 0, 100000 } };
	coord_t *c = connect_here();
	coord_resource_t *r;
	coord_pending_t *p;
	coord_lease_t *l = NULL;
	holder(&a, "key:sig");
	r = open_res(c, "key:sig");
	p = start_queued(r, COORD_WRITE, -1);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	/* without the signal this would wait forever; the suite's timeout
	 * would fail the test */
	cr_assert_eq(coord_pending_wait(p, -1, &l), 0, "a signal returns 0: still pending");
	cr_assert_eq(coord_pending_cancel(p), 0, "then the caller gives up");
	cr_assert_eq(harness_count(&h, "key:sig", 0, 1), 0, "leaving no waiter");
	actor_stop(&a);
	coord_resource_close(r);
	coord_disconnect(c);
}

Test(pending, the_connection_serves_other_calls_meanwhile)
{
	struct actor a;
	coord_t *c = connect_here();
	coord_resource_t *r, *other;
	coord_pending_t *p;
	coord_lease_t *mine, *l = NULL, *second = NULL;
	coord_lease_info_t *v = NULL;
	size_t n = 0;
	int rc;
	holder(&a, "key:busy");
	other = open_res(c, "key:other");
	cr_assert_eq(coord_resource_acquire(other, COORD_WRITE, 1000, "mine", &mine), 0, "a lease");
	r = open_res(c, "key:busy");
	p = start_queued(r, COORD_WRITE, -1);
	rc = coord_acquire(c, "key:third", COORD_WRITE, 1000, "x", &second);
	cr_assert_eq(rc, COORD_EBUSYCONN, "a second acquire on the connection: %s",
	             coord_strerror(rc));
	cr_assert_eq(coord_release(mine), 0, "a release goes on while the request waits");
	actor_send(&a, "release");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok", "the holder lets go");
	cr_assert(harness_wait_count(&h, "key:busy", COORD_WRITE, 0, 1), "we are granted");
	/* coord_list() reads the socket: the GRANT must be kept for p */
	cr_assert_eq(coord_list(c, &v, &n), 0, "coord_list on the same connection");
	coord_free(v);
	cr_assert_eq(coord_pending_wait(p, 5000, &l), 1, "the grant read by coord_list() is p's");
	cr_assert_eq(coord_lease_valid(l), 1, "and valid");
	cr_assert_eq(coord_release(l), 0, "release");
	actor_stop(&a);
	coord_resource_close(r);
	coord_resource_close(other);
	coord_disconnect(c);
}

Test(pending, a_broker_restart_sends_the_request_again)
{
	struct actor a;
	coord_t *c = connect_here();
	coord_resource_t *r;
	coord_pending_t *p;
	coord_lease_t *l = NULL;
	int fd, rc;
	holder(&a, "key:restart");
	r = open_res(c, "key:restart");
	p = start_queued(r, COORD_WRITE, 20000);
	fd = coord_pending_fd(p);
	cr_assert_geq(fd, 0, "coord_pending_fd");
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	cr_assert(readable(fd, 5000), "the lost connection wakes the descriptor");
	cr_assert_eq(coord_pending_wait(p, 0, &l), 0, "still pending: sent again");
	cr_assert(harness_wait_count(&h, "key:restart", COORD_WRITE, 1, 1),
	          "the request waits again, behind the adopted holder");
	cr_assert_eq(coord_pending_fd(p), fd, "the descriptor keeps its number");
	actor_send(&a, "release");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok", "the adopted holder lets go");
	rc = coord_pending_wait(p, 10000, &l);
	cr_assert_eq(rc, 1, "granted by the new broker: %s", rc < 0 ? coord_strerror(rc) : "pending");
	cr_assert_eq(coord_release(l), 0, "release");
	actor_stop(&a);
	coord_resource_close(r);
	coord_disconnect(c);
}

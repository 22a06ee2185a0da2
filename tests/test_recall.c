/* Recall: when a conflicting request waits behind a held lease, its holder
 * sees coord_lease_recalled() turn 1 through the shared region, its
 * coord_recall_fd() turns readable, and `coordctl list` shows when the
 * recall was sent. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* ---- the recall descriptor ---- */

static int readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static coord_t *connect_here(void)
{
	coord_t *c;
	int rc = coord_connect(&c, NULL);
	cr_assert_eq(rc, 0, "coord_connect: %s", coord_strerror(rc));
	return c;
}

static coord_lease_t *hold(coord_t *c, const char *res, int mode)
{
	coord_lease_t *l;
	int rc = coord_acquire(c, res, mode, 5000, "test", &l);
	cr_assert_eq(rc, 0, "acquire %s: %s", res, coord_strerror(rc));
	return l;
}

/* A writer actor queued behind us on res. */
static void queue_writer(struct actor *w, const char *res)
{
	actor_start(w, &h);
	actor_send(w, "acquire write 20000 %s", res);
	cr_assert(harness_wait_count(&h, res, COORD_WRITE, 1, 1), "the writer must queue");
}

Test(recall, the_recall_descriptor_wakes_an_event_loop)
{
	const char *res = harness_path(&h, "dash.db");
	coord_t *c = connect_here();
	coord_lease_t *l = hold(c, res, COORD_READ);
	struct actor w;
	const char *r;
	int fd = coord_recall_fd(c);

	cr_assert_geq(fd, 0, "coord_recall_fd: %s", coord_strerror(fd));
	cr_assert_eq(coord_recall_fd(c), fd, "the same descriptor every time");
	cr_assert(!readable(fd, 0), "quiet while nobody waits");
	cr_assert_eq(coord_recall_clear(c), 0, "nothing recalled yet");

	queue_writer(&w, res);
	cr_assert(readable(fd, 5000), "a queued writer must wake the descriptor");
	cr_assert_eq(coord_recall_clear(c), 1, "one lease is recalled");
	cr_assert(!readable(fd, 0), "coord_recall_clear() makes it quiet again");
	cr_assert_eq(coord_lease_recalled(l), 1, "the flag agrees");

	cr_assert_eq(coord_release(l), 0, "release at the safe point");
	r = actor_reply(&w, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the writer is granted: '%s'", r);
	cr_assert_eq(coord_recall_clear(c), 0, "nothing of ours is recalled any more");
	actor_stop(&w);
	coord_disconnect(c);
}

Test(recall, the_recall_descriptor_survives_a_broker_restart)
{
	const char *res = harness_path(&h, "dash.db");
	coord_t *c = connect_here();
	coord_lease_t *l = hold(c, res, COORD_READ);
	struct actor w;
	int fd = coord_recall_fd(c), rc;

	cr_assert_geq(fd, 0, "coord_recall_fd: %s", coord_strerror(fd));
	harness_kill_broker(&h);
	cr_assert(readable(fd, 5000), "the broker's death wakes the descriptor");
	harness_start_broker(&h, NULL);
	rc = coord_recall_clear(c);
	cr_assert_eq(rc, 0, "coord_recall_clear() reconnects; nothing recalled: %s",
	             rc < 0 ? coord_strerror(rc) : "");
	cr_assert(!readable(fd, 0), "then the descriptor is quiet");
	cr_assert_eq(coord_lease_valid(l), 1, "the lease was adopted and re-attached");
	cr_assert_eq(coord_recall_fd(c), fd, "the descriptor keeps its number");

	queue_writer(&w, res);
	cr_assert(readable(fd, 5000), "a recall by the new broker wakes the same descriptor");
	cr_assert_eq(coord_recall_clear(c), 1, "one lease is recalled");
	cr_assert_eq(coord_release(l), 0, "release");
	cr_assert(!strncmp(actor_reply(&w, 5000), "ok", 2), "the writer is granted");
	actor_stop(&w);
	coord_disconnect(c);
}

struct blocked_acquire {
	coord_t *c;
	const char *res;
	int rc;
};

static void *acquire_thread(void *p)
{
	struct blocked_acquire *b = p;
	coord_lease_t *l;
	b->rc = coord_acquire(b->c, b->res, COORD_WRITE, 20000, "thread", &l);
	if (b->rc == 0)
		coord_release(l);
	return NULL;
}

/* One thread waits in coord_acquire() on the connection (holding its
 * socket) while another handles its recalls: the descriptor needs no
 * reading of the socket, and coord_recall_clear() does not wait. */
Test(recall, recalls_reach_an_event_loop_while_another_thread_waits_on_the_connection)
{
	const char *res = harness_path(&h, "dash.db"), *other = "key:busy";
	coord_t *c = connect_here();
	coord_lease_t *l = hold(c, res, COORD_READ);
	struct actor busy, w;
	struct blocked_acquire b = { c, other, 1 };
	pthread_t t;
	int fd = coord_recall_fd(c);
	const char *r;

	cr_assert_geq(fd, 0, "coord_recall_fd: %s", coord_strerror(fd));
	actor_start(&busy, &h);
	actor_send(&busy, "acquire write -1 %s", other);
	r = actor_reply(&busy, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the other resource is held: '%s'", r);
	cr_assert_eq(pthread_create(&t, NULL, acquire_thread, &b), 0, "thread");
	cr_assert(harness_wait_count(&h, other, COORD_WRITE, 1, 1), "the thread must wait");

	queue_writer(&w, res);
	cr_assert(readable(fd, 5000), "the recall wakes the descriptor meanwhile");
	cr_assert_eq(coord_recall_clear(c), 1, "and clears without waiting for the other thread");
	cr_assert_eq(coord_lease_recalled(l), 1, "the flag agrees");

	/* One request at a time per connection (coord.h section 7): the
	 * release waits for the other thread's acquire to end. */
	actor_send(&busy, "release");
	cr_assert_str_eq(actor_reply(&busy, 5000), "ok", "the other holder lets go");
	pthread_join(t, NULL);
	cr_assert_eq(b.rc, 0, "the waiting thread is granted: %s", coord_strerror(b.rc));
	cr_assert_eq(coord_release(l), 0, "release at the safe point");
	cr_assert(!strncmp(actor_reply(&w, 5000), "ok", 2), "the writer is granted");
	actor_stop(&busy);
	actor_stop(&w);
	coord_disconnect(c);
}

/* ---- a dashboard ---- */

/* A dashboard-like child: keeps a read lease between page views, and at
 * the start of each view (one byte on req_fd) lets go if recalled, takes
 * the lease again (waiting its turn behind the writer), serves the view,
 * and answers with 'r' if it released for this view, '.' if not. */
static void dashboard(const char *res, int req_fd, int ans_fd)
{
	coord_t *c;
	coord_lease_t *l;
	char ch;
	if (coord_connect(&c, NULL) < 0 || coord_acquire(c, res, COORD_READ, 5000, "dash", &l) < 0)
		_exit(2);
	while (read(req_fd, &ch, 1) == 1) {
		char said = '.';
		if (coord_lease_recalled(l)) {
			coord_release(l);
			if (coord_acquire(c, res, COORD_READ, 10000, "dash", &l) < 0)
				_exit(3);
			said = 'r';
		}
		/* the page view reads the database here */
		if (write(ans_fd, &said, 1) != 1)
			_exit(4);
	}
	_exit(0);
}

static char view(int req_fd, int ans_fd)
{
	char ch = 0;
	cr_assert_eq(write(req_fd, "v", 1), 1, "request a page view");
	cr_assert_eq(read(ans_fd, &ch, 1), 1, "the dashboard answers");
	return ch;
}

Test(recall, a_dashboard_lets_go_within_one_page_view_after_a_recall)
{
	const char *res = harness_path(&h, "dash.db");
	int req[2], ans[2];
	struct actor w;
	pid_t pid;
	const char *r;

	cr_assert(pipe(req) == 0 && pipe(ans) == 0, "pipes");
	pid = fork();
	cr_assert_geq(pid, 0, "fork");
	if (pid == 0) {
		close(req[1]);
		close(ans[0]);
		dashboard(res, req[0], ans[1]);
	}
	close(req[0]);
	close(ans[1]);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(view(req[1], ans[0]), '.', "views before any recall keep the lease");
	queue_writer(&w, res);
	/* the writer waits, the reader is recalled: the next view lets go, and
	 * is served once the writer is done */
	cr_assert_eq(write(req[1], "v", 1), 1, "request a page view");
	r = actor_reply(&w, 5000);
	cr_assert(!strncmp(r, "ok", 2), "the writer must get in during the first view after the "
	                                "recall: '%s'", r);
	actor_send(&w, "release");
	cr_assert_str_eq(actor_reply(&w, 5000), "ok", "the writer releases");
	{
		char ch = 0;
		cr_assert_eq(read(ans[0], &ch, 1), 1, "the view is served after the writer");
		cr_assert_eq(ch, 'r', "that view released the recalled lease");
	}
	cr_assert_eq(view(req[1], ans[0]), '.', "and the views after it hold the lease again");
	actor_stop(&w); /* it inherited the pipes: the dashboard ends at EOF */
	close(req[1]);
	waitpid(pid, NULL, 0);
}

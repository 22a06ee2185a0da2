/* Listings of any size against a real broker: HOLDERS processes hold
 * COORD_TEST_LIST_LEASES read leases between them (default 100000; more
 * than the 4 MiB a client may have queued, so the broker must stream).
 * `coordctl list --json` is parsed by python3's json and counted,
 * coord_show() of a resource with half of them as holders is counted, and
 * a raw connection that asks for LIST and reads it only after a holder
 * died must get the listing as it was when it asked (docs/design.md,
 * "Protocol": a listing is a snapshot taken at the request). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord.h"
#include "harness.h"

#define HOLDERS 4
#define LEASES_DEFAULT 100000

static struct harness h;
static pid_t holder[HOLDERS];
static int holder_stay[HOLDERS]; /* closing it ends the holder */

static void setup(void)
{
	harness_init(&h);
	harness_start_broker(&h, "--max-leases", "250000", NULL);
}

static void teardown(void)
{
	for (int i = 0; i < HOLDERS; i++) {
		if (holder[i] > 0) {
			kill(holder[i], SIGKILL);
			waitpid(holder[i], NULL, 0);
		}
	}
	harness_fini(&h);
}

/* Generous: under ASan, beside another test, 100,000 acquires have taken
 * over 40 s; alone they take 10. */
TestSuite(list_stream, .init = setup, .fini = teardown, .timeout = 240);

static long leases_wanted(void)
{
	const char *s = getenv("COORD_TEST_LIST_LEASES");
	long n = s ? atol(s) : LEASES_DEFAULT;
	return n >= HOLDERS * 2 ? n - n % HOLDERS : LEASES_DEFAULT;
}

/* Holders 0 and 1 take their leases on key:hot, the others on 1000 keys
 * each; every holder then says "1" on ready_fd and waits for stay_fd to
 * close.  Exits 2 if a step fails. */
static void holder_main(int idx, long n, int ready_fd, int stay_fd)
{
	coord_t *c;
	coord_lease_t *l;
	char name[64], b;
	if (coord_connect(&c, NULL) < 0)
		_exit(2);
	for (long i = 0; i < n; i++) {
		if (idx < 2)
			snprintf(name, sizeof name, "key:hot");
		else
			snprintf(name, sizeof name, "key:k%d-%ld", idx, i % 1000);
		if (coord_acquire(c, name, COORD_READ, -1, "list-stream", &l) < 0)
			_exit(2);
	}
	if (write(ready_fd, "1", 1) != 1)
		_exit(2);
	while (read(stay_fd, &b, 1) > 0)
		;
	_exit(0);
}

static void start_holders(long total)
{
	int ready[2];
	cr_assert(pipe(ready) == 0, "pipe for the holders' ready signal");
	for (int i = 0; i < HOLDERS; i++) {
		int stay[2];
		cr_assert(pipe(stay) == 0, "pipe to keep holder %d", i);
		holder[i] = fork();
		cr_assert(holder[i] >= 0, "fork holder %d", i);
		if (holder[i] == 0) {
			close(ready[0]);
			close(stay[1]);
			holder_main(i, total / HOLDERS, ready[1], stay[0]);
		}
		close(stay[0]);
		holder_stay[i] = stay[1];
	}
	close(ready[1]);
	for (int i = 0; i < HOLDERS; i++) {
		struct pollfd p = { ready[0], POLLIN, 0 };
		char b;
		cr_assert(poll(&p, 1, 180000) == 1 && read(ready[0], &b, 1) == 1,
		          "holder %d of %d did not take its %ld leases within 180 s (see %s/broker.log)",
		          i, HOLDERS, total / HOLDERS, h.dir);
	}
	close(ready[0]);
}

static long broker_leases(void)
{
	coord_t *c;
	coord_status_t s;
	int rc = coord_connect(&c, NULL);
	cr_assert_eq(rc, 0, "connect for status: %s", coord_strerror(rc));
	rc = coord_status(c, &s);
	coord_disconnect(c);
	cr_assert_eq(rc, 0, "coord_status: %s", coord_strerror(rc));
	return (long)s.leases;
}

struct leases_at {
	long want;
};

static int leases_are(void *arg)
{
	return broker_leases() == ((struct leases_at *)arg)->want;
}

Test(list_stream, every_lease_listed_and_shown)
{
	long total = leases_wanted(), per = total / HOLDERS, got, unique, waiters;
	char out[4096];
	int st;
	start_holders(total);
	cr_assert_eq(broker_leases(), total, "the broker must count the %ld leases taken", total);

	/* coordctl list --json, parsed by python's json. */
	st = harness_coordctl(out, sizeof out,
	                      "list --json | /usr/bin/python3 -c 'import json,sys; "
	                      "d=json.load(sys.stdin); l=d[\"leases\"]; "
	                      "print(len(l), len(set(e[\"id\"] for e in l)), len(d[\"waiters\"]))'");
	cr_assert_eq(st, 0, "coordctl list --json | python3 failed (exit %d): %s", st, out);
	cr_assert_eq(sscanf(out, "%ld %ld %ld", &got, &unique, &waiters), 3,
	             "python3 printed no counts: %s", out);
	cr_assert_eq(got, total, "coordctl list --json listed %ld leases of %ld", got, total);
	cr_assert_eq(unique, total, "coordctl list --json listed %ld distinct ids of %ld", unique,
	             total);
	cr_assert_eq(waiters, 0, "nobody waits, yet %ld waiters were listed", waiters);

	/* SHOW of the one resource that half of them hold. */
	{
		coord_t *c;
		coord_resource_info_t info;
		coord_lease_info_t *v = NULL;
		size_t n = 0;
		int rc = coord_connect(&c, NULL);
		cr_assert_eq(rc, 0, "connect for show: %s", coord_strerror(rc));
		rc = coord_show(c, "key:hot", &info, &v, &n);
		coord_disconnect(c);
		cr_assert_eq(rc, 0, "coord_show(key:hot) with %ld holders: %s", 2 * per,
		             coord_strerror(rc));
		cr_assert_eq((long)n, 2 * per, "coord_show(key:hot) gave %zu leases of %ld", n, 2 * per);
		cr_assert_eq((long)info.holders, 2 * per, "key:hot reports %llu holders of %ld",
		             (unsigned long long)info.holders, 2 * per);
		coord_free(v);
	}
}

/* Reads LEASE_INFO and LEASE_INFOS messages of seq from fd until END;
 * returns how many leases they carry, or -1 if the connection ends first
 * or something else comes. */
static long count_listing(int fd, uint32_t seq)
{
	union {
		coord_msg_hdr h;
		coord_msg_lease_infos p;
		char raw[COORD_MSG_MAX];
	} m;
	long n = 0;
	for (;;) {
		ssize_t r = recv(fd, &m, sizeof m, 0);
		if (r < (ssize_t)sizeof m.h || m.h.seq != seq)
			return -1;
		if (m.h.type == COORD_MSG_END)
			return n;
		if (m.h.type == COORD_MSG_LEASE_INFOS && r >= (ssize_t)sizeof m.p)
			n += m.p.count;
		else if (m.h.type == COORD_MSG_LEASE_INFO)
			n++;
		else
			return -1;
	}
}

Test(list_stream, slow_reader_gets_the_snapshot_of_its_request)
{
	long total = leases_wanted(), per = total / HOLDERS;
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
	coord_msg_hdr list = { COORD_MSG_LIST, 2 };
	coord_msg_welcome w;
	struct pollfd p;
	struct leases_at left = { total - per };
	int fd;
	long n;
	start_holders(total);
	fd = harness_dial(h.dir);
	cr_assert(fd >= 0, "dial the broker");
	cr_assert_eq(send(fd, &hello, sizeof hello, 0), (ssize_t)sizeof hello, "send HELLO");
	cr_assert_eq(recv(fd, &w, sizeof w, 0), (ssize_t)sizeof w, "read WELCOME");
	cr_assert_eq(w.status, 0, "WELCOME status %d", w.status);
	cr_assert_eq(send(fd, &list, sizeof list, 0), (ssize_t)sizeof list, "send LIST");
	/* The first message is there: the snapshot is taken.  Now a holder
	 * dies while the listing waits for us to read it. */
	p = (struct pollfd){ fd, POLLIN, 0 };
	cr_assert_eq(poll(&p, 1, 10000), 1, "no LIST answer within 10 s");
	kill(holder[HOLDERS - 1], SIGKILL);
	waitpid(holder[HOLDERS - 1], NULL, 0);
	holder[HOLDERS - 1] = 0;
	cr_assert(harness_wait(leases_are, &left, 20000),
	          "the broker did not reclaim the dead holder's %ld leases (%ld left, want %ld)", per,
	          broker_leases(), left.want);
	n = count_listing(fd, 2);
	close(fd);
	cr_assert_eq(n, total,
	             "a LIST read after %ld of its leases were reclaimed must list the %ld held at "
	             "the request; it listed %ld (-1: dropped or broken)",
	             per, total, n);
}

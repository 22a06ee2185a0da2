/* Integration tests against a real coordd started in a private directory:
 * the client library's promises (exclusion, FIFO, timeouts, tokens,
 * validity without system calls), autostart, restarts, and a broker that
 * shrugs off hostile clients. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

HARNESS_SUITE(broker, 60);

static coord_t *connect_ok(void)
{
	coord_t *c = NULL;
	int rc = coord_connect(&c, NULL);
	cr_assert_eq(rc, 0, "coord_connect to %s failed: %s", h.dir, coord_strerror(rc));
	return c;
}

Test(broker, acquire_valid_release)
{
	coord_t *c = connect_ok();
	coord_lease_t *l = NULL;
	int rc = coord_acquire(c, harness_path(&h, "app.db"), COORD_WRITE, 1000, "unit", &l);
	cr_assert_eq(rc, 0, "write acquire on an idle resource failed: %s", coord_strerror(rc));
	cr_assert_gt(coord_lease_token(l), 0, "a write lease must carry a token > 0");
	cr_assert_eq(coord_lease_valid(l), 1, "a fresh lease must read as valid from shared memory");
	cr_assert_eq(harness_count(&h, harness_path(&h, "app.db"), COORD_WRITE, 0), 1,
	             "the broker's list must show the writer");
	cr_assert_eq(coord_release(l), 0, "release failed");
	cr_assert_eq(harness_count(&h, harness_path(&h, "app.db"), 0, 0), 0, "lease leaked");
	coord_disconnect(c);
}

Test(broker, writer_blocks_reader_until_release)
{
	struct actor w, r;
	const char *res = harness_path(&h, "x.db");
	/* once the broker has queued the reader, check it waits */
	actor_writer_then_reader(&h, &w, &r, res);
	cr_assert(!actor_has_reply(&r), "the reader was answered while the writer holds");
	actor_send(&w, "release");
	cr_assert_str_eq(actor_reply(&w, 5000), "ok", "release failed");
	cr_assert_str_eq(actor_reply(&r, 5000), "ok 1", "reader not granted after the release");
	actor_stop(&w);
	actor_stop(&r);
}

Test(broker, timeout_and_try_once)
{
	struct actor w, r;
	const char *res = harness_path(&h, "t.db");
	actor_start(&w, &h);
	actor_start(&r, &h);
	actor_send(&w, "acquire write -1 %s", res);
	cr_assert_str_eq(actor_reply(&w, 5000), "ok 1", "writer must be granted");
	actor_send(&r, "acquire read 0 %s", res);
	cr_assert_str_eq(actor_reply(&r, 5000), "err COORD_EBUSY", "timeout 0 must fail at once");
	actor_send(&r, "acquire read 150 %s", res);
	cr_assert_str_eq(actor_reply(&r, 5000), "err COORD_ETIMEDOUT", "a timed wait must time out");
	cr_assert_eq(harness_count(&h, res, 0, 1), 0, "a timed-out waiter stayed queued");
	actor_send(&w, "release");
	actor_reply(&w, 5000);
	actor_send(&r, "acquire write 0 %s", res);
	cr_assert_str_eq(actor_reply(&r, 5000), "ok 2",
	                 "after the timeout the resource must be grantable, with token 2");
	actor_stop(&w);
	actor_stop(&r);
}

Test(broker, self_deadlock_is_an_error)
{
	coord_t *c = connect_ok();
	coord_lease_t *r1, *r2, *w;
	const char *res = harness_path(&h, "d.db");
	cr_assert_eq(coord_acquire(c, res, COORD_READ, -1, NULL, &r1), 0, "read");
	cr_assert_eq(coord_acquire(c, res, COORD_WRITE, -1, NULL, &w), COORD_EDEADLK,
	             "write on a held read must be COORD_EDEADLK, not a hang");
	cr_assert_eq(coord_acquire(c, res, COORD_READ, -1, NULL, &r2), 0, "a nested read is granted");
	coord_release(r2);
	coord_release(r1);
	coord_disconnect(c);
}

Test(broker, tokens_survive_restart_and_leases_are_adopted)
{
	coord_t *c = connect_ok();
	coord_lease_t *l;
	uint64_t t1;
	const char *res = harness_path(&h, "tok.db");
	cr_assert_eq(coord_acquire(c, res, COORD_WRITE, -1, NULL, &l), 0, "write");
	t1 = coord_lease_token(l);
	harness_kill_broker(&h);
	cr_assert_eq(coord_lease_valid(l), 1,
	             "with no broker nobody can be granted a conflict: the lease still reads valid");
	harness_start_broker(&h, NULL);
	cr_assert_eq(coord_lease_valid(l), 1,
	             "a new broker must adopt the lease of a live holder and keep its slot");
	cr_assert_eq(coord_release(l), 0,
	             "the release of an adopted lease reconnects and must succeed");
	cr_assert(harness_wait_count(&h, res, 0, 0, 0), "the adopted lease must be released");
	cr_assert_eq(coord_acquire(c, res, COORD_WRITE, -1, NULL, &l), 0, "write after restart");
	cr_assert_gt(coord_lease_token(l), t1, "token went backwards across a restart: %llu <= %llu",
	             (unsigned long long)coord_lease_token(l), (unsigned long long)t1);
	coord_release(l);
	coord_disconnect(c);
}

Test(broker, sigterm_shuts_down_cleanly)
{
	coord_t *c = connect_ok();
	coord_lease_t *l;
	cr_assert_eq(coord_acquire(c, "key:job-key", COORD_WRITE, -1, NULL, &l), 0, "write");
	int st = harness_stop_broker(&h);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM must end coordd with status 0 (%d)",
	          st);
	cr_assert_eq(coord_lease_valid(l), 1,
	             "a clean shutdown (an upgrade) must leave the leases for the next broker");
	cr_assert_eq(access(harness_path(&h, COORD_SOCKET_NAME), F_OK), -1,
	             "a clean shutdown must remove the socket");
	coord_release(l);
	coord_disconnect(c);
}

static int raw_socket(void)
{
	int fd = harness_dial(h.dir);
	cr_assert_geq(fd, 0, "raw connect to the broker socket in %s failed: %s", h.dir,
	              strerror(errno));
	return fd;
}

static int closed_by_broker(int fd)
{
	char buf[64];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1)
		return 0;
	while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
		;
	return recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 0;
}

Test(broker, hostile_clients_do_not_hurt_others)
{
	coord_t *c = connect_ok();
	coord_lease_t *l;
	const char *res = harness_path(&h, "safe.db");
	unsigned seed = 7;
	cr_assert_eq(coord_acquire(c, res, COORD_WRITE, -1, NULL, &l), 0, "write");

	/* garbage before HELLO */
	int fd = raw_socket();
	char junk[300];
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (char)rand_r(&seed);
	cr_assert_eq(send(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk, "send junk");
	cr_assert(closed_by_broker(fd), "garbage must get the connection closed");
	close(fd);

	/* a valid HELLO, then a release of someone else's lease id, then junk */
	fd = raw_socket();
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
	send(fd, &hello, sizeof hello, 0);
	char buf[COORD_MSG_MAX];
	cr_assert_gt(recv(fd, buf, sizeof buf, 0), 0, "no welcome");
	coord_msg_release rel = { { COORD_MSG_RELEASE, 2 }, coord_lease_id(l), 0, 0 };
	send(fd, &rel, sizeof rel, 0);
	cr_assert_gt(recv(fd, buf, sizeof buf, 0), 0, "no reply to a foreign release");
	cr_assert_eq(((coord_msg_reply *)buf)->status, COORD_ENOLEASE,
	             "releasing another client's lease must fail with COORD_ENOLEASE");
	coord_msg_acquire bad = { { COORD_MSG_ACQUIRE, 3 }, COORD_WRITE, -1, 4000, 0, 0 };
	send(fd, &bad, sizeof bad, 0); /* claims 4000 name bytes, has none */
	cr_assert(closed_by_broker(fd), "a lying length must get the connection closed");
	close(fd);

	cr_assert_eq(coord_lease_valid(l), 1, "another client's lease was touched");
	cr_assert_eq(harness_count(&h, res, COORD_WRITE, 0), 1, "the writer vanished from the table");
	cr_assert_eq(coord_release(l), 0, "the victim's release must still work");
	coord_disconnect(c);
}

Test(broker, random_packets_never_take_the_broker_down)
{
	coord_t *c = connect_ok();
	coord_lease_t *l;
	const char *res = harness_path(&h, "fuzz.db");
	unsigned seed = 2024;
	char buf[COORD_MSG_MAX + 64];
	cr_assert_eq(coord_acquire(c, res, COORD_WRITE, -1, NULL, &l), 0, "write");
	for (int conn = 0; conn < 200; conn++) {
		int fd = raw_socket();
		coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
		if (conn % 2)
			send(fd, &hello, sizeof hello, 0);
		for (int i = 0; i < 20; i++) {
			size_t len = (size_t)(rand_r(&seed) % (int)sizeof buf);
			for (size_t k = 0; k < len; k++)
				buf[k] = (char)rand_r(&seed);
			/* a valid type half of the time, so decoding goes deep */
			if (len >= sizeof(coord_msg_hdr) && rand_r(&seed) % 2) {
				uint32_t type = 1 + (uint32_t)(rand_r(&seed) % 8);
				memcpy(buf, &type, sizeof type);
			}
			if (send(fd, buf, len, MSG_NOSIGNAL) < 0)
				break; /* the broker closed us: fine */
		}
		close(fd);
	}
	cr_assert_eq(coord_lease_valid(l), 1, "the fuzzing touched another client's lease");
	coord_lease_t *l2;
	coord_t *c2 = connect_ok();
	cr_assert_eq(coord_acquire(c2, res, COORD_READ, 0, NULL, &l2), COORD_EBUSY,
	             "after the fuzzing the broker must still enforce the writer's lease");
	coord_release(l);
	cr_assert_eq(coord_acquire(c2, res, COORD_READ, 2000, NULL, &l2), 0,
	             "after the fuzzing the broker must still grant");
	coord_release(l2);
	coord_disconnect(c2);
	coord_disconnect(c);
}

static int autostart_child(const char *dir)
{
	coord_t *c;
	coord_options_t o = { .dir = dir };
	int rc = coord_connect(&c, &o);
	if (rc < 0)
		return 100;
	coord_disconnect(c);
	return 0;
}

/* Processes whose command line ends in "--dir DIR". */
static int count_brokers(const char *dir)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;
	while (d && (e = readdir(d))) {
		char buf[4096];
		ssize_t len;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		len = harness_read_proc(atol(e->d_name), "cmdline", buf, sizeof buf);
		if (len < 0)
			continue;
		/* cmdline is NUL-separated: look for "--dir\0DIR\0" */
		for (ssize_t i = 0; i + 6 < len; i++) {
			if (!memcmp(buf + i, "--dir", 6) && !strcmp(buf + i + 6, dir)) {
				n++;
				break;
			}
		}
	}
	if (d)
		closedir(d);
	return n;
}

static int one_broker(void *dir)
{
	return count_brokers(dir) == 1;
}

Test(broker, concurrent_autostart_yields_one_broker)
{
	char dir[300], lock[400];
	pid_t kids[8];
	FILE *f;
	int broker_pid = 0;
	harness_stop_broker(&h);
	snprintf(dir, sizeof dir, "%s/auto", h.dir);
	unsetenv("COORD_NO_AUTOSTART");
	for (int i = 0; i < 8; i++) {
		kids[i] = fork();
		if (kids[i] == 0)
			_exit(autostart_child(dir));
	}
	for (int i = 0; i < 8; i++) {
		int st;
		waitpid(kids[i], &st, 0);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		          "client %d could not connect through autostart (status %d)", i, st);
	}
	snprintf(lock, sizeof lock, "%s/coordd.lock", dir);
	f = fopen(lock, "r");
	cr_assert(f, "autostart left no lock file");
	cr_assert_eq(fscanf(f, "%d", &broker_pid), 1, "lock file holds no pid");
	fclose(f);
	/* the losers exit right after telling their launcher; wait for that */
	cr_assert(harness_wait(one_broker, dir, 5000), "expected exactly one broker for %s, found %d",
	          dir, count_brokers(dir));
	kill(broker_pid, SIGTERM);
	setenv("COORD_NO_AUTOSTART", "1", 1);
}

/* A release sends no answer.  A try-once request the same process sends
 * right after it on another connection (another thread) must see the
 * resource free: the broker decides a try-once refusal only after the
 * whole batch of events it read with the request. */
Test(broker, a_try_once_after_a_release_on_another_connection_is_granted)
{
	coord_t *a = connect_ok(), *b = connect_ok();
	coord_resource_t *ra, *rb;
	int busy = 0;
	cr_assert_eq(coord_resource_open(a, "key:order", &ra), 0, "open");
	cr_assert_eq(coord_resource_open(b, "key:order", &rb), 0, "open");
	for (int i = 0; i < 300; i++) {
		coord_lease_t *l, *m;
		cr_assert_eq(coord_resource_acquire(ra, COORD_WRITE, 1000, NULL, &l), 0, "a's lease");
		coord_release(l);
		if (coord_resource_acquire(rb, COORD_WRITE, 0, NULL, &m) == 0)
			coord_release(m);
		else
			busy++;
		/* b's release must reach the broker before a's next request is
		 * read, for the same reason: a's next acquire waits for it */
	}
	cr_assert_eq(busy, 0, "%d of 300 try-once requests saw a lease released before them", busy);
	coord_resource_close(ra);
	coord_resource_close(rb);
	coord_disconnect(a);
	coord_disconnect(b);
}

/* Lists over a raw connection that said HELLO with `version`: returns how
 * many LEASE_INFO came alone and, in *packed, how many came in
 * LEASE_INFOS records; -1 if the listing broke. */
static long raw_list(int version, long *packed)
{
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, (uint32_t)version, 0 };
	coord_msg_hdr list = { COORD_MSG_LIST, 2 };
	union {
		coord_msg_hdr h;
		coord_msg_welcome w;
		coord_msg_lease_infos p;
		char raw[COORD_MSG_MAX];
	} m;
	long alone = 0;
	int fd = raw_socket();
	*packed = 0;
	cr_assert_eq(send(fd, &hello, sizeof hello, 0), (ssize_t)sizeof hello, "send HELLO");
	cr_assert_eq(recv(fd, &m, sizeof m, 0), (ssize_t)sizeof m.w, "no WELCOME");
	cr_assert_eq(m.w.status, 0, "HELLO version %d refused: %d", version, m.w.status);
	cr_assert_eq(m.w.version, (uint32_t)version, "WELCOME names version %u for HELLO %d",
	             m.w.version, version);
	cr_assert_eq(send(fd, &list, sizeof list, 0), (ssize_t)sizeof list, "send LIST");
	for (;;) {
		ssize_t r = recv(fd, &m, sizeof m, 0);
		if (r < (ssize_t)sizeof m.h || m.h.seq != 2) {
			alone = -1;
			break;
		}
		if (m.h.type == COORD_MSG_END)
			break;
		if (m.h.type == COORD_MSG_LEASE_INFO)
			alone++;
		else if (m.h.type == COORD_MSG_LEASE_INFOS && r >= (ssize_t)sizeof m.p)
			*packed += m.p.count;
		else {
			alone = -1;
			break;
		}
	}
	close(fd);
	return alone;
}

/* A program built with the previous coord.h (protocol 6) still gets
 * served, its listings one LEASE_INFO per packet as it expects; protocol
 * 7 gets them packed; versions outside the range are refused. */
Test(broker, older_protocol_versions_are_served_in_their_own_format)
{
	coord_t *c = connect_ok();
	coord_lease_t *l[40];
	coord_lease_info_t *v = NULL;
	size_t n = 0;
	long packed, alone;
	char name[32];
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof name, "key:v%d", i);
		cr_assert_eq(coord_acquire(c, name, COORD_WRITE, -1, NULL, &l[i]), 0, "write %s", name);
	}
	alone = raw_list(COORD_PROTO_VERSION_MIN, &packed);
	cr_assert_eq(alone, 40, "protocol %d: %ld LEASE_INFO alone, want 40", COORD_PROTO_VERSION_MIN,
	             alone);
	cr_assert_eq(packed, 0, "protocol %d got %ld packed records", COORD_PROTO_VERSION_MIN, packed);
	alone = raw_list(COORD_PROTO_VERSION, &packed);
	cr_assert_eq(alone, 0, "protocol %d: %ld LEASE_INFO alone, want 0", COORD_PROTO_VERSION, alone);
	cr_assert_eq(packed, 40, "protocol %d: %ld packed records, want 40", COORD_PROTO_VERSION,
	             packed);
	/* and the library reads them back whole */
	cr_assert_eq(coord_list(c, &v, &n), 0, "coord_list");
	cr_assert_eq(n, 40, "coord_list gave %zu of 40", n);
	for (size_t i = 0; i < n; i++)
		cr_assert(!strncmp(v[i].resource, "key:v", 5) && v[i].mode == COORD_WRITE &&
		                  v[i].lease_id && v[i].pid == (uint64_t)getpid(),
		          "entry %zu is %s mode %d", i, v[i].resource, v[i].mode);
	coord_free(v);
	for (int version = COORD_PROTO_VERSION_MIN - 1; version <= COORD_PROTO_VERSION + 1;
	     version += COORD_PROTO_VERSION - COORD_PROTO_VERSION_MIN + 2) {
		coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, (uint32_t)version, 0 };
		coord_msg_welcome w;
		int fd = raw_socket();
		send(fd, &hello, sizeof hello, 0);
		cr_assert_eq(recv(fd, &w, sizeof w, 0), (ssize_t)sizeof w, "no WELCOME for %d", version);
		cr_assert_eq(w.status, COORD_EPROTO, "HELLO version %d: status %d", version, w.status);
		cr_assert(closed_by_broker(fd), "version %d: connection kept", version);
		close(fd);
	}
	for (int i = 0; i < 40; i++)
		coord_release(l[i]);
	coord_disconnect(c);
}

struct each_count {
	long n, stop_at;
	int bad;
};

static int count_each(const coord_lease_info_t *e, void *ud)
{
	struct each_count *k = ud;
	if (strncmp(e->resource, "key:e", 5) || e->mode != COORD_READ)
		k->bad++;
	return ++k->n == k->stop_at ? 42 : 0;
}

/* coord_list_each() sees every lease once, and a stop leaves the
 * connection in step: the next request gets its own answer. */
Test(broker, list_each_streams_and_stops_cleanly)
{
	coord_t *c = connect_ok();
	coord_lease_t *l[300];
	struct each_count k = { 0, 0, 0 };
	coord_status_t st;
	char name[32];
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "key:e%d", i);
		cr_assert_eq(coord_acquire(c, name, COORD_READ, -1, NULL, &l[i]), 0, "read %s", name);
	}
	cr_assert_eq(coord_list_each(c, count_each, &k), 0, "coord_list_each");
	cr_assert_eq(k.n, 300, "coord_list_each called %ld times for 300 leases", k.n);
	cr_assert_eq(k.bad, 0, "%d entries were wrong", k.bad);
	k = (struct each_count){ 0, 10, 0 };
	cr_assert_eq(coord_list_each(c, count_each, &k), 42, "a stop must return fn's value");
	cr_assert_eq(k.n, 10, "called %ld times after asking to stop at 10", k.n);
	cr_assert_eq(coord_status(c, &st), 0, "status after a stopped listing");
	cr_assert_eq(st.leases, 300, "status says %llu leases", (unsigned long long)st.leases);
	cr_assert_eq(coord_list_each(c, NULL, NULL), COORD_EINVAL, "no fn");
	for (int i = 0; i < 300; i++)
		coord_release(l[i]);
	coord_disconnect(c);
}

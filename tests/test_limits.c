/* Integration tests of a broker at its limits: --max-clients, the
 * descriptor limit it plans for at start, and running out of descriptors
 * anyway (its limit lowered under it with prlimit()).  A refused client
 * must get COORD_ELIMIT at once, never hang; connected clients and held
 * leases must not notice; the broker must log each limit once per interval
 * with a count, never once per attempt, and must never spin. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* Each test starts its own broker, with its own limits. */
static struct harness h;

static void limits_setup(void)
{
	harness_init(&h);
}

static void limits_teardown(void)
{
	harness_fini(&h);
}

TestSuite(limits, .init = limits_setup, .fini = limits_teardown, .timeout = 90);

enum {
	REFUSALS = 20,       /* refused connections each test makes */
	MAX_CROWD = 200,     /* most clients a test connects before a refusal */
	REFUSE_WAIT_MS = 5000,
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* coord_connect() to the test's broker, waiting at most timeout_ms. */
static int dial(coord_t **c, int timeout_ms)
{
	coord_options_t o = { .dir = h.dir, .no_autostart = 1, .connect_timeout_ms = timeout_ms };
	*c = NULL;
	return coord_connect(c, &o);
}

/* ---- the broker's log (its stderr, DIR/broker.log) ---- */

/* The log, malloc'ed (at most its first 8 MiB: a spinning broker writes
 * far more). */
static char *read_log(void)
{
	size_t cap = 8u << 20, n = 0;
	char *buf = malloc(cap + 1);
	FILE *f = fopen(harness_path(&h, "broker.log"), "re");
	cr_assert(buf && f, "cannot read the broker's log %s", harness_path(&h, "broker.log"));
	n = fread(buf, 1, cap, f);
	fclose(f);
	buf[n] = 0;
	return buf;
}

/* What the log says about one condition: the lines of `event` that hold
 * `match`, the sum of their `count_key` fields, and the shortest time
 * between two of them. */
struct log_lines {
	int lines;
	long long count;
	int64_t min_gap_ms;  /* -1 with fewer than two lines */
	int accept_errors;   /* "event=error op=accept" lines, of any condition */
};

static struct log_lines scan_log(const char *event, const char *match, const char *count_key)
{
	struct log_lines r = { 0, 0, -1, 0 };
	char ev[64];
	char *log = read_log(), *line = log;
	int64_t last = 0;
	snprintf(ev, sizeof ev, " event=%s ", event);
	while (*line) {
		char *end = strchr(line, '\n');
		if (end)
			*end = 0;
		if (strstr(line, " event=error op=accept"))
			r.accept_errors++;
		if (strstr(line, ev) && strstr(line, match)) {
			int64_t t = harness_log_ms(line);
			if (r.lines && (r.min_gap_ms < 0 || t - last < r.min_gap_ms))
				r.min_gap_ms = t - last;
			last = t;
			r.lines++;
			if (harness_log_field(line, count_key) > 0)
				r.count += harness_log_field(line, count_key);
		}
		line = end ? end + 1 : line + strlen(line);
	}
	free(log);
	return r;
}

struct count_want {
	const char *event, *match, *count_key;
	long long want;
};

static int count_reached(void *p)
{
	struct count_want *w = p;
	return scan_log(w->event, w->match, w->count_key).count >= w->want;
}

/* The value of KEY= in the broker's start line, or -1. */
static long long start_field(const char *key)
{
	char *log = read_log();
	char *line = strstr(log, " event=start ");
	char *end = line ? strchr(line, '\n') : NULL;
	long long v;
	cr_assert(line && end, "the broker's log has no start line:\n%s", log);
	*end = 0;
	v = harness_log_field(line, key);
	free(log);
	return v;
}

/* The lines of one condition are a second or more apart, and no accept()
 * failure was logged as a plain error (once per attempt). */
static void assert_log_spacing(const char *event, const char *match)
{
	struct log_lines r = scan_log(event, match, "");
	/* The broker measures its second on the monotonic clock; the log's
	 * wall-clock milliseconds are truncated, hence the few ms of slack. */
	cr_assert(r.lines < 2 || r.min_gap_ms >= 990,
	          "two '%s %s' lines only %lld ms apart: a limit must be logged at most once a "
	          "second",
	          event, match, (long long)r.min_gap_ms);
	cr_assert_eq(r.accept_errors, 0,
	             "the broker logged %d 'error op=accept' lines: accept() failures must end "
	             "in a refusal or a paused socket, never be retried and logged per attempt",
	             r.accept_errors);
}

/* Every one of `times` refusals is counted, on fewer lines than refusals,
 * a second or more apart. */
static void assert_refusals_logged(const char *match, long long times)
{
	struct count_want w = { "refuse-client", match, "refused", times };
	struct log_lines r;
	cr_assert(harness_wait(count_reached, &w, REFUSE_WAIT_MS),
	          "the broker's 'refuse-client %s' lines must add up to refused=%lld within %d ms "
	          "(the count of the last interval is logged when it ends); they add up to %lld",
	          match, times, REFUSE_WAIT_MS, scan_log("refuse-client", match, "refused").count);
	r = scan_log("refuse-client", match, "refused");
	cr_assert_eq(r.count, times, "the 'refuse-client %s' lines count %lld refusals, not %lld",
	             match, r.count, times);
	cr_assert_lt(r.lines, times,
	             "'refuse-client %s' was logged on %d lines for %lld refusals: once per "
	             "attempt, not once per interval",
	             match, r.lines, times);
	assert_log_spacing("refuse-client", match);
}

/* ---- what connected clients must keep having ---- */

/* `holder` holds a write lease on limits-held; `other` is connected too. */
struct crowd {
	coord_t *holder, *other;
	coord_lease_t *held;
	coord_t *extra[MAX_CROWD];
	int n_extra;
};

static void crowd_start(struct crowd *cw)
{
	int rc;
	memset(cw, 0, sizeof *cw);
	rc = dial(&cw->holder, 5000);
	cr_assert_eq(rc, 0, "the first client could not connect: %s", coord_strerror(rc));
	rc = coord_acquire(cw->holder, "key:limits-held", COORD_WRITE, 0, "limits", &cw->held);
	cr_assert_eq(rc, 0, "the first client could not take limits-held: %s", coord_strerror(rc));
	rc = dial(&cw->other, 5000);
	cr_assert_eq(rc, 0, "the second client could not connect: %s", coord_strerror(rc));
}

struct clients_want {
	coord_t *c;
	uint64_t want, got;
};

static int clients_counted(void *p)
{
	struct clients_want *w = p;
	coord_status_t st;
	if (coord_status(w->c, &st) < 0)
		return 0;
	w->got = st.clients;
	return st.clients == w->want;
}

/* The clients connected before the limit was hit still get served. */
static void assert_crowd_served(struct crowd *cw, const char *when)
{
	struct clients_want w = { cw->other, (uint64_t)(2 + cw->n_extra), 0 };
	coord_lease_t *l = NULL;
	coord_status_t st;
	int rc;
	cr_assert_eq(coord_lease_valid(cw->held), 1,
	             "%s: the lease held since before the limit must stay valid", when);
	rc = coord_acquire(cw->other, "key:limits-other", COORD_WRITE, 1000, "limits", &l);
	cr_assert_eq(rc, 0, "%s: a connected client must still be granted a free resource: %s",
	             when, coord_strerror(rc));
	cr_assert_eq(coord_release(l), 0, "%s: a connected client must still release", when);
	rc = coord_acquire(cw->other, "key:limits-held", COORD_WRITE, 0, "limits", &l);
	cr_assert_eq(rc, COORD_EBUSY, "%s: limits-held must still be held by the first client: %s",
	             when, coord_strerror(rc));
	rc = coord_status(cw->other, &st);
	cr_assert_eq(rc, 0, "%s: a connected client's status request must be answered: %s", when,
	             coord_strerror(rc));
	/* A client that just hung up is counted until the broker reads the
	 * hang-up, hence the wait. */
	cr_assert(harness_wait(clients_counted, &w, 5000),
	          "%s: the broker must count the %llu connected clients and none of the refused "
	          "ones; it counts %llu",
	          when, (unsigned long long)w.want, (unsigned long long)w.got);
}

static void crowd_end(struct crowd *cw)
{
	for (int i = 0; i < cw->n_extra; i++)
		coord_disconnect(cw->extra[i]);
	coord_release(cw->held);
	coord_disconnect(cw->holder);
	coord_disconnect(cw->other);
}

/* Connects clients until one is refused, then REFUSALS - 1 more; every
 * refusal must be COORD_ELIMIT, well before the connect timeout. */
static void crowd_fill_until_refused(struct crowd *cw)
{
	coord_t *c;
	int rc;
	while ((rc = dial(&c, 5000)) == 0) {
		cr_assert_lt(cw->n_extra, MAX_CROWD,
		             "the broker accepted %d clients and refused none: it ignores its limit",
		             2 + MAX_CROWD);
		cw->extra[cw->n_extra++] = c;
	}
	for (int i = 0; i < REFUSALS; i++) {
		if (i > 0)
			rc = dial(&c, 5000);
		cr_assert_eq(rc, COORD_ELIMIT,
		             "refused connection %d (after %d connected) must fail with COORD_ELIMIT, "
		             "got %s%s",
		             i + 1, 2 + cw->n_extra, coord_errname(rc),
		             rc == COORD_ETIMEDOUT ? ": the broker left it hanging instead of refusing "
		                                     "it" : "");
	}
}

static int can_connect(void *arg)
{
	coord_t *c;
	(void)arg;
	if (dial(&c, 1000) < 0)
		return 0;
	coord_disconnect(c);
	return 1;
}

/* Once a client leaves, a new one gets in. */
static void assert_room_after_leaving(struct crowd *cw)
{
	cr_assert_gt(cw->n_extra, 0, "the broker let in no client besides the first two");
	coord_disconnect(cw->extra[--cw->n_extra]);
	cr_assert(harness_wait(can_connect, NULL, 10000),
	          "once a client left, a new one must be accepted again (see %s)",
	          harness_path(&h, "broker.log"));
}

/* ---- the broker process ---- */

/* The broker's user + system CPU time in clock ticks. */
static long long broker_cpu_ticks(void)
{
	char buf[2048];
	const char *p;
	unsigned long long utime, stime;
	cr_assert(harness_read_proc(h.broker, "stat", buf, sizeof buf) > 0,
	          "cannot read /proc/%d/stat of the broker", (int)h.broker);
	/* fields 14 and 15, after "pid (comm) state" and 10 more */
	p = strrchr(buf, ')');
	cr_assert(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
	                      &utime, &stime) == 2,
	          "cannot parse /proc/%d/stat: %s", (int)h.broker, buf);
	return (long long)(utime + stime);
}

/* The highest descriptor number the broker has open. */
static long broker_top_fd(void)
{
	char path[64];
	struct dirent *e;
	long top = -1;
	DIR *d;
	snprintf(path, sizeof path, "/proc/%d/fd", (int)h.broker);
	d = opendir(path);
	cr_assert(d, "cannot list %s: %s", path, strerror(errno));
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && atol(e->d_name) > top)
			top = atol(e->d_name);
	closedir(d);
	return top;
}

/* Sets the running broker's soft RLIMIT_NOFILE (0: to its hard one). */
static void set_broker_nofile(rlim_t soft)
{
	struct rlimit rl;
	cr_assert(prlimit(h.broker, RLIMIT_NOFILE, NULL, &rl) == 0,
	          "cannot read the broker's descriptor limit: %s", strerror(errno));
	rl.rlim_cur = soft ? soft : rl.rlim_max;
	cr_assert(prlimit(h.broker, RLIMIT_NOFILE, &rl, NULL) == 0,
	          "cannot set the broker's descriptor limit to %llu: %s", (unsigned long long)soft,
	          strerror(errno));
}

/* ---- the tests ---- */

/* Arrays, not pointers: Criterion copies the parameters into the test's
 * own process, where the parent's addresses mean nothing. */
struct limit_case {
	char name[64];
	unsigned long nofile;    /* the broker's RLIMIT_NOFILE at start; 0: ours */
	char max_clients[8];     /* --max-clients, or "" */
	int squeeze;             /* lower the running broker's limit to what it
	                            uses now plus one client */
	char reason[64];         /* in the refuse-client lines */
};

ParameterizedTestParameters(limits, refused_with_elimit_and_logged_once_per_second)
{
	static struct limit_case cases[] = {
		{ "--max-clients 3", 0, "3", 0, "reason=max-clients max_clients=3" },
		{ "max-clients planned from RLIMIT_NOFILE 96", 96, "", 0, "reason=max-clients" },
		{ "out of descriptors", 96, "", 1, "reason=out-of-fds" },
	};
	return cr_make_param_array(struct limit_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct limit_case *lc, limits, refused_with_elimit_and_logged_once_per_second)
{
	struct crowd cw;
	if (lc->max_clients[0])
		harness_start_broker_nofile(&h, lc->nofile, "--max-clients", lc->max_clients, NULL);
	else
		harness_start_broker_nofile(&h, lc->nofile, NULL);
	if (lc->nofile) {
		cr_assert_eq(start_field("fd_limit"), (long long)lc->nofile,
		             "%s: the start line must name the descriptor limit", lc->name);
		cr_assert_eq(start_field("max_clients_wanted"), 16384,
		             "%s: the start line must say max-clients was lowered from its default",
		             lc->name);
	}
	crowd_start(&cw);
	if (lc->squeeze)
		set_broker_nofile((rlim_t)broker_top_fd() + 1 + 2);

	crowd_fill_until_refused(&cw);
	if (lc->max_clients[0])
		cr_assert_eq(2 + cw.n_extra, atoi(lc->max_clients),
		             "%s: exactly --max-clients clients must be let in", lc->name);
	if (lc->nofile && !lc->squeeze) {
		long long planned = start_field("max_clients");
		cr_assert(planned > 2 && planned < (long long)lc->nofile / 2,
		          "%s: the broker must plan fewer clients than its %lu descriptors hold at 2 "
		          "each; it planned %lld",
		          lc->name, lc->nofile, planned);
		cr_assert_eq(2 + cw.n_extra, planned,
		             "%s: the planned %lld clients must be let in, and no more", lc->name,
		             planned);
	}
	assert_crowd_served(&cw, lc->name);
	assert_refusals_logged(lc->reason, REFUSALS);
	cr_assert_eq(scan_log("accept-paused", "", "times").lines, 0,
	             "%s: accepting on the spare descriptor must have been enough; the broker "
	             "paused listening instead",
	             lc->name);

	assert_room_after_leaving(&cw);
	assert_crowd_served(&cw, "after a client left");
	crowd_end(&cw);
}

/* Without a single free descriptor the broker cannot even take a
 * connection to refuse it.  It must stop watching its socket rather than
 * spin on accept() failures, keep serving its clients, and take new ones
 * again once it can. */
Test(limits, no_descriptor_left_pauses_listening_without_spinning)
{
	struct crowd cw;
	long long cpu_before, cpu_used;
	int64_t t0, waited_ms;
	long ticks = sysconf(_SC_CLK_TCK);
	coord_t *c;
	int rc;

	harness_start_broker(&h, NULL);
	crowd_start(&cw);
	set_broker_nofile(3);

	cpu_before = broker_cpu_ticks();
	t0 = mono_ms();
	rc = dial(&c, 1500);
	waited_ms = mono_ms() - t0;
	cpu_used = broker_cpu_ticks() - cpu_before;
	cr_assert_eq(rc, COORD_ETIMEDOUT,
	             "a broker without a free descriptor cannot accept, so the client must time "
	             "out; got %s",
	             coord_errname(rc));
	/* Not a timing measurement but a spin detector: a loop retrying
	 * accept() burns all the CPU it gets; a paused one next to none. */
	cr_assert_lt(cpu_used * 1000, (long long)waited_ms * ticks / 2 + 2 * 1000,
	             "the broker used %lld clock ticks of CPU while a client waited %lld ms for "
	             "it: it spins on accept() instead of pausing",
	             cpu_used, (long long)waited_ms);
	assert_crowd_served(&cw, "without a free descriptor");
	cr_assert_gt(scan_log("accept-paused", "errno=EMFILE", "times").lines, 0,
	             "the broker must log that it paused listening for lack of descriptors");
	assert_log_spacing("accept-paused", "errno=EMFILE");

	set_broker_nofile(0);
	cr_assert(harness_wait(can_connect, NULL, 10000),
	          "with descriptors back, the broker must listen again and accept a client");
	assert_crowd_served(&cw, "with descriptors back");
	crowd_end(&cw);
}

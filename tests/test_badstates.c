/* Crash tests of a broker in bad states, with real processes: its LMDB
 * map full, its filesystem full (a small tmpfs as the instance
 * directory), its directory removed under it, its shared region truncated
 * or replaced, and the wall clock jumping (libfaketime).  In every one,
 * leases held before stay held and valid, releases work, a new request
 * gets an error that names the cause (or is served), no second broker and
 * no second writer ever appears, and once the cause is gone the broker
 * serves again without a restart.  Parts that need root (mounts) skip
 * when not root, and so does the clock test without libfaketime. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct harness h;
static char tmpfs_dir[300];     /* mounted here (the instance directory) */
static char outside[300];       /* a directory beside it, not on it */

static void badstates_setup(void)
{
	harness_init(&h);
	harness_tmpdir(outside, sizeof outside, "coord-badstates");
}

static void badstates_teardown(void)
{
	if (h.broker > 0)
		harness_kill_broker(&h);
	if (tmpfs_dir[0] && umount2(tmpfs_dir, MNT_DETACH) < 0)
		cr_log_warn("cannot unmount %s: %s", tmpfs_dir, strerror(errno));
	tmpfs_dir[0] = 0;
	harness_fini(&h);
	harness_rmtree(outside);
}

TestSuite(badstates, .init = badstates_setup, .fini = badstates_teardown, .timeout = 120);

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static coord_t *dial(void)
{
	coord_options_t o = { .dir = h.dir, .no_autostart = 1 };
	coord_t *c = NULL;
	int rc = coord_connect(&c, &o);
	cr_assert_eq(rc, 0, "cannot connect to the broker of %s: %s", h.dir, coord_strerror(rc));
	return c;
}

static pid_t broker_pid_of(coord_t *c)
{
	coord_status_t st;
	int rc = coord_status(c, &st);
	cr_assert_eq(rc, 0, "the broker must answer a status request: %s", coord_strerror(rc));
	return (pid_t)st.broker_pid;
}

/* ---- the broker's log: its stderr, read through /proc so that it can
 * be read after its directory is gone ---- */

static char *read_log(void)
{
	char path[64];
	size_t cap = 4u << 20, n;
	char *buf = malloc(cap + 1);
	FILE *f;
	snprintf(path, sizeof path, "/proc/%d/fd/2", (int)h.broker);
	f = fopen(path, "re");
	cr_assert(buf && f, "cannot read the broker's log through %s: %s", path, strerror(errno));
	n = fread(buf, 1, cap, f);
	fclose(f);
	buf[n] = 0;
	return buf;
}

/* The lines of `event` holding `match`: how many, the sum of their
 * `count_key` fields, the shortest gap between two, the last line's
 * time. */
struct log_scan {
	int lines;
	long long count;
	int64_t min_gap_ms, last_ms;
};

static struct log_scan scan_log(const char *event, const char *match, const char *count_key)
{
	struct log_scan r = { 0, 0, -1, 0 };
	char ev[64], *log = read_log(), *line = log;
	snprintf(ev, sizeof ev, " event=%s ", event);
	while (*line) {
		char *end = strchr(line, '\n');
		if (end)
			*end = 0;
		if (strstr(line, ev) && strstr(line, match)) {
			int64_t t = harness_log_ms(line);
			if (r.lines && (r.min_gap_ms < 0 || t - r.last_ms < r.min_gap_ms))
				r.min_gap_ms = t - r.last_ms;
			r.last_ms = t;
			r.lines++;
			if (count_key[0] && harness_log_field(line, count_key) > 0)
				r.count += harness_log_field(line, count_key);
		}
		line = end ? end + 1 : line + strlen(line);
	}
	free(log);
	return r;
}

struct count_want {
	const char *event, *match, *key;
	long long want;
};

static int count_reached(void *p)
{
	struct count_want *w = p;
	return scan_log(w->event, w->match, w->key).count >= w->want;
}

static int line_there(void *p)
{
	struct count_want *w = p;
	return scan_log(w->event, w->match, "").lines >= w->want;
}

/* `failures` refusals of one cause were logged with counts adding up to
 * them, on fewer lines, a second or more apart. */
static void assert_logged_once_per_interval(const char *event, const char *match,
                                            long long failures)
{
	struct count_want w = { event, match, "failures", failures };
	struct log_scan r;
	cr_assert(harness_wait(count_reached, &w, 5000),
	          "the broker's '%s %s' lines must add up to failures=%lld within 5 s (the "
	          "count of the last interval is logged when it ends); they add up to %lld",
	          event, match, failures, scan_log(event, match, "failures").count);
	r = scan_log(event, match, "failures");
	cr_assert_eq(r.count, failures, "the '%s' lines count %lld failures, not %lld", event,
	             r.count, failures);
	cr_assert_lt(r.lines, failures,
	             "'%s' was logged on %d lines for %lld failures: once per request, not once "
	             "per interval",
	             event, r.lines, failures);
	cr_assert(r.lines < 2 || r.min_gap_ms >= 990,
	          "two '%s' lines only %lld ms apart: it must be logged at most once a second",
	          event, (long long)r.min_gap_ms);
}

/* ---- leases that must come through ---- */

/* Write leases on key:bs-N from `from` on, through c, each try-once, until
 * one fails: its code, with the leases taken in got[] (*n of them). */
static int fill_until_refused(coord_t *c, const char *prefix, coord_lease_t **got, int max,
                              int *n)
{
	char name[128];
	int rc = 0;
	*n = 0;
	while (*n < max) {
		snprintf(name, sizeof name, "key:%s-%d", prefix, *n);
		rc = coord_acquire(c, name, COORD_WRITE, 0, "fill", &got[*n]);
		if (rc < 0)
			return rc;
		(*n)++;
	}
	return 0;
}

/* `tries` more write leases on new keys through c: near the edge a
 * transaction may still fit in pages freed since, so some may be granted
 * (kept in got[], *n counting them); the others must fail with `code`,
 * and most must.  Returns how many failed. */
static int more_refusals(coord_t *c, coord_lease_t **got, int max, int *n, int tries, int code)
{
	int refused = 0;
	for (int i = 0; i < tries && *n < max; i++) {
		char name[64];
		int rc;
		snprintf(name, sizeof name, "key:bs-more-%d", i);
		rc = coord_acquire(c, name, COORD_WRITE, 0, "more", &got[*n]);
		cr_assert(rc == 0 || rc == code, "request %d at the edge must be granted or fail with "
		          "%s, got %s", i + 2, coord_errname(code), coord_errname(rc));
		if (rc == 0)
			(*n)++;
		else
			refused++;
	}
	cr_assert_gt(refused, tries / 2, "only %d of %d requests at the edge failed with %s",
	             refused, tries, coord_errname(code));
	return refused;
}

static void assert_still_exclusive(coord_t *other, const char *key, const char *when)
{
	coord_lease_t *l = NULL;
	int rc = coord_acquire(other, key, COORD_WRITE, 0, "second", &l);
	cr_assert_eq(rc, COORD_EBUSY,
	             "%s: %s is held by its writer, so a second writer must get COORD_EBUSY, "
	             "got %s",
	             when, key, coord_errname(rc));
}

/* ---- 1. the LMDB map is full ---- */

/* Policies (each a new state.mdb record) on key:bs-fill-N through c
 * until one fails: its code, with *n set to how many were stored. */
static int fill_policies_until_refused(coord_t *c, int max, int *n)
{
	coord_policy_t p;
	int rc = coord_policy_parse("none", &p);
	cr_assert_eq(rc, 0, "coord_policy_parse(none): %s", coord_errname(rc));
	for (*n = 0; *n < max; (*n)++) {
		char name[64];
		snprintf(name, sizeof name, "key:bs-fill-%d", *n);
		rc = coord_set_policy(c, name, &p);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* State.mdb's records are policies and checkpoint results; a write grant
 * writes it only once per token block (docs/design.md, "Fencing
 * tokens"), so filling the map with records refuses new records, not
 * write grants while the block has room. */
Test(badstates, map_full_refuses_new_records_with_efull_and_keeps_granting)
{
	enum { MAX_FILL = 100000, MORE = 30, WRITES = 200 };
	coord_lease_t *held, *read, *l;
	coord_policy_t none;
	coord_t *a, *b;
	int n = 0, rc, refused = 1;

	harness_start_broker(&h, "--map-size", "1", NULL);
	a = dial();
	b = dial();
	rc = coord_acquire(a, "key:bs-held", COORD_WRITE, 0, "held", &held);
	cr_assert_eq(rc, 0, "the first write lease must be granted: %s", coord_strerror(rc));

	rc = fill_policies_until_refused(b, MAX_FILL, &n);
	cr_assert_eq(rc, COORD_EFULL,
	             "with --map-size 1, new policy records must end in COORD_EFULL (state.mdb "
	             "full), got %s after %d records",
	             coord_errname(rc), n);
	cr_assert_gt(n, 1000, "a 1 MiB state.mdb must hold more than %d compact records", n);
	cr_assert(strstr(coord_strerror(rc), "--map-size"),
	          "COORD_EFULL must say which option raises the limit: '%s'", coord_strerror(rc));
	coord_policy_parse("none", &none);
	for (int i = 0; i < MORE; i++) {
		char name[64];
		snprintf(name, sizeof name, "key:bs-more-%d", i);
		rc = coord_set_policy(b, name, &none);
		cr_assert(rc == 0 || rc == COORD_EFULL, "policy %d at the edge must be stored or fail "
		          "with COORD_EFULL, got %s", i, coord_errname(rc));
		refused += rc == COORD_EFULL;
	}
	/* Near the edge pages freed by the last commits let about every other
	 * one through. */
	cr_assert_gt(refused, MORE / 3, "only %d of %d policies at the edge failed", refused, MORE);

	/* What is held stays held and exclusive; write grants on new
	 * resources need no record and go on, as do read grants. */
	cr_assert_eq(coord_lease_valid(held), 1, "a lease held before the map filled must stay valid");
	assert_still_exclusive(b, "key:bs-held", "state.mdb full");
	for (int i = 0; i < WRITES; i++) {
		char name[64];
		snprintf(name, sizeof name, "key:bs-write-%d", i);
		rc = coord_acquire(b, name, COORD_WRITE, 0, "write", &l);
		cr_assert_eq(rc, 0, "write %d on a new resource needs no state.mdb record while the "
		             "token block has room, and must be granted: %s", i, coord_strerror(rc));
		cr_assert_gt(coord_lease_token(l), 1, "its token must be above the first writer's");
		cr_assert_eq(coord_release(l), 0, "a release must work while state.mdb is full");
	}
	rc = coord_acquire(b, "key:bs-read-new", COORD_READ, 0, "read", &read);
	cr_assert_eq(rc, 0, "a read lease needs no state.mdb record and must be granted: %s",
	             coord_strerror(rc));

	assert_logged_once_per_interval("store-full", "file=state.mdb", refused);
	cr_assert_gt(scan_log("store-full", "--map-size", "").lines, 0,
	             "the store-full line must name --map-size");
	coord_release(read);
	coord_release(held);
	coord_disconnect(a);
	coord_disconnect(b);
}

/* ---- 2. the filesystem is full ---- */

/* Fills the filesystem of dir with DIR/filler; returns the bytes written. */
static long long fill_filesystem(const char *path)
{
	static char block[64 * 1024];
	long long total = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ssize_t n;
	cr_assert(fd >= 0, "cannot create %s: %s", path, strerror(errno));
	memset(block, 'x', sizeof block);
	while ((n = write(fd, block, sizeof block)) > 0)
		total += n;
	cr_assert(n < 0 && errno == ENOSPC, "filling %s must end in ENOSPC, got %s", path,
	          strerror(errno));
	/* The last partial pages too. */
	while (write(fd, block, 512) > 0)
		total += 512;
	close(fd);
	return total;
}

/* Mounts a tmpfs of `size` as the instance directory; the broker's log
 * (harness: DIR/broker.log) goes to a directory outside it, so a full
 * disk cannot silence it. */
static void mount_small_tmpfs(const char *size)
{
	char opts[64];
	if (geteuid() != 0)
		cr_skip_test("mounting a tmpfs as the instance directory needs root (CI runs "
		             "the tests as root)");
	snprintf(opts, sizeof opts, "size=%s,mode=0700", size);
	cr_assert(mount("tmpfs", h.dir, "tmpfs", 0, opts) == 0, "cannot mount a tmpfs on %s: %s",
	          h.dir, strerror(errno));
	snprintf(tmpfs_dir, sizeof tmpfs_dir, "%s", h.dir);
	cr_assert(symlink(harness_file(outside, "broker.log"), harness_path(&h, "broker.log")) == 0,
	          "cannot link the broker's log outside the tmpfs: %s", strerror(errno));
}

Test(badstates, disk_full_refuses_with_enospc_keeps_leases_and_recovers_without_restart)
{
	enum { MAX_FILL = 20000, MORE = 20 };
	static coord_lease_t *got[MAX_FILL];
	coord_lease_t *held, *after;
	coord_t *a, *b;
	pid_t pid;
	int n = 0, rc, refused, refused_at = -1;

	mount_small_tmpfs("8m");
	harness_start_broker(&h, NULL);
	a = dial();
	b = dial();
	pid = broker_pid_of(a);
	rc = coord_acquire(a, "key:bs-held", COORD_WRITE, 0, "held", &held);
	cr_assert_eq(rc, 0, "the first write lease must be granted: %s", coord_strerror(rc));

	fill_filesystem(harness_path(&h, "filler"));
	rc = fill_until_refused(b, "bs-space", got, MAX_FILL, &n);
	cr_assert_eq(rc, COORD_ENOSPC,
	             "on a full filesystem, new leases must end in COORD_ENOSPC, got %s after "
	             "%d grants",
	             coord_errname(rc), n);
	cr_assert(strstr(coord_strerror(rc), "no space left in the instance directory"),
	          "COORD_ENOSPC must name the cause: '%s'", coord_strerror(rc));
	refused = 1 + more_refusals(b, got, MAX_FILL, &n, MORE, COORD_ENOSPC);

	cr_assert_eq(coord_lease_valid(held), 1, "a lease held before the disk filled must stay valid");
	assert_still_exclusive(b, "key:bs-held", "disk full");
	for (int i = 0; i < n; i++)
		cr_assert_eq(coord_lease_valid(got[i]), 1, "lease %d must stay valid", i);
	/* Before the releases: a delete that fails on the full disk is a
	 * failure of its own, counted too. */
	assert_logged_once_per_interval("no-space", "file=", refused);
	/* A read lease needs no state.mdb record: it is refused only by the
	 * failed commit of its iteration's lease records, after the table
	 * granted it, so the broker must undo it there. */
	for (int i = 0; i < MORE && refused_at < 0; i++) {
		char key[64];
		coord_lease_t *r = NULL;
		snprintf(key, sizeof key, "key:bs-ghost-%d", i);
		rc = coord_acquire(b, key, COORD_READ, 0, "ghost", &r);
		cr_assert(rc == 0 || rc == COORD_ENOSPC, "a read on a full disk must be granted or "
		          "fail with COORD_ENOSPC, got %s", coord_errname(rc));
		if (rc == 0)
			coord_release(r);
		else
			refused_at = i;
	}
	cr_assert_geq(refused_at, 0, "no read lease was refused on a full disk");
	for (int i = 0; i < n; i++)
		cr_assert_eq(coord_release(got[i]), 0, "lease %d must release on a full disk", i);
	cr_assert(harness_wait_count(&h, "key:bs-space-0", 0, 0, 0),
	          "the broker must let a lease go on a full disk");
	cr_assert_eq(broker_pid_of(b), pid, "the broker must survive a full disk");

	/* Room again: grants again, same broker. */
	cr_assert(unlink(harness_path(&h, "filler")) == 0, "cannot remove the filler: %s",
	          strerror(errno));
	rc = coord_acquire(b, "key:bs-after", COORD_WRITE, 0, "after", &after);
	cr_assert_eq(rc, 0, "once there is room, a new write lease must be granted without a "
	             "broker restart: %s", coord_strerror(rc));
	cr_assert_eq(broker_pid_of(b), pid, "the same broker must serve after the disk filled");
	cr_assert_gt(scan_log("store-writable", "", "").lines, 0,
	             "the broker must log that it can write again");
	coord_release(after);
	/* A grant refused because its batch's commit failed was undone in
	 * full (lease, slot, queue): its key is free, not held by a ghost. */
	{
		char key[64];
		coord_lease_t *ghost = NULL;
		snprintf(key, sizeof key, "key:bs-ghost-%d", refused_at);
		rc = coord_acquire(a, key, COORD_WRITE, 0, "after", &ghost);
		cr_assert_eq(rc, 0, "%s was refused with COORD_ENOSPC, so nobody holds it and a "
		             "writer must get it now: %s", key, coord_strerror(rc));
		coord_release(ghost);
	}

	/* No record of a released lease may outlive the shortage: a
	 * restarted broker adopts what is recorded, and only key:bs-held
	 * (whose holder lives on) may come back. */
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	cr_assert(harness_wait_count(&h, "key:bs-held", COORD_WRITE, 0, 1),
	          "the restarted broker must adopt the lease held throughout");
	cr_assert_eq(harness_count(&h, "key:bs-space-0", 0, 0), 0,
	             "a lease released while the disk was full must not be adopted after a restart: "
	             "its record must have been deleted once there was room");
	coord_disconnect(a);
	coord_disconnect(b);
}

/* ---- 3. the instance directory removed under the broker ---- */

struct autostart_result {
	pid_t broker;
	int try_once, timed;    /* COORD_E* of a try-once and a 300 ms write */
};

Test(badstates, directory_removed_is_restored_by_the_same_broker_and_no_second_writer)
{
	struct actor w;
	struct autostart_result r;
	coord_options_t o = { .dir = h.dir, .connect_timeout_ms = 10000 };
	struct count_want restored = { "instance-restored", "what=directory", "", 1 };
	coord_lease_t *l = NULL;
	coord_t *c = NULL;
	const char *got;
	int rc;

	harness_start_broker(&h, NULL);
	actor_start(&w, &h);
	actor_send(&w, "acquire write -1 key:bs-dir");
	got = actor_reply(&w, 5000);
	cr_assert_str_eq(got, "ok 1", "the writer must be granted key:bs-dir, got '%s'", got);

	harness_rmtree(h.dir);
	/* A client that autostarts, as a real one would: its coordd must find
	 * the running broker's name and step aside, and the running broker
	 * put its directory back. */
	unsetenv("COORD_NO_AUTOSTART");
	rc = coord_connect(&c, &o);
	setenv("COORD_NO_AUTOSTART", "1", 1);
	cr_assert_eq(rc, 0, "a client must reach a broker once the directory is removed: %s",
	             coord_strerror(rc));
	r.broker = broker_pid_of(c);
	r.try_once = coord_acquire(c, "key:bs-dir", COORD_WRITE, 0, "second", &l);
	r.timed = coord_acquire(c, "key:bs-dir", COORD_WRITE, 300, "second", &l);
	cr_assert_eq(r.broker, h.broker,
	             "the client must be served by the broker that holds the leases (pid %d), not "
	             "by a second one (pid %d)",
	             (int)h.broker, (int)r.broker);
	cr_assert_eq(r.try_once, COORD_EBUSY,
	             "key:bs-dir is held: a second writer must get COORD_EBUSY, got %s",
	             coord_errname(r.try_once));
	cr_assert_eq(r.timed, COORD_ETIMEDOUT,
	             "key:bs-dir is held: a second writer must wait and time out, got %s",
	             coord_errname(r.timed));
	actor_send(&w, "valid");
	cr_assert_str_eq(actor_reply(&w, 5000), "1", "the writer's lease must stay valid");
	/* The writer still maps the region file that was removed: the broker
	 * must go on writing it (here: the recall of the second writer's
	 * wait). */
	actor_send(&w, "recalled");
	cr_assert_str_eq(actor_reply(&w, 5000), "1",
	                 "the writer must see the recall in the region it mapped before the "
	                 "directory was removed");
	cr_assert(harness_wait(line_there, &restored, 5000),
	          "the broker must log event=instance-restored what=directory,...");
	cr_assert_eq(scan_log("instance-restored", "", "").lines, 1,
	             "instance-restored must be logged once");
	cr_assert(access(harness_path(&h, COORD_SOCKET_NAME), F_OK) == 0 &&
	          access(harness_path(&h, COORD_STATE_NAME), F_OK) == 0 &&
	          access(harness_path(&h, COORD_LEASES_NAME), F_OK) == 0 &&
	          access(harness_path(&h, COORD_SHM_NAME), F_OK) == 0,
	          "the socket, the region and both LMDB files must be back in %s", h.dir);

	/* The writer lets go: the waiting second writer gets it, and its
	 * lease reads valid in the region the new client mapped. */
	actor_send(&w, "release");
	cr_assert_str_eq(actor_reply(&w, 5000), "ok", "the writer must release");
	rc = coord_acquire(c, "key:bs-dir", COORD_WRITE, 5000, "second", &l);
	cr_assert_eq(rc, 0, "once released, the second writer must be granted: %s",
	             coord_strerror(rc));
	cr_assert_gt(coord_lease_token(l), 1, "its token must be above the first writer's");
	cr_assert_eq(coord_lease_valid(l), 1,
	             "a lease granted after the restore must read valid in the restored region");
	cr_assert_eq(coord_release(l), 0, "and release");
	coord_disconnect(c);
	actor_stop(&w);

	/* What was committed survived: a restarted broker continues tokens
	 * above the restored state.mdb's ceiling. */
	harness_stop_broker(&h);
	harness_start_broker(&h, NULL);
	c = dial();
	rc = coord_acquire(c, "key:bs-dir", COORD_WRITE, 0, "third", &l);
	cr_assert_eq(rc, 0, "a write after the restart must be granted: %s", coord_strerror(rc));
	cr_assert_gt(coord_lease_token(l), 2,
	             "tokens must never go back: the restored state.mdb keeps the ceiling (got %llu)",
	             (unsigned long long)coord_lease_token(l));
	coord_release(l);
	coord_disconnect(c);
}

/* A directory made read-only (a read-only bind mount over it): the broker
 * logs it once and keeps serving. */
Test(badstates, directory_unwritable_is_logged_once_and_served)
{
	struct count_want want = { "instance-unwritable", "", "", 1 };
	coord_lease_t *held, *l;
	coord_t *a, *b;
	int rc;

	if (geteuid() != 0)
		cr_skip_test("a read-only bind mount needs root (CI runs the tests as root)");
	harness_start_broker(&h, NULL);
	a = dial();
	rc = coord_acquire(a, "key:bs-ro", COORD_WRITE, 0, "held", &held);
	cr_assert_eq(rc, 0, "the first write lease must be granted: %s", coord_strerror(rc));
	cr_assert(mount(h.dir, h.dir, NULL, MS_BIND, NULL) == 0 &&
	          mount(NULL, h.dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0,
	          "cannot bind-mount %s read-only: %s", h.dir, strerror(errno));
	snprintf(tmpfs_dir, sizeof tmpfs_dir, "%s", h.dir);
	cr_assert(harness_wait(line_there, &want, 5000),
	          "the broker must log event=instance-unwritable within a check");
	b = dial();
	assert_still_exclusive(b, "key:bs-ro", "read-only directory");
	rc = coord_acquire(b, "key:bs-ro-other", COORD_WRITE, 0, "new", &l);
	cr_assert_eq(rc, 0, "a read-only directory must not stop grants: %s", coord_strerror(rc));
	cr_assert_eq(coord_release(l), 0, "nor releases");
	cr_assert_eq(coord_lease_valid(held), 1, "the held lease must stay valid");
	poll(NULL, 0, 2500); /* two checks more: still one line (a count, not a wait) */
	cr_assert_eq(scan_log("instance-unwritable", "", "").lines, 1,
	             "instance-unwritable must be logged once, not at every check");
	coord_release(held);
	coord_disconnect(a);
	coord_disconnect(b);
}

/* ---- 4. the region truncated or replaced ---- */

/* A harness_wait() condition: the actor's last lease reads valid. */
static int actor_valid(void *p)
{
	struct actor *a = p;
	actor_send(a, "valid");
	return !strcmp(actor_reply(a, 5000), "1");
}

static int region_full_size(void *arg)
{
	struct stat st;
	return stat(harness_path(&h, COORD_SHM_NAME), &st) == 0 && st.st_size >= *(off_t *)arg;
}

Test(badstates, region_truncated_is_grown_back_and_rewritten)
{
	struct actor w;
	struct stat st;
	struct count_want restored = { "instance-restored", "region-truncated", "", 1 };
	coord_lease_t *l;
	coord_t *b;
	off_t size;
	const char *got;
	int rc;

	harness_start_broker(&h, NULL);
	actor_start(&w, &h);
	b = dial();
	actor_send(&w, "acquire write -1 key:bs-region");
	got = actor_reply(&w, 5000);
	cr_assert_str_eq(got, "ok 1", "the writer must be granted key:bs-region, got '%s'", got);
	cr_assert(stat(harness_path(&h, COORD_SHM_NAME), &st) == 0, "no region file");
	size = st.st_size;

	/* Truncated, and a slot written at once, before the broker's check:
	 * the SIGBUS handler must grow the file back. */
	cr_assert(truncate(harness_path(&h, COORD_SHM_NAME), 0) == 0, "cannot truncate: %s",
	          strerror(errno));
	rc = coord_acquire(b, "key:bs-region-2", COORD_WRITE, 0, "other", &l);
	cr_assert_eq(rc, 0, "a grant must survive a truncated region: %s", coord_strerror(rc));
	cr_assert(harness_wait(region_full_size, &size, 5000),
	          "the broker must grow the region back to %lld bytes", (long long)size);
	cr_assert_eq(broker_pid_of(b), h.broker, "the broker must survive a truncated region");
	cr_assert(harness_wait(line_there, &restored, 5000),
	          "the broker must log event=instance-restored what=region-truncated");
	cr_assert_eq(coord_lease_valid(l), 1, "the new lease must read valid after the repair");
	actor_send(&w, "valid");
	cr_assert_str_eq(actor_reply(&w, 5000), "1",
	                 "the writer's slot must be rewritten: its lease reads valid again");
	assert_still_exclusive(b, "key:bs-region", "after the truncation");
	cr_assert_eq(coord_release(l), 0, "a release must work");

	/* Truncated again, found by the timer this time. */
	cr_assert(truncate(harness_path(&h, COORD_SHM_NAME), 100) == 0, "cannot truncate: %s",
	          strerror(errno));
	cr_assert(harness_wait(region_full_size, &size, 5000),
	          "the broker's check must grow the region back");
	/* It grows the file, then rewrites the slots: wait for both. */
	cr_assert(harness_wait(actor_valid, &w, 5000), "the writer's lease must read valid again");
	actor_send(&w, "release");
	cr_assert_str_eq(actor_reply(&w, 5000), "ok", "the writer must release");
	actor_stop(&w);
	coord_disconnect(b);
}

/* What `cp -p coordd.shm x; mv x coordd.shm` leaves: a copy of the live
 * region at its name, which the broker never writes. */
static void replace_region_with_copy(void)
{
	char cmd[1200];
	snprintf(cmd, sizeof cmd, "cp -p '%s' '%s.copy' && mv '%s.copy' '%s'",
	         harness_path(&h, COORD_SHM_NAME), harness_path(&h, COORD_SHM_NAME),
	         harness_path(&h, COORD_SHM_NAME), harness_path(&h, COORD_SHM_NAME));
	cr_assert_eq(system(cmd), 0, "cannot replace the region: %s", cmd);
}

Test(badstates, region_replaced_is_put_back_and_never_mapped_by_new_clients)
{
	struct actor w;
	struct count_want restored = { "instance-restored", "region-replaced", "", 1 };
	coord_lease_t *l;
	coord_t *c;
	const char *got;
	int rc;

	harness_start_broker(&h, NULL);
	actor_start(&w, &h);
	actor_send(&w, "acquire write -1 key:bs-copy");
	got = actor_reply(&w, 5000);
	cr_assert_str_eq(got, "ok 1", "the writer must be granted key:bs-copy, got '%s'", got);

	replace_region_with_copy();
	/* A new client at once, most likely before the broker's check: it must
	 * not map the copy (its slots would never change). */
	c = dial();
	rc = coord_acquire(c, "key:bs-copy-2", COORD_WRITE, 0, "new", &l);
	cr_assert_eq(rc, 0, "a new client must be granted a free key: %s", coord_strerror(rc));
	cr_assert_eq(coord_lease_valid(l), 1,
	             "a new client's lease must read valid: it maps the broker's region, not the "
	             "copy at its name");
	cr_assert_eq(coord_release(l), 0, "and release");
	cr_assert(harness_wait(line_there, &restored, 5000),
	          "the broker must log event=instance-restored what=region-replaced");

	/* The first writer maps the first file: the broker must go on
	 * writing it, here the recall a second writer's wait causes. */
	rc = coord_acquire(c, "key:bs-copy", COORD_WRITE, 300, "second", &l);
	cr_assert_eq(rc, COORD_ETIMEDOUT, "key:bs-copy is held: a second writer must wait and "
	             "time out, got %s", coord_errname(rc));
	actor_send(&w, "valid");
	cr_assert_str_eq(actor_reply(&w, 5000), "1", "the first writer's lease must stay valid");
	actor_send(&w, "recalled");
	cr_assert_str_eq(actor_reply(&w, 5000), "1",
	                 "the first writer must see the recall in the file it mapped");
	actor_send(&w, "release");
	cr_assert_str_eq(actor_reply(&w, 5000), "ok", "the first writer must release");
	rc = coord_acquire(c, "key:bs-copy", COORD_WRITE, 5000, "second", &l);
	cr_assert_eq(rc, 0, "once released, the second writer must be granted: %s",
	             coord_strerror(rc));
	cr_assert_eq(coord_lease_valid(l), 1, "and its lease read valid");
	coord_release(l);
	actor_stop(&w);
	coord_disconnect(c);
}

/* ---- 5. the wall clock jumps ---- */

/* Debian's libfaketime, in its multiarch directory; 0 and the path in buf,
 * or -1 if it is not installed. */
static int find_libfaketime(char *buf, size_t size)
{
	glob_t g;
	int rc = -1;
	if (glob("/usr/lib/*/faketime/libfaketime.so.1", 0, NULL, &g) == 0 && g.gl_pathc > 0) {
		snprintf(buf, size, "%s", g.gl_pathv[0]);
		rc = 0;
	}
	globfree(&g);
	return rc;
}

static void set_fake_offset(const char *path, const char *offset)
{
	FILE *f = fopen(path, "we");
	cr_assert(f, "cannot write %s: %s", path, strerror(errno));
	fprintf(f, "%s\n", offset);
	fclose(f);
}

/* The age of the one holder of `key`, from coord_list(). */
static long long holder_age_ms(coord_t *c, const char *key)
{
	coord_lease_info_t *v = NULL;
	size_t n = 0;
	long long age = -1;
	int rc = coord_list(c, &v, &n);
	cr_assert_eq(rc, 0, "coord_list: %s", coord_strerror(rc));
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].resource, key) && !v[i].waiting)
			age = (long long)v[i].age_ms;
	coord_free(v);
	return age;
}

Test(badstates, wall_clock_jumps_move_no_timeout_and_no_age)
{
	char stamp[512], lib[512], asan[1024];
	const char *asan_was = getenv("ASAN_OPTIONS");
	struct count_want jumped = { "grant", "", "", 0 };
	struct actor waiter;
	coord_lease_t *held;
	coord_t *a;
	int64_t asked, answered;
	long long age;
	const char *got;
	int rc;

	if (find_libfaketime(lib, sizeof lib) < 0)
		cr_skip_test("libfaketime is not installed (scripts/setup.sh installs the faketime "
		             "package)");
	snprintf(stamp, sizeof stamp, "%s", harness_file(outside, "faketime"));
	set_fake_offset(stamp, "+0");
	/* Only the broker is under libfaketime: its wall clock follows the
	 * file, its monotonic clock does not. */
	setenv("LD_PRELOAD", lib, 1);
	setenv("FAKETIME_TIMESTAMP_FILE", stamp, 1);
	setenv("FAKETIME_NO_CACHE", "1", 1);
	setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1", 1);
	/* An ASan build wants its runtime first; libfaketime only wraps
	 * clock calls, so the order does not matter here. */
	snprintf(asan, sizeof asan, "%s%sverify_asan_link_order=0", asan_was ? asan_was : "",
	         asan_was ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
	harness_start_broker(&h, NULL);
	unsetenv("LD_PRELOAD");
	if (asan_was)
		setenv("ASAN_OPTIONS", asan_was, 1);
	else
		unsetenv("ASAN_OPTIONS");

	a = dial();
	rc = coord_acquire(a, "key:bs-clock", COORD_WRITE, 0, "held", &held);
	cr_assert_eq(rc, 0, "the first write lease must be granted: %s", coord_strerror(rc));
	actor_start(&waiter, &h);
	asked = mono_ms();
	actor_send(&waiter, "acquire write 4000 key:bs-clock");
	cr_assert(harness_wait_count(&h, "key:bs-clock", COORD_WRITE, 1, 1),
	          "the second writer must wait behind the first");

	set_fake_offset(stamp, "+3d");
	/* Make the broker log a line after the jump, to see it took effect. */
	{
		coord_lease_t *l;
		cr_assert_eq(coord_acquire(a, "key:bs-clock-probe", COORD_WRITE, 0, "probe", &l), 0,
		             "a probe grant must work");
		coord_release(l);
	}
	jumped.want = 2;
	cr_assert(harness_wait(line_there, &jumped, 5000), "no grant lines in the broker's log");
	cr_assert_gt(scan_log("grant", "key:bs-clock-probe", "").last_ms - (int64_t)time(NULL) * 1000,
	             2LL * 24 * 3600 * 1000,
	             "libfaketime must have moved the broker's wall clock by 3 days (its log "
	             "timestamps did not move; is %s working?)", lib);
	age = holder_age_ms(a, "key:bs-clock");
	cr_assert(age >= 0 && age < 60 * 1000,
	          "a holder's age must follow the monotonic clock, not the wall clock's 3-day "
	          "jump: %lld ms",
	          age);
	cr_assert_eq(actor_has_reply(&waiter), 0,
	             "the waiter's 4 s timeout must not end because the wall clock jumped 3 days");

	set_fake_offset(stamp, "-3d");
	age = holder_age_ms(a, "key:bs-clock");
	cr_assert(age >= 0 && age < 60 * 1000,
	          "a holder's age must not jump when the wall clock goes back 3 days: %lld ms", age);
	got = actor_reply(&waiter, 15000);
	answered = mono_ms();
	cr_assert_str_eq(got, "err COORD_ETIMEDOUT",
	                 "the waiter must time out (the lease is held), got '%s'", got);
	cr_assert(answered - asked >= 3500,
	          "the waiter's 4 s timeout ended after %lld ms: the wall clock moved it",
	          (long long)(answered - asked));
	cr_assert_eq(coord_lease_valid(held), 1, "the held lease must stay valid");
	coord_release(held);
	actor_stop(&waiter);
	coord_disconnect(a);
}

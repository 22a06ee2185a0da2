/* coordctl: the admin and script tool.
 *
 * Subcommands talk to the broker of the instance directory through the
 * public calls of libcoord (coord_status(), coord_list(), coord_show(),
 * ...), like any other program: nothing here knows the wire protocol.
 * Only `run`, `checkpoint` and `policy` start a broker when none is
 * running; the inspection commands never do, so looking never changes
 * anything.
 *
 * Exit status (stable, scripts depend on it):
 *   run: the command's own status; 75 lease not granted within --timeout;
 *        69 no broker reachable or startable; 64 usage error;
 *        126/127 the command could not be executed.
 *   others: 0 ok, 1 failed, 64 usage, 69 no broker, 75 timed out;
 *   doctor: 0 healthy, 1 problems found, 2 could not inspect. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "doctor.h"
#include "kernel_locks.h"
#include "metrics_cmd.h"
#include "share.h"
#include "watch.h"

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 64, EX_UNAVAILABLE = 69, EX_TEMPFAIL = 75 };

static const char *progname = "coordctl";

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: coordctl [--dir DIR] COMMAND [ARGS]\n"
	        "\n"
	        "  status                       is a broker up; its directory, pid, uptime, counts\n"
	        "  list [--json]                every lease and waiter; a lease granted whose kernel\n"
	        "                               lock (flock) is held outside this broker is marked\n"
	        "                               \"waiting for kernel lock held by pid N\" (JSON:\n"
	        "                               \"kernel_lock_holder\", null when not waiting)\n"
	        "  show RESOURCE                kind, policy, holders, waiters, last checkpoint\n"
	        "  run --read|--write RESOURCE [--timeout SECONDS] [--label TEXT] -- COMMAND [ARGS]\n"
	        "                               run COMMAND while holding the lease (like flock(1))\n"
	        "  checkpoint RESOURCE          checkpoint a database file now, through the broker\n"
	        "  policy RESOURCE SPEC [--timeout SECONDS]\n"
	        "                               SPEC: auto | none | sqlite[:passive|full|restart|truncate]\n"
	        "                                     | duckdb | exec:COMMAND\n"
	        "  limit RESOURCE [--max-hold SECONDS] [--recall-grace SECONDS]\n"
	        "                               hold limits: revoke a lease held longer than\n"
	        "                               --max-hold, or still held --recall-grace after its\n"
	        "                               recall (0 turns one off; without options: show them)\n"
	        "  revoke [--grace SECONDS] LEASE_ID | --pid PID | RESOURCE\n"
	        "                               take leases back: recall, then SIGTERM, then SIGKILL\n"
	        "                               the holder, --grace apart (default 5); exit 0 revoked,\n"
	        "                               1 not permitted (the lease is still held) or no such lease\n"
	        "  doctor PATH                  what is wrong with a database file (changes nothing)\n"
	        "  watch [--json]               live view of holders, waiters, recalls, checkpoints\n"
	        "  metrics                      the broker's metrics in the Prometheus text format\n"
	        "  setup-shared [--dir DIR] [--group NAME]\n"
	        "                               make DIR (default /var/lib/coord) an instance shared by\n"
	        "                               group NAME (default coord, created if missing) and\n"
	        "                               start its broker; as root\n"
	        "  share PATH                   mark PATH's directory (or PATH, a directory) as\n"
	        "                               coordinated by this instance: clients of any other\n"
	        "                               instance get COORD_EINSTANCE on its files\n"
	        "\n"
	        "RESOURCE is key:NAME for a key (NAME not empty, no '/'); any other RESOURCE is a\n"
	        "file path, relative to the current directory or absolute, whether the file exists\n"
	        "or not (so db.sqlite is ./db.sqlite, before and after it is created).\n"
	        "The instance directory is --dir, else $COORD_DIR, else the per-user default.\n"
	        "Exit status: see coordctl(1); run returns the command's status, 75 when the lease\n"
	        "was not granted in time, 69 when no broker can be reached, 64 on usage errors.\n");
}

static const char see_holders[] = "see who holds it with `coordctl list`";

/* The exit status each error gives, and what to tell the admin about it.
 * Errors not listed exit EX_FAIL without a hint. */
static const struct failure {
	int code, status;
	const char *hint;
} failures[] = {
	{ COORD_ENOBROKER, EX_UNAVAILABLE,
	  "start one with `coordd --daemon` (or unset COORD_NO_AUTOSTART), and check "
	  "that coordd is on PATH or COORD_BROKER names it" },
	{ COORD_EPERM, EX_UNAVAILABLE,
	  "you may not use this instance directory; check its owner and mode" },
	{ COORD_EIO, EX_UNAVAILABLE, NULL },
	{ COORD_ETIMEDOUT, EX_TEMPFAIL, see_holders },
	{ COORD_EBUSY, EX_TEMPFAIL, see_holders },
	{ COORD_EINVAL, EX_USAGE, NULL },
	{ COORD_ENAME, EX_USAGE,
	  "a resource is key:NAME (NAME not empty, no '/') or a file path whose directory "
	  "exists, at most 511 bytes" },
	{ COORD_EDEADLK, EX_FAIL, "this process already holds the resource, or waiting would close a wait-for cycle; the broker log names it (event=deadlock)" },
	{ COORD_EPROTO, EX_FAIL, "coordctl and coordd are different versions; restart coordd" },
	{ COORD_EINSTANCE, EX_FAIL,
	  "the file's directory has a .coord-instance naming another instance; use that one "
	  "with --dir or COORD_DIR" },
};

/* A hint that depends on the case (who we are, which instance), set just
 * before complain(); it replaces the table's. */
static char case_hint[1024];

static const struct failure *failure_of(int rc)
{
	for (size_t i = 0; i < sizeof failures / sizeof failures[0]; i++)
		if (failures[i].code == rc)
			return &failures[i];
	return NULL;
}

/* "coordctl: <what>: COORD_ENAME: message" and a hint line, on stderr. */
static int complain(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int complain(int rc, const char *fmt, ...)
{
	const struct failure *f = failure_of(rc);
	va_list ap;
	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", coord_strerror(rc));
	if (case_hint[0])
		fprintf(stderr, "%s: hint: %s\n", progname, case_hint);
	else if (f && f->hint)
		fprintf(stderr, "%s: hint: %s\n", progname, f->hint);
	case_hint[0] = 0;
	return f ? f->status : EX_FAIL;
}

static const char *dir_opt;

/* Connects; on COORD_EPERM, the hint says which instance refused us and
 * why (a group we are not in names the group). */
static int connect_broker(coord_t **c, int autostart)
{
	coord_options_t o = { .dir = dir_opt, .no_autostart = !autostart };
	char d[COORD_DIR_MAX + 1];
	int rc = coord_connect(c, &o);
	if (rc == COORD_EPERM && coord_instance_dir(dir_opt, d, sizeof d) >= 0)
		share_explain_eperm(d, case_hint, sizeof case_hint);
	return rc;
}

static void fmt_duration(char *buf, size_t size, uint64_t ms)
{
	if (ms < 1000)
		snprintf(buf, size, "%" PRIu64 "ms", ms);
	else if (ms < 60000)
		snprintf(buf, size, "%.1fs", ms / 1000.0);
	else if (ms < 3600000)
		snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", ms / 60000, ms / 1000 % 60);
	else
		snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", ms / 3600000, ms / 60000 % 60);
}

static void fmt_bytes(char *buf, size_t size, int64_t b)
{
	if (b < 0)
		snprintf(buf, size, "-");
	else if (b < 1024)
		snprintf(buf, size, "%" PRId64 " B", b);
	else if (b < 1024 * 1024)
		snprintf(buf, size, "%.1f KiB", b / 1024.0);
	else
		snprintf(buf, size, "%.1f MiB", b / 1048576.0);
}

/* ---- status ---- */

static int cmd_status(int argc, char **argv)
{
	coord_t *c;
	coord_status_t s;
	char up[32], sharing[128];
	int rc;
	(void)argv;
	if (argc != 1) {
		usage(stderr);
		return EX_USAGE;
	}
	rc = connect_broker(&c, 0);
	if (rc == COORD_ENOBROKER) {
		char d[COORD_DIR_MAX + 1];
		rc = coord_instance_dir(dir_opt, d, sizeof d);
		if (rc < 0)
			return complain(rc, "status: instance directory");
		printf("broker:    not running\ndirectory: %s\n", d);
		return EX_UNAVAILABLE;
	}
	if (rc < 0)
		return complain(rc, "connect");
	rc = coord_status(c, &s);
	if (rc < 0) {
		coord_disconnect(c);
		return complain(rc, "status");
	}
	fmt_duration(up, sizeof up, s.uptime_ms);
	printf("broker:    running (pid %" PRIu64 ", up %s, protocol %u)\n", s.broker_pid, up,
	       (unsigned)s.protocol);
	share_describe(coord_dir(c), sharing, sizeof sharing);
	printf("directory: %s (%s)\n", coord_dir(c), sharing);
	printf("clients:   %" PRIu64 " (including this one)\n", s.clients);
	printf("leases:    %" PRIu64 " held, %" PRIu64 " waiting, %" PRIu64 " resources known\n",
	       s.leases, s.waiters, s.resources);
	coord_disconnect(c);
	return EX_OK;
}

/* ---- list ---- */

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static const char *mode_name(int m)
{
	return m == COORD_WRITE ? "write" : "read";
}

/* The fields holders and waiters share: "mode", "pid" (holders also
 * "uid"), "command" and "label". */
static void json_who(const coord_lease_info_t *e)
{
	printf(",\"mode\":\"%s\",\"pid\":%" PRIu64, mode_name(e->mode), e->pid);
	if (!e->waiting)
		printf(",\"uid\":%" PRIu64, e->uid);
	printf(",\"command\":");
	json_string(stdout, e->command);
	printf(",\"label\":");
	json_string(stdout, e->label);
}

/* "kernel_lock_holder": null, or the flock(2) held outside the broker that
 * this holder still waits for: {"pid", "comm", "mode", "locked_by",
 * "holders": [{"pid", "comm"}], "unseen"}.  "pid" is the first process
 * found holding it ("holders" lists up to KERNEL_LOCKS_NAMED; "holders"
 * empty: /proc/locks's "locked_by" is all that is known, "unseen" says
 * how many processes could not be looked at); "comm" is null when
 * unknown; "locked_by" is the process that took the lock (0: another PID
 * namespace's), gone if a descendant holds it now. */
static void json_kernel_lock(const struct kernel_lock_outsider *o)
{
	printf(",\"kernel_lock_holder\":");
	if (!o) {
		printf("null");
		return;
	}
	printf("{\"pid\":%ld,\"comm\":", o->nholders ? o->holder[0].pid : o->locked_by);
	if (o->nholders)
		json_string(stdout, o->holder[0].comm);
	else if (o->locked_by_alive)
		json_string(stdout, o->locked_by_comm);
	else
		printf("null");
	printf(",\"mode\":\"%s\",\"locked_by\":%ld,\"holders\":[",
	       o->write ? "write" : "read", o->locked_by);
	for (size_t j = 0; j < o->nholders && j < KERNEL_LOCKS_NAMED; j++) {
		printf("%s{\"pid\":%ld,\"comm\":", j ? "," : "", o->holder[j].pid);
		json_string(stdout, o->holder[j].comm);
		printf("}");
	}
	printf("],\"unseen\":%zu}", o->unseen);
}

static void print_json(const coord_lease_info_t *v, size_t n, const struct kernel_locks *k)
{
	int first = 1;
	printf("{\"leases\":[");
	for (size_t i = 0; i < n; i++) {
		if (v[i].waiting)
			continue;
		printf("%s{\"id\":%" PRIu64 ",\"resource\":", first ? "" : ",", v[i].lease_id);
		json_string(stdout, v[i].resource);
		json_who(&v[i]);
		printf(",\"token\":%" PRIu64 ",\"age_ms\":%" PRIu64, v[i].token, v[i].age_ms);
		if (v[i].recalled_ms >= 0)
			printf(",\"recalled_ms\":%" PRId64, v[i].recalled_ms);
		else
			printf(",\"recalled_ms\":null");
		printf(",\"adopted\":%s", v[i].adopted ? "true" : "false");
		printf(",\"cached\":%s", v[i].cached == COORD_CACHED_IDLE     ? "\"idle\""
		                         : v[i].cached == COORD_CACHED_IN_USE ? "\"in-use\""
		                                                               : "null");
		json_kernel_lock(kernel_locks_waits_for(k, i));
		printf("}");
		first = 0;
	}
	printf("],\"waiters\":[");
	first = 1;
	for (size_t i = 0; i < n; i++) {
		if (!v[i].waiting)
			continue;
		printf("%s{\"resource\":", first ? "" : ",");
		json_string(stdout, v[i].resource);
		json_who(&v[i]);
		printf(",\"waited_ms\":%" PRIu64 "}", v[i].age_ms);
		first = 0;
	}
	printf("]}\n");
}

/* The table of `list` and `show`.  A holder that still waits for its
 * kernel lock (see kernel_locks.c) says so at the end of its line. */
static void print_table(const coord_lease_info_t *v, size_t n, const struct kernel_locks *k)
{
	printf("%-6s %-5s %7s %-15s %-8s %8s %6s  %s\n", "STATE", "MODE", "PID", "COMMAND", "AGE",
	       "TOKEN", "LEASE", "RESOURCE [LABEL]");
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			const coord_lease_info_t *e = &v[i];
			const struct kernel_lock_outsider *o = kernel_locks_waits_for(k, i);
			char age[32], tok[32] = "-", id[32] = "-", recalled[64] = "", klock[256] = "";
			if (e->waiting != pass)
				continue;
			fmt_duration(age, sizeof age, e->age_ms);
			if (e->recalled_ms >= 0) {
				char ago[32];
				fmt_duration(ago, sizeof ago, (uint64_t)e->recalled_ms);
				snprintf(recalled, sizeof recalled, " (recalled %s ago)", ago);
			}
			if (e->adopted)
				snprintf(recalled + strlen(recalled), sizeof recalled - strlen(recalled),
				         " (adopted)");
			if (e->cached)
				snprintf(recalled + strlen(recalled), sizeof recalled - strlen(recalled),
				         e->cached == COORD_CACHED_IDLE ? " (cached, idle)"
				                                        : " (cached, in use)");
			if (o) {
				char note[240];
				kernel_locks_describe(o, note, sizeof note);
				snprintf(klock, sizeof klock, " (%s)", note);
			}
			if (!e->waiting) {
				snprintf(tok, sizeof tok, "%" PRIu64, e->token);
				snprintf(id, sizeof id, "%" PRIu64, e->lease_id);
			}
			printf("%-6s %-5s %7" PRIu64 " %-15s %-8s %8s %6s  %s%s%s%s%s%s\n",
			       pass ? "wait" : "held", mode_name(e->mode), e->pid, e->command, age, tok,
			       id, e->resource, e->label[0] ? " [" : "", e->label,
			       e->label[0] ? "]" : "", recalled, klock);
		}
	}
	if (!n)
		printf("(no leases)\n");
}

/* The instance directory of connection c, copied: keys' lock files are
 * there, and it is needed after the connection is closed. */
static void copy_dir(const coord_t *c, char *buf, size_t size)
{
	snprintf(buf, size, "%s", coord_dir(c) ? coord_dir(c) : "");
}

static int cmd_list(int argc, char **argv)
{
	coord_lease_info_t *v = NULL;
	struct kernel_locks k;
	char dir[COORD_DIR_MAX + 1];
	size_t n = 0;
	coord_t *c;
	int json = 0, rc;
	if (argc == 2 && !strcmp(argv[1], "--json"))
		json = 1;
	else if (argc != 1) {
		usage(stderr);
		return EX_USAGE;
	}
	rc = connect_broker(&c, 0);
	if (rc == COORD_ENOBROKER) {
		/* No broker: nothing is held through coord. */
		if (json)
			printf("{\"leases\":[],\"waiters\":[],\"broker\":false}\n");
		else
			printf("(no broker running: no leases)\n");
		return EX_OK;
	}
	if (rc < 0)
		return complain(rc, "connect");
	rc = coord_list(c, &v, &n);
	copy_dir(c, dir, sizeof dir);
	coord_disconnect(c);
	if (rc < 0)
		return complain(rc, "list");
	if (kernel_locks_check(v, n, dir, &k) < 0) {
		kernel_locks_free(&k);
		coord_free(v);
		return complain(COORD_ENOMEM, "list: kernel locks");
	}
	if (json)
		print_json(v, n, &k);
	else
		print_table(v, n, &k);
	kernel_locks_free(&k);
	coord_free(v);
	return EX_OK;
}

/* ---- show / checkpoint ---- */

static void print_policy(const coord_resource_info_t *i)
{
	const coord_policy_t *p = &i->policy;
	if (p->policy == COORD_POLICY_EXEC)
		printf("policy:     exec:%s (time limit %u ms)\n", p->command, (unsigned)p->timeout_ms);
	else if (p->policy == COORD_POLICY_SQLITE)
		printf("policy:     sqlite:%s (time limit %u ms)\n",
		       coord_sqlite_mode_name(p->sqlite_mode), (unsigned)p->timeout_ms);
	else
		printf("policy:     %s (time limit %u ms)%s\n", coord_policy_name(p->policy),
		       (unsigned)p->timeout_ms,
		       p->policy == COORD_POLICY_AUTO
		               ? (i->kind == COORD_KIND_SQLITE
		                          ? ", checkpoints SQLite on release"
		                          : i->kind == COORD_KIND_DUCKDB ? ", checkpoints DuckDB on release"
		                                                         : ", no checkpoints")
		               : "");
}

/* "none", or "max hold 60 s, recall grace 10 s" (what is set). */
static const char *limits_text(const coord_limits_t *l, char *buf, size_t size)
{
	int n = 0;
	if (!l->max_hold_ms && !l->recall_grace_ms)
		return "none";
	buf[0] = 0;
	if (l->max_hold_ms)
		n = snprintf(buf, size, "max hold %g s", l->max_hold_ms / 1000.0);
	if (l->recall_grace_ms && n >= 0 && (size_t)n < size)
		snprintf(buf + n, size - (size_t)n, "%srecall grace %g s", n ? ", " : "",
		         l->recall_grace_ms / 1000.0);
	return buf;
}

static void print_limits(const coord_resource_info_t *i)
{
	char buf[96];
	printf("limits:     %s\n", limits_text(&i->limits, buf, sizeof buf));
}

static void print_last_checkpoint(const coord_resource_info_t *i)
{
	char when[64] = "never", dur[32], before[32], after[32];
	if (i->checkpoints) {
		time_t t = (time_t)(i->last_at_ms / 1000);
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(dur, sizeof dur, "%.1f ms", i->last_duration_us / 1000.0);
		fmt_bytes(before, sizeof before, i->wal_before);
		fmt_bytes(after, sizeof after, i->wal_after);
		printf("last checkpoint: %s, took %s, %s, WAL %s -> %s (%" PRIu64 " so far)\n", when,
		       dur, i->last_result ? coord_errname(i->last_result) : "ok", before, after,
		       i->checkpoints);
	} else {
		printf("last checkpoint: never\n");
	}
	if (i->message[0])
		printf("                 %s\n", i->message);
}

/* Canonicalises a RESOURCE argument into name (COORD_NAME_MAX + 1 bytes).
 * Returns 0, or the exit status after saying what is wrong with it. */
static int canonical_arg(const char *arg, char *name)
{
	int rc = coord_canonicalize(arg, name, COORD_NAME_MAX + 1);
	if (rc < 0)
		return complain(rc, "%s", arg);
	return 0;
}

/* The start of `show RESOURCE` and `checkpoint RESOURCE`: checks the
 * arguments, canonicalises RESOURCE into name (COORD_NAME_MAX + 1 bytes)
 * and connects.  Returns -1 with *c connected, else the exit status. */
static int resource_command(int argc, char **argv, const char *what, int autostart, char *name,
                            coord_t **c)
{
	int rc;
	if (argc != 2) {
		usage(stderr);
		return EX_USAGE;
	}
	if ((rc = canonical_arg(argv[1], name)))
		return rc;
	rc = connect_broker(c, autostart);
	if (rc < 0)
		return complain(rc, "%s %s: connect", what, name);
	return -1;
}

static int cmd_show(int argc, char **argv)
{
	coord_resource_info_t info;
	coord_lease_info_t *v = NULL;
	struct kernel_locks k;
	char name[COORD_NAME_MAX + 1], dir[COORD_DIR_MAX + 1];
	size_t n = 0;
	coord_t *c;
	/* looking never starts a broker */
	int rc = resource_command(argc, argv, "show", 0, name, &c);
	if (rc >= 0)
		return rc;
	rc = coord_show(c, name, &info, &v, &n);
	copy_dir(c, dir, sizeof dir);
	coord_disconnect(c);
	if (rc < 0)
		return complain(rc, "show %s", name);
	if (kernel_locks_check(v, n, dir, &k) < 0) {
		kernel_locks_free(&k);
		coord_free(v);
		return complain(COORD_ENOMEM, "show %s: kernel locks", name);
	}
	printf("resource:   %s\n", name);
	printf("kind:       %s\n", coord_kind_name(info.kind));
	print_policy(&info);
	print_limits(&info);
	if (!info.duckdb_available &&
	    (info.kind == COORD_KIND_DUCKDB || info.policy.policy == COORD_POLICY_DUCKDB))
		printf("warning:    DuckDB checkpoints are OFF (see below)\n");
	printf("token:      %" PRIu64 "\n", info.token);
	printf("checkpoint: %s\n", info.checkpoint_running ? "running now" : "idle");
	print_last_checkpoint(&info);
	printf("\n");
	print_table(v, n, &k);
	kernel_locks_free(&k);
	coord_free(v);
	return EX_OK;
}

static int cmd_checkpoint(int argc, char **argv)
{
	coord_resource_info_t info;
	char name[COORD_NAME_MAX + 1], before[32], after[32];
	coord_t *c;
	/* checkpointing may start a broker */
	int rc = resource_command(argc, argv, "checkpoint", 1, name, &c);
	if (rc >= 0)
		return rc;
	memset(&info, 0, sizeof info);
	rc = coord_checkpoint(c, name, &info);
	coord_disconnect(c);
	if (rc < 0 && info.name[0]) {
		/* The broker took its turn on the file and says what went wrong. */
		fprintf(stderr, "%s: checkpoint %s: %s\n%s: %s\n", progname, name, coord_strerror(rc),
		        progname, info.message);
		return EX_FAIL;
	}
	if (rc < 0)
		return complain(rc, "checkpoint %s", name);
	fmt_bytes(before, sizeof before, info.wal_before);
	fmt_bytes(after, sizeof after, info.wal_after);
	printf("checkpointed %s (%s) in %.1f ms: WAL %s -> %s\n%s\n", name, coord_kind_name(info.kind),
	       info.last_duration_us / 1000.0, before, after, info.message);
	return EX_OK;
}

/* ---- revoke ---- */

static int cmd_revoke(int argc, char **argv)
{
	coord_revoke_t what = { 0 };
	const char *target = NULL;
	char *end;
	coord_t *c;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--grace") && i + 1 < argc) {
			double s = strtod(argv[++i], &end);
			if (*end || !(s >= 0) || s > 3600) {
				fprintf(stderr, "%s: revoke: --grace takes seconds (0 to 3600)\n", progname);
				return EX_USAGE;
			}
			what.grace_ms = s * 1000 < 1 ? 1 : (int)llround(s * 1000); /* 0: at once */
		} else if (!strcmp(argv[i], "--pid") && i + 1 < argc && !target) {
			what.pid = strtol(argv[++i], &end, 10);
			if (*end || what.pid <= 0) {
				fprintf(stderr, "%s: revoke: --pid takes a process id\n", progname);
				return EX_USAGE;
			}
			target = argv[i];
		} else if (argv[i][0] != '-' && !target) {
			target = argv[i];
		} else {
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (!target) {
		usage(stderr);
		return EX_USAGE;
	}
	if (!what.pid) {
		unsigned long long id = strtoull(target, &end, 10);
		if (!*end && id > 0)
			what.lease_id = id;
		else
			what.resource = target;
	}
	rc = connect_broker(&c, 0);
	if (rc < 0)
		return complain(rc, "revoke %s: connect", target);
	rc = coord_revoke(c, &what);
	coord_disconnect(c);
	if (rc == COORD_EPERM) {
		fprintf(stderr, "%s: revoke %s: %s\n%s: the lease is still held: revoke it as its holder's "
		        "user, as root or as a member of coordd's --admin-group, and run coordd as "
		        "root to revoke other users' leases\n",
		        progname, target, coord_strerror(rc), progname);
		return EX_FAIL;
	}
	if (rc == COORD_ENOLEASE) {
		fprintf(stderr, "%s: revoke %s: %s\n%s: hint: see the leases with `coordctl list`\n",
		        progname, target, coord_strerror(rc), progname);
		return EX_FAIL;
	}
	if (rc < 0)
		return complain(rc, "revoke %s", target);
	printf("revoked %s\n", target);
	return EX_OK;
}

/* ---- policy ---- */

static int cmd_policy(int argc, char **argv)
{
	coord_policy_t policy;
	char name[COORD_NAME_MAX + 1];
	const char *spec;
	double secs = 0;
	int rc, too_long;
	coord_t *c;

	if (argc == 5 && !strcmp(argv[3], "--timeout")) {
		char *end;
		secs = strtod(argv[4], &end);
		if (*end || !(secs > 0) || secs > 86400) {
			fprintf(stderr, "%s: --timeout takes seconds (0 < s <= 86400)\n", progname);
			return EX_USAGE;
		}
	} else if (argc != 3) {
		usage(stderr);
		return EX_USAGE;
	}
	spec = argv[2];
	/* coord_policy_parse() refuses an exec command that is too long; say
	 * that rather than "bad policy", once the resource is known good. */
	too_long = !strncmp(spec, "exec:", 5) && strlen(spec + 5) > COORD_COMMAND_MAX;
	if (!too_long && coord_policy_parse(spec, &policy) < 0) {
		fprintf(stderr, "%s: bad policy '%s': use auto, none, sqlite[:MODE], duckdb or exec:COMMAND\n",
		        progname, spec);
		return EX_USAGE;
	}
	if ((rc = canonical_arg(argv[1], name)))
		return rc;
	if (too_long) {
		fprintf(stderr, "%s: exec command longer than %d bytes\n", progname, COORD_COMMAND_MAX);
		return EX_USAGE;
	}
	policy.timeout_ms = (uint32_t)llround(secs * 1000);
	rc = connect_broker(&c, 1);
	if (rc < 0)
		return complain(rc, "connect");
	rc = coord_set_policy(c, name, &policy);
	coord_disconnect(c);
	if (rc < 0)
		return complain(rc, "policy %s", name);
	printf("%s: policy %s\n", name, spec);
	return EX_OK;
}

/* ---- limit ---- */

/* Seconds (0 <= s <= 30 days) into milliseconds; -1 if not. */
static long long limit_ms(const char *opt, const char *arg)
{
	char *end;
	double secs = strtod(arg, &end);
	if (*end || *arg == 0 || !(secs >= 0) || secs * 1000 > COORD_LIMIT_MAX_SECONDS * 1000.0) {
		fprintf(stderr, "%s: %s takes seconds (0 <= s <= %d; 0 turns it off)\n", progname, opt,
		        COORD_LIMIT_MAX_SECONDS);
		return -1;
	}
	return llround(secs * 1000);
}

static int cmd_limit(int argc, char **argv)
{
	char name[COORD_NAME_MAX + 1], buf[96];
	coord_resource_info_t info;
	int rc, set = 0;
	coord_t *c;

	if (argc < 2 || argc % 2) {
		usage(stderr);
		return EX_USAGE;
	}
	if ((rc = canonical_arg(argv[1], name)))
		return rc;
	rc = connect_broker(&c, 1);
	if (rc < 0)
		return complain(rc, "connect");
	/* Options change what they name and keep the rest as it is. */
	rc = coord_show(c, name, &info, NULL, NULL);
	for (int i = 2; rc == 0 && i < argc; i += 2) {
		uint32_t *to = !strcmp(argv[i], "--max-hold")       ? &info.limits.max_hold_ms
		               : !strcmp(argv[i], "--recall-grace") ? &info.limits.recall_grace_ms
		                                                    : NULL;
		long long ms = to ? limit_ms(argv[i], argv[i + 1]) : -1;
		if (!to)
			usage(stderr);
		if (ms < 0) {
			coord_disconnect(c);
			return EX_USAGE;
		}
		*to = (uint32_t)ms;
		set = 1;
	}
	if (rc == 0 && set)
		rc = coord_set_limits(c, name, &info.limits);
	coord_disconnect(c);
	if (rc == COORD_EPERM) {
		/* Connected, so the instance is ours to use: the operation is
		 * what is refused. */
		snprintf(case_hint, sizeof case_hint,
		         "hold limits signal holders, so only root, the broker's user and members of "
		         "its --admin-group may set them");
		complain(rc, "limit %s", name);
		return EX_FAIL;
	}
	if (rc < 0)
		return complain(rc, "limit %s", name);
	printf("%s: limits %s\n", name, limits_text(&info.limits, buf, sizeof buf));
	return EX_OK;
}

/* ---- run ---- */

/* `coordctl run` is the subreaper of its command: every process the
 * command starts, directly or not, that loses its parent becomes
 * coordctl's child, and coordctl releases the lease only once the last of
 * them has exited.  So a job's background children (`sh -c 'backfill &'`)
 * stay under the lease whether the command exits or is killed, and the
 * release can never drop the kernel lock they share with coordctl (an
 * flock belongs to the open file description that all of them inherited,
 * and coordctl's unlock would unlock it for them too).  If coordctl itself
 * is killed, PR_SET_PDEATHSIG kills the command, and what the command
 * started keeps the inherited kernel lock, so the next holder waits for
 * it. */
static volatile sig_atomic_t child_pid, pending_signal;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
	pending_signal = sig;
}

/* Sends sig to every child coordctl has now: the command's descendants
 * that were left to it as subreaper (in /proc/self/task/TID/children). */
static void signal_children(int sig)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *p = buf, *end; *p; p = end) {
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid > 0)
			kill((pid_t)pid, sig);
	}
}

/* Reaps the command's orphaned descendants until none is left, passing on
 * the signals coordctl gets meanwhile (a revoke's SIGTERM, Ctrl+C). */
static void wait_descendants(void)
{
	for (;;) {
		int sig = pending_signal;
		if (sig) {
			pending_signal = 0;
			signal_children(sig);
		}
		if (waitpid(-1, NULL, 0) < 0 && errno != EINTR)
			return; /* ECHILD: the last one is gone */
	}
}

static int cmd_run(int argc, char **argv)
{
	coord_t *c = NULL;
	coord_lease_t *lease = NULL;
	const char *label = NULL, *resource;
	int mode = 0, timeout_ms = -1, i, rc, status, kfd;
	pid_t parent, pid;
	char buf[64];

	/* Options may come before or after RESOURCE; "--" or the first
	 * word after RESOURCE starts the command. */
	resource = NULL;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "--read") || !strcmp(a, "--write")) {
			if (mode) {
				fprintf(stderr, "%s: run: give one of --read or --write\n", progname);
				return EX_USAGE;
			}
			mode = a[2] == 'r' ? COORD_READ : COORD_WRITE;
		} else if (!strcmp(a, "--timeout") && i + 1 < argc) {
			char *end;
			double s = strtod(argv[++i], &end);
			if (*end || end == argv[i] || !(s >= 0) || s > 86400.0 * 365) {
				fprintf(stderr, "%s: run: --timeout takes seconds, e.g. 0, 2.5 or 60\n",
				        progname);
				return EX_USAGE;
			}
			timeout_ms = (int)llround(s * 1000);
		} else if (!strcmp(a, "--label") && i + 1 < argc) {
			label = argv[++i];
		} else if (a[0] == '-' && a[1] == '-') {
			fprintf(stderr, "%s: run: unknown option %s\n", progname, a);
			return EX_USAGE;
		} else if (!resource) {
			resource = a;
		} else {
			break;
		}
	}
	if (!mode || !resource || i >= argc) {
		fprintf(stderr, "%s: run: usage: coordctl run --read|--write RESOURCE [--timeout SECONDS] "
		                "[--label TEXT] -- COMMAND [ARGS...]\n",
		        progname);
		return EX_USAGE;
	}
	optind = i;

	rc = connect_broker(&c, 1);
	if (rc < 0)
		return complain(rc, "run: connect");
	rc = coord_acquire(c, resource, mode, timeout_ms, label, &lease);
	if (rc < 0) {
		if (rc == COORD_ETIMEDOUT || rc == COORD_EBUSY)
			fprintf(stderr, "%s: run: %s lease on %s not granted within %.3gs\n", progname,
			        mode_name(mode), resource, timeout_ms / 1000.0);
		if (rc == COORD_EINSTANCE)
			share_explain_einstance(resource, coord_dir(c), case_hint, sizeof case_hint);
		status = complain(rc, "run: %s %s", mode_name(mode), resource);
		coord_disconnect(c);
		return status;
	}

	parent = getpid();
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	{
		/* No SA_RESTART: a signal must interrupt wait_descendants()'s
		 * waitpid() so it is passed on at once. */
		struct sigaction sa = { .sa_handler = forward_signal };
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
		sigaction(SIGQUIT, &sa, NULL);
	}
	kfd = coord_lease_fd(lease);
	pid = fork();
	if (pid < 0) {
		status = complain(COORD_ESYS, "run: fork");
		goto out;
	}
	if (pid == 0) {
		/* If coordctl dies (even by SIGKILL), the lease goes with it and
		 * so must the command. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(EX_TEMPFAIL);
		/* The command and whatever it starts inherit the file's kernel
		 * lock, as with flock(1): a descendant that outlives coordctl
		 * keeps the file locked, so the next holder waits for it. */
		if (kfd >= 0)
			fcntl(kfd, F_SETFD, 0);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		setenv("COORD_RESOURCE", coord_lease_resource(lease), 1);
		setenv("COORD_MODE", mode_name(mode), 1);
		snprintf(buf, sizeof buf, "%" PRIu64, coord_lease_token(lease));
		setenv("COORD_TOKEN", buf, 1);
		snprintf(buf, sizeof buf, "%" PRIu64, coord_lease_id(lease));
		setenv("COORD_LEASE_ID", buf, 1);
		execvp(argv[optind], argv + optind);
		fprintf(stderr, "%s: run: cannot execute %s: %s\n", progname, argv[optind],
		        strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	child_pid = pid;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			status = complain(COORD_ESYS, "run: waitpid");
			goto out;
		}
	}
	status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	child_pid = 0;
	wait_descendants();
out:
	rc = coord_release(lease);
	if (rc < 0 && rc != COORD_ENOLEASE)
		complain(rc, "run: release %s", resource);
	coord_disconnect(c);
	return status;
}

/* ---- doctor ---- */

static int cmd_doctor(int argc, char **argv)
{
	coord_lease_info_t *v = NULL;
	struct doctor_lease *dl = NULL;
	char name[COORD_NAME_MAX + 1];
	size_t n = 0, count = 0;
	coord_t *c;
	int broker_up = 0, rc;
	if (argc != 2) {
		usage(stderr);
		return EX_USAGE;
	}
	if (coord_canonicalize(argv[1], name, sizeof name) < 0)
		snprintf(name, sizeof name, "%s", argv[1]);
	if (connect_broker(&c, 0) == 0) {
		broker_up = coord_list(c, &v, &count) == 0;
		coord_disconnect(c);
	}
	dl = calloc(count + 1, sizeof *dl);
	for (size_t i = 0; dl && i < count; i++) {
		if (v[i].waiting || strcmp(v[i].resource, name))
			continue;
		dl[n].mode = mode_name(v[i].mode);
		dl[n].pid = (long)v[i].pid;
		dl[n].command = v[i].command;
		dl[n].token = v[i].token;
		n++;
	}
	rc = doctor_run(stdout, name, dl, n, broker_up);
	free(dl);
	coord_free(v);
	return rc;
}

/* ---- shared instances (share.c) ---- */

static int cmd_setup_shared(int argc, char **argv)
{
	return share_setup_command(argc, argv, dir_opt);
}

static int cmd_share(int argc, char **argv)
{
	return share_mark_command(argc, argv, dir_opt);
}

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
} commands[] = {
	{ "status", cmd_status },
	{ "list", cmd_list },
	{ "show", cmd_show },
	{ "run", cmd_run },
	{ "checkpoint", cmd_checkpoint },
	{ "policy", cmd_policy },
	{ "limit", cmd_limit },
	{ "revoke", cmd_revoke },
	{ "doctor", cmd_doctor },
	{ "setup-shared", cmd_setup_shared },
	{ "share", cmd_share },
};

int main(int argc, char **argv)
{
	int i = 1;
	const char *cmd;
	if (i + 1 < argc && !strcmp(argv[i], "--dir")) {
		dir_opt = argv[i + 1];
		i += 2;
	}
	if (i >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	cmd = argv[i];
	argc -= i;
	argv += i;
	if (!strcmp(cmd, "watch"))
		return cmd_watch(argc, argv, dir_opt);
	if (!strcmp(cmd, "metrics"))
		return cmd_metrics(argc, argv, dir_opt);
	for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
		if (!strcmp(cmd, commands[k].name))
			return commands[k].run(argc, argv);
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return EX_OK;
	}
	fprintf(stderr, "%s: unknown command '%s'\n", progname, cmd);
	usage(stderr);
	return EX_USAGE;
}

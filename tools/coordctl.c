/* coordctl: the admin and script tool.
 *
 * Subcommands talk to the broker of the instance directory over the same
 * socket protocol as the library (it reuses the library's private
 * send/receive helpers).  Only `run` and `checkpoint` start a broker when
 * none is running; the inspection commands never do, so looking never
 * changes anything.
 *
 * Exit status (stable, scripts depend on it):
 *   run: the command's own status; 75 lease not granted within --timeout;
 *        69 no broker reachable or startable; 64 usage error;
 *        126/127 the command could not be executed.
 *   others: 0 ok, 1 failed, 64 usage, 69 no broker, 75 timed out;
 *   doctor: 0 healthy, 1 problems found, 2 could not inspect. */
#define _GNU_SOURCE
#include <errno.h>
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

#define COORD_IMPLEMENTATION
#include "coord.h"

#include "checkpoint.h"
#include "doctor.h"

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 64, EX_UNAVAILABLE = 69, EX_TEMPFAIL = 75 };

static const char *progname = "coordctl";

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: coordctl [--dir DIR] COMMAND [ARGS]\n"
	        "\n"
	        "  status                       is a broker up; its directory, pid, uptime, counts\n"
	        "  list [--json]                every lease and waiter\n"
	        "  show RESOURCE                kind, policy, holders, waiters, last checkpoint\n"
	        "  run --read|--write RESOURCE [--timeout SECONDS] [--label TEXT] -- COMMAND [ARGS]\n"
	        "                               run COMMAND while holding the lease (like flock(1))\n"
	        "  checkpoint RESOURCE          checkpoint a database file now, through the broker\n"
	        "  policy RESOURCE SPEC [--timeout SECONDS]\n"
	        "                               SPEC: auto | none | sqlite[:passive|full|restart|truncate]\n"
	        "                                     | duckdb | exec:COMMAND\n"
	        "  doctor PATH                  what is wrong with a database file (changes nothing)\n"
	        "\n"
	        "The instance directory is --dir, else $COORD_DIR, else the per-user default.\n"
	        "Exit status: see coordctl(1); run returns the command's status, 75 when the lease\n"
	        "was not granted in time, 69 when no broker can be reached, 64 on usage errors.\n");
}

static int fail_code(int rc)
{
	switch (rc) {
	case COORD_ENOBROKER:
	case COORD_EPERM:
	case COORD_EIO:
		return EX_UNAVAILABLE;
	case COORD_ETIMEDOUT:
	case COORD_EBUSY:
		return EX_TEMPFAIL;
	case COORD_EINVAL:
	case COORD_ENAME:
		return EX_USAGE;
	default:
		return EX_FAIL;
	}
}

static const char *hint(int rc)
{
	switch (rc) {
	case COORD_ENOBROKER:
		return "start one with `coordd --daemon` (or unset COORD_NO_AUTOSTART), and check "
		       "that coordd is on PATH or COORD_BROKER names it";
	case COORD_EPERM:
		return "you may not use this instance directory; check its owner and mode";
	case COORD_ENAME:
		return "a resource is a file path (its directory must exist) or a key without '/', "
		       "at most 511 bytes";
	case COORD_ETIMEDOUT:
	case COORD_EBUSY:
		return "see who holds it with `coordctl list`";
	case COORD_EDEADLK:
		return "this process already holds the resource";
	case COORD_EPROTO:
		return "coordctl and coordd are different versions; restart coordd";
	default:
		return NULL;
	}
}

/* "coordctl: <what>: COORD_ENAME: message" and a hint line, on stderr. */
static int complain(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int complain(int rc, const char *fmt, ...)
{
	va_list ap;
	const char *h = hint(rc);
	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", coord_strerror(rc));
	if (h)
		fprintf(stderr, "%s: hint: %s\n", progname, h);
	return fail_code(rc);
}

static const char *dir_opt;

static int connect_broker(coord_t **c, int autostart)
{
	coord_options_t o = { .dir = dir_opt, .no_autostart = !autostart };
	return coord_connect(c, &o);
}

/* Sends msg and feeds every reply to on_msg until it returns non-zero
 * (1: done, <0: error code).  Returns 0 or a COORD_E* code. */
static int exchange(coord_t *c, void *msg, size_t len,
                    int (*on_msg)(void *ud, const char *buf, size_t n), void *ud)
{
	static char buf[COORD_MSG_MAX];
	coord_msg_hdr *h = msg;
	int rc;
	pthread_mutex_lock(&c->lock);
	h->seq = ++c->seq;
	rc = coord__send(c, msg, len);
	while (rc == 0) {
		int n = coord__recv(c, h->seq, buf, sizeof buf, -1);
		if (n < 0) {
			rc = n;
			break;
		}
		if (((coord_msg_hdr *)buf)->type == COORD_MSG_REPLY) {
			const coord_msg_reply *r = (const void *)buf;
			rc = (size_t)n >= sizeof *r && r->status < 0 ? r->status : 0;
			if (rc == 0)
				rc = on_msg(ud, buf, (size_t)n) < 0 ? COORD_EPROTO : 0;
			break;
		}
		rc = on_msg(ud, buf, (size_t)n);
		if (rc > 0) {
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
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

static int on_status(void *ud, const char *buf, size_t n)
{
	coord_msg_status_reply *out = ud;
	static char dir[COORD_MSG_MAX];
	const coord_msg_status_reply *s = (const void *)buf;
	if (s->h.type != COORD_MSG_STATUS_REPLY || n < sizeof *s || n != sizeof *s + s->dir_len)
		return COORD_EPROTO;
	*out = *s;
	memcpy(dir, buf + sizeof *s, s->dir_len);
	dir[s->dir_len] = 0;
	return 1;
}

static int cmd_status(int argc, char **argv)
{
	coord_t *c;
	coord_msg_hdr req = { COORD_MSG_STATUS, 0 };
	coord_msg_status_reply s;
	char up[32];
	int rc;
	(void)argv;
	if (argc != 1) {
		usage(stderr);
		return EX_USAGE;
	}
	rc = connect_broker(&c, 0);
	if (rc == COORD_ENOBROKER) {
		char d[4096];
		if (dir_opt)
			snprintf(d, sizeof d, "%s", dir_opt);
		else if (getenv("COORD_DIR"))
			snprintf(d, sizeof d, "%s", getenv("COORD_DIR"));
		else
			coord_default_dir(d, sizeof d);
		printf("broker:    not running\ndirectory: %s\n", d);
		return EX_UNAVAILABLE;
	}
	if (rc < 0)
		return complain(rc, "connect");
	rc = exchange(c, &req, sizeof req, on_status, &s);
	if (rc < 0) {
		coord_disconnect(c);
		return complain(rc, "status");
	}
	fmt_duration(up, sizeof up, s.uptime_ms);
	printf("broker:    running (pid %" PRIu64 ", up %s, protocol %u)\n", s.broker_pid, up,
	       s.version);
	printf("directory: %s\n", c->dir);
	printf("clients:   %" PRIu64 " (including this one)\n", s.clients);
	printf("leases:    %" PRIu64 " held, %" PRIu64 " waiting, %" PRIu64 " resources known\n",
	       s.leases, s.waiters, s.resources);
	coord_disconnect(c);
	return EX_OK;
}

/* ---- list ---- */

struct info {
	coord_msg_lease_info m;
	char name[COORD_NAME_MAX + 1];
	char comm[64];
	char label[COORD_LABEL_MAX + 1];
};

struct info_list {
	struct info *v;
	size_t n, cap;
};

static int decode_info(const char *buf, size_t n, struct info *out)
{
	const coord_msg_lease_info *m = (const void *)buf;
	if (n < sizeof *m || n != sizeof *m + (size_t)m->name_len + m->comm_len + m->label_len ||
	    m->name_len > COORD_NAME_MAX || m->comm_len >= sizeof out->comm ||
	    m->label_len > COORD_LABEL_MAX)
		return COORD_EPROTO;
	out->m = *m;
	memcpy(out->name, buf + sizeof *m, m->name_len);
	out->name[m->name_len] = 0;
	memcpy(out->comm, buf + sizeof *m + m->name_len, m->comm_len);
	out->comm[m->comm_len] = 0;
	memcpy(out->label, buf + sizeof *m + m->name_len + m->comm_len, m->label_len);
	out->label[m->label_len] = 0;
	return 0;
}

static int on_list(void *ud, const char *buf, size_t n)
{
	struct info_list *l = ud;
	const coord_msg_hdr *h = (const void *)buf;
	if (h->type == COORD_MSG_END)
		return 1;
	if (h->type != COORD_MSG_LEASE_INFO)
		return 0; /* other parts of a SHOW reply are read by the caller */
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct info *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return COORD_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	return decode_info(buf, n, &l->v[l->n++]);
}

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

static const char *mode_name(uint32_t m)
{
	return m == COORD_WRITE ? "write" : "read";
}

static void print_json(const struct info_list *l)
{
	int first = 1;
	printf("{\"leases\":[");
	for (size_t i = 0; i < l->n; i++) {
		const struct info *e = &l->v[i];
		if (e->m.kind != COORD_INFO_HOLDER)
			continue;
		printf("%s{\"id\":%" PRIu64 ",\"resource\":", first ? "" : ",", e->m.lease_id);
		json_string(stdout, e->name);
		printf(",\"mode\":\"%s\",\"pid\":%" PRIu64 ",\"uid\":%" PRIu64 ",\"command\":",
		       mode_name(e->m.mode), e->m.pid, e->m.uid);
		json_string(stdout, e->comm);
		printf(",\"label\":");
		json_string(stdout, e->label);
		printf(",\"token\":%" PRIu64 ",\"age_ms\":%" PRIu64 "}", e->m.token, e->m.age_ms);
		first = 0;
	}
	printf("],\"waiters\":[");
	first = 1;
	for (size_t i = 0; i < l->n; i++) {
		const struct info *e = &l->v[i];
		if (e->m.kind != COORD_INFO_WAITER)
			continue;
		printf("%s{\"resource\":", first ? "" : ",");
		json_string(stdout, e->name);
		printf(",\"mode\":\"%s\",\"pid\":%" PRIu64 ",\"command\":", mode_name(e->m.mode),
		       e->m.pid);
		json_string(stdout, e->comm);
		printf(",\"label\":");
		json_string(stdout, e->label);
		printf(",\"waited_ms\":%" PRIu64 "}", e->m.age_ms);
		first = 0;
	}
	printf("]}\n");
}

static void print_table(const struct info_list *l)
{
	printf("%-6s %-5s %7s %-15s %-8s %8s %6s  %s\n", "STATE", "MODE", "PID", "COMMAND", "AGE",
	       "TOKEN", "LEASE", "RESOURCE [LABEL]");
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < l->n; i++) {
			const struct info *e = &l->v[i];
			char age[32], tok[32] = "-", id[32] = "-";
			if ((int)e->m.kind != (pass ? COORD_INFO_WAITER : COORD_INFO_HOLDER))
				continue;
			fmt_duration(age, sizeof age, e->m.age_ms);
			if (e->m.kind == COORD_INFO_HOLDER) {
				snprintf(tok, sizeof tok, "%" PRIu64, e->m.token);
				snprintf(id, sizeof id, "%" PRIu64, e->m.lease_id);
			}
			printf("%-6s %-5s %7" PRIu64 " %-15s %-8s %8s %6s  %s%s%s%s\n",
			       pass ? "wait" : "held", mode_name(e->m.mode), e->m.pid, e->comm, age, tok, id,
			       e->name, e->label[0] ? " [" : "", e->label, e->label[0] ? "]" : "");
		}
	}
	if (!l->n)
		printf("(no leases)\n");
}

static int fetch_list(coord_t *c, struct info_list *l)
{
	coord_msg_hdr req = { COORD_MSG_LIST, 0 };
	return exchange(c, &req, sizeof req, on_list, l);
}

static int cmd_list(int argc, char **argv)
{
	struct info_list l = { 0 };
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
	rc = fetch_list(c, &l);
	coord_disconnect(c);
	if (rc < 0) {
		free(l.v);
		return complain(rc, "list");
	}
	if (json)
		print_json(&l);
	else
		print_table(&l);
	free(l.v);
	return EX_OK;
}

/* ---- show / checkpoint ---- */

struct resource_reply {
	struct info_list leases;
	coord_msg_resource_info info;
	char name[COORD_NAME_MAX + 1];
	char command[2048];
	char message[1024];
	int got;
};

static int on_show(void *ud, const char *buf, size_t n)
{
	struct resource_reply *r = ud;
	const coord_msg_resource_info *m = (const void *)buf;
	if (m->h.type == COORD_MSG_LEASE_INFO || m->h.type == COORD_MSG_END)
		return on_list(&r->leases, buf, n);
	if (m->h.type != COORD_MSG_RESOURCE_INFO)
		return COORD_EPROTO;
	if (n < sizeof *m || n != sizeof *m + (size_t)m->name_len + m->command_len + m->message_len ||
	    m->name_len > COORD_NAME_MAX || m->command_len >= sizeof r->command ||
	    m->message_len >= sizeof r->message)
		return COORD_EPROTO;
	r->info = *m;
	memcpy(r->name, buf + sizeof *m, m->name_len);
	r->name[m->name_len] = 0;
	memcpy(r->command, buf + sizeof *m + m->name_len, m->command_len);
	r->command[m->command_len] = 0;
	memcpy(r->message, buf + sizeof *m + m->name_len + m->command_len, m->message_len);
	r->message[m->message_len] = 0;
	r->got = 1;
	return 0;
}

static int on_checkpoint(void *ud, const char *buf, size_t n)
{
	int rc = on_show(ud, buf, n);
	return rc < 0 ? rc : 1; /* one RESOURCE_INFO ends it */
}

static int send_resource_msg(coord_t *c, uint32_t type, const char *name, struct resource_reply *r,
                             int (*on)(void *, const char *, size_t))
{
	union {
		coord_msg_resource m;
		char raw[COORD_MSG_MAX];
	} req;
	size_t nl = strlen(name);
	memset(&req.m, 0, sizeof req.m);
	req.m.h.type = type;
	req.m.name_len = (uint16_t)nl;
	memcpy(req.raw + sizeof req.m, name, nl);
	return exchange(c, &req, sizeof req.m + nl, on, r);
}

static void print_policy(const coord_msg_resource_info *i, const char *command)
{
	if (i->policy == COORD_POLICY_EXEC)
		printf("policy:     exec:%s (time limit %u ms)\n", command, i->timeout_ms);
	else if (i->policy == COORD_POLICY_SQLITE)
		printf("policy:     sqlite:%s (time limit %u ms)\n",
		       checkpoint_sqlite_mode_name((int)i->sqlite_mode), i->timeout_ms);
	else
		printf("policy:     %s (time limit %u ms)%s\n", checkpoint_policy_name((int)i->policy),
		       i->timeout_ms,
		       i->policy == COORD_POLICY_AUTO
		               ? (i->kind == COORD_KIND_SQLITE
		                          ? ", checkpoints SQLite on release"
		                          : i->kind == COORD_KIND_DUCKDB ? ", checkpoints DuckDB on release"
		                                                         : ", no checkpoints")
		               : "");
}

static void print_last_checkpoint(const struct resource_reply *r)
{
	char when[64] = "never", dur[32], before[32], after[32];
	if (r->info.checkpoints) {
		time_t t = (time_t)(r->info.last_at_ms / 1000);
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(dur, sizeof dur, "%.1f ms", r->info.last_duration_us / 1000.0);
		fmt_bytes(before, sizeof before, r->info.wal_before);
		fmt_bytes(after, sizeof after, r->info.wal_after);
		printf("last checkpoint: %s, took %s, %s, WAL %s -> %s (%" PRIu64 " so far)\n", when,
		       dur, r->info.last_result ? coord_errname(r->info.last_result) : "ok", before,
		       after, r->info.checkpoints);
	} else {
		printf("last checkpoint: never\n");
	}
	if (r->message[0])
		printf("                 %s\n", r->message);
}

static int canonical_arg(const char *arg, char *buf, size_t size)
{
	int rc = coord_canonicalize(arg, buf, size);
	if (rc < 0)
		return complain(rc, "%s", arg);
	return 0;
}

/* Sends SHOW or CHECKPOINT for argv[1] and collects the answer in r.
 * Returns -1 when r is filled, else the exit status to return. */
static int resource_command(int argc, char **argv, uint32_t type, char *name,
                            struct resource_reply *r)
{
	const char *what = type == COORD_MSG_SHOW ? "show" : "checkpoint";
	coord_t *c;
	int rc;
	if (argc != 2) {
		usage(stderr);
		return EX_USAGE;
	}
	if ((rc = canonical_arg(argv[1], name, COORD_NAME_MAX + 1)))
		return rc;
	memset(r, 0, sizeof *r);
	/* looking never starts a broker; checkpointing may */
	rc = connect_broker(&c, type == COORD_MSG_CHECKPOINT);
	if (rc < 0)
		return complain(rc, "%s %s: connect", what, name);
	rc = send_resource_msg(c, type, name, r, type == COORD_MSG_SHOW ? on_show : on_checkpoint);
	coord_disconnect(c);
	if (rc < 0 || !r->got) {
		free(r->leases.v);
		return complain(rc < 0 ? rc : COORD_EPROTO, "%s %s", what, name);
	}
	return -1;
}

static int cmd_show(int argc, char **argv)
{
	struct resource_reply r;
	char name[COORD_NAME_MAX + 1];
	int rc = resource_command(argc, argv, COORD_MSG_SHOW, name, &r);
	if (rc >= 0)
		return rc;
	printf("resource:   %s\n", name);
	printf("kind:       %s\n", checkpoint_kind_name((int)r.info.kind));
	print_policy(&r.info, r.command);
	if (!r.info.duckdb_available &&
	    (r.info.kind == COORD_KIND_DUCKDB || r.info.policy == COORD_POLICY_DUCKDB))
		printf("warning:    DuckDB checkpoints are OFF (see below)\n");
	printf("token:      %" PRIu64 "\n", r.info.token);
	printf("checkpoint: %s\n", r.info.checkpoint_state ? "running now" : "idle");
	print_last_checkpoint(&r);
	printf("\n");
	print_table(&r.leases);
	free(r.leases.v);
	return EX_OK;
}

static int cmd_checkpoint(int argc, char **argv)
{
	struct resource_reply r;
	char name[COORD_NAME_MAX + 1], before[32], after[32];
	int rc = resource_command(argc, argv, COORD_MSG_CHECKPOINT, name, &r);
	if (rc >= 0)
		return rc;
	free(r.leases.v);
	if (r.info.status < 0) {
		fprintf(stderr, "%s: checkpoint %s: %s\n%s: %s\n", progname, name,
		        coord_strerror(r.info.status), progname, r.message);
		return EX_FAIL;
	}
	fmt_bytes(before, sizeof before, r.info.wal_before);
	fmt_bytes(after, sizeof after, r.info.wal_after);
	printf("checkpointed %s (%s) in %.1f ms: WAL %s -> %s\n%s\n", name,
	       checkpoint_kind_name((int)r.info.kind), r.info.last_duration_us / 1000.0, before, after,
	       r.message);
	return EX_OK;
}

/* ---- policy ---- */

static int on_reply(void *ud, const char *buf, size_t n)
{
	(void)ud;
	(void)buf;
	(void)n;
	return 1;
}

static int cmd_policy(int argc, char **argv)
{
	union {
		coord_msg_policy m;
		char raw[COORD_MSG_MAX];
	} req;
	char name[COORD_NAME_MAX + 1];
	const char *spec, *command = NULL;
	int policy, mode, rc;
	double secs = 0;
	size_t nl, cl;
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
	if (checkpoint_policy_parse(spec, &policy, &mode, &command) < 0) {
		fprintf(stderr, "%s: bad policy '%s': use auto, none, sqlite[:MODE], duckdb or exec:COMMAND\n",
		        progname, spec);
		return EX_USAGE;
	}
	if ((rc = canonical_arg(argv[1], name, sizeof name)))
		return rc;
	nl = strlen(name);
	cl = command ? strlen(command) : 0;
	if (cl > COORD_COMMAND_MAX) {
		fprintf(stderr, "%s: exec command longer than %d bytes\n", progname, COORD_COMMAND_MAX);
		return EX_USAGE;
	}
	memset(&req.m, 0, sizeof req.m);
	req.m.h.type = COORD_MSG_POLICY;
	req.m.policy = (uint32_t)policy;
	req.m.sqlite_mode = (uint32_t)mode;
	req.m.timeout_ms = (uint32_t)llround(secs * 1000);
	req.m.name_len = (uint16_t)nl;
	req.m.command_len = (uint16_t)cl;
	memcpy(req.raw + sizeof req.m, name, nl);
	if (cl)
		memcpy(req.raw + sizeof req.m + nl, command, cl);
	rc = connect_broker(&c, 1);
	if (rc < 0)
		return complain(rc, "connect");
	rc = exchange(c, &req, sizeof req.m + nl + cl, on_reply, NULL);
	coord_disconnect(c);
	if (rc < 0)
		return complain(rc, "policy %s", name);
	printf("%s: policy %s\n", name, spec);
	return EX_OK;
}

/* ---- run ---- */

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
}

static int cmd_run(int argc, char **argv)
{
	coord_t *c = NULL;
	coord_lease_t *lease = NULL;
	const char *label = NULL, *resource;
	int mode = 0, timeout_ms = -1, i, rc, status;
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
			        mode_name((uint32_t)mode), resource, timeout_ms / 1000.0);
		status = complain(rc, "run: %s %s", mode_name((uint32_t)mode), resource);
		coord_disconnect(c);
		return status;
	}

	parent = getpid();
	signal(SIGINT, forward_signal);
	signal(SIGTERM, forward_signal);
	signal(SIGHUP, forward_signal);
	signal(SIGQUIT, forward_signal);
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
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		setenv("COORD_RESOURCE", coord_lease_resource(lease), 1);
		setenv("COORD_MODE", mode_name((uint32_t)mode), 1);
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
	struct info_list l = { 0 };
	struct doctor_lease *dl = NULL;
	char name[COORD_NAME_MAX + 1];
	size_t n = 0;
	coord_t *c;
	int broker_up = 0, rc;
	if (argc != 2) {
		usage(stderr);
		return EX_USAGE;
	}
	if (coord_canonicalize(argv[1], name, sizeof name) < 0)
		snprintf(name, sizeof name, "%s", argv[1]);
	if (connect_broker(&c, 0) == 0) {
		broker_up = fetch_list(c, &l) == 0;
		coord_disconnect(c);
	}
	dl = calloc(l.n + 1, sizeof *dl);
	for (size_t i = 0; dl && i < l.n; i++) {
		if (l.v[i].m.kind != COORD_INFO_HOLDER || strcmp(l.v[i].name, name))
			continue;
		dl[n].mode = mode_name(l.v[i].m.mode);
		dl[n].pid = (long)l.v[i].m.pid;
		dl[n].command = l.v[i].comm;
		dl[n].token = l.v[i].m.token;
		n++;
	}
	rc = doctor_run(stdout, name, dl, n, broker_up);
	free(dl);
	free(l.v);
	return rc;
}

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
	if (!strcmp(cmd, "status"))
		return cmd_status(argc, argv);
	if (!strcmp(cmd, "list"))
		return cmd_list(argc, argv);
	if (!strcmp(cmd, "show"))
		return cmd_show(argc, argv);
	if (!strcmp(cmd, "run"))
		return cmd_run(argc, argv);
	if (!strcmp(cmd, "checkpoint"))
		return cmd_checkpoint(argc, argv);
	if (!strcmp(cmd, "policy"))
		return cmd_policy(argc, argv);
	if (!strcmp(cmd, "doctor"))
		return cmd_doctor(argc, argv);
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return EX_OK;
	}
	fprintf(stderr, "%s: unknown command '%s'\n", progname, cmd);
	usage(stderr);
	return EX_USAGE;
}

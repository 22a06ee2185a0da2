/* coordctl status, list and show: what the broker says, for people (a
 * table) and for scripts (--json).
 *
 * Everything here only looks: no broker is started, nothing is locked or
 * signalled.  Text from elsewhere (labels, command names and lines,
 * resource paths, checkpoint messages) goes out through text.c only, so
 * it can neither break the JSON nor put a control character on a
 * terminal.  The JSON keys of earlier versions keep their names, places
 * and meanings; new facts get new keys.
 *
 * The COMMAND of a lease is what really holds it.  The broker records the
 * comm of the process that connected; for `coordctl run` that is
 * "coordctl", while the lease serves the command it wraps.  So the
 * command line is read from /proc: the holder's own, or for a coordctl
 * holder its first child's (the wrapped command, or what is left of it).
 * A process whose comm is no longer the one the broker recorded is not
 * the holder (its pid was reused): then only the broker's comm is shown. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "kernel_locks.h"
#include "procfs.h"
#include "share.h"
#include "text.h"

/* Longest command line read from /proc. */
#define CMDLINE_MAX 4096
/* Columns of COMMAND in the narrow table. */
#define COMMAND_COLS 24

/* ---- who holds: command lines from /proc ---- */

struct who {
	long pid;      /* the lease's pid, as the broker gave it */
	long cmd_pid;  /* whose command line: pid, its child, or 0 unknown */
	char *argv;    /* the arguments, each ended by a NUL; NULL unknown */
	size_t len;
	size_t entry;  /* an entry of the list with this pid */
	char *json;    /* json_cmdline()'s text, made at its first use */
	size_t json_len;
	char *cmd;     /* the COMMAND cell, made at its first use */
};

struct whos {
	struct who *v;
	size_t n;
};

static int by_pid(const void *a, const void *b)
{
	const struct who *x = a, *y = b;
	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

/* 1 if the command line argv (len bytes) is the one comm was made from:
 * the kernel names a process after the file it executed, cut to 15
 * bytes, and that is argv[0] or, for a script run through its #! line,
 * argv[1].  A process that renamed itself (PR_SET_NAME) fails, and is
 * then shown by the name it chose. */
static int cmdline_matches(const char *argv, size_t len, const char *comm)
{
	size_t n = strlen(comm);
	const char *a = argv;
	for (int i = 0; i < 2 && a < argv + len; i++, a += strlen(a) + 1) {
		const char *base = strrchr(a, '/');
		base = base ? base + 1 : a;
		if (n && !strncmp(base, comm, n))
			return 1;
	}
	return 0;
}

/* The command line of process pid into a new buffer (*len bytes, the
 * last a NUL), if it is the one comm (the process's, as the broker
 * recorded it or as read now) was made from; NULL if not. */
static char *cmdline_of(long pid, const char *comm, size_t *len)
{
	char buf[CMDLINE_MAX], *out;
	ssize_t n = procfs_cmdline(pid, buf, CMDLINE_MAX);
	if (n > 0 && buf[n - 1]) /* a process may rewrite its arguments without NULs */
		buf[n < CMDLINE_MAX ? n++ : n - 1] = 0;
	if (n <= 0 || !cmdline_matches(buf, (size_t)n, comm) || !(out = malloc((size_t)n)))
		return NULL;
	memcpy(out, buf, (size_t)n);
	*len = (size_t)n;
	return out;
}

/* Reads the command line of the process behind pid, whose comm the broker
 * recorded as comm: one read of /proc/PID/cmdline, kept if it is the one
 * that comm was made from, which also turns away a pid that another
 * program has taken since.  Of a `coordctl run`, the command it runs: its
 * first child's, checked against the child's comm. */
static void who_read(struct who *w, const char *comm)
{
	char child_comm[64];
	long child;
	w->argv = cmdline_of(w->pid, comm, &w->len);
	if (!w->argv)
		return; /* gone, renamed, or another process now */
	w->cmd_pid = w->pid;
	if (strcmp(comm, "coordctl") || (child = procfs_first_child(w->pid)) <= 0 ||
	    procfs_comm(child, child_comm, sizeof child_comm) < 0)
		return;
	free(w->argv);
	w->argv = cmdline_of(child, child_comm, &w->len);
	w->cmd_pid = w->argv ? child : 0;
}

/* One lookup per distinct pid of v. */
static int whos_read(const struct ctl_lease *v, size_t n, struct whos *ws)
{
	ws->v = calloc(n ? n : 1, sizeof *ws->v);
	ws->n = 0;
	if (!ws->v)
		return -1;
	for (size_t i = 0; i < n; i++) {
		ws->v[ws->n].pid = (long)v[i].pid;
		ws->v[ws->n++].entry = i;
	}
	qsort(ws->v, ws->n, sizeof *ws->v, by_pid);
	{
		size_t k = 0;
		for (size_t i = 0; i < ws->n; i++)
			if (!k || ws->v[k - 1].pid != ws->v[i].pid)
				ws->v[k++] = ws->v[i];
		ws->n = k;
	}
	for (size_t i = 0; i < ws->n; i++)
		who_read(&ws->v[i], v[ws->v[i].entry].command);
	return 0;
}

static struct who *who_of(const struct whos *ws, uint64_t pid)
{
	struct who key = { .pid = (long)pid };
	return bsearch(&key, ws->v, ws->n, sizeof *ws->v, by_pid);
}

static void whos_free(struct whos *ws)
{
	for (size_t i = 0; i < ws->n; i++) {
		free(ws->v[i].argv);
		free(ws->v[i].json);
		free(ws->v[i].cmd);
	}
	free(ws->v);
}

/* 1 if an argument needs quotes to be read back by a shell. */
static int needs_quotes(const char *a)
{
	if (!*a)
		return 1;
	for (const unsigned char *p = (const unsigned char *)a; *p; p++)
		if (!(*p >= 0x80 || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("-_./:=@%+,", *p)))
			return 1;
	return 0;
}

/* The command line as one line, arguments quoted as a shell would need,
 * then made safe (text_human) into buf, in at most max_cols columns. */
static void command_text(const struct who *w, const char *comm, char *buf, size_t size,
                         int max_cols)
{
	char *line, *o;
	if (!w || !w->argv) {
		text_human(buf, size, comm, max_cols);
		return;
	}
	line = malloc(w->len * 4 + 3);
	if (!line) {
		text_human(buf, size, comm, max_cols);
		return;
	}
	o = line;
	for (const char *a = w->argv; a < w->argv + w->len; a += strlen(a) + 1) {
		int q = needs_quotes(a);
		if (o > line)
			*o++ = ' ';
		if (q)
			*o++ = '\'';
		for (const char *p = a; *p; p++) {
			if (q && *p == '\'') {
				memcpy(o, "'\\''", 4);
				o += 4;
			} else {
				*o++ = *p;
			}
		}
		if (q)
			*o++ = '\'';
	}
	*o = 0;
	text_human(buf, size, line, max_cols);
	free(line);
}

/* ,"cmdline":["ARG",...],"cmdline_pid":N (null, null when unknown), and
 * "cmdline_hex":["HEX",...] when an argument is not valid UTF-8. */
static void json_cmdline_make(FILE *f, const struct who *w)
{
	int invalid = 0;
	fputs(",\"cmdline\":[", f);
	for (const char *a = w->argv; a < w->argv + w->len; a += strlen(a) + 1) {
		if (a > w->argv)
			fputc(',', f);
		invalid |= text_json_string(f, a);
	}
	fprintf(f, "],\"cmdline_pid\":%ld", w->cmd_pid);
	if (!invalid)
		return;
	fputs(",\"cmdline_hex\":[", f);
	for (const char *a = w->argv; a < w->argv + w->len; a += strlen(a) + 1) {
		if (a > w->argv)
			fputc(',', f);
		text_json_hex(f, a);
	}
	fputc(']', f);
}

/* json_cmdline_make()'s text, made once per process: a process holding
 * many leases has its command line in each. */
static void json_cmdline(FILE *f, struct who *w)
{
	FILE *m;
	if (!w || !w->argv) {
		fputs(",\"cmdline\":null,\"cmdline_pid\":null", f);
		return;
	}
	if (!w->json && (m = open_memstream(&w->json, &w->json_len))) {
		json_cmdline_make(m, w);
		if (fclose(m) != 0) {
			free(w->json);
			w->json = NULL;
		}
	}
	if (w->json)
		fwrite(w->json, 1, w->json_len, f);
	else
		json_cmdline_make(f, w); /* out of memory: as it comes */
}

/* ---- leases as JSON ---- */

/* key (with its quotes, comma and colon) and v: printf() would take a
 * third of `list --json`'s time with 10,000 leases. */
static void json_u64(const char *key, uint64_t v)
{
	char buf[24], *p = buf + sizeof buf;
	*--p = 0;
	do
		*--p = (char)('0' + v % 10);
	while (v /= 10);
	fputs(key, stdout);
	fputs(p, stdout);
}

/* The fields holders and waiters share: "mode", "pid" (holders also
 * "uid"), "command" (the broker's comm) and "label". */
static void json_who(const struct ctl_lease *e)
{
	fputs(e->mode == COORD_WRITE ? ",\"mode\":\"write\"" : ",\"mode\":\"read\"", stdout);
	json_u64(",\"pid\":", e->pid);
	if (!e->waiting)
		json_u64(",\"uid\":", e->uid);
	putchar(',');
	text_json_field(stdout, "command", e->command);
	putchar(',');
	text_json_field(stdout, "label", e->label);
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
	printf("{\"pid\":%ld,", o->nholders ? o->holder[0].pid : o->locked_by);
	text_json_field(stdout, "comm",
	                o->nholders ? o->holder[0].comm
	                            : o->locked_by_alive ? o->locked_by_comm : NULL);
	printf(",\"mode\":\"%s\",\"locked_by\":%ld,\"holders\":[", o->write ? "write" : "read",
	       o->locked_by);
	for (size_t j = 0; j < o->nholders && j < KERNEL_LOCKS_NAMED; j++) {
		printf("%s{\"pid\":%ld,", j ? "," : "", o->holder[j].pid);
		text_json_field(stdout, "comm", o->holder[j].comm);
		printf("}");
	}
	printf("],\"unseen\":%zu}", o->unseen);
}

/* "leases":[...],"waiters":[...] */
static void json_leases(const struct ctl_lease *v, size_t n, const struct kernel_locks *k,
                        const struct whos *ws)
{
	int first = 1;
	printf("\"leases\":[");
	for (size_t i = 0; i < n; i++) {
		if (v[i].waiting)
			continue;
		json_u64(first ? "{\"id\":" : ",{\"id\":", v[i].lease_id);
		putchar(',');
		text_json_field(stdout, "resource", v[i].resource);
		json_who(&v[i]);
		json_u64(",\"token\":", v[i].token);
		json_u64(",\"age_ms\":", v[i].age_ms);
		if (v[i].recalled_ms >= 0)
			json_u64(",\"recalled_ms\":", (uint64_t)v[i].recalled_ms);
		else
			fputs(",\"recalled_ms\":null", stdout);
		fputs(v[i].adopted ? ",\"adopted\":true" : ",\"adopted\":false", stdout);
		fputs(v[i].cached == COORD_CACHED_IDLE     ? ",\"cached\":\"idle\""
		      : v[i].cached == COORD_CACHED_IN_USE ? ",\"cached\":\"in-use\""
		                                           : ",\"cached\":null",
		      stdout);
		json_kernel_lock(kernel_locks_waits_for(k, i));
		json_cmdline(stdout, who_of(ws, v[i].pid));
		printf("}");
		first = 0;
	}
	printf("],\"waiters\":[");
	first = 1;
	for (size_t i = 0; i < n; i++) {
		if (!v[i].waiting)
			continue;
		printf("%s{", first ? "" : ",");
		text_json_field(stdout, "resource", v[i].resource);
		json_who(&v[i]);
		json_u64(",\"waited_ms\":", v[i].age_ms);
		json_cmdline(stdout, who_of(ws, v[i].pid));
		printf("}");
		first = 0;
	}
	printf("]");
}

/* ---- leases as a table ---- */

enum { COL_STATE, COL_MODE, COL_PID, COL_UID, COL_LEASE, COL_TOKEN, COL_COMMAND, COL_AGE,
       COL_RESOURCE, COL_LABEL, COL_NOTES, NCOLS };

static const char *const col_title[NCOLS] = { "STATE", "MODE", "PID", "UID", "LEASE", "TOKEN",
	                                       "COMMAND", "AGE", "RESOURCE", "LABEL", "" };

/* The columns of each form, in order; the narrow one puts the label after
 * the resource, in brackets. */
static const int narrow_cols[] = { COL_STATE, COL_MODE, COL_PID, COL_COMMAND, COL_AGE,
	                           COL_RESOURCE, COL_NOTES };
static const int wide_cols[] = { COL_STATE, COL_MODE, COL_PID, COL_UID, COL_LEASE, COL_TOKEN,
	                         COL_AGE, COL_RESOURCE, COL_LABEL, COL_COMMAND, COL_NOTES };

/* The cells of one row, all made safe, each malloc()ed. */
struct row {
	char *cell[NCOLS];
};

/* s made safe (text_human()) in at most max_cols columns (0: all), in a
 * new string; NULL when out of memory. */
static char *safe_dup(const char *s, int max_cols)
{
	size_t size = strlen(s) * 4 + 8; /* the longest escape: 4 bytes per byte */
	char *buf = malloc(size);
	if (buf)
		text_human(buf, size, s, max_cols);
	return buf;
}

static char *fmt_dup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_dup(const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

static void row_free(struct row *r)
{
	for (int c = 0; c < NCOLS; c++)
		free(r->cell[c]);
}

/* Returns 0, or -1 when out of memory (r still to be freed). */
static int fill_row(struct row *r, const struct ctl_lease *e,
                    const struct kernel_lock_outsider *o, struct who *w, int wide)
{
	char age[32], ago[64] = "", note[1100] = "", cmd[CMDLINE_MAX * 4 + 8], *res, *label;
	int held = !e->waiting;
	memset(r, 0, sizeof *r);
	text_duration(age, sizeof age, e->age_ms);
	if (e->recalled_ms >= 0) {
		char d[32];
		text_duration(d, sizeof d, (uint64_t)e->recalled_ms);
		snprintf(ago, sizeof ago, "(recalled %s ago)", d);
	}
	if (o) {
		char raw[256], safe[1024];
		kernel_locks_describe(o, raw, sizeof raw);
		text_human(safe, sizeof safe, raw, 0);
		snprintf(note, sizeof note, "(%s)", safe);
	}
	/* The same for every lease of a process that holds many. */
	if (w && w->cmd)
		snprintf(cmd, sizeof cmd, "%s", w->cmd);
	else
		command_text(w, e->command, cmd, sizeof cmd, wide ? 0 : COMMAND_COLS);
	if (w && !w->cmd && w->argv)
		w->cmd = strdup(cmd); /* out of memory: made again next time */
	res = safe_dup(e->resource, 0);
	label = safe_dup(e->label, 0);
	if (!res || !label)
		goto fail;
	r->cell[COL_STATE] = fmt_dup("%s", held ? "held" : "wait");
	r->cell[COL_MODE] = fmt_dup("%s", ctl_mode_name(e->mode));
	r->cell[COL_PID] = fmt_dup("%" PRIu64, e->pid);
	r->cell[COL_UID] = held ? fmt_dup("%" PRIu64, e->uid) : fmt_dup("-");
	r->cell[COL_LEASE] = held ? fmt_dup("%" PRIu64, e->lease_id) : fmt_dup("-");
	r->cell[COL_TOKEN] = held ? fmt_dup("%" PRIu64, e->token) : fmt_dup("-");
	r->cell[COL_AGE] = fmt_dup("%s", age);
	r->cell[COL_COMMAND] = fmt_dup("%s", cmd);
	r->cell[COL_LABEL] = fmt_dup("%s", label[0] ? label : "-");
	if (!wide && label[0])
		r->cell[COL_RESOURCE] = fmt_dup("%s [%s]", res, label);
	else
		r->cell[COL_RESOURCE] = fmt_dup("%s", res);
	/* Notes: recalled, adopted, cached, and the kernel lock still awaited. */
	{
		const char *cached = e->cached == COORD_CACHED_IDLE     ? "(cached, idle)"
		                     : e->cached == COORD_CACHED_IN_USE ? "(cached, in use)"
		                                                        : "";
		r->cell[COL_NOTES] = fmt_dup("%s%s%s%s%s%s%s", ago, ago[0] && e->adopted ? " " : "",
		                             e->adopted ? "(adopted)" : "",
		                             (ago[0] || e->adopted) && cached[0] ? " " : "", cached,
		                             (ago[0] || e->adopted || cached[0]) && note[0] ? " " : "",
		                             note);
	}
	free(res);
	free(label);
	for (int c = 0; c < NCOLS; c++)
		if (!r->cell[c])
			return -1;
	return 0;
fail:
	free(res);
	free(label);
	return -1;
}

/* The table of `list` and `show`: holders first, then waiters, in the
 * broker's order.  Widths fit the widest cell of each column.  Returns 0,
 * or -1 when out of memory (nothing printed). */
static int print_table(const struct ctl_lease *v, size_t n, const struct kernel_locks *k,
                       const struct whos *ws, int wide)
{
	const int *cols = wide ? wide_cols : narrow_cols;
	size_t ncols = wide ? sizeof wide_cols / sizeof *wide_cols
	                    : sizeof narrow_cols / sizeof *narrow_cols;
	int width[NCOLS] = { 0 }, rc = -1;
	struct row *rows = calloc(n ? n : 1, sizeof *rows);
	size_t nrows = 0;
	if (!rows)
		return -1;
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < n; i++)
			if (v[i].waiting == pass &&
			    fill_row(&rows[nrows++], &v[i], kernel_locks_waits_for(k, i),
			             who_of(ws, v[i].pid), wide) < 0)
				goto done;
	for (size_t c = 0; c < ncols; c++) {
		width[cols[c]] = (int)strlen(col_title[cols[c]]);
		for (size_t i = 0; i < nrows; i++) {
			int w = text_columns(rows[i].cell[cols[c]]);
			if (w > width[cols[c]])
				width[cols[c]] = w;
		}
	}
	for (size_t i = 0; i <= nrows; i++) {
		const struct row *r = i ? &rows[i - 1] : NULL;
		int pending = 0; /* spaces owed before the next cell */
		for (size_t c = 0; c < ncols; c++) {
			const char *cell = r ? r->cell[cols[c]] : col_title[cols[c]];
			int right = cols[c] == COL_PID || cols[c] == COL_UID || cols[c] == COL_LEASE ||
			            cols[c] == COL_TOKEN;
			int w = text_columns(cell);
			if (!*cell && cols[c] == COL_NOTES)
				continue;
			printf("%*s", pending, "");
			if (right)
				printf("%*s%s", width[cols[c]] - w, "", cell);
			else
				fputs(cell, stdout);
			pending = (right ? 0 : width[cols[c]] - w) + 2;
		}
		putchar('\n');
	}
	rc = 0;
done:
	for (size_t i = 0; i < nrows; i++)
		row_free(&rows[i]);
	free(rows);
	return rc;
}

/* ---- list ---- */

struct filter {
	const char *resource; /* canonical, or NULL */
	long pid;             /* 0: any */
	int mode;             /* 0: any */
	int waiting;          /* 1: waiters only */
};

static int matches(const struct filter *f, const struct ctl_lease *e, const struct whos *ws)
{
	const struct who *w = who_of(ws, e->pid);
	if (f->resource && strcmp(e->resource, f->resource))
		return 0;
	if (f->pid && (long)e->pid != f->pid && !(w && w->cmd_pid == f->pid))
		return 0;
	if (f->mode && e->mode != f->mode)
		return 0;
	return !f->waiting || e->waiting;
}

static int list_help_usage(const char *fmt, const char *arg)
{
	return ctl_usage("list", fmt, arg);
}

int cmd_list(int argc, char **argv)
{
	struct ctl_leases l = { 0 };
	struct ctl_lease *v;
	struct kernel_locks k = { 0 };
	struct whos ws = { 0 };
	struct filter f = { 0 };
	char dir[COORD_DIR_MAX + 1], res[COORD_NAME_MAX + 1], safe[COORD_DIR_MAX * 4 + 8];
	size_t n = 0, kept = 0;
	coord_t *c;
	int json = 0, wide = 0, rc, status = EX_OK;

	if (ctl_help_asked(argc, argv))
		return EX_OK;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;
		if (!strcmp(a, "--json")) {
			json = 1;
		} else if (!strcmp(a, "--wide")) {
			wide = 1;
		} else if (!strcmp(a, "--waiting")) {
			f.waiting = 1;
		} else if (!strcmp(a, "--resource") && val) {
			if ((rc = ctl_canonical_arg("list --resource", val, res)))
				return rc;
			f.resource = res;
			i++;
		} else if (!strcmp(a, "--pid") && val) {
			f.pid = strtol(val, &end, 10);
			if (*end || end == val || f.pid <= 0)
				return list_help_usage("--pid takes a process id, not '%s'", val);
			i++;
		} else if (!strcmp(a, "--mode") && val) {
			if (strcmp(val, "read") && strcmp(val, "write"))
				return list_help_usage("--mode takes read or write, not '%s'", val);
			f.mode = val[0] == 'r' ? COORD_READ : COORD_WRITE;
			i++;
		} else {
			return list_help_usage("unknown option or missing value: '%s'", a);
		}
	}
	if ((rc = ctl_instance_dir(dir, sizeof dir)) < 0)
		return ctl_complain(rc, "list: instance directory");
	rc = ctl_try_connect(&c);
	if (rc == COORD_ENOBROKER) {
		if (!ctl_is_instance(dir) && !ctl_default_dir())
			return ctl_no_instance("list", dir, 0);
		/* No broker: nothing is held through coord. */
		if (json) {
			printf("{\"leases\":[],\"waiters\":[],\"broker\":false,");
			text_json_field(stdout, "dir", dir);
			printf("}\n");
		} else {
			text_human(safe, sizeof safe, dir, 0);
			printf("no broker running in %s: no leases held or waited for\n", safe);
		}
		return EX_OK;
	}
	if (rc < 0)
		return ctl_complain(rc, "list: connect to the broker of %s", dir);
	rc = ctl_list(c, &l);
	snprintf(dir, sizeof dir, "%s", coord_dir(c));
	coord_disconnect(c);
	if (rc == COORD_ENOMEM)
		goto out_of_memory;
	if (rc < 0) {
		ctl_leases_free(&l);
		return ctl_complain(rc, "list: ask the broker of %s", dir);
	}
	v = l.v;
	n = l.n;
	if (whos_read(v, n, &ws) < 0)
		goto out_of_memory;
	for (size_t i = 0; i < n; i++)
		if (matches(&f, &v[i], &ws))
			v[kept++] = v[i];
	if (kernel_locks_check(v, kept, dir, &k) < 0)
		goto out_of_memory;
	if (json) {
		printf("{");
		json_leases(v, kept, &k, &ws);
		printf(",\"broker\":true,");
		text_json_field(stdout, "dir", dir);
		printf("}\n");
	} else if (!kept) {
		text_human(safe, sizeof safe, dir, 0);
		printf("no leases held or waited for in %s%s\n", safe,
		       n ? " that match (see `coordctl list` without filters)" : "");
	} else if (print_table(v, kept, &k, &ws, wide) < 0) {
		goto out_of_memory;
	}
	goto done;
out_of_memory:
	status = ctl_complain(COORD_ENOMEM, "list");
done:
	kernel_locks_free(&k);
	whos_free(&ws);
	ctl_leases_free(&l);
	return status;
}

/* ---- show ---- */

static void print_policy(const coord_resource_info_t *i)
{
	const coord_policy_t *p = &i->policy;
	if (p->policy == COORD_POLICY_EXEC) {
		printf("policy:     exec:");
		text_put(stdout, p->command);
		printf(" (time limit %u ms)\n", (unsigned)p->timeout_ms);
	} else if (p->policy == COORD_POLICY_SQLITE) {
		printf("policy:     sqlite:%s (time limit %u ms)\n",
		       coord_sqlite_mode_name(p->sqlite_mode), (unsigned)p->timeout_ms);
	} else {
		printf("policy:     %s (time limit %u ms)%s\n", coord_policy_name(p->policy),
		       (unsigned)p->timeout_ms,
		       p->policy == COORD_POLICY_AUTO
		               ? (i->kind == COORD_KIND_SQLITE
		                          ? ", checkpoints SQLite on release"
		                          : i->kind == COORD_KIND_DUCKDB ? ", checkpoints DuckDB on release"
		                                                         : ", no checkpoints")
		               : "");
	}
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
		ctl_fmt_bytes(before, sizeof before, i->wal_before);
		ctl_fmt_bytes(after, sizeof after, i->wal_after);
		printf("last checkpoint: %s, took %s, %s, WAL %s -> %s (%" PRIu64 " so far)\n", when,
		       dur, i->last_result ? coord_errname(i->last_result) : "ok", before, after,
		       i->checkpoints);
	} else {
		printf("last checkpoint: never\n");
	}
	if (i->message[0]) {
		printf("                 ");
		text_put(stdout, i->message);
		printf("\n");
	}
}

static void json_int_or_null(const char *key, int64_t v)
{
	if (v < 0)
		printf(",\"%s\":null", key);
	else
		printf(",\"%s\":%" PRId64, key, v);
}

/* The resource as JSON; see coordctl show --help for the schema. */
static void show_json(const coord_resource_info_t *i, const struct ctl_lease *v, size_t n,
                      const struct kernel_locks *k, const struct whos *ws)
{
	const coord_policy_t *p = &i->policy;
	printf("{");
	text_json_field(stdout, "resource", i->name);
	printf(",\"kind\":\"%s\",\"policy\":{\"name\":\"%s\",\"sqlite_mode\":", coord_kind_name(i->kind),
	       coord_policy_name(p->policy));
	if (p->policy == COORD_POLICY_SQLITE || p->policy == COORD_POLICY_AUTO)
		printf("\"%s\"", coord_sqlite_mode_name(p->sqlite_mode));
	else
		printf("null");
	putchar(',');
	text_json_field(stdout, "command", p->policy == COORD_POLICY_EXEC ? p->command : NULL);
	printf(",\"timeout_ms\":%u},\"limits\":{\"max_hold_ms\":%u,\"recall_grace_ms\":%u}",
	       (unsigned)p->timeout_ms, (unsigned)i->limits.max_hold_ms,
	       (unsigned)i->limits.recall_grace_ms);
	printf(",\"token\":%" PRIu64 ",\"holder_count\":%" PRIu64 ",\"waiter_count\":%" PRIu64
	       ",\"checkpoint_running\":%s,\"duckdb_available\":%s,\"checkpoints\":%" PRIu64
	       ",\"last_checkpoint\":",
	       i->token, i->holders, i->waiters, i->checkpoint_running ? "true" : "false",
	       i->duckdb_available ? "true" : "false", i->checkpoints);
	if (i->checkpoints) {
		printf("{\"at_ms\":%" PRIu64 ",\"duration_us\":%" PRIu64 ",\"result\":\"%s\"",
		       i->last_at_ms, i->last_duration_us,
		       i->last_result ? coord_errname(i->last_result) : "ok");
		json_int_or_null("wal_before", i->wal_before);
		json_int_or_null("wal_after", i->wal_after);
		printf("}");
	} else {
		printf("null");
	}
	putchar(',');
	text_json_field(stdout, "message", i->message);
	putchar(',');
	json_leases(v, n, k, ws);
	printf("}\n");
}

int cmd_show(int argc, char **argv)
{
	coord_resource_info_t info;
	coord_lease_info_t *got = NULL;
	struct ctl_leases l = { 0 };
	struct ctl_lease *v = NULL;
	struct kernel_locks k = { 0 };
	struct whos ws = { 0 };
	char name[COORD_NAME_MAX + 1], dir[COORD_DIR_MAX + 1], buf[96];
	const char *arg = NULL;
	size_t n = 0;
	coord_t *c;
	int json = 0, wide = 0, rc, status = EX_OK;

	if (ctl_help_asked(argc, argv))
		return EX_OK;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--json")) {
			json = 1;
			continue;
		}
		if (!strcmp(a, "--wide")) {
			wide = 1;
			continue;
		}
		if (!strcmp(a, "--") && i + 1 < argc)
			a = argv[++i]; /* a RESOURCE that starts with '-' */
		else if (a[0] == '-' && a[1])
			return ctl_usage("show", "unknown option '%s'", a);
		if (arg)
			return ctl_usage("show", "one RESOURCE only ('%s' is a second)", a);
		arg = a;
	}
	if (!arg)
		return ctl_usage("show", "which RESOURCE?");
	if ((rc = ctl_canonical_arg("show", arg, name)))
		return rc;
	/* looking never starts a broker */
	if ((rc = ctl_connect(&c, 0, "show")))
		return rc;
	rc = coord_show(c, name, &info, &got, &n);
	snprintf(dir, sizeof dir, "%s", coord_dir(c));
	coord_disconnect(c);
	if (rc < 0)
		return ctl_complain(rc, "show %s", name);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = ctl_leases_add(&l, &got[i]);
	coord_free(got);
	v = l.v;
	if (rc < 0 || whos_read(v, n, &ws) < 0 || kernel_locks_check(v, n, dir, &k) < 0) {
		status = ctl_complain(COORD_ENOMEM, "show %s", name);
		goto done;
	}
	if (json) {
		show_json(&info, v, n, &k, &ws);
		goto done;
	}
	printf("resource:   ");
	text_put(stdout, name);
	printf("\nkind:       %s\n", coord_kind_name(info.kind));
	print_policy(&info);
	printf("limits:     %s\n", ctl_limits_text(&info.limits, buf, sizeof buf));
	if (!info.duckdb_available &&
	    (info.kind == COORD_KIND_DUCKDB || info.policy.policy == COORD_POLICY_DUCKDB))
		printf("warning:    DuckDB checkpoints are OFF (see below)\n");
	printf("token:      %" PRIu64 "\n", info.token);
	printf("checkpoint: %s\n", info.checkpoint_running ? "running now" : "idle");
	print_last_checkpoint(&info);
	printf("\n");
	if (!n)
		printf("no leases held or waited for on this resource\n");
	else if (print_table(v, n, &k, &ws, wide) < 0)
		status = ctl_complain(COORD_ENOMEM, "show %s", name);
done:
	kernel_locks_free(&k);
	whos_free(&ws);
	ctl_leases_free(&l);
	return status;
}

/* ---- status ---- */

int cmd_status(int argc, char **argv)
{
	coord_t *c;
	coord_status_t s;
	char up[32], sharing[128], d[COORD_DIR_MAX + 1], safe[COORD_DIR_MAX * 4 + 8];
	int json = 0, rc;

	if (ctl_help_asked(argc, argv))
		return EX_OK;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else
			return ctl_usage("status", "unknown argument '%s'", argv[i]);
	}
	if ((rc = ctl_instance_dir(d, sizeof d)) < 0)
		return ctl_complain(rc, "status: instance directory");
	rc = ctl_try_connect(&c);
	if (rc == COORD_ENOBROKER) {
		int instance = ctl_is_instance(d);
		if (!instance && !ctl_default_dir())
			return ctl_no_instance("status", d, 0);
		if (json) {
			printf("{\"broker\":false,");
			text_json_field(stdout, "dir", d);
			printf(",\"instance\":%s}\n", instance ? "true" : "false");
		} else {
			text_human(safe, sizeof safe, d, 0);
			printf("broker:    not running\ndirectory: %s%s\n", safe,
			       instance ? "" : " (no instance yet: `coordctl run` starts one)");
		}
		return EX_UNAVAILABLE;
	}
	if (rc < 0)
		return ctl_complain(rc, "status: connect to the broker of %s", d);
	rc = coord_status(c, &s);
	if (rc < 0) {
		coord_disconnect(c);
		return ctl_complain(rc, "status: ask the broker of %s", d);
	}
	share_describe(coord_dir(c), sharing, sizeof sharing);
	if (json) {
		printf("{\"broker\":true,\"pid\":%" PRIu64 ",\"uptime_ms\":%" PRIu64
		       ",\"protocol\":%u,",
		       s.broker_pid, s.uptime_ms, (unsigned)s.protocol);
		text_json_field(stdout, "dir", coord_dir(c));
		putchar(',');
		text_json_field(stdout, "sharing", sharing);
		printf(",\"clients\":%" PRIu64 ",\"leases\":%" PRIu64 ",\"waiters\":%" PRIu64
		       ",\"resources\":%" PRIu64 "}\n",
		       s.clients, s.leases, s.waiters, s.resources);
		coord_disconnect(c);
		return EX_OK;
	}
	text_duration(up, sizeof up, s.uptime_ms);
	printf("broker:    running (pid %" PRIu64 ", up %s, protocol %u)\n", s.broker_pid, up,
	       (unsigned)s.protocol);
	printf("directory: ");
	text_put(stdout, coord_dir(c));
	printf(" (");
	text_put(stdout, sharing);
	printf(")\n");
	printf("clients:   %" PRIu64 " (including this one)\n", s.clients);
	printf("leases:    %" PRIu64 " held, %" PRIu64 " waiting, %" PRIu64 " resources known\n",
	       s.leases, s.waiters, s.resources);
	coord_disconnect(c);
	return EX_OK;
}

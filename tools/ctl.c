/* What the parts of coordctl share, below its commands: the options main()
 * read (--dir, --create), the command being run and its --help, the error
 * reporting, small formatting (sizes, modes, hold limits) and the
 * listing commands' compact copy of the leases (ctl_list()).  main()
 * (coordctl.c) sets the options and the command; the commands (coordctl.c,
 * listing.c, share.c) and connect.c call down into this file, and it calls
 * none of them, only libcoord and text.c.
 *
 * A command that fails says, on stderr, what it tried, the COORD_E* code
 * and a hint that fixes it, in that order, and exits with the status its
 * help gives: ctl_complain(), with the hint and the lines of detail set
 * before it (ctl_hint(), ctl_detail()), and the table of what each code
 * means for the admin. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "ctl.h"
#include "text.h"

const char *ctl_progname = "coordctl";
const char *ctl_dir_opt;
int ctl_create;
const struct command *ctl_command;

/* ---- failures ---- */

static const char see_holders[] = "see who holds it with `coordctl list --resource RESOURCE`";

/* The exit status each error gives, and what to tell the admin about it.
 * Errors not listed exit EX_FAIL with a generic hint. */
static const struct failure {
	int code, status;
	const char *hint;
} failures[] = {
	{ COORD_ENOBROKER, EX_UNAVAILABLE,
	  "start one with `coordd --daemon` (or unset COORD_NO_AUTOSTART), and check "
	  "that coordd is on PATH or COORD_BROKER names it" },
	{ COORD_EPERM, EX_UNAVAILABLE,
	  "you may not use this instance directory; check its owner and mode" },
	{ COORD_EIO, EX_UNAVAILABLE,
	  "the broker closed the connection: see `coordctl status` and its coordd.log" },
	{ COORD_ETIMEDOUT, EX_TEMPFAIL, see_holders },
	{ COORD_EBUSY, EX_TEMPFAIL, see_holders },
	{ COORD_EINVAL, EX_USAGE, "see `coordctl --help`" },
	{ COORD_ENAME, EX_USAGE,
	  "a resource is key:NAME (NAME not empty, no '/') or a file path whose directory "
	  "exists, at most 511 bytes" },
	{ COORD_EDEADLK, EX_FAIL, "this process already holds the resource, or waiting would close a wait-for cycle; the broker log names it (event=deadlock)" },
	{ COORD_EPROTO, EX_FAIL, "coordctl and coordd are different versions; restart coordd" },
	{ COORD_EINSTANCE, EX_FAIL,
	  "the file's directory has a .coord-instance naming another instance; use that one "
	  "with --dir or COORD_DIR" },
	{ COORD_ELIMIT, EX_FAIL,
	  "the broker is at a limit (--max-leases, --max-clients, or its descriptors): see its "
	  "coordd.log, and restart it with more" },
	{ COORD_EFULL, EX_FAIL, "restart coordd with a larger --map-size" },
	{ COORD_ENOSPC, EX_FAIL, "free space on the instance directory's filesystem" },
	{ COORD_ENOMEM, EX_FAIL, "free memory, then try again" },
	{ COORD_EREGION, EX_FAIL, "try again in a second" },
	{ COORD_ENOLEASE, EX_FAIL, "see the leases with `coordctl list --wide`" },
};

static char hint_text[1024];
static char detail_text[4][1024];
static int ndetails;

void ctl_hint(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(hint_text, sizeof hint_text, fmt, ap);
	va_end(ap);
}

void ctl_detail(const char *fmt, ...)
{
	va_list ap;
	if (ndetails == 4)
		return;
	va_start(ap, fmt);
	vsnprintf(detail_text[ndetails++], sizeof detail_text[0], fmt, ap);
	va_end(ap);
}

static const struct failure *failure_of(int rc)
{
	for (size_t i = 0; i < sizeof failures / sizeof failures[0]; i++)
		if (failures[i].code == rc)
			return &failures[i];
	return NULL;
}

int ctl_complain(int rc, const char *fmt, ...)
{
	const struct failure *f = failure_of(rc);
	char what[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: ", ctl_progname);
	text_put(stderr, what);
	fprintf(stderr, ": %s\n", coord_strerror(rc));
	for (int i = 0; i < ndetails; i++) {
		fprintf(stderr, "%s: ", ctl_progname);
		text_put(stderr, detail_text[i]);
		fputc('\n', stderr);
	}
	fprintf(stderr, "%s: hint: ", ctl_progname);
	text_put(stderr, hint_text[0] ? hint_text
	                 : f && f->hint ? f->hint
	                                : "the broker's log (coordd.log in the instance directory) "
	                                  "may say more");
	fputc('\n', stderr);
	hint_text[0] = 0;
	ndetails = 0;
	return f ? f->status : EX_FAIL;
}

int ctl_usage(const char *cmd, const char *fmt, ...)
{
	char what[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	ctl_hint("see `coordctl %s --help`", cmd);
	ctl_complain(COORD_EINVAL, "%s: %s", cmd, what);
	return EX_USAGE;
}

int ctl_canonical_arg(const char *what, const char *arg, char *name)
{
	int rc = coord_canonicalize(arg, name, COORD_NAME_MAX + 1);
	if (rc < 0)
		return ctl_complain(rc, "%s: resource '%s'", what, arg);
	return 0;
}

/* ---- help ---- */

int ctl_help_asked(int argc, char **argv)
{
	if (argc < 2 || (strcmp(argv[1], "--help") && strcmp(argv[1], "-h")))
		return 0;
	if (ctl_command)
		fputs(ctl_command->help, stdout);
	return 1;
}

/* ---- formatting ---- */

void ctl_fmt_bytes(char *buf, size_t size, int64_t b)
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

const char *ctl_mode_name(int m)
{
	return m == COORD_WRITE ? "write" : "read";
}

/* "none", or "max hold 60 s, recall grace 10 s" (what is set). */
const char *ctl_limits_text(const coord_limits_t *l, char *buf, size_t size)
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

/* ---- the listing's leases ---- */

/* Blocks of texts, never moved once given out. */
struct ctl_arena {
	struct ctl_arena *next;
	size_t used, size;
	char data[];
};

#define CTL_ARENA_BLOCK ((size_t)256 << 10)

static const char *arena_dup(struct ctl_arena **a, const char *s)
{
	size_t len = strlen(s) + 1;
	char *p;
	if (!*a || (*a)->size - (*a)->used < len) {
		size_t size = len > CTL_ARENA_BLOCK ? len : CTL_ARENA_BLOCK;
		struct ctl_arena *b = malloc(sizeof *b + size);
		if (!b)
			return NULL;
		b->next = *a;
		b->used = 0;
		b->size = size;
		*a = b;
	}
	p = (*a)->data + (*a)->used;
	memcpy(p, s, len);
	(*a)->used += len;
	return p;
}

int ctl_leases_add(struct ctl_leases *l, const coord_lease_info_t *e)
{
	struct ctl_lease *x;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct ctl_lease *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return COORD_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	x = &l->v[l->n];
	*x = (struct ctl_lease){ e->waiting, e->mode, e->lease_id, e->token, e->pid, e->uid,
		                 e->age_ms, e->recalled_ms, NULL, NULL, NULL, e->adopted, e->cached,
		                 e->kernel_wait };
	x->resource = arena_dup(&l->arena, e->resource);
	x->command = arena_dup(&l->arena, e->command);
	x->label = arena_dup(&l->arena, e->label);
	if (!x->resource || !x->command || !x->label)
		return COORD_ENOMEM;
	l->n++;
	return 0;
}

static int list_one(const coord_lease_info_t *e, void *ud)
{
	return ctl_leases_add(ud, e);
}

int ctl_list(coord_t *c, struct ctl_leases *l)
{
	*l = (struct ctl_leases){ 0 };
	return coord_list_each(c, list_one, l);
}

void ctl_leases_free(struct ctl_leases *l)
{
	while (l->arena) {
		struct ctl_arena *next = l->arena->next;
		free(l->arena);
		l->arena = next;
	}
	free(l->v);
	*l = (struct ctl_leases){ 0 };
}

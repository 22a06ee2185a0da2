/* coordctl watch: who holds and who waits, live, from the broker's event
 * feed (coord_feed_next()), never by asking the broker in a loop.
 *
 * The full-screen view starts from one listing and then applies each
 * event to its own copy of the table: a grant adds a holder (and drops
 * the waiter it came from), a release drops it, a recall marks it, and
 * so on.  Only when the feed says events were lost (this reader was
 * lapped) or a broker started does it list again.  A thread
 * sleeps on the feed and hands events to the main thread through a pipe;
 * the main thread polls that pipe, the keyboard and a signalfd (SIGWINCH,
 * SIGINT, SIGTERM), and redraws at most once per batch of events and
 * once a second for the ages.  The screen is drawn with plain ANSI
 * escapes in the alternate screen; q quits.
 *
 * `watch --json` prints each event as one JSON object per line, flushed
 * at once.  Text that came from clients (names, labels, commands) is
 * never written raw: on the screen and in JSON it follows the rules of
 * every other output of coordctl, text.c's (on the screen \x1b, \n, \\,
 * \xHH for a byte that is not UTF-8, \uXXXX for C1 and bidirectional
 * controls; in JSON U+FFFD per invalid byte and the exact bytes in a
 * sibling KEY_hex). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "text.h"
#include "watch.h"

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 64, EX_UNAVAILABLE = 69 };

static void usage(FILE *f)
{
	fprintf(f, "usage: coordctl watch [--json]\n"
	           "A live view of holders, waiters, recalls and checkpoints (q quits);\n"
	           "--json: one JSON object per event and line instead (see coordctl(1)).\n");
}

/* The screen being drawn: bytes for one write(), and the columns left on
 * the current line, so no line is longer than the terminal is wide. */
struct out {
	char *buf;
	size_t size, len;
	int cols, room;
};

/* Escape sequences: no columns. */
static void out_raw(struct out *o, const char *s)
{
	size_t n = strlen(s);
	if (o->len + n < o->size) {
		memcpy(o->buf + o->len, s, n);
		o->len += n;
	}
}

/* str made safe for a terminal by text.c's human rule (as in every table
 * of coordctl), in at most `max` columns of what is left on the line,
 * padded with spaces to `pad`. */
static void out_text(struct out *o, const char *str, int max, int pad)
{
	size_t n = strlen(str);
	int used = 0;
	if (max > o->room)
		max = o->room;
	if (pad > max)
		pad = max;
	while (n) {
		char esc[16];
		int w;
		size_t k = text_human_char(str, n, esc, &w), elen = strlen(esc);
		if (used + w > max || o->len + elen >= o->size)
			break;
		memcpy(o->buf + o->len, esc, elen);
		o->len += elen;
		used += w;
		str += k;
		n -= k;
	}
	while (used < pad && o->len + 1 < o->size) {
		o->buf[o->len++] = ' ';
		used++;
	}
	o->room -= used;
}

/* Ends the line: clears the rest of it, then (unless it is the last) goes
 * to the next one. */
static void out_eol(struct out *o, int last)
{
	out_raw(o, last ? "\x1b[K" : "\x1b[K\r\n");
	o->room = o->cols;
}

static const char *mode_name(int mode)
{
	return mode == COORD_WRITE ? "write" : mode == COORD_READ ? "read" : "-";
}

/* ---- --json ---- */

/* ,"key":"V" by text.c's JSON rule (with "key_hex" when v is not UTF-8);
 * null for a NULL or empty v. */
static void json_nullable_str(FILE *f, const char *key, const char *v)
{
	putc(',', f);
	text_json_field(f, key, v && *v ? v : NULL);
}

static void json_event(FILE *f, const coord_event_t *e)
{
	char when[80] = "";
	time_t t = (time_t)(e->wall_ms / 1000);
	struct tm tm;
	if (e->wall_ms > 0 && gmtime_r(&t, &tm))
		snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		         (int)(e->wall_ms % 1000));
	fprintf(f, "{\"seq\":%" PRIu64 ",\"event\":\"%s\"", e->seq, coord_event_name(e->type));
	json_nullable_str(f, "time", when);
	fprintf(f, ",\"wall_ms\":%" PRId64 ",\"epoch\":%" PRIu64, e->wall_ms, e->epoch);
	json_nullable_str(f, "resource", e->resource);
	json_nullable_str(f, "mode", e->mode ? mode_name(e->mode) : NULL);
	fprintf(f, ",\"lease_id\":%" PRIu64 ",\"token\":%" PRIu64 ",\"pid\":%" PRIu64
	           ",\"uid\":%" PRIu64,
	        e->lease_id, e->token, e->pid, e->uid);
	json_nullable_str(f, "command", e->command);
	json_nullable_str(f, "label", e->label);
	fprintf(f, ",\"duration_us\":%" PRId64, e->duration_us);
	json_nullable_str(f, "code", e->code ? coord_errname(e->code) : NULL);
	json_nullable_str(f, "kind",
	                  e->type == COORD_EVENT_CHECKPOINT || e->type == COORD_EVENT_CHECKPOINT_START
	                          ? coord_kind_name(e->kind)
	                          : NULL);
	fputs(",\"wal_before\":", f);
	if (e->wal_before >= 0)
		fprintf(f, "%" PRId64, e->wal_before);
	else
		fputs("null", f);
	fputs(",\"wal_after\":", f);
	if (e->wal_after >= 0)
		fprintf(f, "%" PRId64, e->wal_after);
	else
		fputs("null", f);
	json_nullable_str(f, "reason", e->reason);
	fprintf(f, ",\"waited\":%s,\"lost\":%" PRIu64 "}\n",
	        e->flags & COORD_EVENT_F_WAITED ? "true" : "false", e->lost);
}

static int watch_json(coord_feed_t *f)
{
	coord_event_t ev;
	for (;;) {
		int rc = coord_feed_next(f, &ev, -1);
		if (rc < 0) {
			fprintf(stderr, "coordctl: watch: %s\n", coord_strerror(rc));
			return EX_FAIL;
		}
		if (rc == 0)
			continue;
		json_event(stdout, &ev);
		if (fflush(stdout) != 0)
			return EX_OK; /* the reader went away */
	}
}

/* ---- the full-screen view: the table ---- */

struct row {
	int waiting, mode;
	uint64_t lease_id, pid;
	int64_t since_ms, recalled_ms; /* wall clock; recalled -1: not */
	char resource[COORD_NAME_MAX + 1];
	char command[COORD_COMMAND_NAME_MAX + 1];
	char label[COORD_LABEL_MAX + 1];
};

#define RECENT_MAX 64
#define RECENT_LINE 800

struct view {
	coord_t *c;
	struct row *rows;
	size_t nrows, cap;
	char recent[RECENT_MAX][RECENT_LINE]; /* ring of lines */
	size_t nrecent;
	char status[160];
	int64_t listed_ms;         /* wall time of the last listing */
	uint64_t broker_pid;
	int rows_on_screen, cols;
};

static int64_t wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct row *row_add(struct view *v)
{
	if (v->nrows == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		struct row *r = realloc(v->rows, cap * sizeof *r);
		if (!r)
			return NULL;
		v->rows = r;
		v->cap = cap;
	}
	memset(&v->rows[v->nrows], 0, sizeof v->rows[0]);
	return &v->rows[v->nrows++];
}

static void row_remove(struct view *v, size_t i)
{
	v->rows[i] = v->rows[--v->nrows];
}

/* The first waiter of pid for resource in mode (or any mode, 0), or -1. */
static long find_waiter(const struct view *v, uint64_t pid, const char *resource, int mode)
{
	for (size_t i = 0; i < v->nrows; i++)
		if (v->rows[i].waiting && v->rows[i].pid == pid && (!mode || v->rows[i].mode == mode) &&
		    !strcmp(v->rows[i].resource, resource))
			return (long)i;
	return -1;
}

static long find_holder(const struct view *v, uint64_t lease_id)
{
	for (size_t i = 0; i < v->nrows; i++)
		if (!v->rows[i].waiting && v->rows[i].lease_id == lease_id)
			return (long)i;
	return -1;
}

struct resync {
	struct view *v;
	int64_t now;
};

/* coord_list_each()'s: one row per holder and waiter. */
static int resync_one(const coord_lease_info_t *e, void *ud)
{
	struct resync *rs = ud;
	struct row *r = row_add(rs->v);
	if (!r)
		return COORD_ENOMEM;
	r->waiting = e->waiting;
	r->mode = e->mode;
	r->lease_id = e->lease_id;
	r->pid = e->pid;
	r->since_ms = rs->now - (int64_t)e->age_ms;
	r->recalled_ms = e->recalled_ms >= 0 ? rs->now - e->recalled_ms : -1;
	memcpy(r->resource, e->resource, sizeof r->resource);
	memcpy(r->command, e->command, sizeof r->command);
	memcpy(r->label, e->label, sizeof r->label);
	return 0;
}

/* Starts again from a listing (coord_list_each()), into rows of its own:
 * a listing that fails leaves the table as it was. */
static void resync(struct view *v)
{
	struct resync rs = { v, wall_now() };
	struct row *old = v->rows;
	size_t old_n = v->nrows, old_cap = v->cap;
	coord_status_t st;
	int rc;
	v->rows = NULL;
	v->nrows = v->cap = 0;
	rc = coord_list_each(v->c, resync_one, &rs);
	if (rc < 0) {
		free(v->rows);
		v->rows = old;
		v->nrows = old_n;
		v->cap = old_cap;
		snprintf(v->status, sizeof v->status, "cannot list: %s", coord_strerror(rc));
		return;
	}
	free(old);
	if (coord_status(v->c, &st) == 0)
		v->broker_pid = st.broker_pid;
	v->listed_ms = rs.now;
}

static void fmt_age(char *buf, size_t size, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	if (ms < 10000)
		snprintf(buf, size, "%.1fs", ms / 1000.0);
	else if (ms < 60000)
		snprintf(buf, size, "%" PRId64 "s", ms / 1000);
	else if (ms < 3600000)
		snprintf(buf, size, "%" PRId64 "m%02" PRId64 "s", ms / 60000, ms / 1000 % 60);
	else
		snprintf(buf, size, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, ms / 60000 % 60);
}

/* A line of the "recent" pane: time, what, resource, more (raw; made
 * safe when drawn). */
static void recent_add(struct view *v, const coord_event_t *e, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void recent_add(struct view *v, const coord_event_t *e, const char *fmt, ...)
{
	char *line = v->recent[v->nrecent++ % RECENT_MAX], what[160];
	size_t len = 0;
	time_t t = (time_t)(e->wall_ms / 1000);
	struct tm tm;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	localtime_r(&t, &tm);
	len = strftime(line, RECENT_LINE, "%H:%M:%S ", &tm);
	snprintf(line + len, RECENT_LINE - len, "%-16s %s %s", coord_event_name(e->type), e->resource,
	         what);
}

static void apply(struct view *v, const coord_event_t *e)
{
	char d[32];
	long i;
	struct row *r;
	fmt_age(d, sizeof d, e->duration_us / 1000);
	switch (e->type) {
	case COORD_EVENT_START:
		v->broker_pid = e->pid;
		snprintf(v->status, sizeof v->status, "broker started (pid %" PRIu64 ")", e->pid);
		recent_add(v, e, "pid %" PRIu64, e->pid);
		resync(v);
		break;
	case COORD_EVENT_STOP:
		snprintf(v->status, sizeof v->status,
		         "broker stopped; its leases are kept for the next one");
		recent_add(v, e, "pid %" PRIu64, e->pid);
		break;
	case COORD_EVENT_LOST:
		snprintf(v->status, sizeof v->status, "missed %" PRIu64 " events; listed again",
		         e->lost);
		resync(v);
		break;
	case COORD_EVENT_GRANT:
		if ((e->flags & COORD_EVENT_F_WAITED) &&
		    (i = find_waiter(v, e->pid, e->resource, e->mode)) >= 0)
			row_remove(v, (size_t)i);
		if (find_holder(v, e->lease_id) >= 0 || !(r = row_add(v)))
			break;
		r->mode = e->mode;
		r->lease_id = e->lease_id;
		r->pid = e->pid;
		r->since_ms = e->wall_ms;
		r->recalled_ms = -1;
		memcpy(r->resource, e->resource, sizeof r->resource);
		memcpy(r->command, e->command, sizeof r->command);
		memcpy(r->label, e->label, sizeof r->label);
		break;
	case COORD_EVENT_WAIT:
		/* Queued before the listing, which shows it already. */
		if (e->wall_ms <= v->listed_ms && find_waiter(v, e->pid, e->resource, e->mode) >= 0)
			break;
		if (!(r = row_add(v)))
			break;
		r->waiting = 1;
		r->mode = e->mode;
		r->pid = e->pid;
		r->since_ms = e->wall_ms;
		r->recalled_ms = -1;
		memcpy(r->resource, e->resource, sizeof r->resource);
		memcpy(r->command, e->command, sizeof r->command);
		memcpy(r->label, e->label, sizeof r->label);
		break;
	case COORD_EVENT_RECALL:
		if ((i = find_holder(v, e->lease_id)) >= 0)
			v->rows[i].recalled_ms = e->wall_ms;
		recent_add(v, e, "%s pid %" PRIu64 " held %s", mode_name(e->mode), e->pid, d);
		break;
	case COORD_EVENT_RELEASE:
	case COORD_EVENT_RECLAIM:
		if ((i = find_holder(v, e->lease_id)) >= 0)
			row_remove(v, (size_t)i);
		if (e->type == COORD_EVENT_RECLAIM)
			recent_add(v, e, "%s pid %" PRIu64 " held %s (%s)", mode_name(e->mode), e->pid,
			           d, e->reason);
		break;
	case COORD_EVENT_TIMEOUT:
	case COORD_EVENT_CANCEL:
		if ((i = find_waiter(v, e->pid, e->resource, e->mode)) >= 0)
			row_remove(v, (size_t)i);
		if (e->type == COORD_EVENT_TIMEOUT)
			recent_add(v, e, "%s pid %" PRIu64 " waited %s", mode_name(e->mode), e->pid, d);
		break;
	case COORD_EVENT_CHECKPOINT_START:
		for (size_t k = 0; k < v->nrows; k++) {
			if (v->rows[k].waiting && !strcmp(v->rows[k].label, "checkpoint") &&
			    !strcmp(v->rows[k].resource, e->resource)) {
				row_remove(v, k);
				break;
			}
		}
		recent_add(v, e, "%s", coord_kind_name(e->kind));
		break;
	case COORD_EVENT_CHECKPOINT:
		recent_add(v, e, "%s %s in %s, WAL %" PRId64 " -> %" PRId64 " bytes",
		           coord_kind_name(e->kind), e->code ? coord_errname(e->code) : "ok", d,
		           e->wal_before, e->wal_after);
		break;
	}
}

/* ---- the full-screen view: drawing ---- */

static int row_order(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	int c = strcmp(x->resource, y->resource);
	if (c)
		return c;
	if (x->waiting != y->waiting)
		return x->waiting - y->waiting;
	return x->since_ms < y->since_ms ? -1 : x->since_ms > y->since_ms;
}

static void draw(struct view *v, const char *dir)
{
	struct out o = { .cols = v->cols, .room = v->cols };
	char line[160], age[32], rec[32];
	int64_t now = wall_now();
	int y = 0, list_lines, recent_lines, rows = v->rows_on_screen;
	size_t held = 0, waiting = 0;
	o.size = (size_t)(rows + 2) * (size_t)(v->cols * 8 + 32) + 64;
	o.buf = malloc(o.size);
	if (!o.buf)
		return;
	if (v->nrows)
		qsort(v->rows, v->nrows, sizeof v->rows[0], row_order);
	for (size_t i = 0; i < v->nrows; i++)
		v->rows[i].waiting ? waiting++ : held++;
	out_raw(&o, "\x1b[H\x1b[7m");
	snprintf(line, sizeof line, "coord watch  %zu held, %zu waiting  broker pid %" PRIu64 "  ",
	         held, waiting, v->broker_pid);
	out_text(&o, line, o.room, 0);
	out_text(&o, dir, o.room, o.room);
	out_raw(&o, "\x1b[m");
	out_eol(&o, ++y >= rows);
	out_text(&o, v->status[0] ? v->status : "q quits", o.room, 0);
	out_eol(&o, ++y >= rows);
	snprintf(line, sizeof line, "%-6s %-8s %-8s %-16s %-9s %-9s %-16s %s", "MODE", "STATE",
	         "PID", "COMMAND", "AGE", "RECALLED", "LABEL", "RESOURCE");
	out_raw(&o, "\x1b[1m");
	out_text(&o, line, o.room, 0);
	out_raw(&o, "\x1b[m");
	out_eol(&o, ++y >= rows);
	recent_lines = v->nrecent ? (rows - y) / 3 : 0;
	if (recent_lines > (int)v->nrecent + 1)
		recent_lines = (int)v->nrecent + 1;
	if (recent_lines > RECENT_MAX + 1)
		recent_lines = RECENT_MAX + 1;
	list_lines = rows - y - recent_lines;
	for (size_t i = 0; i < v->nrows && list_lines > 0; i++, list_lines--) {
		const struct row *r = &v->rows[i];
		if (list_lines == 1 && i + 1 < v->nrows) {
			snprintf(line, sizeof line, "... %zu more", v->nrows - i);
			out_text(&o, line, o.room, 0);
			out_eol(&o, ++y >= rows);
			break;
		}
		fmt_age(age, sizeof age, now - r->since_ms);
		if (r->recalled_ms >= 0)
			fmt_age(rec, sizeof rec, now - r->recalled_ms);
		else
			snprintf(rec, sizeof rec, "-");
		snprintf(line, sizeof line, "%-6s %-8s %-8" PRIu64 " ", mode_name(r->mode),
		         r->waiting ? "waiting" : "held", r->pid);
		out_text(&o, line, o.room, 0);
		out_text(&o, r->command, 16, 17);
		snprintf(line, sizeof line, "%-9s %-9s ", age, rec);
		out_text(&o, line, o.room, 0);
		out_text(&o, r->label, 16, 17);
		out_text(&o, r->resource, o.room, 0);
		out_eol(&o, ++y >= rows);
	}
	while (y < rows - recent_lines)
		out_eol(&o, ++y >= rows);
	if (recent_lines > 0) {
		out_raw(&o, "\x1b[1m");
		out_text(&o, "recent", o.room, 0);
		out_raw(&o, "\x1b[m");
		out_eol(&o, ++y >= rows);
		for (int k = recent_lines - 1; k > 0 && y < rows; k--) {
			out_text(&o, v->recent[(v->nrecent - (size_t)k) % RECENT_MAX], o.room, 0);
			out_eol(&o, ++y >= rows);
		}
	}
	out_raw(&o, "\x1b[J");
	if (write(STDOUT_FILENO, o.buf, o.len) < 0) {
		/* the terminal went away: the next poll sees its hang-up */
	}
	free(o.buf);
}

static void screen_size(struct view *v)
{
	struct winsize ws;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
		v->rows_on_screen = ws.ws_row;
		v->cols = ws.ws_col;
	} else {
		v->rows_on_screen = 24;
		v->cols = 80;
	}
	if (v->cols > 1000)
		v->cols = 1000;
}

/* ---- the full-screen view: the loop ---- */

struct feeder {
	coord_feed_t *feed;
	int fd;                    /* write end of the pipe to the main thread */
};

/* The feed's thread: each event, whole, into the pipe (one write of less
 * than PIPE_BUF bytes, so it is never split). */
static void *feed_thread(void *arg)
{
	struct feeder *fd = arg;
	coord_event_t ev;
	for (;;) {
		int rc = coord_feed_next(fd->feed, &ev, -1);
		if (rc < 0)
			break;
		if (rc == 1 && write(fd->fd, &ev, sizeof ev) != (ssize_t)sizeof ev)
			break;
	}
	close(fd->fd);
	return NULL;
}

static int watch_screen(coord_t *c, coord_feed_t *f, const char *dir)
{
	struct view v = { .c = c };
	struct termios saved, raw;
	struct feeder fd = { f, -1 };
	pthread_t thread;
	sigset_t mask;
	int p[2], sfd, status = EX_OK, dirty = 1;
	int64_t drawn_ms = 0;
	if (!isatty(STDOUT_FILENO) || !isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved) < 0) {
		fprintf(stderr, "coordctl: watch: needs a terminal; use `coordctl watch --json` "
		                "in scripts\n");
		return EX_USAGE;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGWINCH);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL); /* before the thread: it inherits it */
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0 || pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "coordctl: watch: %s\n", strerror(errno));
		return EX_FAIL;
	}
	fd.fd = p[1];
	if (pthread_create(&thread, NULL, feed_thread, &fd) != 0) {
		fprintf(stderr, "coordctl: watch: cannot start a thread\n");
		return EX_FAIL;
	}
	raw = saved;
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw);
	/* The alternate screen, cursor hidden. */
	if (write(STDOUT_FILENO, "\x1b[?1049h\x1b[?25l", 14) < 0)
		status = EX_FAIL;
	screen_size(&v);
	resync(&v);
	while (status == EX_OK) {
		struct pollfd pf[3] = { { STDIN_FILENO, POLLIN, 0 }, { p[0], POLLIN, 0 },
			                { sfd, POLLIN, 0 } };
		int64_t now = wall_now();
		coord_event_t ev;
		if (dirty || now - drawn_ms >= 1000) {
			draw(&v, dir);
			drawn_ms = now;
			dirty = 0;
		}
		if (poll(pf, 3, (int)(1000 - (now - drawn_ms) % 1000)) < 0 && errno != EINTR)
			break;
		if (pf[0].revents & (POLLHUP | POLLERR))
			break;
		if (pf[0].revents & POLLIN) {
			char k[64];
			ssize_t n = read(STDIN_FILENO, k, sizeof k);
			if (n <= 0 || memchr(k, 'q', (size_t)n) || memchr(k, 'Q', (size_t)n))
				break;
			if (memchr(k, 0x0c, (size_t)n)) /* Ctrl-L: redraw */
				dirty = 1;
		}
		if (pf[1].revents & (POLLIN | POLLHUP)) {
			/* Every event that is there, then one redraw. */
			do {
				ssize_t n = read(p[0], &ev, sizeof ev);
				if (n != (ssize_t)sizeof ev) {
					snprintf(v.status, sizeof v.status, "the event feed ended");
					pf[1].fd = -1;
					break;
				}
				apply(&v, &ev);
				dirty = 1;
				pf[1].revents = 0;
			} while (poll(&pf[1], 1, 0) == 1 && (pf[1].revents & POLLIN));
		}
		if (pf[2].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo != SIGWINCH)
				break;
			screen_size(&v);
			dirty = 1;
		}
	}
	if (write(STDOUT_FILENO, "\x1b[?25h\x1b[?1049l", 14) < 0)
		status = EX_FAIL;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
	free(v.rows);
	/* The feed's thread sleeps in the feed: the process ends it. */
	return status;
}

int cmd_watch(int argc, char **argv, const char *dir)
{
	coord_options_t o = { .dir = dir, .no_autostart = 1 };
	coord_t *c = NULL;
	coord_feed_t *f = NULL;
	int json = 0, rc, status;
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return EX_OK;
	}
	if (argc == 2 && !strcmp(argv[1], "--json"))
		json = 1;
	else if (argc != 1) {
		usage(stderr);
		return EX_USAGE;
	}
	rc = coord_connect(&c, &o);
	if (rc < 0) {
		fprintf(stderr, "coordctl: watch: connect: %s\n", coord_strerror(rc));
		if (rc == COORD_ENOBROKER)
			fprintf(stderr, "coordctl: hint: no broker runs for this instance directory; "
			                "start one with `coordd --daemon`\n");
		return rc == COORD_ENOBROKER || rc == COORD_EPERM || rc == COORD_EIO ? EX_UNAVAILABLE
		                                                                       : EX_FAIL;
	}
	rc = coord_feed_open(c, &f);
	if (rc < 0) {
		fputs("coordctl: watch: event feed ", stderr);
		text_put(stderr, coord_dir(c));
		fprintf(stderr, "/coordd.events: %s\n", coord_strerror(rc));
		if (rc == COORD_ENOENT || rc == COORD_EPROTO)
			fprintf(stderr, "coordctl: hint: the broker is older than coordctl; restart "
			                "coordd\n");
		coord_disconnect(c);
		return EX_FAIL;
	}
	if (json) {
		status = watch_json(f);
	} else {
		char d[COORD_DIR_MAX + 1];
		snprintf(d, sizeof d, "%s", coord_dir(c));
		status = watch_screen(c, f, d);
		if (status == EX_OK || status == EX_FAIL)
			_exit(status); /* the feed's thread may be inside the connection */
	}
	coord_feed_close(f);
	coord_disconnect(c);
	return status;
}

/* The broker's metrics, in the Prometheus text format (version 0.0.4).
 *
 * Counters and histograms are kept here as events happen (the hooks in
 * events.c call metrics_on_*()): a few additions per event, no system
 * call.  The event feed's own figures (records published, watchers) come
 * the same way, from events.c as they change (metrics_on_feed()), so this
 * file reads nothing of the feed's.  The other gauges are read when
 * someone asks (metrics_render()): one walk of the lease table for the
 * leases and waiters per mode and the longest current wait and hold, and
 * one stat(2) of the WAL file (NAME-wal for SQLite, NAME.wal for DuckDB)
 * of each database resource the broker knows, at most WAL_STAT_MAX of
 * them.  That stat is the one thing here that can block: a file on a hung
 * network filesystem would stall the broker for as long as the stat
 * hangs, as it would the checkpoint's kind detection already.  The text
 * is built in memory and handed over whole (a sealed memfd for METRICS, a
 * buffer for HTTP), so a slow reader never holds the broker.
 *
 * Label values are resource names, which are arbitrary bytes: a
 * backslash becomes "\\" and every byte that is a control character or
 * not part of valid UTF-8 becomes "\xHH", so two names never map to one
 * value and the text is valid UTF-8; then the text format's own escapes
 * (\\, \", \n) apply. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"
#include "protocol.h"
#include "resource.h"
#include "state.h"

#define WAL_STAT_MAX 1024
#define REASONS_MAX 16

static const double wait_bounds[] = { 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300 };
static const double ckpt_bounds[] = { 0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300 };
#define NWAIT (sizeof wait_bounds / sizeof wait_bounds[0])
#define NCKPT (sizeof ckpt_bounds / sizeof ckpt_bounds[0])

struct histogram {
	uint64_t bucket[16];       /* observations <= bound[i] (not cumulative) */
	uint64_t count;
	double sum;                /* seconds */
};

/* One broker per process: its counters are this file's. */
static struct {
	uint64_t grants[2], releases[2], recalls[2], timeouts[2];
	struct {
		char reason[32];
		uint64_t n[2];
	} reclaims[REASONS_MAX + 1]; /* the last one: "other" */
	size_t nreasons;
	struct histogram wait[2];
	struct {
		int code;
		uint64_t n;
	} ckpt_results[8];
	size_t nresults;
	struct histogram ckpt;
	uint64_t feed_published;  /* records published in the event feed */
	size_t feed_watchers;     /* connections woken at new events */
} m;

static int idx(int mode)
{
	return mode == COORD_WRITE;
}

static void observe(struct histogram *h, const double *bounds, size_t n, double seconds)
{
	size_t i = 0;
	while (i < n && seconds > bounds[i])
		i++;
	h->bucket[i]++; /* i == n: only +Inf */
	h->count++;
	h->sum += seconds;
}

void metrics_on_grant(int mode, int64_t waited_us)
{
	m.grants[idx(mode)]++;
	observe(&m.wait[idx(mode)], wait_bounds, NWAIT, (double)waited_us / 1e6);
}

void metrics_on_release(int mode)
{
	m.releases[idx(mode)]++;
}

void metrics_on_reclaim(int mode, const char *reason)
{
	size_t i;
	for (i = 0; i < m.nreasons; i++)
		if (!strcmp(m.reclaims[i].reason, reason))
			break;
	if (i == m.nreasons && m.nreasons < REASONS_MAX)
		snprintf(m.reclaims[m.nreasons++].reason, sizeof m.reclaims[0].reason, "%s", reason);
	if (i == REASONS_MAX)
		snprintf(m.reclaims[i].reason, sizeof m.reclaims[0].reason, "other");
	m.reclaims[i].n[idx(mode)]++;
}

void metrics_on_recall(int mode)
{
	m.recalls[idx(mode)]++;
}

void metrics_on_timeout(int mode)
{
	m.timeouts[idx(mode)]++;
}

void metrics_on_checkpoint(int code, int64_t duration_us)
{
	size_t i;
	for (i = 0; i < m.nresults; i++)
		if (m.ckpt_results[i].code == code)
			break;
	if (i == m.nresults && m.nresults < sizeof m.ckpt_results / sizeof m.ckpt_results[0]) {
		m.ckpt_results[i].code = code;
		m.nresults++;
	}
	if (i < m.nresults)
		m.ckpt_results[i].n++;
	observe(&m.ckpt, ckpt_bounds, NCKPT, (double)duration_us / 1e6);
}

void metrics_on_feed(uint64_t published, size_t watchers)
{
	m.feed_published = published;
	m.feed_watchers = watchers;
}

/* ---- the text ---- */

struct text {
	char *buf;
	size_t len, cap;
	int failed;
};

static void grow(struct text *t, size_t more)
{
	size_t cap = t->cap ? t->cap : 8192;
	char *b;
	if (t->failed || t->len + more + 1 <= t->cap)
		return;
	while (cap < t->len + more + 1)
		cap *= 2;
	b = realloc(t->buf, cap);
	if (!b) {
		t->failed = 1;
		return;
	}
	t->buf = b;
	t->cap = cap;
}

static void __attribute__((format(printf, 2, 3))) put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	grow(t, (size_t)n);
	if (t->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
}

/* A label value: see the paragraph at the top. */
static void put_label(struct text *t, const char *value)
{
	const unsigned char *s = (const unsigned char *)value;
	size_t n = strlen(value);
	grow(t, 6 * n);
	if (t->failed)
		return;
	while (n) {
		size_t k = coord_proto_utf8_seq(s, n);
		int c1 = k == 2 && s[0] == 0xc2 && s[1] < 0xa0; /* U+0080..U+009F */
		if (k == 1 && *s == '\\') {
			memcpy(t->buf + t->len, "\\\\\\\\", 4); /* "\\" escaped */
			t->len += 4;
		} else if (k == 1 && *s == '"') {
			memcpy(t->buf + t->len, "\\\"", 2);
			t->len += 2;
		} else if (k == 0 || c1 || (k == 1 && (*s < 0x20 || *s == 0x7f))) {
			size_t bytes = k ? k : 1;
			for (size_t i = 0; i < bytes; i++)
				t->len += (size_t)sprintf(t->buf + t->len, "\\\\x%02x", s[i]);
			s += bytes;
			n -= bytes;
			continue;
		} else {
			memcpy(t->buf + t->len, s, k);
			t->len += k;
			s += k;
			n -= k;
			continue;
		}
		s++;
		n--;
	}
	t->buf[t->len] = 0;
}

static void help(struct text *t, const char *name, const char *type, const char *text)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static const char *const mode_label[2] = { "read", "write" };

static void per_mode(struct text *t, const char *name, const char *type, const char *text,
                     const uint64_t v[2])
{
	help(t, name, type, text);
	for (int i = 0; i < 2; i++)
		put(t, "%s{mode=\"%s\"} %llu\n", name, mode_label[i], (unsigned long long)v[i]);
}

static void put_histogram(struct text *t, const char *name, const char *labels,
                          const struct histogram *h, const double *bounds, size_t n)
{
	uint64_t cum = 0;
	for (size_t i = 0; i < n; i++) {
		cum += h->bucket[i];
		put(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "", bounds[i],
		    (unsigned long long)cum);
	}
	put(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "",
	    (unsigned long long)h->count);
	put(t, "%s_sum%s%s%s %.6f\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", h->sum);
	put(t, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
	    (unsigned long long)h->count);
}

/* What one walk of the table finds. */
struct scan {
	struct text *wal;          /* coord_wal_bytes lines */
	int64_t now;
	uint64_t held[2], waiting[2], checkpoints_running, wal_files, wal_skipped;
	int64_t first_grant[2], first_wait[2]; /* monotonic ms; INT64_MAX: none */
};

static void scan_wal(struct scan *s, const struct lt_resource *res, int kind)
{
	char path[COORD_NAME_MAX + 8];
	struct stat st;
	if (s->wal_files == WAL_STAT_MAX) {
		s->wal_skipped++;
		return;
	}
	s->wal_files++;
	snprintf(path, sizeof path, "%s%s", res->name, kind == COORD_KIND_SQLITE ? "-wal" : ".wal");
	if (stat(path, &st) < 0)
		st.st_size = 0; /* no WAL (or none we can see): nothing to checkpoint */
	put(s->wal, "coord_wal_bytes{resource=\"");
	put_label(s->wal, res->name);
	put(s->wal, "\",kind=\"%s\"} %lld\n", coord_proto_kind_name(kind), (long long)st.st_size);
}

static void scan_resource(struct lt_resource *res, void *arg)
{
	struct scan *s = arg;
	struct resource_ext *x = res->ext;
	for (const struct lt_lease *l = res->holders; l; l = l->res_next) {
		s->held[idx(l->mode)]++;
		if (l->granted_ms < s->first_grant[idx(l->mode)])
			s->first_grant[idx(l->mode)] = l->granted_ms;
	}
	for (const struct lt_waiter *w = res->head; w; w = w->next) {
		if (w->purpose == LT_FOR_CHECKPOINT)
			continue; /* not a client's wait: it ends with the holders */
		s->waiting[idx(w->mode)]++;
		if (w->since_ms < s->first_wait[idx(w->mode)])
			s->first_wait[idx(w->mode)] = w->since_ms;
	}
	if (x && x->job)
		s->checkpoints_running++;
	if (x && res->name[0] == '/' && (x->kind == COORD_KIND_SQLITE || x->kind == COORD_KIND_DUCKDB))
		scan_wal(s, res, x->kind);
}

static void longest(struct text *t, const char *name, const char *text, const int64_t first[2],
                    int64_t now)
{
	help(t, name, "gauge", text);
	for (int i = 0; i < 2; i++)
		put(t, "%s{mode=\"%s\"} %.3f\n", name, mode_label[i],
		    first[i] == INT64_MAX ? 0.0 : (double)(now - first[i]) / 1000.0);
}

/* Resident set size in bytes, from /proc/self/statm; -1 unknown. */
static long long rss_bytes(void)
{
	long long pages = -1, resident = -1;
	FILE *f = fopen("/proc/self/statm", "re");
	if (f) {
		if (fscanf(f, "%lld %lld", &pages, &resident) != 2)
			resident = -1;
		fclose(f);
	}
	return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

int metrics_render(struct broker *b, char **text, size_t *len)
{
	struct text t = { 0 }, wal = { 0 };
	struct scan s = { .wal = &wal, .now = now_ms() };
	long long rss = rss_bytes();
	uint64_t ok = 0;
	s.first_grant[0] = s.first_grant[1] = s.first_wait[0] = s.first_wait[1] = INT64_MAX;
	lease_table_foreach(b->table, scan_resource, &s);

	per_mode(&t, "coord_leases", "gauge", "Leases held now.", s.held);
	per_mode(&t, "coord_waiters", "gauge", "Requests queued now (checkpoints not counted).",
	         s.waiting);
	longest(&t, "coord_longest_hold_seconds", "How long the oldest lease held now was held.",
	        s.first_grant, s.now);
	longest(&t, "coord_longest_wait_seconds",
	        "How long the oldest request queued now has waited.", s.first_wait, s.now);
	per_mode(&t, "coord_grants_total", "counter", "Leases granted.", m.grants);
	per_mode(&t, "coord_releases_total", "counter", "Leases released by their holder.",
	         m.releases);
	help(&t, "coord_reclaims_total", "counter",
	     "Leases taken back without a release (holder exited, hung up, was revoked, ...).");
	for (size_t i = 0; i <= REASONS_MAX; i++) {
		if (i >= m.nreasons && i < REASONS_MAX)
			continue; /* unused; the last one is "other" once used */
		for (int k = 0; k < 2 && m.reclaims[i].reason[0]; k++) {
			put(&t, "coord_reclaims_total{mode=\"%s\",reason=\"", mode_label[k]);
			put_label(&t, m.reclaims[i].reason);
			put(&t, "\"} %llu\n", (unsigned long long)m.reclaims[i].n[k]);
		}
	}
	per_mode(&t, "coord_recalls_total", "counter",
	         "Holders asked to let go because a conflicting request waits.", m.recalls);
	per_mode(&t, "coord_timeouts_total", "counter", "Requests whose timeout passed in the queue.",
	         m.timeouts);
	help(&t, "coord_wait_seconds", "histogram",
	     "Time from request to grant, of every grant (0 for one granted at once).");
	for (int i = 0; i < 2; i++) {
		char labels[32];
		snprintf(labels, sizeof labels, "mode=\"%s\"", mode_label[i]);
		put_histogram(&t, "coord_wait_seconds", labels, &m.wait[i], wait_bounds, NWAIT);
	}
	help(&t, "coord_checkpoints_total", "counter", "Checkpoints finished, by result.");
	for (size_t i = 0; i < m.nresults; i++)
		if (m.ckpt_results[i].code == 0)
			ok = m.ckpt_results[i].n;
	put(&t, "coord_checkpoints_total{result=\"ok\"} %llu\n", (unsigned long long)ok);
	for (size_t i = 0; i < m.nresults; i++)
		if (m.ckpt_results[i].code != 0)
			put(&t, "coord_checkpoints_total{result=\"%s\"} %llu\n",
			    coord_proto_errname(m.ckpt_results[i].code),
			    (unsigned long long)m.ckpt_results[i].n);
	help(&t, "coord_checkpoint_duration_seconds", "histogram",
	     "How long checkpoints ran, whatever their result.");
	put_histogram(&t, "coord_checkpoint_duration_seconds", "", &m.ckpt, ckpt_bounds, NCKPT);
	help(&t, "coord_checkpoints_running", "gauge", "Checkpoints running now.");
	put(&t, "coord_checkpoints_running %llu\n", (unsigned long long)s.checkpoints_running);
	help(&t, "coord_wal_bytes", "gauge",
	     "Size of the WAL file of each database resource the broker knows (0: none); at most "
	     "1024 resources.");
	if (wal.len)
		put(&t, "%s", wal.buf);
	help(&t, "coord_wal_unscanned_resources", "gauge",
	     "Database resources whose WAL was not looked at (past 1024).");
	put(&t, "coord_wal_unscanned_resources %llu\n", (unsigned long long)s.wal_skipped);
	help(&t, "coord_broker_uptime_seconds", "gauge", "Time since the broker started.");
	put(&t, "coord_broker_uptime_seconds %.3f\n", (double)(s.now - b->started_ms) / 1000.0);
	help(&t, "coord_broker_clients", "gauge", "Connected clients.");
	put(&t, "coord_broker_clients %llu\n", (unsigned long long)b->clients.n);
	help(&t, "coord_broker_resident_memory_bytes", "gauge", "The broker's resident set size.");
	put(&t, "coord_broker_resident_memory_bytes %lld\n", rss < 0 ? 0 : rss);
	help(&t, "coord_feed_events_total", "counter", "Records published in the event feed.");
	put(&t, "coord_feed_events_total %llu\n", (unsigned long long)m.feed_published);
	help(&t, "coord_feed_watchers", "gauge", "Connections woken at new events.");
	put(&t, "coord_feed_watchers %zu\n", m.feed_watchers);
	free(wal.buf);
	if (t.failed || wal.failed) {
		free(t.buf);
		return COORD_ENOMEM;
	}
	*text = t.buf;
	*len = t.len;
	return 0;
}

/* ---- METRICS ---- */

/* The text in a memfd sealed against any change, so the reader gets
 * exactly what was written.  Returns the fd or a COORD_E* code. */
static int text_memfd(struct broker *b)
{
	char *text;
	size_t len, done = 0;
	int rc = metrics_render(b, &text, &len), fd;
	if (rc < 0)
		return rc;
	fd = memfd_create("coord-metrics", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		free(text);
		return COORD_ESYS;
	}
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	free(text);
	if (done < len ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		close(fd);
		return COORD_ESYS;
	}
	return fd;
}

void metrics_request(struct broker *b, struct client *c, const struct request *req)
{
	coord_msg_reply r = { { COORD_MSG_REPLY, req->seq }, 0, 0 };
	int fd = text_memfd(b);
	if (fd < 0) {
		client_reply(c, req->seq, fd);
		return;
	}
	if (client_send_fd(c, &r, sizeof r, fd) < 0)
		client_reply(c, req->seq, COORD_ESYS);
	close(fd);
}

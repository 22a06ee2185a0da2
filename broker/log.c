/* The broker's event log: one line per event, key=value fields, values
 * quoted and escaped when they hold spaces, quotes or control bytes, so a
 * hostile resource name or label cannot forge a log line.
 *
 * While the broker's loop runs, lines are buffered and written once per
 * iteration (log_flush()), before the iteration's answers go out, so a
 * client that saw its GRANT finds the `grant` line in the log.  Outside
 * the loop (startup, shutdown, a failed start) every line is written at
 * once, and a crash writes out what is buffered before it ends the
 * process.  The format never depends on buffering.
 *
 * Where lines go: stderr; a file (DIR/coordd.log), reopened on SIGHUP and
 * rotated to PATH.1 before a write would take it past its cap, so lines
 * are never split between the two files and a file is past its cap only
 * by a single batch larger than the cap; or the journal, one datagram
 * per line over its native protocol, every key=value a field of its own,
 * so `journalctl COORD_EVENT=grant COORD_RESOURCE=...` selects lines as
 * grep does.  Nothing here ever follows a symlink or opens anything but a
 * regular file at the log's path: in a shared instance's directory the
 * group's members may create files. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Datagrams per sendmmsg() call. */
#define JOURNAL_BATCH 64
/* Room for the datagrams of one LOG_BUFFER_MAX batch (journal_need()). */
#define JOURNAL_BUF (8 * LOG_BUFFER_MAX + JOURNAL_BATCH * 256)

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes all of p, retrying short writes.  Returns the bytes written: a
 * log that cannot be written loses lines, and the broker goes on. */
static size_t write_all(int fd, const char *p, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t w = write(fd, p + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	return done;
}

/* "2026-01-31T12:00:00.123Z".  The part up to the seconds is formatted
 * once per second (a busy broker logs thousands of lines in one). */
static void timestamp(char *when, size_t size)
{
	static time_t last_sec = -1;
	static char last[32];
	static size_t last_len;
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last_sec) {
		gmtime_r(&ts.tv_sec, &tm);
		last_len = strftime(last, sizeof last, "%Y-%m-%dT%H:%M:%S", &tm);
		last_sec = ts.tv_sec;
	}
	snprintf(when, size, "%.*s.%03ldZ", (int)last_len, last, ts.tv_nsec / 1000000);
}

/* Formats the line "ts=WHEN event=EVENT FIELDS\n" into p.  Returns its
 * length, newline included: it was written in full if that is at most
 * room; -1 on a format error. */
static int format_line(char *p, size_t room, const char *when, const char *event, const char *fmt,
                       va_list ap)
{
	int n = snprintf(p, room, "ts=%s event=%s", when, event), m;
	if (n < 0)
		return -1;
	if (fmt && *fmt) {
		size_t off = (size_t)n + 1;
		if ((size_t)n < room)
			p[n] = ' ';
		m = vsnprintf(off < room ? p + off : NULL, off < room ? room - off : 0, fmt, ap);
		if (m < 0)
			return -1;
		n = (int)off + m;
	}
	if ((size_t)n < room)
		p[n] = '\n';
	return n + 1;
}

/* ---- the journal ---- */

static const struct {
	const char *event;
	int priority;              /* syslog's: 3 err, 4 warning, 5 notice */
} priorities[] = {
	{ "error", 3 },
	{ "store-full", 4 }, { "no-space", 4 }, { "instance-unwritable", 4 },
	{ "instance-restore-failed", 4 }, { "revoke-failed", 4 }, { "checkpoint-timeout", 4 },
	{ "warning", 4 }, { "accept-paused", 4 }, { "protocol-error", 4 },
	{ "log-rotate-failed", 4 },
	{ "instance-restored", 5 }, { "already-running", 5 }, { "deadlock", 5 },
	{ "refuse-client", 5 }, { "drop-client", 5 }, { "revoke", 5 }, { "start", 5 },
	{ "stop", 5 },
};

static int priority_of(const char *event, size_t len)
{
	for (size_t i = 0; i < sizeof priorities / sizeof priorities[0]; i++)
		if (strlen(priorities[i].event) == len && !memcmp(priorities[i].event, event, len))
			return priorities[i].priority;
	return 6; /* info */
}

static int key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static int hex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Puts field name (nlen bytes at o) and the value at o + nlen + 9 (vlen
 * bytes, already there) into the protocol's form: NAME=VALUE\n, or, for a
 * value with a newline, NAME\n, its length as 64-bit little endian, the
 * value and \n.  Returns the field's size. */
static size_t seal_field(char *o, size_t nlen, size_t vlen)
{
	char *v = o + nlen + 9;
	if (memchr(v, '\n', vlen)) {
		uint64_t le = vlen;
		o[nlen] = '\n';
		for (int i = 0; i < 8; i++)
			o[nlen + 1 + i] = (char)(le >> (8 * i));
		v[vlen] = '\n';
		return nlen + 9 + vlen + 1;
	}
	o[nlen] = '=';
	memmove(o + nlen + 1, v, vlen);
	o[nlen + 1 + vlen] = '\n';
	return nlen + 1 + vlen + 1;
}

static size_t put_field(char *o, const char *name, const char *value, size_t vlen)
{
	size_t nlen = strlen(name);
	memcpy(o, name, nlen);
	memcpy(o + nlen + 9, value, vlen);
	return seal_field(o, nlen, vlen);
}

/* The most journal_datagram() writes for a line of len bytes: each
 * field costs at most 16 bytes beyond its text, and a field takes at
 * least 2 bytes of the line. */
static size_t journal_need(size_t len)
{
	return 8 * len + 256;
}

/* The datagram of one line (len bytes, ending in '\n') into out, which
 * has journal_need(len) bytes.  Returns its size. */
static size_t journal_datagram(char *out, const char *line, size_t len)
{
	const char *end = line + len - 1, *msg = line, *p, *ev = "", *ev_end;
	char *o = out;
	if (len >= 3 && !memcmp(line, "ts=", 3)) {
		msg = memchr(line, ' ', (size_t)(end - line));
		msg = msg ? msg + 1 : end;
	}
	if (end - msg > 6 && !memcmp(msg, "event=", 6))
		ev = msg + 6;
	for (ev_end = ev; ev_end < end && *ev_end != ' '; ev_end++)
		;
	o += put_field(o, "MESSAGE", msg, (size_t)(end - msg));
	o += sprintf(o, "PRIORITY=%d\nSYSLOG_IDENTIFIER=coordd\n",
	             priority_of(ev, (size_t)(ev_end - ev)));
	for (p = msg; p < end;) {
		const char *k;
		size_t klen, vlen = 0;
		char *v;
		while (p < end && *p == ' ')
			p++;
		for (k = p; p < end && key_char(*p); p++)
			;
		klen = (size_t)(p - k);
		if (!klen || p >= end || *p != '=' || klen > 58) {
			/* not key=value: no field */
			while (p < end && *p != ' ')
				p++;
			continue;
		}
		p++;
		memcpy(o, "COORD_", 6);
		for (size_t i = 0; i < klen; i++)
			o[6 + i] = k[i] == '-' ? '_' : (char)toupper((unsigned char)k[i]);
		v = o + 6 + klen + 9;
		if (p < end && *p == '"') {
			/* log_quote()'s escapes undone: \" \\ \xNN */
			for (p++; p < end && *p != '"'; ) {
				if (*p == '\\' && p + 1 < end) {
					if (p[1] == 'x' && p + 3 < end && hex(p[2]) >= 0 && hex(p[3]) >= 0) {
						v[vlen++] = (char)(hex(p[2]) * 16 + hex(p[3]));
						p += 4;
					} else {
						v[vlen++] = p[1];
						p += 2;
					}
				} else {
					v[vlen++] = *p++;
				}
			}
			if (p < end)
				p++;
		} else {
			while (p < end && *p != ' ')
				v[vlen++] = *p++;
		}
		o += seal_field(o, 6 + klen, vlen);
	}
	return (size_t)(o - out);
}

/* A line the journal's socket refused: to stderr, with its priority for
 * a journal stream. */
static void journal_to_stderr(struct log *log, const char *line, size_t len)
{
	char prefix[8];
	const char *ev = strstr(line, "event=");
	size_t elen = 0;
	struct iovec iov[2];
	if (!log->stderr_is_journal) {
		write_all(2, line, len);
		return;
	}
	if (ev && ev < line + len) {
		ev += 6;
		while (ev + elen < line + len && ev[elen] != ' ' && ev[elen] != '\n')
			elen++;
	}
	iov[0] = (struct iovec){ prefix, (size_t)snprintf(prefix, sizeof prefix, "<%d>",
	                                                  priority_of(ev ? ev : "", elen)) };
	iov[1] = (struct iovec){ (void *)line, len };
	if (writev(2, iov, 2) < 0) {
		/* nowhere left to write it */
	}
}

struct journal_batch {
	struct mmsghdr msg[JOURNAL_BATCH];
	struct iovec iov[JOURNAL_BATCH];
	const char *line[JOURNAL_BATCH];
	size_t len[JOURNAL_BATCH];
	int n;
	size_t used;               /* of log->jbuf */
};

/* Connects the journal's socket, so that a datagram costs no path
 * lookup.  Returns 0 or -1. */
static int journal_connect(struct log *log)
{
	return connect(log->journal_fd, (struct sockaddr *)&log->journal_addr,
	               sizeof log->journal_addr);
}

static void journal_send(struct log *log, struct journal_batch *b)
{
	int retried = 0;
	for (int i = 0; i < b->n;) {
		int r = sendmmsg(log->journal_fd, b->msg + i, (unsigned)(b->n - i), MSG_NOSIGNAL);
		if (r > 0) {
			i += r;
			retried = 0;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else if (!retried && (errno == ECONNREFUSED || errno == ENOTCONN) &&
		           journal_connect(log) == 0) {
			retried = 1; /* journald restarted: its new socket, once */
		} else {
			journal_to_stderr(log, b->line[i], b->len[i]);
			i++;
		}
	}
	b->n = 0;
	b->used = 0;
}

static void journal_write(struct log *log, const char *p, size_t n)
{
	struct journal_batch b;
	const char *end = p + n;
	b.n = 0;
	b.used = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p), need = journal_need(len);
		if (b.n == JOURNAL_BATCH || b.used + need > log->jcap)
			journal_send(log, &b);
		if (need > log->jcap) { /* one line longer than a batch */
			char *bigger = realloc(log->jbuf, need);
			if (!bigger) {
				journal_to_stderr(log, p, len);
				p += len;
				continue;
			}
			log->jbuf = bigger;
			log->jcap = need;
		}
		b.iov[b.n] = (struct iovec){ log->jbuf + b.used,
			                     journal_datagram(log->jbuf + b.used, p, len) };
		b.msg[b.n] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &b.iov[b.n], .msg_iovlen = 1 } };
		b.line[b.n] = p;
		b.len[b.n] = len;
		b.used += b.iov[b.n].iov_len;
		b.n++;
		p += len;
	}
	journal_send(log, &b);
}

int log_open_journal(struct log *log, const char *socket_path)
{
	const char *path = socket_path ? socket_path : LOG_JOURNAL_SOCKET;
	struct stat st;
	int fd, sndbuf = 8 << 20, err;
	if (strlen(path) >= sizeof log->journal_addr.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (stat(path, &st) < 0)
		return -1;
	if (!S_ISSOCK(st.st_mode)) {
		errno = ENOTSOCK;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (!log->jbuf && !(log->jbuf = malloc(JOURNAL_BUF))) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	log->jcap = JOURNAL_BUF;
	/* As sd-journal does: a burst of lines waits in the socket rather
	 * than blocking the broker. */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
	memset(&log->journal_addr, 0, sizeof log->journal_addr);
	log->journal_addr.sun_family = AF_UNIX;
	strcpy(log->journal_addr.sun_path, path);
	log->journal_fd = fd;
	if (journal_connect(log) < 0) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	log->stderr_is_journal = log_stderr_is_journal();
	log->target = LOG_JOURNAL;
	return 0;
}

int log_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* ---- the file ---- */

/* Opens path for appending: a regular file, never through a symlink, with
 * the mode and group of `like` (the file it replaces) when it is another
 * file.  Returns the fd with its stat in *st, or -1 with errno set. */
static int open_log_file(const char *path, const struct stat *like, struct stat *st)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	int err;
	if (fd < 0)
		return -1;
	if (fstat(fd, st) < 0)
		goto fail;
	if (!S_ISREG(st->st_mode)) {
		errno = EINVAL; /* a FIFO, a device: not a log */
		goto fail;
	}
	fcntl(fd, F_SETFL, O_WRONLY | O_APPEND);
	if (like && (like->st_ino != st->st_ino || like->st_dev != st->st_dev)) {
		if (fchown(fd, (uid_t)-1, like->st_gid) < 0 || fchmod(fd, like->st_mode & 0777) < 0) {
			/* kept as created: 0600, the broker's group */
		}
	}
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

static void use_file(struct log *log, int fd, const struct stat *st)
{
	if (log->target == LOG_FILE && log->fd >= 0)
		close(log->fd);
	log->fd = fd;
	log->size = (uint64_t)st->st_size;
	if (log->dup_stderr)
		dup2(fd, 2);
	log->target = LOG_FILE;
}

static void quote_into(char *out, size_t size, const char *s);

/* A line of the log's own (log-rotated, log-rotate-failed), written
 * straight into the file, past any cap. */
static void note(struct log *log, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void note(struct log *log, const char *event, const char *fmt, ...)
{
	char when[48], line[3 * sizeof log->path];
	va_list ap;
	int n;
	timestamp(when, sizeof when);
	va_start(ap, fmt);
	n = format_line(line, sizeof line, when, event, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n <= sizeof line)
		log->size += write_all(log->fd, line, (size_t)n);
}

/* PATH to PATH.1, and a new PATH.  A failure is noted once in the file,
 * which goes on growing, and tried again a second later. */
static void rotate(struct log *log)
{
	char old[sizeof log->path + 4], q[2 * sizeof log->path];
	struct stat st, at;
	int64_t now = mono_ms();
	int fd = -1, err = 0;
	if (log->rotate_errno && now < log->rotate_retry_ms)
		return;
	snprintf(old, sizeof old, "%s.1", log->path);
	if (fstat(log->fd, &st) < 0)
		err = errno;
	/* Only our file: one moved away (to be reopened on SIGHUP) stays. */
	else if (lstat(log->path, &at) == 0 && at.st_ino == st.st_ino && at.st_dev == st.st_dev &&
	         rename(log->path, old) < 0)
		err = errno;
	else if ((fd = open_log_file(log->path, &st, &at)) < 0)
		err = errno;
	if (err) {
		if (err != log->rotate_errno) {
			quote_into(q, sizeof q, log->path);
			note(log, "log-rotate-failed", "path=%s size=%llu max_bytes=%llu errno=%d reason=\"%s\"",
			     q, (unsigned long long)log->size, (unsigned long long)log->max_bytes, err,
			     strerror(err));
		}
		log->rotate_errno = err;
		log->rotate_retry_ms = now + 1000;
		return;
	}
	use_file(log, fd, &at);
	log->rotate_errno = 0;
	quote_into(q, sizeof q, old);
	note(log, "log-rotated", "previous=%s max_bytes=%llu", q, (unsigned long long)log->max_bytes);
}

static void file_write(struct log *log, const char *p, size_t n)
{
	if (log->max_bytes && log->size > 0 && log->size + n > log->max_bytes)
		rotate(log);
	log->size += write_all(log->fd, p, n);
}

int log_open_file(struct log *log, const char *path, uint64_t max_bytes, int dup_stderr)
{
	struct stat st;
	int fd;
	if (strlen(path) >= sizeof log->path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = open_log_file(path, NULL, &st);
	if (fd < 0)
		return -1;
	strcpy(log->path, path);
	log->max_bytes = max_bytes;
	log->dup_stderr = dup_stderr;
	log->rotate_errno = 0;
	use_file(log, fd, &st);
	return 0;
}

const char *log_target_name(enum log_target t)
{
	return t == LOG_FILE ? "file" : t == LOG_JOURNAL ? "journal" : "stderr";
}

void log_reopen(struct log *log)
{
	struct stat st, now;
	int fd;
	log_flush(log);
	if (log->target != LOG_FILE) {
		log_event(log, "log-reopened", "log=%s", log_target_name(log->target));
		return;
	}
	if (fstat(log->fd, &st) < 0 || (fd = open_log_file(log->path, &st, &now)) < 0) {
		int err = errno;
		log_event(log, "error", "op=log-reopen path=%s errno=%d reason=%s",
		          log_quote(log, log->path), err, log_quote(log, strerror(err)));
		return;
	}
	use_file(log, fd, &now);
	log->rotate_errno = 0;
	log_event(log, "log-reopened", "log=file path=%s size=%llu", log_quote(log, log->path),
	          (unsigned long long)log->size);
}

/* ---- writing ---- */

/* Whole lines to wherever the log goes. */
static void emit(struct log *log, const char *p, size_t n)
{
	if (log->target == LOG_FILE)
		file_write(log, p, n);
	else if (log->target == LOG_JOURNAL)
		journal_write(log, p, n);
	else
		write_all(2, p, n);
}

void log_event(struct log *log, const char *event, const char *fmt, ...)
{
	char when[48], line[4096], *p = line;
	va_list ap;
	int n;

	timestamp(when, sizeof when);
	if (log->buffered && !log->buf)
		log->buf = malloc(LOG_BUFFER_MAX);
	if (log->buffered && log->buf) {
		for (int tries = 0; tries < 2; tries++) {
			size_t room = LOG_BUFFER_MAX - log->used;
			va_start(ap, fmt);
			n = format_line(log->buf + log->used, room, when, event, fmt, ap);
			va_end(ap);
			if (n > 0 && (size_t)n <= room) {
				log->used += (size_t)n;
				return;
			}
			log_flush(log); /* full: out with it, and try again */
		}
	}
	/* Not buffered, or longer than the buffer: in order, at once. */
	log_flush(log);
	va_start(ap, fmt);
	n = format_line(line, sizeof line, when, event, fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	if ((size_t)n > sizeof line) {
		p = malloc((size_t)n);
		if (!p)
			return;
		va_start(ap, fmt);
		format_line(p, (size_t)n, when, event, fmt, ap);
		va_end(ap);
	}
	emit(log, p, (size_t)n);
	if (p != line)
		free(p);
}

void log_flush(struct log *log)
{
	if (!log->used)
		return;
	emit(log, log->buf, log->used);
	log->used = 0;
}

/* ---- a crash writes out the buffer ---- */

static struct log *crash_log;

static void crash_flush(int sig)
{
	struct log *log = crash_log;
	if (log && log->used) {
		/* write(2) only: nothing here may take a lock the crash holds,
		 * and the journal's datagrams are not built in a handler. */
		write_all(log->target == LOG_FILE ? log->fd : 2, log->buf, log->used);
		log->used = 0;
	}
	raise(sig); /* SA_RESETHAND: the default action now */
}

void log_flush_on_crash(struct log *log)
{
	/* Not SIGBUS: region.c handles it (a truncated region grown back).
	 * Only signals nobody else handles are taken, and given back. */
	static const int sigs[] = { SIGSEGV, SIGABRT, SIGFPE, SIGILL };
	static int taken[sizeof sigs / sizeof sigs[0]];
	struct sigaction sa = { 0 }, old;
	crash_log = log;
	sa.sa_handler = log ? crash_flush : SIG_DFL;
	sa.sa_flags = log ? SA_RESETHAND | SA_NODEFER : 0;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		if (log && (sigaction(sigs[i], NULL, &old) < 0 || old.sa_handler != SIG_DFL ||
		            (old.sa_flags & SA_SIGINFO)))
			continue;
		if (!log && !taken[i])
			continue;
		if (sigaction(sigs[i], &sa, NULL) == 0)
			taken[i] = log != NULL;
	}
}

/* ---- quoting ---- */

static int plain(const char *s, size_t max)
{
	if (!*s || strlen(s) >= max)
		return 0;
	for (const char *p = s; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '\\' || *p == '=' || *p == 0x7f)
			return 0;
	return 1;
}

/* s quoted into out (size >= 8), escaped, cut to fit. */
static void quote_into(char *out, size_t size, const char *s)
{
	char *o = out;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o < out + size - 6; p++) {
		if (*p == '"' || *p == '\\') {
			*o++ = '\\';
			*o++ = (char)*p;
		} else if (*p < ' ' || *p == 0x7f) {
			o += sprintf(o, "\\x%02x", *p);
		} else {
			*o++ = (char)*p;
		}
	}
	*o++ = '"';
	*o = 0;
}

const char *log_quote(struct log *log, const char *s)
{
	char *out = log->quoted[log->next_quoted++ % LOG_QUOTE_SLOTS];
	if (plain(s, LOG_QUOTE_MAX))
		return s;
	quote_into(out, LOG_QUOTE_MAX, s);
	return out;
}

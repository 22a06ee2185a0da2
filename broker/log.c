/* The broker's event log: one line per event, key=value fields, values
 * quoted and escaped when they hold spaces, quotes or control bytes, so a
 * hostile resource name or label cannot forge a log line.
 *
 * While the broker's loop runs, lines are buffered and written once per
 * iteration (log_flush()), before the iteration's answers go out, so a
 * client that saw its GRANT finds the `grant` line in the log.  Outside
 * the loop (startup, shutdown, a failed start) every line is written at
 * once, and a crash writes out what is buffered before it ends the
 * process.  The format never depends on buffering. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static FILE *stream(const struct log *log)
{
	return log->f ? log->f : stderr;
}

/* The line as log_event() has always written it, straight to the stream:
 * when not buffered, and for a line too long for the buffer. */
static void write_line(FILE *f, const char *when, long ms, const char *event, const char *fmt,
                       va_list ap)
{
	fprintf(f, "ts=%s.%03ldZ event=%s", when, ms, event);
	if (fmt && *fmt) {
		fputc(' ', f);
		vfprintf(f, fmt, ap);
	}
	fputc('\n', f);
	fflush(f);
}

/* Appends the line to the buffer.  Returns 0, or -1 if it does not fit
 * in what is left (nothing appended then). */
static int buffer_line(struct log *log, const char *when, long ms, const char *event,
                       const char *fmt, va_list ap)
{
	size_t room = LOG_BUFFER_MAX - log->used;
	char *p = log->buf + log->used;
	int n = snprintf(p, room, "ts=%s.%03ldZ event=%s", when, ms, event), m;
	if (n < 0 || (size_t)n >= room)
		return -1;
	if (fmt && *fmt) {
		if ((size_t)n + 1 >= room)
			return -1;
		p[n++] = ' ';
		m = vsnprintf(p + n, room - (size_t)n, fmt, ap);
		if (m < 0 || (size_t)m >= room - (size_t)n)
			return -1;
		n += m;
	}
	if ((size_t)n + 1 >= room)
		return -1;
	p[n++] = '\n';
	log->used += (size_t)n;
	return 0;
}

void log_event(struct log *log, const char *event, const char *fmt, ...)
{
	struct timespec ts;
	struct tm tm;
	char when[32];
	long ms;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	ms = ts.tv_nsec / 1000000;
	if (log->buffered && !log->buf)
		log->buf = malloc(LOG_BUFFER_MAX);
	if (log->buffered && log->buf) {
		for (int tries = 0; tries < 2; tries++) {
			int rc;
			va_start(ap, fmt);
			rc = buffer_line(log, when, ms, event, fmt, ap);
			va_end(ap);
			if (rc == 0)
				return;
			log_flush(log); /* full: out with it, and try again */
		}
	}
	/* Not buffered, or longer than the buffer: in order, at once. */
	log_flush(log);
	va_start(ap, fmt);
	write_line(stream(log), when, ms, event, fmt, ap);
	va_end(ap);
}

void log_flush(struct log *log)
{
	FILE *f = stream(log);
	if (!log->used)
		return;
	if (fwrite(log->buf, 1, log->used, f) != log->used) {
		/* A log that cannot be written loses lines; the broker goes on. */
	}
	fflush(f);
	log->used = 0;
}

/* ---- a crash writes out the buffer ---- */

static struct log *crash_log;

static void crash_flush(int sig)
{
	struct log *log = crash_log;
	if (log && log->used) {
		int fd = fileno(stream(log));
		size_t done = 0;
		/* write(2) only: nothing here may take a lock the crash holds. */
		while (done < log->used) {
			ssize_t n = write(fd, log->buf + done, log->used - done);
			if (n <= 0)
				break;
			done += (size_t)n;
		}
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

const char *log_quote(struct log *log, const char *s)
{
	char *out = log->quoted[log->next_quoted++ % LOG_QUOTE_SLOTS], *o = out;
	int plain = *s != 0;

	for (const char *p = s; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '\\' || *p == '=' || *p == 0x7f)
			plain = 0;
	if (plain && strlen(s) < LOG_QUOTE_MAX)
		return s;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o < out + LOG_QUOTE_MAX - 6; p++) {
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
	return out;
}

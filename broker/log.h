/* One line per event, key=value, for grep and journald. */
#ifndef COORD_LOG_H
#define COORD_LOG_H

#include <stddef.h>
#include <stdio.h>

#define LOG_QUOTE_SLOTS 8
#define LOG_QUOTE_MAX 2200
/* A buffered log is written out when it holds this much. */
#define LOG_BUFFER_MAX (64u << 10)

struct log {
	FILE *f;                   /* NULL: stderr */
	char quoted[LOG_QUOTE_SLOTS][LOG_QUOTE_MAX];
	unsigned next_quoted;
	int buffered;              /* 1: lines wait in buf for log_flush() */
	char *buf;                 /* LOG_BUFFER_MAX bytes, allocated when first
	                              needed */
	size_t used;
};

/* Writes "ts=... event=EVENT " followed by the printf-formatted fields and
 * a newline: at once, or, while log->buffered is set, into the buffer,
 * which is written out by log_flush() and whenever it holds
 * LOG_BUFFER_MAX bytes.  The line is the same either way. */
void log_event(struct log *log, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Writes out the buffered lines, in one write when the stream is
 * unbuffered (stderr) and at least one fflush() otherwise. */
void log_flush(struct log *log);
/* Makes `log` the one whose buffered lines a crash (SIGSEGV, SIGABRT,
 * SIGFPE, SIGILL, unless something else handles them) writes out before
 * the signal takes its default course; NULL: none. */
void log_flush_on_crash(struct log *log);
/* Quotes s for a key=value field when needed ("a b" -> "\"a b\"").  The
 * result lives in one of LOG_QUOTE_SLOTS rotating buffers of `log`: use it
 * in the same log_event() call. */
const char *log_quote(struct log *log, const char *s);

#endif

/* One line per event, key=value, for grep and journald. */
#ifndef COORD_LOG_H
#define COORD_LOG_H

#include <stdio.h>

#define LOG_QUOTE_SLOTS 8
#define LOG_QUOTE_MAX 2200

struct log {
	FILE *f;                   /* NULL: stderr */
	char quoted[LOG_QUOTE_SLOTS][LOG_QUOTE_MAX];
	unsigned next_quoted;
};

/* Writes "ts=... event=EVENT " followed by the printf-formatted fields. */
void log_event(struct log *log, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Quotes s for a key=value field when needed ("a b" -> "\"a b\"").  The
 * result lives in one of LOG_QUOTE_SLOTS rotating buffers of `log`: use it
 * in the same log_event() call. */
const char *log_quote(struct log *log, const char *s);

#endif

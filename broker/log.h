/* One line per event, key=value, for grep and journald. */
#ifndef COORD_LOG_H
#define COORD_LOG_H

#include <stdio.h>

/* Where lines go (stderr by default); opened by main. */
void log_set_file(FILE *f);
/* Writes "ts=... event=EVENT " followed by the printf-formatted fields. */
void log_event(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Quotes s for a key=value field when needed ("a b" -> "\"a b\"").  The
 * result lives in one of 8 rotating static buffers: use it in the same
 * log_event() call. */
const char *log_quote(const char *s);

#endif

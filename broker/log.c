/* The broker's event log: one line per event, key=value fields, values
 * quoted and escaped when they hold spaces, quotes or control bytes, so a
 * hostile resource name or label cannot forge a log line. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "log.h"

void log_event(struct log *log, const char *event, const char *fmt, ...)
{
	FILE *f = log->f ? log->f : stderr;
	struct timespec ts;
	struct tm tm;
	char when[32];
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(f, "ts=%s.%03ldZ event=%s", when, ts.tv_nsec / 1000000, event);
	if (fmt && *fmt) {
		fputc(' ', f);
		va_start(ap, fmt);
		vfprintf(f, fmt, ap);
		va_end(ap);
	}
	fputc('\n', f);
	fflush(f);
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

/* The broker's event log: one line per event, key=value fields, values
 * quoted and escaped when they hold spaces, quotes or control bytes, so a
 * hostile resource name or label cannot forge a log line. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "log.h"

static FILE *log_file;

void log_set_file(FILE *f)
{
	log_file = f;
}

void log_event(const char *event, const char *fmt, ...)
{
	FILE *f = log_file ? log_file : stderr;
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

const char *log_quote(const char *s)
{
	static char bufs[8][2200];
	static unsigned next;
	char *out = bufs[next++ % 8], *o = out;
	int plain = *s != 0;

	for (const char *p = s; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '\\' || *p == '=' || *p == 0x7f)
			plain = 0;
	if (plain && strlen(s) < sizeof bufs[0])
		return s;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o < out + sizeof bufs[0] - 6; p++) {
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

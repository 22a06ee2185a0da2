/* coord-bench's shared state and output: the run's settings (bench), how
 * a measurement fails (bench_die()), percentiles of a run's samples, and
 * the rows that show them, either as a table for people or as JSON lines for scripts
 * (scripts/bench-plot.py reads them).  Every row, target and note of a run
 * goes through here, so the two forms always say the same thing.  Nothing
 * here measures; the strings it prints are the program's own. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct bench_env bench = { .iterations = 20000, .handoffs = 300 };

static pid_t main_pid;

void bench_set_main_pid(void)
{
	main_pid = getpid();
}

void bench_die(const char *what, int rc)
{
	if (rc > 0)
		fprintf(stderr, "coord-bench: %s failed\n", what);
	else
		fprintf(stderr, "coord-bench: %s: %s\n", what,
		        rc < 0 ? coord_strerror(rc) : strerror(errno));
	if (getpid() != main_pid)
		_exit(1); /* the private broker and its directory are the parent's */
	exit(1);
}

int64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

struct stats stats_of(int64_t *ns, int n, int divide)
{
	struct stats s = { .n = n, .valid = n > 0 };
	double sum = 0, d = divide > 0 ? divide : 1;
	if (n <= 0)
		return s;
	qsort(ns, (size_t)n, sizeof *ns, cmp_i64);
	for (int i = 0; i < n; i++)
		sum += (double)ns[i];
	s.p50 = (double)ns[n / 2] / d / 1000.0;
	s.p99 = (double)ns[(int)((int64_t)n * 99 / 100)] / d / 1000.0;
	s.p999 = (double)ns[(int)((int64_t)n * 999 / 1000)] / d / 1000.0;
	s.mean = sum / n / d / 1000.0;
	return s;
}

/* ---- the histogram ---- */

static int hist_index(int64_t ns)
{
	uint64_t v = ns > 0 ? (uint64_t)ns : 0;
	int exp;
	if (v < HIST_SUB)
		return (int)v;
	exp = 63 - __builtin_clzll(v); /* v in [2^exp, 2^(exp+1)) */
	int idx = (exp - 5) * HIST_SUB + (int)((v >> (exp - 6)) - HIST_SUB);
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of bucket i, in ns. */
static double hist_value(int i)
{
	if (i < HIST_SUB)
		return i;
	int exp = i / HIST_SUB + 5, sub = i % HIST_SUB;
	double lo = (double)((uint64_t)(HIST_SUB + sub) << (exp - 6));
	return lo + (double)(1ull << (exp - 6)) / 2;
}

void hist_add(struct hist *h, int64_t ns)
{
	h->count[hist_index(ns)]++;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	for (int i = 0; i < HIST_BUCKETS; i++)
		into->count[i] += from->count[i];
}

uint64_t hist_total(const struct hist *h)
{
	uint64_t t = 0;
	for (int i = 0; i < HIST_BUCKETS; i++)
		t += h->count[i];
	return t;
}

double hist_quantile_us(const struct hist *h, double q)
{
	uint64_t total = hist_total(h), want = (uint64_t)(q * (double)total), seen = 0;
	for (int i = 0; i < HIST_BUCKETS; i++) {
		seen += h->count[i];
		if (seen > want)
			return hist_value(i) / 1000.0;
	}
	return 0;
}

/* ---- rows ---- */

/* A JSON string of the program's own text (no control characters or
 * non-ASCII come through here; quotes and backslashes are escaped anyway). */
static void json_str(const char *key, const char *s)
{
	printf("\"%s\":\"", key);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			putchar('\\');
		putchar(*s);
	}
	putchar('"');
}

static void json_num(const char *key, double v)
{
	printf(",\"%s\":%.6g", key, v);
}

void out_header(void)
{
	if (bench.json)
		return;
	printf("  %-38s %-5s %-7s %-16s %9s %9s %9s\n", "operation", "mode", "who", "via", "p50",
	       "p99", "mean");
}

static void json_row_head(const char *op, const char *mode, const char *who, const char *via)
{
	putchar('{');
	json_str("row", op);
	putchar(',');
	json_str("mode", mode);
	putchar(',');
	json_str("who", who);
	putchar(',');
	json_str("via", via);
}

void out_row(const char *op, const char *mode, const char *who, const char *via, struct stats s)
{
	if (!s.valid) {
		out_none(op, mode, who, via, "no samples");
		return;
	}
	if (bench.json) {
		json_row_head(op, mode, who, via);
		printf(",\"n\":%d", s.n);
		json_num("p50_us", s.p50);
		json_num("p99_us", s.p99);
		json_num("p999_us", s.p999);
		json_num("mean_us", s.mean);
		printf("}\n");
	} else {
		printf("  %-38s %-5s %-7s %-16s %9.3f %9.3f %9.3f\n", op, mode, who, via, s.p50, s.p99,
		       s.mean);
	}
	fflush(stdout);
}

void out_none(const char *op, const char *mode, const char *who, const char *via,
              const char *why)
{
	if (bench.json) {
		json_row_head(op, mode, who, via);
		printf(",\"n\":0,");
		json_str("none", why);
		printf("}\n");
	} else {
		printf("  %-38s %-5s %-7s %-16s   (%s)\n", op, mode, who, via, why);
	}
	fflush(stdout);
}

void out_target(const char *name, double value, const char *unit, double limit)
{
	int met = value <= limit;
	if (bench.json) {
		putchar('{');
		json_str("row", "target");
		putchar(',');
		json_str("target", name);
		json_num("value", value);
		json_num("limit", limit);
		printf(",");
		json_str("unit", unit);
		printf(",\"met\":%s}\n", met ? "true" : "false");
	} else {
		printf("  %-66s %8.3f %-2s (target <= %g: %s)\n", name, value, unit, limit,
		       met ? "met" : "NOT met");
	}
	fflush(stdout);
}

void out_note(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (bench.json) {
		putchar('{');
		json_str("row", "note");
		putchar(',');
		json_str("text", buf);
		printf("}\n");
	} else {
		printf("%s\n", buf);
	}
	fflush(stdout);
}

void out_load(const struct load_result *r)
{
	if (bench.json) {
		json_row_head("load", r->read_share >= 1 ? "read" : r->read_share <= 0 ? "write" : "mixed",
		              r->who, r->via);
		printf(",\"clients\":%d,\"resources\":%d,\"seconds\":%d", r->clients, r->resources,
		       r->seconds);
		json_num("read_share", r->read_share);
		printf(",\"ops\":%llu,\"errors\":%llu", (unsigned long long)r->ops,
		       (unsigned long long)r->errors);
		json_num("ops_per_s", r->ops_per_s);
		json_num("p50_us", r->p50);
		json_num("p99_us", r->p99);
		json_num("p999_us", r->p999);
		if (r->broker_cpu_us >= 0)
			json_num("broker_cpu_us_per_op", r->broker_cpu_us);
		if (r->broker_rss_kib >= 0)
			printf(",\"broker_rss_kib\":%ld", r->broker_rss_kib);
		printf("}\n");
	} else {
		printf("  %-6s %-16s %7d %9d %5.2f %12.0f %9.2f %9.2f %9.2f", r->who, r->via, r->clients,
		       r->resources, r->read_share, r->ops_per_s, r->p50, r->p99, r->p999);
		if (r->broker_cpu_us >= 0)
			printf(" %8.2f %8.1f", r->broker_cpu_us, (double)r->broker_rss_kib / 1024);
		if (r->errors)
			printf("  (%llu errors)", (unsigned long long)r->errors);
		printf("\n");
	}
	fflush(stdout);
}

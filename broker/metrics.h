/* The broker's metrics: counters and histograms kept as events happen,
 * gauges read at scrape time, and their Prometheus text (metrics.c).
 * `coordctl metrics` gets the text through METRICS; `coordd
 * --metrics-listen` serves it over HTTP (metrics_http.c). */
#ifndef COORD_METRICS_H
#define COORD_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct broker;
struct client;
struct request;

/* Counting, from the event hooks (events.c).  Modes are COORD_READ or
 * COORD_WRITE; times in microseconds. */
void metrics_on_grant(int mode, int64_t waited_us);
void metrics_on_release(int mode);
void metrics_on_reclaim(int mode, const char *reason);
void metrics_on_recall(int mode);
void metrics_on_timeout(int mode);
void metrics_on_checkpoint(int code, int64_t duration_us);
/* The event feed's figures, from events.c whenever they change: records
 * published (0: no feed) and connections that watch. */
void metrics_on_feed(uint64_t published, size_t watchers);

/* The whole text, NUL-terminated, in a buffer for free() (*len without the
 * NUL).  Returns 0 or COORD_ENOMEM. */
int metrics_render(struct broker *b, char **text, size_t *len);

/* METRICS from c (without COORD_METRICS_WATCH, which requests.c gives to
 * events_watch()): the text in a sealed memfd passed with REPLY{0}. */
void metrics_request(struct broker *b, struct client *c, const struct request *req);

#endif

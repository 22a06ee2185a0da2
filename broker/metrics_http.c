/* A minimal HTTP/1.0 responder for the metrics, inside the broker's epoll
 * loop (`coordd --metrics-listen ADDR:PORT`, off by default).  It answers
 * `GET /metrics` (and `GET /`) with metrics_render()'s text and closes the
 * connection; anything else gets 404, 405 or 400.
 *
 * Nothing a scraper does can stall the broker: every socket is
 * non-blocking; a request is read into a fixed buffer of
 * HTTP_REQUEST_MAX bytes (more: 431) and must be whole within
 * HTTP_TIME_LIMIT_MS of the accept, answer included, or the connection
 * is closed (one timerfd of this file's own, armed at the earliest
 * deadline); at most HTTP_CONNS_MAX connections are open at once, and a
 * connection past that is closed at accept.  The answer is rendered once,
 * whole, and sent as the socket takes it.  The address must be given
 * explicitly (loopback in the README); anyone who can reach it reads
 * every metric, resource names included. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "metrics.h"
#include "metrics_http.h"
#include "state.h"

#define HTTP_CONNS_MAX 8
#define HTTP_REQUEST_MAX 4096
#define HTTP_TIME_LIMIT_MS 5000

struct http_conn {
	int fd;                    /* -1: free */
	int64_t deadline_ms;
	struct watch watch;
	char in[HTTP_REQUEST_MAX];
	size_t in_len;
	char *out;                 /* the whole answer, once the request is read */
	size_t out_len, out_sent;
};

static struct {
	struct sockaddr_storage addr;
	socklen_t addr_len;        /* 0: no --metrics-listen */
	struct broker *b;
	int listen_fd, timer_fd;
	struct watch listen_watch, timer_watch;
	struct http_conn conn[HTTP_CONNS_MAX];
} http = { .listen_fd = -1, .timer_fd = -1 };

int metrics_http_parse(const char *addr)
{
	const char *colon = strrchr(addr, ':');
	char host[64], *end;
	unsigned long port;
	size_t hl;
	if (!colon || !colon[1])
		return -1;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port > 65535 || colon[1] < '0' || colon[1] > '9')
		return -1;
	hl = (size_t)(colon - addr);
	if (hl == 0 || hl >= sizeof host)
		return -1;
	memcpy(host, addr, hl);
	host[hl] = 0;
	memset(&http.addr, 0, sizeof http.addr);
	if (host[0] == '[' && host[hl - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&http.addr;
		host[hl - 1] = 0;
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			return -1;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		http.addr_len = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&http.addr;
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -1;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		http.addr_len = sizeof *a;
	}
	return 0;
}

static void arm_timer(void)
{
	int64_t first = -1;
	struct itimerspec its = { 0 };
	for (int i = 0; i < HTTP_CONNS_MAX; i++)
		if (http.conn[i].fd >= 0 && (first < 0 || http.conn[i].deadline_ms < first))
			first = http.conn[i].deadline_ms;
	if (first >= 0) {
		/* Absolute CLOCK_MONOTONIC, as now_ms() reads it; never 0,
		 * which would disarm. */
		its.it_value.tv_sec = first / 1000;
		its.it_value.tv_nsec = (first % 1000) * 1000000 + 1;
	}
	timerfd_settime(http.timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void conn_close(struct http_conn *hc)
{
	loop_del(&http.b->loop, hc->fd);
	close(hc->fd);
	hc->fd = -1;
	free(hc->out);
	hc->out = NULL;
	hc->in_len = hc->out_len = hc->out_sent = 0;
}

/* Sends what the socket takes; closes once all went. */
static void conn_write(struct http_conn *hc)
{
	while (hc->out_sent < hc->out_len) {
		ssize_t n = send(hc->fd, hc->out + hc->out_sent, hc->out_len - hc->out_sent,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return; /* EPOLLOUT will say when */
		if (n <= 0)
			break;
		hc->out_sent += (size_t)n;
	}
	conn_close(hc);
}

/* The answer: status line, headers and body (NULL: a short text). */
static void conn_answer(struct http_conn *hc, const char *status, const char *body, size_t blen)
{
	char head[256];
	int hl;
	if (!body) {
		body = status;
		blen = strlen(status);
	}
	hl = snprintf(head, sizeof head,
	              "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
	              "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	              status, blen + (body == status));
	hc->out = malloc((size_t)hl + blen + 1);
	if (!hc->out) {
		conn_close(hc);
		return;
	}
	memcpy(hc->out, head, (size_t)hl);
	memcpy(hc->out + hl, body, blen);
	hc->out_len = (size_t)hl + blen;
	if (body == status)
		hc->out[hc->out_len++] = '\n';
	loop_mod(&http.b->loop, hc->fd, &hc->watch, EPOLLOUT);
	conn_write(hc);
}

/* The request is whole (its headers end): answer it. */
static void conn_request(struct http_conn *hc)
{
	char *text;
	size_t len;
	const char *path = hc->in + 4;
	if (strncmp(hc->in, "GET ", 4)) {
		conn_answer(hc, "405 Method Not Allowed", NULL, 0);
		return;
	}
	if (strncmp(path, "/metrics ", 9) && strncmp(path, "/ ", 2) && strncmp(path, "/metrics?", 9)) {
		conn_answer(hc, "404 Not Found", NULL, 0);
		return;
	}
	if (metrics_render(http.b, &text, &len) < 0) {
		conn_answer(hc, "503 Service Unavailable", NULL, 0);
		return;
	}
	conn_answer(hc, "200 OK", text, len);
	free(text);
}

static void conn_event(struct watch *w, uint32_t events)
{
	struct http_conn *hc = w->obj;
	if (hc->out) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			conn_write(hc);
		return;
	}
	for (;;) {
		ssize_t n = recv(hc->fd, hc->in + hc->in_len, sizeof hc->in - 1 - hc->in_len,
		                 MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_close(hc);
			return;
		}
		hc->in_len += (size_t)n;
		hc->in[hc->in_len] = 0;
		if (strstr(hc->in, "\r\n\r\n") || strstr(hc->in, "\n\n")) {
			conn_request(hc);
			return;
		}
		if (hc->in_len == sizeof hc->in - 1) {
			conn_answer(hc, "431 Request Header Fields Too Large", NULL, 0);
			return;
		}
	}
}

static void listen_event(struct watch *w, uint32_t events)
{
	(void)w;
	(void)events;
	for (;;) {
		int fd = accept4(http.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), i;
		if (fd < 0)
			break; /* EAGAIN, or out of descriptors: try at the next wakeup */
		for (i = 0; i < HTTP_CONNS_MAX && http.conn[i].fd >= 0; i++)
			;
		if (i == HTTP_CONNS_MAX) {
			close(fd); /* the cap: the scraper sees a reset, and retries */
			continue;
		}
		http.conn[i].fd = fd;
		http.conn[i].deadline_ms = now_ms() + HTTP_TIME_LIMIT_MS;
		http.conn[i].watch = (struct watch){ conn_event, &http.conn[i] };
		if (loop_add(&http.b->loop, fd, &http.conn[i].watch, EPOLLIN) < 0) {
			close(fd);
			http.conn[i].fd = -1;
		}
	}
	arm_timer();
}

static void timer_event(struct watch *w, uint32_t events)
{
	uint64_t ticks;
	int64_t now = now_ms();
	(void)w;
	(void)events;
	if (read(http.timer_fd, &ticks, sizeof ticks) < 0) {
		/* EAGAIN: re-armed meanwhile */
	}
	for (int i = 0; i < HTTP_CONNS_MAX; i++)
		if (http.conn[i].fd >= 0 && http.conn[i].deadline_ms <= now)
			conn_close(&http.conn[i]);
	arm_timer();
}

int metrics_http_listen(struct broker *b, char *err, size_t errsize)
{
	char shown[INET6_ADDRSTRLEN + 8] = "?";
	struct sockaddr_storage bound;
	socklen_t bl = sizeof bound;
	int one = 1;
	if (!http.addr_len)
		return 0;
	http.b = b;
	for (int i = 0; i < HTTP_CONNS_MAX; i++)
		http.conn[i].fd = -1;
	http.listen_fd = socket(http.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	http.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (http.listen_fd < 0 || http.timer_fd < 0 ||
	    setsockopt(http.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(http.listen_fd, (struct sockaddr *)&http.addr, http.addr_len) < 0 ||
	    listen(http.listen_fd, 16) < 0 ||
	    getsockname(http.listen_fd, (struct sockaddr *)&bound, &bl) < 0) {
		snprintf(err, errsize, "--metrics-listen: %s", strerror(errno));
		metrics_http_close();
		return COORD_ESYS;
	}
	http.listen_watch = (struct watch){ listen_event, NULL };
	http.timer_watch = (struct watch){ timer_event, NULL };
	if (loop_add(&b->loop, http.listen_fd, &http.listen_watch, EPOLLIN) < 0 ||
	    loop_add(&b->loop, http.timer_fd, &http.timer_watch, EPOLLIN) < 0) {
		snprintf(err, errsize, "--metrics-listen: %s", strerror(errno));
		metrics_http_close();
		return COORD_ESYS;
	}
	if (bound.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&bound;
		char ip[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
		snprintf(shown, sizeof shown, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&bound;
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
		snprintf(shown, sizeof shown, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
	}
	log_event(&b->log, "metrics-listen", "addr=%s", shown);
	return 0;
}

void metrics_http_close(void)
{
	for (int i = 0; i < HTTP_CONNS_MAX && http.b; i++)
		if (http.conn[i].fd >= 0)
			conn_close(&http.conn[i]);
	if (http.listen_fd >= 0) {
		if (http.b)
			loop_del(&http.b->loop, http.listen_fd);
		close(http.listen_fd);
	}
	if (http.timer_fd >= 0) {
		if (http.b)
			loop_del(&http.b->loop, http.timer_fd);
		close(http.timer_fd);
	}
	http.listen_fd = http.timer_fd = -1;
}

/* The broker's event loop: accepting clients, reading their requests,
 * answering, and noticing their death.
 *
 * One thread, one epoll set: the listening socket, a signalfd, a timerfd
 * for waiter deadlines, and per client its socket and a pidfd.  A holder's
 * death reaches us from the kernel, either as a hang-up on its socket or
 * as its pidfd becoming readable, whichever comes first; no timer is
 * involved.  The pid comes from SO_PEERCRED and the pidfd from
 * SO_PEERPIDFD where the kernel has it (so a reused pid can never stand in
 * for a dead client), else from pidfd_open() right after accept.
 *
 * Nothing read from a client is trusted: packets go through proto_decode()
 * first, lease ids are looked up among the sender's own leases only, and a
 * client that does not read its replies is disconnected rather than
 * buffered for without bound.  Clients are never freed inside lease table
 * callbacks; they are marked dead and destroyed at the end of the loop
 * iteration. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "log.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define OUT_MAX_BYTES (4u << 20)
#define KEEP_RESOURCES_MAX 100000

static size_t kept_resources;

int64_t broker_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t broker_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int broker_watch(struct broker *b, int fd, struct watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	return epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static const char *mode_name(int mode)
{
	return mode == COORD_WRITE ? "write" : "read";
}

/* ---- sending ---- */

static void client_kill(struct broker *b, struct client *c, const char *reason)
{
	if (c->dead)
		return;
	c->dead = 1;
	c->dead_reason = reason;
	c->dead_next = b->dead;
	b->dead = c;
}

static void client_flush(struct broker *b, struct client *c)
{
	while (c->out_head) {
		struct outbuf *o = c->out_head;
		ssize_t n = send(c->fd, o->data, o->len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			client_kill(b, c, "hangup");
			return;
		}
		c->out_head = o->next;
		if (!c->out_head)
			c->out_tail = NULL;
		c->out_bytes -= o->len;
		free(o);
	}
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = &c->sock_watch };
	epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

void client_send(struct broker *b, struct client *c, const void *msg, size_t len)
{
	struct outbuf *o;
	if (c->dead)
		return;
	if (!c->out_head) {
		ssize_t n = send(c->fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == (ssize_t)len)
			return;
		if (n >= 0 || errno != EAGAIN) {
			client_kill(b, c, "hangup");
			return;
		}
	}
	if (c->out_bytes + len > OUT_MAX_BYTES) {
		log_event("drop-client", "client=%llu pid=%d reason=not-reading-replies",
		          (unsigned long long)c->id, (int)c->pid);
		client_kill(b, c, "not-reading");
		return;
	}
	o = malloc(sizeof *o + len);
	if (!o) {
		client_kill(b, c, "out-of-memory");
		return;
	}
	o->next = NULL;
	o->len = len;
	memcpy(o->data, msg, len);
	if (c->out_tail)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	c->out_bytes += len;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLOUT,
		                  .data.ptr = &c->sock_watch };
	epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

void client_reply(struct broker *b, struct client *c, uint32_t seq, int status)
{
	coord_msg_reply r = { { COORD_MSG_REPLY, seq }, status, 0 };
	client_send(b, c, &r, sizeof r);
}

static void send_grant(struct broker *b, struct client *c, uint32_t seq, const struct lt_lease *l)
{
	coord_msg_grant g = { { COORD_MSG_GRANT, seq }, 0, (uint32_t)l->mode, l->id, l->token, l->slot };
	client_send(b, c, &g, sizeof g);
}

/* ---- lease table events ---- */

static int64_t ev_now(void *ud)
{
	(void)ud;
	return broker_now_ms();
}

static int ev_resource_open(void *ud, struct lt_resource *res)
{
	struct broker *b = ud;
	struct resource_ext *x = calloc(1, sizeof *x);
	int rc;
	if (!x)
		return COORD_ENOMEM;
	rc = store_resource_load(b->store, res->name, &x->rec);
	if (rc == 0) {
		x->stored = 1;
	} else if (rc == COORD_ENOENT) {
		x->rec.version = STORE_RESOURCE_VERSION;
	} else {
		free(x);
		return rc;
	}
	/* Tokens up to the ceiling may have been granted by an earlier
	 * broker; the next write token is above it. */
	res->token = x->rec.token_ceiling;
	res->ext = x;
	if (x->stored)
		kept_resources++;
	checkpointer_resource_open(b, res);
	return 0;
}

static int ev_resource_keep(void *ud, struct lt_resource *res)
{
	struct resource_ext *x = res->ext;
	(void)ud;
	/* Keep resources that have a durable record in memory, so an idle
	 * resource's next write grant does not need a synced commit. */
	return x->job != NULL || (x->stored && kept_resources <= KEEP_RESOURCES_MAX);
}

static void ev_resource_close(void *ud, struct lt_resource *res)
{
	struct resource_ext *x = res->ext;
	(void)ud;
	if (x && x->stored)
		kept_resources--;
	free(x);
	res->ext = NULL;
}

static int ev_grant(void *ud, struct lt_lease *l, struct lt_waiter *w)
{
	struct broker *b = ud;
	struct client *c = l->owner;
	struct resource_ext *x = l->res->ext;
	struct store_lease rec = { 0 };
	int rc;
	(void)w;

	if (!b->nfree_slots)
		return COORD_ELIMIT;
	if (l->token > x->rec.token_ceiling) {
		/* Reserve the next 1024 tokens durably before handing one out,
		 * so a token is never reissued after a crash or reboot. */
		x->rec.token_ceiling = l->token + 1023;
		rc = store_resource_save(b->store, l->res->name, &x->rec);
		if (rc < 0) {
			x->rec.token_ceiling = l->token - 1;
			log_event("error", "op=token-reserve resource=%s code=%s", log_quote(l->res->name),
			          coord_proto_errname(rc));
			return rc;
		}
		if (!x->stored)
			kept_resources++;
		x->stored = 1;
	}
	l->slot = b->free_slots[b->nfree_slots - 1];
	l->granted_wall_ms = broker_wall_ms();
	rec.id = l->id;
	rec.token = l->token;
	rec.mode = (uint32_t)l->mode;
	rec.uid = (uint32_t)c->uid;
	rec.pid = (uint64_t)c->pid;
	rec.pid_start = c->pid_start;
	rec.slot = l->slot;
	rec.granted_wall_ms = l->granted_wall_ms;
	snprintf(rec.name, sizeof rec.name, "%s", l->res->name);
	snprintf(rec.label, sizeof rec.label, "%s", l->label);
	rc = store_lease_put(b->store, &rec);
	if (rc < 0) {
		log_event("error", "op=lease-record resource=%s code=%s", log_quote(l->res->name),
		          coord_proto_errname(rc));
		return rc;
	}
	b->nfree_slots--;
	region_set(b->region, l->slot, l->id);
	l->own_prev = NULL;
	l->own_next = c->leases;
	if (c->leases)
		c->leases->own_prev = l;
	c->leases = l;
	log_event("grant", "lease=%llu resource=%s mode=%s token=%llu pid=%d comm=%s label=%s",
	          (unsigned long long)l->id, log_quote(l->res->name), mode_name(l->mode),
	          (unsigned long long)l->token, (int)c->pid, log_quote(c->comm), log_quote(l->label));
	return 0;
}

static void ev_granted(void *ud, struct lt_waiter *w, struct lt_lease *l)
{
	struct broker *b = ud;
	struct client *c = w->owner;
	c->waiter = NULL;
	if (w->purpose == LT_FOR_CHECKPOINT)
		checkpointer_on_turn(b, w->res, c, w->seq);
	else
		send_grant(b, c, w->seq, l);
}

static void ev_waiter_failed(void *ud, struct lt_waiter *w, int err)
{
	struct broker *b = ud;
	struct client *c = w->owner;
	c->waiter = NULL;
	log_event(err == COORD_ETIMEDOUT ? "timeout" : "refuse",
	          "resource=%s mode=%s pid=%d waited_ms=%lld code=%s", log_quote(w->res->name),
	          mode_name(w->mode), (int)c->pid, (long long)(broker_now_ms() - w->since_ms),
	          coord_proto_errname(err));
	client_reply(b, c, w->seq, err);
}

static void ev_released(void *ud, struct lt_lease *l, const char *why)
{
	struct broker *b = ud;
	struct client *c = l->owner;
	int rc;

	/* Clear the slot first: from here on the old holder's
	 * coord_lease_valid() is false, before anyone else is granted. */
	region_set(b->region, l->slot, 0);
	b->free_slots[b->nfree_slots++] = l->slot;
	rc = store_lease_del(b->store, l->id);
	if (rc < 0)
		log_event("error", "op=lease-record-delete lease=%llu code=%s",
		          (unsigned long long)l->id, coord_proto_errname(rc));
	if (l->own_prev)
		l->own_prev->own_next = l->own_next;
	else
		c->leases = l->own_next;
	if (l->own_next)
		l->own_next->own_prev = l->own_prev;
	log_event(strcmp(why, "release") ? "reclaim" : "release",
	          "lease=%llu resource=%s mode=%s token=%llu pid=%d comm=%s held_ms=%lld reason=%s",
	          (unsigned long long)l->id, log_quote(l->res->name), mode_name(l->mode),
	          (unsigned long long)l->token, (int)c->pid, log_quote(c->comm),
	          (long long)(broker_now_ms() - l->granted_ms), why);
	if (l->mode == COORD_WRITE)
		checkpointer_on_write_release(b, l->res);
}

static const struct lt_events events = {
	.now = ev_now,
	.resource_open = ev_resource_open,
	.resource_keep = ev_resource_keep,
	.resource_close = ev_resource_close,
	.grant = ev_grant,
	.granted = ev_granted,
	.waiter_failed = ev_waiter_failed,
	.released = ev_released,
};

/* ---- clients ---- */

static void read_proc(pid_t pid, char *comm, size_t commsize, uint64_t *start)
{
	char path[64], buf[1024];
	ssize_t n;
	int fd;
	snprintf(comm, commsize, "?");
	*start = 0;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	/* "pid (comm) state ..." - comm may hold spaces and parentheses. */
	char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
	if (!open_paren || !close_paren || close_paren < open_paren)
		return;
	snprintf(comm, commsize, "%.*s", (int)(close_paren - open_paren - 1), open_paren + 1);
	/* starttime is field 22; field 3 follows ") " */
	char *p = close_paren + 2;
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (p)
		*start = strtoull(p, NULL, 10);
}

static void accept_clients(struct broker *b)
{
	for (;;) {
		struct ucred cred;
		socklen_t len = sizeof cred;
		struct client *c;
		int pidfd = -1;
		int fd = accept4(b->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_event("error", "op=accept errno=%s", strerror(errno));
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
			goto refuse;
		if (b->nclients >= b->cfg.max_clients) {
			log_event("refuse-client", "pid=%d reason=max-clients max=%llu", (int)cred.pid,
			          (unsigned long long)b->cfg.max_clients);
			goto refuse;
		}
		len = sizeof pidfd;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
			pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
		if (pidfd < 0)
			goto refuse; /* already gone */
		fcntl(pidfd, F_SETFD, FD_CLOEXEC);
		c = calloc(1, sizeof *c);
		if (!c)
			goto refuse;
		c->id = ++b->next_client_id;
		c->fd = fd;
		c->pidfd = pidfd;
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->connected_ms = broker_now_ms();
		read_proc(cred.pid, c->comm, sizeof c->comm, &c->pid_start);
		c->sock_watch = (struct watch){ WATCH_CLIENT, c };
		c->pid_watch = (struct watch){ WATCH_PIDFD, c };
		if (broker_watch(b, fd, &c->sock_watch, EPOLLIN | EPOLLRDHUP) < 0 ||
		    broker_watch(b, pidfd, &c->pid_watch, EPOLLIN) < 0) {
			epoll_ctl(b->epfd, EPOLL_CTL_DEL, fd, NULL);
			free(c);
			goto refuse;
		}
		c->next = b->clients;
		if (b->clients)
			b->clients->prev = c;
		b->clients = c;
		b->nclients++;
		continue;
refuse:
		if (pidfd >= 0)
			close(pidfd);
		close(fd);
	}
}

static void client_destroy(struct broker *b, struct client *c)
{
	const char *why = c->dead_reason ? c->dead_reason : "hangup";
	if (c->waiter) {
		struct lt_waiter *w = c->waiter;
		c->waiter = NULL;
		log_event("cancel", "resource=%s mode=%s pid=%d reason=%s", log_quote(w->res->name),
		          mode_name(w->mode), (int)c->pid, why);
		lease_table_cancel(b->table, w);
	}
	while (c->leases)
		lease_table_release(b->table, c->leases, why);
	checkpointer_client_gone(b, c);
	epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->pidfd, NULL);
	close(c->fd);
	close(c->pidfd);
	while (c->out_head) {
		struct outbuf *o = c->out_head;
		c->out_head = o->next;
		free(o);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		b->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	b->nclients--;
	free(c);
}

static void reap_dead(struct broker *b)
{
	while (b->dead) {
		struct client *c = b->dead;
		b->dead = c->dead_next;
		client_destroy(b, c);
	}
}

/* ---- requests ---- */

static void handle_acquire(struct broker *b, struct client *c, const struct request *req)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	int64_t now = broker_now_ms(), deadline;
	int rc;

	if (c->waiter) {
		client_reply(b, c, req->seq, COORD_EBUSYCONN);
		return;
	}
	deadline = req->timeout_ms < 0 ? -1 : now + req->timeout_ms;
	rc = lease_table_request(b->table, req->name, c, req->mode, now, deadline, LT_FOR_CLIENT,
	                         req->seq, req->label, &l, &w);
	if (rc > 0) {
		send_grant(b, c, req->seq, l);
	} else if (rc == 0) {
		c->waiter = w;
		log_event("wait", "resource=%s mode=%s pid=%d comm=%s timeout_ms=%d",
		          log_quote(req->name), mode_name(req->mode), (int)c->pid, log_quote(c->comm),
		          (int)req->timeout_ms);
	} else {
		if (rc != COORD_EBUSY)
			log_event("refuse", "resource=%s mode=%s pid=%d code=%s", log_quote(req->name),
			          mode_name(req->mode), (int)c->pid, coord_proto_errname(rc));
		client_reply(b, c, req->seq, rc);
	}
}

static void handle_release(struct broker *b, struct client *c, const struct request *req)
{
	struct lt_lease *l;
	for (l = c->leases; l; l = l->own_next)
		if (l->id == req->lease_id)
			break;
	if (!l) {
		if (!(req->flags & COORD_RELEASE_NO_REPLY))
			client_reply(b, c, req->seq, COORD_ENOLEASE);
		return;
	}
	lease_table_release(b->table, l, "release");
	if (!(req->flags & COORD_RELEASE_NO_REPLY))
		client_reply(b, c, req->seq, 0);
}

static void handle_status(struct broker *b, struct client *c, const struct request *req)
{
	union {
		coord_msg_status_reply s;
		char raw[COORD_MSG_MAX];
	} m;
	size_t dl = strlen(b->cfg.dir);
	if (dl > COORD_MSG_MAX - sizeof m.s)
		dl = COORD_MSG_MAX - sizeof m.s;
	memset(&m.s, 0, sizeof m.s);
	m.s.h = (coord_msg_hdr){ COORD_MSG_STATUS_REPLY, req->seq };
	m.s.version = COORD_PROTO_VERSION;
	m.s.broker_pid = (uint64_t)getpid();
	m.s.uptime_ms = (uint64_t)(broker_now_ms() - b->started_ms);
	m.s.clients = b->nclients;
	m.s.leases = lease_table_leases(b->table);
	m.s.waiters = lease_table_waiters(b->table);
	m.s.resources = lease_table_resources(b->table);
	m.s.dir_len = (uint16_t)dl;
	memcpy(m.raw + sizeof m.s, b->cfg.dir, dl);
	client_send(b, c, &m, sizeof m.s + dl);
}

static void send_info(struct broker *b, struct client *to, uint32_t seq, int kind, int mode,
                      uint64_t id, uint64_t token, const struct client *who, int64_t since,
                      const char *name, const char *label)
{
	union {
		coord_msg_lease_info i;
		char raw[COORD_MSG_MAX];
	} m;
	size_t nl = strlen(name), cl = strlen(who->comm), ll = strlen(label);
	char *p = m.raw + sizeof m.i;
	memset(&m.i, 0, sizeof m.i);
	m.i.h = (coord_msg_hdr){ COORD_MSG_LEASE_INFO, seq };
	m.i.kind = (uint32_t)kind;
	m.i.mode = (uint32_t)mode;
	m.i.lease_id = id;
	m.i.token = token;
	m.i.pid = (uint64_t)who->pid;
	m.i.uid = (uint64_t)who->uid;
	m.i.age_ms = (uint64_t)(broker_now_ms() - since);
	m.i.name_len = (uint16_t)nl;
	m.i.comm_len = (uint16_t)cl;
	m.i.label_len = (uint16_t)ll;
	memcpy(p, name, nl);
	memcpy(p + nl, who->comm, cl);
	memcpy(p + nl + cl, label, ll);
	client_send(b, to, &m, sizeof m.i + nl + cl + ll);
}

struct list_walk {
	struct broker *b;
	struct client *to;
	uint32_t seq;
};

static void list_resource(struct lt_resource *res, void *arg)
{
	struct list_walk *lw = arg;
	for (struct lt_lease *l = res->holders; l; l = l->res_next)
		send_info(lw->b, lw->to, lw->seq, COORD_INFO_HOLDER, l->mode, l->id, l->token, l->owner,
		          l->granted_ms, res->name, l->label);
	for (struct lt_waiter *w = res->head; w; w = w->next)
		send_info(lw->b, lw->to, lw->seq, COORD_INFO_WAITER, w->mode, 0, 0, w->owner, w->since_ms,
		          res->name, w->purpose == LT_FOR_CHECKPOINT ? "checkpoint" : w->label);
}

void server_send_resource_leases(struct broker *b, struct client *c, uint32_t seq,
                                 struct lt_resource *res)
{
	struct list_walk lw = { b, c, seq };
	list_resource(res, &lw);
}

static void handle_list(struct broker *b, struct client *c, const struct request *req)
{
	struct list_walk lw = { b, c, req->seq };
	coord_msg_reply end = { { COORD_MSG_END, req->seq }, 0, 0 };
	lease_table_foreach(b->table, list_resource, &lw);
	client_send(b, c, &end, sizeof end);
}

static void handle_request(struct broker *b, struct client *c, const void *buf, size_t len)
{
	struct request req;
	int rc = proto_decode(buf, len, &req);

	if (rc == COORD_EPROTO || (!c->helloed && req.type != COORD_MSG_HELLO)) {
		log_event("protocol-error", "pid=%d comm=%s bytes=%zu type=%u", (int)c->pid,
		          log_quote(c->comm), len, (unsigned)req.type);
		client_kill(b, c, "protocol-error");
		return;
	}
	if (rc < 0) {
		client_reply(b, c, req.seq, rc);
		return;
	}
	switch (req.type) {
	case COORD_MSG_HELLO: {
		coord_msg_welcome w = { { COORD_MSG_WELCOME, req.seq }, 0, COORD_PROTO_VERSION, c->id,
			                (uint64_t)getpid() };
		if (c->helloed || req.version != COORD_PROTO_VERSION)
			w.status = COORD_EPROTO;
		c->helloed = 1;
		client_send(b, c, &w, sizeof w);
		if (w.status < 0)
			client_kill(b, c, "protocol-error");
		break;
	}
	case COORD_MSG_ACQUIRE:
		handle_acquire(b, c, &req);
		break;
	case COORD_MSG_RELEASE:
		handle_release(b, c, &req);
		break;
	case COORD_MSG_STATUS:
		handle_status(b, c, &req);
		break;
	case COORD_MSG_LIST:
		handle_list(b, c, &req);
		break;
	case COORD_MSG_SHOW:
	case COORD_MSG_POLICY:
	case COORD_MSG_CHECKPOINT:
		checkpointer_request(b, c, &req);
		break;
	}
}

static void client_readable(struct broker *b, struct client *c)
{
	char buf[COORD_MSG_MAX];
	/* Bounded per wakeup, so one busy client cannot starve the others. */
	for (int i = 0; i < 64 && !c->dead; i++) {
		ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			client_kill(b, c, "hangup");
			return;
		}
		handle_request(b, c, buf, (size_t)n);
	}
}

/* ---- loop ---- */

static void arm_timer(struct broker *b)
{
	int64_t d1 = lease_table_next_deadline(b->table);
	int64_t d2 = checkpointer_next_deadline(b);
	int64_t d = d1 < 0 ? d2 : (d2 < 0 || d1 < d2 ? d1 : d2);
	struct itimerspec its = { 0 };
	if (d >= 0) {
		int64_t left = d - broker_now_ms();
		if (left < 1)
			left = 1; /* 0 would disarm */
		its.it_value.tv_sec = left / 1000;
		its.it_value.tv_nsec = (left % 1000) * 1000000;
	}
	timerfd_settime(b->timer_fd, 0, &its, NULL);
}

static void handle_signals(struct broker *b)
{
	struct signalfd_siginfo si;
	while (read(b->signal_fd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			log_event("shutdown", "signal=%s", si.ssi_signo == SIGTERM ? "TERM" : "INT");
			b->stopping = 1;
		}
	}
}

int server_run(struct broker *b)
{
	struct epoll_event evs[64];
	while (!b->stopping) {
		int n = epoll_wait(b->epfd, evs, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return COORD_ESYS;
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			struct client *c = w->obj;
			switch (w->kind) {
			case WATCH_LISTEN:
				accept_clients(b);
				break;
			case WATCH_SIGNAL:
				handle_signals(b);
				break;
			case WATCH_TIMER: {
				uint64_t ticks;
				if (read(b->timer_fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
					return COORD_ESYS;
				lease_table_expire(b->table, broker_now_ms());
				checkpointer_expire(b, broker_now_ms());
				break;
			}
			case WATCH_CLIENT:
				if (c->dead)
					break;
				if (evs[i].events & EPOLLOUT)
					client_flush(b, c);
				if (evs[i].events & EPOLLIN)
					client_readable(b, c);
				else if (evs[i].events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP))
					client_kill(b, c, "hangup");
				break;
			case WATCH_PIDFD:
				client_kill(b, c, "exit");
				break;
			case WATCH_CHECKPOINT:
				checkpointer_event(b, w->obj);
				break;
			}
		}
		reap_dead(b);
		arm_timer(b);
	}
	return 0;
}

int server_init(struct broker *b, char *err, size_t errsize)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	sigset_t mask;

	b->table = lease_table_new(&events, b, b->cfg.max_leases, b->cfg.max_waiters,
	                           b->first_lease_id);
	if (!b->table)
		return COORD_ENOMEM;
	b->free_slots = malloc(b->cfg.max_leases * sizeof *b->free_slots);
	if (!b->free_slots)
		return COORD_ENOMEM;
	for (uint64_t i = 0; i < b->cfg.max_leases; i++)
		b->free_slots[i] = b->cfg.max_leases - 1 - i;
	b->nfree_slots = b->cfg.max_leases;

	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (b->epfd < 0)
		goto sys;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	b->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (b->signal_fd < 0 || b->timer_fd < 0)
		goto sys;
	b->signal_watch = (struct watch){ WATCH_SIGNAL, NULL };
	b->timer_watch = (struct watch){ WATCH_TIMER, NULL };
	b->listen_watch = (struct watch){ WATCH_LISTEN, NULL };
	if (broker_watch(b, b->signal_fd, &b->signal_watch, EPOLLIN) < 0 ||
	    broker_watch(b, b->timer_fd, &b->timer_watch, EPOLLIN) < 0)
		goto sys;

	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", b->cfg.dir,
	                     COORD_SOCKET_NAME) >= sizeof sa.sun_path) {
		snprintf(err, errsize, "socket path %s/%s is longer than %zu bytes; use a shorter --dir",
		         b->cfg.dir, COORD_SOCKET_NAME, sizeof sa.sun_path - 1);
		return COORD_EINVAL;
	}
	snprintf(b->sock_path, sizeof b->sock_path, "%s", sa.sun_path);
	b->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (b->listen_fd < 0)
		goto sys;
	/* We hold the instance lock, so a socket file here is a dead broker's. */
	unlink(sa.sun_path);
	if (bind(b->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    listen(b->listen_fd, 1024) < 0)
		goto sys;
	if (broker_watch(b, b->listen_fd, &b->listen_watch, EPOLLIN) < 0)
		goto sys;
	b->started_ms = broker_now_ms();
	checkpointer_init(b);
	return 0;
sys:
	snprintf(err, errsize, "%s", strerror(errno));
	return COORD_ESYS;
}

void server_fini(struct broker *b)
{
	checkpointer_shutdown(b);
	while (b->clients) {
		client_kill(b, b->clients, "shutdown");
		b->dead = NULL;
		client_destroy(b, b->clients);
	}
	if (b->sock_path[0])
		unlink(b->sock_path);
	lease_table_free(b->table);
	free(b->free_slots);
}

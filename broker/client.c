/* Client connections.
 *
 * A holder's death reaches us from the kernel, either as a hang-up on its
 * socket or as its pidfd becoming readable, whichever comes first; no timer
 * is involved.  The pid comes from SO_PEERCRED and the pidfd from
 * SO_PEERPIDFD where the kernel has it (so a reused pid can never stand in
 * for a dead client), else from pidfd_open() right after accept.
 *
 * Nothing read from a client is interpreted here: packets go up through
 * client_events.packet, whose handler decodes them.  A client that does not
 * read its replies is disconnected rather than buffered for without bound.
 * Clients are never freed while others may still point at them: they are
 * marked dead and destroyed by clients_reap() at the end of the loop
 * iteration. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define OUT_MAX_BYTES (4u << 20)

struct outbuf {
	struct outbuf *next;
	size_t len;
	char data[];
};

void client_kill(struct client *c, const char *reason)
{
	if (c->dead)
		return;
	c->dead = 1;
	c->dead_reason = reason;
	c->dead_next = c->set->dead;
	c->set->dead = c;
}

static void want_output(struct client *c, int on)
{
	loop_mod(c->set->loop, c->fd, &c->sock_watch, EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0));
}

static void flush(struct client *c)
{
	while (c->out_head) {
		struct outbuf *o = c->out_head;
		ssize_t n = send(c->fd, o->data, o->len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			client_kill(c, "hangup");
			return;
		}
		c->out_head = o->next;
		if (!c->out_head)
			c->out_tail = NULL;
		c->out_bytes -= o->len;
		free(o);
	}
	want_output(c, 0);
}

void client_send(struct client *c, const void *msg, size_t len)
{
	struct outbuf *o;
	if (c->dead)
		return;
	if (!c->out_head) {
		ssize_t n = send(c->fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == (ssize_t)len)
			return;
		if (n >= 0 || errno != EAGAIN) {
			client_kill(c, "hangup");
			return;
		}
	}
	if (c->out_bytes + len > OUT_MAX_BYTES) {
		log_event(c->set->log, "drop-client", "client=%llu pid=%d reason=not-reading-replies",
		          (unsigned long long)c->id, (int)c->pid);
		client_kill(c, "not-reading");
		return;
	}
	o = malloc(sizeof *o + len);
	if (!o) {
		client_kill(c, "out-of-memory");
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
	want_output(c, 1);
}

void client_reply(struct client *c, uint32_t seq, int status)
{
	coord_msg_reply r = { { COORD_MSG_REPLY, seq }, status, 0 };
	client_send(c, &r, sizeof r);
}

static void readable(struct client *c)
{
	char buf[COORD_MSG_MAX];
	/* Bounded per wakeup, so one busy client cannot starve the others. */
	for (int i = 0; i < 64 && !c->dead; i++) {
		ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			client_kill(c, "hangup");
			return;
		}
		c->set->ev.packet(c->set->ud, c, buf, (size_t)n);
	}
}

static void socket_event(struct watch *w, uint32_t events)
{
	struct client *c = w->obj;
	if (c->dead)
		return;
	if (events & EPOLLOUT)
		flush(c);
	if (events & EPOLLIN)
		readable(c);
	else if (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP))
		client_kill(c, "hangup");
}

static void process_exited(struct watch *w, uint32_t events)
{
	(void)events;
	client_kill(w->obj, "exit");
}

/* The comm and the start time of pid, from /proc/PID/stat. */
static void read_proc(pid_t pid, char *comm, size_t commsize, uint64_t *start)
{
	char path[64], buf[1024];
	char *open_paren, *close_paren, *p;
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
	open_paren = strchr(buf, '(');
	close_paren = strrchr(buf, ')');
	if (!open_paren || !close_paren || close_paren < open_paren)
		return;
	snprintf(comm, commsize, "%.*s", (int)(close_paren - open_paren - 1), open_paren + 1);
	/* starttime is field 22; field 3 follows ") " */
	p = close_paren + 2;
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (p)
		*start = strtoull(p, NULL, 10);
}

/* Takes one pending connection.  Returns 0 when there was none left. */
static int accept_one(struct clients *cs)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	struct client *c = NULL;
	int pidfd = -1;
	int fd = accept4(cs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_event(cs->log, "error", "op=accept errno=%s", strerror(errno));
		return errno == EINTR || errno == ECONNABORTED;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		goto refuse;
	if (cs->n >= cs->max) {
		log_event(cs->log, "refuse-client", "pid=%d reason=max-clients max=%llu",
		          (int)cred.pid, (unsigned long long)cs->max);
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
	c->set = cs;
	c->id = ++cs->next_id;
	c->fd = fd;
	c->pidfd = pidfd;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->connected_ms = now_ms();
	read_proc(cred.pid, c->comm, sizeof c->comm, &c->pid_start);
	c->sock_watch = (struct watch){ socket_event, c };
	c->pid_watch = (struct watch){ process_exited, c };
	if (cs->ev.accepted(cs->ud, c) < 0)
		goto refuse;
	if (loop_add(cs->loop, fd, &c->sock_watch, EPOLLIN | EPOLLRDHUP) < 0 ||
	    loop_add(cs->loop, pidfd, &c->pid_watch, EPOLLIN) < 0) {
		loop_del(cs->loop, fd);
		cs->ev.gone(cs->ud, c, "refused");
		goto refuse;
	}
	c->next = cs->list;
	if (cs->list)
		cs->list->prev = c;
	cs->list = c;
	cs->n++;
	return 1;
refuse:
	free(c);
	if (pidfd >= 0)
		close(pidfd);
	close(fd);
	return 1;
}

static void listener_event(struct watch *w, uint32_t events)
{
	(void)events;
	while (accept_one(w->obj))
		;
}

int clients_listen(struct clients *cs, const char *dir, char *err, size_t errsize)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, COORD_SOCKET_NAME) >=
	    sizeof sa.sun_path) {
		snprintf(err, errsize, "socket path %s/%s is longer than %zu bytes; use a shorter --dir",
		         dir, COORD_SOCKET_NAME, sizeof sa.sun_path - 1);
		return COORD_EINVAL;
	}
	cs->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (cs->listen_fd < 0)
		goto sys;
	/* We hold the instance lock, so a socket file here is a dead broker's. */
	unlink(sa.sun_path);
	if (bind(cs->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		goto sys;
	snprintf(cs->sock_path, sizeof cs->sock_path, "%s", sa.sun_path);
	cs->listen_watch = (struct watch){ listener_event, cs };
	if (listen(cs->listen_fd, 1024) < 0 ||
	    loop_add(cs->loop, cs->listen_fd, &cs->listen_watch, EPOLLIN) < 0)
		goto sys;
	return 0;
sys:
	snprintf(err, errsize, "%s: %s", sa.sun_path, strerror(errno));
	return COORD_ESYS;
}

static void destroy(struct clients *cs, struct client *c)
{
	cs->ev.gone(cs->ud, c, c->dead_reason ? c->dead_reason : "hangup");
	loop_del(cs->loop, c->fd);
	loop_del(cs->loop, c->pidfd);
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
		cs->list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	cs->n--;
	free(c);
}

void clients_reap(struct clients *cs)
{
	while (cs->dead) {
		struct client *c = cs->dead;
		cs->dead = c->dead_next;
		destroy(cs, c);
	}
}

void clients_close(struct clients *cs)
{
	for (struct client *c = cs->list; c; c = c->next)
		client_kill(c, "shutdown");
	clients_reap(cs);
	if (cs->listen_fd >= 0)
		close(cs->listen_fd);
	cs->listen_fd = -1;
	if (cs->sock_path[0])
		unlink(cs->sock_path);
}

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
 *
 * Output is queued, never sent at once: clients_flush() sends it after the
 * loop iteration's commit of lease records (docs/design.md, "Group
 * commit"), so no GRANT reaches a client before the record that lets a
 * restarted broker adopt its lease.  Messages to one client keep their
 * order.
 * Clients are never freed while others may still point at them: they are
 * marked dead and destroyed at the end of the loop iteration, in two
 * steps: clients_reap() hands their leases on, and clients_free_reaped(),
 * after the answers that made went out, closes their descriptors, so a
 * dead holder's successor does not wait for those system calls.
 *
 * Past --max-clients or out of descriptors, a connection is refused with a
 * WELCOME{COORD_ELIMIT}, never left hanging; a spare descriptor, given up
 * for the moment, lets us accept even then.  What can never happen is a
 * listening socket that stays readable while accept() fails: that would
 * spin the loop, so listening pauses instead.  Each limit is logged once
 * per interval with a count, not once per attempt.
 *
 * A shared instance (coordd --group) takes only root, the broker's own
 * user and members of its group: the peer's groups are those it had at
 * connect() (SO_PEERGROUPS, or /proc/PID/status on kernels without it),
 * and an outsider is refused like a client past the limit, with
 * WELCOME{COORD_EPERM}. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

#include "client.h"
#include "ufd.h"

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
	if (c->out_watched == on)
		return;
	c->out_watched = on;
	loop_mod(c->set->loop, c->fd, &c->sock_watch, EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0));
}

/* Puts c on the list clients_flush() sends for. */
static void flush_later(struct client *c)
{
	if (c->flush_listed)
		return;
	c->flush_listed = 1;
	c->flush_next = c->set->flush_list;
	c->set->flush_list = c;
}

/* Sends what is queued for c, as far as its socket takes it. */
static void end_stream(struct client *c)
{
	void (*done)(void *) = c->stream_done;
	void *arg = c->stream_arg;
	c->stream_fill = NULL;
	c->stream_done = NULL;
	c->stream_arg = NULL;
	if (done)
		done(arg);
}

/* Lets the stream queue up to CLIENT_STREAM_BURST messages (less once
 * CLIENT_STREAM_QUEUED bytes wait), sent by clients_flush(); the next
 * burst comes when the socket has taken them (flush()) or is writable
 * again (EPOLLOUT). */
static void pump_stream(struct client *c)
{
	for (int i = 0; i < CLIENT_STREAM_BURST && c->stream_fill && !c->dead; i++) {
		if (c->out_bytes >= CLIENT_STREAM_QUEUED)
			break;
		if (!c->stream_fill(c, c->stream_arg))
			end_stream(c);
	}
	if (c->stream_fill && !c->dead)
		want_output(c, 1);
}

int client_stream(struct client *c, int (*fill)(struct client *c, void *arg),
                  void (*done)(void *arg), void *arg)
{
	if (c->stream_fill)
		return COORD_EBUSYCONN;
	c->stream_fill = fill;
	c->stream_done = done;
	c->stream_arg = arg;
	pump_stream(c);
	return 0;
}

static void flush(struct client *c)
{
	while (c->out_head) {
		struct outbuf *o = c->out_head;
		ssize_t n = send(c->fd, o->data, o->len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			want_output(c, 1);
			return;
		}
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
	if (c->stream_fill)
		pump_stream(c);
	else
		want_output(c, 0);
}

void clients_flush(struct clients *cs)
{
	while (cs->flush_list) {
		struct client *c = cs->flush_list;
		cs->flush_list = c->flush_next;
		c->flush_listed = 0;
		if (!c->dead)
			flush(c);
	}
}

struct outbuf *client_send_held(struct client *c, const void *msg, size_t len)
{
	struct outbuf *o;
	if (c->dead)
		return NULL;
	if (c->out_bytes + len > OUT_MAX_BYTES) {
		log_event(c->set->log, "drop-client", "client=%llu pid=%d reason=not-reading-replies",
		          (unsigned long long)c->id, (int)c->pid);
		client_kill(c, "not-reading");
		return NULL;
	}
	o = malloc(sizeof *o + len);
	if (!o) {
		client_kill(c, "out-of-memory");
		return NULL;
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
	flush_later(c);
	return o;
}

void client_rewrite(struct client *c, struct outbuf *o, const void *msg, size_t len)
{
	if (len > o->len)
		return; /* callers only shorten: see client.h */
	c->out_bytes -= o->len - len;
	o->len = len;
	memcpy(o->data, msg, len);
}

void client_send(struct client *c, const void *msg, size_t len)
{
	client_send_held(c, msg, len);
}

int client_send_fd(struct client *c, const void *msg, size_t len, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { (void *)msg, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
		             .msg_controllen = sizeof ctl.buf };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	ssize_t n;
	if (c->dead || c->out_head)
		return COORD_ESYS;
	memset(&ctl, 0, sizeof ctl);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	n = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n == (ssize_t)len)
		return 0;
	if (n >= 0 || errno != EAGAIN)
		client_kill(c, "hangup");
	return COORD_ESYS;
}

void client_reply(struct client *c, uint32_t seq, int status)
{
	coord_msg_reply r = { { COORD_MSG_REPLY, seq }, status, 0 };
	client_send(c, &r, sizeof r);
}

/* One packet into buf, with the first descriptor that came with it in
 * c->rx_fd.  Before c has a cache page nothing is received but bytes: the
 * kernel drops the descriptors a client sends without the broker ever
 * holding them.  Afterwards every descriptor is received, and all but the
 * first closed (ufd.c: never waiting on a filesystem daemon). */
static ssize_t receive(struct client *c, char *buf, size_t size)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} ctl;
	struct iovec iov = { buf, size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
		             .msg_controllen = sizeof ctl.buf };
	ssize_t n;
	if (!c->cache)
		return recv(c->fd, buf, size, MSG_DONTWAIT | MSG_TRUNC);
	n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	if (mh.msg_flags & MSG_TRUNC)
		n = (ssize_t)size + 1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t nfd;
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
			if (c->rx_fd < 0)
				c->rx_fd = fd;
			else
				ufd_close(fd);
		}
	}
	return n;
}

static void readable(struct client *c)
{
	char buf[COORD_MSG_MAX];
	/* Bounded per wakeup, so one busy client cannot starve the others. */
	for (int i = 0; i < 64 && !c->dead; i++) {
		ssize_t n = receive(c, buf, sizeof buf);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			client_kill(c, "hangup");
			return;
		}
		c->set->ev.packet(c->set->ud, c, buf, (size_t)n);
		if (c->rx_fd >= 0) {
			/* nobody wanted it */
			ufd_close(c->rx_fd);
			c->rx_fd = -1;
		}
	}
}

static void socket_event(struct watch *w, uint32_t events)
{
	struct client *c = w->obj;
	if (c->dead)
		return;
	/* Sent after this iteration's commit, with what it queues. */
	if (events & EPOLLOUT)
		flush_later(c);
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
void client_proc_stat(pid_t pid, char *comm, size_t commsize, uint64_t *start)
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

/* The supplementary groups of the peer on fd, from SO_PEERGROUPS (what it
 * had at connect(), like SO_PEERCRED), else from the "Groups:" line of
 * /proc/PID/status.  Returns a malloc'ed array of *n gids, or NULL. */
static gid_t *peer_groups(int fd, pid_t pid, size_t *n)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g = malloc(len);
	char path[64], *line = NULL;
	size_t cap = 0, count = 0;
	FILE *f;
	int rc;
	*n = 0;
	if (!g)
		return NULL;
	rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len);
	if (rc < 0 && errno == ERANGE) { /* len is what it takes */
		gid_t *bigger = realloc(g, len);
		if (!bigger)
			goto fail;
		g = bigger;
		rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len);
	}
	if (rc == 0) {
		*n = len / sizeof(gid_t);
		return g;
	}
	if (errno != ENOPROTOOPT)
		goto fail;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		goto fail;
	while (getline(&line, &cap, f) > 0) {
		char *p = line + 7, *end;
		if (strncmp(line, "Groups:", 7))
			continue;
		for (;;) {
			unsigned long v = strtoul(p, &end, 10);
			gid_t *bigger;
			if (end == p)
				break;
			p = end;
			if (count * sizeof(gid_t) >= len) {
				len *= 2;
				bigger = realloc(g, len);
				if (!bigger)
					break;
				g = bigger;
			}
			g[count++] = (gid_t)v;
		}
		break;
	}
	free(line);
	fclose(f);
	*n = count;
	return g;
fail:
	free(g);
	return NULL;
}

/* 1 if gid is the peer's group or one of its supplementary groups. */
static int peer_in(const struct ucred *cred, const gid_t *groups, size_t n, gid_t gid)
{
	if (cred->gid == gid)
		return 1;
	for (size_t i = 0; i < n; i++)
		if (groups[i] == gid)
			return 1;
	return 0;
}

/* ---- limits ---- */

/* The name of an errno accept() may fail with, else its number in buf. */
static const char *errno_name(int err, char buf[16])
{
	switch (err) {
	case EMFILE: return "EMFILE";
	case ENFILE: return "ENFILE";
	case ENOBUFS: return "ENOBUFS";
	case ENOMEM: return "ENOMEM";
	case EPERM: return "EPERM";
	case EPROTO: return "EPROTO";
	default:
		snprintf(buf, 16, "%d", err);
		return buf;
	}
}

static unsigned long long fd_limit(void)
{
	struct rlimit rl;
	return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (unsigned long long)rl.rlim_cur : 0;
}

/* Writes the line of condition k with its count, and starts its interval. */
static void log_condition(struct clients *cs, enum clients_condition k, int64_t now)
{
	struct clients_condition_log *l = &cs->cond[k];
	unsigned long long n = l->pending, clients = cs->n;
	char num[16];
	switch (k) {
	case CLIENTS_MAX_REACHED:
		log_event(cs->log, "refuse-client",
		          "reason=max-clients max_clients=%llu clients=%llu refused=%llu last_pid=%d",
		          (unsigned long long)cs->max, clients, n, (int)l->last_pid);
		break;
	case CLIENTS_OUT_OF_FDS:
		log_event(cs->log, "refuse-client",
		          "reason=out-of-fds fd_limit=%llu errno=%s clients=%llu refused=%llu last_pid=%d",
		          fd_limit(), errno_name(l->last_errno, num), clients, n, (int)l->last_pid);
		break;
	case CLIENTS_ACCEPT_PAUSED:
		log_event(cs->log, "accept-paused",
		          "errno=%s fd_limit=%llu clients=%llu retry_ms=%d times=%llu",
		          errno_name(l->last_errno, num), fd_limit(), clients, CLIENTS_PAUSE_MS, n);
		break;
	case CLIENTS_NOT_IN_GROUP:
		log_event(cs->log, "refuse-client",
		          "reason=not-in-group group=%s clients=%llu refused=%llu last_pid=%d last_uid=%d",
		          log_quote(cs->log, cs->group_name), clients, n, (int)l->last_pid,
		          (int)l->last_uid);
		break;
	case CLIENTS_CONDITIONS:
		break;
	}
	l->pending = 0;
	l->logged_ms = now;
}

/* Condition k happened: logged now if its last line is an interval old,
 * else counted for the line clients_expire() writes when it is. */
static void note_condition(struct clients *cs, enum clients_condition k, pid_t pid, int err)
{
	struct clients_condition_log *l = &cs->cond[k];
	int64_t now = now_ms();
	l->pending++;
	l->last_pid = pid;
	l->last_errno = err;
	if (now - l->logged_ms >= CLIENTS_LOG_INTERVAL_MS)
		log_condition(cs, k, now);
}

/* Answers the HELLO a client sends first (seq 1) with WELCOME{status},
 * then closes fd.  Shutting both ways first stops the client's sends, and
 * draining what it sent (its HELLO) keeps the close from turning into a
 * connection reset, which would hide the WELCOME from the client's first
 * recv().  Needs no descriptor. */
static void turn_away(int fd, int status)
{
	coord_msg_welcome w = { { COORD_MSG_WELCOME, 1 }, status, COORD_PROTO_VERSION, 0,
		                (uint64_t)getpid() };
	char sink[64];
	if (send(fd, &w, sizeof w, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* gone already, or its buffer is full: it learns from the close */
	}
	shutdown(fd, SHUT_RDWR);
	for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT | MSG_TRUNC) > 0; i++)
		;
	close(fd);
}

static void refuse(struct clients *cs, int fd, enum clients_condition k, int err)
{
	struct ucred cred = { 0 };
	socklen_t len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		cred.pid = 0;
	turn_away(fd, COORD_ELIMIT);
	note_condition(cs, k, cred.pid, err);
}

static void open_spare(struct clients *cs)
{
	if (cs->spare_fd < 0)
		cs->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Stops watching the listening socket until CLIENTS_PAUSE_MS from now or
 * until a client leaves, whichever comes first: accept() cannot take the
 * pending connection, and with it pending, the socket stays readable. */
static void pause_listening(struct clients *cs, int err)
{
	loop_mod(cs->loop, cs->listen_fd, &cs->listen_watch, 0);
	cs->resume_ms = now_ms() + CLIENTS_PAUSE_MS;
	note_condition(cs, CLIENTS_ACCEPT_PAUSED, 0, err);
}

static void resume_listening(struct clients *cs)
{
	if (!cs->resume_ms)
		return;
	open_spare(cs);
	cs->resume_ms = 0;
	loop_mod(cs->loop, cs->listen_fd, &cs->listen_watch, EPOLLIN);
}

/* accept4() failed with err.  Out of descriptors, the spare one is given
 * up to take the pending connection and refuse it, so that every wakeup
 * consumes a connection; if even that fails, listening pauses.  Returns 1
 * to go on accepting, 0 to stop for this wakeup. */
static int accept_failed(struct clients *cs, int err)
{
	int fd;
	if (err == EAGAIN)
		return 0;
	if (err == EINTR || err == ECONNABORTED)
		return 1;
	if ((err == EMFILE || err == ENFILE) && cs->spare_fd >= 0) {
		close(cs->spare_fd);
		cs->spare_fd = -1;
		fd = accept4(cs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			refuse(cs, fd, CLIENTS_OUT_OF_FDS, err);
			open_spare(cs);
			return 1;
		}
		err = errno;
		open_spare(cs);
		if (err == EAGAIN)
			return 0;
		if (err == EINTR || err == ECONNABORTED)
			return 1;
	}
	pause_listening(cs, err);
	return 0;
}

int64_t clients_next_deadline(const struct clients *cs)
{
	int64_t next = cs->resume_ms ? cs->resume_ms : -1;
	for (int k = 0; k < CLIENTS_CONDITIONS; k++) {
		int64_t due = cs->cond[k].logged_ms + CLIENTS_LOG_INTERVAL_MS;
		if (cs->cond[k].pending && (next < 0 || due < next))
			next = due;
	}
	return next;
}

void clients_expire(struct clients *cs, int64_t now)
{
	if (cs->resume_ms && now >= cs->resume_ms)
		resume_listening(cs);
	for (int k = 0; k < CLIENTS_CONDITIONS; k++)
		if (cs->cond[k].pending && now - cs->cond[k].logged_ms >= CLIENTS_LOG_INTERVAL_MS)
			log_condition(cs, (enum clients_condition)k, now);
}

/* ---- accepting ---- */

/* Whether the peer (cred) may connect: anyone if the instance has no
 * group, else root, the broker's user and the group's members.  Sets
 * *admin when the peer is in the admin group.  Returns 0, COORD_EPERM, or
 * COORD_ENOMEM / COORD_ESYS when its groups cannot be read. */
static int admit(struct clients *cs, int fd, const struct ucred *cred, int *admin)
{
	size_t n = 0;
	gid_t *groups;
	int rc = 0;
	if (cs->group == (gid_t)-1 && cs->admin_group == (gid_t)-1)
		return 0;
	groups = peer_groups(fd, cred->pid, &n);
	if (!groups)
		return COORD_ESYS;
	if (cs->group != (gid_t)-1 && cred->uid != 0 && cred->uid != geteuid() &&
	    !peer_in(cred, groups, n, cs->group))
		rc = COORD_EPERM;
	*admin = cs->admin_group != (gid_t)-1 && peer_in(cred, groups, n, cs->admin_group);
	free(groups);
	return rc;
}

/* Takes one pending connection.  Returns 0 when there was none left. */
static int accept_one(struct clients *cs)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	struct client *c = NULL;
	int pidfd = -1, status = COORD_ESYS, admin = 0;
	int fd = accept4(cs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return accept_failed(cs, errno);
	if (cs->n >= cs->max) {
		refuse(cs, fd, CLIENTS_MAX_REACHED, 0);
		return 1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		goto refuse;
	status = admit(cs, fd, &cred, &admin);
	if (status == COORD_EPERM) {
		turn_away(fd, COORD_EPERM);
		cs->cond[CLIENTS_NOT_IN_GROUP].last_uid = cred.uid;
		note_condition(cs, CLIENTS_NOT_IN_GROUP, cred.pid, 0);
		return 1;
	}
	if (status < 0)
		goto refuse;
	status = COORD_ESYS;
	len = sizeof pidfd;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
		pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
	if (pidfd < 0 && (errno == EMFILE || errno == ENFILE)) {
		refuse(cs, fd, CLIENTS_OUT_OF_FDS, errno);
		return 1;
	}
	if (pidfd < 0)
		goto refuse; /* already gone */
	fcntl(pidfd, F_SETFD, FD_CLOEXEC);
	status = COORD_ENOMEM;
	c = calloc(1, sizeof *c);
	if (!c)
		goto refuse;
	c->set = cs;
	c->id = ++cs->next_id;
	c->fd = fd;
	c->pidfd = pidfd;
	c->notify_fd = -1;
	c->rx_fd = -1;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->admin = admin;
	c->connected_ms = now_ms();
	client_proc_stat(cred.pid, c->comm, sizeof c->comm, &c->pid_start);
	c->sock_watch = (struct watch){ socket_event, c };
	c->pid_watch = (struct watch){ process_exited, c };
	if ((status = cs->ev.accepted(cs->ud, c)) < 0)
		goto refuse;
	status = COORD_ESYS;
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
	turn_away(fd, status);
	return 1;
}

static void listener_event(struct watch *w, uint32_t events)
{
	(void)events;
	/* Bounded per wakeup, like reading a client: a flood of connections
	 * cannot starve the clients already here. */
	for (int i = 0; i < 64 && accept_one(w->obj); i++)
		;
}

/* A socket bound and listening at path, with a shared instance's group
 * and mode; its inode in *st.  Returns the fd, or -1 with errno set. */
static int bind_socket(struct clients *cs, const char *path, struct stat *st)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if (fd < 0)
		return -1;
	/* We hold the instance lock, so a socket file here is a dead broker's. */
	unlink(sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		goto fail;
	/* A shared instance's members connect: group and mode before listen(),
	 * so that no member ever finds the socket closed to it. */
	if (cs->group != (gid_t)-1 &&
	    (chown(sa.sun_path, (uid_t)-1, cs->group) < 0 || chmod(sa.sun_path, 0660) < 0))
		goto fail;
	if (stat(sa.sun_path, st) < 0 || listen(fd, 1024) < 0)
		goto fail;
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

int clients_listen(struct clients *cs, const char *dir, char *err, size_t errsize)
{
	char path[sizeof cs->sock_path];
	struct stat st;
	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, COORD_SOCKET_NAME) >= sizeof path) {
		snprintf(err, errsize, "socket path %s/%s is longer than %zu bytes; use a shorter --dir",
		         dir, COORD_SOCKET_NAME, sizeof path - 1);
		return COORD_EINVAL;
	}
	if (cs->passed ? stat(path, &st) < 0 : (cs->listen_fd = bind_socket(cs, path, &st)) < 0)
		goto sys;
	snprintf(cs->sock_path, sizeof cs->sock_path, "%s", path);
	cs->sock_dev = st.st_dev;
	cs->sock_ino = st.st_ino;
	cs->listen_watch = (struct watch){ listener_event, cs };
	cs->resume_ms = 0;
	for (int k = 0; k < CLIENTS_CONDITIONS; k++)
		cs->cond[k] = (struct clients_condition_log){ .logged_ms = -CLIENTS_LOG_INTERVAL_MS };
	cs->spare_fd = -1;
	open_spare(cs);
	if (cs->spare_fd < 0 || loop_add(cs->loop, cs->listen_fd, &cs->listen_watch, EPOLLIN) < 0)
		goto sys;
	return 0;
sys:
	snprintf(err, errsize, "%s: %s", path, strerror(errno));
	return COORD_ESYS;
}

int clients_socket_ok(const struct clients *cs)
{
	struct stat st;
	if (lstat(cs->sock_path, &st) < 0)
		return errno != ENOENT; /* cannot tell: leave it */
	return S_ISSOCK(st.st_mode) && st.st_dev == cs->sock_dev && st.st_ino == cs->sock_ino;
}

int clients_rebind(struct clients *cs, char *err, size_t errsize)
{
	struct stat st;
	int fd = bind_socket(cs, cs->sock_path, &st);
	if (fd < 0 || loop_add(cs->loop, fd, &cs->listen_watch, cs->resume_ms ? 0 : EPOLLIN) < 0) {
		snprintf(err, errsize, "%s: %s", cs->sock_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return COORD_ESYS;
	}
	/* Connections still queued on the old socket are lost with it: their
	 * clients see a hang-up and connect again. */
	loop_del(cs->loop, cs->listen_fd);
	close(cs->listen_fd);
	cs->listen_fd = fd;
	cs->passed = 0; /* ours now, removed at exit */
	cs->sock_dev = st.st_dev;
	cs->sock_ino = st.st_ino;
	return 0;
}

/* The first half of destroying c: off the flush list, and its leases
 * handed on (ev.gone), whose grants go out before the second half. */
static void destroy_gone(struct clients *cs, struct client *c)
{
	if (c->flush_listed) {
		struct client **p = &cs->flush_list;
		while (*p != c)
			p = &(*p)->flush_next;
		*p = c->flush_next;
		c->flush_listed = 0;
	}
	cs->ev.gone(cs->ud, c, c->dead_reason ? c->dead_reason : "hangup");
}

/* The second half: its descriptors and memory. */
static void destroy_free(struct clients *cs, struct client *c)
{
	loop_del(cs->loop, c->fd);
	loop_del(cs->loop, c->pidfd);
	close(c->fd);
	close(c->pidfd);
	if (c->notify_fd >= 0)
		close(c->notify_fd);
	end_stream(c);
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
	resume_listening(cs); /* its descriptors are free now */
}

void clients_reap(struct clients *cs)
{
	while (cs->dead) {
		struct client *c = cs->dead;
		cs->dead = c->dead_next;
		destroy_gone(cs, c);
		c->dead_next = cs->reaped;
		cs->reaped = c;
	}
}

void clients_free_reaped(struct clients *cs)
{
	while (cs->reaped) {
		struct client *c = cs->reaped;
		cs->reaped = c->dead_next;
		destroy_free(cs, c);
	}
}

void clients_close(struct clients *cs)
{
	for (struct client *c = cs->list; c; c = c->next)
		client_kill(c, "shutdown");
	clients_reap(cs);
	clients_free_reaped(cs);
	if (cs->listen_fd >= 0)
		close(cs->listen_fd);
	if (cs->spare_fd >= 0)
		close(cs->spare_fd);
	cs->listen_fd = cs->spare_fd = -1;
	/* Only our own socket: the name may lead to another's by now. */
	if (cs->sock_path[0] && !cs->passed && clients_socket_ok(cs))
		unlink(cs->sock_path);
}

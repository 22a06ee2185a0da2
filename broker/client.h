/* Client connections: accepting them (and refusing them past the client
 * and descriptor limits), who is on the other end (pid, uid, pidfd, comm),
 * buffered output, and noticing their death.  What the packets mean is not
 * this file's business: they go up through struct client_events. */
#ifndef COORD_CLIENT_H
#define COORD_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "coord_proto.h"
#include "log.h"
#include "loop.h"

struct outbuf;
struct clients;
struct cache_page;

struct client {
	struct clients *set;
	uint64_t id;
	int fd, pidfd;
	pid_t pid;
	uid_t uid;
	uint64_t pid_start;        /* /proc/PID/stat starttime */
	char comm[COORD_COMM_MAX + 1];
	int64_t connected_ms;
	int helloed;
	uint32_t proto;            /* the HELLO's protocol version */
	int admin;                 /* in the broker's --admin-group */
	int dead;                  /* destroyed at the end of the loop iteration */
	const char *dead_reason;
	struct watch sock_watch, pid_watch;
	int notify_fd;             /* write end of the NOTIFY pipe, or -1 */
	struct cache_page *cache;  /* its cache page (cache.c), or NULL; from
	                              then on its packets may carry descriptors */
	int rx_fd;                 /* the descriptor that came with the packet
	                              being handled, or -1; a handler that
	                              keeps it sets -1 */
	struct outbuf *out_head, *out_tail;
	size_t out_bytes;
	/* A long answer produced as the socket drains (client_stream()) */
	int (*stream_fill)(struct client *c, void *arg);
	void (*stream_done)(void *arg);
	void *stream_arg;
	int out_watched;           /* EPOLLOUT is on: its socket was full */
	int flush_listed;          /* on clients.flush_list */
	struct client *flush_next;
	struct client *next, *prev;
	struct client *dead_next;
	void *user;                /* the broker's owner of this connection */
};

struct client_events {
	/* A new connection: return 0 to keep it, or a COORD_E* code to close
	 * it at once. */
	int (*accepted)(void *ud, struct client *c);
	/* One packet of len bytes (len > COORD_MSG_MAX: it was truncated). */
	void (*packet)(void *ud, struct client *c, const void *buf, size_t len);
	/* The connection is being destroyed; `why` is "hangup", "exit", ... */
	void (*gone)(void *ud, struct client *c, const char *why);
};

/* Conditions logged at most once per CLIENTS_LOG_INTERVAL_MS each, with
 * how often they happened since their last line. */
enum clients_condition {
	CLIENTS_MAX_REACHED,       /* refused: --max-clients */
	CLIENTS_OUT_OF_FDS,        /* refused: accepted on the spare descriptor */
	CLIENTS_ACCEPT_PAUSED,     /* accept() failed even so; listening paused */
	CLIENTS_NOT_IN_GROUP,      /* refused: not in a shared instance's group */
	CLIENTS_CONDITIONS
};

#define CLIENTS_LOG_INTERVAL_MS 1000
#define CLIENTS_PAUSE_MS 200       /* listening paused after accept() fails */

struct clients_condition_log {
	uint64_t pending;          /* times since the last line */
	int64_t logged_ms;         /* monotonic time of the last line */
	pid_t last_pid;            /* refused client (0: unknown) */
	uid_t last_uid;            /* refused client, for CLIENTS_NOT_IN_GROUP */
	int last_errno;
};

struct clients {
	/* set by the broker before clients_listen() */
	struct loop *loop;
	struct log *log;
	struct client_events ev;
	void *ud;
	uint64_t max;              /* most connected clients */
	gid_t group;               /* a shared instance's group: only its
	                              members, root and the broker's user may
	                              connect; (gid_t)-1: anyone who can */
	const char *group_name;
	gid_t admin_group;         /* members may revoke anyone's leases; or -1 */
	int passed;                /* listen_fd is set already: a socket systemd
	                              bound at DIR/coordd.sock (socket
	                              activation), served as it is and its file
	                              left in place at exit */
	/* own state */
	uint64_t n, next_id;
	int listen_fd;
	int spare_fd;              /* /dev/null, closed to accept a connection
	                              only to refuse it when out of descriptors */
	int64_t resume_ms;         /* listening paused until then; 0: listening */
	struct clients_condition_log cond[CLIENTS_CONDITIONS];
	struct watch listen_watch;
	struct client *list;
	struct client *dead;       /* killed, not yet destroyed */
	struct client *reaped;     /* gone, not yet freed */
	struct client *flush_list; /* with output queued since the last flush */
	char sock_path[108];
	dev_t sock_dev;            /* the socket file bound at sock_path */
	ino_t sock_ino;
};

/* Binds and listens on DIR/coordd.sock, replacing a dead broker's socket
 * (the caller holds the instance lock), or serves the passed listen_fd,
 * and opens the spare descriptor.
 * Returns 0 or COORD_E* with the reason in err. */
int clients_listen(struct clients *cs, const char *dir, char *err, size_t errsize);
/* 1 while sock_path still names the socket we listen on.  It does not
 * once the file was removed or replaced (the instance directory removed
 * under the broker). */
int clients_socket_ok(const struct clients *cs);
/* Binds and listens on sock_path again, in place of whatever is there
 * (the caller holds the instance lock), and stops listening on the old
 * socket, which nobody can reach any more.  Returns 0 or COORD_E* with
 * the reason in err; the old socket is kept then. */
int clients_rebind(struct clients *cs, char *err, size_t errsize);
/* The earliest time something of the clients' is due (listening resumed
 * after a pause, a condition's count logged), or -1. */
int64_t clients_next_deadline(const struct clients *cs);
/* Does what is due at monotonic time now. */
void clients_expire(struct clients *cs, int64_t now);
/* Ends the clients killed since the last call: ev.gone for each; their
 * descriptors and memory go at clients_free_reaped(), which must follow
 * within the same loop iteration (after the answers are sent). */
void clients_reap(struct clients *cs);
void clients_free_reaped(struct clients *cs);
/* Destroys every client and removes the socket. */
void clients_close(struct clients *cs);

/* Queues msg for c, to be sent by the next clients_flush() (or later if
 * c's socket is full; a client that does not read its replies is dropped
 * past a limit). */
void client_send(struct client *c, const void *msg, size_t len);
/* The same, returning the queued message, which client_rewrite() may
 * change until the next clients_flush(); or NULL if c is dead or was
 * dropped. */
struct outbuf *client_send_held(struct client *c, const void *msg, size_t len);
/* Replaces queued message o of c by msg, of at most o's length (a GRANT
 * by a REPLY with the error that refused it).  Only before the next
 * clients_flush(). */
void client_rewrite(struct client *c, struct outbuf *o, const void *msg, size_t len);
/* Sends what was queued for every client since the last call, as far as
 * their sockets take it.  The broker calls it once per loop iteration,
 * after the iteration's commit. */
void clients_flush(struct clients *cs);
/* Sends msg with descriptor fd (SCM_RIGHTS), at once or not at all: only
 * when nothing is queued before it.  Returns 0, or COORD_ESYS (c's socket
 * is full or gone; c is killed if gone). */
int client_send_fd(struct client *c, const void *msg, size_t len, int fd);
/* Starts a long answer that is produced as c's socket drains, so that it
 * never queues more than one message: whenever nothing is queued for c,
 * fill(c, arg) is called to send the next message with client_send(); it
 * returns 1 if it sent one, 0 when it has nothing left.  At most
 * CLIENT_STREAM_BURST messages go per wakeup, so one reader cannot starve
 * the others.  done(arg) is called once, when fill returns 0 or when c is
 * destroyed first.  One stream per client: returns 0, or COORD_EBUSYCONN
 * if c has one already (fill and done are not called then). */
int client_stream(struct client *c, int (*fill)(struct client *c, void *arg),
                  void (*done)(void *arg), void *arg);
#define CLIENT_STREAM_BURST 4096
#define CLIENT_STREAM_QUEUED (1u << 20) /* bytes queued before a burst stops */
/* Sends COORD_MSG_REPLY{seq, status}. */
void client_reply(struct client *c, uint32_t seq, int status);
/* Marks c dead; the next clients_reap() ends it, and
 * clients_free_reaped() frees it. */
void client_kill(struct client *c, const char *reason);
/* The comm and the start time (/proc/PID/stat starttime; 0 if pid is
 * gone) of pid. */
void client_proc_stat(pid_t pid, char *comm, size_t commsize, uint64_t *start);

#endif

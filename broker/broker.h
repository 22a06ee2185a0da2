/* The broker's shared state, used by main.c, server.c and checkpointer.c. */
#ifndef COORD_BROKER_H
#define COORD_BROKER_H

#include <stdint.h>
#include <sys/types.h>

#include "lease_table.h"
#include "protocol.h"
#include "region.h"
#include "store.h"

struct broker_config {
	const char *dir;
	uint64_t max_leases;       /* also the shared region's slot count */
	uint64_t max_waiters;
	uint64_t max_clients;
	const char *duckdb_lib;    /* NULL: "libduckdb.so" */
	uint32_t checkpoint_timeout_ms;
};

struct watch {
	int kind;                  /* WATCH_* */
	void *obj;
};

enum { WATCH_LISTEN, WATCH_SIGNAL, WATCH_TIMER, WATCH_CLIENT, WATCH_PIDFD, WATCH_CHECKPOINT };

struct outbuf {
	struct outbuf *next;
	size_t len;
	char data[];
};

struct client {
	uint64_t id;
	int fd, pidfd;
	pid_t pid;
	uid_t uid;
	uint64_t pid_start;
	char comm[17];
	int helloed;
	int dead;
	const char *dead_reason;
	int64_t connected_ms;
	struct watch sock_watch, pid_watch;
	struct lt_lease *leases;   /* linked by own_next/own_prev */
	struct lt_waiter *waiter;  /* at most one queued request */
	struct outbuf *out_head, *out_tail;
	size_t out_bytes;
	struct client *next, *prev;
	struct client *dead_next;
	/* A checkpoint requested by this client waits for its answer. */
	uint32_t checkpoint_seq;
};

/* Per-resource state of the server (lt_resource.ext). */
struct resource_ext {
	struct store_resource rec; /* as stored in state.mdb */
	int stored;                /* rec exists in state.mdb */
	int kind;                  /* COORD_KIND_* detected at open */
	struct checkpoint_job *job;/* running checkpoint, or NULL */
};

struct broker {
	struct broker_config cfg;
	int epfd, listen_fd, signal_fd, timer_fd;
	struct watch listen_watch, signal_watch, timer_watch;
	struct store *store;
	struct region *region;
	struct lease_table *table;
	struct client *clients;
	struct client *dead;
	uint64_t nclients, next_client_id;
	uint64_t *free_slots;      /* stack of free region slots */
	uint64_t nfree_slots;
	uint64_t first_lease_id;   /* from the store */
	int64_t started_ms;
	int stopping;
	int duckdb_ok;
	char duckdb_why[256];
	char sock_path[4200];
};

int64_t broker_now_ms(void);
int64_t broker_wall_ms(void);

/* server.c */
int server_init(struct broker *b, char *err, size_t errsize);
int server_run(struct broker *b);
void server_fini(struct broker *b);
int broker_watch(struct broker *b, int fd, struct watch *w, uint32_t events);
void client_send(struct broker *b, struct client *c, const void *msg, size_t len);
void client_reply(struct broker *b, struct client *c, uint32_t seq, int status);
/* Sends a COORD_MSG_LEASE_INFO for every holder and waiter of res. */
void server_send_resource_leases(struct broker *b, struct client *c, uint32_t seq,
                                 struct lt_resource *res);

/* checkpointer.c */
void checkpointer_init(struct broker *b);
void checkpointer_resource_open(struct broker *b, struct lt_resource *res);
/* A write lease was released or reclaimed: start or schedule a checkpoint. */
void checkpointer_on_write_release(struct broker *b, struct lt_resource *res);
/* The LT_FOR_CHECKPOINT waiter of client c (request seq) got its turn. */
void checkpointer_on_turn(struct broker *b, struct lt_resource *res, struct client *c,
                          uint32_t seq);
void checkpointer_event(struct broker *b, struct checkpoint_job *job);
int64_t checkpointer_next_deadline(struct broker *b);
void checkpointer_expire(struct broker *b, int64_t now_ms);
void checkpointer_request(struct broker *b, struct client *c, const struct request *req);
void checkpointer_client_gone(struct broker *b, struct client *c);
void checkpointer_shutdown(struct broker *b);

#endif

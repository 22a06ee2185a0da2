/* The event feed: a ring of fixed-size records in DIR/coordd.events,
 * appended to by the broker and read by `coordctl watch` (libcoord's
 * coord_feed_next()), on the model of Varnish's shared-memory log:
 * readers map the file read-only and can never make the broker wait.
 * The layout and the protocol of a record (a seqlock on its seq word)
 * are in coord_proto.h; docs/design.md, "Event feed", says why.
 *
 * Each hook writes its record at once, through the mapping, and counts
 * the event for the metrics (metrics.c); the feed's own figures (records
 * published, watchers) are told to the metrics here too, as they change,
 * so the metrics never call back into this file.  events_publish(), once
 * per batch of events after the commit, stores `head` and `wake`, then
 * does one FUTEX_WAKE if a connection asked to be woken (events_watch()):
 * no system call at all while nobody watches.  A reader that falls behind
 * by more than the ring holds is lapped, and finds out by the seq words;
 * the broker never learns of it.
 *
 * The file is reused across restarts, like the region, so a reader's
 * mapping stays the live one and the seq goes on from the old head; a
 * file of another size or magic is replaced (renamed over) rather than
 * shrunk under a reader.  Its blocks are allocated at open, so a store
 * never meets a hole on a full filesystem.  Nothing here reads what a
 * client wrote: the broker keeps its own head and never reads the ring.
 * Not defended: truncating the file under a running broker (only its
 * own user can) makes its next store a SIGBUS. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "events.h"
#include "group.h"
#include "metrics.h"
#include "state.h"

#define EVENTS_FILE_SIZE                                                                   \
	((size_t)COORD_EVENTS_HEADER_SIZE + (size_t)COORD_EVENTS_COUNT * COORD_EVENTS_RECORD_SIZE)

/* One broker per process, so one feed: its state is this file's. */
static struct {
	char *map;                 /* NULL: no feed */
	coord_events_header *hdr;
	coord_events_record *rec;
	uint64_t next;             /* seq of the next record we write */
	uint64_t published;        /* head as last stored */
	uint64_t epoch;
	struct client *watchers[EVENTS_WATCHERS_MAX];
	size_t nwatchers;
} feed;

/* Tells the metrics the feed's figures, after each change: the records
 * published (0: no feed) and the watchers. */
static void feed_changed(void)
{
	metrics_on_feed(feed.map ? feed.published - 1 : 0, feed.nwatchers);
}

/* Maps fd (EVENTS_FILE_SIZE bytes).  Returns 0 or -1 (errno). */
static int map_feed(int fd)
{
	void *m = mmap(NULL, EVENTS_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	feed.map = m;
	feed.hdr = m;
	feed.rec = (coord_events_record *)(feed.map + COORD_EVENTS_HEADER_SIZE);
	return 0;
}

/* 1 if the file behind fd is a feed of our layout, with its head read
 * into *head. */
static int reusable(int fd, uint64_t *head)
{
	coord_events_header h;
	struct stat st;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size != EVENTS_FILE_SIZE ||
	    pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
		return 0;
	*head = atomic_load_explicit(&h.head, memory_order_relaxed);
	return !memcmp(h.magic, COORD_EVENTS_MAGIC, 8) && h.version == 1 &&
	       h.header_size == COORD_EVENTS_HEADER_SIZE &&
	       h.record_size == COORD_EVENTS_RECORD_SIZE && h.record_count == COORD_EVENTS_COUNT;
}

/* A fresh file, renamed over `path` once it is whole: a reader of the
 * old one keeps a mapping that is never shrunk.  Returns the fd or -1. */
static int create_feed(const char *path, mode_t mode)
{
	char tmp[PATH_MAX + 16];
	coord_events_header h = { .version = 1,
		                  .header_size = COORD_EVENTS_HEADER_SIZE,
		                  .record_size = COORD_EVENTS_RECORD_SIZE,
		                  .record_count = COORD_EVENTS_COUNT };
	int fd, rc;
	snprintf(tmp, sizeof tmp, "%s.new", path);
	unlink(tmp);
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -1;
	memcpy(h.magic, COORD_EVENTS_MAGIC, 8);
	atomic_init(&h.head, 1);
	rc = posix_fallocate(fd, 0, (off_t)EVENTS_FILE_SIZE);
	if (rc != 0 || pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || rename(tmp, path) < 0) {
		if (rc)
			errno = rc;
		close(fd);
		unlink(tmp);
		return -1;
	}
	return fd;
}

static void append_start(void);

void events_open(struct broker *b)
{
	char path[PATH_MAX];
	mode_t mode = b->cfg.group != GROUP_NONE ? 0640 : 0644;
	uint64_t head = 1;
	struct stat st;
	int fd;
	snprintf(path, sizeof path, "%s/%s", b->cfg.dir, COORD_EVENTS_NAME);
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0 && !reusable(fd, &head)) {
		close(fd);
		fd = -1;
		head = 1;
	}
	if (fd < 0)
		fd = create_feed(path, mode);
	/* Readable by the instance's users, written only by the broker,
	 * whatever the umask. */
	if (fd < 0 || fstat(fd, &st) < 0 || fchmod(fd, mode) < 0 ||
	    (b->cfg.group != GROUP_NONE && fchown(fd, (uid_t)-1, b->cfg.group) < 0) ||
	    posix_fallocate(fd, 0, (off_t)EVENTS_FILE_SIZE) != 0 || map_feed(fd) < 0) {
		log_event(&b->log, "error", "op=event-feed path=%s errno=%d feed=off",
		          log_quote(&b->log, path), errno);
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd); /* the mapping keeps the file */
	feed.hdr->file_dev = (uint64_t)st.st_dev;
	feed.hdr->file_ino = (uint64_t)st.st_ino;
	feed.epoch = region_epoch(b->region);
	/* Past anything a reader may still be waiting for: the seq goes on. */
	feed.next = feed.published = head ? head : 1;
	atomic_store_explicit(&feed.hdr->broker_epoch, feed.epoch, memory_order_release);
	atomic_store_explicit(&feed.hdr->broker_pid, (uint64_t)getpid(), memory_order_release);
	feed_changed();
	append_start();
}

/* ---- records ---- */

/* Copies s (at most max bytes) into the record's text at *at. */
static uint16_t put_text(coord_events_record *r, size_t *at, const char *s, size_t max)
{
	size_t n = s ? strnlen(s, max) : 0;
	if (n > sizeof r->text - *at)
		n = sizeof r->text - *at;
	if (n)
		memcpy(r->text + *at, s, n);
	*at += n;
	return (uint16_t)n;
}

struct event {
	uint32_t type, mode, flags, kind;
	uint64_t lease_id, token, pid, uid;
	int64_t duration_us, wal_before, wal_after;
	int32_t code;
	const char *name, *comm, *label, *reason;
};

/* Writes e as record feed.next, as a seqlock (coord_proto.h). */
static void append(const struct event *e)
{
	coord_events_record *r;
	uint64_t seq = feed.next++;
	size_t at = 0;
	r = &feed.rec[seq % COORD_EVENTS_COUNT];
	atomic_store_explicit(&r->seq, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	r->type = e->type;
	r->mode = e->mode;
	r->wall_ms = wall_ms();
	r->epoch = feed.epoch;
	r->lease_id = e->lease_id;
	r->token = e->token;
	r->pid = e->pid;
	r->uid = e->uid;
	r->duration_us = e->duration_us;
	r->code = e->code;
	r->kind = e->kind;
	r->wal_before = e->wal_before;
	r->wal_after = e->wal_after;
	r->flags = e->flags;
	r->reserved = 0;
	r->name_len = put_text(r, &at, e->name, COORD_NAME_MAX);
	r->comm_len = put_text(r, &at, e->comm, COORD_COMM_MAX);
	r->label_len = put_text(r, &at, e->label, COORD_LABEL_MAX);
	r->reason_len = put_text(r, &at, e->reason, 31);
	atomic_store_explicit(&r->seq, seq, memory_order_release);
}

static void append_lease(uint32_t type, const struct lt_lease *l, int64_t duration_ms,
                         uint32_t flags, const char *reason)
{
	const struct owner *o = l->owner;
	struct event e = { .type = type, .mode = (uint32_t)l->mode, .flags = flags,
		           .lease_id = l->id, .token = l->token, .pid = (uint64_t)o->pid,
		           .uid = (uint64_t)o->uid, .duration_us = duration_ms * 1000,
		           .wal_before = -1, .wal_after = -1, .name = l->res->name,
		           .comm = o->comm, .label = l->label, .reason = reason };
	if (feed.map)
		append(&e);
}

static void append_waiter(uint32_t type, const struct lt_waiter *w, int code, const char *reason)
{
	const struct owner *o = w->owner;
	struct event e = { .type = type, .mode = (uint32_t)w->mode, .pid = (uint64_t)o->pid,
		           .uid = (uint64_t)o->uid, .duration_us = (now_ms() - w->since_ms) * 1000,
		           .code = code, .wal_before = -1, .wal_after = -1, .name = w->res->name,
		           .comm = o->comm, .label = w->label, .reason = reason };
	if (type == COORD_EVENT_WAIT)
		e.duration_us = 0;
	if (feed.map)
		append(&e);
}

/* ---- the hooks ---- */

void events_grant(const struct lt_lease *l, const struct lt_waiter *w)
{
	int64_t waited_ms = w ? now_ms() - w->since_ms : 0;
	metrics_on_grant(l->mode, waited_ms * 1000);
	append_lease(COORD_EVENT_GRANT, l, waited_ms, w ? COORD_EVENT_F_WAITED : 0, NULL);
}

void events_wait(const struct lt_waiter *w)
{
	append_waiter(COORD_EVENT_WAIT, w, 0, NULL);
}

void events_recall(const struct lt_lease *l)
{
	metrics_on_recall(l->mode);
	append_lease(COORD_EVENT_RECALL, l, now_ms() - l->granted_ms, 0, NULL);
}

void events_released(const struct lt_lease *l, const char *why)
{
	int release = !strcmp(why, "release");
	if (release)
		metrics_on_release(l->mode);
	else
		metrics_on_reclaim(l->mode, why);
	append_lease(release ? COORD_EVENT_RELEASE : COORD_EVENT_RECLAIM, l,
	             now_ms() - l->granted_ms, 0, release ? NULL : why);
}

void events_waiter_failed(const struct lt_waiter *w, int err)
{
	if (err == COORD_ETIMEDOUT)
		metrics_on_timeout(w->mode);
	append_waiter(err == COORD_ETIMEDOUT ? COORD_EVENT_TIMEOUT : COORD_EVENT_CANCEL, w, err,
	              err == COORD_ETIMEDOUT ? NULL : "refused");
}

void events_cancel(const struct lt_waiter *w, const char *why)
{
	append_waiter(COORD_EVENT_CANCEL, w, COORD_ECANCELED, why);
}

/* The first record of each broker: its pid (and, as every record, its
 * epoch). */
static void append_start(void)
{
	struct event e = { .type = COORD_EVENT_START, .pid = (uint64_t)getpid(), .wal_before = -1,
		           .wal_after = -1 };
	append(&e);
}

void events_checkpoint_start(const char *name, int kind, int pid)
{
	struct event e = { .type = COORD_EVENT_CHECKPOINT_START, .kind = (uint32_t)kind,
		           .pid = (uint64_t)pid, .wal_before = -1, .wal_after = -1, .name = name };
	if (feed.map)
		append(&e);
}

void events_checkpoint_done(const char *name, int kind, int code, int64_t duration_us,
                            int64_t wal_before, int64_t wal_after)
{
	struct event e = { .type = COORD_EVENT_CHECKPOINT, .kind = (uint32_t)kind, .code = code,
		           .duration_us = duration_us, .wal_before = wal_before,
		           .wal_after = wal_after, .name = name };
	metrics_on_checkpoint(code, duration_us);
	if (feed.map)
		append(&e);
}

/* ---- publishing and watchers ---- */

void events_publish(void)
{
	if (!feed.map || feed.next == feed.published)
		return;
	feed.published = feed.next;
	feed_changed();
	atomic_store_explicit(&feed.hdr->head, feed.next, memory_order_release);
	atomic_store_explicit(&feed.hdr->wake, (uint32_t)feed.next, memory_order_release);
	/* A reader that read the old wake word and then the old head is in
	 * FUTEX_WAIT on it now, or will find the word changed and not sleep. */
	if (feed.nwatchers)
		syscall(SYS_futex, &feed.hdr->wake, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void events_close(void)
{
	struct event e = { .type = COORD_EVENT_STOP, .pid = (uint64_t)getpid(), .wal_before = -1,
		           .wal_after = -1 };
	if (!feed.map)
		return;
	append(&e);
	events_publish();
	atomic_store_explicit(&feed.hdr->broker_pid, 0, memory_order_release);
	munmap(feed.map, EVENTS_FILE_SIZE);
	feed.map = NULL;
	feed.nwatchers = 0;
	feed_changed();
}

int events_watch(struct client *c)
{
	if (!feed.map)
		return COORD_ENOTSUP;
	for (size_t i = 0; i < feed.nwatchers; i++)
		if (feed.watchers[i] == c)
			return 0;
	if (feed.nwatchers == EVENTS_WATCHERS_MAX)
		return COORD_ELIMIT;
	feed.watchers[feed.nwatchers++] = c;
	feed_changed();
	return 0;
}

void events_unwatch(struct client *c)
{
	for (size_t i = 0; i < feed.nwatchers; i++) {
		if (feed.watchers[i] == c) {
			feed.watchers[i] = feed.watchers[--feed.nwatchers];
			feed_changed();
			return;
		}
	}
}

/* The implementation of coord.h.
 *
 * This is the one translation unit of the built library (libcoord.a and
 * libcoord.so.0), and it is also the implementation section of the
 * installed single-file coord.h: the build pastes everything below the
 * marker line into it, after the public part, with coord_proto.h pasted in
 * place of its #include (libcoord/dist/single-header.py).  So what a
 * program that copies coord.h compiles is exactly what the library is.
 *
 * It defines nothing outside the coord_ prefix with external linkage: the
 * library's ABI is what coord.h declares (coord.syms exports it, and
 * tests/exported-symbols.sh checks that nothing else leaks).  It never
 * prints; it logs through coord_options_t.log. */
#define COORD_IMPLEMENTATION
#include "coord.h"

/* ---- the implementation section of the single-file coord.h ---- */

/* ------------------------------------------------------------------------ */
/* 8. Implementation                                                        */
/* ------------------------------------------------------------------------ */

#if defined(COORD_IMPLEMENTATION) && !defined(COORD__IMPLEMENTED)
#define COORD__IMPLEMENTED

#if defined(__STRICT_ANSI__) && !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE) &&              \
        !defined(_DEFAULT_SOURCE)
#error "coord.h's implementation needs POSIX.1-2008/XSI: include coord.h first in this file, define _XOPEN_SOURCE 700 before every #include, or compile with -std=gnu11"
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#endif

#include "coord_proto.h"

/* The implementation, in this order:
 *   8.1  state: connections, resource handles, lease records, the backend
 *   8.2  errors and names
 *   8.3  process-wide state: the fork handler and the lease table
 *   8.4  messages: send, receive, notices, request/answer exchanges
 *   8.5  the broker backend: dial, autostart, hello, the shared region
 *   8.6  kernel locks: flock(2) on the files behind leases
 *   8.7  connections
 *   8.8  resources and leases
 *   8.9  administration
 *
 * Locks, in the order they nest:
 *   coord_t.lock        one request at a time on a connection; held while
 *                       waiting for the broker's answer.
 *   coord__table_lock   the lease table, and every link between a handle
 *                       and its connection: coord__lease.conn,
 *                       coord_resource.conn, the connection's lists of
 *                       them, and coord_t.refs.  Never held across a
 *                       system call that can block.
 * coord__conns_lock, coord__maps_lock and coord__spares_lock guard one
 * list each and are held with no other lock (spares: under c->lock too),
 * but by the fork handler, which takes all four global locks: conns,
 * table, maps, spares. */

/* ------------------------------------------------------------------------ */
/* 8.1 State                                                                */
/* ------------------------------------------------------------------------ */

/* Every message the broker can send, read into one buffer. */
union coord__msg {
	coord_msg_hdr h;
	coord_msg_reply reply;
	coord_msg_welcome welcome;
	coord_msg_grant grant;
	coord_msg_status_reply status;
	coord_msg_lease_info lease_info;
	coord_msg_resource_info resource_info;
	coord_msg_notice notice;
	char raw[COORD_MSG_MAX];
};

/* What a backend tells about a lease it granted.  `word` points at a
 * 64-bit word that holds `id` exactly while the lease is held and that
 * stays mapped until the process ends: coord_lease_valid() reads it with
 * no lock and no system call.  The broker's word is the lease's slot in
 * the shared region. */
struct coord__grant {
	uint64_t id;
	uint64_t token;
	const _Atomic uint64_t *word;
	const _Atomic uint64_t *flags; /* COORD_SLOT_* bits for the holder, or NULL */
	uint64_t secret;        /* what re-attaches the lease after a restart */
	uint64_t client_id;     /* the connection the broker recorded it under */
};

/* The lease backend: everything that knows who grants leases and how.
 * The broker over its socket is the only one; another (an etcd cluster,
 * say) would be a second table, chosen by coord_connect().  Handles,
 * the lease table and coord_lease_valid() do not change with it.
 *   open     connects c (c->dir is resolved); on failure close() runs.
 *   close    closes the transport, which gives back every lease of c
 *            (the broker reclaims them when the socket closes).
 *   acquire  asks for a lease on r and fills *g; c->lock is held.
 *   release  gives a lease back; c->lock is held and the handle is
 *            already stale.
 *   reconnect  after the transport was lost (c->broken): connects again
 *            and takes back c's leases, marking those it could not take
 *            back lost; c->lock is held.  Returns 0 or a COORD_E* code.
 *   start    sends a request for a lease on r without waiting (c->lock
 *            held); *ticket names it for poll and cancel.
 *   poll     waits up to wait_ms (0: looks only; -1: until answered) for
 *            the answer to ticket: 1 with *g (granted), 0 (not yet, or a
 *            signal came), or a COORD_E* code (the broker's refusal, a
 *            timeout, a lost connection); c->lock held.
 *   cancel   gives ticket up and reads its final answer: 1 with *g when
 *            a grant crossed the cancel (the caller releases it), 0, or a
 *            COORD_E* code; c->lock held.
 *   recall_pipe  opens a descriptor that turns readable at every recall
 *            of c's leases, and reads end-of-file once the transport is
 *            gone; c->lock is held.  Returns 0 with *fd set (non-blocking,
 *            close-on-exec), or a COORD_E* code.
 *   kernel_wait  says that the holder of g waits for its kernel lock
 *            (waiting 1) or has it now (0), for listings; c->lock held;
 *            a failure is not reported (the next call finds it). */
struct coord__backend {
	int (*open)(coord_t *c, const coord_options_t *opts);
	void (*close)(coord_t *c);
	int (*acquire)(coord_t *c, coord_resource_t *r, int mode, int timeout_ms, const char *label,
	               struct coord__grant *g);
	int (*release)(coord_t *c, const struct coord__grant *g);
	int (*reconnect)(coord_t *c);
	int (*start)(coord_t *c, coord_resource_t *r, int mode, int timeout_ms, const char *label,
	             uint32_t *ticket);
	int (*poll)(coord_t *c, uint32_t ticket, int wait_ms, struct coord__grant *g);
	int (*cancel)(coord_t *c, uint32_t ticket, struct coord__grant *g);
	int (*recall_pipe)(coord_t *c, int *fd);
	void (*kernel_wait)(coord_t *c, const struct coord__grant *g, int waiting);
};

/* A request started by coord_acquire_start() and not finished (8.8).
 * Its answer may be read by another call on the connection (an admin
 * call reading its own answer), which keeps it here for it (8.4). */
struct coord_pending {
	coord_t *conn;          /* one reference, dropped when p is freed */
	coord_resource_t *r;
	int mode;
	int64_t deadline;       /* monotonic ms, -1: none */
	uint32_t ticket;        /* the backend's name of the request */
	unsigned conn_gen;      /* c->gen when it was sent */
	int granted;            /* the broker granted; the kernel lock is next */
	int kernel_told;        /* the broker was told it waits for that */
	struct coord__grant g;
	struct coord__lease *rec; /* taken at the start (see coord__acquire_locked()) */
	struct coord__kfile *k;
	size_t answer_len;      /* an answer kept by another call, 0: none */
	int done;               /* ended: result is what wait returns from now */
	int result;
	coord_lease_t *lease;   /* with result 1 */
	union coord__msg answer;
	char label[COORD_LABEL_MAX + 1];
};

struct coord {
	pthread_mutex_t lock;
	const struct coord__backend *backend;
	int fd;                 /* -1 once closed */
	pid_t pid;              /* process that connected */
	uint32_t seq;           /* number of the last request; HELLO is 1 */
	int broken;             /* connection lost or garbled: the next call reconnects */
	int closed;             /* coord_disconnect() ran: every call is COORD_EIO */
	const coord_shm_slot *slots; /* the shared region's slots (never unmapped) */
	uint64_t slot_count;
	uint64_t client_id;
	uint64_t lost_client_id; /* the connection before a loss, until reconnected */
	int autostart, connect_timeout_ms;
	char broker[PATH_MAX];  /* what autostart runs */
	void (*log)(void *, int, const char *);
	void *log_userdata;
	struct coord *next_conn; /* coord__conns, for the fork handler */
	/* under recall_lock (8.7, the recall descriptor): */
	pthread_mutex_t recall_lock;
	int recall_ep;          /* the epoll set coord_recall_fd() returns, or -1 */
	int recall_fd;          /* the backend's recall pipe in it, or -1 */
	/* under coord__table_lock: */
	unsigned refs;          /* the caller's, and one per call through a handle */
	struct coord__lease *leases;       /* held, not yet released */
	struct coord_resource *resources;  /* open handles */
	/* under lock: */
	struct coord__kfile *kfiles;       /* files this connection has locked (8.6) */
	struct coord__kfile **kfile_index; /* the same, by (dev, ino, name): an
	                           open-addressing table of kfile_cap slots (a
	                           power of two, at most half full), or NULL */
	size_t kfile_cap, kfile_count;
	int kfile_index_partial; /* it could not grow: search the list */
	struct coord_pending *pend;        /* the request coord_acquire_start() left
	                                      waiting, or NULL */
	unsigned gen;           /* connections made after a loss, so far */
	int wait_ep;            /* coord_pending_fd()'s epoll set over fd, or -1 */
	/* the cache page (8.10): the pointers under lock, cache_used under
	 * coord__table_lock */
	coord_cache_entry *cache; /* this connection's page, mapped, or NULL */
	int cache_state;        /* 0: not asked yet; 1: mapped; -1: none on this
	                           connection (refused, or turned off) */
	int no_cache;           /* coord_options_t.no_cache or COORD_NO_CACHE=1 */
	struct coord__old_page *old_pages; /* earlier connections' pages, unmapped
	                                      with c (reads may still use them) */
	coord_resource_t *cache_used[COORD_CACHE_ENTRIES]; /* the handle each entry
	                                      is bound to (or being bound), or NULL */
	uint64_t broker_pid;    /* of the broker connected to */
	union coord__msg in;    /* the message being read */
	char dir[PATH_MAX];
};

/* A page of an earlier connection, kept mapped while c lives. */
struct coord__old_page {
	struct coord__old_page *next;
	coord_cache_entry *page;
};

/* A resource handle's cached read grant (8.10).  Every field is under
 * coord__table_lock. */
struct coord__cached {
	uint64_t lease;         /* the grant's lease id; 0: none */
	uint64_t token, secret, client_id;
	const coord_shm_slot *slot; /* its slot of the shared region */
	coord_cache_entry *e;   /* its entry of `page` */
	coord_cache_entry *page; /* the connection's page it is bound in */
	unsigned entry;
	unsigned fork_epoch;
	const _Atomic uint64_t *epoch_word; /* the region's broker epoch */
	uint64_t epoch;         /* its value at the bind: a restarted broker
	                           has no page, so a grant it adopted is let go */
	int busy;               /* a read under it is under way (one at a time) */
	int orphan;             /* its connection was made again: no new read
	                           under it, and it goes once none is under way */
	int quarantine;         /* the broker that holds a copy of k may still
	                           run: k must never lock anything again */
	int closing;            /* coord_resource_close() came during a read */
	struct coord__kfile *k; /* the descriptor its kernel lock is on, or
	                           NULL; kept with the handle when unbound */
};

struct coord_resource {
	coord_t *conn;          /* NULL once the connection is closed */
	int nocache;            /* coord_acquire()'s own: never caches */
	struct coord__cached cache;
	struct coord_resource *next, *prev; /* conn->resources */
	size_t name_len;
	char name[COORD_NAME_MAX + 1];
	/* The broker's ACQUIRE request, name included, built once by
	 * coord_resource_open(); each acquire fills in seq, mode, timeout and
	 * label under conn->lock. */
	union {
		coord_msg_acquire m;
		char raw[sizeof(coord_msg_acquire) + COORD_NAME_MAX + COORD_LABEL_MAX];
	} req;
};

/* One record of the lease table (8.3).  The atomic fields are read
 * without a lock by coord_lease_valid() and the accessors; the others
 * belong to coord__table_lock. */
struct coord__lease {
	_Atomic uintptr_t gen;  /* odd while a lease is held, even while free */
	_Atomic uint64_t id;
	_Atomic uint64_t token;
	_Atomic int mode;
	_Atomic(const _Atomic uint64_t *) word; /* see struct coord__grant */
	_Atomic(const _Atomic uint64_t *) flags; /* see struct coord__grant */
	_Atomic unsigned fork_epoch; /* coord__fork_epoch when granted */
	_Atomic int kfd;        /* the kernel lock's descriptor, or -1 (8.6) */
	uint64_t secret, client_id; /* see struct coord__grant; conn->lock */
	int lost;               /* a restarted broker did not give it back;
	                           conn->lock */
	struct coord__kfile *kfile; /* the kernel lock, or NULL; conn->lock */
	struct coord_resource *via; /* the handle it came through, if it may
	                               become its cached grant; table lock */
	struct coord_resource *cached_r; /* a read under this handle's cached
	                                    grant; table lock */
	uintptr_t index;        /* this record's place in the table, never 0 */
	coord_t *conn;          /* NULL while free */
	struct coord__lease *next, *prev; /* conn->leases, or the free list */
	char resource[COORD_NAME_MAX + 1];
};

/* ------------------------------------------------------------------------ */
/* 8.2 Errors and names                                                     */
/* ------------------------------------------------------------------------ */

COORD_API const char *coord_strerror(int err)
{
	switch (err) {
#define COORD__ERRSTR(name, value, text) case value: return "COORD_" #name ": " text;
		COORD_ERRORS(COORD__ERRSTR)
#undef COORD__ERRSTR
	}
	return "COORD_E?: unknown error";
}

COORD_API const char *coord_errname(int err)
{
	return coord_proto_errname(err);
}

COORD_API const char *coord_policy_name(int policy)
{
	return coord_proto_policy_name(policy);
}

COORD_API const char *coord_kind_name(int kind)
{
	return coord_proto_kind_name(kind);
}

COORD_API const char *coord_sqlite_mode_name(int mode)
{
	return coord_proto_sqlite_mode_name(mode);
}

COORD_API int coord_default_dir(char *buf, size_t size)
{
	return coord_proto_default_dir(buf, size);
}

COORD_API int coord_instance_dir(const char *dir, char *buf, size_t size)
{
	if (!buf || size == 0)
		return COORD_EINVAL;
	return coord_proto_resolve_dir(dir, buf, size);
}

/* Names (coord.h, section 6).  A name is either a key, written "key:NAME"
 * and kept as is, or a path: "key:" is the only thing that makes a key, so
 * whether a file exists never changes what a name means.  A path becomes
 * the one name of its file, whoever spells it and whenever: relative or
 * absolute, through symlinks (dangling ones too: a link made before its
 * target names the target), and through bind mounts. */

/* The key prefix, and how many symlinks a path may go through before it
 * is taken for a loop (Linux's own limit). */
#define COORD__KEY_PREFIX "key:"
#define COORD__KEY_PREFIX_LEN 4
#define COORD__SYMLINK_DEPTH 40

/* Splits `path` (length len) at its last '/' into its directory (into
 * dir, PATH_MAX bytes; "." when there is no '/') and returns its last
 * component, or NULL when the directory does not fit. */
static const char *coord__path_split(const char *path, size_t len, char *dir)
{
	const char *slash = strrchr(path, '/');
	size_t dl;
	if (!slash) {
		strcpy(dir, ".");
		return path;
	}
	dl = (size_t)(slash - path);
	if (dl >= PATH_MAX || len >= PATH_MAX)
		return NULL;
	memcpy(dir, path, dl);
	dir[dl] = 0;
	if (dl == 0)
		strcpy(dir, "/");
	return slash + 1;
}

/* "A/B" into out (PATH_MAX bytes), with no doubled '/' when A is "/".
 * Returns 0, or -1 when it does not fit. */
static int coord__path_join(char *out, const char *a, const char *b)
{
	int n = snprintf(out, PATH_MAX, "%s%s%s", a, strcmp(a, "/") ? "/" : "", b);
	return n < 0 || n >= PATH_MAX ? -1 : 0;
}

/* The absolute path of `name` with ".", ".." and every symlink resolved,
 * into out (PATH_MAX bytes).  The directory must exist; the last component
 * need not.  When it is a dangling symlink (or a chain of them), it is
 * followed to the target's path, relative targets from the link's
 * directory, so a link made before its target names the same file.
 * Returns 0, or COORD_ENAME: the directory is missing or not a directory,
 * the last component is empty, "." or "..", a symlink loop (more than
 * COORD__SYMLINK_DEPTH links), or a path longer than PATH_MAX. */
static int coord__path_resolve(const char *name, char *out)
{
	char cur[PATH_MAX], dir[PATH_MAX], real[PATH_MAX], link[PATH_MAX];
	size_t len = strlen(name);
	const char *base;
	ssize_t n;

	if (len >= sizeof cur)
		return COORD_ENAME;
	memcpy(cur, name, len + 1);
	for (int depth = 0;; depth++) {
		/* If it exists, realpath() resolves it whole. */
		if (realpath(cur, out))
			return 0;
		/* Else resolve the directory and append the last component, so a
		 * database file can be leased before it exists. */
		base = coord__path_split(cur, strlen(cur), dir);
		if (!base || !*base || !strcmp(base, ".") || !strcmp(base, ".."))
			return COORD_ENAME;
		if (!realpath(dir, real) || coord__path_join(out, real, base) < 0)
			return COORD_ENAME;
		n = readlink(out, link, sizeof link);
		if (n < 0)
			return errno == ENOTDIR ? COORD_ENAME : 0; /* not a link (or unreadable) */
		if ((size_t)n >= sizeof link || depth >= COORD__SYMLINK_DEPTH)
			return COORD_ENAME;
		link[n] = 0;
		/* A dangling link: go on with its target. */
		if (link[0] == '/')
			memcpy(cur, link, (size_t)n + 1);
		else if (coord__path_join(cur, real, link) < 0)
			return COORD_ENAME;
	}
}

#ifdef __linux__
/* One line of /proc/self/mountinfo: the filesystem's device, the directory
 * of that filesystem mounted (root) and where (point), both unescaped. */
struct coord__mount {
	unsigned major, minor;
	const char *root, *point;
	size_t root_len, point_len;
};

/* Undoes mountinfo's octal escapes ("\040" for a space) in place. */
static void coord__mount_unescape(char *s)
{
	char *w = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = 0;
}

/* Reads the caller's mount table: *text receives the file (it owns the
 * strings), *mounts the mounts in the file's order (later mounts later),
 * both to be freed.  Mounts whose root or point is not an absolute path
 * are left out.  Returns the count, or -1 (no /proc, out of memory). */
static long coord__mounts_read(char **text, struct coord__mount **mounts)
{
	size_t cap = 16384, len = 0, lines = 0;
	char *buf = malloc(cap), *line, *next;
	struct coord__mount *m = NULL;
	long count = 0;
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	ssize_t got;

	if (fd < 0 || !buf)
		goto fail;
	for (;;) {
		if (len + 1 >= cap) {
			char *bigger = realloc(buf, cap * 2);
			if (!bigger)
				goto fail;
			buf = bigger;
			cap *= 2;
		}
		got = read(fd, buf + len, cap - len - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			goto fail;
		if (got == 0)
			break;
		len += (size_t)got;
	}
	buf[len] = 0;
	for (size_t i = 0; i < len; i++)
		lines += buf[i] == '\n';
	m = malloc((lines + 1) * sizeof *m);
	if (!m)
		goto fail;
	/* ID PARENT MAJOR:MINOR ROOT POINT OPTIONS ... - TYPE SOURCE OPTIONS */
	for (line = buf; *line; line = next) {
		char *field[5];
		int nf = 0;
		next = strchr(line, '\n');
		next = next ? (*next = 0, next + 1) : line + strlen(line);
		for (char *p = line; nf < 5 && *p;) {
			field[nf++] = p;
			p += strcspn(p, " ");
			if (*p)
				*p++ = 0;
		}
		if (nf < 5 || sscanf(field[2], "%u:%u", &m[count].major, &m[count].minor) != 2)
			continue;
		coord__mount_unescape(field[3]);
		coord__mount_unescape(field[4]);
		if (field[3][0] != '/' || field[4][0] != '/')
			continue;
		m[count].root = field[3];
		m[count].point = field[4];
		m[count].root_len = strlen(field[3]);
		m[count].point_len = strlen(field[4]);
		count++;
	}
	close(fd);
	*text = buf;
	*mounts = m;
	return count;
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(m);
	return -1;
}

/* What is left of path p below directory d (length dl): p + dl when p is
 * d or lies under it ("" or "/..."), or NULL.  Every path lies under "/",
 * and what is left is then p itself. */
static const char *coord__path_below(const char *d, size_t dl, const char *p)
{
	if (dl == 1 && d[0] == '/')
		return p;
	if (strncmp(p, d, dl) != 0 || (p[dl] != 0 && p[dl] != '/'))
		return NULL;
	return p + dl;
}

/* Orders the mounts a path may be rewritten onto: the shortest root (the
 * whole filesystem, "/", first), then the shortest mount point, then the
 * mount point's bytes, so every process that sees the same mounts makes
 * the same choice. */
static int coord__mount_order(const void *pa, const void *pb)
{
	const struct coord__mount *a = pa, *b = pb;
	if (a->root_len != b->root_len)
		return a->root_len < b->root_len ? -1 : 1;
	if (a->point_len != b->point_len)
		return a->point_len < b->point_len ? -1 : 1;
	return strcmp(a->point, b->point);
}

/* Rewrites the resolved path `path` (PATH_MAX bytes) so that one file
 * reached through several mounts of one filesystem (bind mounts, or the
 * filesystem mounted twice) always gets the same name.  It finds the mount
 * holding the path (the longest mount point above it, on the path's own
 * device, the topmost when several share that point), turns the path into
 * one inside that filesystem (the mount's root, then the rest), and puts
 * it back on the first mount of the same device whose root holds it, in
 * coord__mount_order().  A rewrite is kept only if it reaches the same
 * inode (a mount may be hidden under another); what it checks is the path,
 * or its directory when the file does not exist yet.  Without /proc, or
 * when nothing fits, the path is left as it is.  Nothing is cached: the
 * mount table is read on every call. */
static void coord__path_unbind(char *path)
{
	char probe[PATH_MAX], inner[PATH_MAX], moved[PATH_MAX];
	const char *base = NULL, *rest;
	struct coord__mount *mounts = NULL, *home = NULL;
	struct stat st, st2;
	char *text = NULL;
	long count, kept = 0;
	unsigned major, minor;
	int home_on_dev = 0;

	/* probe: the path, or its directory when the file does not exist
	 * (base is then the last component) */
	if (lstat(path, &st) == 0) {
		snprintf(probe, sizeof probe, "%s", path);
	} else {
		base = coord__path_split(path, strlen(path), probe);
		if (!base || stat(probe, &st) != 0)
			return;
	}
	count = coord__mounts_read(&text, &mounts);
	if (count <= 0)
		goto done;
	for (long i = 0; i < count; i++) {
		struct coord__mount *m = &mounts[i];
		int on_dev = makedev(m->major, m->minor) == st.st_dev;
		if (!coord__path_below(m->point, m->point_len, probe))
			continue;
		if (!home || on_dev > home_on_dev ||
		    (on_dev == home_on_dev && m->point_len >= home->point_len)) {
			home = m;
			home_on_dev = on_dev;
		}
	}
	if (!home)
		goto done;
	rest = coord__path_below(home->point, home->point_len, probe);
	if (*rest == 0)
		snprintf(inner, sizeof inner, "%s", home->root);
	else if (coord__path_join(inner, home->root, rest + 1) < 0)
		goto done;
	/* the mounts of home's filesystem whose root holds the inner path,
	 * gathered at the front of the array (home itself may move) */
	major = home->major;
	minor = home->minor;
	for (long i = 0; i < count; i++) {
		struct coord__mount *m = &mounts[i];
		if (m->major == major && m->minor == minor &&
		    coord__path_below(m->root, m->root_len, inner))
			mounts[kept++] = *m;
	}
	qsort(mounts, (size_t)kept, sizeof *mounts, coord__mount_order);
	for (long i = 0; i < kept; i++) {
		const struct coord__mount *m = &mounts[i];
		rest = coord__path_below(m->root, m->root_len, inner);
		if (*rest == 0)
			snprintf(moved, sizeof moved, "%s", m->point);
		else if (coord__path_join(moved, m->point, rest + 1) < 0)
			continue;
		if (lstat(moved, &st2) != 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino)
			continue;
		if (!base)
			memcpy(path, moved, strlen(moved) + 1);
		else if (coord__path_join(probe, moved, base) == 0)
			memcpy(path, probe, strlen(probe) + 1);
		break;
	}
done:
	free(mounts);
	free(text);
}
#endif

/* coord_file_instance() of the directory made of path's first dl bytes. */
static int coord__read_marker(const char *path, size_t dl, char *buf, size_t size)
{
	char marker[PATH_MAX + sizeof COORD_MARKER_NAME + 1];
	ssize_t n;
	int fd;
	if (dl == 0 || dl + sizeof COORD_MARKER_NAME + 1 > sizeof marker)
		return COORD_EINVAL;
	memcpy(marker, path, dl);
	snprintf(marker + dl, sizeof marker - dl, "%s%s", marker[dl - 1] == '/' ? "" : "/",
	         COORD_MARKER_NAME);
	fd = open(marker, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? COORD_ENOENT : COORD_EPERM;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return COORD_EPERM;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
	                 buf[n - 1] == '\t'))
		n--;
	buf[n] = 0;
	return (int)n;
}

/* The length of the directory part of a path to a file: what comes before
 * its last '/' ("/" for a file in the root). */
static size_t coord__dir_len(const char *path, const char *slash)
{
	return slash == path ? 1 : (size_t)(slash - path);
}

COORD_API int coord_file_instance(const char *path, char *buf, size_t size)
{
	const char *slash;
	struct stat st;
	if (!path || !buf || size < 2)
		return COORD_EINVAL;
	slash = strrchr(path, '/');
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return coord__read_marker(path, strlen(path), buf, size);
	if (slash)
		return coord__read_marker(path, coord__dir_len(path, slash), buf, size);
	return coord__read_marker(".", 1, buf, size);
}

COORD_API int coord_canonicalize(const char *name, char *buf, size_t size)
{
	char real[PATH_MAX];
	size_t len;
	int rc;

	if (!name || !buf || size == 0)
		return COORD_EINVAL;
	len = strlen(name);
	if (len == 0 || len > COORD_NAME_MAX)
		return COORD_ENAME;
	if (!strncmp(name, COORD__KEY_PREFIX, COORD__KEY_PREFIX_LEN)) {
		/* a key: kept as is, prefix included */
		if (len == COORD__KEY_PREFIX_LEN || strchr(name, '/'))
			return COORD_ENAME;
		if (len + 1 > size)
			return COORD_EINVAL;
		memcpy(buf, name, len + 1);
		return (int)len;
	}
	rc = coord__path_resolve(name, real);
	if (rc < 0)
		return rc;
#ifdef __linux__
	coord__path_unbind(real);
#endif
	len = strlen(real);
	if (len + 1 > size)
		return COORD_EINVAL;
	if (len > COORD_NAME_MAX)
		return COORD_ENAME;
	memcpy(buf, real, len + 1);
	return (int)len;
}

/* The value in 0..last whose name(value) is `text`, or -1. */
static int coord__value_named(const char *text, const char *(*name)(int), int last)
{
	for (int v = 0; v <= last; v++)
		if (!strcmp(text, name(v)))
			return v;
	return -1;
}

COORD_API int coord_policy_parse(const char *text, coord_policy_t *out)
{
	coord_policy_t p = { COORD_POLICY_AUTO, COORD_SQLITE_DEFAULT, 0, "" };
	if (!text || !out)
		return COORD_EINVAL;
	if (!strncmp(text, "exec:", 5)) {
		size_t n = strlen(text + 5);
		if (n == 0 || n > COORD_COMMAND_MAX)
			return COORD_EINVAL;
		p.policy = COORD_POLICY_EXEC;
		memcpy(p.command, text + 5, n + 1);
	} else if (!strncmp(text, "sqlite:", 7)) {
		p.policy = COORD_POLICY_SQLITE;
		p.sqlite_mode = coord__value_named(text + 7, coord_proto_sqlite_mode_name,
		                                   COORD_SQLITE_TRUNCATE);
		if (p.sqlite_mode < 0)
			return COORD_EINVAL;
	} else {
		/* "exec" alone is not a policy: it needs its command */
		p.policy = coord__value_named(text, coord_proto_policy_name, COORD_POLICY_DUCKDB);
		if (p.policy < 0)
			return COORD_EINVAL;
	}
	*out = p;
	return 0;
}

COORD_API void coord_free(void *p)
{
	free(p);
}

static void coord__log(const coord_t *c, int level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	if (!c || !c->log)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	c->log(c->log_userdata, level, buf);
}

static int64_t coord__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* 8.3 Process-wide state                                                   */
/* ------------------------------------------------------------------------ */

/* The lease table.
 *
 * A coord_lease_t * is not a pointer to memory: it is an encoded
 * {index, generation} pair, (generation << COORD__INDEX_BITS) | index,
 * cast through uintptr_t (the handles of sokol_gfx.h), and the library
 * never dereferences it.  The index names a record of a process-wide
 * table whose records are never freed or moved while the program runs:
 * chunks of COORD__CHUNK records are allocated when first needed and
 * found through a fixed array of chunk pointers read with atomic loads.
 * A record's generation is odd while it holds a lease and even while it
 * is free; it rises at every grant and at every release, disconnect or
 * release in a forked child.  A handle whose generation is not its
 * record's is stale, and every call on it gets an answer (COORD_ENOLEASE,
 * 0 or NULL), never undefined behaviour.  Index 0 is never used, so no
 * handle is NULL.
 *
 * Limits: COORD__LEASES_MAX - 1 leases held at once per process, that is
 * 1048575 with 64-bit pointers and 4095 with 32-bit ones; one more acquire
 * fails with COORD_ELIMIT.  A handle keeps the generation's low 44 (or 20)
 * bits, so a stale handle could match again only after 2^43 (or 2^19)
 * grants of its one record.
 *
 * Readers take no lock (coord_lease_valid() and the accessors): they load
 * the generation, then the fields, then the generation again, and trust
 * the fields only if it did not move, like a seqlock whose writer holds
 * coord__table_lock.  All of it is atomic loads and stores, without
 * fences. */
#if UINTPTR_MAX > 0xffffffffu
#define COORD__INDEX_BITS 20
#else
#define COORD__INDEX_BITS 12
#endif
#define COORD__LEASES_MAX ((uintptr_t)1 << COORD__INDEX_BITS)
#define COORD__INDEX_MASK (COORD__LEASES_MAX - 1)
#define COORD__GEN_MASK (UINTPTR_MAX >> COORD__INDEX_BITS)
#define COORD__CHUNK_BITS 7
#define COORD__CHUNK ((uintptr_t)1 << COORD__CHUNK_BITS)

static pthread_mutex_t coord__table_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct coord__lease *) coord__chunks[COORD__LEASES_MAX / COORD__CHUNK];
static struct coord__lease *coord__free_leases;
static uintptr_t coord__next_index = 1;
/* Rises in every child at fork(): a lease granted before belongs to the
 * parent, so coord_lease_valid() in the child says 0. */
static _Atomic unsigned coord__fork_epoch;

/* The record a current handle names, with its generation in *gen; NULL
 * for NULL, a stale or a made-up handle.  Lock-free. */
static struct coord__lease *coord__lease_find(const coord_lease_t *l, uintptr_t *gen)
{
	uintptr_t v = (uintptr_t)l, index = v & COORD__INDEX_MASK, g;
	struct coord__lease *chunk, *rec;
	if (index == 0)
		return NULL;
	chunk = atomic_load_explicit(&coord__chunks[index >> COORD__CHUNK_BITS], memory_order_acquire);
	if (!chunk)
		return NULL;
	rec = &chunk[index & (COORD__CHUNK - 1)];
	g = atomic_load_explicit(&rec->gen, memory_order_acquire);
	if (!(g & 1) || (g & COORD__GEN_MASK) != v >> COORD__INDEX_BITS)
		return NULL;
	*gen = g;
	return rec;
}

/* After acquire-loads of rec's fields: 1 if rec still holds the lease of
 * generation `gen`, so the loaded values all belong to that lease.  The
 * fields are stored with release and loaded with acquire (no fences):
 * a reader that sees a field of a later lease therefore also sees the
 * generation that retired its own, and this load cannot move before the
 * field loads. */
static int coord__lease_unchanged(const struct coord__lease *rec, uintptr_t gen)
{
	return atomic_load_explicit(&rec->gen, memory_order_acquire) == gen;
}

/* Takes a free record (coord__table_lock held).  Returns 0, COORD_ELIMIT
 * (the table is full) or COORD_ENOMEM. */
static int coord__lease_alloc_locked(struct coord__lease **out)
{
	struct coord__lease *chunk;
	uintptr_t index = coord__next_index;
	if (coord__free_leases) {
		*out = coord__free_leases;
		coord__free_leases = (*out)->next;
		return 0;
	}
	if (index >= COORD__LEASES_MAX)
		return COORD_ELIMIT;
	chunk = atomic_load_explicit(&coord__chunks[index >> COORD__CHUNK_BITS], memory_order_relaxed);
	if (!chunk) {
		chunk = calloc(COORD__CHUNK, sizeof *chunk);
		if (!chunk)
			return COORD_ENOMEM;
		atomic_store_explicit(&coord__chunks[index >> COORD__CHUNK_BITS], chunk,
		                      memory_order_release);
	}
	*out = &chunk[index & (COORD__CHUNK - 1)];
	(*out)->index = index;
	coord__next_index++;
	return 0;
}

/* Puts a free record back (coord__table_lock held). */
static void coord__lease_put_locked(struct coord__lease *rec)
{
	rec->next = coord__free_leases;
	coord__free_leases = rec;
}

/* Fills a free record with a granted lease of c, links it to c, and
 * returns its handle (coord__table_lock held). */
static coord_lease_t *coord__lease_publish_locked(struct coord__lease *rec, coord_t *c,
                                                  const struct coord__grant *g, int mode,
                                                  const coord_resource_t *r,
                                                  struct coord__kfile *kfile, int kfd)
{
	uintptr_t gen = atomic_load_explicit(&rec->gen, memory_order_relaxed) + 1;
	/* Release stores: see coord__lease_unchanged(). */
	atomic_store_explicit(&rec->id, g->id, memory_order_release);
	atomic_store_explicit(&rec->token, g->token, memory_order_release);
	atomic_store_explicit(&rec->mode, mode, memory_order_release);
	atomic_store_explicit(&rec->word, g->word, memory_order_release);
	atomic_store_explicit(&rec->flags, g->flags, memory_order_release);
	atomic_store_explicit(&rec->fork_epoch,
	                      atomic_load_explicit(&coord__fork_epoch, memory_order_relaxed),
	                      memory_order_release);
	atomic_store_explicit(&rec->kfd, kfd, memory_order_release);
	rec->kfile = kfile;
	rec->secret = g->secret;
	rec->client_id = g->client_id;
	rec->lost = 0;
	rec->via = mode == COORD_READ && !r->nocache ? (coord_resource_t *)r : NULL;
	rec->cached_r = NULL;
	memcpy(rec->resource, r->name, r->name_len + 1);
	rec->conn = c;
	rec->prev = NULL;
	rec->next = c->leases;
	if (c->leases)
		c->leases->prev = rec;
	c->leases = rec;
	atomic_store_explicit(&rec->gen, gen, memory_order_release);
	return (coord_lease_t *)(((gen & COORD__GEN_MASK) << COORD__INDEX_BITS) | rec->index);
}

/* Makes every handle of rec stale, unlinks it from its connection and
 * frees it (coord__table_lock held). */
static void coord__lease_retire_locked(struct coord__lease *rec)
{
	coord_t *c = rec->conn;
	atomic_store_explicit(&rec->gen, atomic_load_explicit(&rec->gen, memory_order_relaxed) + 1,
	                      memory_order_release);
	if (rec->prev)
		rec->prev->next = rec->next;
	else
		c->leases = rec->next;
	if (rec->next)
		rec->next->prev = rec->prev;
	rec->conn = NULL;
	rec->kfile = NULL;
	atomic_store_explicit(&rec->kfd, -1, memory_order_release);
	coord__lease_put_locked(rec);
}

/* Drops a reference to c; the last one frees it.  The caller's reference
 * goes in coord_disconnect(); calls through resource and lease handles
 * hold one while they use c, so a coord_disconnect() in another thread
 * cannot free it under them. */
static void coord__conn_unref(coord_t *c)
{
	int last;
	pthread_mutex_lock(&coord__table_lock);
	last = --c->refs == 0;
	pthread_mutex_unlock(&coord__table_lock);
	if (!last)
		return;
	if (c->pid == getpid()) { /* in a child the locks may be copies held by nobody */
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_destroy(&c->recall_lock);
	}
	if (c->cache)
		munmap(c->cache, COORD_CACHE_PAGE_SIZE);
	while (c->old_pages) {
		struct coord__old_page *o = c->old_pages;
		c->old_pages = o->next;
		munmap(o->page, COORD_CACHE_PAGE_SIZE);
		free(o);
	}
	free(c);
}

/* Every connection, so that a forked child can close its copies of their
 * sockets at once (a child must not keep the parent's leases alive). */
static pthread_mutex_t coord__conns_lock = PTHREAD_MUTEX_INITIALIZER;
static coord_t *coord__conns;
static pthread_mutex_t coord__maps_lock = PTHREAD_MUTEX_INITIALIZER;
/* Spare kernel-lock descriptors of closed connections (8.6). */
static pthread_mutex_t coord__spares_lock = PTHREAD_MUTEX_INITIALIZER;
static struct coord__kfile *coord__spares;
static void coord__spares_close_in_child(void);
static pthread_once_t coord__atfork_once = PTHREAD_ONCE_INIT;

/* fork() waits until no other thread is inside the library's lists, so
 * the child's copies of them are whole. */
static void coord__atfork_prepare(void)
{
	pthread_mutex_lock(&coord__conns_lock);
	pthread_mutex_lock(&coord__table_lock);
	pthread_mutex_lock(&coord__maps_lock);
	pthread_mutex_lock(&coord__spares_lock);
}

static void coord__atfork_parent(void)
{
	pthread_mutex_unlock(&coord__spares_lock);
	pthread_mutex_unlock(&coord__maps_lock);
	pthread_mutex_unlock(&coord__table_lock);
	pthread_mutex_unlock(&coord__conns_lock);
}

/* Makes a cache page the child's own: the same bytes, in private memory
 * at the same address.  The page is a shared mapping of the parent's
 * memfd, and the broker reads the parent's reads in it: whatever the
 * child's copy of the library then writes there (its coord_disconnect()
 * ends what it inherited) must not reach the parent's entries, or the
 * broker would see the parent's grant unbound or its read ended.  If the
 * kernel refuses the mapping the page stays shared, and only the pid
 * checks (coord__detach_locked()) keep the child off it.  The private
 * memory is a MAP_PRIVATE mapping of /dev/zero, POSIX's anonymous memory
 * (MAP_ANONYMOUS is not in POSIX.1-2008, which this file is built to). */
static void coord__page_privatize(void *page, int zero_fd)
{
	unsigned char copy[COORD_CACHE_PAGE_SIZE];
	if (zero_fd < 0)
		return;
	memcpy(copy, page, sizeof copy);
	if (mmap(page, sizeof copy, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, zero_fd, 0) !=
	    MAP_FAILED)
		memcpy(page, copy, sizeof copy);
}

/* The child closes its copies of every socket and recall descriptor
 * (closing, not removing from the epoll set, which is the parent's too),
 * makes its copies of the cache pages private, then unlocks what
 * coord__atfork_prepare() took, as the parent does. */
static void coord__atfork_child(void)
{
	int zero_fd = -1;
	for (coord_t *c = coord__conns; c; c = c->next_conn) {
		if ((c->cache || c->old_pages) && zero_fd < 0)
			zero_fd = open("/dev/zero", O_RDWR | O_CLOEXEC);
		if (c->cache)
			coord__page_privatize(c->cache, zero_fd);
		for (struct coord__old_page *o = c->old_pages; o; o = o->next)
			coord__page_privatize(o->page, zero_fd);
		if (c->fd >= 0) {
			close(c->fd);
			c->fd = -1;
		}
		if (c->recall_fd >= 0)
			close(c->recall_fd);
		if (c->recall_ep >= 0)
			close(c->recall_ep);
		if (c->wait_ep >= 0)
			close(c->wait_ep);
		c->recall_fd = c->recall_ep = c->wait_ep = -1;
	}
	if (zero_fd >= 0)
		close(zero_fd);
	coord__spares_close_in_child();
	atomic_fetch_add_explicit(&coord__fork_epoch, 1, memory_order_relaxed);
	coord__atfork_parent();
}

static void coord__atfork_register(void)
{
	pthread_atfork(coord__atfork_prepare, coord__atfork_parent, coord__atfork_child);
}

static void coord__conns_add(coord_t *c)
{
	pthread_once(&coord__atfork_once, coord__atfork_register);
	pthread_mutex_lock(&coord__conns_lock);
	c->next_conn = coord__conns;
	coord__conns = c;
	pthread_mutex_unlock(&coord__conns_lock);
}

static void coord__conns_remove(coord_t *c)
{
	pthread_mutex_lock(&coord__conns_lock);
	for (coord_t **p = &coord__conns; *p; p = &(*p)->next_conn) {
		if (*p == c) {
			*p = c->next_conn;
			break;
		}
	}
	pthread_mutex_unlock(&coord__conns_lock);
}

/* ------------------------------------------------------------------------ */
/* 8.4 Messages                                                             */
/* ------------------------------------------------------------------------ */

/* The broker sent something this library cannot make sense of: nothing
 * more it sends on this connection can be trusted. */
static int coord__proto_error(coord_t *c)
{
	c->broken = 1;
	return COORD_EPROTO;
}

static int coord__send(coord_t *c, const void *msg, size_t len)
{
	ssize_t n;
	do
		n = send(c->fd, msg, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len) {
		c->broken = 1;
		return COORD_EIO;
	}
	return 0;
}

/* A notice: a message the broker sent unasked, with seq 0.  The protocol
 * defines no notice kind yet, and a client ignores kinds it does not know,
 * so each one is only logged; recall notices will be the first kind
 * handled here.  Returns 0 or COORD_EPROTO (too short). */
static int coord__on_notice(coord_t *c, const union coord__msg *m, size_t n)
{
	if (n < sizeof m->notice)
		return coord__proto_error(c);
	coord__log(c, COORD_LOG_DEBUG, "ignored a broker notice of unknown kind %u (lease %llu)",
	           (unsigned)m->notice.kind, (unsigned long long)m->notice.lease_id);
	return 0;
}

/* The descriptor a message carried (SCM_RIGHTS), or -1. */
static int coord__msg_fd(struct msghdr *mh)
{
	int fd = -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(int)) && fd < 0)
			memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	}
	return fd;
}

/* Receives the answer to request `seq` into *m.  Notices met on the way
 * go to coord__on_notice(); any other message with another seq is a stale
 * answer to a request given up on (a timeout) and is dropped.
 * timeout_ms < 0 waits forever.  With fd not NULL, *fd is the descriptor
 * the answer carried, or -1 (a descriptor on any other message is
 * closed); without, the kernel drops what a message carries.  The answer
 * of a pending request (c->pend) that is not the one waited for is kept
 * in it.  With intr, a signal ends the wait like the timeout.  Returns
 * the length, COORD_ETIMEDOUT, COORD_EIO or COORD_EPROTO. */
static int coord__recv_fd(coord_t *c, uint32_t seq, union coord__msg *m, int timeout_ms, int *fd,
                          int intr)
{
	int64_t deadline = timeout_ms < 0 ? -1 : coord__now_ms() + timeout_ms;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	if (fd)
		*fd = -1;
	for (;;) {
		struct iovec iov = { m, sizeof *m };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int wait = -1, rc;
		ssize_t n;
		if (fd) {
			mh.msg_control = ctl.buf;
			mh.msg_controllen = sizeof ctl.buf;
		}
		/* What is there already is read without a poll() first: a
		 * listing's many messages cost one system call each. */
		n = recvmsg(c->fd, &mh, MSG_TRUNC | MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (deadline >= 0) {
				int64_t left = deadline - coord__now_ms();
				wait = left < 0 ? 0 : (int)left;
			}
			n = poll(&pfd, 1, wait);
			if (n < 0 && errno == EINTR && intr)
				return COORD_ETIMEDOUT;
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				c->broken = 1;
				return COORD_EIO;
			}
			if (n == 0)
				return COORD_ETIMEDOUT;
			continue;
		}
		if (n <= 0) {
			c->broken = 1;
			return COORD_EIO;
		}
		if (fd && (*fd = coord__msg_fd(&mh)) >= 0 && (m->h.seq != seq || (size_t)n < sizeof m->h)) {
			close(*fd);
			*fd = -1;
		}
		if ((size_t)n > sizeof *m || (size_t)n < sizeof m->h)
			return coord__proto_error(c);
		if (m->h.seq == COORD_SEQ_NOTICE && m->h.type == COORD_MSG_NOTICE) {
			rc = coord__on_notice(c, m, (size_t)n);
			if (rc < 0)
				return rc;
			continue;
		}
		if (m->h.seq == seq)
			return (int)n;
		if (c->pend && m->h.seq == c->pend->ticket && c->pend->conn_gen == c->gen &&
		    !c->pend->answer_len) {
			memcpy(&c->pend->answer, m, (size_t)n);
			c->pend->answer_len = (size_t)n;
		}
	}
}

static int coord__recv(coord_t *c, uint32_t seq, union coord__msg *m, int timeout_ms)
{
	return coord__recv_fd(c, seq, m, timeout_ms, NULL, 0);
}

/* The number of the next request: never COORD_SEQ_NOTICE, even after
 * 2^32 requests. */
static uint32_t coord__next_seq(coord_t *c)
{
	if (++c->seq == COORD_SEQ_NOTICE)
		++c->seq;
	return c->seq;
}

static int coord__check(coord_t *c)
{
	if (c->pid != getpid())
		return COORD_EFORKED;
	if (c->broken || c->fd < 0)
		return COORD_EIO;
	return 0;
}

/* Takes c->lock for one request.  Returns 0 with the lock held, or
 * COORD_EFORKED or COORD_EIO without it.  The fork check comes first: in
 * a child the lock may be a copy held by a thread that is not there. */
static int coord__lock(coord_t *c)
{
	int rc;
	if (c->pid != getpid())
		return COORD_EFORKED;
	pthread_mutex_lock(&c->lock);
	rc = c->broken || c->fd < 0 ? COORD_EIO : 0; /* coord__check(), pid checked */
	if (rc == COORD_EIO)
		rc = c->backend->reconnect(c);
	if (rc < 0)
		pthread_mutex_unlock(&c->lock);
	return rc;
}

/* 1 if a call that failed with rc should be sent again on a new
 * connection: the connection was lost (a broker restart) and reconnecting
 * worked. */
static int coord__retry(coord_t *c, int rc)
{
	return rc == COORD_EIO && c->broken && c->backend->reconnect(c) == 0;
}

/* Receives one message of an answer: returns 1 when the answer is
 * complete, 0 to read on, or a COORD_E* code. */
typedef int (*coord__answer_fn)(void *ud, const union coord__msg *m, size_t n);

/* Sends request `req` (len bytes, its seq filled in here) and hands every
 * message of the answer to `on_msg`.  A REPLY with a negative status ends
 * the answer with that status; any other message, a REPLY with status 0
 * included, goes to on_msg.  Waits as long as the broker takes: it
 * enforces its own time limits and a dead broker hangs up.  A connection
 * lost before any of the answer came is made again and the request sent
 * once more.  Returns 0 or a COORD_E* code. */
static int coord__exchange(coord_t *c, coord_msg_hdr *req, size_t len, coord__answer_fn on_msg,
                           void *ud)
{
	int rc = coord__lock(c), got = 0;
	if (rc < 0)
		return rc;
again:
	req->seq = coord__next_seq(c);
	rc = coord__send(c, req, len);
	while (rc == 0) {
		int n = coord__recv(c, req->seq, &c->in, -1);
		if (n < 0) {
			rc = n;
		} else if (c->in.h.type == COORD_MSG_REPLY && (size_t)n < sizeof c->in.reply) {
			rc = coord__proto_error(c);
		} else if (c->in.h.type == COORD_MSG_REPLY && c->in.reply.status < 0) {
			rc = c->in.reply.status;
		} else {
			got = 1;
			rc = on_msg(ud, &c->in, (size_t)n);
			if (rc == COORD_EPROTO)
				c->broken = 1;
			if (rc == 1) {
				rc = 0;
				break;
			}
		}
	}
	if (!got && coord__retry(c, rc)) {
		got = 1; /* once */
		goto again;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* 8.5 The broker backend                                                   */
/* ------------------------------------------------------------------------ */

static int coord__dial(const char *dir, int *fd_out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, COORD_SOCKET_NAME) >=
	    sizeof sa.sun_path)
		return COORD_EINVAL;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return COORD_ESYS;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		*fd_out = fd;
		return 0;
	}
	rc = (errno == EACCES || errno == EPERM) ? COORD_EPERM : COORD_ENOBROKER;
	close(fd);
	return rc;
}

/* In a child about to exec the broker: close every descriptor above 2 the
 * application left without close-on-exec, so the daemon cannot keep the
 * application's pipes or files open for its whole life. */
static void coord__close_inherited(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int keep;
	if (!d)
		return;
	keep = dirfd(d);
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (fd > 2 && fd != keep)
			close(fd);
	}
	closedir(d);
}

/* Starts `coordd --daemon --dir DIR` and waits for the launcher to exit;
 * the daemon itself signals readiness before its launcher exits.  Exit
 * status 0 (started) and 3 (another broker holds the directory) both mean
 * a broker is there. */
static int coord__spawn_broker(coord_t *c, const char *broker, const char *dir)
{
	pid_t pid;
	int status;
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		sigset_t none;
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		coord__close_inherited();
		for (int s = 1; s < 65; s++) /* every signal number Linux has */
			signal(s, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execlp(broker, broker, "--daemon", "--dir", dir, (char *)NULL);
		_exit(127);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		return COORD_ESYS;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return COORD_ESYS;
	}
	if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3)) {
		coord__log(c, COORD_LOG_INFO, "started broker %s for %s", broker, dir);
		return 0;
	}
	coord__log(c, COORD_LOG_ERROR, "broker %s --daemon --dir %s failed (status 0x%x)", broker,
	           dir, status);
	return COORD_ENOBROKER;
}

/* Connects to the broker of c->dir, starting `broker` once if nobody
 * listens and autostart is on, then retrying until the deadline. */
static int coord__dial_or_start(coord_t *c, const char *broker, int autostart, int timeout_ms)
{
	int64_t deadline = coord__now_ms() + timeout_ms;
	int rc, started = 0;
	for (;;) {
		rc = coord__dial(c->dir, &c->fd);
		if (rc != COORD_ENOBROKER || !autostart)
			return rc;
		if (!started) {
			rc = coord__spawn_broker(c, broker, c->dir);
			if (rc < 0)
				return rc;
			started = 1;
			continue;
		}
		if (coord__now_ms() >= deadline)
			return rc;
		/* The broker said it was ready (or another one was starting);
		 * give its socket a moment to accept. */
		poll(NULL, 0, 5);
	}
}

static int coord__hello(coord_t *c, int timeout_ms)
{
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
	const coord_msg_welcome *w = &c->in.welcome;
	int sent = coord__send(c, &hello, sizeof hello), n;
	c->seq = 1;
	/* A broker that refuses the connection (at its client or descriptor
	 * limit) sends WELCOME{COORD_ELIMIT} and hangs up before it reads the
	 * HELLO, so the send may fail: read the answer all the same. */
	n = coord__recv(c, 1, &c->in, sent < 0 ? 0 : timeout_ms);
	if (n >= 0 && sent < 0 && ((size_t)n < sizeof *w || w->h.type != COORD_MSG_WELCOME ||
	                           w->status >= 0))
		n = sent;
	if (n < 0)
		return sent < 0 ? sent : n;
	if ((size_t)n < sizeof *w || w->h.type != COORD_MSG_WELCOME)
		return COORD_EPROTO;
	if (w->status < 0)
		return w->status;
	if (w->version != COORD_PROTO_VERSION)
		return COORD_EPROTO;
	c->client_id = w->client_id;
	c->broker_pid = w->broker_pid;
	return 0;
}

/* The mappings of region files.  A mapping is never undone while the
 * program runs, so that coord_lease_valid() in one thread can never read
 * unmapped memory while another thread disconnects: every connection to
 * one instance shares its mapping, and a new one is made only for a file
 * not mapped yet or grown since (a broker restarted with more slots).  It
 * costs a few pages of address space per instance directory. */
struct coord__map {
	struct coord__map *next;
	dev_t dev;
	ino_t ino;
	size_t size;
	const void *base;
};

static struct coord__map *coord__maps;

/* This process's mapping of the region file open on fd.  Returns 0 or
 * COORD_ESYS / COORD_ENOMEM. */
static int coord__region_mapping(int fd, const struct stat *st, const void **base)
{
	struct coord__map *m;
	void *p;
	int rc = 0;
	pthread_mutex_lock(&coord__maps_lock);
	for (m = coord__maps; m; m = m->next)
		if (m->dev == st->st_dev && m->ino == st->st_ino && m->size >= (size_t)st->st_size)
			break;
	if (m) {
		*base = m->base;
		goto out;
	}
	m = calloc(1, sizeof *m);
	p = m ? mmap(NULL, (size_t)st->st_size, PROT_READ, MAP_SHARED, fd, 0) : NULL;
	if (!m || p == MAP_FAILED) {
		rc = m ? COORD_ESYS : COORD_ENOMEM;
		free(m);
		goto out;
	}
	m->dev = st->st_dev;
	m->ino = st->st_ino;
	m->size = (size_t)st->st_size;
	m->base = p;
	m->next = coord__maps;
	coord__maps = m;
	*base = p;
out:
	pthread_mutex_unlock(&coord__maps_lock);
	return rc;
}

/* Maps the shared region of c->dir and checks its header.  The header
 * names the file the broker writes (device and inode): a file that is
 * not that one (a copy put in its place), or one too short (truncated),
 * is COORD_EREGION and is never mapped. */
static int coord__map_region_once(coord_t *c)
{
	char path[PATH_MAX + 32];
	struct stat st;
	const coord_shm_header *h;
	coord_shm_header head;
	const void *base;
	int fd, rc = COORD_EREGION;

	snprintf(path, sizeof path, "%s/%s", c->dir, COORD_SHM_NAME);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == EACCES ? COORD_EPERM : errno == ENOENT ? COORD_EREGION : COORD_EPROTO;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < COORD_SHM_HEADER_SIZE ||
	    pread(fd, &head, sizeof head, 0) != (ssize_t)sizeof head ||
	    memcmp(head.magic, COORD_SHM_MAGIC, 8) != 0 ||
	    (head.file_ino && (head.file_ino != (uint64_t)st.st_ino ||
	                       head.file_dev != (uint64_t)st.st_dev)))
		goto out;
	rc = coord__region_mapping(fd, &st, &base);
	if (rc < 0)
		goto out;
	h = base;
	rc = COORD_EPROTO;
	if (memcmp(h->magic, COORD_SHM_MAGIC, 8) != 0 || h->header_size != COORD_SHM_HEADER_SIZE ||
	    h->slot_size != sizeof(coord_shm_slot) ||
	    h->slot_count > ((size_t)st.st_size - COORD_SHM_HEADER_SIZE) / sizeof(coord_shm_slot))
		goto out;
	c->slots = (const coord_shm_slot *)((const char *)base + h->header_size);
	c->slot_count = h->slot_count;
	rc = 0;
out:
	close(fd);
	return rc;
}

/* The same, waiting up to the connect timeout while the region is not
 * the broker's: the broker puts its own back within a second. */
static int coord__map_region(coord_t *c)
{
	int64_t deadline = coord__now_ms() + c->connect_timeout_ms;
	int rc;
	while ((rc = coord__map_region_once(c)) == COORD_EREGION && coord__now_ms() < deadline)
		poll(NULL, 0, 20);
	return rc;
}

/* All environment variables but COORD_DIR are read here and nowhere else
 * (COORD_DIR: coord_proto_resolve_dir()). */
static int coord__broker_open(coord_t *c, const coord_options_t *opts)
{
	const char *env = getenv("COORD_NO_AUTOSTART");
	const char *broker = opts->broker ? opts->broker : getenv("COORD_BROKER");
	int autostart = !opts->no_autostart && !(env && !strcmp(env, "1"));
	int timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
	int rc;
	if (!broker || !*broker)
		broker = "coordd";
	if (strlen(broker) >= sizeof c->broker)
		return COORD_EINVAL;
	strcpy(c->broker, broker);
	c->autostart = autostart;
	c->connect_timeout_ms = timeout_ms;
	rc = coord__dial_or_start(c, broker, autostart, timeout_ms);
	if (rc == 0)
		rc = coord__hello(c, timeout_ms);
	if (rc == 0)
		rc = coord__map_region(c);
	return rc;
}

static void coord__broker_close(coord_t *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Sends r's ACQUIRE (c->lock held); *seq is its number. */
static int coord__broker_start(coord_t *c, coord_resource_t *r, int mode, int timeout_ms,
                               const char *label, uint32_t *seq)
{
	coord_msg_acquire *a = &r->req.m;
	size_t label_len = label ? strnlen(label, COORD_LABEL_MAX) : 0;

	a->h.seq = coord__next_seq(c);
	a->mode = (uint32_t)mode;
	a->timeout_ms = timeout_ms;
	a->label_len = (uint16_t)label_len;
	if (label_len)
		memcpy(r->req.raw + sizeof *a + r->name_len, label, label_len);
	*seq = a->h.seq;
	return coord__send(c, &r->req, sizeof *a + r->name_len + label_len);
}

/* The answer to an ACQUIRE, n bytes in *m: 1 with *g, or a COORD_E* code. */
static int coord__broker_grant(coord_t *c, const union coord__msg *m, size_t n,
                               struct coord__grant *g)
{
	if (m->h.type == COORD_MSG_REPLY && n >= sizeof m->reply)
		return m->reply.status < 0 ? m->reply.status : COORD_EPROTO;
	if (m->h.type != COORD_MSG_GRANT || n < sizeof m->grant)
		return coord__proto_error(c);
	if (m->grant.status < 0)
		return m->grant.status;
	if (m->grant.slot >= c->slot_count)
		return coord__proto_error(c);
	g->id = m->grant.lease_id;
	g->token = m->grant.token;
	g->word = &c->slots[m->grant.slot].lease;
	g->flags = &c->slots[m->grant.slot].flags;
	g->secret = m->grant.secret;
	g->client_id = c->client_id;
	return 1;
}

/* The answer to ACQUIRE seq: kept by another call (c->pend), or read now,
 * waiting up to wait_ms; a signal ends the wait. */
static int coord__broker_poll(coord_t *c, uint32_t seq, int wait_ms, struct coord__grant *g)
{
	struct coord_pending *p = c->pend;
	int n;
	if (p && p->ticket == seq && p->answer_len) {
		n = (int)p->answer_len;
		p->answer_len = 0;
		memcpy(&c->in, &p->answer, (size_t)n);
	} else {
		n = coord__recv_fd(c, seq, &c->in, wait_ms, NULL, 1);
		if (n == COORD_ETIMEDOUT)
			return 0;
		if (n < 0)
			return n;
	}
	return coord__broker_grant(c, &c->in, (size_t)n, g);
}

/* CANCEL, then the final answer to ACQUIRE seq: the broker answers at once
 * (REPLY{COORD_ECANCELED}) or already did (a GRANT, a refusal). */
static int coord__broker_cancel(coord_t *c, uint32_t seq, struct coord__grant *g)
{
	coord_msg_cancel m = { { COORD_MSG_CANCEL, coord__next_seq(c) }, seq, 0 };
	struct coord_pending *p = c->pend;
	int n;
	if (!(p && p->ticket == seq && p->answer_len)) {
		n = coord__send(c, &m, sizeof m);
		if (n < 0)
			return n;
	}
	n = coord__broker_poll(c, seq, c->connect_timeout_ms, g);
	if (n == 0)
		return COORD_EIO; /* no answer in time: the connection cannot be trusted */
	return n == 1 ? 1 : 0;
}

static int coord__broker_acquire(coord_t *c, coord_resource_t *r, int mode, int timeout_ms,
                                 const char *label, struct coord__grant *g)
{
	uint32_t seq;
	int n = coord__broker_start(c, r, mode, timeout_ms, label, &seq);
	if (n < 0)
		return n;
	/* The broker enforces the timeout and always answers; wait for it
	 * without a deadline of our own (a dead broker hangs up). */
	n = coord__recv(c, seq, &c->in, -1);
	if (n < 0)
		return n;
	n = coord__broker_grant(c, &c->in, (size_t)n, g);
	return n == 1 ? 0 : n;
}

/* What the word of a lost lease points at: never a lease id. */
static const _Atomic uint64_t coord__lost_word;

/* One ATTACH: lease_id of connection client_id, or "done" (lease_id 0).
 * Returns 1 with *slot (attached), 0 (done), COORD_ENOLEASE (not given
 * back), or COORD_EIO / COORD_EPROTO. */
static int coord__attach(coord_t *c, uint64_t client_id, uint64_t lease_id, uint64_t secret,
                         uint64_t *slot)
{
	coord_msg_attach a = { { COORD_MSG_ATTACH, coord__next_seq(c) }, client_id, lease_id, secret };
	const union coord__msg *m = &c->in;
	int n = coord__send(c, &a, sizeof a);
	if (n < 0)
		return n;
	n = coord__recv(c, a.h.seq, &c->in, c->connect_timeout_ms);
	if (n < 0)
		return n == COORD_ETIMEDOUT ? COORD_EIO : n;
	if (m->h.type == COORD_MSG_REPLY && (size_t)n >= sizeof m->reply)
		return m->reply.status <= 0 ? m->reply.status : coord__proto_error(c);
	if (m->h.type != COORD_MSG_GRANT || (size_t)n < sizeof m->grant ||
	    m->grant.lease_id != lease_id || m->grant.slot >= c->slot_count)
		return coord__proto_error(c);
	*slot = m->grant.slot;
	return 1;
}

/* A request of `type` with no body, answered REPLY{0} with a descriptor
 * (SCM_RIGHTS) in *fd, or REPLY{error} (c->lock held).  Returns 0 or a
 * COORD_E* code. */
static int coord__request_fd(coord_t *c, uint32_t type, int *fd)
{
	coord_msg_hdr req = { type, coord__next_seq(c) };
	const union coord__msg *m = &c->in;
	int n = coord__send(c, &req, sizeof req), got = -1;
	if (n < 0)
		return n;
	n = coord__recv_fd(c, req.seq, &c->in, c->connect_timeout_ms, &got, 0);
	if (n < 0)
		return n == COORD_ETIMEDOUT ? COORD_EIO : n;
	if (m->h.type != COORD_MSG_REPLY || (size_t)n < sizeof m->reply || m->reply.status > 0 ||
	    (m->reply.status == 0) != (got >= 0)) {
		if (got >= 0)
			close(got);
		return coord__proto_error(c);
	}
	if (m->reply.status < 0)
		return m->reply.status;
	*fd = got;
	return 0;
}

/* KERNEL_WAIT: no answer; a connection it fails on is broken, which the
 * next call on c finds. */
static void coord__broker_kernel_wait(coord_t *c, const struct coord__grant *g, int waiting)
{
	coord_msg_kernel_wait m = { { COORD_MSG_KERNEL_WAIT, coord__next_seq(c) }, g->id,
		                    (uint32_t)waiting, 0 };
	if (coord__send(c, &m, sizeof m) < 0) {
		/* c->broken is set */
	}
}

/* NOTIFY: the broker answers with the read end of its recall pipe for
 * this connection (c->lock held). */
static int coord__broker_recall_pipe(coord_t *c, int *fd)
{
	int got = -1, n = coord__request_fd(c, COORD_MSG_NOTIFY, &got);
	if (n < 0)
		return n;
	if (fcntl(got, F_SETFL, O_NONBLOCK) < 0) { /* its own file description */
		close(got);
		return COORD_ESYS;
	}
	*fd = got;
	return 0;
}

static int coord__recall_renew(coord_t *c);
static int coord__cache_reattach(coord_t *c, uint64_t old_broker, uint64_t *done, size_t *ndone);
static void coord__cache_orphans_settle(coord_t *c);

/* A lease of c as it stood when the reconnect began. */
struct coord__held {
	struct coord__lease *rec;
	uintptr_t gen;
	uint64_t id, secret, client_id;
};

/* Connects c again after its connection was lost (c->lock held) and takes
 * back its leases: a restarted broker adopted those whose holder lives
 * (see docs/design.md, "Broker restarts").  Each lease is attached with
 * its secret; one the broker does not give back is marked lost, and its
 * word points at coord__lost_word from then on, so coord_lease_valid()
 * is 0.  Then "done" for every earlier connection lets the broker give
 * back what this process no longer claims.  Without autostart it waits
 * up to the connect timeout for a broker to appear.  Returns 0, or a
 * COORD_E* code with c still broken. */
static int coord__broker_reconnect(coord_t *c)
{
	struct coord__held *v = NULL;
	uint64_t *done = NULL, slot, old_broker = c->broker_pid;
	size_t n = 0, ndone = 0, i, j;
	int64_t deadline = coord__now_ms() + c->connect_timeout_ms;
	int rc;

	if (c->closed)
		return COORD_EIO;
	c->broken = 1;
	if (c->fd >= 0) {
		if (c->wait_ep >= 0)
			epoll_ctl(c->wait_ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	if (!c->lost_client_id)
		c->lost_client_id = c->client_id;
	/* A broker that is dying may still accept a connection and then hang
	 * up on it, and one that is starting refuses until it listens: try
	 * again until the deadline. */
	for (;;) {
		rc = coord__dial_or_start(c, c->broker, c->autostart, c->connect_timeout_ms);
		if (rc == 0)
			rc = coord__hello(c, c->connect_timeout_ms);
		if (rc == 0)
			rc = coord__map_region(c);
		if (rc == 0)
			break;
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		if ((rc != COORD_ENOBROKER && rc != COORD_EIO) || coord__now_ms() >= deadline)
			goto out;
		poll(NULL, 0, 20);
	}

	pthread_mutex_lock(&coord__table_lock);
	for (struct coord__lease *rec = c->leases; rec; rec = rec->next)
		n++;
	for (coord_resource_t *r = c->resources; r; r = r->next)
		n += r->cache.lease != 0;
	v = calloc(n + 1, sizeof *v);
	done = calloc(n + 1, sizeof *done);
	i = 0;
	/* Reads under cached grants are attached with their grant (below). */
	for (struct coord__lease *rec = c->leases; v && done && rec; rec = rec->next)
		if (!rec->cached_r)
			v[i++] = (struct coord__held){ rec,
				                       atomic_load_explicit(&rec->gen, memory_order_relaxed),
				                       atomic_load_explicit(&rec->id, memory_order_relaxed),
				                       rec->secret, rec->client_id };
	n = i;
	pthread_mutex_unlock(&coord__table_lock);
	rc = COORD_ENOMEM;
	if (!v || !done)
		goto out;

	done[ndone++] = c->lost_client_id;
	for (i = 0; i < n; i++) {
		struct coord__lease *rec = v[i].rec;
		if (rec->lost)
			continue;
		rc = coord__attach(c, v[i].client_id, v[i].id, v[i].secret, &slot);
		if (rc < 0 && rc != COORD_ENOLEASE)
			goto out;
		pthread_mutex_lock(&coord__table_lock);
		if (coord__lease_unchanged(rec, v[i].gen)) {
			if (rc == 1) {
				atomic_store_explicit(&rec->word, &c->slots[slot].lease, memory_order_release);
				atomic_store_explicit(&rec->flags, &c->slots[slot].flags, memory_order_release);
				rec->client_id = c->client_id;
			} else {
				atomic_store_explicit(&rec->word, &coord__lost_word, memory_order_release);
				atomic_store_explicit(&rec->flags, NULL, memory_order_release);
				rec->lost = 1;
			}
		}
		pthread_mutex_unlock(&coord__table_lock);
		if (rc != 1)
			coord__log(c, COORD_LOG_WARN, "lease %llu on %s was lost with the broker",
			           (unsigned long long)v[i].id, rec->resource);
		for (j = 0; j < ndone && done[j] != v[i].client_id; j++)
			;
		if (j == ndone)
			done[ndone++] = v[i].client_id;
	}
	rc = coord__cache_reattach(c, old_broker, done, &ndone);
	if (rc < 0)
		goto out;
	for (j = 0; j < ndone; j++) {
		rc = coord__attach(c, done[j], 0, 0, &slot);
		if (rc < 0)
			goto out;
	}
	c->lost_client_id = 0;
	c->broken = 0;
	c->gen++; /* a pending request's ticket was the old connection's */
	if (c->wait_ep >= 0) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = c->fd };
		epoll_ctl(c->wait_ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	rc = 0;
	coord__cache_orphans_settle(c);
	if (coord__recall_renew(c) < 0)
		coord__log(c, COORD_LOG_WARN, "no recall descriptor after the reconnect: recalls "
		                              "show only in coord_lease_recalled()");
out:
	free(v);
	free(done);
	return rc;
}

static int coord__broker_release(coord_t *c, const struct coord__grant *g)
{
	coord_msg_release req;
	int rc = coord__check(c), held;
	if (rc == COORD_EFORKED)
		return rc;
	/* The release needs no answer: the broker handles a connection's
	 * requests in order, and whether the lease was still held is in the
	 * shared region.  One send, no round trip. */
	held = atomic_load_explicit(g->word, memory_order_acquire) == g->id;
	if (rc == 0) {
		memset(&req, 0, sizeof req);
		req.h.type = COORD_MSG_RELEASE;
		req.h.seq = coord__next_seq(c);
		req.lease_id = g->id;
		req.flags = COORD_RELEASE_NO_REPLY;
		rc = coord__send(c, &req, sizeof req);
		if (rc == 0)
			return held ? 0 : COORD_ENOLEASE;
	}
	/* The connection is lost.  Whichever broker comes next holds the
	 * lease for this process until it reconnects, and the reconnect gives
	 * back every lease the process no longer claims, this one included.
	 * A lease a restarted broker did not keep (its slot cleared) was lost
	 * before this release. */
	coord__broker_reconnect(c);
	return held ? 0 : COORD_ELOST;
}

static const struct coord__backend coord__broker_backend = {
	coord__broker_open,
	coord__broker_close,
	coord__broker_acquire,
	coord__broker_release,
	coord__broker_reconnect,
	coord__broker_start,
	coord__broker_poll,
	coord__broker_cancel,
	coord__broker_recall_pipe,
	coord__broker_kernel_wait,
};

/* ------------------------------------------------------------------------ */
/* 8.6 Kernel locks                                                         */
/* ------------------------------------------------------------------------ */

/* Every lease on an existing regular file is also held as flock(2) on the
 * file itself, shared for reads and exclusive for writes, taken once the
 * backend has granted and dropped before the backend hears of the release.
 * The broker orders its own holders, so the kernel lock never waits for
 * them; it waits only for someone the broker cannot see: a holder from
 * before a broker restart, another instance's holder, or a child process
 * that outlived the holder with a copy of the descriptor (as with
 * flock(1)).  That is what keeps a second writer out when the broker's
 * memory is gone.
 *
 * The descriptor is opened once per connection and file and kept until
 * coord_disconnect(): closing any descriptor of a file drops every POSIX
 * lock the process holds on it, SQLite's and DuckDB's included, so the
 * library must never close it while the application may have the database
 * open.  Nested read leases of one connection share one flock.  flock(2)
 * on network filesystems (NFS, SMB) is emulated with POSIX locks and would
 * interfere with the database's own, so no kernel lock is taken there. */
struct coord__kfile {
	struct coord__kfile *next;  /* conn->kfiles, newest first */
	int fd;
	dev_t dev;                  /* the file fd is open on */
	ino_t ino;
	int holds;                  /* leases of this connection that use the lock */
	int unlocked;               /* a network filesystem: opened, never locked */
	char name[COORD_NAME_MAX + 1];
};

/* Descriptors of closed connections.  Closing one would drop every POSIX
 * lock this process holds on the file, SQLite's included, and a process
 * may close connections while it keeps the database open (a thread's
 * connection, in a server that runs a thread per request).  So they are
 * unlocked, kept for the process's life, and given to the next
 * connection that needs the same file: at most as many per file as the
 * process ever had connections on it at once.  A forked child closes its
 * copies (it holds no POSIX lock yet) rather than share their open file
 * descriptions, and with them their flocks, with its parent. */
/* In a child just forked (the fork handler holds the lock). */
static void coord__spares_close_in_child(void)
{
	while (coord__spares) {
		struct coord__kfile *k = coord__spares;
		coord__spares = k->next;
		close(k->fd);
		free(k);
	}
}

/* Takes a spare descriptor of the file (dev, ino), or NULL. */
static struct coord__kfile *coord__spare_take(dev_t dev, ino_t ino)
{
	struct coord__kfile **p, *k = NULL;
	pthread_mutex_lock(&coord__spares_lock);
	for (p = &coord__spares; *p; p = &(*p)->next) {
		if ((*p)->dev == dev && (*p)->ino == ino) {
			k = *p;
			*p = k->next;
			break;
		}
	}
	pthread_mutex_unlock(&coord__spares_lock);
	return k;
}

/* 1 where flock(2) is emulated with POSIX byte-range locks. */
static int coord__flock_emulated(int fd)
{
#ifdef __linux__
	struct statfs sf;
	if (fstatfs(fd, &sf) == 0)
		return coord_proto_flock_emulated((unsigned long)sf.f_type);
#else
	(void)fd;
#endif
	return 0;
}

/* Where the flock of a key lives: DIR/keys/k-NAME for the key "key:NAME"
 * (the file is named after NAME alone, so no ':' reaches a file name, and
 * it is the file that libraries before the "key:" syntax used for the
 * bare key NAME: during an upgrade old and new holders of one key still
 * exclude each other), or DIR/keys/h-HASH (FNV-1a of NAME) for a NAME too
 * long for a file name; a shared hash only makes two keys wait for each
 * other; DIR/keys is made by coord__kfile_get() when it is not there).
 * The files are created on first use and never removed (another holder
 * may have one open).  Returns 0, or -1 if there is no such place. */
static int coord__key_lock_path(const coord_t *c, const char *key, char *buf, size_t size)
{
	size_t len;
	int n;
	if (!strncmp(key, COORD__KEY_PREFIX, COORD__KEY_PREFIX_LEN))
		key += COORD__KEY_PREFIX_LEN;
	len = strlen(key);
	if (len <= 200) {
		n = snprintf(buf, size, "%s/keys/k-%s", c->dir, key);
	} else {
		uint64_t h = 14695981039346656037ull;
		for (size_t i = 0; i < len; i++)
			h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
		n = snprintf(buf, size, "%s/keys/h-%016llx", c->dir, (unsigned long long)h);
	}
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* Makes DIR/keys, the first time a key's lock file cannot be created
 * for want of it.  Returns 0 (made, or there already), or -1. */
static int coord__keys_dir_make(const coord_t *c)
{
	char dir[PATH_MAX];
	int n = snprintf(dir, sizeof dir, "%s/keys", c->dir);
	if (n < 0 || (size_t)n >= sizeof dir)
		return -1;
	return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

static int coord__kfile_is(const struct coord__kfile *k, dev_t dev, ino_t ino, const char *name)
{
	return k->dev == dev && k->ino == ino && !strcmp(k->name, name);
}

/* Where (dev, ino) starts its probe in a table of cap slots.  The name
 * is left out of the hash: one file rarely has two names in use. */
static size_t coord__kfile_slot(dev_t dev, ino_t ino, size_t cap)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32 | (uint64_t)dev >> 32)) *
	             0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 32) & (cap - 1);
}

/* c's kfile of (dev, ino, name), or NULL (c->lock held).  A process may
 * have thousands of files locked on one connection, and every acquire
 * looks here: one or two slots, not a search. */
static struct coord__kfile *coord__kfile_find(coord_t *c, dev_t dev, ino_t ino, const char *name)
{
	struct coord__kfile *k;
	if (c->kfile_index_partial || !c->kfile_index) {
		for (k = c->kfiles; k; k = k->next)
			if (coord__kfile_is(k, dev, ino, name))
				return k;
		return NULL;
	}
	for (size_t i = coord__kfile_slot(dev, ino, c->kfile_cap); (k = c->kfile_index[i]);
	     i = (i + 1) & (c->kfile_cap - 1))
		if (coord__kfile_is(k, dev, ino, name))
			return k;
	return NULL;
}

/* Puts k in table v of cap slots, in place of an entry with its key (an
 * inode number used again by a new file: the newest wins, as in the
 * list).  Returns 1 if it took a new slot. */
static int coord__kfile_put(struct coord__kfile **v, size_t cap, struct coord__kfile *k)
{
	size_t i = coord__kfile_slot(k->dev, k->ino, cap);
	for (; v[i]; i = (i + 1) & (cap - 1))
		if (coord__kfile_is(v[i], k->dev, k->ino, k->name)) {
			v[i] = k;
			return 0;
		}
	v[i] = k;
	return 1;
}

/* Puts k, whose dev, ino and name are set, on c's list and in its index
 * (c->lock held), doubling the index when it would be more than half
 * full.  Without memory for that, the list is searched from then on. */
static void coord__kfile_add(coord_t *c, struct coord__kfile *k)
{
	k->next = c->kfiles;
	c->kfiles = k;
	if (c->kfile_index_partial)
		return;
	if ((c->kfile_count + 1) * 2 > c->kfile_cap) {
		size_t cap = c->kfile_cap ? c->kfile_cap * 2 : 16;
		struct coord__kfile **v = calloc(cap, sizeof *v);
		if (!v) {
			c->kfile_index_partial = 1;
			free(c->kfile_index);
			c->kfile_index = NULL;
			return;
		}
		for (size_t i = 0; i < c->kfile_cap; i++)
			if (c->kfile_index[i])
				coord__kfile_put(v, cap, c->kfile_index[i]);
		free(c->kfile_index);
		c->kfile_index = v;
		c->kfile_cap = cap;
	}
	c->kfile_count += (size_t)coord__kfile_put(c->kfile_index, c->kfile_cap, k);
}

/* The kernel-lock file of `name` for c (c->lock held), opened the first
 * time and again when the name has come to mean another file (replaced
 * or recreated; the old descriptor stays open, see above).  A key's lock
 * is its file under DIR/keys, created if need be.  *out is NULL when no
 * kernel lock applies: a file that does not exist (yet), something that is
 * not a regular file, a network filesystem.  Returns 0 or COORD_ENOMEM. */
static int coord__kfile_get(coord_t *c, const char *name, struct coord__kfile **out)
{
	char keypath[PATH_MAX];
	const char *path = name;
	struct coord__kfile *k;
	struct stat st;
	int fd, key = name[0] != '/', known;

	*out = NULL;
	if (key && coord__key_lock_path(c, name, keypath, sizeof keypath) < 0)
		return 0;
	if (key)
		path = keypath;
	known = stat(path, &st) == 0;
	if (!key && (!known || !S_ISREG(st.st_mode)))
		return 0;
	/* Through the index: a process may have thousands of files locked on
	 * one connection. */
	k = known ? coord__kfile_find(c, st.st_dev, st.st_ino, name) : NULL;
	if (k) {
		*out = k->unlocked ? NULL : k;
		return 0;
	}
	k = known ? coord__spare_take(st.st_dev, st.st_ino) : NULL;
	if (k) {
		snprintf(k->name, sizeof k->name, "%s", name);
		k->holds = 0;
		coord__kfile_add(c, k);
		*out = k->unlocked ? NULL : k;
		return 0;
	}
	/* O_NONBLOCK: a FIFO named as a resource must not block the open. */
	/* A key's file: read-only is enough for flock(2), and 0640 lets the
	 * other members of a shared instance (keys/ is setgid there) open the
	 * file its first user created. */
	if (key) {
		fd = open(path, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
		if (fd < 0 && errno == ENOENT && coord__keys_dir_make(c) == 0)
			fd = open(path, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
	} else
		fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 && !key && errno == EACCES)
		fd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	/* From here the descriptor is never closed, not even when no lock is
	 * taken through it (see above): coord_disconnect() makes it a spare. */
	k = calloc(1, sizeof *k);
	if (!k) {
		close(fd); /* nothing else to do; out of memory */
		return COORD_ENOMEM;
	}
	k->fd = fd;
	k->unlocked = fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || coord__flock_emulated(fd);
	k->dev = st.st_dev;
	k->ino = st.st_ino;
	snprintf(k->name, sizeof k->name, "%s", name);
	coord__kfile_add(c, k);
	*out = k->unlocked ? NULL : k;
	return 0;
}

/* Tells c's broker, once per change, whether the holder of g waits for
 * its kernel lock: *told is what it was told last (0 at first). */
static void coord__kernel_wait_tell(coord_t *c, const struct coord__grant *g, int *told,
                                    int waiting)
{
	if (*told == waiting)
		return;
	*told = waiting;
	c->backend->kernel_wait(c, g, waiting);
}

/* Takes k's flock for `mode` (c->lock held) for the lease g of c,
 * waiting for an outside holder until deadline_ms (monotonic; -1
 * forever), and tells the broker while it waits (*told, as
 * coord__kernel_wait_tell() keeps it).  Returns 0, COORD_EBUSY (deadline
 * already passed: a try-once request), COORD_ETIMEDOUT or COORD_ESYS. */
static int coord__kernel_lock(coord_t *c, const struct coord__grant *g, struct coord__kfile *k,
                              int mode, int64_t deadline_ms, int *told)
{
	int op = (mode == COORD_WRITE ? LOCK_EX : LOCK_SH) | LOCK_NB, waited = 0;
	int64_t delay_us = 50;
	if (k->holds > 0) {
		/* a nested read: the connection's shared lock is already held */
		k->holds++;
		return 0;
	}
	for (;;) {
		struct timespec ts;
		int64_t now;
		if (flock(k->fd, op) == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK)
			return COORD_ESYS;
		/* Someone outside the broker's view holds the file, or a holder
		 * that just died has not let go of it yet: the kernel closes
		 * its socket, which tells the broker, before its other files.
		 * The broker hears of it now, before a return that leaves a
		 * pending request waiting (coord_pending_wait(p, 0) in an event
		 * loop polls here without sleeping). */
		coord__kernel_wait_tell(c, g, told, 1);
		now = coord__now_ms();
		if (deadline_ms >= 0 && now >= deadline_ms)
			return waited ? COORD_ETIMEDOUT : COORD_EBUSY;
		/* There is nothing to wait on but time: back off from 50 us, so
		 * that a dying holder costs a moment, up to 50 ms. */
		if (deadline_ms >= 0 && (deadline_ms - now) * 1000 < delay_us)
			delay_us = (deadline_ms - now) * 1000;
		ts.tv_sec = (time_t)(delay_us / 1000000);
		ts.tv_nsec = (long)(delay_us % 1000000) * 1000;
		nanosleep(&ts, NULL);
		waited = 1;
		delay_us = delay_us * 2 > 50000 ? 50000 : delay_us * 2;
	}
	coord__kernel_wait_tell(c, g, told, 0);
	k->holds = 1;
	return 0;
}

/* Drops one lease's use of k's flock (c->lock held). */
static void coord__kernel_unlock(struct coord__kfile *k)
{
	if (--k->holds == 0)
		flock(k->fd, LOCK_UN);
}

/* Closes every kernel-lock file of c (coord_disconnect(), c->lock held). */
static void coord__kfiles_close(coord_t *c)
{
	while (c->kfiles) {
		struct coord__kfile *k = c->kfiles;
		c->kfiles = k->next;
		if (k->holds > 0 && !k->unlocked)
			flock(k->fd, LOCK_UN); /* what closing did, without closing */
		k->holds = 0;
		pthread_mutex_lock(&coord__spares_lock);
		k->next = coord__spares;
		coord__spares = k;
		pthread_mutex_unlock(&coord__spares_lock);
	}
	free(c->kfile_index);
	c->kfile_index = NULL;
	c->kfile_cap = c->kfile_count = 0;
	c->kfile_index_partial = 0;
}

/* ------------------------------------------------------------------------ */
/* 8.10 Cached read grants                                                  */
/* ------------------------------------------------------------------------ */

/* docs/design.md, "Cached read leases", has the protocol and its proof.
 * A read lease acquired through a resource handle is, at its release,
 * kept as the handle's cached grant (RELEASE{COORD_RELEASE_CACHE}): still
 * held by the broker, bound to an entry of the connection's cache page,
 * and its kernel lock moved to a descriptor of its own, which the broker
 * gets a copy of.  The handle's next read is then taken and dropped in
 * the page alone: entry.inside 0 -> 1, a look at the lease's slot (the
 * lease still there, not recalled), and at the release inside 1 -> 0 and
 * the same look.  No message, no system call: one lock of the lease
 * table (the handle's record), two sequentially consistent
 * read-modify-writes and a few loads.
 *
 * A grant the look finds recalled or taken back is settled under
 * c->lock at the next call that needs the broker anyway
 * (coord__cache_settle()): released if it is still held, forgotten if
 * the broker took it back (it unlocked the kernel lock first).  Its
 * descriptor stays with the handle and is locked again only for the
 * handle's next grant, which the broker answers after it has read the
 * release (one connection's requests are handled in order), so the
 * broker's copy can never unlock a later lock.  When the connection
 * ends, the broker's copies are closed before the descriptors go to the
 * spares (a round trip after the releases). */

/* The broker epoch word of the region whose slots start at `slots`. */
static const _Atomic uint64_t *coord__region_epoch(const coord_shm_slot *slots)
{
	const coord_shm_header *h =
	        (const coord_shm_header *)(const void *)((const char *)slots - COORD_SHM_HEADER_SIZE);
	return (const _Atomic uint64_t *)(const void *)&h->broker_epoch;
}

static int coord__cache_usable(const struct coord__cached *k)
{
	uint64_t a, f, b;
	if (k->orphan || atomic_load_explicit(k->epoch_word, memory_order_relaxed) != k->epoch)
		return 0;
	/* The lease, its flags, the lease again: the flags are this lease's
	 * only if it held the slot before and after (ids are never reused). */
	a = atomic_load_explicit(&k->slot->lease, memory_order_seq_cst);
	f = atomic_load_explicit(&k->slot->flags, memory_order_seq_cst);
	b = atomic_load_explicit(&k->slot->lease, memory_order_seq_cst);
	return a == k->lease && b == k->lease && !(f & COORD_SLOT_RECALL);
}

/* A read through r's cached grant.  Returns 0 with *out, 1 when the grant
 * cannot serve it (none, a read under it already, recalled, taken back:
 * ask the broker), or COORD_ELIMIT / COORD_ENOMEM (the lease table). */
static int coord__cache_enter(coord_resource_t *r, coord_lease_t **out)
{
	struct coord__cached *k = &r->cache;
	struct coord__lease *rec;
	struct coord__grant g;
	coord_t *c;
	int rc = 1;

	pthread_mutex_lock(&coord__table_lock);
	c = r->conn;
	if (!c || !k->lease || k->busy ||
	    k->fork_epoch != atomic_load_explicit(&coord__fork_epoch, memory_order_relaxed))
		goto out;
	/* Inside first, then the look at the slot, both sequentially
	 * consistent: the broker stores the recall, fences, then reads
	 * inside, so one of the two sees the other. */
	atomic_fetch_add_explicit(&k->e->inside, 1, memory_order_seq_cst);
	if (!coord__cache_usable(k))
		goto leave;
	rc = coord__lease_alloc_locked(&rec);
	if (rc < 0)
		goto leave;
	g = (struct coord__grant){ k->lease, k->token, &k->slot->lease, &k->slot->flags, k->secret,
		                   k->client_id };
	*out = coord__lease_publish_locked(rec, c, &g, COORD_READ, r, NULL, k->k ? k->k->fd : -1);
	rec->via = NULL;
	rec->cached_r = r;
	k->busy = 1;
	c->refs++; /* the page stays mapped while the read is under way */
	rc = 0;
	goto out;
leave:
	atomic_fetch_sub_explicit(&k->e->inside, 1, memory_order_seq_cst);
out:
	pthread_mutex_unlock(&coord__table_lock);
	return rc;
}

/* Ends the read under r's grant (coord__table_lock held).  Returns 1 if
 * the grant must be settled now (recalled, taken back, orphaned, or the
 * handle closing). */
static int coord__cache_exit_locked(coord_resource_t *r)
{
	struct coord__cached *k = &r->cache;
	atomic_fetch_sub_explicit(&k->e->inside, 1, memory_order_seq_cst);
	k->busy = 0;
	return k->closing || !coord__cache_usable(k);
}

/* Forgets r's grant (coord__table_lock held), and frees its entry in the
 * page if `write_page`: never in a forked child, whose page is its
 * parent's (coord__page_privatize()). */
static void coord__cache_forget_locked(coord_t *c, coord_resource_t *r, int write_page)
{
	struct coord__cached *k = &r->cache;
	if (write_page)
		atomic_store_explicit(&k->e->lease, 0, memory_order_release);
	if (c && k->page == c->cache)
		c->cache_used[k->entry] = NULL;
	k->lease = 0;
	k->e = k->page = NULL;
}

/* Frees r's entry and forgets the grant (coord__table_lock held). */
static void coord__cache_unbind_locked(coord_t *c, coord_resource_t *r)
{
	coord__cache_forget_locked(c, r, 1);
}

static int coord__send_fd(coord_t *c, const void *msg, size_t len, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { (void *)msg, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;
	if (fd >= 0) {
		struct cmsghdr *cm;
		memset(&ctl, 0, sizeof ctl);
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof ctl.buf;
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	}
	do
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len) {
		c->broken = 1;
		return COORD_EIO;
	}
	return 0;
}

/* Lets r's cached grant go if it must (recalled, taken back, orphaned) or
 * if `force`, unless a read under it is under way (whose release settles
 * it).  c->lock held.  Returns 1 if a RELEASE was sent, 0 if none was
 * needed, -1 if the connection is lost (the next reconnect gives the
 * lease back: it is not attached any more). */
static int coord__cache_settle(coord_t *c, coord_resource_t *r, int force)
{
	struct coord__cached *k = &r->cache;
	coord_msg_release m;
	uint64_t id;
	int held;

	pthread_mutex_lock(&coord__table_lock);
	id = k->lease;
	if (!id || k->busy || (!force && coord__cache_usable(k))) {
		pthread_mutex_unlock(&coord__table_lock);
		return 0;
	}
	/* Still in its slot: ours to release.  Gone: the broker took it back
	 * and unlocked the kernel lock before it cleared the slot. */
	held = atomic_load_explicit(&k->slot->lease, memory_order_acquire) == id;
	coord__cache_unbind_locked(c, r);
	if (k->orphan && k->quarantine)
		k->k = NULL; /* never closed (POSIX locks), never locked again */
	k->orphan = k->quarantine = 0;
	pthread_mutex_unlock(&coord__table_lock);
	if (!held)
		return 0;
	if (k->k)
		flock(k->k->fd, LOCK_UN); /* before the broker hears */
	if (coord__check(c) < 0)
		return -1;
	memset(&m, 0, sizeof m);
	m.h.type = COORD_MSG_RELEASE;
	m.h.seq = coord__next_seq(c);
	m.lease_id = id;
	m.flags = COORD_RELEASE_NO_REPLY;
	return coord__send(c, &m, sizeof m) == 0 ? 1 : -1;
}

/* Settles every cached grant of c on resource `name` (c->lock held), so
 * that a write request of c does not find its own idle read in the way.
 * It looks at the page's bound entries, not at every handle: a process
 * may keep thousands of handles open on one connection, and this runs
 * before each of its writes.  Grants on the pages of earlier connections
 * (after a reconnect) are in no entry: then every handle is looked at. */
static coord_resource_t *coord__cache_find_name_locked(coord_t *c, const char *name)
{
	coord_resource_t *r;
	if (!c->old_pages) {
		for (size_t i = 0; i < COORD_CACHE_ENTRIES; i++)
			if ((r = c->cache_used[i]) && r->cache.lease && !r->cache.busy &&
			    !strcmp(r->name, name))
				return r;
		return NULL;
	}
	for (r = c->resources; r; r = r->next)
		if (r->cache.lease && !r->cache.busy && !strcmp(r->name, name))
			return r;
	return NULL;
}

static void coord__cache_settle_name(coord_t *c, const char *name)
{
	for (;;) {
		coord_resource_t *r;
		pthread_mutex_lock(&coord__table_lock);
		r = coord__cache_find_name_locked(c, name);
		pthread_mutex_unlock(&coord__table_lock);
		if (!r)
			return;
		coord__cache_settle(c, r, 1);
	}
}

/* c's cache page (CACHE), mapped read-write (c->lock held).  Returns 0,
 * or a COORD_E* code with cache_state -1: this connection caches nothing. */
static int coord__cache_page(coord_t *c)
{
	struct stat st;
	void *map;
	int n, fd = -1;

	c->cache_state = -1;
	n = coord__request_fd(c, COORD_MSG_CACHE, &fd);
	if (n < 0)
		return n;
	map = fstat(fd, &st) == 0 && st.st_size >= COORD_CACHE_PAGE_SIZE
	              ? mmap(NULL, COORD_CACHE_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
	              : MAP_FAILED;
	close(fd);
	if (map == MAP_FAILED)
		return COORD_ESYS;
	c->cache = map;
	c->cache_state = 1;
	return 0;
}

/* The descriptor a grant of r on k's file keeps its shared lock on,
 * locked: the handle's own if it is open on that file, else a spare or a
 * new one.  NULL when there is none to be had, or the file is not on a
 * local filesystem (the broker will make calls on it). */
static struct coord__kfile *coord__cache_lockfd(struct coord__cached *ch, const struct coord__kfile *k)
{
	struct coord__kfile *own = ch->k;
	char path[64];
	struct statfs sf;
	struct stat st;
	int fd;

	if (own && (own->dev != k->dev || own->ino != k->ino)) {
		/* The file was replaced: the old descriptor may still have a
		 * copy in the broker; it is left alone for good. */
		own = ch->k = NULL;
	}
	if (!own)
		own = coord__spare_take(k->dev, k->ino);
	if (!own) {
		/* A second open file description of the same file. */
		snprintf(path, sizeof path, "/proc/self/fd/%d", k->fd);
		fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0 && errno == EACCES)
			fd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0 || !(own = calloc(1, sizeof *own))) {
			if (fd >= 0)
				close(fd); /* fstat() or calloc() failed: rare enough */
			return NULL;
		}
		own->fd = fd;
		own->dev = st.st_dev;
		own->ino = st.st_ino;
		snprintf(own->name, sizeof own->name, "%s", k->name);
		if (st.st_dev != k->dev || st.st_ino != k->ino) {
			/* Replaced meanwhile: a descriptor of a file is never
			 * closed (8.6), so it becomes a spare of that file. */
			pthread_mutex_lock(&coord__spares_lock);
			own->next = coord__spares;
			coord__spares = own;
			pthread_mutex_unlock(&coord__spares_lock);
			return NULL;
		}
	}
	ch->k = own;
	if (fstatfs(own->fd, &sf) < 0 || !coord_proto_fs_local((unsigned long)sf.f_type))
		return NULL;
	while (flock(own->fd, LOCK_SH | LOCK_NB) < 0) {
		if (errno != EINTR)
			return NULL;
	}
	return own;
}

/* How many of c's grants the broker holds a descriptor for (c->table_lock
 * held): bound in its page with a descriptor passed at the bind (the
 * handle's own, k), and still in their slot.  A grant the broker took
 * back on its own (recalled while idle, revoked) no longer counts: the
 * broker closed its copy before it cleared the slot. */
static unsigned coord__cache_fds_locked(const coord_t *c)
{
	unsigned n = 0;
	for (size_t i = 0; i < COORD_CACHE_ENTRIES; i++) {
		const coord_resource_t *r = c->cache_used[i];
		const struct coord__cached *k = r ? &r->cache : NULL;
		n += k && k->lease && k->k && k->page == c->cache &&
		     atomic_load_explicit(&k->slot->lease, memory_order_acquire) == k->lease;
	}
	return n;
}

/* At the release of read lease g, acquired through r: keeps it as r's
 * cached grant instead (c->lock held, g's record retired; k, its kernel
 * lock, still taken).  Returns 0 (kept: k's hold is given up here), or 1
 * when it is not kept (nothing changed; the caller releases it). */
static int coord__cache_bind(coord_t *c, coord_resource_t *r, const struct coord__grant *g,
                             struct coord__kfile *k)
{
	struct coord__cached *ch = &r->cache;
	struct coord__kfile *own = NULL;
	coord_msg_release m;
	unsigned entry;

	if (c->no_cache || c->cache_state < 0 || !g->flags || coord__check(c) < 0)
		return 1;
	if (atomic_load_explicit(g->word, memory_order_acquire) != g->id ||
	    (atomic_load_explicit(g->flags, memory_order_acquire) & COORD_SLOT_RECALL))
		return 1; /* taken back, or wanted by someone: release it */
	if (!c->cache && coord__cache_page(c) < 0)
		return 1;
	pthread_mutex_lock(&coord__table_lock);
	for (entry = 0; entry < COORD_CACHE_ENTRIES && c->cache_used[entry]; entry++)
		;
	/* The broker keeps at most COORD_CACHE_FDS_PER_CONN descriptors per
	 * connection and refuses the rest: asking would only cost it the
	 * check of one more descriptor, and this release a round of
	 * SCM_RIGHTS, for a grant it then releases anyway. */
	if (entry == COORD_CACHE_ENTRIES || ch->lease || ch->closing ||
	    (k && coord__cache_fds_locked(c) >= COORD_CACHE_FDS_PER_CONN)) {
		pthread_mutex_unlock(&coord__table_lock);
		return 1;
	}
	c->cache_used[entry] = r;
	pthread_mutex_unlock(&coord__table_lock);
	if (k && !(own = coord__cache_lockfd(ch, k)))
		goto undo;
	atomic_store_explicit(&c->cache[entry].inside, 0, memory_order_relaxed);
	atomic_store_explicit(&c->cache[entry].lease, g->id, memory_order_release);
	memset(&m, 0, sizeof m);
	m.h.type = COORD_MSG_RELEASE;
	m.h.seq = coord__next_seq(c);
	m.lease_id = g->id;
	m.flags = COORD_RELEASE_NO_REPLY | COORD_RELEASE_CACHE;
	m.entry = entry;
	if (coord__send_fd(c, &m, sizeof m, own ? own->fd : -1) < 0) {
		atomic_store_explicit(&c->cache[entry].lease, 0, memory_order_release);
		goto undo;
	}
	/* The own descriptor holds the shared lock now. */
	if (k)
		coord__kernel_unlock(k);
	pthread_mutex_lock(&coord__table_lock);
	*ch = (struct coord__cached){ g->id, g->token, g->secret, c->client_id,
		                      (const coord_shm_slot *)(const void *)g->word, &c->cache[entry],
		                      c->cache, entry,
		                      atomic_load_explicit(&coord__fork_epoch, memory_order_relaxed),
		                      coord__region_epoch(c->slots),
		                      atomic_load_explicit(coord__region_epoch(c->slots),
		                                           memory_order_relaxed),
		                      0, 0, 0, 0, own };
	pthread_mutex_unlock(&coord__table_lock);
	return 0;
undo:
	if (own)
		flock(own->fd, LOCK_UN);
	pthread_mutex_lock(&coord__table_lock);
	c->cache_used[entry] = NULL;
	pthread_mutex_unlock(&coord__table_lock);
	return 1;
}

/* One round trip on c (STATUS; c->lock held): afterwards the broker has
 * read every request sent before.  Returns 0 or a COORD_E* code. */
static int coord__sync(coord_t *c)
{
	coord_msg_hdr req = { COORD_MSG_STATUS, coord__next_seq(c) };
	int n = coord__check(c);
	if (n == 0)
		n = coord__send(c, &req, sizeof req);
	if (n == 0)
		n = coord__recv(c, req.seq, &c->in, c->connect_timeout_ms);
	return n < 0 ? n : 0;
}

/* r's grant goes for good (c->lock held): the handle closes.  Its
 * descriptor becomes a spare once the broker has closed its copy. */
static void coord__cache_finish(coord_t *c, coord_resource_t *r)
{
	struct coord__kfile *k;
	int sent = coord__cache_settle(c, r, 1), synced = !sent || (sent > 0 && coord__sync(c) == 0);
	pthread_mutex_lock(&coord__table_lock);
	k = synced && !r->cache.busy ? r->cache.k : NULL;
	r->cache.k = NULL;
	pthread_mutex_unlock(&coord__table_lock);
	if (k) {
		pthread_mutex_lock(&coord__spares_lock);
		k->next = coord__spares;
		coord__spares = k;
		pthread_mutex_unlock(&coord__spares_lock);
	}
}

/* The slow end of a read under r's grant: settles the grant, frees r if
 * it was closed during the read, and drops the read's reference on c. */
static void coord__cache_ended(coord_t *c, coord_resource_t *r)
{
	int closing;
	pthread_mutex_lock(&coord__table_lock);
	closing = r->cache.closing;
	pthread_mutex_unlock(&coord__table_lock);
	pthread_mutex_lock(&c->lock);
	if (closing)
		coord__cache_finish(c, r);
	else if (coord__cache_settle(c, r, 0) < 0 && !c->closed)
		c->backend->reconnect(c); /* whose "done" gives the lease back */
	pthread_mutex_unlock(&c->lock);
	if (closing)
		free(r);
	coord__conn_unref(c);
}

/* In a reconnect (c->lock held), after the leases: every cached grant is
 * attached to the new connection like a held lease, then orphaned: the
 * new connection has no page yet, so no new read goes under it, and it is
 * released once no read is under way (coord__cache_orphans_settle(), or
 * the read's release).  Its connection's id goes to done[] (room for
 * one per grant).  A broker that may still have a copy of its descriptor
 * (the same broker: the connection broke, the broker did not restart)
 * leaves that descriptor unusable for good.  Returns 0 or a COORD_E*
 * code from the broker. */
static int coord__cache_reattach_one(coord_t *c, coord_resource_t *r, uint64_t old_broker,
                                     uint64_t *done, size_t *ndone)
{
	uint64_t id, secret, client_id, slot;
	size_t j;
	int rc;
	pthread_mutex_lock(&coord__table_lock);
	id = r->cache.lease;
	secret = r->cache.secret;
	client_id = r->cache.client_id;
	pthread_mutex_unlock(&coord__table_lock);
	if (!id)
		return 0;
	rc = coord__attach(c, client_id, id, secret, &slot);
	if (rc < 0 && rc != COORD_ENOLEASE)
		return rc;
	pthread_mutex_lock(&coord__table_lock);
	if (r->cache.lease == id) {
		if (rc == 1) {
			r->cache.slot = &c->slots[slot];
			r->cache.client_id = c->client_id;
			for (struct coord__lease *rec = c->leases; rec; rec = rec->next) {
				if (rec->cached_r != r)
					continue;
				atomic_store_explicit(&rec->word, &c->slots[slot].lease,
				                      memory_order_release);
				atomic_store_explicit(&rec->flags, &c->slots[slot].flags,
				                      memory_order_release);
				rec->client_id = c->client_id;
			}
		}
		r->cache.orphan = 1;
		r->cache.quarantine = old_broker == c->broker_pid;
	}
	pthread_mutex_unlock(&coord__table_lock);
	for (j = 0; j < *ndone && done[j] != client_id; j++)
		;
	if (j == *ndone)
		done[(*ndone)++] = client_id;
	return 0;
}

static int coord__cache_reattach(coord_t *c, uint64_t old_broker, uint64_t *done, size_t *ndone)
{
	coord_resource_t *closing[COORD_CACHE_ENTRIES];
	size_t nclosing = 0;
	int rc;
	for (coord_resource_t *r = c->resources; r; r = r->next)
		if ((rc = coord__cache_reattach_one(c, r, old_broker, done, ndone)) < 0)
			return rc;
	/* A handle closed during a read under its grant is off c->resources
	 * but still holds the grant until that read's release: its grant is
	 * attached too, or the new broker would let it go (attach-unclaimed)
	 * and grant a writer beside the read.  One read at a time per handle,
	 * and one handle per entry of the page: at most that many. */
	pthread_mutex_lock(&coord__table_lock);
	for (struct coord__lease *rec = c->leases; rec; rec = rec->next)
		if (rec->cached_r && rec->cached_r->cache.closing && nclosing < COORD_CACHE_ENTRIES)
			closing[nclosing++] = rec->cached_r;
	pthread_mutex_unlock(&coord__table_lock);
	for (size_t i = 0; i < nclosing; i++)
		if ((rc = coord__cache_reattach_one(c, closing[i], old_broker, done, ndone)) < 0)
			return rc;
	/* The old page stays mapped for reads still under way in it. */
	if (c->cache) {
		struct coord__old_page *o = malloc(sizeof *o);
		if (o) {
			o->page = c->cache;
			o->next = c->old_pages;
			c->old_pages = o;
		} /* else it stays mapped for good */
	}
	pthread_mutex_lock(&coord__table_lock);
	c->cache = NULL;
	c->cache_state = 0;
	for (size_t i = 0; i < COORD_CACHE_ENTRIES; i++)
		c->cache_used[i] = NULL;
	pthread_mutex_unlock(&coord__table_lock);
	return 0;
}

/* After a reconnect (c->lock held): the orphaned grants no read is under
 * go now. */
static void coord__cache_orphans_settle(coord_t *c)
{
	for (coord_resource_t *r = c->resources; r; r = r->next)
		if (r->cache.orphan)
			coord__cache_settle(c, r, 1);
}

/* Before a request of c for r in `mode` goes to the broker (c->lock
 * held): r's grant, recalled or taken back, is settled, so the request
 * queues behind whoever recalled it; and before a write, every idle grant
 * of c on the resource goes, since the broker would refuse a write to the
 * holder of a read (COORD_EDEADLK). */
static void coord__cache_prepare(coord_t *c, coord_resource_t *r, int mode)
{
	if (mode == COORD_WRITE)
		coord__cache_settle_name(c, r->name);
	else
		coord__cache_settle(c, r, 0);
}

/* Before c's connection closes: releases every cached grant, then waits
 * for one answer (STATUS), after which the broker has read the releases
 * and closed its copies of their descriptors, which may then serve
 * other connections (c->lock held). */
static void coord__cache_end(coord_t *c)
{
	coord_msg_hdr req;
	int sent = 0;
	for (coord_resource_t *r = c->resources; r; r = r->next) {
		int busy;
		pthread_mutex_lock(&coord__table_lock);
		busy = r->cache.busy;
		if (busy) {
			/* Its read ends on a closed connection: the broker's copy
			 * may outlive it, so its descriptor is never reused. */
			r->cache.orphan = r->cache.quarantine = 1;
		}
		pthread_mutex_unlock(&coord__table_lock);
		if (!busy && coord__cache_settle(c, r, 1) > 0)
			sent = 1;
	}
	if (sent && coord__check(c) == 0) {
		req = (coord_msg_hdr){ COORD_MSG_STATUS, coord__next_seq(c) };
		if (coord__send(c, &req, sizeof req) < 0 ||
		    coord__recv(c, req.seq, &c->in, c->connect_timeout_ms) < 0)
			sent = -1;
	}
	/* The descriptors go with their handles' grants, or to the spares. */
	for (coord_resource_t *r = c->resources; r; r = r->next) {
		struct coord__kfile *k;
		pthread_mutex_lock(&coord__table_lock);
		k = r->cache.busy || sent < 0 ? NULL : r->cache.k;
		if (k)
			r->cache.k = NULL;
		pthread_mutex_unlock(&coord__table_lock);
		if (k) {
			pthread_mutex_lock(&coord__spares_lock);
			k->next = coord__spares;
			coord__spares = k;
			pthread_mutex_unlock(&coord__spares_lock);
		}
	}
}

/* ------------------------------------------------------------------------ */
/* 8.7 Connections                                                          */
/* ------------------------------------------------------------------------ */

COORD_API int coord_connect(coord_t **out, const coord_options_t *opts)
{
	coord_options_t none = { 0 };
	coord_t *c;
	int rc;

	if (!out)
		return COORD_EINVAL;
	if (!opts)
		opts = &none;
	c = calloc(1, sizeof *c);
	if (!c)
		return COORD_ENOMEM;
	c->fd = -1;
	c->recall_ep = c->recall_fd = c->wait_ep = -1;
	c->pid = getpid();
	c->refs = 1;
	c->backend = &coord__broker_backend;
	c->log = opts->log;
	c->log_userdata = opts->log_userdata;
	c->no_cache = opts->no_cache || (getenv("COORD_NO_CACHE") && !strcmp(getenv("COORD_NO_CACHE"), "1"));
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->recall_lock, NULL);
	rc = coord_proto_resolve_dir(opts->dir, c->dir, sizeof c->dir);
	if (rc < 0)
		goto fail;
	rc = c->backend->open(c, opts);
	if (rc < 0)
		goto fail;
	coord__conns_add(c);
	*out = c;
	return 0;
fail:
	c->backend->close(c);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->recall_lock);
	free(c);
	return rc;
}

/* Makes every lease handle of c stale and detaches its resource handles
 * (coord__table_lock held). */
static void coord__detach_locked(coord_t *c)
{
	coord_resource_t *r, *next;
	int mine = c->pid == getpid(); /* a child never writes the parent's page */
	while (c->leases) {
		struct coord__lease *rec = c->leases;
		r = rec->cached_r;
		coord__lease_retire_locked(rec);
		if (r) {
			/* A read under a cached grant, ended here: its release
			 * finds a stale handle. */
			if (mine)
				coord__cache_exit_locked(r);
			r->cache.busy = 0;
			c->refs--; /* the caller still holds one */
			if (r->cache.lease)
				coord__cache_forget_locked(c, r, mine);
			if (r->cache.closing)
				free(r);
		}
	}
	for (r = c->resources; r; r = next) {
		next = r->next;
		if (r->cache.lease) /* coord__cache_end() could not */
			coord__cache_forget_locked(c, r, mine);
		r->conn = NULL;
		r->next = r->prev = NULL;
	}
	c->resources = NULL;
}

COORD_API void coord_disconnect(coord_t *c)
{
	int mine, held;
	if (!c)
		return;
	mine = c->pid == getpid();
	coord__conns_remove(c);
	if (mine) /* waits for a request in progress on another thread */
		pthread_mutex_lock(&c->lock);
	/* Leases a restarted broker adopted stay held until this process
	 * takes them back or exits: take them back, so that closing the new
	 * connection gives them up. */
	if (mine && c->broken && !c->closed) {
		pthread_mutex_lock(&coord__table_lock);
		held = c->leases != NULL;
		pthread_mutex_unlock(&coord__table_lock);
		if (held)
			c->backend->reconnect(c);
	}
	if (mine)
		coord__cache_end(c);
	c->closed = 1;
	pthread_mutex_lock(&coord__table_lock);
	coord__detach_locked(c);
	pthread_mutex_unlock(&coord__table_lock);
	/* Kernel locks before the transport, so that the broker's next
	 * grantee finds the files unlocked.  A child leaves the parent's
	 * descriptors alone: its copies are the parent's locks. */
	if (mine)
		coord__kfiles_close(c);
	c->backend->close(c);
	if (mine)
		pthread_mutex_lock(&c->recall_lock);
	if (c->recall_fd >= 0)
		close(c->recall_fd);
	if (c->recall_ep >= 0)
		close(c->recall_ep);
	c->recall_fd = c->recall_ep = -1;
	if (c->wait_ep >= 0)
		close(c->wait_ep);
	c->wait_ep = -1;
	if (mine) {
		pthread_mutex_unlock(&c->recall_lock);
		pthread_mutex_unlock(&c->lock);
	}
	coord__conn_unref(c);
}

COORD_API const char *coord_dir(const coord_t *c)
{
	return c ? c->dir : NULL;
}

/* The recall descriptor.  coord_recall_fd() returns an epoll set, made
 * once per connection, holding the backend's recall pipe: the caller's
 * descriptor stays the same while the pipe behind it is replaced at each
 * reconnect (a pipe belongs to one broker connection).  The pipe is
 * swapped under recall_lock, removed from the set before it is closed
 * (a forked child's copy would keep it in the set otherwise). */

/* Puts a new recall pipe into c's epoll set in place of the old one
 * (c->lock held).  Returns 0 (also when no descriptor was asked for) or
 * a COORD_E* code. */
static int coord__recall_renew(coord_t *c)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int fd = -1, rc;
	pthread_mutex_lock(&c->recall_lock);
	rc = c->recall_ep < 0 ? 1 : 0;
	pthread_mutex_unlock(&c->recall_lock);
	if (rc)
		return 0;
	rc = c->backend->recall_pipe(c, &fd);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&c->recall_lock);
	if (c->recall_fd >= 0) {
		epoll_ctl(c->recall_ep, EPOLL_CTL_DEL, c->recall_fd, NULL);
		close(c->recall_fd);
	}
	c->recall_fd = fd;
	ev.data.fd = fd;
	if (epoll_ctl(c->recall_ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		rc = COORD_ESYS;
	pthread_mutex_unlock(&c->recall_lock);
	return rc;
}

COORD_API int coord_recall_fd(coord_t *c)
{
	int rc, ep;
	if (!c)
		return COORD_EINVAL;
	rc = coord__lock(c);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&c->recall_lock);
	ep = c->recall_ep;
	pthread_mutex_unlock(&c->recall_lock);
	if (ep >= 0)
		goto out;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		rc = COORD_ESYS;
		goto out;
	}
	pthread_mutex_lock(&c->recall_lock);
	c->recall_ep = ep;
	pthread_mutex_unlock(&c->recall_lock);
	rc = coord__recall_renew(c);
	if (coord__retry(c, rc)) /* the reconnect renewed it */
		rc = 0;
	if (rc < 0) {
		pthread_mutex_lock(&c->recall_lock);
		if (c->recall_fd >= 0)
			close(c->recall_fd);
		close(ep);
		c->recall_fd = c->recall_ep = -1;
		pthread_mutex_unlock(&c->recall_lock);
	}
out:
	pthread_mutex_unlock(&c->lock);
	return rc < 0 ? rc : ep;
}

COORD_API int coord_recall_clear(coord_t *c)
{
	char buf[64];
	ssize_t n = -1;
	int gone = 0, count = 0, rc = 0;
	if (!c)
		return COORD_EINVAL;
	if (c->pid != getpid())
		return COORD_EFORKED;
	pthread_mutex_lock(&c->recall_lock);
	if (c->recall_fd >= 0) {
		do
			n = read(c->recall_fd, buf, sizeof buf);
		while (n > 0 || (n < 0 && errno == EINTR));
		if (n == 0) {
			/* The broker's end is closed: the connection is gone.
			 * Take the pipe out, so the set stops waking. */
			epoll_ctl(c->recall_ep, EPOLL_CTL_DEL, c->recall_fd, NULL);
			close(c->recall_fd);
			c->recall_fd = -1;
			gone = 1;
		}
	}
	pthread_mutex_unlock(&c->recall_lock);
	/* Reconnect now, so recalls wake the set again, unless a call on
	 * another thread holds the connection: that one reconnects. */
	if (gone && pthread_mutex_trylock(&c->lock) == 0) {
		if (!c->closed) {
			c->broken = 1;
			rc = c->backend->reconnect(c);
		}
		pthread_mutex_unlock(&c->lock);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&coord__table_lock);
	for (const struct coord__lease *rec = c->leases; rec; rec = rec->next) {
		const _Atomic uint64_t *flags = atomic_load_explicit(&rec->flags, memory_order_acquire);
		if (flags && (atomic_load_explicit(flags, memory_order_acquire) & COORD_SLOT_RECALL))
			count++;
	}
	pthread_mutex_unlock(&coord__table_lock);
	return count;
}

/* ------------------------------------------------------------------------ */
/* 8.8 Resources and leases                                                 */
/* ------------------------------------------------------------------------ */

/* One instance per file: if the directory of the canonical path `canon`
 * has a .coord-instance marker naming another instance directory than
 * c's, both canonicalised, returns COORD_EINSTANCE (and logs both); an
 * unreadable marker gives COORD_EPERM.  Returns `len` otherwise.  Without
 * a marker it costs one failed open(). */
static int coord__check_marker(const coord_t *c, const char *canon, int len)
{
	char named[PATH_MAX], named_real[PATH_MAX], mine[PATH_MAX];
	int rc = coord__read_marker(canon, coord__dir_len(canon, strrchr(canon, '/')), named,
	                            sizeof named);
	if (rc == COORD_ENOENT)
		return len;
	if (rc == COORD_EPERM || rc == COORD_EINVAL) {
		coord__log(c, COORD_LOG_ERROR, "%s: cannot read the %s beside it", canon,
		           COORD_MARKER_NAME);
		return COORD_EPERM;
	}
	if (!realpath(named, named_real))
		snprintf(named_real, sizeof named_real, "%s", named);
	if (!realpath(c->dir, mine))
		snprintf(mine, sizeof mine, "%s", c->dir);
	if (rc > 0 && !strcmp(named_real, mine))
		return len;
	coord__log(c, COORD_LOG_ERROR,
	           "%s is coordinated by the instance %s (its directory's %s), not by this "
	           "connection's %s: set COORD_DIR=%s",
	           canon, named, COORD_MARKER_NAME, c->dir, named);
	return COORD_EINSTANCE;
}

COORD_API int coord_resource_open(coord_t *c, const char *name, coord_resource_t **out)
{
	char canon[COORD_NAME_MAX + 1];
	coord_resource_t *r;
	int len;

	if (!c || !name || !out)
		return COORD_EINVAL;
	if (c->pid != getpid())
		return COORD_EFORKED;
	len = coord_canonicalize(name, canon, sizeof canon);
	if (len < 0)
		return len;
	if (canon[0] == '/' && (len = coord__check_marker(c, canon, len)) < 0)
		return len;
	r = calloc(1, sizeof *r);
	if (!r)
		return COORD_ENOMEM;
	r->name_len = (size_t)len;
	memcpy(r->name, canon, r->name_len + 1);
	r->req.m.h.type = COORD_MSG_ACQUIRE;
	r->req.m.name_len = (uint16_t)len;
	memcpy(r->req.raw + sizeof r->req.m, canon, r->name_len);

	pthread_mutex_lock(&coord__table_lock);
	r->conn = c;
	r->next = c->resources;
	if (c->resources)
		c->resources->prev = r;
	c->resources = r;
	pthread_mutex_unlock(&coord__table_lock);
	*out = r;
	return 0;
}

/* A handle is unlinked under its connection's lock too, so that calls
 * holding it (coord__cache_end(), coord__cache_settle_name()) may use the
 * handles they find. */
COORD_API void coord_resource_close(coord_resource_t *r)
{
	coord_t *c, *locked = NULL;
	if (!r)
		return;
	pthread_mutex_lock(&coord__table_lock);
	c = r->conn;
	if (c && c->pid == getpid()) {
		c->refs++;
		locked = c;
	}
	pthread_mutex_unlock(&coord__table_lock);
	if (locked)
		pthread_mutex_lock(&locked->lock);
	pthread_mutex_lock(&coord__table_lock);
	c = r->conn; /* NULL if coord_disconnect() came first */
	if (c) {
		if (r->prev)
			r->prev->next = r->next;
		else
			c->resources = r->next;
		if (r->next)
			r->next->prev = r->prev;
		r->next = r->prev = NULL;
		/* Its leases stay held, but none becomes its cached grant. */
		for (struct coord__lease *rec = c->leases; rec; rec = rec->next)
			if (rec->via == r)
				rec->via = NULL;
	}
	if (r->cache.busy) {
		/* A read under its cached grant is under way: its release
		 * frees the handle (coord__cache_ended()). */
		r->cache.closing = 1;
		r = NULL;
	}
	/* A forked child's copy of a parent's grant: forgotten, the page
	 * left alone (coord__page_privatize()). */
	if (r && c && !locked && r->cache.lease)
		coord__cache_forget_locked(c, r, 0);
	pthread_mutex_unlock(&coord__table_lock);
	if (r && c && locked && r->cache.lease)
		coord__cache_finish(c, r);
	if (locked) {
		pthread_mutex_unlock(&locked->lock);
		coord__conn_unref(locked);
	}
	free(r);
}

COORD_API const char *coord_resource_name(const coord_resource_t *r)
{
	return r ? r->name : NULL;
}

/* Asks c's backend for a lease on r, then takes the file's kernel lock
 * within what is left of the timeout (c->lock held).  The record is taken
 * before asking, so that a full table can never leave a granted lease
 * without a handle; a kernel lock that cannot be had in time gives the
 * granted lease back. */
static int coord__acquire_locked(coord_t *c, coord_resource_t *r, int mode, int timeout_ms,
                                 const char *label, coord_lease_t **out)
{
	int64_t deadline = timeout_ms < 0 ? -1 : coord__now_ms() + timeout_ms;
	struct coord__kfile *k = NULL;
	struct coord__lease *rec;
	struct coord__grant g;
	int rc;

	if (c->pend)
		return COORD_EBUSYCONN; /* one waiting request per connection */
	coord__cache_prepare(c, r, mode);
	pthread_mutex_lock(&coord__table_lock);
	rc = coord__lease_alloc_locked(&rec);
	pthread_mutex_unlock(&coord__table_lock);
	if (rc < 0)
		return rc;
	rc = coord__kfile_get(c, r->name, &k);
	if (rc < 0)
		goto fail;
	/* A broker restart while the request waits loses its place in the
	 * queue, not the request: it is sent again, with what is left of
	 * its timeout, to the broker that comes next. */
	for (int tries = 0;; tries++) {
		rc = c->backend->acquire(c, r, mode, timeout_ms, label, &g);
		if (rc != COORD_EIO || tries == 3 || !coord__retry(c, rc))
			break;
		if (deadline >= 0) {
			int64_t left = deadline - coord__now_ms();
			timeout_ms = left < 0 ? 0 : (int)left;
		}
	}
	if (rc < 0)
		goto fail;
	if (k) {
		int told = 0;
		rc = coord__kernel_lock(c, &g, k, mode, deadline, &told);
		if (rc < 0) {
			c->backend->release(c, &g);
			goto fail;
		}
	}
	pthread_mutex_lock(&coord__table_lock);
	*out = coord__lease_publish_locked(rec, c, &g, mode, r, k, k ? k->fd : -1);
	pthread_mutex_unlock(&coord__table_lock);
	return 0;
fail:
	pthread_mutex_lock(&coord__table_lock);
	coord__lease_put_locked(rec);
	pthread_mutex_unlock(&coord__table_lock);
	return rc;
}

COORD_API int coord_resource_acquire(coord_resource_t *r, int mode, int timeout_ms,
                                     const char *label, coord_lease_t **out)
{
	coord_t *c;
	int rc;

	if (!r || !out || (mode != COORD_READ && mode != COORD_WRITE) || timeout_ms < -1)
		return COORD_EINVAL;
	if (mode == COORD_READ) {
		rc = coord__cache_enter(r, out);
		if (rc <= 0)
			return rc;
	}
	pthread_mutex_lock(&coord__table_lock);
	c = r->conn;
	if (c)
		c->refs++;
	pthread_mutex_unlock(&coord__table_lock);
	if (!c)
		return COORD_EIO;
	rc = coord__lock(c);
	if (rc == 0) {
		rc = coord__acquire_locked(c, r, mode, timeout_ms, label, out);
		pthread_mutex_unlock(&c->lock);
	}
	coord__conn_unref(c);
	return rc;
}

COORD_API int coord_resource_read_cached(coord_resource_t *r, coord_lease_t **out)
{
	int rc;
	if (!r || !out)
		return COORD_EINVAL;
	rc = coord__cache_enter(r, out);
	return rc < 0 ? rc : !rc;
}

COORD_API int coord_acquire(coord_t *c, const char *resource, int mode, int timeout_ms,
                            const char *label, coord_lease_t **out)
{
	coord_resource_t *r;
	int rc;

	if (!c || !resource || !out || (mode != COORD_READ && mode != COORD_WRITE) || timeout_ms < -1)
		return COORD_EINVAL;
	rc = coord_resource_open(c, resource, &r);
	if (rc < 0)
		return rc;
	r->nocache = 1; /* closed at once: a grant cached in it would go at once */
	rc = coord_resource_acquire(r, mode, timeout_ms, label, out);
	coord_resource_close(r);
	return rc;
}

/* Waiting without blocking (coord_acquire_start()).  A pending request
 * holds a reference to its connection and, like a blocking acquire, a
 * lease record taken at the start; it is c->pend until it ends, so that
 * another call reading the socket keeps its answer (8.4), and a second
 * acquire on c gets COORD_EBUSYCONN.  Each step runs under c->lock, held
 * only for the step: releases and admin calls on c go on meanwhile.  An
 * ended request keeps its handle, with its result, until
 * coord_pending_cancel() frees it: a caller that lost the return value
 * (a Python signal handler raising just after the call) can still end it
 * exactly. */

/* Ends p (c->lock held): gives back what it took, unless published. */
static void coord__pending_end(struct coord_pending *p, int published)
{
	coord_t *c = p->conn;
	if (!published) {
		pthread_mutex_lock(&coord__table_lock);
		coord__lease_put_locked(p->rec);
		pthread_mutex_unlock(&coord__table_lock);
	}
	if (c->pend == p)
		c->pend = NULL;
}

/* Records how p ended (c->lock held) and returns it. */
static int coord__pending_result(struct coord_pending *p, int rc, coord_lease_t *lease)
{
	p->done = 1;
	p->result = rc;
	p->lease = lease;
	return rc;
}

/* Sends p's request (again, after a reconnect, with what is left of its
 * timeout). */
static int coord__pending_send(struct coord_pending *p)
{
	coord_t *c = p->conn;
	int timeout_ms = -1;
	if (p->deadline >= 0) {
		int64_t left = p->deadline - coord__now_ms();
		timeout_ms = left < 0 ? 0 : (int)left;
	}
	p->answer_len = 0;
	p->conn_gen = c->gen;
	return c->backend->start(c, p->r, p->mode, timeout_ms, p->label[0] ? p->label : NULL,
	                         &p->ticket);
}

/* One step of p, waiting up to wait_ms (c->lock held): 1 with *out
 * (granted, p ended), 0 (still pending), or a COORD_E* code (p ended). */
static int coord__pending_step(struct coord_pending *p, int wait_ms, coord_lease_t **out)
{
	coord_t *c = p->conn;
	int64_t until = wait_ms < 0 ? -1 : coord__now_ms() + wait_ms;
	int rc;

	for (int tries = 0; !p->granted;) {
		/* A reconnect (by this call or another one) lost the request
		 * with the old connection: it is sent again. */
		rc = p->conn_gen == c->gen ? c->backend->poll(c, p->ticket, wait_ms, &p->g) : COORD_EIO;
		if (rc == COORD_EIO && tries++ < 3 &&
		    (p->conn_gen != c->gen || coord__retry(c, rc))) {
			rc = coord__pending_send(p);
			if (rc == 0)
				continue;
		}
		if (rc == 0)
			return 0;
		if (rc < 0)
			goto fail;
		p->granted = 1;
		p->kernel_told = 0; /* told to this broker, of this grant */
	}
	if (p->k) {
		int64_t limit = until;
		if (p->deadline >= 0 && (limit < 0 || p->deadline < limit))
			limit = p->deadline;
		rc = coord__kernel_lock(c, &p->g, p->k, p->mode, limit, &p->kernel_told);
		if ((rc == COORD_ETIMEDOUT || rc == COORD_EBUSY) &&
		    !(p->deadline >= 0 && coord__now_ms() >= p->deadline))
			return 0; /* an outside holder: the request's time is not up */
		if (rc < 0) {
			c->backend->release(c, &p->g);
			goto fail;
		}
	}
	pthread_mutex_lock(&coord__table_lock);
	*out = coord__lease_publish_locked(p->rec, c, &p->g, p->mode, p->r, p->k,
	                                   p->k ? p->k->fd : -1);
	pthread_mutex_unlock(&coord__table_lock);
	coord__pending_end(p, 1);
	return 1;
fail:
	coord__pending_end(p, 0);
	return rc;
}

COORD_API int coord_acquire_start(coord_resource_t *r, int mode, int timeout_ms,
                                  const char *label, coord_lease_t **lease,
                                  coord_pending_t **pending)
{
	struct coord_pending *p;
	coord_t *c;
	int rc;

	if (!r || !lease || !pending || (mode != COORD_READ && mode != COORD_WRITE) ||
	    timeout_ms < -1)
		return COORD_EINVAL;
	if (mode == COORD_READ) {
		/* Under the handle's cached grant: granted at once (8.10). */
		rc = coord__cache_enter(r, lease);
		if (rc <= 0)
			return rc < 0 ? rc : 1;
	}
	p = calloc(1, sizeof *p);
	if (!p)
		return COORD_ENOMEM;
	pthread_mutex_lock(&coord__table_lock);
	c = r->conn;
	if (c)
		c->refs++;
	pthread_mutex_unlock(&coord__table_lock);
	if (!c) {
		free(p);
		return COORD_EIO;
	}
	rc = coord__lock(c);
	if (rc < 0)
		goto out;
	p->conn = c;
	p->r = r;
	p->mode = mode;
	p->deadline = timeout_ms < 0 ? -1 : coord__now_ms() + timeout_ms;
	if (label)
		snprintf(p->label, sizeof p->label, "%s", label);
	rc = c->pend ? COORD_EBUSYCONN : 0;
	if (rc == 0)
		coord__cache_prepare(c, r, mode);
	if (rc == 0) {
		pthread_mutex_lock(&coord__table_lock);
		rc = coord__lease_alloc_locked(&p->rec);
		pthread_mutex_unlock(&coord__table_lock);
	}
	if (rc == 0) {
		rc = coord__kfile_get(c, r->name, &p->k);
		if (rc < 0)
			coord__pending_end(p, 0);
	}
	if (rc == 0) {
		c->pend = p;
		rc = coord__pending_send(p);
		if (coord__retry(c, rc))
			rc = coord__pending_send(p);
		rc = rc < 0 ? (coord__pending_end(p, 0), rc) : coord__pending_step(p, 0, lease);
	}
	pthread_mutex_unlock(&c->lock);
	if (rc == 0) {
		*pending = p;
		return 0;
	}
out:
	coord__conn_unref(c);
	free(p);
	return rc;
}

COORD_API int coord_pending_fd(coord_pending_t *p)
{
	coord_t *c = p ? p->conn : NULL;
	struct epoll_event ev = { .events = EPOLLIN };
	int rc;
	if (!c)
		return COORD_EINVAL;
	if (c->pid != getpid())
		return COORD_EFORKED;
	pthread_mutex_lock(&c->lock);
	rc = c->wait_ep;
	if (rc < 0 && !c->closed) {
		/* An epoll set over the socket keeps the caller's descriptor
		 * the same when a reconnect replaces the socket. */
		rc = epoll_create1(EPOLL_CLOEXEC);
		ev.data.fd = c->fd;
		if (rc >= 0 && c->fd >= 0 && epoll_ctl(rc, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
			close(rc);
			rc = -1;
		}
		if (rc < 0)
			rc = COORD_ESYS;
		else
			c->wait_ep = rc;
	} else if (rc < 0) {
		rc = COORD_EIO;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

COORD_API int coord_pending_wait(coord_pending_t *p, int wait_ms, coord_lease_t **lease)
{
	coord_t *c = p ? p->conn : NULL;
	coord_lease_t *got = NULL;
	int rc;
	if (!c || !lease || wait_ms < -1)
		return COORD_EINVAL;
	if (c->pid != getpid())
		return COORD_EFORKED;
	pthread_mutex_lock(&c->lock);
	if (p->done) {
		rc = p->result;
		got = p->lease;
	} else if (c->closed) {
		coord__pending_end(p, 0);
		rc = coord__pending_result(p, COORD_EIO, NULL);
	} else {
		rc = coord__pending_step(p, wait_ms, &got);
		if (rc != 0)
			coord__pending_result(p, rc, got);
	}
	pthread_mutex_unlock(&c->lock);
	if (rc == 1)
		*lease = got;
	return rc;
}

COORD_API int coord_pending_cancel(coord_pending_t *p)
{
	coord_t *c = p ? p->conn : NULL;
	int rc = 0;
	if (!c)
		return COORD_EINVAL;
	if (c->pid != getpid())
		return COORD_EFORKED; /* the parent's request: left alone */
	pthread_mutex_lock(&c->lock);
	if (p->done) {
		/* ended already: a granted lease stays the caller's */
	} else if (!c->closed && !c->broken && p->conn_gen == c->gen) {
		if (!p->granted) {
			rc = c->backend->cancel(c, p->ticket, &p->g);
			p->granted = rc == 1;
			rc = rc < 0 ? rc : 0;
		}
		if (p->granted) /* granted meanwhile: give it back at once */
			rc = c->backend->release(c, &p->g);
	}
	if (!p->done)
		coord__pending_end(p, 0);
	pthread_mutex_unlock(&c->lock);
	coord__conn_unref(c);
	free(p);
	return rc == COORD_EIO ? 0 : rc; /* a lost connection gave it up anyway */
}

COORD_API int coord_release(coord_lease_t *l)
{
	struct coord__kfile *k = NULL;
	struct coord__lease *rec;
	struct coord__grant g;
	coord_resource_t *via = NULL;
	uintptr_t gen;
	coord_t *c;
	int rc, lost = 0;

	if (!l)
		return COORD_EINVAL;
	pthread_mutex_lock(&coord__table_lock);
	rec = coord__lease_find(l, &gen);
	c = rec ? rec->conn : NULL;
	/* A lease granted before a fork() (its epoch, not getpid(), which is
	 * a system call) is the parent's: stale in this child from now on. */
	if (c && atomic_load_explicit(&rec->fork_epoch, memory_order_relaxed) !=
	                 atomic_load_explicit(&coord__fork_epoch, memory_order_relaxed)) {
		coord__lease_retire_locked(rec);
		pthread_mutex_unlock(&coord__table_lock);
		return COORD_EFORKED;
	}
	if (c && rec->cached_r) {
		/* A read under a cached grant ends in the page (8.10). */
		coord_resource_t *r = rec->cached_r;
		coord__lease_retire_locked(rec);
		if (!coord__cache_exit_locked(r) && c->refs > 1) {
			c->refs--; /* the read's, from coord__cache_enter() */
			pthread_mutex_unlock(&coord__table_lock);
			return 0;
		}
		pthread_mutex_unlock(&coord__table_lock);
		coord__cache_ended(c, r);
		return 0;
	}
	if (c)
		c->refs++;
	pthread_mutex_unlock(&coord__table_lock);
	if (!c)
		return COORD_ENOLEASE;

	/* Look again once the connection is ours: a coord_disconnect() or a
	 * second release in another thread may have come first. */
	pthread_mutex_lock(&c->lock);
	pthread_mutex_lock(&coord__table_lock);
	rec = coord__lease_find(l, &gen);
	if (rec) {
		g.id = atomic_load_explicit(&rec->id, memory_order_relaxed);
		g.token = atomic_load_explicit(&rec->token, memory_order_relaxed);
		g.word = atomic_load_explicit(&rec->word, memory_order_relaxed);
		g.flags = atomic_load_explicit(&rec->flags, memory_order_relaxed);
		g.secret = rec->secret;
		g.client_id = rec->client_id;
		k = rec->kfile;
		lost = rec->lost;
		via = rec->via;
		coord__lease_retire_locked(rec);
	}
	pthread_mutex_unlock(&coord__table_lock);
	/* A read through a handle may stay as its cached grant (8.10). */
	if (rec && via && !lost && coord__cache_bind(c, via, &g, k) == 0) {
		pthread_mutex_unlock(&c->lock);
		coord__conn_unref(c);
		return 0;
	}
	/* The kernel lock goes first: once the broker hears of the release it
	 * grants the next holder, who then finds the file unlocked. */
	if (k)
		coord__kernel_unlock(k);
	rc = !rec ? COORD_ENOLEASE : lost ? COORD_ELOST : c->backend->release(c, &g);
	pthread_mutex_unlock(&c->lock);
	coord__conn_unref(c);
	return rc;
}

COORD_API uint64_t coord_lease_token(const coord_lease_t *l)
{
	uintptr_t gen;
	const struct coord__lease *rec = coord__lease_find(l, &gen);
	uint64_t v = rec ? atomic_load_explicit(&rec->token, memory_order_acquire) : 0;
	return rec && coord__lease_unchanged(rec, gen) ? v : 0;
}

COORD_API uint64_t coord_lease_id(const coord_lease_t *l)
{
	uintptr_t gen;
	const struct coord__lease *rec = coord__lease_find(l, &gen);
	uint64_t v = rec ? atomic_load_explicit(&rec->id, memory_order_acquire) : 0;
	return rec && coord__lease_unchanged(rec, gen) ? v : 0;
}

COORD_API int coord_lease_mode(const coord_lease_t *l)
{
	uintptr_t gen;
	const struct coord__lease *rec = coord__lease_find(l, &gen);
	int v = rec ? atomic_load_explicit(&rec->mode, memory_order_acquire) : 0;
	return rec && coord__lease_unchanged(rec, gen) ? v : 0;
}

/* The name lives in the record, which is never freed: after a release
 * the pointer still points at readable memory, though a later lease may
 * reuse it. */
COORD_API const char *coord_lease_resource(const coord_lease_t *l)
{
	uintptr_t gen;
	const struct coord__lease *rec = coord__lease_find(l, &gen);
	return rec ? rec->resource : NULL;
}

/* The flags are this lease's only if it still holds its slot after they
 * were read: coord_lease_valid() checks that last (and answers 0 for a
 * stale handle and in a forked child). */
COORD_API int coord_lease_recalled(const coord_lease_t *l)
{
	uintptr_t gen;
	const struct coord__lease *rec = coord__lease_find(l, &gen);
	const _Atomic uint64_t *flags = rec ? atomic_load_explicit(&rec->flags, memory_order_acquire)
	                                    : NULL;
	uint64_t bits = flags ? atomic_load_explicit(flags, memory_order_acquire) : 0;
	return (bits & COORD_SLOT_RECALL) && coord_lease_valid(l);
}

COORD_API int coord_lease_fd(const coord_lease_t *l)
{
	uintptr_t gen;
	const struct coord__lease *rec = coord__lease_find(l, &gen);
	int v = rec ? atomic_load_explicit(&rec->kfd, memory_order_acquire) : -1;
	return rec && coord__lease_unchanged(rec, gen) ? v : -1;
}

/* Atomic loads only: the generation, the lease's word (the broker's slot
 * in the shared region, mapped until exit), the generation again. */
COORD_API int coord_lease_valid(const coord_lease_t *l)
{
	uintptr_t gen;
	const struct coord__lease *rec = coord__lease_find(l, &gen);
	const _Atomic uint64_t *word;
	uint64_t id, held;
	unsigned epoch;
	if (!rec)
		return 0;
	word = atomic_load_explicit(&rec->word, memory_order_acquire);
	id = atomic_load_explicit(&rec->id, memory_order_acquire);
	epoch = atomic_load_explicit(&rec->fork_epoch, memory_order_acquire);
	held = word ? atomic_load_explicit(word, memory_order_acquire) : 0;
	return coord__lease_unchanged(rec, gen) && held == id &&
	       epoch == atomic_load_explicit(&coord__fork_epoch, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* 8.9 Administration                                                       */
/* ------------------------------------------------------------------------ */

/* Copies a text of `len` bytes that follows a message's fixed part and
 * terminates it; `at` is advanced past it. */
static void coord__take_text(char *dst, const char **at, size_t len)
{
	memcpy(dst, *at, len);
	dst[len] = 0;
	*at += len;
}

/* The one decoder of LEASE_INFO, for coord_list() and coord_show().
 * Checks every length and value the broker sent.  Returns 0 or
 * COORD_EPROTO. */
static int coord__decode_lease_info(const union coord__msg *m, size_t n, coord_lease_info_t *out)
{
	const coord_msg_lease_info *i = &m->lease_info;
	const char *at = m->raw + sizeof *i;
	if (n < sizeof *i || n != sizeof *i + (size_t)i->name_len + i->comm_len + i->label_len ||
	    i->name_len > COORD_NAME_MAX || i->comm_len > COORD_COMMAND_NAME_MAX ||
	    i->label_len > COORD_LABEL_MAX ||
	    (i->kind != COORD_INFO_HOLDER && i->kind != COORD_INFO_WAITER) ||
	    (i->mode != COORD_READ && i->mode != COORD_WRITE))
		return COORD_EPROTO;
	out->waiting = i->kind == COORD_INFO_WAITER;
	out->mode = (int)i->mode;
	out->lease_id = i->lease_id;
	out->token = i->token;
	out->pid = i->pid;
	out->uid = i->uid;
	out->age_ms = i->age_ms;
	out->recalled_ms = i->kind == COORD_INFO_HOLDER && i->recalled_ms >= 0 ? i->recalled_ms : -1;
	out->adopted = i->kind == COORD_INFO_HOLDER && (i->flags & COORD_INFO_ADOPTED);
	out->cached = i->kind != COORD_INFO_HOLDER || !(i->flags & COORD_INFO_CACHED) ? 0
	              : i->flags & COORD_INFO_IN_USE                                ? COORD_CACHED_IN_USE
	                                                                            : COORD_CACHED_IDLE;
	out->kernel_wait = i->kind != COORD_INFO_HOLDER                ? 0
	                   : i->flags & COORD_INFO_KERNEL_WAIT ? COORD_KERNEL_WAITING
	                   : i->flags & COORD_INFO_KERNEL_TOLD ? COORD_KERNEL_NOT_WAITING
	                                                       : 0;
	coord__take_text(out->resource, &at, i->name_len);
	coord__take_text(out->command, &at, i->comm_len);
	coord__take_text(out->label, &at, i->label_len);
	return 0;
}

/* RESOURCE_INFO, for coord_show() and coord_checkpoint(); its status goes
 * to *status.  Returns 0 or COORD_EPROTO. */
static int coord__decode_resource_info(const union coord__msg *m, size_t n,
                                       coord_resource_info_t *out, int *status)
{
	const coord_msg_resource_info *i = &m->resource_info;
	const char *at = m->raw + sizeof *i;
	if (n < sizeof *i ||
	    n != sizeof *i + (size_t)i->name_len + i->command_len + i->message_len ||
	    i->name_len > COORD_NAME_MAX || i->command_len > COORD_COMMAND_MAX ||
	    i->message_len > COORD_MESSAGE_MAX || i->status > 0 || i->kind > COORD_KIND_DUCKDB ||
	    i->policy > COORD_POLICY_EXEC || i->sqlite_mode > COORD_SQLITE_TRUNCATE ||
	    i->checkpoint_state > 1 || i->last_result > 0)
		return COORD_EPROTO;
	*status = i->status;
	out->kind = (int)i->kind;
	out->policy.policy = (int)i->policy;
	out->policy.sqlite_mode = (int)i->sqlite_mode;
	out->policy.timeout_ms = i->timeout_ms;
	out->token = i->token;
	out->holders = i->holders;
	out->waiters = i->waiters;
	out->checkpoint_running = (int)i->checkpoint_state;
	out->duckdb_available = i->duckdb_available != 0;
	out->checkpoints = i->checkpoints;
	out->last_at_ms = i->last_at_ms;
	out->last_duration_us = i->last_duration_us;
	out->last_result = i->last_result;
	out->wal_before = i->wal_before;
	out->wal_after = i->wal_after;
	out->limits.max_hold_ms = i->max_hold_ms;
	out->limits.recall_grace_ms = i->recall_grace_ms;
	coord__take_text(out->name, &at, i->name_len);
	coord__take_text(out->policy.command, &at, i->command_len);
	coord__take_text(out->message, &at, i->message_len);
	return 0;
}

/* The LEASE_INFO messages of an answer: kept in v (keep 1), handed to fn
 * one by one (coord_list_each()), or else checked and dropped. */
struct coord__lease_list {
	coord_lease_info_t *v;
	size_t n, cap;
	int keep;
	coord_lease_fn *fn;
	void *ud;
	int stopped;            /* fn's nonzero value; no more calls */
};

static int coord__lease_list_one(struct coord__lease_list *l, const union coord__msg *m, size_t n)
{
	coord_lease_info_t scratch;
	int rc;
	if (!l->keep) {
		rc = coord__decode_lease_info(m, n, &scratch);
		if (rc == 0 && l->fn && !l->stopped)
			l->stopped = l->fn(&scratch, l->ud);
		return rc;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		coord_lease_info_t *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return COORD_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	rc = coord__decode_lease_info(m, n, &l->v[l->n]);
	if (rc == 0)
		l->n++;
	return rc;
}

/* A LEASE_INFO, or a LEASE_INFOS (protocol 7) and every record in it:
 * each is copied out to be aligned, and checked like a packet of its
 * own, its seq included.  Returns 0 or COORD_EPROTO / COORD_ENOMEM. */
static int coord__lease_list_add(struct coord__lease_list *l, const union coord__msg *m, size_t n)
{
	const coord_msg_lease_infos *p = (const void *)m;
	size_t at = sizeof *p;
	union coord__msg one;
	int rc = 0;
	if (m->h.type == COORD_MSG_LEASE_INFO)
		return coord__lease_list_one(l, m, n);
	if (n < sizeof *p || p->count < 2)
		return COORD_EPROTO;
	for (uint32_t i = 0; i < p->count && rc == 0; i++) {
		uint16_t len;
		if (n - at < sizeof len)
			return COORD_EPROTO;
		memcpy(&len, m->raw + at, sizeof len);
		at += sizeof len;
		if (len > n - at || len < sizeof one.h)
			return COORD_EPROTO;
		memcpy(&one, m->raw + at, len);
		at += len;
		if (one.h.type != COORD_MSG_LEASE_INFO || one.h.seq != m->h.seq)
			return COORD_EPROTO;
		rc = coord__lease_list_one(l, &one, len);
	}
	return rc == 0 && at != n ? COORD_EPROTO : rc;
}

/* Hands the list to the caller: NULL when empty. */
static void coord__lease_list_give(struct coord__lease_list *l, coord_lease_info_t **out,
                                   size_t *count)
{
	if (!l->n) {
		free(l->v);
		l->v = NULL;
	}
	*out = l->v;
	*count = l->n;
}

static int coord__on_status(void *ud, const union coord__msg *m, size_t n)
{
	const coord_msg_status_reply *s = &m->status;
	coord_status_t *out = ud;
	const char *at = m->raw + sizeof *s;
	if (s->h.type != COORD_MSG_STATUS_REPLY || n < sizeof *s || n != sizeof *s + s->dir_len ||
	    s->dir_len > COORD_DIR_MAX || s->status > 0)
		return COORD_EPROTO;
	if (s->status < 0)
		return s->status;
	out->protocol = s->version;
	out->broker_pid = s->broker_pid;
	out->uptime_ms = s->uptime_ms;
	out->clients = s->clients;
	out->leases = s->leases;
	out->waiters = s->waiters;
	out->resources = s->resources;
	coord__take_text(out->dir, &at, s->dir_len);
	return 1;
}

COORD_API int coord_status(coord_t *c, coord_status_t *out)
{
	coord_msg_hdr req = { COORD_MSG_STATUS, 0 };
	coord_status_t s;
	int rc;
	if (!c || !out)
		return COORD_EINVAL;
	rc = coord__exchange(c, &req, sizeof req, coord__on_status, &s);
	if (rc == 0)
		*out = s;
	return rc;
}

/* LIST: LEASE_INFO* (or LEASE_INFOS), END. */
static int coord__on_list(void *ud, const union coord__msg *m, size_t n)
{
	if (m->h.type == COORD_MSG_LEASE_INFO || m->h.type == COORD_MSG_LEASE_INFOS)
		return coord__lease_list_add(ud, m, n);
	return m->h.type == COORD_MSG_END && n >= sizeof m->reply ? 1 : COORD_EPROTO;
}

COORD_API int coord_list_each(coord_t *c, coord_lease_fn *fn, void *ud)
{
	struct coord__lease_list l = { NULL, 0, 0, 0, fn, ud, 0 };
	coord_msg_hdr req = { COORD_MSG_LIST, 0 };
	int rc;
	if (!c || !fn)
		return COORD_EINVAL;
	rc = coord__exchange(c, &req, sizeof req, coord__on_list, &l);
	return rc < 0 ? rc : l.stopped;
}

COORD_API int coord_list(coord_t *c, coord_lease_info_t **out, size_t *count)
{
	struct coord__lease_list l = { NULL, 0, 0, 1, NULL, NULL, 0 };
	coord_msg_hdr req = { COORD_MSG_LIST, 0 };
	int rc;
	if (!c || !out || !count)
		return COORD_EINVAL;
	rc = coord__exchange(c, &req, sizeof req, coord__on_list, &l);
	if (rc < 0) {
		free(l.v);
		return rc;
	}
	coord__lease_list_give(&l, out, count);
	return 0;
}

/* A SHOW or CHECKPOINT request: the fixed part and the canonical name. */
union coord__resource_req {
	coord_msg_resource m;
	char raw[sizeof(coord_msg_resource) + COORD_NAME_MAX + 1];
};

/* Builds a SHOW or CHECKPOINT request for `resource`; returns its length
 * or a coord_canonicalize() error. */
static int coord__resource_request(union coord__resource_req *req, uint32_t type,
                                   const char *resource)
{
	int n;
	memset(&req->m, 0, sizeof req->m);
	n = coord_canonicalize(resource, req->raw + sizeof req->m, COORD_NAME_MAX + 1);
	if (n < 0)
		return n;
	req->m.h.type = type;
	req->m.name_len = (uint16_t)n;
	return (int)sizeof req->m + n;
}

/* What SHOW and CHECKPOINT answer. */
struct coord__resource_answer {
	struct coord__lease_list leases;
	coord_resource_info_t info;
	int status;
	int got_info;
};

/* SHOW: LEASE_INFO*, RESOURCE_INFO, END. */
static int coord__on_show(void *ud, const union coord__msg *m, size_t n)
{
	struct coord__resource_answer *a = ud;
	switch (m->h.type) {
	case COORD_MSG_LEASE_INFO:
	case COORD_MSG_LEASE_INFOS:
		return a->got_info ? COORD_EPROTO : coord__lease_list_add(&a->leases, m, n);
	case COORD_MSG_RESOURCE_INFO:
		if (a->got_info)
			return COORD_EPROTO;
		a->got_info = 1;
		return coord__decode_resource_info(m, n, &a->info, &a->status);
	case COORD_MSG_END:
		return a->got_info && n >= sizeof m->reply ? 1 : COORD_EPROTO;
	default:
		return COORD_EPROTO;
	}
}

COORD_API int coord_show(coord_t *c, const char *resource, coord_resource_info_t *info,
                         coord_lease_info_t **leases, size_t *nleases)
{
	union coord__resource_req req;
	struct coord__resource_answer a;
	int rc;
	if (!c || !resource || (!leases) != (!nleases))
		return COORD_EINVAL;
	rc = coord__resource_request(&req, COORD_MSG_SHOW, resource);
	if (rc < 0)
		return rc;
	memset(&a, 0, sizeof a);
	a.leases.keep = leases != NULL;
	rc = coord__exchange(c, &req.m.h, (size_t)rc, coord__on_show, &a);
	if (rc < 0) {
		free(a.leases.v);
		return rc;
	}
	if (info)
		*info = a.info;
	if (leases)
		coord__lease_list_give(&a.leases, leases, nleases);
	return 0;
}

/* CHECKPOINT: one RESOURCE_INFO (or a REPLY with an error). */
static int coord__on_checkpoint(void *ud, const union coord__msg *m, size_t n)
{
	struct coord__resource_answer *a = ud;
	int rc;
	if (m->h.type != COORD_MSG_RESOURCE_INFO)
		return COORD_EPROTO;
	rc = coord__decode_resource_info(m, n, &a->info, &a->status);
	return rc < 0 ? rc : 1;
}

COORD_API int coord_checkpoint(coord_t *c, const char *resource, coord_resource_info_t *info)
{
	union coord__resource_req req;
	struct coord__resource_answer a;
	int rc;
	if (!c || !resource)
		return COORD_EINVAL;
	rc = coord__resource_request(&req, COORD_MSG_CHECKPOINT, resource);
	if (rc < 0)
		return rc;
	memset(&a, 0, sizeof a);
	rc = coord__exchange(c, &req.m.h, (size_t)rc, coord__on_checkpoint, &a);
	if (rc < 0)
		return rc;
	if (info)
		*info = a.info;
	return a.status;
}

/* POLICY: a REPLY (its negative status is handled by coord__exchange()). */
static int coord__on_done(void *ud, const union coord__msg *m, size_t n)
{
	(void)ud;
	(void)n;
	return m->h.type == COORD_MSG_REPLY ? 1 : COORD_EPROTO;
}

COORD_API int coord_set_policy(coord_t *c, const char *resource, const coord_policy_t *p)
{
	union {
		coord_msg_policy m;
		char raw[sizeof(coord_msg_policy) + COORD_NAME_MAX + 1 + COORD_COMMAND_MAX];
	} req;
	size_t cl;
	int nl;

	if (!c || !resource || !p)
		return COORD_EINVAL;
	cl = strnlen(p->command, sizeof p->command);
	if (p->policy < COORD_POLICY_AUTO || p->policy > COORD_POLICY_EXEC ||
	    p->sqlite_mode < COORD_SQLITE_PASSIVE || p->sqlite_mode > COORD_SQLITE_TRUNCATE ||
	    p->timeout_ms > 24u * 3600 * 1000 || cl > COORD_COMMAND_MAX ||
	    (p->policy == COORD_POLICY_EXEC) != (cl > 0))
		return COORD_EINVAL;
	memset(&req.m, 0, sizeof req.m);
	nl = coord_canonicalize(resource, req.raw + sizeof req.m, COORD_NAME_MAX + 1);
	if (nl < 0)
		return nl;
	req.m.h.type = COORD_MSG_POLICY;
	req.m.policy = (uint32_t)p->policy;
	req.m.sqlite_mode = (uint32_t)p->sqlite_mode;
	req.m.timeout_ms = p->timeout_ms;
	req.m.name_len = (uint16_t)nl;
	req.m.command_len = (uint16_t)cl;
	memcpy(req.raw + sizeof req.m + nl, p->command, cl);
	return coord__exchange(c, &req.m.h, sizeof req.m + (size_t)nl + cl, coord__on_done, NULL);
}

COORD_API int coord_set_limits(coord_t *c, const char *resource, const coord_limits_t *l)
{
	union {
		coord_msg_limits m;
		char raw[sizeof(coord_msg_limits) + COORD_NAME_MAX + 1];
	} req;
	int nl;

	if (!c || !resource || !l || l->max_hold_ms > COORD_LIMIT_MAX_MS ||
	    l->recall_grace_ms > COORD_LIMIT_MAX_MS)
		return COORD_EINVAL;
	memset(&req.m, 0, sizeof req.m);
	nl = coord_canonicalize(resource, req.raw + sizeof req.m, COORD_NAME_MAX + 1);
	if (nl < 0)
		return nl;
	req.m.h.type = COORD_MSG_LIMITS;
	req.m.max_hold_ms = l->max_hold_ms;
	req.m.recall_grace_ms = l->recall_grace_ms;
	req.m.name_len = (uint16_t)nl;
	return coord__exchange(c, &req.m.h, sizeof req.m + (size_t)nl, coord__on_done, NULL);
}

COORD_API int coord_revoke(coord_t *c, const coord_revoke_t *what)
{
	union {
		coord_msg_revoke m;
		char raw[sizeof(coord_msg_revoke) + COORD_NAME_MAX + 1];
	} req;
	int nl = 0;

	if (!c || !what || (what->lease_id != 0) + (what->pid > 0) + (what->resource != NULL) != 1 ||
	    what->pid < 0 || what->grace_ms < 0 || what->grace_ms > 3600 * 1000)
		return COORD_EINVAL;
	memset(&req.m, 0, sizeof req.m);
	if (what->resource) {
		nl = coord_canonicalize(what->resource, req.raw + sizeof req.m, COORD_NAME_MAX + 1);
		if (nl < 0)
			return nl;
	}
	req.m.h.type = COORD_MSG_REVOKE;
	req.m.lease_id = what->lease_id;
	req.m.pid = (uint64_t)what->pid;
	req.m.grace_ms = (uint32_t)what->grace_ms;
	req.m.name_len = (uint16_t)nl;
	return coord__exchange(c, &req.m.h, sizeof req.m + (size_t)nl, coord__on_done, NULL);
}

/* ------------------------------------------------------------------------ */
/* 8.11 Metrics and the event feed                                          */
/* ------------------------------------------------------------------------ */

#include <linux/futex.h>
#include <sys/syscall.h>
/* Declared by <unistd.h> only with _DEFAULT_SOURCE; the same declaration. */
long syscall(long number, ...);

#define COORD__METRICS_MAX ((size_t)64 << 20)

/* METRICS{flags 0} (c->lock held): REPLY{0} carrying the memfd with the
 * text, into *fd. */
static int coord__metrics_fd(coord_t *c, int *fd)
{
	coord_msg_metrics req = { { COORD_MSG_METRICS, coord__next_seq(c) }, 0, 0 };
	const union coord__msg *m = &c->in;
	int n = coord__send(c, &req, sizeof req), got = -1;
	if (n < 0)
		return n;
	n = coord__recv_fd(c, req.h.seq, &c->in, -1, &got, 0);
	if (n < 0)
		return n;
	if (m->h.type != COORD_MSG_REPLY || (size_t)n < sizeof m->reply || m->reply.status > 0 ||
	    (m->reply.status == 0) != (got >= 0)) {
		if (got >= 0)
			close(got);
		return coord__proto_error(c);
	}
	if (m->reply.status < 0)
		return m->reply.status;
	*fd = got;
	return 0;
}

/* The whole of file fd (at most COORD__METRICS_MAX bytes), terminated. */
static int coord__read_text(int fd, char **text)
{
	struct stat st;
	size_t size, done = 0;
	char *buf;
	if (fstat(fd, &st) < 0)
		return COORD_ESYS;
	if (st.st_size < 0 || (size_t)st.st_size > COORD__METRICS_MAX)
		return COORD_EPROTO;
	size = (size_t)st.st_size;
	buf = malloc(size + 1);
	if (!buf)
		return COORD_ENOMEM;
	while (done < size) {
		ssize_t n = pread(fd, buf + done, size - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	buf[done] = 0;
	*text = buf;
	return 0;
}

COORD_API int coord_metrics(coord_t *c, char **text)
{
	int fd = -1, rc;
	if (!c || !text)
		return COORD_EINVAL;
	rc = coord__lock(c);
	if (rc < 0)
		return rc;
	rc = coord__metrics_fd(c, &fd);
	if (coord__retry(c, rc))
		rc = coord__metrics_fd(c, &fd);
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		return rc;
	rc = coord__read_text(fd, text);
	close(fd);
	return rc;
}

COORD_API const char *coord_event_name(int type)
{
	static const char *const names[] = { "?", "start", "stop", "grant", "wait", "recall",
		                             "release", "reclaim", "timeout", "cancel",
		                             "checkpoint-start", "checkpoint", "lost" };
	return type > 0 && type <= COORD_EVENT_LOST ? names[type] : "?";
}

/* A reader of coordd.events (layout and protocol: coord_proto.h).
 * Nothing it reads is trusted for more than its bounds: lengths are
 * checked before a byte is copied. */
struct coord_feed {
	coord_t *c;
	char path[COORD_DIR_MAX + 32];
	const char *map;
	size_t size;
	const coord_events_header *hdr;
	const coord_events_record *rec;
	uint64_t count;
	uint64_t next;             /* seq of the next record to read */
	uint64_t epoch;            /* of the broker we asked to wake us */
	uint64_t dev, ino;
	int64_t checked_ms;        /* last look at the path */
	int registered;            /* the broker of `epoch` wakes us */
};

/* Maps f->path.  Returns 0 or a COORD_E* code. */
static int coord__feed_map(struct coord_feed *f)
{
	struct stat st;
	const coord_events_header *h;
	void *m;
	int fd = open(f->path, O_RDONLY | O_CLOEXEC), rc = 0;
	if (fd < 0)
		return errno == ENOENT ? COORD_ENOENT : errno == EACCES ? COORD_EPERM : COORD_ESYS;
	if (fstat(fd, &st) < 0 || st.st_size < COORD_EVENTS_HEADER_SIZE) {
		close(fd);
		return COORD_EPROTO;
	}
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return COORD_ESYS;
	h = m;
	if (memcmp(h->magic, COORD_EVENTS_MAGIC, 8) || h->version != 1 ||
	    h->header_size != COORD_EVENTS_HEADER_SIZE ||
	    h->record_size != sizeof(coord_events_record) || h->record_count == 0 ||
	    (uint64_t)h->header_size + (uint64_t)h->record_count * h->record_size >
	            (uint64_t)st.st_size)
		rc = COORD_EPROTO;
	if (rc < 0) {
		munmap(m, (size_t)st.st_size);
		return rc;
	}
	if (f->map)
		munmap((void *)f->map, f->size);
	f->map = m;
	f->size = (size_t)st.st_size;
	f->hdr = h;
	f->rec = (const coord_events_record *)(f->map + h->header_size);
	f->count = h->record_count;
	f->dev = (uint64_t)st.st_dev;
	f->ino = (uint64_t)st.st_ino;
	return 0;
}

/* METRICS{COORD_METRICS_WATCH}: the broker wakes us from now on. */
static int coord__feed_register(struct coord_feed *f)
{
	coord_msg_metrics req = { { COORD_MSG_METRICS, 0 }, COORD_METRICS_WATCH, 0 };
	int rc = coord__exchange(f->c, &req.h, sizeof req, coord__on_done, NULL);
	f->registered = rc == 0;
	return rc;
}

COORD_API int coord_feed_open(coord_t *c, coord_feed_t **out)
{
	struct coord_feed *f;
	int rc;
	if (!c || !out)
		return COORD_EINVAL;
	f = calloc(1, sizeof *f);
	if (!f)
		return COORD_ENOMEM;
	f->c = c;
	if (snprintf(f->path, sizeof f->path, "%s/%s", c->dir, COORD_EVENTS_NAME) >=
	    (int)sizeof f->path) {
		free(f);
		return COORD_EINVAL;
	}
	rc = coord__feed_map(f);
	if (rc == 0) {
		f->next = atomic_load_explicit(&f->hdr->head, memory_order_acquire);
		f->epoch = atomic_load_explicit(&f->hdr->broker_epoch, memory_order_acquire);
		f->checked_ms = coord__now_ms();
		rc = coord__feed_register(f);
	}
	if (rc < 0) {
		coord_feed_close(f);
		return rc;
	}
	*out = f;
	return 0;
}

static void coord__feed_text(char *dst, size_t max, const char **at, size_t len)
{
	if (len > max)
		len = max;
	memcpy(dst, *at, len);
	dst[len] = 0;
	*at += len;
}

/* Copies record `seq` into *ev.  Returns 1, or 0 if the broker wrote
 * over it meanwhile (lapped). */
static int coord__feed_read(struct coord_feed *f, uint64_t seq, coord_event_t *ev)
{
	const coord_events_record *r = &f->rec[seq % f->count];
	coord_events_record copy;
	const char *at = copy.text;
	if (atomic_load_explicit(&r->seq, memory_order_acquire) != seq)
		return 0;
	memcpy(&copy, (const void *)r, sizeof copy);
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&r->seq, memory_order_relaxed) != seq)
		return 0;
	memset(ev, 0, sizeof *ev);
	ev->seq = seq;
	ev->type = (int)copy.type;
	ev->mode = (int)copy.mode;
	ev->wall_ms = copy.wall_ms;
	ev->epoch = copy.epoch;
	ev->lease_id = copy.lease_id;
	ev->token = copy.token;
	ev->pid = copy.pid;
	ev->uid = copy.uid;
	ev->duration_us = copy.duration_us;
	ev->code = copy.code;
	ev->kind = (int)copy.kind;
	ev->wal_before = copy.wal_before;
	ev->wal_after = copy.wal_after;
	ev->flags = copy.flags;
	if ((size_t)copy.name_len + copy.comm_len + copy.label_len + copy.reason_len >
	    sizeof copy.text)
		return 1; /* not what a broker writes: the texts stay empty */
	coord__feed_text(ev->resource, COORD_NAME_MAX, &at, copy.name_len);
	coord__feed_text(ev->command, COORD_COMMAND_NAME_MAX, &at, copy.comm_len);
	coord__feed_text(ev->label, COORD_LABEL_MAX, &at, copy.label_len);
	coord__feed_text(ev->reason, sizeof ev->reason - 1, &at, copy.reason_len);
	return 1;
}

/* A COORD_EVENT_LOST of `lost` events (0: unknown). */
static int coord__feed_lost(coord_event_t *ev, uint64_t lost)
{
	memset(ev, 0, sizeof *ev);
	ev->type = COORD_EVENT_LOST;
	ev->lost = lost;
	ev->wal_before = ev->wal_after = -1;
	return 1;
}

/* Once a second while waiting: is the file at the path still ours? */
static int coord__feed_replaced(struct coord_feed *f)
{
	struct stat st;
	if (stat(f->path, &st) < 0 || ((uint64_t)st.st_dev == f->dev && (uint64_t)st.st_ino == f->ino))
		return 0;
	return coord__feed_map(f) == 0;
}

COORD_API int coord_feed_next(coord_feed_t *f, coord_event_t *ev, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : coord__now_ms() + timeout_ms;
	if (!f || !ev)
		return COORD_EINVAL;
	for (;;) {
		uint32_t wake = atomic_load_explicit(&f->hdr->wake, memory_order_acquire);
		uint64_t head = atomic_load_explicit(&f->hdr->head, memory_order_acquire);
		uint64_t oldest = head > f->count ? head - f->count : 1;
		int64_t now, wait;
		struct timespec ts;
		if (f->next < oldest || f->next > head) {
			/* Lapped (go on half a ring behind the head, so a broker
			 * that keeps writing does not lap us again at once); or a
			 * new file whose seq is behind ours. */
			uint64_t from = head > f->count / 2 ? head - f->count / 2 : 1;
			uint64_t lost = f->next < oldest ? from - f->next : 0;
			f->next = f->next < oldest ? from : head;
			return coord__feed_lost(ev, lost);
		}
		if (f->next < head) {
			if (!coord__feed_read(f, f->next, ev)) {
				/* Written over while we read it: lapped after all. */
				uint64_t now_head = atomic_load_explicit(&f->hdr->head, memory_order_acquire);
				uint64_t from = now_head > f->count / 2 ? now_head - f->count / 2 : 1;
				uint64_t lost = from > f->next ? from - f->next : 0;
				f->next = from > f->next ? from : now_head;
				return coord__feed_lost(ev, lost);
			}
			f->next++;
			if (ev->type == COORD_EVENT_START && ev->epoch != f->epoch) {
				/* A new broker: ask it to wake us too. */
				f->epoch = ev->epoch;
				coord__feed_register(f);
			}
			return 1;
		}
		now = coord__now_ms();
		if (now - f->checked_ms >= 1000) {
			f->checked_ms = now;
			if (coord__feed_replaced(f)) {
				f->next = atomic_load_explicit(&f->hdr->head, memory_order_acquire);
				return coord__feed_lost(ev, 0);
			}
			if (!f->registered)
				coord__feed_register(f);
		}
		if (deadline >= 0 && now >= deadline)
			return 0;
		wait = 1000 - (now - f->checked_ms);
		if (deadline >= 0 && deadline - now < wait)
			wait = deadline - now;
		if (wait < 1)
			wait = 1;
		ts.tv_sec = wait / 1000;
		ts.tv_nsec = (wait % 1000) * 1000000;
		/* Not FUTEX_PRIVATE: the word is in a file shared with the
		 * broker.  EAGAIN (the word moved on), EINTR, ETIMEDOUT: look
		 * again. */
		syscall(SYS_futex, &f->hdr->wake, FUTEX_WAIT, wake, &ts, NULL, 0);
	}
}

COORD_API void coord_feed_close(coord_feed_t *f)
{
	if (!f)
		return;
	if (f->map)
		munmap((void *)f->map, f->size);
	free(f);
}

#endif /* COORD_IMPLEMENTATION */

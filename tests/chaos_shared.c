/* The chaos test's shared file (see chaos_shared.h): mapping it, liveness
 * of the processes it names, entering and leaving a resource with the
 * exclusion check, and the table of processes started under leases.  It
 * is linked into the test and into the witness, so both check exclusion
 * with the very same code.  It never asserts or exits: the witness has no
 * Criterion, and a failed check is a count, not a crash. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "chaos_shared.h"

struct chaos_shared *chaos_map(const char *path, int create)
{
	struct chaos_shared *s = NULL;
	int fd = open(path, create ? O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC : O_RDWR | O_CLOEXEC,
	              0600);
	void *m;
	if (fd < 0)
		return NULL;
	if (create && ftruncate(fd, sizeof *s) < 0)
		goto out;
	m = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		goto out;
	s = m;
	if (create) {
		s->magic = CHAOS_MAGIC;
		s->size = sizeof *s;
	} else if (s->magic != CHAOS_MAGIC || s->size != sizeof *s) {
		munmap(m, sizeof *s);
		s = NULL;
		errno = EINVAL;
	}
out:
	close(fd);
	return s;
}

uint64_t chaos_stat(pid_t pid, char *state, pid_t *ppid)
{
	char path[64], buf[512], *p;
	unsigned long long start = 0;
	long parent = 0;
	ssize_t n;
	int fd;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* "pid (comm) state ppid ...": comm may hold anything, so fields are
	 * counted from the last ')'; the start time is field 22. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c %ld %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
	                        "%*s %*s %llu",
	                 state ? state : &(char){ 0 }, &parent, &start) != 3)
		return 0;
	if (ppid)
		*ppid = (pid_t)parent;
	return start;
}

static uint64_t killed_key(pid_t pid, uint64_t start)
{
	return start << 22 | (uint64_t)(uint32_t)pid;
}

int chaos_alive(struct chaos_shared *s, pid_t pid)
{
	char state = 0;
	uint64_t start = chaos_stat(pid, &state, NULL), key;
	uint32_t n = s->nkilled;
	if (!start || state == 'Z' || state == 'X')
		return 0;
	key = killed_key(pid, start);
	for (uint32_t i = 0; i < n && i < CHAOS_KILLED; i++)
		if (s->killed[i] == key)
			return 0;
	return 1;
}

void chaos_mark_killed(struct chaos_shared *s, pid_t pid)
{
	uint64_t start = chaos_stat(pid, NULL, NULL);
	uint32_t i = atomic_fetch_add(&s->nkilled, 1);
	if (start)
		s->killed[i % CHAOS_KILLED] = killed_key(pid, start);
}

static pid_t occupant_pid(uint64_t w)
{
	return (pid_t)(uint32_t)w;
}

static pid_t occupant_owner(uint64_t w)
{
	return (pid_t)(uint32_t)(w >> 32);
}

static int claim(_Atomic uint64_t *slots, int n, uint64_t me)
{
	for (int i = 0; i < n; i++) {
		uint64_t zero = 0;
		if (atomic_compare_exchange_strong(&slots[i], &zero, me))
			return i;
	}
	return -1;
}

/* Frees the slots of dead occupants (a killed one never leaves). */
static void collect(struct chaos_shared *s, _Atomic uint64_t *slots, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t w = slots[i];
		if (w && !chaos_alive(s, occupant_pid(w)))
			atomic_compare_exchange_strong(&slots[i], &w, 0);
	}
}

/* Counts the live occupants of slots that are not owner's. */
static long conflicts(struct chaos_shared *s, _Atomic uint64_t *slots, int n, pid_t owner)
{
	long found = 0;
	for (int i = 0; i < n; i++) {
		uint64_t w = slots[i];
		if (w && occupant_owner(w) != owner && chaos_alive(s, occupant_pid(w)))
			found++;
	}
	return found;
}

int chaos_enter(struct chaos_shared *s, int res, int write, pid_t owner, uint64_t token)
{
	struct chaos_occupancy *o = &s->occ[res];
	_Atomic uint64_t *slots = write ? o->writers : o->readers;
	int n = write ? CHAOS_WRITER_SLOTS : CHAOS_READER_SLOTS, slot;
	uint64_t me = (uint64_t)(uint32_t)owner << 32 | (uint32_t)getpid();
	long found;
	/* Publish first, then look: of two that overlap, the later to look
	 * sees the other (sequentially consistent atomics). */
	slot = claim(slots, n, me);
	if (slot < 0) {
		collect(s, slots, n);
		slot = claim(slots, n, me);
	}
	if (slot < 0)
		s->slot_overflows++;
	found = conflicts(s, o->writers, CHAOS_WRITER_SLOTS, owner);
	if (write)
		found += conflicts(s, o->readers, CHAOS_READER_SLOTS, owner);
	if (found)
		s->violations += found;
	if (write && token) {
		uint64_t prev = o->last_token;
		if (token < prev || (token == prev && (pid_t)o->last_owner != owner))
			s->token_regressions++;
		else if (token > prev) {
			o->last_token = token;
			o->last_owner = (uint32_t)owner;
		}
	}
	return slot;
}

void chaos_leave(struct chaos_shared *s, int res, int write, int slot)
{
	struct chaos_occupancy *o = &s->occ[res];
	if (slot >= 0)
		(write ? o->writers : o->readers)[slot] = 0;
}

void chaos_clear(struct chaos_shared *s, pid_t pid)
{
	for (int r = 0; r < CHAOS_RESOURCES; r++) {
		struct chaos_occupancy *o = &s->occ[r];
		for (int i = 0; i < CHAOS_WRITER_SLOTS; i++) {
			uint64_t w = o->writers[i];
			if (w && occupant_pid(w) == pid)
				atomic_compare_exchange_strong(&o->writers[i], &w, 0);
		}
		for (int i = 0; i < CHAOS_READER_SLOTS; i++) {
			uint64_t w = o->readers[i];
			if (w && occupant_pid(w) == pid)
				atomic_compare_exchange_strong(&o->readers[i], &w, 0);
		}
	}
}

int chaos_writer_inside(struct chaos_shared *s, int res)
{
	for (int i = 0; i < CHAOS_WRITER_SLOTS; i++) {
		uint64_t w = s->occ[res].writers[i];
		if (w && chaos_alive(s, occupant_pid(w)))
			return 1;
	}
	return 0;
}

int chaos_record_started(struct chaos_shared *s, pid_t pid, uint64_t start, int kind,
                         pid_t owner, int write)
{
	uint32_t i = atomic_fetch_add(&s->nstarted, 1);
	if (i >= CHAOS_STARTED)
		return -1;
	s->started[i].kind = kind;
	s->started[i].owner = owner;
	s->started[i].write = write;
	s->started[i].start = start;
	s->started[i].pid = pid;
	return (int)i;
}

/* 1 if the text of one /proc/PID/fdinfo/N shows a flock of the kind
 * wanted held through that descriptor ("lock:\t1: FLOCK  ADVISORY  WRITE
 * ..."; a "->" line is a request still blocked, not a lock). */
static int fdinfo_has_flock(const char *text, int write)
{
	for (const char *l = strstr(text, "lock:"); l; l = strstr(l + 5, "lock:")) {
		const char *end = strchr(l, '\n'), *f = strstr(l, "FLOCK"), *arrow = strstr(l, "->");
		if (!f || (end && f > end) || (arrow && (!end || arrow < end)))
			continue;
		const char *kind = strstr(f, write ? " WRITE " : " READ ");
		if (kind && (!end || kind < end))
			return 1;
	}
	return 0;
}

int chaos_holds_flock(pid_t pid, int write)
{
	char path[64], file[320], text[1024];
	struct dirent *e;
	char state = 0;
	int held = 0, fds = 0;
	DIR *d;
	snprintf(path, sizeof path, "/proc/%d/fdinfo", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while (!held && (e = readdir(d))) {
		ssize_t n;
		int fd;
		if (e->d_name[0] == '.')
			continue;
		fds++;
		snprintf(file, sizeof file, "%s/%s", path, e->d_name);
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, text, sizeof text - 1);
		close(fd);
		if (n <= 0)
			continue;
		text[n] = 0;
		held = fdinfo_has_flock(text, write);
	}
	closedir(d);
	/* a process on its way out closes its descriptors before it turns
	 * into a zombie: no lock seen then says nothing (every process here
	 * has at least its standard descriptors while it runs) */
	if (!held && (!fds || !chaos_stat(pid, &state, NULL) || state == 'Z' || state == 'X'))
		return -1;
	return held;
}

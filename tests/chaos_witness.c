/* chaos_witness: the process the chaos test (tests/test_chaos.c) starts
 * under `coordctl run`, one or two shells down, to check exclusion from
 * inside a lease's command.  It takes everything from its environment:
 * CHAOS_SHM (the test's shared file, chaos_shared.h), CHAOS_OWNER (the
 * pid of the `coordctl run` it runs under), CHAOS_HOLD_MS (the longest it
 * stays inside), and what `coordctl run` gives every command:
 * COORD_RESOURCE, COORD_MODE (so a witness under --read enters as a
 * reader, under --write as a writer) and COORD_TOKEN.
 *
 * It records itself (and its parent shell) as started, enters the
 * resource's occupancy (a conflicting live occupant is a violation), stays
 * a random while, leaves and exits 0.  On entering and before leaving it
 * also checks that it is still covered: that a descriptor it inherited
 * still holds the resource's kernel lock (flock, exclusive for a writer).
 * Running under a lease's name with no lock left is what an orphan is; it
 * is flagged in its started record.  It never talks to the broker. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chaos_shared.h"

/* 1 if the process pid is a shell (dash or bash), from /proc/PID/comm. */
static int is_shell(pid_t pid)
{
	char path[64], comm[32] = "";
	ssize_t n;
	int fd;
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, comm, sizeof comm - 1);
	close(fd);
	if (n <= 0)
		return 0;
	comm[n] = 0;
	comm[strcspn(comm, "\n")] = 0;
	return !strcmp(comm, "sh") || !strcmp(comm, "dash") || !strcmp(comm, "bash");
}

/* Records the parent shell once: its siblings, which started just before,
 * may have recorded it already. */
static void record_shell(struct chaos_shared *s, pid_t ppid, pid_t owner, int write)
{
	uint64_t start = chaos_stat(ppid, NULL, NULL);
	uint32_t n = s->nstarted;
	if (!start || !is_shell(ppid))
		return;
	n = n < CHAOS_STARTED ? n : CHAOS_STARTED;
	for (uint32_t i = n; i > 0 && i + 64 > n; i--) {
		struct chaos_started *e = &s->started[i - 1];
		if (e->pid == ppid && e->start == start)
			return;
	}
	if (chaos_record_started(s, ppid, start, CHAOS_SHELL, owner, write) < 0)
		s->witness_errors++;
}

int main(void)
{
	const char *shm = getenv("CHAOS_SHM"), *mode = getenv("COORD_MODE");
	const char *resource = getenv("COORD_RESOURCE"), *owner_s = getenv("CHAOS_OWNER");
	const char *token_s = getenv("COORD_TOKEN"), *hold_s = getenv("CHAOS_HOLD_MS");
	struct chaos_shared *s;
	pid_t me = getpid(), ppid = 0, owner;
	unsigned seed = (unsigned)me ^ (unsigned)time(NULL);
	int res = -1, write, slot, hold, index, uncovered = 0;
	uint64_t start;

	if (!shm || !(s = chaos_map(shm, 0))) {
		fprintf(stderr, "chaos_witness: cannot map CHAOS_SHM (%s)\n", shm ? shm : "unset");
		return 2;
	}
	for (int r = 0; r < CHAOS_RESOURCES && resource; r++)
		if (!strcmp(resource, s->resource[r]))
			res = r;
	owner = owner_s ? (pid_t)atol(owner_s) : 0;
	if (res < 0 || !mode || owner <= 0) {
		fprintf(stderr, "chaos_witness: needs COORD_RESOURCE (one of the test's), COORD_MODE "
		                "and CHAOS_OWNER; got %s, %s, %s\n",
		        resource ? resource : "-", mode ? mode : "-", owner_s ? owner_s : "-");
		s->witness_errors++;
		return 2;
	}
	write = !strcmp(mode, "write");
	hold = hold_s ? atoi(hold_s) : 20;
	hold = 1 + (int)(rand_r(&seed) % (unsigned)(hold > 1 ? hold : 1));

	start = chaos_stat(me, NULL, &ppid);
	index = chaos_record_started(s, me, start, CHAOS_WITNESS, owner, write);
	if (index < 0)
		s->witness_errors++;
	record_shell(s, ppid, owner, write);

	slot = chaos_enter(s, res, write, owner, write && token_s ? strtoull(token_s, NULL, 10) : 0);
	s->witness_entries++;
	if (chaos_holds_flock(me, write) == 0)
		uncovered = 1;
	poll(NULL, 0, hold); /* the work done under the lease */
	if (chaos_holds_flock(me, write) == 0)
		uncovered = 1;
	chaos_leave(s, res, write, slot);
	if (uncovered && index >= 0)
		s->started[index].flags |= CHAOS_UNCOVERED;
	return 0;
}

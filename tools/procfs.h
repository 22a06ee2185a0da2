/* coordctl, private: what the tools read from /proc.  The kernel's table
 * of flock(2) locks (/proc/locks), every process's descriptors
 * (/proc/PID/fd), the locks held through one descriptor
 * (/proc/PID/fdinfo/FD), a process's command name and line, and its first
 * child.  Used by
 * kernel_locks.c (`coordctl list` and `show`) and doctor_scan.c
 * (`coordctl doctor`).  Not installed. */
#ifndef COORD_PROCFS_H
#define COORD_PROCFS_H

#include <stddef.h>
#include <sys/types.h>

/* One flock(2) lock held on a file, as /proc/locks lists it. */
struct procfs_flock {
	dev_t dev;  /* the file: device and inode */
	ino_t ino;
	long pid;   /* the process that took it (a descendant may hold it now
	               through an inherited descriptor, and this one may be
	               gone); 0 when it is not visible in our PID namespace */
	int write;  /* 1 exclusive (LOCK_EX), 0 shared */
};

/* Reads /proc/locks once: every held FLOCK lock, sorted by device and
 * inode (requests blocked behind one, the "->" lines, are left out; so
 * are POSIX, OFD and lease entries).  On success *out (free() it) has *n
 * entries, NULL when *n is 0.  Returns 0, or -1 with errno set (ENOENT:
 * no /proc/locks; ENOMEM). */
int procfs_read_flocks(struct procfs_flock **out, size_t *n);

/* The entries of v (sorted, as procfs_read_flocks() gives them) on the
 * file dev:ino: a pointer to the first, with *count set; NULL when there
 * is none. */
const struct procfs_flock *procfs_flocks_on(const struct procfs_flock *v, size_t n, dev_t dev,
                                            ino_t ino, size_t *count);

/* 1 if descriptor `fd` of process `pid` holds a flock(2) lock on dev:ino
 * (a "lock:" line of /proc/PID/fdinfo/FD: every descriptor that shares
 * the lock's open file description shows it, in every process, with the
 * pid /proc/locks gives), with *l filled; 0 if it holds none; -1 if its
 * fdinfo cannot be read (gone, or not ours to read). */
int procfs_fd_flock(long pid, int fd, dev_t dev, ino_t ino, struct procfs_flock *l);

/* Called by procfs_walk_fds() for descriptor `fd` of process `pid`;
 * `dirfd` is /proc/PID/fd opened, `name` the descriptor's entry in it
 * (for readlinkat() and fstatat()).  Returns 0 to go on, anything else to
 * stop the walk and have procfs_walk_fds() return it. */
typedef int procfs_fd_fn(void *arg, long pid, int fd, int dirfd, const char *name);

/* Calls fn for every descriptor of every process in /proc.  Processes
 * that exit meanwhile are skipped; those whose descriptors we may not
 * look at (another user's, without root) are counted in *unseen.
 * Returns 0, or what fn returned to stop it. */
int procfs_walk_fds(procfs_fd_fn *fn, void *arg, size_t *unseen);

/* Calls fn for every descriptor of process `pid` only.  Returns 0, what
 * fn returned to stop, or -1 if its descriptors cannot be looked at. */
int procfs_walk_fds_of(long pid, procfs_fd_fn *fn, void *arg);

/* 1 if process `pid` has exited (no such process, or a zombie not yet
 * reaped, which holds no descriptors any more), 0 if it runs. */
int procfs_exited(long pid);

/* The command name of process `pid` (/proc/PID/comm, without the newline)
 * into buf; "?" when it is gone or cannot be read.  Returns 0, or -1 when
 * it could not be read. */
int procfs_comm(long pid, char *buf, size_t size);

/* The command line of process `pid` (/proc/PID/cmdline: its arguments,
 * each ended by a NUL) into buf, at most size bytes (a longer one is cut,
 * its last byte made a NUL).  Returns the bytes read (0: a kernel thread,
 * or a zombie), or -1 when it is gone or cannot be read. */
ssize_t procfs_cmdline(long pid, char *buf, size_t size);

/* The oldest child of process `pid` (/proc/PID/task/PID/children, else a
 * walk of /proc), or 0 when it has none or it cannot be seen. */
long procfs_first_child(long pid);

#endif

/* Descriptors a client passed: telling safe ones from the rest, and
 * closing them without ever waiting for a filesystem daemon. */
#ifndef COORD_UFD_H
#define COORD_UFD_H

/* 1 if fd is a regular file on a local filesystem (ext4, xfs, btrfs,
 * tmpfs, ...), where flock(2) and close(2) never wait; 0 otherwise.
 * Makes no system call on fd itself before it knows. */
int ufd_local(int fd);

/* Closes fd: at once if ufd_local(), else on the closer thread.  Returns
 * 0 (closed), 1 (handed to the closer thread: the descriptor was not a
 * local file) or -1 (kept open: no closer thread could take it). */
int ufd_close(int fd);

#endif

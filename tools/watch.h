/* coordctl watch: a live view of the broker's leases, waiters, recalls
 * and checkpoints, driven by the event feed (see watch.c). */
#ifndef COORD_WATCH_H
#define COORD_WATCH_H

/* `coordctl watch [--json]`: argv[0] is the command's name, dir
 * coordctl's --dir (or NULL).  Returns an exit status: 0 ok (q, or end
 * of input), 1 failed, 64 usage, 69 no broker. */
int cmd_watch(int argc, char **argv, const char *dir);

#endif

/* Shared instances: the group a broker serves (coordd --group, or the
 * group of a setgid, group-writable instance directory), and the modes
 * and group of the directory and the files in it.  Who may connect is
 * decided at accept (client.c), from the peer's groups. */
#ifndef COORD_GROUP_H
#define COORD_GROUP_H

#include <stddef.h>
#include <sys/types.h>

#include "log.h"

#define GROUP_NONE ((gid_t)-1)

/* The gid of group `name` (a name, or a number).  Returns 0, or -1 if
 * there is no such group. */
int group_lookup(const char *name, gid_t *gid);

/* The name of gid into buf (its number if it has none); returns buf. */
const char *group_name(gid_t gid, char *buf, size_t size);

/* The group of dir if it is a shared instance directory already (setgid
 * and group rwx: coord_proto_dir_is_shared()), else GROUP_NONE. */
gid_t group_of_dir(const char *dir);

/* Makes dir an instance shared by gid: group gid, mode 02770 (setgid, so
 * what is created in it gets the group).  Left alone when it is already
 * shared by gid, so a member that does not own it can serve it.  Returns
 * 0, or -1 with the reason in err. */
int group_share_dir(const char *dir, gid_t gid, char *err, size_t errsize);

/* Gives the broker's files in dir (the lock, LMDB, the region, the log)
 * group gid and mode 0640: members map the region and tools read LMDB;
 * only the broker writes.  Makes DIR/keys (kernel locks of keys, created
 * by clients) 02770.  What cannot be changed is logged (event=error
 * op=share-file) and left as it is. */
void group_share_files(const char *dir, gid_t gid, struct log *log);

#endif

/* coordctl setup-shared and share: instances shared by several users, and
 * the marker that ties a directory of databases to one instance.  See the
 * top of share.c. */
#ifndef COORD_SHARE_H
#define COORD_SHARE_H

#include <stddef.h>

/* Makes `dir` (NULL: /var/lib/coord) an instance shared by `group` (NULL:
 * "coord"): creates the group if it is missing (groupadd --system), the
 * directory with group `group` and mode 2770, and starts its broker
 * (autostart, which serves the directory's group).  Safe to run again.
 * Prints what it did on stdout and what failed on stderr.  Returns an
 * exit status: 0 ok, 1 failed, 69 no broker could be started. */
int share_setup(const char *dir, const char *group);

/* Writes PATH's marker: `.coord-instance` in PATH (a directory) or in its
 * directory (a file, existing or not), naming the instance directory
 * `instance` (resolved as coord_instance_dir() does, canonicalised; it
 * must exist).  Returns an exit status: 0 ok, 1 failed, 64 usage. */
int share_mark(const char *path, const char *instance);

/* `coordctl setup-shared [--dir DIR] [--group NAME]` and `coordctl share
 * PATH [--dir INSTANCE]`: argv[0] is the command's name, dir_opt
 * coordctl's own --dir (or NULL).  Return an exit status. */
int share_setup_command(int argc, char **argv, const char *dir_opt);
int share_mark_command(int argc, char **argv, const char *dir_opt);

/* "shared by group NAME" or "private to USER", for `coordctl status`. */
void share_describe(const char *dir, char *buf, size_t size);

/* Explains why the instance `dir` refused us with COORD_EPERM, into buf:
 * it is shared by a group the caller is not in (naming both), or it is
 * another user's. */
void share_explain_eperm(const char *dir, char *buf, size_t size);

/* Explains COORD_EINSTANCE for `resource` used through instance `dir`:
 * which instance its marker names, and how to use it. */
void share_explain_einstance(const char *resource, const char *dir, char *buf, size_t size);

#endif

/* coordctl, private: what its command files share.  coordctl.c has main(),
 * the help texts, the table of commands and the commands that change
 * things; listing.c the ones that look (status, list, show); connect.c how
 * a command reaches a broker; ctl.c, below them all, the options, the error
 * reporting and the small formatting they use.  Not installed. */
#ifndef COORD_CTL_H
#define COORD_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "coord.h"

/* Exit statuses (coordctl --help lists them; scripts depend on them). */
enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 64, EX_UNAVAILABLE = 69, EX_TEMPFAIL = 75 };

/* A command: its name (its argv[0]), what runs it, and its --help text. */
struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
};

/* In ctl.c: */

extern const char *ctl_progname;
/* coordctl's --dir (NULL: none given) and --create, as main() read them. */
extern const char *ctl_dir_opt;
extern int ctl_create;
/* The command main() runs (NULL until then): whose help ctl_help_asked()
 * prints. */
extern const struct command *ctl_command;

/* Says that `what` failed with rc, on stderr, in this order:
 *     coordctl: WHAT: COORD_EXXX: message
 *     coordctl: DETAIL            (each line set with ctl_detail())
 *     coordctl: hint: HINT        (set with ctl_hint(), else rc's own)
 * and returns the exit status rc gives (coordctl --help). */
int ctl_complain(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The hint of the next ctl_complain(), in place of the code's own; and a
 * line of detail (what the broker said, ...), up to four.  Text from
 * elsewhere in them is escaped when printed. */
void ctl_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ctl_detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A usage error of command cmd: ctl_complain(COORD_EINVAL) with the hint
 * "see `coordctl CMD --help`"; returns EX_USAGE. */
int ctl_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Canonicalises a RESOURCE argument into name (COORD_NAME_MAX + 1 bytes).
 * Returns 0, or the exit status after saying what is wrong with it. */
int ctl_canonical_arg(const char *what, const char *arg, char *name);

/* 1 if argv[1] asks for the command's help (--help or -h), after printing
 * ctl_command's on stdout. */
int ctl_help_asked(int argc, char **argv);

/* "-", "512 B", "3.5 KiB", "12.0 MiB". */
void ctl_fmt_bytes(char *buf, size_t size, int64_t bytes);

/* "none", or "max hold 60 s, recall grace 10 s" (what is set). */
const char *ctl_limits_text(const coord_limits_t *l, char *buf, size_t size);

/* "read" or "write". */
const char *ctl_mode_name(int mode);

/* A holder or waiter as the listing commands keep it: coord_lease_info_t
 * with its texts as long as they are (in the list's arena), so a listing
 * of many leases takes memory for what they say. */
struct ctl_lease {
	int waiting, mode;
	uint64_t lease_id, token, pid, uid, age_ms;
	int64_t recalled_ms;
	const char *resource, *command, *label;
	int adopted, cached, kernel_wait;
};

struct ctl_leases {
	struct ctl_lease *v;
	size_t n, cap;
	struct ctl_arena *arena;
};

/* Appends e (copied) to l.  Returns 0, or COORD_ENOMEM. */
int ctl_leases_add(struct ctl_leases *l, const coord_lease_info_t *e);

/* Every holder and waiter of c's broker (coord_list_each()) into l, which
 * starts empty.  Returns 0 or a COORD_E* code; free l either way. */
int ctl_list(coord_t *c, struct ctl_leases *l);

void ctl_leases_free(struct ctl_leases *l);

/* In connect.c: */

/* Connects to the broker of the instance directory (--dir, $COORD_DIR or
 * the default).  With autostart, starts one if none runs (see connect.c:
 * only where an instance is, or for the default directory, or with
 * --create), and explains a start that failed with the broker's own
 * words.  Returns 0, or the exit status after saying what failed
 * ("WHAT: connect ..."). */
int ctl_connect(coord_t **c, int autostart, const char *what);

/* Connects without starting a broker, and says nothing: returns 0 or the
 * COORD_E* code (the hint for COORD_EPERM is set). */
int ctl_try_connect(coord_t **c);

/* The instance directory the commands use, resolved as the library does,
 * into buf; returns 0 or a COORD_E* code. */
int ctl_instance_dir(char *buf, size_t size);

/* 1 if dir holds an instance (a coordd.lock or a state.mdb), 0 if not. */
int ctl_is_instance(const char *dir);

/* 1 if the commands use the default instance directory: no --dir, or one
 * naming the directory coord_instance_dir(NULL) gives. */
int ctl_default_dir(void);

/* Complains that dir holds no instance (exit EX_UNAVAILABLE): what tried
 * it, the directory, and (can_create: the command could make one) that
 * --create makes one. */
int ctl_no_instance(const char *what, const char *dir, int can_create);

/* The commands of listing.c. */
int cmd_status(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_show(int argc, char **argv);

#endif

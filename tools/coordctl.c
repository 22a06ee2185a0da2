/* coordctl: the admin and script tool.
 *
 * Subcommands talk to the broker of the instance directory through the
 * public calls of libcoord (coord_status(), coord_list(), coord_show(),
 * ...), like any other program: nothing here knows the wire protocol.
 * This file is the top of coordctl: main() (the options and the dispatch
 * to a command), the help texts (the source of coordctl(1): each says
 * exactly which options exist) and the commands that change things;
 * listing.c has those that look (status, list, show), share.c
 * setup-shared and share, connect.c how a broker is reached or started,
 * and ctl.c, below them all, the error reporting every command uses.
 * Only `run`, `checkpoint`, `policy` and `limit` start a broker when none
 * is running, and only where an instance is (or with --create); the
 * others never do, so looking never changes anything.
 *
 * A command that fails says, on stderr, what it tried, the COORD_E* code
 * and a hint that fixes it, in that order, and exits with the status its
 * help gives (see ctl_complain() in ctl.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "ctl.h"
#include "doctor.h"
#include "kernel_locks.h"
#include "metrics_cmd.h"
#include "share.h"
#include "watch.h"
#include "text.h"

/* ---- help ---- */

static const char exit_status_text[] =
        "Exit status: 0 ok; 1 failed (the message names the COORD_E* code); 64 usage\n"
        "error; 69 no broker reachable or startable, no instance in --dir, or the\n"
        "instance refused this user; 75 the resource was busy or the lease not granted\n"
        "in time.\n";

static const char main_help[] =
        "usage: coordctl [--dir DIR] [--create] COMMAND [ARGS]\n"
        "       coordctl COMMAND --help\n"
        "\n"
        "Look at and take the leases of a coord instance, and manage its broker.\n"
        "\n"
        "Commands:\n"
        "  status        is a broker running: its directory, pid, uptime and counts\n"
        "  list          every lease and waiter, with filters\n"
        "  show          one resource: kind, policy, limits, token, checkpoints, leases\n"
        "  run           run a command while holding a read or write lease\n"
        "  checkpoint    checkpoint a SQLite or DuckDB file now, through the broker\n"
        "  policy        set a resource's checkpoint policy\n"
        "  limit         show or set a resource's hold limits\n"
        "  revoke        take leases back from their holders\n"
        "  doctor        what is wrong with a database file (changes nothing)\n"
        "  watch         a live view of holders, waiters, recalls and checkpoints\n"
        "  metrics       the broker's metrics in the Prometheus text format\n"
        "  setup-shared  make an instance shared by a group, and start its broker\n"
        "  share         tie a directory of databases to an instance\n"
        "  help [COMMAND]  this text, or a command's\n"
        "\n"
        "Options, before COMMAND:\n"
        "  --dir DIR   the instance directory; default $COORD_DIR, else /var/lib/coord\n"
        "              if it is a shared instance, else $XDG_STATE_HOME/coord or\n"
        "              ~/.local/state/coord (/var/lib/coord for root)\n"
        "  --create    let run, checkpoint, policy and limit start a broker in a --dir\n"
        "              that holds no instance yet (no coordd.lock, no state.mdb), creating\n"
        "              the directory; without it they refuse, so that a typo in --dir\n"
        "              cannot start a second instance.  The default directory needs none.\n"
        "  -h, --help  this text\n"
        "\n"
        "RESOURCE is key:NAME for a key (NAME not empty, no '/'); any other RESOURCE is a\n"
        "file path, relative to the current directory or absolute, whether the file\n"
        "exists or not (so db.sqlite is ./db.sqlite, before and after it is created).\n"
        "\n"
        "Text that comes from elsewhere (labels, command names and lines, paths,\n"
        "messages) never reaches the terminal raw: tables show \\n \\r \\t, \\\\ for a\n"
        "backslash, \\xHH for other control bytes and each byte of invalid UTF-8, and\n"
        "\\uXXXX for C1 controls and invisible or bidirectional characters (for every\n"
        "non-ASCII character outside a UTF-8 locale).  --json output is UTF-8 JSON:\n"
        "control characters (also DEL, C1, U+2028, U+2029) as \\uXXXX, each byte of\n"
        "invalid UTF-8 as U+FFFD, and then a KEY_hex field beside the key with the\n"
        "exact bytes in hex.\n"
        "\n"
        "Environment: COORD_DIR (the instance directory), COORD_BROKER (the coordd to\n"
        "start; default coordd on PATH), COORD_NO_AUTOSTART=1 (never start one).\n"
        "\n"
        "%s"
        "run returns its command's status; doctor 0 healthy, 1 problems, 2 cannot inspect.\n";

static const char status_help[] =
        "usage: coordctl status [--json]\n"
        "\n"
        "Whether a broker runs for the instance directory, and if so its pid, uptime,\n"
        "protocol, clients and lease counts.  Never starts a broker.\n"
        "\n"
        "  --json   one object: {\"broker\":true, \"pid\", \"uptime_ms\", \"protocol\",\n"
        "           \"dir\", \"sharing\", \"clients\", \"leases\", \"waiters\",\n"
        "           \"resources\"}; with no broker {\"broker\":false, \"dir\",\n"
        "           \"instance\": whether the directory holds one}\n"
        "\n"
        "Exit status: 0 running; 69 no broker running (also: no instance in --dir, or\n"
        "the instance refused this user); 1 the broker could not be asked; 64 usage.\n";

static const char list_help[] =
        "usage: coordctl list [--json] [--wide] [--resource RESOURCE] [--pid PID]\n"
        "                     [--mode read|write] [--waiting]\n"
        "\n"
        "Every lease held and every request waiting, holders first, in the broker's\n"
        "order.  Never starts a broker; with none running, nothing is held.\n"
        "\n"
        "  --resource RESOURCE  only this resource\n"
        "  --pid PID            only the leases of process PID: the process that holds\n"
        "                       or waits, or the command a `coordctl run` runs\n"
        "  --mode read|write    only leases of this mode\n"
        "  --waiting            only the waiting requests\n"
        "  --wide               more columns, nothing cut: UID, LEASE (the id `coordctl\n"
        "                       revoke` takes), TOKEN, LABEL and the whole COMMAND\n"
        "  --json               one object, for scripts (below)\n"
        "\n"
        "Columns: STATE (held or wait), MODE, PID, COMMAND (the command line of what\n"
        "holds the lease: for a `coordctl run` holder the command it runs; cut to 24\n"
        "columns unless --wide; the broker's command name when /proc cannot tell),\n"
        "AGE (held or waited for: 450ms, 3.2s, 42s, 3m12s, 2h05m, 3d04h), RESOURCE\n"
        "[LABEL], then notes: (recalled 3s ago), (adopted: a restarted broker took the\n"
        "lease over), (waiting for kernel lock held by pid N (COMM), outside this\n"
        "broker).  An empty list says \"no leases held or waited for in DIR\".\n"
        "\n"
        "--json: {\"leases\": [LEASE...], \"waiters\": [WAITER...], \"broker\": true|false,\n"
        "\"dir\"}.  LEASE: {\"id\", \"resource\", \"mode\": \"read\"|\"write\", \"pid\", \"uid\",\n"
        "\"command\" (the broker's comm), \"label\", \"token\", \"age_ms\", \"recalled_ms\"\n"
        "(null: not recalled), \"adopted\", \"kernel_lock_holder\" (null, or {\"pid\",\n"
        "\"comm\", \"mode\", \"locked_by\", \"holders\": [{\"pid\", \"comm\"}], \"unseen\"}),\n"
        "\"cmdline\" ([ARG...] of what holds it, or null), \"cmdline_pid\" (whose\n"
        "cmdline, or null)}.  WAITER: {\"resource\", \"mode\", \"pid\", \"command\",\n"
        "\"label\", \"waited_ms\", \"cmdline\", \"cmdline_pid\"}.  A string that is not\n"
        "valid UTF-8 gets a sibling KEY_hex (\"resource_hex\", \"label_hex\", ...;\n"
        "\"cmdline_hex\": [HEX...]) with its exact bytes.\n"
        "\n"
        "Exit status: 0 listed (also when no broker runs); 69 no instance in --dir, or\n"
        "the instance refused this user; 1 the broker could not be asked; 64 usage.\n";

static const char show_help[] =
        "usage: coordctl show [--json] [--wide] RESOURCE\n"
        "\n"
        "One resource: its kind (detected now), checkpoint policy, hold limits, last\n"
        "write token, last checkpoint, and its holders and waiters as `list` shows\n"
        "them.  A resource the broker has never seen is shown with its defaults.\n"
        "Never starts a broker.\n"
        "\n"
        "  --wide   the lease table as `list --wide`\n"
        "  --json   {\"resource\", \"kind\": \"plain\"|\"sqlite\"|\"duckdb\", \"policy\":\n"
        "           {\"name\", \"sqlite_mode\" (null unless sqlite or auto), \"command\"\n"
        "           (null unless exec), \"timeout_ms\"}, \"limits\": {\"max_hold_ms\",\n"
        "           \"recall_grace_ms\"} (0: off), \"token\", \"holder_count\",\n"
        "           \"waiter_count\", \"checkpoint_running\", \"duckdb_available\",\n"
        "           \"checkpoints\", \"last_checkpoint\" (null, or {\"at_ms\" (since the\n"
        "           epoch), \"duration_us\", \"result\": \"ok\"|\"COORD_E...\", \"wal_before\",\n"
        "           \"wal_after\" (bytes, or null)}), \"message\", \"leases\", \"waiters\"\n"
        "           (as in `list --json`)}\n"
        "\n"
        "Exit status: 0 shown; 69 no broker running, no instance in --dir, or refused;\n"
        "64 usage or a bad RESOURCE; 1 other failures.\n";

static const char run_help[] =
        "usage: coordctl run --read|--write RESOURCE [--timeout SECONDS] [--label TEXT]\n"
        "                    [--] COMMAND [ARGS...]\n"
        "\n"
        "Runs COMMAND while holding a lease on RESOURCE, like flock(1): waits for the\n"
        "lease, runs the command with the file's kernel lock inherited, and releases\n"
        "the lease once the command and everything it started have exited.  Starts a\n"
        "broker when none runs (see --create in `coordctl --help`).  Options may come\n"
        "before or after RESOURCE; \"--\" or the first word after RESOURCE starts the\n"
        "command.  Signals (INT, TERM, HUP, QUIT) are passed on to the command.\n"
        "\n"
        "  --read | --write    the lease's mode (one of them is required)\n"
        "  --timeout SECONDS   give up after this long (0: try once; default: wait\n"
        "                      forever)\n"
        "  --label TEXT        shown by `coordctl list` (at most 127 bytes; longer is cut)\n"
        "\n"
        "The command's environment has COORD_RESOURCE (the canonical name), COORD_MODE,\n"
        "COORD_TOKEN (the fencing token) and COORD_LEASE_ID.\n"
        "\n"
        "Exit status: the command's own (128+N if killed by signal N); 75 the lease was\n"
        "not granted within --timeout; 69 no broker reachable or startable, or no\n"
        "instance in --dir; 64 usage; 126 the command cannot be executed, 127 not found;\n"
        "1 other failures (the message names the COORD_E* code).\n";

static const char checkpoint_help[] =
        "usage: coordctl checkpoint RESOURCE\n"
        "\n"
        "Checkpoints a database file now, through the broker: the request waits its\n"
        "turn like a writer, and runs once nobody holds the file.  SQLite and DuckDB\n"
        "files are checkpointed by kind; set another way with `coordctl policy`.\n"
        "Starts a broker when none runs (see --create in `coordctl --help`).\n"
        "Prints the time taken and the WAL size before and after.\n"
        "\n"
        "Exit status: 0 done; 1 failed (not a database, policy none, no such file,\n"
        "the broker may not write it, the engine failed: the message says which);\n"
        "69 no broker; 64 usage or a bad RESOURCE.\n";

static const char policy_help[] =
        "usage: coordctl policy RESOURCE SPEC [--timeout SECONDS]\n"
        "\n"
        "Sets how the broker checkpoints RESOURCE after a write lease, durably.\n"
        "SPEC: auto (by the file's kind; the default) | none | sqlite[:passive|full|\n"
        "restart|truncate] | duckdb | exec:COMMAND (run as `sh -c COMMAND\n"
        "coord-checkpoint PATH`, at most 1023 bytes).\n"
        "\n"
        "  --timeout SECONDS   time limit of one checkpoint (0 < s <= 86400; default:\n"
        "                      the broker's --checkpoint-timeout)\n"
        "\n"
        "Starts a broker when none runs (see --create in `coordctl --help`).\n"
        "Exit status: 0 set; 64 usage, a bad SPEC or RESOURCE; 69 no broker; 1 failed.\n";

static const char limit_help[] =
        "usage: coordctl limit RESOURCE [--max-hold SECONDS] [--recall-grace SECONDS]\n"
        "\n"
        "Shows, or sets durably, the hold limits of RESOURCE: a lease held longer\n"
        "than --max-hold, or still held --recall-grace after its recall, is revoked\n"
        "(as `coordctl revoke` does).  0 turns a limit off; options not given keep\n"
        "their value; without options the limits are shown.  Setting them needs root,\n"
        "the broker's user or its --admin-group.  Starts a broker when none runs.\n"
        "\n"
        "  --max-hold SECONDS       0 <= s <= 2592000 (30 days)\n"
        "  --recall-grace SECONDS   0 <= s <= 2592000\n"
        "\n"
        "Exit status: 0 shown or set; 64 usage; 69 no broker; 1 not permitted or failed.\n";

static const char revoke_help[] =
        "usage: coordctl revoke [--grace SECONDS] LEASE_ID | --pid PID | RESOURCE\n"
        "\n"
        "Takes leases back: the broker recalls each lease, waits --grace, sends its\n"
        "holder SIGTERM, waits --grace again, then sends SIGKILL.  A lease is only\n"
        "taken back once its holder released it or exited.  LEASE_ID is the LEASE\n"
        "column of `coordctl list --wide`; --pid takes every lease of a process;\n"
        "RESOURCE every holder of it.  Only the holders' user, root or a member of the\n"
        "broker's --admin-group may revoke.  Never starts a broker.\n"
        "\n"
        "  --grace SECONDS   each step's wait (0 to 3600; default 5)\n"
        "\n"
        "Exit status: 0 revoked; 1 not permitted (the lease is still held) or no such\n"
        "lease; 69 no broker; 64 usage.\n";

static const char doctor_help[] =
        "usage: coordctl doctor PATH\n"
        "\n"
        "A read-only look at a database file and its side files (SQLite -wal, -shm,\n"
        "-journal; DuckDB .wal): kind, owners and modes, processes that have it open,\n"
        "the broker's leases on it, leftover WALs and hot journals, and the commands\n"
        "that fix each problem, in the order to run them.  Changes nothing; never\n"
        "starts a broker.\n"
        "\n"
        "Exit status: 0 healthy; 1 problems found; 2 cannot inspect (no such file,\n"
        "not a regular file, unreadable); 64 usage.\n";

static const char setup_shared_help[] =
        "usage: coordctl setup-shared [--dir DIR] [--group NAME]\n"
        "\n"
        "As root: makes DIR (default /var/lib/coord) an instance shared by group NAME\n"
        "(default coord, created with groupadd --system if missing): the directory\n"
        "gets group NAME and mode 2770, and its broker is started.  Safe to run again.\n"
        "--dir here (or coordctl's own --dir) must be an absolute path.\n"
        "\n"
        "Exit status: 0 ok; 1 failed; 69 no broker could be started; 64 usage.\n";

static const char share_help[] =
        "usage: coordctl share PATH [--dir INSTANCE]\n"
        "\n"
        "Writes PATH's directory's (or PATH's, a directory) .coord-instance, naming\n"
        "the instance directory INSTANCE (default: coordctl's --dir, $COORD_DIR or the\n"
        "default; it must exist): clients of any other instance then get\n"
        "COORD_EINSTANCE on the files there.\n"
        "\n"
        "Exit status: 0 ok; 1 failed; 64 usage.\n";

/* ---- checkpoint ---- */

/* What a checkpoint refused with COORD_ENOTSUP is, as a detail and a hint
 * (the broker gives the code, and a message only for some cases). */
static void explain_enotsup(const char *name, const coord_resource_info_t *info)
{
	struct stat st;
	if (!strncmp(name, "key:", 4)) {
		ctl_detail("%s is a key, a name with no file behind it", name);
		ctl_hint("checkpoint the database file itself: `coordctl checkpoint PATH`");
	} else if (stat(name, &st) < 0) {
		ctl_detail("there is no file %s (%s)", name, strerror(errno));
		ctl_hint("check the path; the resource is named as the application names it");
	} else if (!S_ISREG(st.st_mode)) {
		ctl_detail("%s is not a regular file", name);
		ctl_hint("give the path of the database file itself");
	} else if (info->policy.policy == COORD_POLICY_NONE) {
		ctl_detail("%s has the checkpoint policy none", name);
		ctl_hint("`coordctl policy %s auto` lets the broker checkpoint it again", name);
	} else if (info->kind == COORD_KIND_DUCKDB || info->policy.policy == COORD_POLICY_DUCKDB) {
		ctl_detail("the broker cannot load DuckDB: %s",
		           info->message[0] ? info->message : "(it gave no reason)");
		ctl_hint("install libduckdb.so, or restart coordd with --duckdb-lib PATH");
	} else {
		ctl_detail("%s is neither a SQLite nor a DuckDB database (its first bytes say %s), "
		           "so the broker has nothing to checkpoint",
		           name, coord_kind_name(info->kind));
		ctl_hint("if it is a database of another kind, tell the broker how: `coordctl policy "
		         "%s exec:COMMAND`",
		         name);
	}
}

static int cmd_checkpoint(int argc, char **argv)
{
	coord_resource_info_t info;
	char name[COORD_NAME_MAX + 1], before[32], after[32];
	coord_t *c;
	int rc;
	if (ctl_help_asked(argc, argv))
		return EX_OK;
	if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
		return ctl_usage("checkpoint", argc < 2 ? "which RESOURCE?" : "one RESOURCE only");
	if ((rc = ctl_canonical_arg("checkpoint", argv[1], name)))
		return rc;
	/* checkpointing may start a broker */
	if ((rc = ctl_connect(&c, 1, "checkpoint")))
		return rc;
	memset(&info, 0, sizeof info);
	rc = coord_checkpoint(c, name, &info);
	coord_disconnect(c);
	if (rc == COORD_ENOTSUP) {
		explain_enotsup(name, &info);
	} else if (rc < 0 && info.message[0]) {
		/* The broker took its turn on the file and says what went wrong. */
		ctl_detail("the broker says: %s", info.message);
		if (rc == COORD_EPERM)
			ctl_hint("the broker's user must be able to write %s and its side files: run "
			         "`coordctl doctor %s` and apply its chown first",
			         name, name);
		else
			ctl_hint("see `coordctl show %s` and event=checkpoint in the broker's coordd.log",
			         name);
	} else if (rc == COORD_ENOENT) {
		ctl_hint("check the path; the resource is named as the application names it");
	} else if (rc == COORD_EPERM) {
		ctl_hint("the broker's user must be able to write %s: run `coordctl doctor %s`", name,
		         name);
	}
	if (rc < 0) {
		int st = ctl_complain(rc, "checkpoint %s", name);
		return st == EX_UNAVAILABLE && rc == COORD_EPERM ? EX_FAIL : st;
	}
	ctl_fmt_bytes(before, sizeof before, info.wal_before);
	ctl_fmt_bytes(after, sizeof after, info.wal_after);
	printf("checkpointed ");
	text_put(stdout, name);
	printf(" (%s) in %.1f ms: WAL %s -> %s\n", coord_kind_name(info.kind),
	       info.last_duration_us / 1000.0, before, after);
	if (info.message[0]) {
		text_put(stdout, info.message);
		putchar('\n');
	}
	return EX_OK;
}

/* ---- revoke ---- */

static int cmd_revoke(int argc, char **argv)
{
	coord_revoke_t what = { 0 };
	const char *target = NULL;
	char *end;
	coord_t *c;
	int rc;

	if (ctl_help_asked(argc, argv))
		return EX_OK;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--grace") && i + 1 < argc) {
			double s = strtod(argv[++i], &end);
			if (*end || end == argv[i] || !(s >= 0) || s > 3600)
				return ctl_usage("revoke", "--grace takes seconds (0 to 3600), not '%s'",
				                 argv[i]);
			what.grace_ms = s * 1000 < 1 ? 1 : (int)llround(s * 1000); /* 0: at once */
		} else if (!strcmp(argv[i], "--pid") && i + 1 < argc && !target) {
			what.pid = strtol(argv[++i], &end, 10);
			if (*end || what.pid <= 0)
				return ctl_usage("revoke", "--pid takes a process id, not '%s'", argv[i]);
			target = argv[i];
		} else if (argv[i][0] != '-' && !target) {
			target = argv[i];
		} else {
			return ctl_usage("revoke", "unexpected '%s'", argv[i]);
		}
	}
	if (!target)
		return ctl_usage("revoke", "what? give a LEASE_ID, --pid PID or a RESOURCE");
	if (!what.pid) {
		unsigned long long id = strtoull(target, &end, 10);
		if (!*end && id > 0)
			what.lease_id = id;
		else
			what.resource = target;
	}
	if ((rc = ctl_connect(&c, 0, "revoke")))
		return rc;
	rc = coord_revoke(c, &what);
	coord_disconnect(c);
	if (rc == COORD_EPERM) {
		ctl_detail("the lease is still held");
		ctl_hint("revoke it as its holder's user, as root or as a member of coordd's "
		         "--admin-group, and run coordd as root to revoke other users' leases");
		ctl_complain(rc, "revoke %s", target);
		return EX_FAIL;
	}
	if (rc < 0)
		return ctl_complain(rc, "revoke %s", target);
	printf("revoked ");
	text_put(stdout, target);
	putchar('\n');
	return EX_OK;
}

/* ---- policy ---- */

static int cmd_policy(int argc, char **argv)
{
	coord_policy_t policy;
	char name[COORD_NAME_MAX + 1];
	const char *spec;
	double secs = 0;
	int rc;
	coord_t *c;

	if (ctl_help_asked(argc, argv))
		return EX_OK;
	if (argc == 5 && !strcmp(argv[3], "--timeout")) {
		char *end;
		secs = strtod(argv[4], &end);
		if (*end || !(secs > 0) || secs > 86400)
			return ctl_usage("policy", "--timeout takes seconds (0 < s <= 86400), not '%s'",
			                 argv[4]);
	} else if (argc != 3) {
		return ctl_usage("policy", "give RESOURCE SPEC [--timeout SECONDS]");
	}
	spec = argv[2];
	if ((rc = ctl_canonical_arg("policy", argv[1], name)))
		return rc;
	if (!strncmp(spec, "exec:", 5) && strlen(spec + 5) > COORD_COMMAND_MAX)
		return ctl_usage("policy", "the exec command is longer than %d bytes",
		                 COORD_COMMAND_MAX);
	if (coord_policy_parse(spec, &policy) < 0)
		return ctl_usage("policy",
		                 "bad policy '%s': use auto, none, sqlite[:passive|full|restart|"
		                 "truncate], duckdb or exec:COMMAND",
		                 spec);
	policy.timeout_ms = (uint32_t)llround(secs * 1000);
	if ((rc = ctl_connect(&c, 1, "policy")))
		return rc;
	rc = coord_set_policy(c, name, &policy);
	coord_disconnect(c);
	if (rc < 0)
		return ctl_complain(rc, "policy %s %s", name, spec);
	text_put(stdout, name);
	printf(": policy ");
	text_put(stdout, spec);
	putchar('\n');
	return EX_OK;
}

/* ---- limit ---- */

static int cmd_limit(int argc, char **argv)
{
	char name[COORD_NAME_MAX + 1], buf[96];
	coord_resource_info_t info;
	coord_limits_t want = { 0 };
	int rc, set_max = 0, set_grace = 0;
	coord_t *c;

	if (ctl_help_asked(argc, argv))
		return EX_OK;
	if (argc < 2 || argc % 2)
		return ctl_usage("limit", "give RESOURCE [--max-hold SECONDS] [--recall-grace SECONDS]");
	for (int i = 2; i < argc; i += 2) {
		int max = !strcmp(argv[i], "--max-hold");
		char *end;
		double secs = strtod(argv[i + 1], &end);
		if (!max && strcmp(argv[i], "--recall-grace"))
			return ctl_usage("limit", "unknown option '%s'", argv[i]);
		if (*end || !*argv[i + 1] || !(secs >= 0) || secs > COORD_LIMIT_MAX_SECONDS)
			return ctl_usage("limit", "%s takes seconds (0 <= s <= %d; 0 turns it off), not '%s'",
			                 argv[i], COORD_LIMIT_MAX_SECONDS, argv[i + 1]);
		if (max) {
			want.max_hold_ms = (uint32_t)llround(secs * 1000);
			set_max = 1;
		} else {
			want.recall_grace_ms = (uint32_t)llround(secs * 1000);
			set_grace = 1;
		}
	}
	if ((rc = ctl_canonical_arg("limit", argv[1], name)))
		return rc;
	if ((rc = ctl_connect(&c, 1, "limit")))
		return rc;
	/* Options change what they name and keep the rest as it is. */
	rc = coord_show(c, name, &info, NULL, NULL);
	if (set_max)
		info.limits.max_hold_ms = want.max_hold_ms;
	if (set_grace)
		info.limits.recall_grace_ms = want.recall_grace_ms;
	if (rc == 0 && (set_max || set_grace))
		rc = coord_set_limits(c, name, &info.limits);
	coord_disconnect(c);
	if (rc == COORD_EPERM) {
		/* Connected, so the instance is ours to use: the operation is
		 * what is refused. */
		ctl_hint("hold limits signal holders, so only root, the broker's user and members of "
		         "its --admin-group may set them");
		ctl_complain(rc, "limit %s", name);
		return EX_FAIL;
	}
	if (rc < 0)
		return ctl_complain(rc, "limit %s", name);
	text_put(stdout, name);
	printf(": limits %s\n", ctl_limits_text(&info.limits, buf, sizeof buf));
	return EX_OK;
}

/* ---- run ---- */

/* `coordctl run` is the subreaper of its command: every process the
 * command starts, directly or not, that loses its parent becomes
 * coordctl's child, and coordctl releases the lease only once the last of
 * them has exited.  So a job's background children (`sh -c 'backfill &'`)
 * stay under the lease whether the command exits or is killed, and the
 * release can never drop the kernel lock they share with coordctl (an
 * flock belongs to the open file description that all of them inherited,
 * and coordctl's unlock would unlock it for them too).  If coordctl itself
 * is killed, PR_SET_PDEATHSIG kills the command, and what the command
 * started keeps the inherited kernel lock, so the next holder waits for
 * it. */
static volatile sig_atomic_t child_pid, pending_signal;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
	pending_signal = sig;
}

/* Sends sig to every child coordctl has now: the command's descendants
 * that were left to it as subreaper (in /proc/self/task/TID/children). */
static void signal_children(int sig)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *p = buf, *end; *p; p = end) {
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid > 0)
			kill((pid_t)pid, sig);
	}
}

/* Reaps the command's orphaned descendants until none is left, passing on
 * the signals coordctl gets meanwhile (a revoke's SIGTERM, Ctrl+C). */
static void wait_descendants(void)
{
	for (;;) {
		int sig = pending_signal;
		if (sig) {
			pending_signal = 0;
			signal_children(sig);
		}
		if (waitpid(-1, NULL, 0) < 0 && errno != EINTR)
			return; /* ECHILD: the last one is gone */
	}
}

static int cmd_run(int argc, char **argv)
{
	coord_t *c = NULL;
	coord_lease_t *lease = NULL;
	const char *label = NULL, *resource;
	int mode = 0, timeout_ms = -1, i, rc, status, kfd;
	pid_t parent, pid;
	char buf[64], name[COORD_NAME_MAX + 1];

	/* Options may come before or after RESOURCE; "--" or the first
	 * word after RESOURCE starts the command. */
	resource = NULL;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "--read") || !strcmp(a, "--write")) {
			if (mode)
				return ctl_usage("run", "give one of --read or --write");
			mode = a[2] == 'r' ? COORD_READ : COORD_WRITE;
		} else if (!strcmp(a, "--timeout") && i + 1 < argc) {
			char *end;
			double s = strtod(argv[++i], &end);
			if (*end || end == argv[i] || !(s >= 0) || s > 86400.0 * 365)
				return ctl_usage("run", "--timeout takes seconds, e.g. 0, 2.5 or 60, not '%s'",
				                 argv[i]);
			timeout_ms = (int)llround(s * 1000);
		} else if (!strcmp(a, "--label") && i + 1 < argc) {
			label = argv[++i];
		} else if (i == 1 && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
			fputs(run_help, stdout);
			return EX_OK;
		} else if (a[0] == '-' && a[1] == '-') {
			return ctl_usage("run", "unknown option or missing value: '%s'", a);
		} else if (!resource) {
			resource = a;
		} else {
			break;
		}
	}
	if (!mode || !resource || i >= argc)
		return ctl_usage("run", "%s", !mode ? "give --read or --write"
		                              : !resource ? "which RESOURCE?"
		                                          : "which COMMAND? (after RESOURCE, or after --)");
	optind = i;
	/* A bad name is told before any broker is started for it. */
	if ((rc = ctl_canonical_arg("run", resource, name)))
		return rc;
	resource = name;

	if ((rc = ctl_connect(&c, 1, "run")))
		return rc;
	rc = coord_acquire(c, resource, mode, timeout_ms, label, &lease);
	if (rc < 0) {
		if (rc == COORD_ETIMEDOUT || rc == COORD_EBUSY)
			ctl_detail("the %s lease was not granted within %.3gs", ctl_mode_name(mode),
			           timeout_ms / 1000.0);
		if (rc == COORD_ETIMEDOUT || rc == COORD_EBUSY)
			ctl_hint("see who holds it with `coordctl list --resource %s`", resource);
		if (rc == COORD_EINSTANCE) {
			char hint[1024];
			share_explain_einstance(resource, coord_dir(c), hint, sizeof hint);
			ctl_hint("%s", hint);
		}
		status = ctl_complain(rc, "run: %s lease on %s", ctl_mode_name(mode), resource);
		coord_disconnect(c);
		return status;
	}

	parent = getpid();
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	{
		/* No SA_RESTART: a signal must interrupt wait_descendants()'s
		 * waitpid() so it is passed on at once. */
		struct sigaction sa = { .sa_handler = forward_signal };
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
		sigaction(SIGQUIT, &sa, NULL);
	}
	kfd = coord_lease_fd(lease);
	pid = fork();
	if (pid < 0) {
		status = ctl_complain(COORD_ESYS, "run: fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		/* If coordctl dies (even by SIGKILL), the lease goes with it and
		 * so must the command. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(EX_TEMPFAIL);
		/* The command and whatever it starts inherit the file's kernel
		 * lock, as with flock(1): a descendant that outlives coordctl
		 * keeps the file locked, so the next holder waits for it. */
		if (kfd >= 0)
			fcntl(kfd, F_SETFD, 0);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		setenv("COORD_RESOURCE", coord_lease_resource(lease), 1);
		setenv("COORD_MODE", ctl_mode_name(mode), 1);
		snprintf(buf, sizeof buf, "%" PRIu64, coord_lease_token(lease));
		setenv("COORD_TOKEN", buf, 1);
		snprintf(buf, sizeof buf, "%" PRIu64, coord_lease_id(lease));
		setenv("COORD_LEASE_ID", buf, 1);
		execvp(argv[optind], argv + optind);
		{
			int err = errno;
			ctl_detail("%s", strerror(err));
			ctl_hint("%s", err == ENOENT ? "check the command's name and PATH"
			                             : "check that it is a program you may execute");
			ctl_complain(COORD_ESYS, "run: execute %s", argv[optind]);
			_exit(err == ENOENT ? 127 : 126);
		}
	}
	child_pid = pid;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			status = ctl_complain(COORD_ESYS, "run: waitpid: %s", strerror(errno));
			goto out;
		}
	}
	status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	child_pid = 0;
	wait_descendants();
out:
	rc = coord_release(lease);
	if (rc < 0 && rc != COORD_ENOLEASE)
		ctl_complain(rc, "run: release %s", resource);
	coord_disconnect(c);
	return status;
}

/* ---- doctor ---- */

static int cmd_doctor(int argc, char **argv)
{
	struct ctl_leases l = { 0 };
	struct ctl_lease *v;
	struct doctor_lease *dl = NULL;
	char name[COORD_NAME_MAX + 1];
	size_t n = 0, count = 0;
	coord_t *c;
	int broker_up = 0, rc;
	if (ctl_help_asked(argc, argv))
		return EX_OK;
	if (argc != 2)
		return ctl_usage("doctor", argc < 2 ? "which PATH?" : "one PATH only");
	if (coord_canonicalize(argv[1], name, sizeof name) < 0)
		snprintf(name, sizeof name, "%s", argv[1]);
	if (ctl_try_connect(&c) == 0) {
		broker_up = ctl_list(c, &l) == 0;
		coord_disconnect(c);
	}
	v = l.v;
	count = broker_up ? l.n : 0;
	dl = calloc(count + 1, sizeof *dl);
	for (size_t i = 0; dl && i < count; i++) {
		if (v[i].waiting || strcmp(v[i].resource, name))
			continue;
		dl[n].mode = ctl_mode_name(v[i].mode);
		dl[n].pid = (long)v[i].pid;
		dl[n].command = v[i].command;
		dl[n].token = v[i].token;
		n++;
	}
	rc = doctor_run(stdout, name, dl, n, broker_up);
	free(dl);
	ctl_leases_free(&l);
	return rc;
}

/* ---- shared instances (share.c) ---- */

static int cmd_setup_shared(int argc, char **argv)
{
	if (ctl_help_asked(argc, argv))
		return EX_OK;
	return share_setup_command(argc, argv, ctl_dir_opt);
}

static int cmd_share(int argc, char **argv)
{
	if (ctl_help_asked(argc, argv))
		return EX_OK;
	return share_mark_command(argc, argv, ctl_dir_opt);
}

static const char watch_help[] =
        "usage: coordctl watch [--json]\n"
        "\n"
        "A live, full-screen view of holders, waiters, ages, recalls and checkpoints,\n"
        "updated as events happen (q quits, Ctrl-L redraws).  --json: one event per\n"
        "line instead, for scripts (schema in coordctl(1)).  Never starts a broker.\n";

static const char metrics_help[] =
        "usage: coordctl metrics\n"
        "\n"
        "The broker's metrics in the Prometheus text format (coordctl(1)).  Never\n"
        "starts a broker.\n";

static int cmd_watch_run(int argc, char **argv)
{
	return cmd_watch(argc, argv, ctl_dir_opt);
}

static int cmd_metrics_run(int argc, char **argv)
{
	return cmd_metrics(argc, argv, ctl_dir_opt);
}

static const struct command commands[] = {
	{ "status", cmd_status, status_help },
	{ "list", cmd_list, list_help },
	{ "show", cmd_show, show_help },
	{ "run", cmd_run, run_help },
	{ "checkpoint", cmd_checkpoint, checkpoint_help },
	{ "policy", cmd_policy, policy_help },
	{ "limit", cmd_limit, limit_help },
	{ "revoke", cmd_revoke, revoke_help },
	{ "doctor", cmd_doctor, doctor_help },
	{ "watch", cmd_watch_run, watch_help },
	{ "metrics", cmd_metrics_run, metrics_help },
	{ "setup-shared", cmd_setup_shared, setup_shared_help },
	{ "share", cmd_share, share_help },
};

static const struct command *command_named(const char *name)
{
	for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
		if (!strcmp(name, commands[k].name))
			return &commands[k];
	return NULL;
}

static void main_usage(FILE *f)
{
	fprintf(f, main_help, exit_status_text);
}

int main(int argc, char **argv)
{
	const struct command *cmd;
	int i = 1;
	setlocale(LC_CTYPE, "");
	text_init();
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
			ctl_dir_opt = argv[i + 1];
			i += 2;
		} else if (!strcmp(argv[i], "--create")) {
			ctl_create = 1;
			i++;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			main_usage(stdout);
			return EX_OK;
		} else {
			ctl_hint("see `coordctl --help`");
			ctl_complain(COORD_EINVAL, "unknown option '%s'", argv[i]);
			return EX_USAGE;
		}
	}
	if (i >= argc) {
		main_usage(stderr);
		return EX_USAGE;
	}
	if (!strcmp(argv[i], "help")) {
		cmd = i + 1 < argc ? command_named(argv[i + 1]) : NULL;
		if (i + 1 < argc && !cmd) {
			ctl_hint("see `coordctl --help` for the commands");
			ctl_complain(COORD_EINVAL, "help: no command '%s'", argv[i + 1]);
			return EX_USAGE;
		}
		if (cmd)
			fputs(cmd->help, stdout);
		else
			main_usage(stdout);
		return EX_OK;
	}
	cmd = command_named(argv[i]);
	if (!cmd) {
		ctl_hint("see `coordctl --help` for the commands");
		ctl_complain(COORD_EINVAL, "unknown command '%s'", argv[i]);
		return EX_USAGE;
	}
	ctl_command = cmd;
	return cmd->run(argc - i, argv + i);
}

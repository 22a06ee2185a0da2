/* One line per event, key=value, for grep and journald: to stderr, to a
 * log file that is reopened on SIGHUP and rotated at a size, or to the
 * journal with every field a journal field. */
#ifndef COORD_LOG_H
#define COORD_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#define LOG_QUOTE_SLOTS 8
#define LOG_QUOTE_MAX 2200
/* A buffered log is written out when it holds this much. */
#define LOG_BUFFER_MAX (64u << 10)
/* --log-max-bytes when none is given: with one old file kept, the log
 * takes at most twice this (about 220,000 leases in each file). */
#define LOG_DEFAULT_MAX_BYTES (64ull << 20)
#define LOG_JOURNAL_SOCKET "/run/systemd/journal/socket"

enum log_target {
	LOG_STDERR,                /* the default (zero) */
	LOG_FILE,                  /* log_open_file() */
	LOG_JOURNAL,               /* log_open_journal() */
};

struct log {
	enum log_target target;
	char quoted[LOG_QUOTE_SLOTS][LOG_QUOTE_MAX];
	unsigned next_quoted;
	int buffered;              /* 1: lines wait in buf for log_flush() */
	char *buf;                 /* LOG_BUFFER_MAX bytes, allocated when first
	                              needed */
	size_t used;
	/* LOG_FILE */
	int fd;                    /* the file, opened O_APPEND */
	int dup_stderr;            /* fd 2 follows the file (--daemon) */
	char path[4096];
	uint64_t max_bytes;        /* rotated to PATH.1 before a write would
	                              take it past this; 0: never */
	uint64_t size;             /* bytes in the file */
	int rotate_errno;          /* the failure of the last rotation, 0: none */
	int64_t rotate_retry_ms;   /* when a failed rotation is tried again */
	/* LOG_JOURNAL */
	int journal_fd;            /* SOCK_DGRAM, connected to journal_addr */
	struct sockaddr_un journal_addr;
	int stderr_is_journal;     /* stderr is a journal stream (JOURNAL_STREAM):
	                              a line the socket refused goes there, with
	                              its priority as a "<N>" prefix */
	char *jbuf;                /* datagrams of one log_flush() */
	size_t jcap;
};

/* Writes "ts=... event=EVENT " followed by the printf-formatted fields and
 * a newline: at once, or, while log->buffered is set, into the buffer,
 * which is written out by log_flush() and whenever it holds
 * LOG_BUFFER_MAX bytes.  The line is the same either way. */
void log_event(struct log *log, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Writes out the buffered lines: to stderr in one write, to a file in one
 * write (after rotating it if the lines would take it past max_bytes),
 * or to the journal, one datagram per line, in sendmmsg() calls. */
void log_flush(struct log *log);

/* Logs to path from now on, appending (created 0600 if missing), and
 * rotates it to PATH.1 (the old PATH.1 replaced) before a write that
 * would take it past max_bytes (0: never): a file exceeds max_bytes only
 * by a single write (one buffered batch) larger than max_bytes.  With
 * dup_stderr, fd 2 is made the file too, and again at each reopen.
 * Returns 0, or -1 with errno set (nothing changed then). */
int log_open_file(struct log *log, const char *path, uint64_t max_bytes, int dup_stderr);
/* Logs to the journal from now on, over its native protocol on the
 * datagram socket at socket_path (NULL: LOG_JOURNAL_SOCKET): MESSAGE is
 * the line without its ts= field, and each key=value of it is a field
 * COORD_KEY (upper case, '-' as '_'; quoted values unescaped), with
 * PRIORITY from the event and SYSLOG_IDENTIFIER=coordd.  A datagram the
 * socket refuses goes to stderr as its line.  Returns 0, or -1 with
 * errno set. */
int log_open_journal(struct log *log, const char *socket_path);
/* 1 if $JOURNAL_STREAM names fd 2 (device:inode): systemd connected
 * stderr to the journal. */
int log_stderr_is_journal(void);
/* SIGHUP: writes out what is buffered, then opens the log file's path
 * again (a new file if it was moved away), keeping the old file's mode
 * and group, and logs event=log-reopened; for stderr and the journal it
 * only logs that line. */
void log_reopen(struct log *log);
/* The name of the target: "stderr", "file" or "journal". */
const char *log_target_name(enum log_target t);

/* Makes `log` the one whose buffered lines a crash (SIGSEGV, SIGABRT,
 * SIGFPE, SIGILL, unless something else handles them) writes out before
 * the signal takes its default course (to stderr for the journal); NULL:
 * none. */
void log_flush_on_crash(struct log *log);
/* Quotes s for a key=value field when needed ("a b" -> "\"a b\"").  The
 * result lives in one of LOG_QUOTE_SLOTS rotating buffers of `log`: use it
 * in the same log_event() call. */
const char *log_quote(struct log *log, const char *s);

#endif

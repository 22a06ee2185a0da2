/* coordctl doctor, the reading half: what the database file and its side
 * files hold, and which processes have them open.
 *
 * doctor.c turns what this file finds into the report; this file only
 * looks.  It reads the database header (which kind of file, WAL mode or
 * not), decodes SQLite's -wal (headers, salts, the checksum chain, commit
 * frames) and the wal-index header in -shm by hand after
 * https://www.sqlite.org/walformat.html, reads the first byte of a
 * -journal, and walks /proc/PID/fd (through procfs.c) for processes
 * holding any of them.
 *
 * It must never change anything: files are opened O_RDONLY, nothing is
 * created, deleted or locked, and nothing is opened through SQLite or
 * DuckDB, because opening the database replays or checkpoints the very WAL
 * the admin is asking about.  Bytes read from the files are only compared
 * and checksummed, never used as sizes or offsets beyond what the header
 * checks allow. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coord_proto.h"
#include "doctor_scan.h"
#include "procfs.h"

#define WAL_MAGIC 0x377f0682u /* low bit set: big-endian checksums */
#define WAL_VERSION 3007000u

/* ---- reading files ---- */

static int open_readonly(const char *path)
{
	return open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
}

/* Sets d->kind (through coord_proto_kind(), the one detector the broker
 * uses too) and d->wal_mode from the first bytes of the file. */
int doctor_scan_header(struct doctor *d)
{
	unsigned char head[100];
	ssize_t n;
	int fd = open_readonly(d->canon), err;
	if (fd < 0)
		return -1;
	n = pread(fd, head, sizeof head, 0);
	err = errno;
	close(fd);
	errno = err;
	if (n < 0)
		return -1;
	d->kind = coord_proto_kind(head, (size_t)n);
	/* Bytes 18 and 19, the write and read versions, are 2 in WAL mode. */
	d->wal_mode = d->kind == COORD_KIND_SQLITE && n >= 20 && head[18] == 2 && head[19] == 2;
	return 0;
}

static uint32_t get32(const unsigned char *p, int big_endian)
{
	if (big_endian)
		return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static int host_big_endian(void)
{
	const uint16_t one = 1;
	unsigned char low;
	memcpy(&low, &one, 1);
	return low == 0;
}

/* SQLite's WAL checksum over n bytes (a multiple of 8), continuing s. */
static void wal_checksum(const unsigned char *p, size_t n, int big_endian, uint32_t s[2])
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		s[0] += get32(p + i, big_endian) + s[1];
		s[1] += get32(p + i + 4, big_endian) + s[0];
	}
}

/* 1 if the -shm's wal-index header is intact, belongs to this WAL (same
 * salts) and says at least `frames` frames were copied into the database. */
static int wal_copied(struct doctor *d, const unsigned char *salts, uint32_t frames)
{
	unsigned char h[100];
	uint32_t s[2] = { 0, 0 };
	int big = host_big_endian(), fd, ok = 0;
	if (!d->side[SIDE_SHM].present)
		return 0;
	fd = open_readonly(d->side[SIDE_SHM].path);
	if (fd < 0)
		return 0;
	if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h)
		goto done;
	/* Two copies of the 48-byte header, in the host's byte order. */
	if (memcmp(h, h + 48, 48) || h[12] != 1 || get32(h, big) != WAL_VERSION)
		goto done;
	wal_checksum(h, 40, big, s);
	if (s[0] != get32(h + 40, big) || s[1] != get32(h + 44, big))
		goto done;
	if (memcmp(h + 32, salts, 8))
		goto done;
	/* mxFrame at 16, nBackfill (first word after the headers) at 96. */
	ok = get32(h + 16, big) >= frames && get32(h + 96, big) >= frames;
done:
	close(fd);
	return ok;
}

/* Counts the committed transactions in the -wal the way SQLite's recovery
 * does: a frame counts while its salts match the header and the checksum
 * chain holds; a frame with a non-zero "database size" ends a transaction.
 * Returns -1 only when out of memory. */
int doctor_scan_wal(struct doctor *d)
{
	const struct side *w = &d->side[SIDE_WAL];
	unsigned char hdr[32], fh[24], *page = NULL;
	uint32_t s[2] = { 0, 0 }, magic, page_size;
	int fd = -1, big, rc = 0;

	if (w->st.st_size == 0) {
		d->wal.state = WAL_EMPTY;
		return 0;
	}
	fd = open_readonly(w->path);
	if (fd < 0) {
		d->wal.state = WAL_UNREAD;
		d->wal.read_errno = errno;
		return 0;
	}
	d->wal.state = WAL_NO_HEADER;
	if (pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr)
		goto done;
	magic = get32(hdr, 1);
	page_size = get32(hdr + 8, 1);
	if ((magic & ~1u) != WAL_MAGIC || get32(hdr + 4, 1) != WAL_VERSION || page_size < 512 ||
	    page_size > 65536 || (page_size & (page_size - 1)))
		goto done;
	big = (int)(magic & 1);
	wal_checksum(hdr, 24, big, s);
	if (s[0] != get32(hdr + 24, 1) || s[1] != get32(hdr + 28, 1))
		goto done;
	d->wal.state = WAL_VALID;
	page = malloc(page_size);
	if (!page) {
		rc = -1;
		goto done;
	}
	for (uint32_t frame = 1; frame < UINT32_MAX; frame++) {
		off_t at = 32 + (off_t)(frame - 1) * (24 + (off_t)page_size);
		if (pread(fd, fh, sizeof fh, at) != (ssize_t)sizeof fh ||
		    pread(fd, page, page_size, at + 24) != (ssize_t)page_size)
			break;
		if (get32(fh, 1) == 0 || memcmp(fh + 8, hdr + 16, 8))
			break;
		wal_checksum(fh, 8, big, s);
		wal_checksum(page, page_size, big, s);
		if (s[0] != get32(fh + 16, 1) || s[1] != get32(fh + 20, 1))
			break;
		if (get32(fh + 4, 1)) {
			d->wal.commits++;
			d->wal.frames = frame;
		}
	}
	d->wal.copied = d->wal.commits && wal_copied(d, hdr + 16, d->wal.frames);
done:
	free(page);
	close(fd);
	return rc;
}

/* A rollback journal is "hot" (SQLite rolls it back on the next open) when
 * it is not empty and its header was written; a zeroed header means the
 * transaction never reached the database file.  Sets d->journal_hot. */
void doctor_scan_journal(struct doctor *d)
{
	unsigned char first = 0;
	int fd;
	d->journal_hot = 0;
	if (d->side[SIDE_JOURNAL].st.st_size == 0)
		return;
	fd = open_readonly(d->side[SIDE_JOURNAL].path);
	if (fd < 0) {
		d->journal_hot = -1; /* cannot tell */
		return;
	}
	if (pread(fd, &first, 1, 0) == 1)
		d->journal_hot = first != 0;
	else
		d->journal_hot = -1;
	close(fd);
}

/* ---- who has it open ---- */

/* Which of our files `link` (a /proc/PID/fd target) names, or -2. */
static int match_file(const struct doctor *d, const char *link, int *deleted)
{
	static const char gone[] = " (deleted)";
	size_t n = strlen(link);
	*deleted = n > sizeof gone - 1 && !strcmp(link + n - (sizeof gone - 1), gone);
	if (*deleted)
		n -= sizeof gone - 1;
	if (strlen(d->canon) == n && !strncmp(link, d->canon, n))
		return FILE_DATABASE;
	for (int i = 0; i < NSIDES; i++)
		if (strlen(d->side[i].path) == n && !strncmp(link, d->side[i].path, n))
			return i;
	return -2;
}

/* The same file reached by another path: a hard link, a bind mount, or a
 * process in a container, whose links show paths inside its own root.
 * Only fds whose name starts like the database's are stat()ed. */
static int match_inode(const struct doctor *d, int dfd, const char *fd_name, const char *link)
{
	const char *base = strrchr(d->canon, '/') + 1, *lbase = strrchr(link, '/');
	struct stat st;
	if (!lbase || strncmp(lbase + 1, base, strlen(base)) ||
	    fstatat(dfd, fd_name, &st, 0) < 0)
		return -2;
	if (st.st_dev == d->st.st_dev && st.st_ino == d->st.st_ino)
		return FILE_DATABASE;
	for (int i = 0; i < NSIDES; i++)
		if (d->side[i].present && st.st_dev == d->side[i].st.st_dev &&
		    st.st_ino == d->side[i].st.st_ino)
			return i;
	return -2;
}

static int add_holder(struct doctor *d, long pid, int fd, int file, int deleted)
{
	struct holder *h = realloc(d->holders, (d->nholders + 1) * sizeof *h);
	if (!h)
		return -1;
	d->holders = h;
	h += d->nholders++;
	h->pid = pid;
	h->fd = fd;
	h->file = file;
	h->deleted = deleted;
	procfs_comm(pid, h->comm, sizeof h->comm);
	return 0;
}

/* One descriptor of the walk (procfs_walk_fds()): a holder if it is on
 * the database or one of its side files. */
static int scan_fd(void *arg, long pid, int fd, int dirfd, const char *name)
{
	struct doctor *d = arg;
	char link[PATH_MAX + 16];
	ssize_t len = readlinkat(dirfd, name, link, sizeof link - 1);
	int file, deleted;
	if (len <= 0)
		return 0;
	link[len] = 0;
	file = match_file(d, link, &deleted);
	if (file == -2 && !deleted)
		file = match_inode(d, dirfd, name, link);
	return file == -2 ? 0 : add_holder(d, pid, fd, file, deleted);
}

/* Finds every process with the database or a side file open, from the
 * /proc/PID/fd links.  Processes that are gone are skipped; those we
 * may not look at are counted in d->unseen.  Returns -1 on ENOMEM. */
int doctor_scan_proc(struct doctor *d)
{
	return procfs_walk_fds(scan_fd, d, &d->unseen);
}

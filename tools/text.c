/* Writing text that came from elsewhere: labels, command names and command
 * lines of other users' processes, resource paths, checkpoint messages.
 * Any of them may hold any byte but NUL: invalid UTF-8, ESC sequences,
 * CR, BEL, newlines, C1 controls.  Nothing here ever writes one of those
 * bytes as it is.  Two rules, both in docs/design.md ("Output that cannot
 * break"), in coordctl --help and in coordctl(1) ("JSON OUTPUT"):
 *
 * JSON, for every --json of coordctl (list, show, status, watch), from
 * this file alone.  Output is always valid UTF-8 and valid JSON (RFC
 * 8259).  In a string, '"' and '\' are escaped, \b \f \n \r \t take their
 * short forms, every other control character (U+0000-U+001F, U+007F and
 * the C1 controls U+0080-U+009F) and U+2028/U+2029 are written \u00XX
 * (\u2028, \u2029), so no control byte ever reaches a terminal that shows
 * the JSON.  A byte that is not part of a valid UTF-8 sequence (RFC 3629,
 * as coord_proto_utf8_seq() checks it) is written as U+FFFD, one per byte,
 * and the field gets a sibling KEY_hex holding the exact bytes of the
 * value in lower-case hex, so a script can still tell two names apart and
 * reach the file ("resource_hex", "label_hex", ...).  U+FFFD rather than
 * the byte's Latin-1 character (\u00ff for 0xff): that character is a
 * valid, different name ("ÿ") that a script would take at its word and
 * could match against another resource; U+FFFD says "not decodable", as
 * Python's errors="replace", jq and browsers do.  U+FFFD rather than the
 * lone surrogate \udcXX of Python's "surrogateescape": that is not a
 * Unicode character, so strict parsers refuse it (Rust's serde_json) and
 * others turn it into U+FFFD anyway (jq, Go), while U+FFFD reads the same
 * in every parser.
 *
 * Human.  What is not printable is shown as a visible escape: \n \r \t,
 * \\ for a backslash (so that the escapes cannot be forged), \xHH for any
 * other C0 control, DEL and each byte of invalid UTF-8, \uXXXX for C1
 * controls, the line and paragraph separators, the bidirectional and
 * zero-width format characters, and anything the locale cannot print.
 * Under a locale that is not UTF-8 every non-ASCII character is escaped
 * (an 8-bit terminal would take the byte 0x9b inside "Û" for CSI).  The
 * result takes one terminal line. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <langinfo.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#include "coord_proto.h"
#include "text.h"

static int utf8_terminal; /* the locale's LC_CTYPE is UTF-8 */

void text_init(void)
{
	const char *cs = nl_langinfo(CODESET);
	utf8_terminal = cs && (!strcmp(cs, "UTF-8") || !strcmp(cs, "utf8"));
}

/* The length (1 to 4) of the valid UTF-8 sequence at p, which has left
 * (> 0) bytes before its NUL, with *cp its code point; 0 if the byte at
 * p does not start one.  Validity is coord_proto_utf8_seq()'s, the one
 * check the broker's metrics and `coordctl watch` use too. */
static size_t decode(const unsigned char *p, size_t left, uint32_t *cp)
{
	static const unsigned char lead_bits[5] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	size_t n = coord_proto_utf8_seq(p, left);
	uint32_t c;
	if (!n)
		return 0;
	c = p[0] & lead_bits[n];
	for (size_t i = 1; i < n; i++)
		c = c << 6 | (p[i] & 0x3f);
	*cp = c;
	return n;
}

int text_valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s), n;
	uint32_t cp;
	while (left) {
		if (!(n = decode(p, left, &cp)))
			return 0;
		p += n;
		left -= n;
	}
	return 1;
}

/* ---- JSON ---- */

int text_json_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *run = p;
	size_t left = strlen(s);
	int invalid = 0;
	uint32_t cp;
	/* Characters that need no escape go out in runs, one fwrite() each:
	 * `list --json` of 10,000 leases writes megabytes of them. */
#define TEXT_FLUSH_RUN()                                                                           	do {                                                                                       		if (p > run)                                                                       			fwrite(run, 1, (size_t)(p - run), f);                                      	} while (0)
	fputc('"', f);
	while (left) {
		size_t n = decode(p, left, &cp);
		const char *esc = NULL;
		if (!n) {
			TEXT_FLUSH_RUN();
			fputs("\\ufffd", f);
			invalid = 1;
			p++;
			left--;
			run = p;
			continue;
		}
		switch (cp) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029)
				esc = "";
		}
		if (esc) {
			TEXT_FLUSH_RUN();
			if (*esc)
				fputs(esc, f);
			else
				fprintf(f, "\\u%04x", (unsigned)cp);
			run = p + n;
		}
		p += n;
		left -= n;
	}
	TEXT_FLUSH_RUN();
#undef TEXT_FLUSH_RUN
	fputc('"', f);
	return invalid;
}

void text_json_hex(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		fprintf(f, "%02x", *p);
	fputc('"', f);
}

void text_json_field(FILE *f, const char *key, const char *s)
{
	fprintf(f, "\"%s\":", key);
	if (!s) {
		fputs("null", f);
		return;
	}
	if (text_json_string(f, s)) {
		fprintf(f, ",\"%s_hex\":", key);
		text_json_hex(f, s);
	}
}

/* ---- human ---- */

/* 1 for the characters shown escaped even where they could be printed:
 * C1 controls, soft hyphen, zero-width and bidirectional controls, line
 * and paragraph separators, the byte-order mark, interlinear annotation
 * marks: they are invisible, or move or reorder what follows. */
static int invisible(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0xad || cp == 0x61c ||
	       (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
	       (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb) ||
	       (cp >= 0xe0000 && cp <= 0xe007f);
}

/* The escape of the character (or invalid byte) at p (left > 0 bytes
 * before the NUL) into esc, or its bytes when it needs none; *len its
 * length in s, *cols its columns. */
static void human_piece(const unsigned char *p, size_t left, char esc[16], size_t *len, int *cols)
{
	uint32_t cp = 0;
	size_t n = decode(p, left, &cp);
	*len = n ? n : 1;
	if (!n) {
		snprintf(esc, 16, "\\x%02x", *p);
	} else if (cp == '\\') {
		strcpy(esc, "\\\\");
	} else if (cp == '\n' || cp == '\r' || cp == '\t') {
		snprintf(esc, 16, "\\%c", cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't');
	} else if (cp < 0x20 || cp == 0x7f) {
		snprintf(esc, 16, "\\x%02x", (unsigned)cp);
	} else if (cp < 0x7f) {
		esc[0] = (char)cp;
		esc[1] = 0;
	} else {
		int w = utf8_terminal && !invisible(cp) && iswprint((wint_t)cp) ? wcwidth((wchar_t)cp)
		                                                                  : -1;
		if (w > 0) {
			memcpy(esc, p, n);
			esc[n] = 0;
			*cols = w;
			return;
		}
		snprintf(esc, 16, cp > 0xffff ? "\\U%08x" : "\\u%04x", (unsigned)cp);
	}
	*cols = (int)strlen(esc);
}

size_t text_human_char(const char *s, size_t left, char esc[16], int *cols)
{
	size_t len;
	human_piece((const unsigned char *)s, left, esc, &len, cols);
	return len;
}

/* Escapes s into buf while it fits in size bytes and limit columns.
 * Returns the columns written; *done is 1 if all of s went in. */
static int human_into(char *buf, size_t size, const char *s, int limit, int *done)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t used = 0, left = strlen(s);
	int cols = 0;
	*done = 0;
	buf[0] = 0;
	while (left) {
		char esc[16];
		size_t elen, len;
		int w;
		human_piece(p, left, esc, &len, &w);
		elen = strlen(esc);
		if (used + elen + 1 > size || (limit > 0 && cols + w > limit))
			return cols;
		memcpy(buf + used, esc, elen + 1);
		used += elen;
		cols += w;
		p += len;
		left -= len;
	}
	*done = 1;
	return cols;
}

int text_human(char *buf, size_t size, const char *s, int max_cols)
{
	int done, cols;
	if (!size)
		return 0;
	cols = human_into(buf, size, s, max_cols, &done);
	if (done)
		return cols;
	/* Cut: leave room for "..." in columns and bytes. */
	if (size < 4)
		return cols;
	cols = human_into(buf, size - 3, s, max_cols > 3 ? max_cols - 3 : 0, &done);
	strcat(buf, "...");
	return cols + 3;
}

void text_put(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s), len;
	while (left) {
		char esc[16];
		int w;
		human_piece(p, left, esc, &len, &w);
		fputs(esc, f);
		p += len;
		left -= len;
	}
}

char *text_human_dup(const char *s)
{
	size_t size = strlen(s) * 4 + 1; /* \xHH, the longest escape per byte */
	char *buf = malloc(size);
	if (buf)
		text_human(buf, size, s, 0);
	return buf;
}

char *text_shell_quote(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s), len;
	int ansi = 0;
	char *q, *w;
	/* $'...' only when the human rule would escape something but a
	 * backslash (which is plain inside '...'). */
	for (size_t at = 0; at < left && !ansi; at += len) {
		char esc[16];
		int cols;
		human_piece(p + at, left - at, esc, &len, &cols);
		ansi = p[at] != '\\' && (strlen(esc) != len || memcmp(esc, p + at, len));
	}
	q = w = malloc(left * 4 + 4); /* \xHH per byte, $' and ' and the NUL */
	if (!q)
		return NULL;
	if (!ansi) {
		*w++ = '\'';
		for (; *p; p++) {
			if (*p == '\'') {
				memcpy(w, "'\\''", 4);
				w += 4;
			} else {
				*w++ = (char)*p;
			}
		}
		*w++ = '\'';
		*w = 0;
		return q;
	}
	*w++ = '$';
	*w++ = '\'';
	while (left) {
		char esc[16];
		int cols;
		human_piece(p, left, esc, &len, &cols);
		if (*p == '\'' || *p == '\\') {
			*w++ = '\\';
			*w++ = (char)*p;
		} else if (strlen(esc) != len || memcmp(esc, p, len)) {
			for (size_t i = 0; i < len; i++)
				w += sprintf(w, "\\x%02x", p[i]);
		} else {
			memcpy(w, p, len);
			w += len;
		}
		p += len;
		left -= len;
	}
	*w++ = '\'';
	*w = 0;
	return q;
}

int text_columns(const char *safe)
{
	const unsigned char *p = (const unsigned char *)safe;
	size_t left = strlen(safe);
	int cols = 0;
	while (left) {
		uint32_t cp;
		size_t n = decode(p, left, &cp);
		int w;
		if (!n) { /* not made by text_human(); count it as one */
			cols++;
			p++;
			left--;
			continue;
		}
		w = cp < 0x80 ? 1 : wcwidth((wchar_t)cp);
		cols += w > 0 ? w : 0;
		p += n;
		left -= n;
	}
	return cols;
}

void text_pad(FILE *f, const char *safe, int cols)
{
	fputs(safe, f);
	for (int w = text_columns(safe); w < cols; w++)
		fputc(' ', f);
}

/* ---- durations ---- */

void text_duration(char *buf, size_t size, uint64_t ms)
{
	if (ms < 1000)
		snprintf(buf, size, "%" PRIu64 "ms", ms);
	else if (ms < 10000)
		snprintf(buf, size, "%" PRIu64 ".%" PRIu64 "s", ms / 1000, ms / 100 % 10);
	else if (ms < 60000)
		snprintf(buf, size, "%" PRIu64 "s", ms / 1000);
	else if (ms < 3600000)
		snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", ms / 60000, ms / 1000 % 60);
	else if (ms < 86400000)
		snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", ms / 3600000, ms / 60000 % 60);
	else
		snprintf(buf, size, "%" PRIu64 "d%02" PRIu64 "h", ms / 86400000, ms / 3600000 % 24);
}

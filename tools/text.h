/* coordctl, private: text that came from elsewhere (labels, command
 * names, command lines, resource paths, checkpoint messages), written so
 * that it can never break JSON or a terminal.  See the top of text.c for
 * the two rules.  Not installed. */
#ifndef COORD_TEXT_H
#define COORD_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Decides once, from LC_CTYPE (setlocale(LC_CTYPE, "") first), whether
 * the human form may write UTF-8 (a UTF-8 locale) or only ASCII. */
void text_init(void);

/* ---- JSON ---- */

/* Writes "key":"VALUE" (key is ours, plain ASCII) with s escaped by the
 * JSON rule; when s is not valid UTF-8, adds ,"KEY_hex":"HEX" with its
 * exact bytes in lower-case hex.  s NULL writes "key":null. */
void text_json_field(FILE *f, const char *key, const char *s);

/* Writes s as one JSON string by the JSON rule (invalid bytes become
 * U+FFFD); returns 1 if s was not valid UTF-8, else 0. */
int text_json_string(FILE *f, const char *s);

/* Writes s's bytes as a JSON string of lower-case hex digits. */
void text_json_hex(FILE *f, const char *s);

/* ---- human ---- */

/* s escaped by the human rule into buf (always terminated; cut at a whole
 * escape or character, with "..." at the end when it did not fit in
 * max_cols columns; max_cols 0: no limit but the buffer's).  Returns the
 * columns the text takes on a terminal. */
int text_human(char *buf, size_t size, const char *s, int max_cols);

/* The human rule for the one character (or invalid byte) at s, which has
 * left > 0 bytes before its NUL: its escape, or its own bytes when it
 * needs none, into esc (terminated); *cols the columns that takes.
 * Returns the bytes of s it stands for (1 to 4), for writers that lay out
 * text themselves (the screen of `coordctl watch`). */
size_t text_human_char(const char *s, size_t left, char esc[16], int *cols);

/* Writes s escaped by the human rule to f. */
void text_put(FILE *f, const char *s);

/* s escaped by the human rule in a new string (free() it); NULL when out
 * of memory. */
char *text_human_dup(const char *s);

/* s quoted for a shell, in a new string (free() it; NULL when out of
 * memory), for commands printed to be pasted: 'S' (a ' written '\'')
 * when the human rule shows every character of s as it is, else bash's
 * $'S' (also zsh, ksh and POSIX.1-2024 sh), with \' and \\ and each byte
 * of what the human rule would escape as \xHH.  Either way it names the
 * same bytes and writes no control character. */
char *text_shell_quote(const char *s);

/* Columns that text already made safe (by text_human()) takes. */
int text_columns(const char *safe);

/* Writes safe text padded with spaces to cols columns. */
void text_pad(FILE *f, const char *safe, int cols);

/* 1 if s is valid UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
int text_valid_utf8(const char *s);

/* A duration for people: "450ms", "3.2s", "42s", "3m12s", "2h05m",
 * "3d04h" (cut, never rounded up). */
void text_duration(char *buf, size_t size, uint64_t ms);

#endif

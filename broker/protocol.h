/* Decoding and validation of client requests.  Everything a client sends
 * passes through proto_decode() before the broker acts on it. */
#ifndef COORD_PROTOCOL_H
#define COORD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "coord_proto.h"

struct request {
	uint32_t type;
	uint32_t seq;
	uint32_t version;           /* HELLO */
	int mode;                   /* ACQUIRE */
	int32_t timeout_ms;         /* ACQUIRE */
	uint64_t lease_id;          /* RELEASE, ATTACH (0: done), KERNEL_WAIT */
	uint64_t client_id, secret; /* ATTACH */
	uint32_t flags;             /* RELEASE; KERNEL_WAIT: waiting */
	uint32_t entry;             /* RELEASE with COORD_RELEASE_CACHE */
	uint32_t policy, sqlite_mode, policy_timeout_ms; /* POLICY */
	uint64_t pid;               /* REVOKE (with lease_id or name) */
	uint32_t grace_ms;          /* REVOKE */
	uint32_t max_hold_ms, recall_grace_ms; /* LIMITS */
	uint32_t acquire_seq;       /* CANCEL */
	char name[COORD_NAME_MAX + 1];
	char label[COORD_LABEL_MAX + 1];
	char command[COORD_COMMAND_MAX + 1];
};

/* Checks a canonical resource name as the broker sees it: 1..NAME_MAX
 * bytes, no NUL; either an absolute path with no empty, "." or ".."
 * component and no trailing '/', or a key with no '/' at all.
 * Returns 0 or COORD_ENAME. */
int proto_check_name(const char *name, size_t len);

/* Decodes one packet of `len` bytes (len may exceed COORD_MSG_MAX when
 * the packet was truncated; that is an error).  Returns 0 with *req
 * filled, or COORD_EPROTO (malformed: the connection must be closed),
 * COORD_ENAME or COORD_EINVAL (well-formed but refused: answer with the
 * code and keep the connection). */
int proto_decode(const void *buf, size_t len, struct request *req);

#endif

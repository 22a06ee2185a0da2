/* Fuzz target: request decoding, the broker's border.  The input is one
 * packet as a client would send it; proto_decode() must never read past
 * it (ASan), and what it returns must keep the promises the request
 * handlers rely on:
 *   - a result of 0, COORD_EPROTO, COORD_ENAME or COORD_EINVAL, and the
 *     same result and request for the same bytes;
 *   - COORD_ENAME and COORD_EINVAL (the connection is kept) only for a
 *     packet of a known request type whose length is exactly its fixed
 *     part plus its declared variable parts;
 *   - on success: the exact length, every field as sent, modes, flags,
 *     policies, timeouts and REVOKE's one selector in range, names, labels and commands
 *     NUL-terminated, as long as declared, within their maxima, without
 *     NUL bytes, names accepted by proto_check_name(); fields the type
 *     does not have left zero.
 * The input is also given to proto_check_name() as a name, whose verdict
 * must match the grammar written out again here. */
#include <string.h>

#include "check.h"
#include "protocol.h"

/* The canonical-name grammar of docs/design.md, independently of
 * protocol.c: 1..COORD_NAME_MAX bytes without NUL; a key without '/', or
 * "/" itself, or '/' followed by components separated by single '/',
 * none empty, "." or "..". */
static int name_is_canonical(const char *s, size_t n)
{
	size_t start = 1;
	if (n < 1 || n > COORD_NAME_MAX || memchr(s, 0, n))
		return 0;
	if (s[0] != '/')
		return memchr(s, '/', n) == NULL;
	if (n == 1)
		return 1;
	for (size_t i = 1; i <= n; i++) {
		size_t len;
		if (i < n && s[i] != '/')
			continue;
		len = i - start;
		if (len == 0 || (len == 1 && s[start] == '.') ||
		    (len == 2 && s[start] == '.' && s[start + 1] == '.'))
			return 0;
		start = i + 1;
	}
	return 1;
}

/* A text field of the request: NUL-terminated inside its array, `len`
 * bytes long, equal to the `len` bytes sent at `src`. */
static void check_text(const char *field, size_t cap, const uint8_t *src, size_t len,
                       const char *what)
{
	FUZZ_CHECK(memchr(field, 0, cap + 1) != NULL, what);
	FUZZ_CHECK(len <= cap, what);
	FUZZ_CHECK(strlen(field) == len, what);
	FUZZ_CHECK(len == 0 || memcmp(field, src, len) == 0, what);
}

static void check_name(const struct request *req, const uint8_t *src, size_t len)
{
	check_text(req->name, COORD_NAME_MAX, src, len, "decoded name is not the name sent");
	FUZZ_CHECK(len >= 1, "decoded an empty name");
	FUZZ_CHECK(proto_check_name(req->name, len) == 0, "decoded a name proto_check_name refuses");
	FUZZ_CHECK(name_is_canonical(req->name, len), "decoded a name outside the grammar");
}

/* Fields the type does not carry stay as memset left them. */
static void check_unused(const struct request *req, int name, int label, int command)
{
	FUZZ_CHECK(name || req->name[0] == 0, "a name appeared in a request without one");
	FUZZ_CHECK(label || req->label[0] == 0, "a label appeared in a request without one");
	FUZZ_CHECK(command || req->command[0] == 0, "a command appeared in a request without one");
}

/* The exact length a packet of this type must have, from its fixed part
 * and declared lengths; 0 for an unknown type or a packet too short to
 * hold its fixed part. */
static size_t expected_length(const uint8_t *data, size_t size, uint32_t type)
{
	switch (type) {
	case COORD_MSG_HELLO:
		return sizeof(coord_msg_hello);
	case COORD_MSG_RELEASE:
		return sizeof(coord_msg_release);
	case COORD_MSG_STATUS:
	case COORD_MSG_LIST:
	case COORD_MSG_NOTIFY:
	case COORD_MSG_CACHE:
		return sizeof(coord_msg_hdr);
	case COORD_MSG_ATTACH:
		return sizeof(coord_msg_attach);
	case COORD_MSG_CANCEL:
		return sizeof(coord_msg_cancel);
	case COORD_MSG_KERNEL_WAIT:
		return sizeof(coord_msg_kernel_wait);
	case COORD_MSG_METRICS:
		return sizeof(coord_msg_metrics);
	case COORD_MSG_LIMITS: {
		coord_msg_limits m;
		if (size < sizeof m)
			return 0;
		memcpy(&m, data, sizeof m);
		return sizeof m + m.name_len;
	}
	case COORD_MSG_ACQUIRE: {
		coord_msg_acquire m;
		if (size < sizeof m)
			return 0;
		memcpy(&m, data, sizeof m);
		return sizeof m + m.name_len + m.label_len;
	}
	case COORD_MSG_SHOW:
	case COORD_MSG_CHECKPOINT: {
		coord_msg_resource m;
		if (size < sizeof m)
			return 0;
		memcpy(&m, data, sizeof m);
		return sizeof m + m.name_len;
	}
	case COORD_MSG_REVOKE: {
		coord_msg_revoke m;
		if (size < sizeof m)
			return 0;
		memcpy(&m, data, sizeof m);
		return sizeof m + m.name_len;
	}
	case COORD_MSG_POLICY: {
		coord_msg_policy m;
		if (size < sizeof m)
			return 0;
		memcpy(&m, data, sizeof m);
		return sizeof m + m.name_len + m.command_len;
	}
	default:
		return 0;
	}
}

/* What a successful decode of `data` promises. */
static void check_decoded(const uint8_t *data, size_t size, const struct request *req)
{
	coord_msg_hdr h;
	memcpy(&h, data, sizeof h);
	FUZZ_CHECK(req->type == h.type && req->seq == h.seq, "type or seq differ from the packet");
	FUZZ_CHECK(size == expected_length(data, size, h.type),
	           "accepted a packet whose length is not its fixed part plus declared lengths");
	switch (h.type) {
	case COORD_MSG_HELLO: {
		coord_msg_hello m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->version == m.version, "HELLO version differs");
		check_unused(req, 0, 0, 0);
		break;
	}
	case COORD_MSG_ACQUIRE: {
		coord_msg_acquire m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->mode == COORD_READ || req->mode == COORD_WRITE, "ACQUIRE mode out of range");
		FUZZ_CHECK((uint32_t)req->mode == m.mode, "ACQUIRE mode differs");
		FUZZ_CHECK(req->timeout_ms >= -1 && req->timeout_ms == m.timeout_ms,
		           "ACQUIRE timeout out of range or different");
		check_name(req, data + sizeof m, m.name_len);
		check_text(req->label, COORD_LABEL_MAX, data + sizeof m + m.name_len, m.label_len,
		           "ACQUIRE label is not the label sent, or too long");
		check_unused(req, 1, 1, 0);
		break;
	}
	case COORD_MSG_RELEASE: {
		coord_msg_release m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->lease_id == m.lease_id && req->flags == m.flags, "RELEASE fields differ");
		FUZZ_CHECK((req->flags & ~(uint32_t)(COORD_RELEASE_NO_REPLY | COORD_RELEASE_CACHE)) == 0, "RELEASE flags out of range");
		check_unused(req, 0, 0, 0);
		break;
	}
	case COORD_MSG_STATUS:
	case COORD_MSG_LIST:
	case COORD_MSG_NOTIFY:
	case COORD_MSG_CACHE:
		check_unused(req, 0, 0, 0);
		break;
	case COORD_MSG_ATTACH: {
		coord_msg_attach m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->client_id == m.client_id && req->lease_id == m.lease_id &&
		                   req->secret == m.secret,
		           "ATTACH fields differ");
		check_unused(req, 0, 0, 0);
		break;
	}
	case COORD_MSG_METRICS: {
		coord_msg_metrics m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->flags == m.flags && !(m.flags & ~(uint32_t)COORD_METRICS_WATCH),
		           "METRICS flags differ, or accepted out of range");
		check_unused(req, 0, 0, 0);
		break;
	}
	case COORD_MSG_KERNEL_WAIT: {
		coord_msg_kernel_wait m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->lease_id == m.lease_id && req->flags == m.waiting,
		           "KERNEL_WAIT fields differ");
		FUZZ_CHECK(m.waiting <= 1 && m.reserved == 0, "KERNEL_WAIT accepted out of range");
		check_unused(req, 0, 0, 0);
		break;
	}
	case COORD_MSG_CANCEL: {
		coord_msg_cancel m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->acquire_seq == m.acquire_seq && m.acquire_seq != COORD_SEQ_NOTICE,
		           "CANCEL seq differs, or names the notice seq");
		check_unused(req, 0, 0, 0);
		break;
	}
	case COORD_MSG_LIMITS: {
		coord_msg_limits m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->max_hold_ms == m.max_hold_ms && req->recall_grace_ms == m.recall_grace_ms,
		           "LIMITS fields differ");
		FUZZ_CHECK(m.max_hold_ms <= COORD_LIMIT_MAX_MS && m.recall_grace_ms <= COORD_LIMIT_MAX_MS,
		           "LIMITS out of range");
		check_name(req, data + sizeof m, m.name_len);
		check_unused(req, 1, 0, 0);
		break;
	}
	case COORD_MSG_SHOW:
	case COORD_MSG_CHECKPOINT: {
		coord_msg_resource m;
		memcpy(&m, data, sizeof m);
		check_name(req, data + sizeof m, m.name_len);
		check_unused(req, 1, 0, 0);
		break;
	}
	case COORD_MSG_REVOKE: {
		coord_msg_revoke m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->lease_id == m.lease_id && req->pid == m.pid && req->grace_ms == m.grace_ms,
		           "REVOKE fields differ");
		FUZZ_CHECK((m.lease_id != 0) + (m.pid != 0) + (m.name_len != 0) == 1,
		           "REVOKE must select by exactly one of lease id, pid and name");
		FUZZ_CHECK(m.grace_ms <= 3600u * 1000 && m.pid <= (uint64_t)INT32_MAX,
		           "REVOKE grace or pid out of range");
		if (m.name_len)
			check_name(req, data + sizeof m, m.name_len);
		check_unused(req, m.name_len != 0, 0, 0);
		break;
	}
	case COORD_MSG_POLICY: {
		coord_msg_policy m;
		memcpy(&m, data, sizeof m);
		FUZZ_CHECK(req->policy == m.policy && req->policy <= COORD_POLICY_EXEC,
		           "POLICY policy out of range or different");
		FUZZ_CHECK(req->sqlite_mode == m.sqlite_mode && req->sqlite_mode <= COORD_SQLITE_TRUNCATE,
		           "POLICY sqlite mode out of range or different");
		FUZZ_CHECK(req->policy_timeout_ms == m.timeout_ms && m.timeout_ms <= 24u * 3600 * 1000,
		           "POLICY timeout out of range or different");
		check_name(req, data + sizeof m, m.name_len);
		check_text(req->command, COORD_COMMAND_MAX, data + sizeof m + m.name_len, m.command_len,
		           "POLICY command is not the command sent, or too long");
		FUZZ_CHECK((req->policy == COORD_POLICY_EXEC) == (m.command_len > 0),
		           "POLICY command without exec, or exec without command");
		check_unused(req, 1, 0, 1);
		break;
	}
	default:
		FUZZ_CHECK(0, "decoded a packet of a type that is no request");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct request req, again;
	int rc, name_rc;

	rc = proto_decode(data, size, &req);
	FUZZ_CHECK(rc == 0 || rc == COORD_EPROTO || rc == COORD_ENAME || rc == COORD_EINVAL,
	           "proto_decode returned a code it does not document");
	FUZZ_CHECK(memchr(req.name, 0, sizeof req.name) && memchr(req.label, 0, sizeof req.label) &&
	                   memchr(req.command, 0, sizeof req.command),
	           "a text field is not NUL-terminated");
	FUZZ_CHECK(proto_decode(data, size, &again) == rc && memcmp(&req, &again, sizeof req) == 0,
	           "the same bytes decoded differently");
	if (rc == 0) {
		check_decoded(data, size, &req);
	} else if (rc != COORD_EPROTO) {
		coord_msg_hdr h;
		FUZZ_CHECK(size >= sizeof h, "a refusal that keeps the connection for a runt packet");
		memcpy(&h, data, sizeof h);
		FUZZ_CHECK(h.type != COORD_MSG_HELLO && h.type != COORD_MSG_STATUS && h.type != COORD_MSG_LIST &&
		                   h.type != COORD_MSG_NOTIFY && h.type != COORD_MSG_ATTACH,
		           "a request without variable fields was refused but not malformed");
		FUZZ_CHECK(size == expected_length(data, size, h.type),
		           "a refusal that keeps the connection for a packet of the wrong length");
	}

	name_rc = proto_check_name((const char *)data, size);
	FUZZ_CHECK(name_rc == 0 || name_rc == COORD_ENAME, "proto_check_name returned another code");
	FUZZ_CHECK((name_rc == 0) == name_is_canonical((const char *)data, size),
	           "proto_check_name disagrees with the name grammar");
	return 0;
}

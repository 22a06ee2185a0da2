/* Request decoding: the broker's border.  Every byte here comes from a
 * client and is hostile until proven otherwise: sizes are checked against
 * the packet length before any field is read, variable parts against their
 * declared lengths, and names against the canonical-name grammar.  Nothing
 * in this file allocates or keeps state, so a bad packet can cost the
 * broker nothing but the reply. */
#define _GNU_SOURCE
#include <string.h>

#include "protocol.h"

int proto_check_name(const char *name, size_t len)
{
	if (len == 0 || len > COORD_NAME_MAX || memchr(name, 0, len))
		return COORD_ENAME;
	if (!memchr(name, '/', len))
		return 0;
	if (name[0] != '/')
		return COORD_ENAME;
	if (len == 1)
		return 0;
	if (name[len - 1] == '/')
		return COORD_ENAME;
	/* every component after a '/' must be non-empty and not . or .. */
	for (size_t i = 0; i < len; i++) {
		size_t j, n;
		if (name[i] != '/')
			continue;
		for (j = i + 1; j < len && name[j] != '/'; j++)
			;
		n = j - i - 1;
		if (n == 0 || (n == 1 && name[i + 1] == '.') ||
		    (n == 2 && name[i + 1] == '.' && name[i + 2] == '.'))
			return COORD_ENAME;
	}
	return 0;
}

static int copy_text(char *dst, size_t cap, const char *src, size_t len)
{
	if (len > cap || memchr(src, 0, len))
		return COORD_EINVAL;
	memcpy(dst, src, len);
	dst[len] = 0;
	return 0;
}

/* The name that follows a fixed part, checked, into req->name. */
static int copy_name(struct request *req, const char *name, size_t len)
{
	if (proto_check_name(name, len) < 0)
		return COORD_ENAME;
	memcpy(req->name, name, len);
	req->name[len] = 0;
	return 0;
}

int proto_decode(const void *buf, size_t len, struct request *req)
{
	const char *p = buf;
	coord_msg_hdr h;

	memset(req, 0, sizeof *req);
	if (len > COORD_MSG_MAX || len < sizeof h)
		return COORD_EPROTO;
	memcpy(&h, p, sizeof h);
	req->type = h.type;
	req->seq = h.seq;

	switch (h.type) {
	case COORD_MSG_HELLO: {
		coord_msg_hello m;
		if (len != sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		req->version = m.version;
		return 0;
	}
	case COORD_MSG_ACQUIRE: {
		coord_msg_acquire m;
		int rc;
		if (len < sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (len != sizeof m + (size_t)m.name_len + m.label_len)
			return COORD_EPROTO;
		if (m.mode != COORD_READ && m.mode != COORD_WRITE)
			return COORD_EINVAL;
		if (m.timeout_ms < -1)
			return COORD_EINVAL;
		req->mode = (int)m.mode;
		req->timeout_ms = m.timeout_ms;
		if (copy_name(req, p + sizeof m, m.name_len) < 0)
			return COORD_ENAME;
		rc = copy_text(req->label, COORD_LABEL_MAX, p + sizeof m + m.name_len, m.label_len);
		return rc;
	}
	case COORD_MSG_RELEASE: {
		coord_msg_release m;
		if (len != sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (m.flags & ~(uint32_t)(COORD_RELEASE_NO_REPLY | COORD_RELEASE_CACHE))
			return COORD_EINVAL;
		req->lease_id = m.lease_id;
		req->flags = m.flags;
		req->entry = m.entry; /* checked against the page by cache.c */
		return 0;
	}
	case COORD_MSG_STATUS:
	case COORD_MSG_LIST:
	case COORD_MSG_NOTIFY:
	case COORD_MSG_CACHE:
		return len == sizeof h ? 0 : COORD_EPROTO;
	case COORD_MSG_METRICS: {
		coord_msg_metrics m;
		if (len != sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		req->flags = m.flags;
		return m.flags & ~(uint32_t)COORD_METRICS_WATCH ? COORD_EINVAL : 0;
	}
	case COORD_MSG_KERNEL_WAIT: {
		coord_msg_kernel_wait m;
		if (len != sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (m.waiting > 1 || m.reserved)
			return COORD_EPROTO; /* no answer to carry an EINVAL */
		req->lease_id = m.lease_id;
		req->flags = m.waiting;
		return 0;
	}
	case COORD_MSG_CANCEL: {
		coord_msg_cancel m;
		if (len != sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (m.acquire_seq == COORD_SEQ_NOTICE)
			return COORD_EINVAL;
		req->acquire_seq = m.acquire_seq;
		return 0;
	}
	case COORD_MSG_LIMITS: {
		coord_msg_limits m;
		if (len < sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (len != sizeof m + (size_t)m.name_len)
			return COORD_EPROTO;
		if (m.max_hold_ms > COORD_LIMIT_MAX_MS || m.recall_grace_ms > COORD_LIMIT_MAX_MS)
			return COORD_EINVAL;
		if (copy_name(req, p + sizeof m, m.name_len) < 0)
			return COORD_ENAME;
		req->max_hold_ms = m.max_hold_ms;
		req->recall_grace_ms = m.recall_grace_ms;
		return 0;
	}
	case COORD_MSG_SHOW:
	case COORD_MSG_CHECKPOINT: {
		coord_msg_resource m;
		if (len < sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (len != sizeof m + (size_t)m.name_len)
			return COORD_EPROTO;
		if (copy_name(req, p + sizeof m, m.name_len) < 0)
			return COORD_ENAME;
		return 0;
	}
	case COORD_MSG_REVOKE: {
		coord_msg_revoke m;
		if (len < sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (len != sizeof m + (size_t)m.name_len)
			return COORD_EPROTO;
		if ((m.lease_id != 0) + (m.pid != 0) + (m.name_len != 0) != 1 ||
		    m.grace_ms > 3600u * 1000 || m.pid > (uint64_t)INT32_MAX)
			return COORD_EINVAL;
		if (m.name_len && copy_name(req, p + sizeof m, m.name_len) < 0)
			return COORD_ENAME;
		req->lease_id = m.lease_id;
		req->pid = m.pid;
		req->grace_ms = m.grace_ms;
		return 0;
	}
	case COORD_MSG_ATTACH: {
		coord_msg_attach m;
		if (len != sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		req->client_id = m.client_id;
		req->lease_id = m.lease_id;
		req->secret = m.secret;
		return 0;
	}
	case COORD_MSG_POLICY: {
		coord_msg_policy m;
		if (len < sizeof m)
			return COORD_EPROTO;
		memcpy(&m, p, sizeof m);
		if (len != sizeof m + (size_t)m.name_len + m.command_len)
			return COORD_EPROTO;
		if (m.policy > COORD_POLICY_EXEC || m.sqlite_mode > COORD_SQLITE_TRUNCATE ||
		    m.timeout_ms > 24u * 3600 * 1000)
			return COORD_EINVAL;
		if ((m.policy == COORD_POLICY_EXEC) != (m.command_len > 0))
			return COORD_EINVAL;
		if (copy_name(req, p + sizeof m, m.name_len) < 0)
			return COORD_ENAME;
		req->policy = m.policy;
		req->sqlite_mode = m.sqlite_mode;
		req->policy_timeout_ms = m.timeout_ms;
		return copy_text(req->command, COORD_COMMAND_MAX, p + sizeof m + m.name_len,
		                 m.command_len);
	}
	default:
		return COORD_EPROTO;
	}
}

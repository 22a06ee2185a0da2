/* Unit tests of request decoding and name checks: whatever bytes a client
 * sends, proto_decode() answers with a code and never reads past the
 * packet.  Run under the sanitizers to make the "never reads past" part
 * bite. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

TestSuite(protocol);

struct name_case {
	char name[32];   /* inline: parameters are copied into the test process */
	int expect;
};

ParameterizedTestParameters(protocol, names)
{
	static struct name_case cases[] = {
		{ "app.db", 0 },         { "/srv/app.db", 0 },   { "/", 0 },
		{ "", COORD_ENAME },     { "rel/app.db", COORD_ENAME },
		{ "/srv//app.db", COORD_ENAME }, { "/srv/./app.db", COORD_ENAME },
		{ "/srv/../app.db", COORD_ENAME }, { "/srv/", COORD_ENAME },
		{ "/srv/..", COORD_ENAME }, { "key with spaces", 0 },
	};
	return cr_make_param_array(struct name_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct name_case *c, protocol, names)
{
	int rc = proto_check_name(c->name, strlen(c->name));
	cr_assert_eq(rc, c->expect, "name '%s': expected %d, got %d", c->name, c->expect, rc);
}

Test(protocol, name_limits)
{
	char big[COORD_NAME_MAX + 2];
	memset(big, 'k', sizeof big);
	cr_assert_eq(proto_check_name(big, COORD_NAME_MAX), 0, "a name of exactly NAME_MAX is fine");
	cr_assert_eq(proto_check_name(big, COORD_NAME_MAX + 1), COORD_ENAME, "NAME_MAX+1 must fail");
	cr_assert_eq(proto_check_name("a\0b", 3), COORD_ENAME, "embedded NUL must fail");
}

static size_t acquire(char *buf, const char *name, const char *label, uint32_t mode)
{
	coord_msg_acquire m = { { COORD_MSG_ACQUIRE, 7 }, mode, 100, (uint16_t)strlen(name),
		                (uint16_t)strlen(label), 0 };
	memcpy(buf, &m, sizeof m);
	memcpy(buf + sizeof m, name, strlen(name));
	memcpy(buf + sizeof m + strlen(name), label, strlen(label));
	return sizeof m + strlen(name) + strlen(label);
}

Test(protocol, acquire_roundtrip)
{
	char buf[COORD_MSG_MAX];
	struct request r;
	size_t n = acquire(buf, "/srv/app.db", "nightly", COORD_WRITE);
	cr_assert_eq(proto_decode(buf, n, &r), 0, "a well-formed ACQUIRE must decode");
	cr_assert_str_eq(r.name, "/srv/app.db", "name mangled");
	cr_assert_str_eq(r.label, "nightly", "label mangled");
	cr_assert_eq(r.mode, COORD_WRITE, "mode mangled");
	cr_assert_eq(r.seq, 7, "seq mangled");
}

Test(protocol, malformed_packets)
{
	char buf[COORD_MSG_MAX + 16];
	struct request r;
	size_t n = acquire(buf, "/srv/app.db", "x", COORD_READ);
	cr_assert_eq(proto_decode(buf, n - 1, &r), COORD_EPROTO, "short by one byte must be EPROTO");
	cr_assert_eq(proto_decode(buf, n + 1, &r), COORD_EPROTO, "one extra byte must be EPROTO");
	cr_assert_eq(proto_decode(buf, 3, &r), COORD_EPROTO, "a packet shorter than a header");
	cr_assert_eq(proto_decode(buf, COORD_MSG_MAX + 1, &r), COORD_EPROTO, "a truncated packet");
	n = acquire(buf, "/srv/app.db", "x", 3);
	cr_assert_eq(proto_decode(buf, n, &r), COORD_EINVAL, "mode 3 must be refused");
	n = acquire(buf, "rel/app.db", "x", COORD_READ);
	cr_assert_eq(proto_decode(buf, n, &r), COORD_ENAME, "a relative path must be refused");
	((coord_msg_hdr *)buf)->type = 999;
	cr_assert_eq(proto_decode(buf, n, &r), COORD_EPROTO, "unknown type must be EPROTO");
}

Test(protocol, random_bytes_never_crash)
{
	/* Deterministic garbage: every type with every length up to 96. */
	char buf[COORD_MSG_MAX];
	struct request r;
	unsigned seed = 12345;
	for (uint32_t type = 0; type < 80; type++) {
		for (size_t len = 0; len < 96; len++) {
			for (size_t i = 0; i < sizeof buf; i++)
				buf[i] = (char)(rand_r(&seed) & 0xff);
			if (len >= sizeof(coord_msg_hdr))
				memcpy(buf, &type, sizeof type);
			int rc = proto_decode(buf, len, &r);
			cr_assert(rc == 0 || rc == COORD_EPROTO || rc == COORD_EINVAL || rc == COORD_ENAME,
			          "type %u len %zu: unexpected code %d", type, len, rc);
		}
	}
}

/* Records of state.mdb as earlier brokers wrote them, written and read
 * with the LMDB C API directly (never through broker/store.c), so tests
 * can build an old instance directory and look at what a broker left. */
#ifndef COORD_TEST_OLDRECORDS_H
#define COORD_TEST_OLDRECORDS_H

#include <stddef.h>
#include <stdint.h>

/* The fixed layout of versions 1 and 2 (1 ends before max_hold_ms). */
struct old_record {
	uint32_t version, policy, sqlite_mode, timeout_ms;
	uint64_t token_ceiling, checkpoints, last_at_ms, last_duration_us;
	int32_t last_result;
	uint32_t reserved;
	int64_t wal_before, wal_after;
	char command[1024];
	char message[256];
	uint32_t max_hold_ms, recall_grace_ms;
};
#define OLD_RECORD_V1_SIZE 1352
#define OLD_RECORD_V2_SIZE 1360

/* Puts r (its version field says 1 or 2) under name in DIR/state.mdb's
 * "resources" database; asserts it could. */
void old_record_put(const char *dir, const char *name, const struct old_record *r);

/* Reads the raw record of name into buf (size bytes): returns its length,
 * or -1 if there is none.  Asserts the environment opens. */
long old_record_get(const char *dir, const char *name, void *buf, size_t size);

/* The uint64 meta record `key` of DIR/state.mdb, or 0 if there is none. */
uint64_t old_meta_get(const char *dir, const char *key);

#endif

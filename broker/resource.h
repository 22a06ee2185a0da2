/* The broker's state of one resource (lt_resource.ext): its durable record
 * and what is known about its file. */
#ifndef COORD_RESOURCE_H
#define COORD_RESOURCE_H

#include "store.h"

struct ckpt_job;

struct resource_ext {
	struct store_resource_mem rec; /* as stored in state.mdb (compact:
	                              its strings only as long as they are) */
	int kept;                  /* rec exists in state.mdb, or a write token
	                              was granted: counted in kept_resources,
	                              and kept in memory when idle */
	int kind;                  /* COORD_KIND_*, detected when last looked at */
	struct ckpt_job *job;      /* running checkpoint, or NULL */
};

#endif

/* fs.h — the FUSE operations. They turn paths into store and sync calls
 * and statuses into -errno; they know nothing of IMAP or SQLite. */
#ifndef MAILFS_FS_H
#define MAILFS_FS_H

#define FUSE_USE_VERSION 31
#include <fuse.h>
#include <glib.h>
#include <sys/types.h>
#include <time.h>
#include "config.h"
#include "store.h"
#include "sync.h"

struct fs_ctx {
	const struct mf_config *cfg;
	struct store *store;
	struct sync_ctx *sync;
	uid_t uid;
	gid_t gid;
	time_t mounted_at;
	/* Owned by fs.c from init to destroy: */
	struct fuse *fuse;
	GMutex staged_lock;
	GHashTable *staged;      /* path -> struct fs_staged: files being written */
	GAsyncQueue *invalidate; /* paths whose kernel caches must be dropped */
	GThread *invalidator;
};

/* The operations table; private_data passed to fuse_new must be a
 * struct fs_ctx that outlives the mount. */
const struct fuse_operations *fs_operations(void);

#endif

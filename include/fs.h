/* fs.h — the FUSE operations. They turn paths into store and sync calls
 * and statuses into -errno; they know nothing of IMAP, POP3, the mailbox
 * drivers or SQLite. */
#ifndef MAILFS_FS_H
#define MAILFS_FS_H

#define FUSE_USE_VERSION 312  /* libfuse 3.12: fuse_loop_cfg_*, for -o max_threads */
#include <fuse.h>
#include <glib.h>
#include <sys/types.h>
#include <time.h>
#include "config.h"
#include "store.h"

struct fs_ctx;
struct sync_ctx;

/* The mount's state; cfg is borrowed and must outlive it. Give it to
 * fuse_new as private_data, then attach the store and sync (borrowed)
 * before the mount starts. */
struct fs_ctx *fs_new(const struct mf_config *cfg);
void fs_attach(struct fs_ctx *ctx, struct store *store, struct sync_ctx *sync);
/* Once the FUSE loop has ended, before fuse_destroy (which frees the
 * nodes an invalidation looks up, then calls destroy): ends push and the
 * kernel-cache invalidations. destroy does it when this was not called. */
void fs_stop(struct fs_ctx *ctx);
void fs_free(struct fs_ctx *ctx);


/* The operations table; private_data passed to fuse_new must be an
 * fs_ctx that outlives the mount. */
const struct fuse_operations *fs_operations(void);

#endif

/* fs.h — the FUSE operations (libfuse's low-level API). They turn node
 * ids and names into store and sync calls and statuses into errnos; they
 * know nothing of IMAP, POP3, the mailbox drivers or SQLite. */
#ifndef MAILFS_FS_H
#define MAILFS_FS_H

#define FUSE_USE_VERSION 312  /* libfuse 3.12: fuse_loop_cfg_*, for -o max_threads */
#include <fuse_lowlevel.h>
#include <glib.h>
#include <sys/types.h>
#include <time.h>
#include "config.h"
#include "store.h"

struct fs_ctx;
struct sync_ctx;

/* The mount's state; cfg is borrowed and must outlive it. Give it to
 * fuse_session_new as userdata, then attach the store and sync
 * (borrowed) and the session before the mount starts. */
struct fs_ctx *fs_new(const struct mf_config *cfg);
void fs_attach(struct fs_ctx *ctx, struct store *store, struct sync_ctx *sync,
               struct fuse_session *se);
/* The mount point (resolved, absolute; copied), once mounted: its
 * read-ahead is raised at the first request (mountdev.h). */
void fs_set_mountpoint(struct fs_ctx *ctx, const char *mountpoint);
/* Once the FUSE loop has ended, before fuse_session_destroy (which calls
 * destroy): ends push and the kernel-cache invalidations. destroy does
 * it when this was not called. */
void fs_stop(struct fs_ctx *ctx);
void fs_free(struct fs_ctx *ctx);

/* The operations table; the session's userdata must be an fs_ctx that
 * outlives the mount. */
const struct fuse_lowlevel_ops *fs_operations(void);

#endif

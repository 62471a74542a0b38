/* sync.h — the store layer's link to the mailbox driver: keeps the cache
 * in step with the server (folder list, folder contents, bodies).
 *
 * The fs layer calls only these and store.h. Network errors are returned,
 * and the cache is left as it was: the caller serves what it holds. */
#ifndef MAILFS_SYNC_H
#define MAILFS_SYNC_H

#include <stdint.h>
#include <glib.h>
#include "config.h"
#include "mailbox.h"
#include "status.h"
#include "store.h"

struct sync_ctx {
	const struct mf_config *cfg;   /* borrowed */
	struct store *store;           /* borrowed */
	struct mailbox *mb;            /* borrowed; NULL when offline */
	GMutex lock;
	GCond cond;
	GHashTable *busy;              /* folder id -> 1 while a sync of it runs */
	GHashTable *attempted;         /* folder id -> monotonic µs of the last try */
	int folders_busy;
	gint64 folders_attempted;      /* monotonic µs of the last LIST, 0 never */
};

void sync_init(struct sync_ctx *s, const struct mf_config *cfg, struct store *store,
               struct mailbox *mb);
void sync_clear(struct sync_ctx *s);

/* LIST now, and make the folder table match. */
enum mf_status sync_folders(struct sync_ctx *s);
/* The same when the last LIST is older than the refresh interval. */
enum mf_status sync_folders_if_stale(struct sync_ctx *s);
/* Brings one folder up to date when its last check is older than the
 * refresh interval (or force). Concurrent callers for the same folder wait
 * for the one sync in progress. *changed (may be NULL) is set when
 * messages came or went. */
enum mf_status sync_folder_if_stale(struct sync_ctx *s, int64_t folder_id, int force,
                                    int *changed);
/* An fd open on the message's body, downloading it into the body cache
 * first when needed. *size_changed (may be NULL): the real size differs
 * from what the cache said before. */
enum mf_status sync_body_open(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              int *fd, int *size_changed);

#endif

/* sync.h — the layer between fs and the store and mailbox drivers: keeps
 * the cache in step with the server (folder list, folder contents,
 * bodies) and turns writes into driver calls, then store changes.
 *
 * The fs layer calls only these and store.h (reads); it never sees a
 * driver. Network errors are returned, and the cache is left as it was:
 * the caller serves what it holds. */
#ifndef MAILFS_SYNC_H
#define MAILFS_SYNC_H

#include <stdint.h>
#include <glib.h>
#include "config.h"
#include "status.h"
#include "store.h"

struct sync_ctx;
struct mailbox;

/* A date the caller does not know (a file written without utimens):
 * the same value as the drivers' MAILBOX_NO_DATE. */
#define SYNC_NO_DATE INT64_MIN

/* cfg and store are borrowed; mb (NULL when offline) too. */
struct sync_ctx *sync_new(const struct mf_config *cfg, struct store *store, struct mailbox *mb);
/* Waits for listings still being stored, then frees. */
void sync_free(struct sync_ctx *s);

/* Push (-o watch=N, a driver that can): INBOX and the folders in use
 * are watched, and each change the server tells of is brought into the
 * store at once; changed(ctx, folder_path) is then called (from a thread
 * of sync's) so that the caller drops what the kernel holds of the
 * folder. Nothing happens without push: -o refresh alone serves. */
void sync_watch_start(struct sync_ctx *s, void (*changed)(void *ctx, const char *folder_path),
                      void *ctx);
/* Ends every watch (bounded: a DONE and its answer, 2 s at most). */
void sync_watch_stop(struct sync_ctx *s);
/* arrived hears of each body of at most max_len bytes that a read-ahead
 * stream put into the cache, as it lands, of the size the cache gave
 * before: the message's node is ino_base << 32 | uid, and body (len
 * bytes, g_malloc'd: the listener's to free) is what the server sent.
 * From the stream's thread, or an open's; it must not block. Cached
 * bodies go to it too, ahead of a reader going through a folder, unless
 * held says the listener has that one already (may be NULL).
 * NULL: nobody; once that returns, no call is under way. */
void sync_set_arrival(struct sync_ctx *s, size_t max_len,
                      void (*arrived)(void *ctx, uint64_t ino_base, uint32_t uid, void *body,
                                      size_t len),
                      int (*held)(void *ctx, uint64_t ino_base, uint32_t uid),
                      void *ctx);

/* Whether a message with these flags is left out of listings: \Deleted
 * ones are, unless -o show_deleted. */
int sync_hidden(const struct sync_ctx *s, const char *flags);

/* LIST now, and make the folder table match; the folder list then
 * counts as fresh. */
enum mf_status sync_folders(struct sync_ctx *s);
/* The same when the last LIST is older than the refresh interval. */
enum mf_status sync_folders_if_stale(struct sync_ctx *s);
/* Brings one folder up to date when its last check is older than the
 * refresh interval (or force). Concurrent callers for the same folder wait
 * for the one sync in progress. *changed (may be NULL) is set when
 * messages came or went. */
enum mf_status sync_folder_if_stale(struct sync_ctx *s, int64_t folder_id, int force,
                                    int *changed);
/* A folder's first listing, shown while it arrives. */
struct sync_live;
struct sync_live_entry {
	char *name;
	uint32_t uid;
	uint64_t size;
	int64_t mtime;
	int hidden;                /* not listed (see sync_hidden) */
};
/* Like sync_folder_if_stale, for readdir: when the folder was never
 * listed, a thread of its own lists it and *live (else NULL) gets the
 * listing (a reference: sync_live_unref), whose entries
 * come in UID order as the server sends them, named as the store will
 * name them. The store is written once it is complete, in parts; until
 * then a sync of the folder waits, and so must every other use of its
 * messages (sync_folder_settle) but an open of one (sync_message_settle). */
enum mf_status sync_folder_live(struct sync_ctx *s, int64_t folder_id, struct sync_live **live);
/* Waits until the listing holds more than n entries or is complete, and
 * puts entries n, n+1, ... in out (at most max; they live as long as the
 * listing). *complete: no entry comes after these; *status: MF_OK, or
 * why the listing failed. */
size_t sync_live_wait(struct sync_live *live, size_t n, struct sync_live_entry **out,
                      size_t max, int *complete, enum mf_status *status);
void sync_live_unref(struct sync_live *live);
/* Waits until the folder's messages are in the store; or every folder's. */
void sync_folder_settle(struct sync_ctx *s, int64_t folder_id);
/* Waits until the message's row is in the store: a first listing is
 * stored in parts, in UID order, and its messages may be opened part by
 * part. After it, only that row may be used, not the folder's other rows,
 * names or count. */
void sync_message_settle(struct sync_ctx *s, int64_t folder_id, uint32_t uid);
void sync_settle_all(struct sync_ctx *s);
/* The reader about to open uid read the folder's first listing (UID
 * order) to its end, and uid is its first message. in_order: it is not
 * also the first by name, so the reader goes in UID order, and the open
 * counts as its third, which starts a stream. Otherwise it counts as the
 * second of a reader in either order: the next open tells which, and
 * starts the stream. */
void sync_reader_listed(struct sync_ctx *s, int64_t folder_id, uint32_t uid, int in_order);
/* An fd open on the message's body (len bytes from off: see
 * store_body_open), downloading it into the body cache first when
 * needed. *size_changed (may be NULL): the real size differs from what
 * the cache said before. */
enum mf_status sync_body_open(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              int *fd, uint64_t *off, uint64_t *len, int *size_changed);
/* A reader opened the message uid of the folder whose inode base is
 * ino_base, and the kernel holds its body already (sync_set_arrival): a
 * stream ahead of the reader learns where it is, as from an open. */
void sync_body_seen(struct sync_ctx *s, uint64_t ino_base, uint32_t uid);

/* ---- writes: each talks to the server first and changes the cache only
 * after the server confirmed; then the touched folders are re-synced. */

/* A version of a staged file that is on the server. */
struct sync_appended {
	int64_t folder_id;
	uint32_t uid;             /* 0: none, or the server did not say which */
	int exact;                /* the file holds the server's very bytes */
};
/* Validates the staged message (fd, size bytes; read in pieces, never
 * whole) and APPENDs it to the folder, where it shows under name. prev
 * (may be NULL or hold uid 0): an earlier version of the same file, on
 * the server already: removed once the new one is confirmed. *out: the
 * new version. internaldate: SYNC_NO_DATE for none. Junk: MF_ERR_INVAL,
 * nothing sent. */
enum mf_status sync_append(struct sync_ctx *s, int64_t folder_id, const char *name,
                           int fd, uint64_t size, int64_t internaldate,
                           const struct sync_appended *prev, struct sync_appended *out);
/* The staged file (tmp_path, consumed) becomes the cached body of v when
 * it holds exactly the server's bytes. */
void sync_append_keep(struct sync_ctx *s, const struct sync_appended *v, const char *tmp_path);
/* Removes a version no longer wanted: expunged, never moved to the trash. */
enum mf_status sync_append_drop(struct sync_ctx *s, const struct sync_appended *v);
/* Moves a message to another folder, where it shows under name (NULL:
 * its derived name). replace_uid (0: none) is a message of the target
 * folder that the moved one replaces: removed once the move succeeded. */
enum mf_status sync_move(struct sync_ctx *s, int64_t src_folder_id, uint32_t uid,
                         int64_t dst_folder_id, const char *name, uint32_t replace_uid);
/* Removes a message: expunged, or moved to the trash folder when the
 * mount has one (and the message is not in it already). */
enum mf_status sync_remove(struct sync_ctx *s, int64_t folder_id, uint32_t uid);
/* A new name in the same folder: the cache alone changes. */
enum mf_status sync_rename(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                           const char *name);
enum mf_status sync_set_flags(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              const char *flags);
enum mf_status sync_create_folder(struct sync_ctx *s, const char *path);
enum mf_status sync_delete_folder(struct sync_ctx *s, int64_t folder_id);
enum mf_status sync_rename_folder(struct sync_ctx *s, int64_t folder_id, const char *new_path);
/* QUOTA usage and limit in bytes, asked at most once a minute. */
enum mf_status sync_quota(struct sync_ctx *s, uint64_t *used, uint64_t *limit);

#endif

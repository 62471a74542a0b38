/* fs_int.h — what the fs layer's files share; nothing outside
 * src/fs*.c includes it.
 *
 *   fs.c         the operations on folders and stored messages: lookup,
 *                getattr, readdir, open/read, xattrs, statfs, unlink,
 *                mkdir, rmdir, rename
 *   fs_xattr.c   extended attributes: a message's flags, uid and
 *                headers; a folder's cache state; the root's stats
 *   fs_staged.c  files being written: create, write, truncate, utimens,
 *                flush (the APPEND), release; and what the other
 *                operations do to a file still staged
 *
 * fs sees the store (reads) and sync (everything that asks the server),
 * never a driver, a wire format or SQL. */
#ifndef MAILFS_FS_INT_H
#define MAILFS_FS_INT_H

#include "fs.h"
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
	/* Handles of messages being read: freed at destroy when the kernel's
	 * RELEASE (sent in the background at close) came too late for the
	 * session, as after an unmount right after a read. */
	GMutex reading_lock;
	GHashTable *reading;
};

enum fs_kind { FS_ROOT, FS_FOLDER, FS_MESSAGE };

/* Inode numbers (store_folder.ino_base): the root 1, a folder base << 32,
 * a message (base << 32) | uid; a file being written one with the top
 * bit set, for as long as it is staged. */
#define FS_ROOT_INO 1
#define FS_INO(base, uid) (((uint64_t)(base) << 32) | (uint64_t)(uid))
#define FS_STAGED_INO(n) ((UINT64_C(1) << 63) | (uint64_t)(n))

struct fs_node {
	enum fs_kind kind;
	struct store_folder folder;   /* FS_FOLDER, and the parent of FS_MESSAGE */
	struct store_message msg;     /* FS_MESSAGE */
};

struct fs_staged;

/* What fi->fh points to. */
struct fs_handle {
	int fd;
	struct fs_staged *staged;  /* NULL for a message being read */
};

/* ---- fs.c */

struct fs_ctx *fs_ctx(void);
void fs_node_clear(struct fs_node *n);
int fs_errno(enum mf_status st);
struct fs_handle *fs_handle(struct fuse_file_info *fi);
/* Closes and frees the handle of a message being read. */
void fs_reading_release(struct fs_ctx *ctx, struct fs_handle *h);
/* Asks the invalidator thread to drop the kernel's caches for path. */
void fs_invalidate(struct fs_ctx *ctx, const char *path);
/* The folder that will hold a new entry at path: 1 for the root (out
 * empty), 0 with *out filled and *name the last component, or -errno. */
int fs_parent_folder(struct fs_ctx *ctx, const char *path, struct store_folder *out,
                     const char **name);
/* Finds what path names (n cleared with fs_node_clear), or -errno.
 * FS_RESOLVE_SYNC: a name the cache does not know is looked for on the
 * server when the cached view is stale; FS_RESOLVE_KEY: of a message,
 * only its uid and flags. */
#define FS_RESOLVE_SYNC 1
#define FS_RESOLVE_KEY 2
int fs_resolve(struct fs_ctx *ctx, const char *path, struct fs_node *n, int flags);

/* ---- fs_xattr.c */

int fs_getxattr(const char *path, const char *name, char *buf, size_t size);
int fs_listxattr(const char *path, char *buf, size_t size);
int fs_setxattr(const char *path, const char *name, const char *value, size_t size,
                int flags);
/* Forgets the values remembered for the last messages asked about. */
void fs_xattr_forget(void);

/* ---- fs_staged.c */

void fs_staged_init(struct fs_ctx *ctx);
void fs_staged_clear(struct fs_ctx *ctx);
/* Each returns 1 when path is a file still staged, and has handled it
 * (*rc: the operation's result); 0 when it is not. */
int fs_staged_getattr(struct fs_ctx *ctx, const char *path, struct stat *st, int *rc);
int fs_staged_open(struct fs_ctx *ctx, const char *path, struct fuse_file_info *fi);
int fs_staged_unlink(struct fs_ctx *ctx, const char *path);
int fs_staged_rename(struct fs_ctx *ctx, const char *from, const char *to, int *rc);

int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi);
int fs_write(const char *path, const char *buf, size_t size, off_t off,
             struct fuse_file_info *fi);
int fs_flush(const char *path, struct fuse_file_info *fi);
int fs_release(const char *path, struct fuse_file_info *fi);
int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi);
int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi);

#endif

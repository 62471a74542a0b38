/* fs_int.h — what the fs layer's files share; nothing outside
 * src/fs*.c includes it.
 *
 *   fs.c         the node ids, and the operations on folders and stored messages: lookup,
 *                getattr, setattr, statfs, unlink, mkdir, rmdir, rename
 *   fs_body.c    reading a message: open (the body pushed into the
 *                kernel's page cache) and read; a stream's bodies pushed
 *                as they come on a mount that sees no opens
 *   fs_dir.c     directory listings: opendir, readdir(plus), releasedir
 *   fs_inval.c   the kernel's caches of names, attributes and pages,
 *                dropped as what they hold changes
 *   fs_xattr.c   extended attributes: a message's flags, uid and
 *                headers; a folder's cache state; the root's stats
 *   fs_staged.c  files being written: create, write, truncate, utimens,
 *                flush (the APPEND), release; and what the other
 *                operations do to a file still staged
 *
 * The operations are libfuse's low-level ones: a node id is the inode
 * number the store gives (below), so a request names its folder and
 * message without a path or a table of nodes.
 *
 * fs sees the store (reads) and sync (everything that asks the server),
 * never a driver, a wire format or SQL. */
#ifndef MAILFS_FS_INT_H
#define MAILFS_FS_INT_H

#include "fs.h"
#include "sync.h"

/* A set of node ids as a bitmap, one bit for a hash of the id: a node
 * not in it may be taken for in it (one in sixteen at most: the map
 * starts again when a sixteenth of its bits are set). */
struct fs_nodemap {
	gint *bits;
	gint count;              /* bits set since the map was last cleared */
};

/* Who opens files one after another, and how many in a row; who read a
 * folder's first listing to its end (fs_follow.c). */
struct fs_follow {
	GMutex lock;
	pid_t pid;               /* the thread that made the last open */
	unsigned streak;         /* its opens in a row, up to FS_FOLLOW_STREAK */
	int fd;                  /* its /proc/PID/stat, while followed; or -1 */
	int cpu;                 /* the CPU last read there, or -1 */
	unsigned since_read;     /* opens since it was read */
	pid_t lister;            /* the thread that read the listing, or 0 */
	fuse_ino_t listed;       /* the listing's first message */
	fuse_ino_t least;        /* and its first by name */
};

struct fs_ctx {
	const struct mf_config *cfg;
	struct store *store;
	struct sync_ctx *sync;
	struct fuse_session *se;
	uid_t uid;
	gid_t gid;
	time_t mounted_at;
	double timeout;          /* how long the kernel may trust a name or attributes */
	char *mountpoint;        /* fs_set_mountpoint's, or NULL */
	gint tuned;              /* fs_tune ran */
	/* Owned by fs.c from init to destroy: */
	GMutex staged_lock;
	GHashTable *staged;      /* path -> struct fs_staged: files being written */
	GHashTable *staged_nodes;/* serial -> struct fs_staged: while the kernel knows the node */
	GMutex moved_lock;
	GHashTable *moved;       /* node id -> its new path: a message moved to another
	                            folder, until the kernel forgets the old id */
	GAsyncQueue *invalidate; /* struct fs_inval: kernel caches to drop */
	GThread *invalidator;
	/* Handles of messages being read: freed at destroy when the kernel's
	 * RELEASE (sent in the background at close) came too late for the
	 * session, as after an unmount right after a read. */
	GMutex reading_lock;
	GHashTable *reading;
	/* Open directory handles (struct fs_dir *, under reading_lock):
	 * freed at destroy when the session ends before the kernel's
	 * RELEASEDIR came (an unmount or SIGTERM right after a listing). */
	GHashTable *dirs;
	/* Which nodes' bodies were pushed into the kernel's page cache (at an
	 * open, or as a stream brought them): an open of one pushes nothing
	 * and looks nothing up. A false "pushed" costs a READ, nothing more. */
	struct fs_nodemap pushed;
	size_t push_queued;      /* bytes of arrived bodies the invalidator has yet to push */
	/* A read-only mount opens and closes files in the kernel alone
	 * (FUSE_CAP_NO_OPEN_SUPPORT): a READ comes without a handle, and a
	 * size the server got wrong is told to the kernel at the body's
	 * commit (fs_body_grew). */
	int no_open;
	/* The last body a READ without an open could not get, and when: the
	 * kernel reads the page again at once after its read-ahead failed,
	 * and that must not wait a second timeout for the same answer. */
	GMutex failed_lock;
	fuse_ino_t failed_ino;
	int failed_err;
	gint64 failed_at;
	/* A large body read to its end without an open (under failed_lock):
	 * its pages leave the kernel's page cache once a READ of another
	 * node comes, as a first close drops them on a mount with opens. */
	fuse_ino_t read_through;
	/* Which large bodies' pages were dropped at a close: the next close
	 * keeps them (read twice in a mount, a body is worth its memory). A
	 * false "dropped" keeps pages, nothing more. */
	struct fs_nodemap dropped;
	struct fs_follow follow;
};

enum fs_kind { FS_ROOT, FS_FOLDER, FS_MESSAGE };

/* Inode numbers, which are the node ids (store_folder.ino_base): the
 * root 1, a folder base << 32, a message (base << 32) | uid; a file
 * being written one with the top bit set. */
#define FS_ROOT_INO 1
#define FS_INO(base, uid) (((uint64_t)(base) << 32) | (uint64_t)(uid))
#define FS_STAGED_BIT (UINT64_C(1) << 63)
#define FS_STAGED_INO(n) (FS_STAGED_BIT | (uint64_t)(n))
#define FS_INO_BASE(ino) ((uint64_t)(ino) >> 32)
#define FS_INO_UID(ino) ((uint32_t)((ino) & 0xffffffffu))

struct fs_node {
	enum fs_kind kind;
	struct store_folder folder;   /* FS_FOLDER, and the parent of FS_MESSAGE */
	struct store_message msg;     /* FS_MESSAGE */
};

struct fs_staged;

/* What fi->fh points to. */
struct fs_handle {
	int fd;
	uint64_t off, len;         /* a message's body: len bytes of fd from off */
	struct fs_staged *staged;  /* NULL for a message being read */
	fuse_ino_t drop;           /* a large body: its pages are dropped at release */
};

/* ---- fs.c */

/* A message moved to another folder, by its old node id: 0 and *n. */
int fs_moved_node(struct fs_ctx *ctx, fuse_ino_t ino, struct fs_node *n);

/* ---- fs_body.c: reading messages */

#define FS_PUSHED_ORDER 21         /* the maps of pushed and dropped nodes: 256 KiB of bits */
#define FS_PUSHED_BITS (1u << FS_PUSHED_ORDER)
void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
             struct fuse_file_info *fi);
/* ctx->reading's free function: closes and frees a handle. */
void fs_reading_free(gpointer p);
struct fs_handle *fs_handle(struct fuse_file_info *fi);
/* Closes and frees the handle of a message being read. */
void fs_reading_release(struct fs_ctx *ctx, struct fs_handle *h);

void fs_node_clear(struct fs_node *n);
int fs_errno(enum mf_status st);
/* The path of name in the directory parent: "/FOLDER/NAME", or "/NAME"
 * in the root; NULL (*rc = -errno) when parent is no directory. */
char *fs_child_path(struct fs_ctx *ctx, fuse_ino_t parent, const char *name, int *rc);
/* The folder that will hold a new entry at path: 1 for the root (out
 * empty), 0 with *out filled and *name the last component, or -errno. */
int fs_parent_folder(struct fs_ctx *ctx, const char *path, struct store_folder *out,
                     const char **name);
/* Finds what path names (n cleared with fs_node_clear), or -errno.
 * FS_RESOLVE_SYNC: a name the cache does not know is looked for on the
 * server when the cached view is stale. */
#define FS_RESOLVE_SYNC 1
int fs_resolve(struct fs_ctx *ctx, const char *path, struct fs_node *n, int flags);
/* Finds what a node id names (not a staged file's), or -errno. */
int fs_node_of(struct fs_ctx *ctx, fuse_ino_t ino, struct fs_node *n);
void fs_dir_stat(struct fs_ctx *ctx, uint64_t ino, int64_t changed_us, struct stat *st);
void fs_file_stat(struct fs_ctx *ctx, uint64_t ino, uint64_t size, int64_t mtime,
                  struct stat *st);
void fs_message_stat(struct fs_ctx *ctx, uint64_t ino_base, const struct store_message *m,
                     struct stat *st);
/* A reply to a lookup, create or mkdir of a folder or message. */
void fs_entry(struct fs_ctx *ctx, const struct stat *st, struct fuse_entry_param *e);

/* A body of this size or more leaves the kernel's page cache when its
 * reader first closes it in a mount. The cache file holds it already, in
 * the page cache as well: a second copy of each large message read once
 * would double the memory a backup of big mail takes, and a first one's
 * pages, freed at once, are the next one's. Read again, it is pushed
 * again (a copy from the cache file's pages), its attributes are asked
 * again, and from then on it stays (ctx->dropped). A smaller body a
 * stream brings is pushed as it comes (fs_body_arrived). */
#define FS_DROP_MIN (64 * 1024)
/* The mount's read-ahead, so a READ of a large body brings 1 MiB, what
 * libfuse's 256 pages a request hold (the kernel's default: 128 KiB). */
#define FS_READAHEAD_KIB 1024
void fs_tune(struct fs_ctx *ctx);

/* A body a stream brought (len bytes, smaller than FS_DROP_MIN), pushed
 * into the kernel's page cache as the node ino (the invalidator's thread
 * calls it). */
void fs_push_arrived(struct fs_ctx *ctx, fuse_ino_t ino, const void *body, size_t len);
/* sync_set_arrival's held: whether the body of the message is in the
 * kernel's page cache already (pushed in this mount). */
int fs_body_held(void *data, uint64_t ino_base, uint32_t uid);

/* ---- fs_follow.c */

/* At an open: the answering thread goes to the CPU of a reader that
 * opens file after file, or runs free. */
void fs_follow_open(struct fs_ctx *ctx, fuse_req_t req);
/* The thread of req read a folder's first listing to its end: its first
 * message is first, its first by name least. And: is this open (or read,
 * without opens) that thread's next, of that first message? 2: yes, and
 * not the first by name (a reader in the listing's order); 1: yes, also
 * the first by name (either order); 0: no. */
void fs_follow_listed(struct fs_ctx *ctx, fuse_req_t req, fuse_ino_t first, fuse_ino_t least);
int fs_follow_first(struct fs_ctx *ctx, fuse_req_t req, fuse_ino_t ino);
void fs_follow_init(struct fs_ctx *ctx);
void fs_follow_end(struct fs_ctx *ctx);

/* ---- fs_inval.c */

/* Asks the invalidator thread to drop the kernel's caches for a store
 * path ("FOLDER", "FOLDER/" or "FOLDER/NAME"), or for name in the
 * directory parent. */
void fs_invalidate(struct fs_ctx *ctx, const char *path);
void fs_invalidate_entry(struct fs_ctx *ctx, fuse_ino_t parent, const char *name);
/* Drops the kernel's pages of the message ino. */
void fs_invalidate_pages(struct fs_ctx *ctx, fuse_ino_t ino);
/* sync_set_arrival's listener: the bytes are queued for the invalidator
 * (FS_PUSH_QUEUE_MAX at most; beyond that a body is read with READs). */
void fs_body_arrived(void *data, uint64_t ino_base, uint32_t uid, void *body, size_t len);
void fs_inval_start(struct fs_ctx *ctx);
/* Ends the invalidator after what was asked of it. */
void fs_inval_stop(struct fs_ctx *ctx);

/* ---- fs_dir.c */

void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                struct fuse_file_info *fi);
void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi);
/* Frees the directory handles the kernel never released. */
void fs_dirs_clear(struct fs_ctx *ctx);
void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* ---- fs_xattr.c */

void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                 size_t size, int flags);
/* Forgets the values remembered for the last messages asked about. */
void fs_xattr_forget(void);

/* ---- fs_staged.c */

void fs_staged_init(struct fs_ctx *ctx);
void fs_staged_clear(struct fs_ctx *ctx);
/* A lookup of path: 1 when it is a file still staged, with *e filled
 * (the kernel now knows the node: fs_staged_forget gives it back); 0
 * when it is not. */
int fs_staged_lookup(struct fs_ctx *ctx, const char *path, struct fuse_entry_param *e);
/* A staged node id's attributes, open and setattr: -ESTALE once its
 * file is finished (the kernel then looks the name up again and finds
 * the stored message). */
int fs_staged_getattr(struct fs_ctx *ctx, fuse_ino_t ino, struct stat *st);
int fs_staged_open(struct fs_ctx *ctx, fuse_ino_t ino, struct fuse_file_info *fi);
int fs_staged_setattr(struct fs_ctx *ctx, fuse_ino_t ino, struct stat *attr, int to_set,
                      struct fuse_file_info *fi);
void fs_staged_forget(struct fs_ctx *ctx, fuse_ino_t ino, uint64_t nlookup);
/* Each returns 1 when path is a file still staged, and has handled it
 * (*rc: the operation's result); 0 when it is not. */
int fs_staged_unlink(struct fs_ctx *ctx, const char *path);
int fs_staged_rename(struct fs_ctx *ctx, const char *from, const char *to, int *rc);

void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
               struct fuse_file_info *fi);
void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
              struct fuse_file_info *fi);
void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* What release does, for a handle whose open or create was interrupted. */
void fs_release_handle(struct fs_ctx *ctx, struct fs_handle *h);

#endif

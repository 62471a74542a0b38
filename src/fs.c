/* fs.c — the libfuse operations. Each one resolves a path to a folder or
 * a message through the store, calls sync when the server must be asked,
 * and maps statuses to -errno (status.c). Files being written are
 * fs_staged.c's. Must not: include protocol, driver or SQLite headers
 * (directly or through its own), download a body for stat or readdir. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <glib.h>
#include "fs_int.h"
#include "mime.h"
#include "log.h"
#include "stats.h"


struct fs_ctx *fs_ctx(void)
{
	return fuse_get_context()->private_data;
}

void fs_node_clear(struct fs_node *n)
{
	store_folder_clear(&n->folder);
	store_message_clear(&n->msg);
}

int fs_errno(enum mf_status st)
{
	return -mf_status_to_errno(st);
}

/* Asks the invalidator thread to drop the kernel's caches for path: not
 * from the operation itself, which may hold the locks the kernel needs. */
void fs_invalidate(struct fs_ctx *ctx, const char *path)
{
	if (ctx->invalidate)
		g_async_queue_push(ctx->invalidate, g_strdup(path));
}

static gpointer fs_invalidator(gpointer data)
{
	struct fs_ctx *ctx = data;

	for (;;) {
		char *path = g_async_queue_pop(ctx->invalidate);
		if (!*path) {
			g_free(path);
			return NULL;
		}
		fuse_invalidate_path(ctx->fuse, path);
		g_free(path);
	}
}

static void fs_path_split(const char *path, char **parent, const char **name)
{
	const char *slash = strrchr(path, '/');

	*parent = g_strndup(path, slash - path);
	*name = slash + 1;
}

/* The folder that will hold a new entry at path: "/" for the root. Waits
 * like fs_resolve. */
int fs_parent_folder(struct fs_ctx *ctx, const char *path, struct store_folder *out,
                            const char **name)
{
	char *parent;
	enum mf_status st;

	fs_path_split(path, &parent, name);
	if (!*parent) {
		g_free(parent);
		memset(out, 0, sizeof *out);
		return 1;  /* the root */
	}
	st = store_folder_by_path(ctx->store, parent + 1, out);
	g_free(parent);
	if (st != MF_OK)
		return fs_errno(st);
	sync_folder_settle(ctx->sync, out->id);
	return 0;
}

/* Finds what path names. FS_RESOLVE_SYNC: a name the cache does not know
 * is looked for on the server when the cached view is stale;
 * FS_RESOLVE_KEY: of a message, only its uid, and its flags when they may
 * hide it. A message waits
 * while its folder's first listing is not stored yet, so that every use
 * sees it whole (for a folder, what changes it waits: sync_folder_settle). */
int fs_resolve(struct fs_ctx *ctx, const char *path, struct fs_node *n, int flags)
{
	enum mf_status (*by_name)(struct store *, int64_t, const char *, struct store_message *) =
		flags & FS_RESOLVE_KEY ? store_message_key_by_name : store_message_by_name;
	int may_sync = flags & FS_RESOLVE_SYNC;
	const char *rel = path + 1;
	const char *slash;
	char *parent = NULL;
	enum mf_status st;

	memset(n, 0, sizeof *n);
	if (strcmp(path, "/") == 0) {
		n->kind = FS_ROOT;
		return 0;
	}
	st = store_folder_by_path(ctx->store, rel, &n->folder);
	if (st == MF_ERR_NOTFOUND && may_sync &&
	    sync_folders_if_stale(ctx->sync) == MF_OK)
		st = store_folder_by_path(ctx->store, rel, &n->folder);
	if (st == MF_OK) {
		n->kind = FS_FOLDER;
		return 0;
	}
	if (st != MF_ERR_NOTFOUND)
		return fs_errno(st);
	slash = strrchr(rel, '/');
	if (!slash)
		return -ENOENT;
	parent = g_strndup(rel, slash - rel);
	st = store_folder_by_path(ctx->store, parent, &n->folder);
	g_free(parent);
	if (st != MF_OK)
		return fs_errno(st);
	if (n->folder.noselect) {
		fs_node_clear(n);
		return -ENOENT;
	}
	sync_folder_settle(ctx->sync, n->folder.id);
	st = by_name(ctx->store, n->folder.id, slash + 1, &n->msg);
	if (st == MF_ERR_NOTFOUND && may_sync) {
		int changed = 0;
		if (sync_folder_if_stale(ctx->sync, n->folder.id, 0, &changed) == MF_OK && changed)
			st = by_name(ctx->store, n->folder.id, slash + 1, &n->msg);
	}
	if (st != MF_OK) {
		fs_node_clear(n);
		return fs_errno(st);
	}
	if (sync_hidden(ctx->sync, n->msg.flags)) {
		fs_node_clear(n);
		return -ENOENT;
	}
	n->kind = FS_MESSAGE;
	return 0;
}

/* changed_us: when the folder's contents last changed (store_folder's
 * changed_at, Unix µs); 0: the mount's time (the root; a folder of a
 * cache from before schema 4, until its next sync). */
static void fs_dir_stat(struct fs_ctx *ctx, uint64_t ino, int64_t changed_us, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_mode = S_IFDIR | (ctx->cfg->readonly ? 0555 : 0755);
	st->st_nlink = 2;
	st->st_uid = ctx->uid;
	st->st_gid = ctx->gid;
	if (changed_us > 0) {
		st->st_mtim.tv_sec = (time_t)(changed_us / G_USEC_PER_SEC);
		st->st_mtim.tv_nsec = (long)(changed_us % G_USEC_PER_SEC) * 1000;
	} else {
		st->st_mtim.tv_sec = ctx->mounted_at;
	}
	st->st_ctim = st->st_atim = st->st_mtim;
}

static void fs_file_stat(struct fs_ctx *ctx, uint64_t ino, uint64_t size, int64_t mtime,
                         struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_mode = S_IFREG | (ctx->cfg->readonly ? 0444 : 0644);
	st->st_nlink = 1;
	st->st_uid = ctx->uid;
	st->st_gid = ctx->gid;
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_blksize = 4096;
	st->st_mtime = st->st_ctime = st->st_atime = (time_t)mtime;
}

static void fs_message_stat(struct fs_ctx *ctx, uint64_t ino_base, const struct store_message *m,
                            struct stat *st)
{
	fs_file_stat(ctx, FS_INO(ino_base, m->uid), m->size, m->internaldate, st);
}

/* The store changed a name, a size or an entry's existence: the kernel's
 * idea of it goes (from the invalidator thread, never from the store's
 * lock). */
static void fs_store_changed(void *data, const char *path)
{
	struct fs_ctx *ctx = data;
	char *p = g_strconcat("/", path, NULL);

	fs_invalidate(ctx, p);
	g_free(p);
}

/* Push (sync_watch_start): a folder was brought in step with what
 * another client did; its directory's attributes go from the kernel's
 * cache (names gone or moved went through fs_store_changed, and new ones
 * are looked up: no negative entries are cached). */
static void fs_folder_changed(void *data, const char *folder_path)
{
	fs_store_changed(data, folder_path);
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs_ctx *ctx = fs_ctx();
	/* How long the kernel may trust a name or attributes without asking:
	 * as long as the cache itself trusts the folder (refresh). What the
	 * mount learns of before then (a name that shifts, a size corrected
	 * by a download, a message gone) is pushed to the kernel as it
	 * happens (fs_store_changed), so a stat or an open after readdir
	 * costs no request while nothing changed. */
	double t = ctx->cfg->refresh;

	/* Attributes with every listing, not only with its first chunk: tar,
	 * rsync and restic stat each name they list, and the kernel's
	 * "auto" mode switched to plain listings after the first chunk, so
	 * a listing after a mount cost a LOOKUP per message. */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	cfg->use_ino = 1;  /* the store's numbers: the same on every mount of a cache */
	cfg->entry_timeout = t;
	cfg->attr_timeout = t;
	cfg->negative_timeout = 0;
	cfg->nullpath_ok = 0;
	ctx->fuse = fuse_get_context()->fuse;
	fs_staged_init(ctx);
	ctx->invalidate = g_async_queue_new();
	ctx->invalidator = g_thread_new("invalidate", fs_invalidator, ctx);
	store_set_observer(ctx->store, fs_store_changed, ctx);
	sync_watch_start(ctx->sync, fs_folder_changed, ctx);
	return ctx;
}

/* Push ends, then the invalidator (nothing reports to it any more): while
 * fuse's node table still exists. */
void fs_stop(struct fs_ctx *ctx)
{
	if (!ctx->invalidator)
		return;
	sync_watch_stop(ctx->sync);
	store_set_observer(ctx->store, NULL, NULL);
	g_async_queue_push(ctx->invalidate, g_strdup(""));
	g_thread_join(ctx->invalidator);
	ctx->invalidator = NULL;
	g_async_queue_unref(ctx->invalidate);
	ctx->invalidate = NULL;
}

static void fs_destroy(void *data)
{
	struct fs_ctx *ctx = data;

	fs_stop(ctx);
	fs_staged_clear(ctx);
	fs_xattr_forget();
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	int rc;

	stats_add(getattrs, 1);
	if (fs_staged_getattr(ctx, path, st, &rc))
		return rc;
	rc = fs_resolve(ctx, path, &n, FS_RESOLVE_SYNC);

	if (rc != 0)
		return rc;
	if (n.kind == FS_FOLDER && n.folder.synced_at && !n.folder.noselect) {
		/* A folder's time says whether it changed (notmuch, find -newer,
		 * make look no further): a listed one is re-checked when stale,
		 * as a listing would be; one never listed is not listed for it. */
		int changed = 0;
		struct store_folder f;
		if (sync_folder_if_stale(ctx->sync, n.folder.id, 0, &changed) == MF_OK && changed &&
		    store_folder_by_id(ctx->store, n.folder.id, &f) == MF_OK) {
			store_folder_clear(&n.folder);
			n.folder = f;
		}
	}
	if (n.kind == FS_MESSAGE)
		fs_message_stat(ctx, n.folder.ino_base, &n.msg, st);
	else
		fs_dir_stat(ctx, n.kind == FS_ROOT ? FS_ROOT_INO : FS_INO(n.folder.ino_base, 0),
		            n.kind == FS_ROOT ? 0 : n.folder.changed_at, st);
	fs_node_clear(&n);
	return 0;
}

/* A directory listing taken at the first readdir of an open directory
 * and served by offset from then on: the kernel gets complete entries
 * (readdirplus with attributes), so ls -l needs no lookup per file, and
 * a listing stays consistent across the many readdir calls of a big
 * folder. */
struct fs_dirent {       /* what readdir needs of an entry's stat: a
                            50,000-message folder's listing is held whole */
	const char *name;    /* in fs_dir.names */
	uint64_t ino, size;
	int64_t mtime;       /* a directory's: Unix µs */
	int dir;
};

struct fs_dir {
	GArray *entries;      /* struct fs_dirent; NULL until the first readdir */
	GStringChunk *names;
	struct sync_live *live;  /* a first listing, after entries (NULL: none) */
	uint64_t ino_base;    /* the folder's */
};

static void fs_dir_clear(struct fs_dir *d)
{
	if (d->entries)
		g_array_free(d->entries, TRUE);
	if (d->names)
		g_string_chunk_free(d->names);
	sync_live_unref(d->live);
	d->entries = NULL;
	d->names = NULL;
	d->live = NULL;
}

static void fs_dir_add(struct fs_dir *d, const char *name, const struct stat *st)
{
	struct fs_dirent e = { g_string_chunk_insert(d->names, name), st->st_ino,
	                       (uint64_t)st->st_size, st->st_mtime, S_ISDIR(st->st_mode) };

	if (e.dir)
		e.mtime = (int64_t)st->st_mtim.tv_sec * G_USEC_PER_SEC + st->st_mtim.tv_nsec / 1000;

	g_array_append_val(d->entries, e);
}

struct fs_fill {
	struct fs_ctx *ctx;
	struct fs_dir *dir;
	uint64_t ino_base;    /* the folder's, for its messages */
};

static int fs_fill_folder(void *data, const struct store_folder *f)
{
	struct fs_fill *fill = data;
	struct stat st;
	const char *base = strrchr(f->path, '/');

	fs_dir_stat(fill->ctx, FS_INO(f->ino_base, 0), f->changed_at, &st);
	fs_dir_add(fill->dir, base ? base + 1 : f->path, &st);
	return 0;
}

static int fs_fill_message(void *data, const struct store_message *m)
{
	struct fs_fill *fill = data;
	struct stat st;

	if (sync_hidden(fill->ctx->sync, m->flags))
		return 0;
	fs_message_stat(fill->ctx, fill->ino_base, m, &st);
	fs_dir_add(fill->dir, m->name, &st);
	return 0;
}

/* The inode number of the folder holding path's folder (NULL: the root). */
static uint64_t fs_parent_ino(struct fs_ctx *ctx, const char *folder_path)
{
	const char *slash = folder_path ? strrchr(folder_path, '/') : NULL;
	struct store_folder f;
	uint64_t ino = FS_ROOT_INO;
	char *parent;

	if (!slash)
		return FS_ROOT_INO;
	parent = g_strndup(folder_path, slash - folder_path);
	if (store_folder_by_path(ctx->store, parent, &f) == MF_OK) {
		ino = FS_INO(f.ino_base, 0);
		store_folder_clear(&f);
	}
	g_free(parent);
	return ino;
}

/* The folder as the sync left it: whether the cache holds a listing of
 * it (one never listed, because the server was away or the mount is
 * offline, has no contents to show, not an empty one), and its inode
 * base (a re-check that found its UIDs started again gave it a new one).
 * One lookup, for both. */
static enum mf_status fs_folder_after_sync(struct fs_ctx *ctx, int64_t folder_id, int *listed,
                                           uint64_t *base)
{
	struct store_folder f = { 0 };
	enum mf_status st = store_folder_by_id(ctx->store, folder_id, &f);

	if (st == MF_OK) {
		*listed = f.synced_at != 0 || f.message_count != 0;
		*base = f.ino_base;
	}
	store_folder_clear(&f);
	return st;
}

static int fs_dir_snapshot(struct fs_ctx *ctx, const char *path, struct fs_dir *d)
{
	struct fs_fill fill;
	struct fs_node n;
	struct stat st;
	enum mf_status s;
	int rc;

	sync_folders_if_stale(ctx->sync);
	rc = fs_resolve(ctx, path, &n, 0);
	if (rc != 0)
		return rc;
	if (n.kind == FS_MESSAGE) {
		fs_node_clear(&n);
		return -ENOTDIR;
	}
	d->entries = g_array_new(FALSE, FALSE, sizeof(struct fs_dirent));
	d->names = g_string_chunk_new(16 * 1024);
	fill = (struct fs_fill){ ctx, d, n.folder.ino_base };
	fs_dir_stat(ctx, n.kind == FS_ROOT ? FS_ROOT_INO : FS_INO(n.folder.ino_base, 0),
	            n.kind == FS_ROOT ? 0 : n.folder.changed_at, &st);
	fs_dir_add(d, ".", &st);
	fs_dir_stat(ctx, fs_parent_ino(ctx, n.kind == FS_ROOT ? NULL : n.folder.path), 0, &st);
	fs_dir_add(d, "..", &st);
	s = store_folder_children(ctx->store, n.kind == FS_ROOT ? "" : n.folder.path,
	                          fs_fill_folder, &fill);
	if (s == MF_OK && n.kind == FS_FOLDER && !n.folder.noselect) {
		/* A failure leaves the cache as it was: list what it holds. A
		 * first listing comes from the sync as it arrives. */
		int listed = 1;
		sync_folder_live(ctx->sync, n.folder.id, &d->live);
		if (!d->live)
			s = fs_folder_after_sync(ctx, n.folder.id, &listed, &fill.ino_base);
		if (s == MF_OK && !listed)
			s = MF_ERR_IO;  /* an empty directory would be a lie (rsync --delete) */
		else if (s == MF_OK && !d->live)
			s = store_messages_list(ctx->store, n.folder.id, fs_fill_message, &fill);
		d->ino_base = fill.ino_base;
	}
	fs_node_clear(&n);
	if (s != MF_OK) {
		fs_dir_clear(d);
		return fs_errno(s);
	}
	return 0;
}

/* The handle must exist from opendir on: libfuse keeps only what opendir
 * put in fi->fh, not what readdir puts there. */
static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
	fi->fh = (uint64_t)(uintptr_t)g_new0(struct fs_dir, 1);
	return 0;
}

/* The entries of a first listing from offset on, as they arrive: waits
 * for one at least, then hands over what there is, so that ls works on
 * the first names while the rest still come. */
static int fs_readdir_live(struct fs_ctx *ctx, struct fs_dir *d, void *buf,
                           fuse_fill_dir_t filler, off_t offset)
{
	struct sync_live_entry *batch[256];
	size_t base = d->entries->len, k = (size_t)offset > base ? (size_t)offset - base : 0;
	int filled = 0, complete;
	enum mf_status st;
	struct stat sb;

	for (;;) {
		size_t got = sync_live_wait(d->live, k, batch, G_N_ELEMENTS(batch), &complete, &st);
		for (size_t i = 0; i < got; i++, k++) {
			const struct sync_live_entry *e = batch[i];
			if (e->hidden)
				continue;
			struct store_message m = { .uid = e->uid, .size = e->size, .internaldate = e->mtime };
			fs_message_stat(ctx, d->ino_base, &m, &sb);
			/* Names only: an entry with attributes is a node in libfuse's
			 * table from now on, and while the first listing is held
			 * whole until stored, 50,000 of them raised the peak by a
			 * fifth (the kernel looks up what it stats instead). */
			if (filler(buf, e->name, &sb, (off_t)(base + k + 1), 0))
				return 0;
			filled = 1;
		}
		if (complete)
			return filled || st == MF_OK ? 0 : fs_errno(st);
		if (filled)
			return 0;
	}
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	int rc;

	/* Offset 0 is a new listing (also after rewinddir). */
	if (!d->entries || offset == 0) {
		fs_dir_clear(d);
		rc = fs_dir_snapshot(ctx, path, d);
		if (rc != 0)
			return rc;
	}
	for (guint i = (guint)offset; i < d->entries->len; i++) {
		const struct fs_dirent *e = &g_array_index(d->entries, struct fs_dirent, i);
		/* A folder's attributes are not given: its time comes from a
		 * getattr, which re-checks it when stale (find -newer, notmuch). */
		int plus = i >= 2 && !e->dir ? FUSE_FILL_DIR_PLUS : 0;
		struct stat st;
		if (e->dir)
			fs_dir_stat(ctx, e->ino, e->mtime, &st);
		else
			fs_file_stat(ctx, e->ino, e->size, e->mtime, &st);
		if (filler(buf, e->name, &st, (off_t)i + 1, plus))
			return 0;
	}
	return d->live ? fs_readdir_live(ctx, d, buf, filler, offset) : 0;
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;

	fs_dir_clear(d);
	g_free(d);
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_handle *h;
	struct fs_node n;
	int rc, fd = -1, size_changed = 0;
	enum mf_status st;

	if (fs_staged_open(ctx, path, fi))
		return 0;
	rc = fs_resolve(ctx, path, &n, FS_RESOLVE_SYNC | FS_RESOLVE_KEY);
	if (rc != 0)
		return rc;
	if (n.kind != FS_MESSAGE) {
		fs_node_clear(&n);
		return -EISDIR;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fs_node_clear(&n);
		/* Messages are immutable: write a new file and rename it. */
		return ctx->cfg->readonly ? -EROFS : -EPERM;
	}
	st = sync_body_open(ctx->sync, n.folder.id, n.msg.uid, &fd, &size_changed);
	fs_node_clear(&n);
	if (st != MF_OK)
		return fs_errno(st);
	h = g_new0(struct fs_handle, 1);
	h->fd = fd;
	g_mutex_lock(&ctx->reading_lock);
	g_hash_table_add(ctx->reading, h);
	g_mutex_unlock(&ctx->reading_lock);
	fi->fh = (uint64_t)(uintptr_t)h;
	/* A body never changes, so the page cache may keep it; when the real
	 * size differs from the server's RFC822.SIZE, read around the kernel's
	 * idea of the size instead. */
	if (size_changed)
		fi->direct_io = 1;
	else
		fi->keep_cache = 1;
	fi->noflush = 1;  /* a reader's close has nothing to say: no FLUSH request */
	return 0;
}

static void fs_reading_free(gpointer p)
{
	struct fs_handle *h = p;

	close(h->fd);
	g_free(h);
}

void fs_reading_release(struct fs_ctx *ctx, struct fs_handle *h)
{
	g_mutex_lock(&ctx->reading_lock);
	g_hash_table_steal(ctx->reading, h);
	g_mutex_unlock(&ctx->reading_lock);
	fs_reading_free(h);
}

struct fs_handle *fs_handle(struct fuse_file_info *fi)
{
	return (struct fs_handle *)(uintptr_t)fi->fh;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n;

	do
		n = pread(fs_handle(fi)->fd, buf, size, off);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int)n;
}

static int fs_statfs(const char *path, struct statvfs *sv)
{
	struct fs_ctx *ctx = fs_ctx();
	uint64_t used = 0, limit = 0;

	memset(sv, 0, sizeof *sv);
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_namemax = 255;
	/* The server's QUOTA STORAGE, when it has one: what df should say. */
	if (sync_quota(ctx->sync, &used, &limit) == MF_OK && limit > 0) {
		sv->f_blocks = limit / 4096;
		sv->f_bfree = sv->f_bavail = used < limit ? (limit - used) / 4096 : 0;
	}
	if (ctx->cfg->readonly)
		sv->f_flag |= ST_RDONLY;
	return 0;
}

static int fs_unlink(const char *path)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	enum mf_status st;
	int rc;

	if (ctx->cfg->readonly)
		return -EROFS;
	if (fs_staged_unlink(ctx, path))
		return 0;
	rc = fs_resolve(ctx, path, &n, 0);
	if (rc != 0)
		return rc;
	if (n.kind != FS_MESSAGE) {
		fs_node_clear(&n);
		return -EISDIR;
	}
	st = sync_remove(ctx->sync, n.folder.id, n.msg.uid);
	fs_node_clear(&n);
	return fs_errno(st);
}

static int fs_mkdir(const char *path, mode_t mode)
{
	struct fs_ctx *ctx = fs_ctx();

	if (ctx->cfg->readonly)
		return -EROFS;
	return fs_errno(sync_create_folder(ctx->sync, path + 1));
}

static int fs_has_child(void *data, const struct store_folder *f)
{
	*(int *)data = 1;
	return 1;
}

static int fs_rmdir(const char *path)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	int rc, children = 0;
	enum mf_status st;

	if (ctx->cfg->readonly)
		return -EROFS;
	rc = fs_resolve(ctx, path, &n, 0);
	if (rc != 0)
		return rc;
	if (n.kind != FS_FOLDER) {
		fs_node_clear(&n);
		return n.kind == FS_ROOT ? -EBUSY : -ENOTDIR;
	}
	if (g_ascii_strcasecmp(n.folder.path, "INBOX") == 0) {
		fs_node_clear(&n);
		return -EBUSY;
	}
	sync_folder_settle(ctx->sync, n.folder.id);
	store_folder_children(ctx->store, n.folder.path, fs_has_child, &children);
	st = children ? MF_ERR_NOTEMPTY : sync_delete_folder(ctx->sync, n.folder.id);
	fs_node_clear(&n);
	return fs_errno(st);
}

static int fs_rename_message(struct fs_ctx *ctx, struct fs_node *src, const char *to,
                             unsigned int flags)
{
	struct store_folder dst = { 0 };
	struct store_message target = { 0 };
	const char *name;
	enum mf_status st;
	int rc, have_target;

	rc = fs_parent_folder(ctx, to, &dst, &name);
	if (rc == 1)
		return -EPERM;
	if (rc < 0)
		return rc;
	if (dst.noselect) {
		store_folder_clear(&dst);
		return -EPERM;
	}
	have_target = store_message_by_name(ctx->store, dst.id, name, &target) == MF_OK &&
	              !(dst.id == src->folder.id && target.uid == src->msg.uid);
	if (have_target && (flags & RENAME_NOREPLACE)) {
		st = MF_ERR_EXISTS;
	} else if (dst.id == src->folder.id) {
		/* The new one is in place already: the old one goes first,
		 * then the name changes hands. */
		st = have_target ? sync_remove(ctx->sync, dst.id, target.uid) : MF_OK;
		if (st == MF_OK)
			st = sync_rename(ctx->sync, dst.id, src->msg.uid, name);
	} else {
		/* Moved first; only then is a message it replaces removed. */
		st = sync_move(ctx->sync, src->folder.id, src->msg.uid, dst.id, name,
		               have_target ? target.uid : 0);
	}
	store_message_clear(&target);
	store_folder_clear(&dst);
	return fs_errno(st);
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	struct fs_ctx *ctx = fs_ctx();
	struct store_folder parent = { 0 };
	struct fs_node n;
	const char *name;
	int rc;

	if (ctx->cfg->readonly)
		return -EROFS;
	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	if (fs_staged_rename(ctx, from, to, &rc))
		return rc;

	rc = fs_resolve(ctx, from, &n, 0);
	if (rc != 0)
		return rc;
	if (n.kind == FS_ROOT) {
		rc = -EBUSY;
	} else if (n.kind == FS_MESSAGE) {
		rc = fs_rename_message(ctx, &n, to, flags);
	} else if (g_ascii_strcasecmp(n.folder.path, "INBOX") == 0) {
		rc = -EBUSY;  /* RENAME of INBOX moves its mail: not what mv means */
	} else {
		rc = fs_parent_folder(ctx, to, &parent, &name);
		if (rc >= 0) {
			store_folder_clear(&parent);
			sync_folder_settle(ctx->sync, n.folder.id);
			rc = fs_errno(sync_rename_folder(ctx->sync, n.folder.id, to + 1));
		}
	}
	fs_node_clear(&n);
	return rc;
}

/* Modes and owners are fixed; cp -p and rsync -a set them anyway. */
static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return fs_ctx()->cfg->readonly ? -EROFS : 0;
}

static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	return fs_ctx()->cfg->readonly ? -EROFS : 0;
}

static const struct fuse_operations fs_ops = {
	.init = fs_init,
	.destroy = fs_destroy,
	.getattr = fs_getattr,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.releasedir = fs_releasedir,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.flush = fs_flush,
	.release = fs_release,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.setxattr = fs_setxattr,
	.statfs = fs_statfs,
	.create = fs_create,
	.mkdir = fs_mkdir,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.rename = fs_rename,
	.truncate = fs_truncate,
	.utimens = fs_utimens,
	.chmod = fs_chmod,
	.chown = fs_chown,
};

const struct fuse_operations *fs_operations(void)
{
	return &fs_ops;
}

struct fs_ctx *fs_new(const struct mf_config *cfg)
{
	struct fs_ctx *ctx = g_new0(struct fs_ctx, 1);

	ctx->cfg = cfg;
	ctx->uid = getuid();
	ctx->gid = getgid();
	ctx->mounted_at = time(NULL);
	g_mutex_init(&ctx->reading_lock);
	ctx->reading = g_hash_table_new_full(g_direct_hash, g_direct_equal, fs_reading_free, NULL);
	return ctx;
}

void fs_attach(struct fs_ctx *ctx, struct store *store, struct sync_ctx *sync)
{
	ctx->store = store;
	ctx->sync = sync;
}

void fs_free(struct fs_ctx *ctx)
{
	if (!ctx)
		return;
	/* After fuse_destroy: no request comes any more. */
	g_hash_table_destroy(ctx->reading);
	g_mutex_clear(&ctx->reading_lock);
	g_free(ctx);
}

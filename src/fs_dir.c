/* fs_dir.c — directory listings. A listing is taken at the first
 * readdir of an open directory and served by offset from then on: the
 * kernel gets complete entries (readdirplus with attributes), so ls -l
 * and tar need no lookup per file, and a listing stays consistent across
 * the many readdir calls of a big folder. A folder's first listing is
 * shown as it arrives from the server (sync_live). Must not: download a
 * body. */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include "fs_int.h"

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
	char *path;           /* the folder's store path at opendir (NULL: the root) */
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

static int fs_dir_snapshot(struct fs_ctx *ctx, fuse_ino_t ino, struct fs_dir *d)
{
	struct fs_fill fill;
	struct fs_node n;
	struct stat st;
	enum mf_status s;
	int rc;

	sync_folders_if_stale(ctx->sync);
	rc = fs_node_of(ctx, ino, &n);
	if (rc == -ESTALE && d->path && store_folder_by_path(ctx->store, d->path, &n.folder) == MF_OK) {
		/* Made again on the server since the opendir (a new number):
		 * the folder at the path the handle named is listed as it is
		 * now, so that an ls racing the re-check does not fail. */
		n.kind = FS_FOLDER;
		rc = 0;
	}
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

/* The handle exists from opendir on; the listing is taken at the first
 * readdir. */
static void fs_dir_free(struct fs_dir *d)
{
	fs_dir_clear(d);
	g_free(d->path);
	g_free(d);
}

/* Forgets the handle d (closed, or its open interrupted) and frees it. */
static void fs_dir_release(struct fs_ctx *ctx, struct fs_dir *d)
{
	g_mutex_lock(&ctx->reading_lock);
	g_hash_table_remove(ctx->dirs, d);
	g_mutex_unlock(&ctx->reading_lock);
	fs_dir_free(d);
}

void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fuse_req_userdata(req);
	struct fs_dir *d = g_new0(struct fs_dir, 1);
	struct store_folder f;

	fs_tune(ctx);
	if (ino != FS_ROOT_INO) {
		enum mf_status st = store_folder_by_base(ctx->store, FS_INO_BASE(ino), &f);
		if (st != MF_OK) {
			/* ESTALE, as fs_node_of says: the kernel looks the name up again. */
			g_free(d);
			fuse_reply_err(req, st == MF_ERR_NOTFOUND ? ESTALE : -fs_errno(st));
			return;
		}
		d->path = g_strdup(f.path);
		store_folder_clear(&f);
	}
	g_mutex_lock(&ctx->reading_lock);
	g_hash_table_add(ctx->dirs, d);
	g_mutex_unlock(&ctx->reading_lock);
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_dir_release(ctx, d);
}

void fs_dirs_clear(struct fs_ctx *ctx)
{
	GHashTableIter it;
	gpointer d;

	g_mutex_lock(&ctx->reading_lock);
	g_hash_table_iter_init(&it, ctx->dirs);
	while (g_hash_table_iter_next(&it, &d, NULL)) {
		fs_dir_free(d);
		g_hash_table_iter_remove(&it);
	}
	g_mutex_unlock(&ctx->reading_lock);
}

/* A reply buffer being filled. */
struct fs_dirbuf {
	fuse_req_t req;
	struct fs_ctx *ctx;
	char *buf;
	size_t size, used;
	int plus;
};

/* Adds an entry; 0 when it did not fit. A message's entry in a
 * readdirplus carries its node and attributes. A folder's does not, nor
 * do . and ..: a folder's time comes from a getattr, which re-checks it
 * when stale (find -newer, notmuch). */
static int fs_dirbuf_add(struct fs_dirbuf *b, const char *name, const struct stat *st,
                         off_t next)
{
	size_t n;

	if (b->plus) {
		struct fuse_entry_param e;
		if (S_ISDIR(st->st_mode)) {
			memset(&e, 0, sizeof e);
			e.attr = *st;
		} else {
			fs_entry(b->ctx, st, &e);
		}
		n = fuse_add_direntry_plus(b->req, b->buf + b->used, b->size - b->used, name, &e, next);
	} else {
		n = fuse_add_direntry(b->req, b->buf + b->used, b->size - b->used, name, st, next);
	}
	if (n > b->size - b->used)
		return 0;
	b->used += n;
	return 1;
}

/* The reader of b has read d's first listing to its end: its first
 * message, which a reader in the listing's order opens next, is noted, and
 * the first by name (fs_follow.c). */
static void fs_readdir_listed(struct fs_dirbuf *b, struct fs_dir *d)
{
	struct sync_live_entry *batch[256];
	const struct sync_live_entry *first = NULL, *least = NULL;
	enum mf_status st;
	int complete;
	size_t got;

	for (size_t k = 0; (got = sync_live_wait(d->live, k, batch, G_N_ELEMENTS(batch), &complete,
	                                         &st)) > 0; k += got) {
		for (size_t i = 0; i < got; i++) {
			if (batch[i]->hidden)
				continue;
			if (!first)
				first = batch[i];
			if (!least || strcmp(batch[i]->name, least->name) < 0)
				least = batch[i];
		}
	}
	if (first)
		fs_follow_listed(b->ctx, b->req, FS_INO(d->ino_base, first->uid),
		                 FS_INO(d->ino_base, least->uid));
}

/* The entries of a first listing from offset on, as they arrive: waits
 * for one at least, then hands over what there is, so that ls works on
 * the first names while the rest still come. */
static int fs_readdir_live(struct fs_dirbuf *b, struct fs_dir *d, off_t offset)
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
			fs_message_stat(b->ctx, d->ino_base, &m, &sb);
			if (!fs_dirbuf_add(b, e->name, &sb, (off_t)(base + k + 1)))
				return 0;
			filled = 1;
		}
		if (complete && !filled && st == MF_OK)
			fs_readdir_listed(b, d);
		if (complete)
			return filled || st == MF_OK ? 0 : fs_errno(st);
		if (filled)
			return 0;
	}
}

static void fs_readdir_any(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
                           struct fuse_file_info *fi, int plus)
{
	struct fs_ctx *ctx = fuse_req_userdata(req);
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	struct fs_dirbuf b = { req, ctx, NULL, size, 0, plus };
	guint i;
	int rc = 0;

	/* Offset 0 is a new listing (also after rewinddir). */
	if (!d->entries || offset == 0) {
		fs_dir_clear(d);
		rc = fs_dir_snapshot(ctx, ino, d);
		if (rc != 0) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	b.buf = g_malloc(size);
	for (i = (guint)offset; i < d->entries->len; i++) {
		const struct fs_dirent *e = &g_array_index(d->entries, struct fs_dirent, i);
		struct stat st;
		if (e->dir)
			fs_dir_stat(ctx, e->ino, e->mtime, &st);
		else
			fs_file_stat(ctx, e->ino, e->size, e->mtime, &st);
		if (!fs_dirbuf_add(&b, e->name, &st, (off_t)i + 1))
			break;
	}
	if (i >= d->entries->len && d->live)
		rc = fs_readdir_live(&b, d, offset);
	if (rc != 0 && b.used == 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, b.buf, b.used);
	g_free(b.buf);
}

void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                struct fuse_file_info *fi)
{
	fs_readdir_any(req, ino, size, off, fi, 0);
}

void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	fs_readdir_any(req, ino, size, off, fi, 1);
}

void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_dir_release(fuse_req_userdata(req), (struct fs_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

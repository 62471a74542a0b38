/* fs_staged.c — files being written into a folder (cp, rsync, shell
 * redirection): created in the cache's tmp/, written, and at the last
 * close validated and APPENDed through sync; the state machine
 * create -> write/truncate/utimens -> flush -> release, and what unlink,
 * rename, getattr and open do to a file still staged.
 *
 * Must not: APPEND a file twice, or hold staged_lock across a server
 * operation that getattr would wait for. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "fs_int.h"

/* A file being written into a folder (cp, rsync, shell redirection):
 * staged in the cache's tmp/ while any descriptor of it is open.
 *
 * The kernel sends a flush for every close(2) of every descriptor (the
 * shell's own after a dup2, a forked child's at exit), and close returns
 * what the flush returns. So each flush tells the truth about the
 * content as it is then: a content not yet on the server is validated
 * and APPENDed (the version appended before, if any, goes once the new
 * one is confirmed); empty or junk content gets EINVAL and stays staged,
 * for a writer may not be done yet. When the last descriptor goes
 * (release), whatever the last flush could not put on the server leaves
 * nothing there: an earlier version is removed. So the server ends with
 * one message, holding the file's final content, or none. */
struct fs_staged {
	char *path;          /* key in ctx->staged until the last release
	                        or an unlink; NULL after an unlink */
	int64_t folder_id;
	char *name;
	int fd;
	char *tmp_path;      /* the staging file; sync_append_keep consumes it */
	int64_t mtime;       /* SYNC_NO_DATE until a utimens sets it */
	GMutex op;           /* one flush or final release at a time */
	gint dirty;          /* written, truncated or re-dated since the last
	                        flush looked at it */
	gint unlinked;       /* removed: nothing more is appended */
	gint renamed;        /* renamed since the last flush looked: the
	                        version on the server follows at the next */
	int error;           /* the last flush's outcome for this content, -errno */
	struct sync_appended on_server;  /* the version on the server (uid 0: none) */
	int handles;         /* open fs_handles (under staged_lock) */
	uint64_t serial;     /* its node id: FS_STAGED_INO */
	uint64_t nlookup;    /* the kernel's lookups of the node (under staged_lock):
	                        in ctx->staged_nodes while not 0 */
	int finished;        /* its last release is done: a stored message now,
	                        or nothing (under staged_lock) */
	int refs;            /* handles, ctx->staged_nodes and calls in flight
	                        (under staged_lock) */
};

static gint fs_staged_serial;

static void fs_staged_unref(struct fs_staged *sf)
{
	if (--sf->refs > 0)
		return;
	g_mutex_clear(&sf->op);
	close(sf->fd);
	g_free(sf->path);
	g_free(sf->name);
	g_free(sf->tmp_path);
	g_free(sf);
}

/* The staged file at path, with a reference, or NULL. */
static struct fs_staged *fs_staged_get(struct fs_ctx *ctx, const char *path)
{
	struct fs_staged *sf;

	g_mutex_lock(&ctx->staged_lock);
	sf = g_hash_table_lookup(ctx->staged, path);
	if (sf)
		sf->refs++;
	g_mutex_unlock(&ctx->staged_lock);
	return sf;
}

static void fs_staged_put(struct fs_ctx *ctx, struct fs_staged *sf)
{
	g_mutex_lock(&ctx->staged_lock);
	fs_staged_unref(sf);
	g_mutex_unlock(&ctx->staged_lock);
}

/* The staged file of a node id, with a reference (and with a handle
 * counted when open is set), or NULL when there is none or its file is
 * finished: a stored message now, or nothing, which the caller answers
 * with ESTALE so that the kernel looks the name up again (stat and open
 * do). */
static struct fs_staged *fs_staged_node(struct fs_ctx *ctx, fuse_ino_t ino, int open)
{
	struct fs_staged *sf;

	g_mutex_lock(&ctx->staged_lock);
	sf = g_hash_table_lookup(ctx->staged_nodes, GSIZE_TO_POINTER(ino & ~FS_STAGED_BIT));
	if (sf && sf->finished)
		sf = NULL;
	if (sf) {
		sf->refs++;
		sf->handles += open != 0;
	}
	g_mutex_unlock(&ctx->staged_lock);
	return sf;
}

/* The kernel learns of the node (staged_lock held). */
static void fs_staged_looked_up(struct fs_ctx *ctx, struct fs_staged *sf)
{
	if (sf->nlookup++ == 0) {
		sf->refs++;
		g_hash_table_insert(ctx->staged_nodes, GSIZE_TO_POINTER(sf->serial), sf);
	}
}

void fs_staged_forget(struct fs_ctx *ctx, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs_staged *sf;

	g_mutex_lock(&ctx->staged_lock);
	sf = g_hash_table_lookup(ctx->staged_nodes, GSIZE_TO_POINTER(ino & ~FS_STAGED_BIT));
	if (sf) {
		sf->nlookup = nlookup < sf->nlookup ? sf->nlookup - nlookup : 0;
		if (sf->nlookup == 0) {
			g_hash_table_remove(ctx->staged_nodes, GSIZE_TO_POINTER(sf->serial));
			fs_staged_unref(sf);
		}
	}
	g_mutex_unlock(&ctx->staged_lock);
}

void fs_staged_init(struct fs_ctx *ctx)
{
	g_mutex_init(&ctx->staged_lock);
	ctx->staged = g_hash_table_new(g_str_hash, g_str_equal);
	ctx->staged_nodes = g_hash_table_new(g_direct_hash, g_direct_equal);
}

void fs_staged_clear(struct fs_ctx *ctx)
{
	GHashTableIter it;
	gpointer sf;

	/* At the end of the mount the kernel forgets nothing: the nodes it
	 * still knew go here. */
	g_hash_table_iter_init(&it, ctx->staged_nodes);
	while (g_hash_table_iter_next(&it, NULL, &sf))
		fs_staged_unref(sf);
	g_hash_table_destroy(ctx->staged);
	g_hash_table_destroy(ctx->staged_nodes);
	ctx->staged = ctx->staged_nodes = NULL;
	g_mutex_clear(&ctx->staged_lock);
}

static int fs_staged_stat(struct fs_ctx *ctx, struct fs_staged *sf, struct stat *st)
{
	struct stat real;

	if (fstat(sf->fd, &real) < 0)
		return -errno;
	memset(st, 0, sizeof *st);
	st->st_ino = FS_STAGED_INO(sf->serial);
	st->st_mode = S_IFREG | 0644;
	st->st_nlink = 1;
	st->st_uid = ctx->uid;
	st->st_gid = ctx->gid;
	st->st_size = real.st_size;
	st->st_blocks = real.st_blocks;
	st->st_blksize = 4096;
	st->st_mtime = st->st_ctime = st->st_atime =
		sf->mtime != SYNC_NO_DATE ? (time_t)sf->mtime : real.st_mtime;
	return 0;
}

/* A staged file's entry: the kernel asks again at each use of the name
 * (no timeout), for the name becomes a stored message's at the last
 * release. */
static void fs_staged_entry(const struct stat *st, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = st->st_ino;
	e->attr = *st;
}

int fs_staged_lookup(struct fs_ctx *ctx, const char *path, struct fuse_entry_param *e)
{
	struct fs_staged *sf = fs_staged_get(ctx, path);
	struct stat st;
	int rc;

	if (!sf)
		return 0;
	rc = fs_staged_stat(ctx, sf, &st);
	if (rc == 0) {
		g_mutex_lock(&ctx->staged_lock);
		fs_staged_looked_up(ctx, sf);
		g_mutex_unlock(&ctx->staged_lock);
		fs_staged_entry(&st, e);
	}
	fs_staged_put(ctx, sf);
	return rc == 0;
}

int fs_staged_getattr(struct fs_ctx *ctx, fuse_ino_t ino, struct stat *st)
{
	struct fs_staged *sf = fs_staged_node(ctx, ino, 0);
	int rc;

	if (!sf)
		return -ESTALE;
	rc = fs_staged_stat(ctx, sf, st);
	fs_staged_put(ctx, sf);
	return rc;
}

/* Another open of a file still being written: it shares the file (the
 * reference fs_staged_node took is the handle's). */
int fs_staged_open(struct fs_ctx *ctx, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_staged *sf = fs_staged_node(ctx, ino, 1);
	struct fs_handle *h;

	if (!sf)
		return -ESTALE;
	if ((fi->flags & O_TRUNC) && ftruncate(sf->fd, 0) == 0)
		g_atomic_int_set(&sf->dirty, 1);  /* : > f while it is being written */
	h = g_new0(struct fs_handle, 1);
	h->fd = sf->fd;
	h->staged = sf;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = 1;
	return 0;
}

/* truncate and times: a staged file's mtime becomes the APPEND's
 * INTERNALDATE (cp -p sets it before close); not a new version by
 * itself: rsync -t sets it after. */
int fs_staged_setattr(struct fs_ctx *ctx, fuse_ino_t ino, struct stat *attr, int to_set,
                      struct fuse_file_info *fi)
{
	struct fs_staged *sf = fi ? fs_handle(fi)->staged : fs_staged_node(ctx, ino, 0);
	int rc = 0;

	if (!sf)
		return -ESTALE;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		rc = ftruncate(sf->fd, attr->st_size) < 0 ? -errno : 0;
		if (rc == 0)
			g_atomic_int_set(&sf->dirty, 1);
	}
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		sf->mtime = g_get_real_time() / G_USEC_PER_SEC;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		sf->mtime = attr->st_mtime;
	if (!fi)
		fs_staged_put(ctx, sf);
	return rc;
}

int fs_staged_unlink(struct fs_ctx *ctx, const char *path)
{
	struct fs_staged *sf;

	g_mutex_lock(&ctx->staged_lock);
	sf = g_hash_table_lookup(ctx->staged, path);
	if (sf) {
		/* Removed before its last close (a temporary file): nothing
		 * more is appended, its close is not an error, and a version
		 * already on the server goes at the last release. */
		g_atomic_int_set(&sf->unlinked, 1);
		g_hash_table_remove(ctx->staged, path);
		g_clear_pointer(&sf->path, g_free);
	}
	g_mutex_unlock(&ctx->staged_lock);
	return sf != NULL;
}

int fs_staged_rename(struct fs_ctx *ctx, const char *from, const char *to, int *rc)
{
	struct store_folder parent = { 0 };
	struct fs_staged *sf = fs_staged_get(ctx, from);
	const char *name;

	if (!sf)
		return 0;
	/* Renamed while still open for writing: it keeps its data. The
	 * target folder is looked up first, without staged_lock: it may wait
	 * for a folder's first listing, and every getattr takes that lock. */
	*rc = fs_parent_folder(ctx, to, &parent, &name);
	g_mutex_lock(&ctx->staged_lock);
	if (g_hash_table_lookup(ctx->staged, from) != sf) {
		/* Its last descriptor went meanwhile: a stored message now (or
		 * gone), which fs_rename renames the ordinary way. */
		fs_staged_unref(sf);
		g_mutex_unlock(&ctx->staged_lock);
		store_folder_clear(&parent);
		return 0;
	}
	if (*rc == 0 && (parent.noselect || g_hash_table_contains(ctx->staged, to)))
		*rc = -EPERM;
	if (*rc == 0) {
		/* A version on the server follows at the next flush or the
		 * last release (fs_staged_sync), not here: a flush may be
		 * talking to the server right now. */
		g_atomic_int_set(&sf->renamed, 1);
		g_hash_table_remove(ctx->staged, from);
		g_free(sf->path);
		g_free(sf->name);
		sf->path = g_strdup(to);
		sf->name = g_strdup(name);
		sf->folder_id = parent.id;
		g_hash_table_insert(ctx->staged, sf->path, sf);
	} else if (*rc > 0) {
		*rc = -EPERM;  /* the root holds folders only */
	}
	fs_staged_unref(sf);
	g_mutex_unlock(&ctx->staged_lock);
	store_folder_clear(&parent);
	return 1;
}

void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
              struct fuse_file_info *fi)
{
	struct fs_handle *h = fs_handle(fi);
	ssize_t n;

	/* Messages are immutable: only a file being written takes data. */
	if (!h || !h->staged) {
		fuse_reply_err(req, h ? EPERM : EROFS);
		return;
	}
	do
		n = pwrite(h->fd, buf, size, off);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	g_atomic_int_set(&h->staged->dirty, 1);
	fuse_reply_write(req, (size_t)n);
}

/* Brings the server up to the file as it is now (sf->op held): new
 * content is validated and APPENDed, replacing the version appended
 * before; a version whose file was renamed takes the new name (in
 * another folder it is appended there anew). Returns -errno: the outcome
 * for the content as it is. */
static int fs_staged_sync(struct fs_ctx *ctx, struct fs_staged *sf)
{
	struct sync_appended v;
	struct stat real;
	enum mf_status st;
	int64_t folder_id;
	char *name, *path;

	/* Where it is now: rename changes these under staged_lock. */
	g_mutex_lock(&ctx->staged_lock);
	folder_id = sf->folder_id;
	name = g_strdup(sf->name);
	path = g_strdup(sf->path);
	g_mutex_unlock(&ctx->staged_lock);
	if (g_atomic_int_compare_and_exchange(&sf->renamed, 1, 0) && sf->on_server.uid) {
		if (folder_id != sf->on_server.folder_id)
			g_atomic_int_set(&sf->dirty, 1);
		else if (!g_atomic_int_get(&sf->dirty))
			sf->error = fs_errno(sync_rename(ctx->sync, folder_id, sf->on_server.uid, name));
	}
	if (!g_atomic_int_get(&sf->dirty))
		goto out;
	/* Cleared first: a write from now on makes it dirty again. */
	g_atomic_int_set(&sf->dirty, 0);
	if (fstat(sf->fd, &real) < 0) {
		sf->error = -errno;
	} else if (real.st_size == 0) {  /* a shell's close after dup2, or : > f */
		sf->error = -EINVAL;
	} else {
		st = sync_append(ctx->sync, folder_id, name, sf->fd, (uint64_t)real.st_size,
		                 sf->mtime, &sf->on_server, &v);
		if (st == MF_OK)
			sf->on_server = v;
		sf->error = fs_errno(st);
		if (path)
			fs_invalidate(ctx, path + 1);
	}
out:
	g_free(name);
	g_free(path);
	return sf->error;
}

/* A close of a descriptor of a staged file: close(2) returns what this
 * returns (release's answer reaches nobody). */
void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fuse_req_userdata(req);
	struct fs_staged *sf;
	int rc = 0;

	if (!fs_handle(fi)) {
		/* Opened without an open (ctx->no_open): nothing to say at a
		 * close, and ENOSYS tells the kernel to send no FLUSH again. */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	sf = fs_handle(fi)->staged;

	if (sf) {
		g_mutex_lock(&sf->op);
		rc = g_atomic_int_get(&sf->unlinked) ? 0 : fs_staged_sync(ctx, sf);
		g_mutex_unlock(&sf->op);
	}
	fuse_reply_err(req, -rc);
}

/* The last descriptor is gone: what the last flush put on the server
 * stays, and becomes the cached body when it holds the server's bytes;
 * anything else leaves nothing there. */
static void fs_staged_finish(struct fs_ctx *ctx, struct fs_staged *sf)
{
	g_mutex_lock(&sf->op);
	if (!g_atomic_int_get(&sf->unlinked))
		fs_staged_sync(ctx, sf);  /* written or renamed after its last flush */
	if (sf->on_server.uid && (sf->error || g_atomic_int_get(&sf->unlinked))) {
		sync_append_drop(ctx->sync, &sf->on_server);
		sf->on_server.uid = 0;
	}
	if (sf->on_server.uid)
		sync_append_keep(ctx->sync, &sf->on_server, sf->tmp_path);
	else
		store_body_abort(ctx->store, sf->tmp_path);
	g_mutex_unlock(&sf->op);
}

void fs_release_handle(struct fs_ctx *ctx, struct fs_handle *h)
{
	struct fs_staged *sf;
	char *gone = NULL;
	int last;

	if (!h)
		return;  /* opened without an open (ctx->no_open) */
	sf = h->staged;

	if (!sf) {
		fs_reading_release(ctx, h);
		return;
	}
	g_mutex_lock(&ctx->staged_lock);
	last = --sf->handles == 0;
	if (last && sf->path && g_hash_table_lookup(ctx->staged, sf->path) == sf) {
		g_hash_table_remove(ctx->staged, sf->path);
		gone = g_strdup(sf->path + 1);
	}
	g_mutex_unlock(&ctx->staged_lock);
	if (last) {
		fs_staged_finish(ctx, sf);
		g_mutex_lock(&ctx->staged_lock);
		sf->finished = 1;
		g_mutex_unlock(&ctx->staged_lock);
	}
	if (gone)
		fs_invalidate(ctx, gone);
	g_free(gone);
	fs_staged_put(ctx, sf);
	g_free(h);
}

void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_release_handle(fuse_req_userdata(req), fs_handle(fi));
	fuse_reply_err(req, 0);
}

static int fs_do_create(struct fs_ctx *ctx, const char *path, struct fuse_file_info *fi,
                        struct fuse_entry_param *e)
{
	struct store_folder f = { 0 };
	struct store_message m = { 0 };
	struct fs_staged *sf;
	struct fs_handle *h;
	struct stat st;
	const char *name;
	int rc, fd;

	if (ctx->cfg->readonly)
		return -EROFS;
	rc = fs_parent_folder(ctx, path, &f, &name);
	if (rc == 1)
		return -EPERM;  /* the root holds folders only */
	if (rc < 0)
		return rc;
	if (f.noselect) {
		store_folder_clear(&f);
		return -EPERM;
	}
	if (store_message_by_name(ctx->store, f.id, name, &m) == MF_OK) {
		store_message_clear(&m);
		store_folder_clear(&f);
		return -EEXIST;
	}
	sf = g_new0(struct fs_staged, 1);
	fd = store_body_begin(ctx->store, &sf->tmp_path);
	if (fd < 0) {
		g_free(sf);
		store_folder_clear(&f);
		return -EIO;
	}
	sf->fd = fd;
	sf->path = g_strdup(path);
	sf->folder_id = f.id;
	sf->name = g_strdup(name);
	sf->mtime = SYNC_NO_DATE;
	g_mutex_init(&sf->op);
	sf->serial = (uint64_t)g_atomic_int_add(&fs_staged_serial, 1) + 1;
	sf->dirty = 1;  /* even empty, the first close must say so */
	sf->handles = 1;
	sf->refs = 1;
	store_folder_clear(&f);
	rc = fs_staged_stat(ctx, sf, &st);
	g_mutex_lock(&ctx->staged_lock);
	if (rc == 0 && g_hash_table_contains(ctx->staged, path))
		rc = -EEXIST;
	if (rc != 0) {
		g_mutex_unlock(&ctx->staged_lock);
		store_body_abort(ctx->store, sf->tmp_path);
		fs_staged_unref(sf);
		return rc;
	}
	g_hash_table_insert(ctx->staged, sf->path, sf);
	fs_staged_looked_up(ctx, sf);
	g_mutex_unlock(&ctx->staged_lock);
	h = g_new0(struct fs_handle, 1);
	h->fd = fd;
	h->staged = sf;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = 1;
	fs_staged_entry(&st, e);
	return 0;
}

void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
               struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fuse_req_userdata(req);
	struct fuse_entry_param e;
	int rc;
	char *path = fs_child_path(ctx, parent, name, &rc);

	if (path)
		rc = fs_do_create(ctx, path, fi, &e);
	g_free(path);
	if (rc != 0)
		fuse_reply_err(req, -rc);
	else if (fuse_reply_create(req, &e, fi) == -ENOENT)
		fs_release_handle(ctx, fs_handle(fi));  /* the create was interrupted */
}

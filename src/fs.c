/* fs.c — the libfuse low-level operations. A node id is the store's
 * inode number (fs_int.h), so each request finds its folder and message
 * from the id alone; requests by name (lookup, unlink, rename, ...)
 * build the path and resolve it through the store. Calls sync when the
 * server must be asked, and maps statuses to errnos (status.c). Files
 * being written are fs_staged.c's, listings fs_dir.c's. Must not:
 * include protocol, driver or SQLite headers (directly or through its
 * own), download a body for stat or readdir. Reading a message is
 * fs_body.c's. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <glib.h>
#include "fs_int.h"
#include "log.h"
#include "mountdev.h"
#include "stats.h"


void fs_node_clear(struct fs_node *n)
{
	store_folder_clear(&n->folder);
	store_message_clear(&n->msg);
}

int fs_errno(enum mf_status st)
{
	return -mf_status_to_errno(st);
}

static struct fs_ctx *fs_req_ctx(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* The store changed a name, a size or an entry's existence. */
static void fs_store_changed(void *data, const char *path)
{
	fs_invalidate(data, path);
}

/* A body longer than the size the kernel was given (the server's
 * RFC822.SIZE), in a mount that sees no opens: the kernel asks its size
 * again at the next read past what it knows, so a reader that reads to
 * the end gets all of it. Attributes only: no page is waited for (the
 * commit may be a READ's own, holding that node's pages locked). It runs
 * as the body is committed, before anyone can read it; a shorter body
 * needs nothing: the kernel cuts its size at the short READ itself, and
 * would not if its attributes were invalidated meanwhile. */
static void fs_body_grew(void *data, uint64_t ino_base, uint32_t uid)
{
	struct fs_ctx *ctx = data;

	fuse_lowlevel_notify_inval_inode(ctx->se, FS_INO(ino_base, uid), -1, 0);
}

/* Push (sync_watch_start): a folder was brought in step with what
 * another client did; its directory's attributes go from the kernel's
 * cache (names gone or moved went through fs_store_changed, and new ones
 * are looked up: no negative entries are cached). */
static void fs_folder_changed(void *data, const char *folder_path)
{
	fs_invalidate(data, folder_path);
}

/* ---- paths and node ids */

static void fs_path_split(const char *path, char **parent, const char **name)
{
	const char *slash = strrchr(path, '/');

	*parent = g_strndup(path, slash - path);
	*name = slash + 1;
}

char *fs_child_path(struct fs_ctx *ctx, fuse_ino_t parent, const char *name, int *rc)
{
	struct store_folder f;
	enum mf_status st;
	char *path;

	*rc = 0;
	if (parent == FS_ROOT_INO)
		return g_strconcat("/", name, NULL);
	if ((parent & FS_STAGED_BIT) || FS_INO_UID(parent) != 0) {
		*rc = -ENOTDIR;
		return NULL;
	}
	st = store_folder_by_base(ctx->store, FS_INO_BASE(parent), &f);
	if (st != MF_OK) {
		*rc = st == MF_ERR_NOTFOUND ? -ESTALE : fs_errno(st);
		return NULL;
	}
	path = g_strconcat("/", f.path, "/", name, NULL);
	store_folder_clear(&f);
	return path;
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
 * is looked for on the server when the cached view is stale. A message
 * waits while its folder's first listing is not stored yet, so that
 * every use sees it whole (for a folder, what changes it waits:
 * sync_folder_settle). */
int fs_resolve(struct fs_ctx *ctx, const char *path, struct fs_node *n, int flags)
{
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
	st = store_message_by_name(ctx->store, n->folder.id, slash + 1, &n->msg);
	if (st == MF_ERR_NOTFOUND && may_sync) {
		int changed = 0;
		if (sync_folder_if_stale(ctx->sync, n->folder.id, 0, &changed) == MF_OK && changed)
			st = store_message_by_name(ctx->store, n->folder.id, slash + 1, &n->msg);
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

/* A message moved to another folder keeps its old node id in the kernel
 * under its new name until the invalidator drops that name, and a
 * request may already be on its way with it: until the kernel forgets
 * the old id, it finds the message at its new path. */
int fs_moved_node(struct fs_ctx *ctx, fuse_ino_t ino, struct fs_node *n)
{
	char *path = NULL;
	int rc;

	g_mutex_lock(&ctx->moved_lock);
	if (g_hash_table_size(ctx->moved))
		path = g_strdup(g_hash_table_lookup(ctx->moved, GSIZE_TO_POINTER(ino)));
	g_mutex_unlock(&ctx->moved_lock);
	if (!path)
		return -ENOENT;
	rc = fs_resolve(ctx, path, n, FS_RESOLVE_SYNC);
	g_free(path);
	if (rc == 0 && n->kind != FS_MESSAGE) {
		fs_node_clear(n);
		rc = -ENOENT;
	}
	return rc;
}

int fs_node_of(struct fs_ctx *ctx, fuse_ino_t ino, struct fs_node *n)
{
	enum mf_status st;

	memset(n, 0, sizeof *n);
	if (ino == FS_ROOT_INO) {
		n->kind = FS_ROOT;
		return 0;
	}
	if (ino & FS_STAGED_BIT)
		return -ENOENT;
	/* A folder the store no longer knows by this number (gone, or its
	 * UIDs started again: renumbered) answers ESTALE, not ENOENT: the
	 * kernel then looks the path up again, which finds the folder's new
	 * number, or that its name is gone. */
	st = store_folder_by_base(ctx->store, FS_INO_BASE(ino), &n->folder);
	if (st == MF_ERR_NOTFOUND && FS_INO_UID(ino)) {
		int rc = fs_moved_node(ctx, ino, n);
		return rc == -ENOENT ? -ESTALE : rc;
	}
	if (st != MF_OK)
		return st == MF_ERR_NOTFOUND ? -ESTALE : fs_errno(st);
	if (FS_INO_UID(ino) == 0) {
		n->kind = FS_FOLDER;
		return 0;
	}
	if (n->folder.noselect) {
		fs_node_clear(n);
		return -ENOENT;
	}
	sync_folder_settle(ctx->sync, n->folder.id);
	st = store_message_by_uid(ctx->store, n->folder.id, FS_INO_UID(ino), &n->msg);
	if (st == MF_ERR_NOTFOUND) {
		fs_node_clear(n);
		return fs_moved_node(ctx, ino, n);
	}
	if (st != MF_OK || sync_hidden(ctx->sync, n->msg.flags)) {
		fs_node_clear(n);
		return st != MF_OK ? fs_errno(st) : -ENOENT;
	}
	n->kind = FS_MESSAGE;
	return 0;
}

/* ---- attributes */

/* changed_us: when the folder's contents last changed (store_folder's
 * changed_at, Unix µs); 0: the mount's time (the root; a folder of a
 * cache from before schema 4, until its next sync). */
void fs_dir_stat(struct fs_ctx *ctx, uint64_t ino, int64_t changed_us, struct stat *st)
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

void fs_file_stat(struct fs_ctx *ctx, uint64_t ino, uint64_t size, int64_t mtime,
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

void fs_message_stat(struct fs_ctx *ctx, uint64_t ino_base, const struct store_message *m,
                     struct stat *st)
{
	fs_file_stat(ctx, FS_INO(ino_base, m->uid), m->size, m->internaldate, st);
}

void fs_entry(struct fs_ctx *ctx, const struct stat *st, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = st->st_ino;
	e->attr = *st;
	e->attr_timeout = ctx->timeout;
	e->entry_timeout = ctx->timeout;
}

/* n's attributes. A folder's time says whether it changed (notmuch,
 * find -newer, make look no further): a listed one is re-checked when
 * stale, as a listing would be; one never listed is not listed for it. */
static void fs_node_stat(struct fs_ctx *ctx, struct fs_node *n, struct stat *st)
{
	if (n->kind == FS_FOLDER && n->folder.synced_at && !n->folder.noselect) {
		int changed = 0;
		struct store_folder f;
		if (sync_folder_if_stale(ctx->sync, n->folder.id, 0, &changed) == MF_OK && changed &&
		    store_folder_by_id(ctx->store, n->folder.id, &f) == MF_OK) {
			store_folder_clear(&n->folder);
			n->folder = f;
		}
	}
	if (n->kind == FS_MESSAGE)
		fs_message_stat(ctx, n->folder.ino_base, &n->msg, st);
	else
		fs_dir_stat(ctx, n->kind == FS_ROOT ? FS_ROOT_INO : FS_INO(n->folder.ino_base, 0),
		            n->kind == FS_ROOT ? 0 : n->folder.changed_at, st);
}

/* ---- the operations */

static void fs_init(void *data, struct fuse_conn_info *conn)
{
	struct fs_ctx *ctx = data;

	/* Attributes with every listing, not only with its first chunk: tar,
	 * rsync and restic stat each name they list, and the kernel's
	 * "auto" mode switched to plain listings after the first chunk, so
	 * a listing after a mount cost a LOOKUP per message. */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* Read-only: nothing happens at an open or a close that the kernel
	 * cannot do alone, and each was a round trip a file (a warm tar of
	 * 50,000 small messages: 3.3 s against 0.4 s through no open). */
	ctx->no_open = ctx->cfg->readonly && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
	/* A stream's small bodies go into the kernel's page cache as they
	 * come: no READ follows, and an open finds them there (fs_open). */
	sync_set_arrival(ctx->sync, FS_DROP_MIN - 1, fs_body_arrived, fs_body_held, ctx);
	if (ctx->no_open)
		store_set_growth_observer(ctx->store, fs_body_grew, ctx);
	fs_staged_init(ctx);
	fs_inval_start(ctx);
	store_set_observer(ctx->store, fs_store_changed, ctx);
	sync_watch_start(ctx->sync, fs_folder_changed, ctx);
}

/* Push ends, then the invalidator (nothing reports to it any more):
 * while the session still exists. */
void fs_stop(struct fs_ctx *ctx)
{
	if (!ctx->invalidator)
		return;
	sync_watch_stop(ctx->sync);
	sync_set_arrival(ctx->sync, 0, NULL, NULL, NULL);
	store_set_growth_observer(ctx->store, NULL, NULL);
	store_set_observer(ctx->store, NULL, NULL);
	fs_inval_stop(ctx);
}

static void fs_destroy(void *data)
{
	struct fs_ctx *ctx = data;

	fs_stop(ctx);
	if (ctx->staged)
		fs_staged_clear(ctx);
	fs_dirs_clear(ctx);  /* while sync, which a first listing holds, lives */
	fs_xattr_forget();
}

/* Answers a lookup (or a mkdir) with what path names. */
static void fs_reply_entry(fuse_req_t req, struct fs_ctx *ctx, const char *path)
{
	struct fuse_entry_param e;
	struct fs_node n;
	struct stat st;
	int rc = fs_resolve(ctx, path, &n, FS_RESOLVE_SYNC);

	if (rc != 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fs_node_stat(ctx, &n, &st);
	fs_node_clear(&n);
	fs_entry(ctx, &st, &e);
	fuse_reply_entry(req, &e);
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_ctx *ctx = fs_req_ctx(req);
	struct fuse_entry_param e;
	char *path;
	int rc;

	fs_tune(ctx);
	stats_add(getattrs, 1);
	path = fs_child_path(ctx, parent, name, &rc);
	if (!path) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (fs_staged_lookup(ctx, path, &e)) {
		g_free(path);
		fuse_reply_entry(req, &e);
		return;
	}
	fs_reply_entry(req, ctx, path);
	g_free(path);
}

/* The kernel forgets a node: a staged file's goes when nothing else
 * holds it, and a message moved away is no longer found by its old id
 * (no request can name it any more). Other nodes are numbers: nothing
 * to free. */
static void fs_forget_one(struct fs_ctx *ctx, fuse_ino_t ino, uint64_t nlookup)
{
	if (ino & FS_STAGED_BIT) {
		fs_staged_forget(ctx, ino, nlookup);
		return;
	}
	g_mutex_lock(&ctx->moved_lock);
	if (g_hash_table_size(ctx->moved))
		g_hash_table_remove(ctx->moved, GSIZE_TO_POINTER(ino));
	g_mutex_unlock(&ctx->moved_lock);
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_forget_one(fs_req_ctx(req), ino, nlookup);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		fs_forget_one(fs_req_ctx(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static int fs_stat_ino(struct fs_ctx *ctx, fuse_ino_t ino, struct stat *st)
{
	struct fs_node n;
	int rc;

	if (ino & FS_STAGED_BIT)
		return fs_staged_getattr(ctx, ino, st);
	rc = fs_node_of(ctx, ino, &n);
	if (rc != 0)
		return rc;
	fs_node_stat(ctx, &n, st);
	fs_node_clear(&n);
	return 0;
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fs_req_ctx(req);
	struct stat st;
	int rc;

	fs_tune(ctx);
	stats_add(getattrs, 1);
	rc = fs_stat_ino(ctx, ino, &st);
	if (rc != 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, ino & FS_STAGED_BIT ? 0 : ctx->timeout);
}

/* Modes and owners are fixed, and a stored message's date cannot
 * change: cp -p and rsync -a set them anyway, and saying no would fail
 * them, so they are accepted as no-ops. A size is a staged file's only. */
static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fs_req_ctx(req);
	struct stat st;
	int rc = 0;

	if (ctx->cfg->readonly)
		rc = -EROFS;
	else if (ino & FS_STAGED_BIT)
		rc = fs_staged_setattr(ctx, ino, attr, to_set, fi);
	else if (to_set & FUSE_SET_ATTR_SIZE)
		rc = -EPERM;  /* messages are immutable */
	if (rc == 0)
		rc = fs_stat_ino(ctx, ino, &st);
	if (rc != 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, ino & FS_STAGED_BIT ? 0 : ctx->timeout);
}


static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs_ctx *ctx = fs_req_ctx(req);
	uint64_t used = 0, limit = 0;
	struct statvfs sv;

	memset(&sv, 0, sizeof sv);
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = 255;
	/* The server's QUOTA STORAGE, when it has one: what df should say. */
	if (sync_quota(ctx->sync, &used, &limit) == MF_OK && limit > 0) {
		sv.f_blocks = limit / 4096;
		sv.f_bfree = sv.f_bavail = used < limit ? (limit - used) / 4096 : 0;
	}
	if (ctx->cfg->readonly)
		sv.f_flag |= ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

static int fs_do_unlink(struct fs_ctx *ctx, const char *path)
{
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

/* An operation on name in parent that answers an errno only. */
static void fs_by_name(fuse_req_t req, fuse_ino_t parent, const char *name,
                       int (*op)(struct fs_ctx *, const char *))
{
	struct fs_ctx *ctx = fs_req_ctx(req);
	int rc;
	char *path = fs_child_path(ctx, parent, name, &rc);

	if (path)
		rc = op(ctx, path);
	g_free(path);
	fuse_reply_err(req, -rc);
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fs_by_name(req, parent, name, fs_do_unlink);
}

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs_ctx *ctx = fs_req_ctx(req);
	int rc;
	char *path = fs_child_path(ctx, parent, name, &rc);

	if (path && ctx->cfg->readonly)
		rc = -EROFS;
	else if (path)
		rc = fs_errno(sync_create_folder(ctx->sync, path + 1));
	if (rc == 0)
		fs_reply_entry(req, ctx, path);
	else
		fuse_reply_err(req, -rc);
	g_free(path);
}

static int fs_has_child(void *data, const struct store_folder *f)
{
	*(int *)data = 1;
	return 1;
}

static int fs_do_rmdir(struct fs_ctx *ctx, const char *path)
{
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

static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fs_by_name(req, parent, name, fs_do_rmdir);
}

/* moved: set when the message now lives in another folder (its node id
 * changed). */
static int fs_rename_message(struct fs_ctx *ctx, struct fs_node *src, const char *to,
                             unsigned int flags, int *moved)
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
		*moved = st == MF_OK;
	}
	store_message_clear(&target);
	store_folder_clear(&dst);
	return fs_errno(st);
}

static int fs_do_rename(struct fs_ctx *ctx, const char *from, const char *to,
                        unsigned int flags, fuse_ino_t *moved)
{
	struct store_folder parent = { 0 };
	struct fs_node n;
	const char *name;
	int rc, was_moved = 0;

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
		rc = fs_rename_message(ctx, &n, to, flags, &was_moved);
		if (was_moved)
			*moved = FS_INO(n.folder.ino_base, n.msg.uid);
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

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct fs_ctx *ctx = fs_req_ctx(req);
	char *from, *to = NULL;
	fuse_ino_t moved = 0;
	int rc;

	from = fs_child_path(ctx, parent, name, &rc);
	if (from)
		to = fs_child_path(ctx, newparent, newname, &rc);
	if (to)
		rc = fs_do_rename(ctx, from, to, flags, &moved);
	if (rc == 0 && moved) {
		/* The kernel moves its name for the old node id: that name is
		 * dropped once the rename is done, and until then the old id
		 * finds the message at its new path. */
		g_mutex_lock(&ctx->moved_lock);
		g_hash_table_replace(ctx->moved, GSIZE_TO_POINTER(moved), g_strdup(to));
		g_mutex_unlock(&ctx->moved_lock);
		fs_invalidate_entry(ctx, newparent, newname);
	}
	g_free(from);
	g_free(to);
	fuse_reply_err(req, -rc);
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_init,
	.destroy = fs_destroy,
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
	.getattr = fs_getattr,
	.setattr = fs_setattr,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.readdirplus = fs_readdirplus,
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
};

const struct fuse_lowlevel_ops *fs_operations(void)
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
	/* How long the kernel may trust a name or attributes without asking:
	 * as long as the cache itself trusts the folder (refresh). */
	ctx->timeout = cfg->refresh;
	g_mutex_init(&ctx->reading_lock);
	g_mutex_init(&ctx->failed_lock);
	ctx->reading = g_hash_table_new_full(g_direct_hash, g_direct_equal, fs_reading_free, NULL);
	ctx->dirs = g_hash_table_new(g_direct_hash, g_direct_equal);
	g_mutex_init(&ctx->moved_lock);
	ctx->moved = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
	ctx->pushed.bits = g_new0(gint, FS_PUSHED_BITS / 32);
	ctx->dropped.bits = g_new0(gint, FS_PUSHED_BITS / 32);
	fs_follow_init(ctx);
	return ctx;
}

void fs_attach(struct fs_ctx *ctx, struct store *store, struct sync_ctx *sync,
               struct fuse_session *se)
{
	ctx->store = store;
	ctx->sync = sync;
	ctx->se = se;
}

void fs_set_mountpoint(struct fs_ctx *ctx, const char *mountpoint)
{
	g_free(ctx->mountpoint);
	ctx->mountpoint = g_strdup(mountpoint);
}

/* At the first request of a name, attributes or a listing, once INIT's
 * reply (which may only lower it) is in: the mount's read-ahead. Only
 * root may set it; anyone else's mount keeps the kernel's 128 KiB. */
void fs_tune(struct fs_ctx *ctx)
{
	int rc;

	if (!ctx->mountpoint || g_atomic_int_get(&ctx->tuned) ||
	    !g_atomic_int_compare_and_exchange(&ctx->tuned, 0, 1))
		return;
	rc = mountdev_set_readahead(ctx->mountpoint, FS_READAHEAD_KIB);
	if (rc != 0)
		log_debug("read-ahead of %s left as it is: %s", ctx->mountpoint, g_strerror(rc));
}

void fs_free(struct fs_ctx *ctx)
{
	if (!ctx)
		return;
	/* After fuse_session_destroy: no request comes any more. */
	g_hash_table_destroy(ctx->reading);
	g_hash_table_destroy(ctx->dirs);
	g_mutex_clear(&ctx->reading_lock);
	g_mutex_clear(&ctx->failed_lock);
	g_hash_table_destroy(ctx->moved);
	g_mutex_clear(&ctx->moved_lock);
	g_free(ctx->pushed.bits);
	g_free(ctx->dropped.bits);
	fs_follow_end(ctx);
	g_free(ctx->mountpoint);
	g_free(ctx);
}

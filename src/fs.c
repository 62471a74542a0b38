/* fs.c — the libfuse operations. Each one resolves a path to a folder or
 * a message through the store, calls sync when the server must be asked,
 * and maps statuses to -errno (status.c). Must not: include protocol or
 * SQLite headers, download a body for stat or readdir. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <glib.h>
#include "fs.h"
#include "log.h"
#include "stats.h"

#define FS_ATTR_TIMEOUT_MAX 60.0

enum fs_kind { FS_ROOT, FS_FOLDER, FS_MESSAGE };

struct fs_node {
	enum fs_kind kind;
	struct store_folder folder;   /* FS_FOLDER, and the parent of FS_MESSAGE */
	struct store_message msg;     /* FS_MESSAGE */
};

static struct fs_ctx *fs_ctx(void)
{
	return fuse_get_context()->private_data;
}

static void fs_node_clear(struct fs_node *n)
{
	store_folder_clear(&n->folder);
	store_message_clear(&n->msg);
}

static int fs_errno(enum mf_status st)
{
	return -mf_status_to_errno(st);
}

/* Finds what path names. may_sync: a name the cache does not know is
 * looked for on the server when the cached view is stale. */
static int fs_resolve(struct fs_ctx *ctx, const char *path, struct fs_node *n, int may_sync)
{
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
	if (!ctx->cfg->show_deleted && n->msg.flags && strstr(n->msg.flags, "\\Deleted")) {
		fs_node_clear(n);
		return -ENOENT;
	}
	n->kind = FS_MESSAGE;
	return 0;
}

static void fs_dir_stat(struct fs_ctx *ctx, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_mode = S_IFDIR | (ctx->cfg->readonly ? 0555 : 0755);
	st->st_nlink = 2;
	st->st_uid = ctx->uid;
	st->st_gid = ctx->gid;
	st->st_mtime = st->st_ctime = st->st_atime = ctx->mounted_at;
}

static void fs_message_stat(struct fs_ctx *ctx, const struct store_message *m, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_mode = S_IFREG | (ctx->cfg->readonly ? 0444 : 0644);
	st->st_nlink = 1;
	st->st_uid = ctx->uid;
	st->st_gid = ctx->gid;
	st->st_size = (off_t)m->size;
	st->st_blocks = (blkcnt_t)((m->size + 511) / 512);
	st->st_blksize = 4096;
	st->st_mtime = st->st_ctime = st->st_atime = (time_t)m->internaldate;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs_ctx *ctx = fs_ctx();
	double t = ctx->cfg->refresh < FS_ATTR_TIMEOUT_MAX ? ctx->cfg->refresh : FS_ATTR_TIMEOUT_MAX;

	cfg->use_ino = 0;
	cfg->entry_timeout = t;
	cfg->attr_timeout = t;
	cfg->negative_timeout = 0;
	cfg->nullpath_ok = 0;
	return ctx;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	int rc = fs_resolve(ctx, path, &n, 1);

	if (rc != 0)
		return rc;
	if (n.kind == FS_MESSAGE)
		fs_message_stat(ctx, &n.msg, st);
	else
		fs_dir_stat(ctx, st);
	fs_node_clear(&n);
	return 0;
}

struct fs_fill {
	struct fs_ctx *ctx;
	void *buf;
	fuse_fill_dir_t filler;
	int full;
};

static int fs_fill_folder(void *data, const struct store_folder *f)
{
	struct fs_fill *fill = data;
	struct stat st;
	const char *base = strrchr(f->path, '/');

	fs_dir_stat(fill->ctx, &st);
	if (fill->filler(fill->buf, base ? base + 1 : f->path, &st, 0, FUSE_FILL_DIR_PLUS)) {
		fill->full = 1;
		return 1;
	}
	return 0;
}

static int fs_fill_message(void *data, const struct store_message *m)
{
	struct fs_fill *fill = data;
	struct stat st;

	fs_message_stat(fill->ctx, m, &st);
	if (fill->filler(fill->buf, m->name, &st, 0, FUSE_FILL_DIR_PLUS)) {
		fill->full = 1;
		return 1;
	}
	return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_fill fill = { ctx, buf, filler, 0 };
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
	if (n.kind == FS_FOLDER && !n.folder.noselect) {
		/* A failure leaves the cache as it was: list what it holds. */
		sync_folder_if_stale(ctx->sync, n.folder.id, 0, NULL);
	}
	fs_dir_stat(ctx, &st);
	filler(buf, ".", &st, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	s = store_folder_children(ctx->store, n.kind == FS_ROOT ? "" : n.folder.path,
	                          fs_fill_folder, &fill);
	if (s == MF_OK && n.kind == FS_FOLDER && !n.folder.noselect)
		s = store_messages_list(ctx->store, n.folder.id, ctx->cfg->show_deleted,
		                        fs_fill_message, &fill);
	fs_node_clear(&n);
	return s == MF_OK ? 0 : fs_errno(s);
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	int rc, fd = -1, size_changed = 0;
	enum mf_status st;

	rc = fs_resolve(ctx, path, &n, 1);
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
	fi->fh = (uint64_t)fd;
	/* A body never changes, so the page cache may keep it; when the real
	 * size differs from the server's RFC822.SIZE, read around the kernel's
	 * idea of the size instead. */
	if (size_changed)
		fi->direct_io = 1;
	else
		fi->keep_cache = 1;
	return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n;

	do
		n = pread((int)fi->fh, buf, size, off);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : (int)n;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	close((int)fi->fh);
	return 0;
}

/* ---------------------------------------------------------------- xattrs */

static const char *const fs_message_xattrs[] = {
	"user.mail.flags", "user.mail.uid", "user.mail.message_id",
	"user.mail.subject", "user.mail.from", "user.mail.date",
};

static int fs_xattr_reply(const char *value, size_t len, char *buf, size_t size)
{
	if (size == 0)
		return (int)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, value, len);
	return (int)len;
}

static int fs_getxattr(const char *path, const char *name, char *buf, size_t size)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	char *value = NULL;
	int rc = fs_resolve(ctx, path, &n, 0);

	if (rc != 0)
		return rc;
	if (n.kind == FS_ROOT && strcmp(name, "user.mailfs.stats") == 0) {
		GString *s = g_string_new(NULL);
		stats_format_json(s);
		value = g_string_free(s, FALSE);
	} else if (n.kind == FS_MESSAGE) {
		const struct store_message *m = &n.msg;
		if (strcmp(name, "user.mail.flags") == 0)
			value = g_strdup(m->flags ? m->flags : "");
		else if (strcmp(name, "user.mail.uid") == 0)
			value = m->remote_id ? g_strdup(m->remote_id) : g_strdup_printf("%u", m->uid);
		else if (strcmp(name, "user.mail.message_id") == 0 && m->message_id)
			value = g_strdup(m->message_id);
		else if (strcmp(name, "user.mail.subject") == 0 && m->subject)
			value = g_strdup(m->subject);
		else if (strcmp(name, "user.mail.from") == 0 && m->from)
			value = g_strdup(m->from);
		else if (strcmp(name, "user.mail.date") == 0 && m->date_header)
			value = g_strdup(m->date_header);
	}
	fs_node_clear(&n);
	if (!value)
		return -ENODATA;
	rc = fs_xattr_reply(value, strlen(value), buf, size);
	g_free(value);
	return rc;
}

static int fs_listxattr(const char *path, char *buf, size_t size)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	GString *names = g_string_new(NULL);
	int rc = fs_resolve(ctx, path, &n, 0);

	if (rc != 0) {
		g_string_free(names, TRUE);
		return rc;
	}
	if (n.kind == FS_ROOT) {
		g_string_append_len(names, "user.mailfs.stats", sizeof "user.mailfs.stats");
	} else if (n.kind == FS_MESSAGE) {
		const char *present[G_N_ELEMENTS(fs_message_xattrs)] = {
			"", "", n.msg.message_id, n.msg.subject, n.msg.from, n.msg.date_header,
		};
		for (size_t i = 0; i < G_N_ELEMENTS(fs_message_xattrs); i++)
			if (present[i])
				g_string_append_len(names, fs_message_xattrs[i],
				                    strlen(fs_message_xattrs[i]) + 1);
	}
	fs_node_clear(&n);
	rc = fs_xattr_reply(names->str, names->len, buf, size);
	g_string_free(names, TRUE);
	return rc;
}

static int fs_setxattr(const char *path, const char *name, const char *value, size_t size,
                       int flags)
{
	return fs_ctx()->cfg->readonly ? -EROFS : -ENOTSUP;
}

static int fs_statfs(const char *path, struct statvfs *sv)
{
	struct fs_ctx *ctx = fs_ctx();
	uint64_t bytes = 0, count = 0;

	memset(sv, 0, sizeof *sv);
	store_body_usage(ctx->store, &bytes, &count);
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_blocks = (bytes + 4095) / 4096;
	sv->f_files = count;
	sv->f_namemax = 255;
	if (ctx->cfg->readonly)
		sv->f_flag |= ST_RDONLY;
	return 0;
}

/* The write path belongs to a later stage: until then, say so plainly. */
static int fs_refuse_write(struct fs_ctx *ctx)
{
	return ctx->cfg->readonly ? -EROFS : -ENOTSUP;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return fs_refuse_write(fs_ctx());
}

static int fs_mkdir(const char *path, mode_t mode)
{
	return fs_refuse_write(fs_ctx());
}

static int fs_unlink(const char *path)
{
	return fs_refuse_write(fs_ctx());
}

static int fs_rmdir(const char *path)
{
	return fs_refuse_write(fs_ctx());
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	return fs_refuse_write(fs_ctx());
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fs_ctx();
	return ctx->cfg->readonly ? -EROFS : -EPERM;
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	return fs_refuse_write(fs_ctx());
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return fs_refuse_write(fs_ctx());
}

static const struct fuse_operations fs_ops = {
	.init = fs_init,
	.getattr = fs_getattr,
	.readdir = fs_readdir,
	.open = fs_open,
	.read = fs_read,
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
};

const struct fuse_operations *fs_operations(void)
{
	return &fs_ops;
}

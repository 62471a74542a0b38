/* fs_body.c — reading a message: an open finds its body in the cache
 * (fetched first when it is not there) and pushes a small one into the
 * kernel's page cache, so that no READ follows; a read serves the body's
 * range of its file (its own, or a pack's); the small bodies a stream
 * brings, or that go ahead of a reader from the cache, are pushed by the
 * invalidator (fs_push_arrived), once each in a mount (fs_body_held). Must
 * not: include protocol, driver or SQLite headers, or block the
 * invalidator's thread on anything a request holds. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "fs_int.h"
#include "stats.h"

/* A body up to this size is pushed into the kernel's page cache at its
 * open: no READ follows, and no attribute request for the atime a READ
 * makes stale. Larger ones are read as asked. */
#define FS_PUSH_MAX (1024 * 1024)

/* A node's bit in a map: Fibonacci hashing, which spreads the uids of
 * every folder over the whole map (the folder's base in the high half
 * would otherwise give two folders the same bits). */
static guint fs_nodemap_bit(fuse_ino_t ino)
{
	return (guint)(((uint64_t)ino * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - FS_PUSHED_ORDER));
}

static int fs_nodemap_has(struct fs_nodemap *map, fuse_ino_t ino)
{
	guint bit = fs_nodemap_bit(ino);

	return ((guint)g_atomic_int_get(&map->bits[bit / 32]) >> (bit % 32)) & 1;
}

/* Adds ino to the map; 1 when it was in it already. */
static int fs_nodemap_add(struct fs_nodemap *map, fuse_ino_t ino)
{
	guint bit = fs_nodemap_bit(ino);
	guint mask = 1u << (bit % 32);

	if (g_atomic_int_add(&map->count, 1) >= (gint)(FS_PUSHED_BITS / 16)) {
		g_atomic_int_set(&map->count, 0);
		for (guint i = 0; i < FS_PUSHED_BITS / 32; i++)
			g_atomic_int_set(&map->bits[i], 0);
	}
	return (g_atomic_int_or((guint *)&map->bits[bit / 32], mask) & mask) != 0;
}

static void fs_nodemap_remove(struct fs_nodemap *map, fuse_ino_t ino)
{
	guint bit = fs_nodemap_bit(ino);

	g_atomic_int_and((guint *)&map->bits[bit / 32], ~(1u << (bit % 32)));
}

/* Pushes a body of at most FS_PUSH_MAX bytes into the kernel's page
 * cache (the caller asks ctx->pushed first: once a mount for each node;
 * a node wrongly taken for pushed is read with READs). */
static void fs_push(struct fs_ctx *ctx, fuse_ino_t ino, const struct fs_handle *h)
{
	struct fuse_bufvec bufv = FUSE_BUFVEC_INIT(0);

	if (h->len == 0 || h->len > FS_PUSH_MAX)
		return;
	bufv.buf[0].size = (size_t)h->len;
	bufv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bufv.buf[0].fd = h->fd;
	bufv.buf[0].pos = (off_t)h->off;
	if (fuse_lowlevel_notify_store(ctx->se, ino, 0, &bufv, 0) != 0)
		return;
	stats_add(bodies_pushed, 1);
	fs_nodemap_add(&ctx->pushed, ino);
}

/* The body of the message node ino, fetched first when not cached: *h
 * gets its descriptor and range. 0 or -errno. */
static int fs_body_of(struct fs_ctx *ctx, fuse_ino_t ino, struct fs_handle *h,
                      int *size_changed, int listed)
{
	struct store_folder f = { 0 };
	struct store_message m = { 0 };
	struct fs_node n;
	int64_t folder_id;
	uint32_t uid;
	enum mf_status st;

	if (fs_moved_node(ctx, ino, &n) == 0) {
		/* Moved to another folder: the kernel's name for it is not
		 * dropped yet. */
		folder_id = n.folder.id;
		uid = n.msg.uid;
		fs_node_clear(&n);
		st = MF_OK;
	} else {
		/* The folder and the message's flags from indexes: no row is
		 * read for a message flagged nothing that hides it. */
		st = store_folder_by_base(ctx->store, FS_INO_BASE(ino), &f);
		if (st == MF_ERR_NOTFOUND)
			return -ESTALE;  /* as fs_node_of says */
		if (st == MF_OK && FS_INO_UID(ino) == 0) {
			store_folder_clear(&f);
			return -EISDIR;
		}
		if (st == MF_OK && f.noselect)
			st = MF_ERR_NOTFOUND;
		folder_id = f.id;
		uid = FS_INO_UID(ino);
		store_folder_clear(&f);
		if (st == MF_OK) {
			sync_message_settle(ctx->sync, folder_id, uid);
			if (store_message_deleted(ctx->store, folder_id, uid, &m) == MF_OK &&
			    sync_hidden(ctx->sync, m.flags))
				st = MF_ERR_NOTFOUND;
			store_message_clear(&m);
		}
	}
	if (st == MF_OK && listed)
		sync_reader_listed(ctx->sync, folder_id, uid, listed == 2);
	if (st == MF_OK)
		st = sync_body_open(ctx->sync, folder_id, uid, &h->fd, &h->off, &h->len,
		                    size_changed);
	return st == MF_OK ? 0 : fs_errno(st);
}

void fs_push_arrived(struct fs_ctx *ctx, fuse_ino_t ino, const void *body, size_t len)
{
	struct fuse_bufvec bufv = FUSE_BUFVEC_INIT(len);

	/* An open may have pushed it meanwhile (a cached body sent ahead of
	 * its reader and opened before it got here). */
	if (fs_nodemap_has(&ctx->pushed, ino))
		return;
	bufv.buf[0].mem = (void *)body;
	if (len == 0 || fuse_lowlevel_notify_store(ctx->se, ino, 0, &bufv, 0) != 0)
		return;
	stats_add(bodies_pushed, 1);
	fs_nodemap_add(&ctx->pushed, ino);
}

int fs_body_held(void *data, uint64_t ino_base, uint32_t uid)
{
	struct fs_ctx *ctx = data;

	return fs_nodemap_has(&ctx->pushed, FS_INO(ino_base, uid));
}

void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fuse_req_userdata(req);
	struct fs_handle body = { .fd = -1 };
	struct fs_handle *h;
	int rc, size_changed = 0;

	fs_follow_open(ctx, req);
	if (ino & FS_STAGED_BIT) {
		rc = fs_staged_open(ctx, ino, fi);
		if (rc != 0)
			fuse_reply_err(req, -rc);
		else if (fuse_reply_open(req, fi) == -ENOENT)
			fs_release_handle(ctx, fs_handle(fi));  /* the open was interrupted */
		return;
	}
	if (ctx->no_open) {
		/* A read-only mount: the kernel opens and closes files alone
		 * from now on (FUSE_CAP_NO_OPEN_SUPPORT), and a READ without a
		 * handle finds its body (fs_read). */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	stats_add(opens, 1);
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		/* Messages are immutable: write a new file and rename it. */
		fuse_reply_err(req, ctx->cfg->readonly ? EROFS : EPERM);
		return;
	}
	if (fs_nodemap_has(&ctx->pushed, ino)) {
		/* The kernel holds the body already (pushed as a stream brought
		 * it, or at an earlier open): nothing to look up now. Should the
		 * kernel let a page go, its READ finds the body then (fs_read). */
		sync_body_seen(ctx->sync, FS_INO_BASE(ino), FS_INO_UID(ino));
		body.fd = -1;
	} else {
		rc = fs_body_of(ctx, ino, &body, &size_changed, fs_follow_first(ctx, req, ino));
		if (rc != 0) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	h = g_new(struct fs_handle, 1);
	*h = body;
	g_mutex_lock(&ctx->reading_lock);
	g_hash_table_add(ctx->reading, h);
	g_mutex_unlock(&ctx->reading_lock);
	fi->fh = (uint64_t)(uintptr_t)h;
	/* A body never changes, so the page cache may keep it; when the real
	 * size differs from the server's RFC822.SIZE, read around the kernel's
	 * idea of the size instead. */
	if (size_changed) {
		fi->direct_io = 1;
	} else {
		fi->keep_cache = 1;
		/* A body pushed in this mount needs neither its size nor a push
		 * (a large one is out of the pushed map from its first close). */
		if (h->fd >= 0 && !fs_nodemap_has(&ctx->pushed, ino)) {
			fs_push(ctx, ino, h);
			if (h->len >= FS_DROP_MIN)
				h->drop = ino;
		}
	}
	fi->noflush = 1;  /* a reader's close has nothing to say: no FLUSH request */
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_reading_release(ctx, h);  /* the open was interrupted */
}

void fs_reading_free(gpointer p)
{
	struct fs_handle *h = p;

	if (h->fd >= 0)
		close(h->fd);
	g_free(h);
}

void fs_reading_release(struct fs_ctx *ctx, struct fs_handle *h)
{
	g_mutex_lock(&ctx->reading_lock);
	g_hash_table_steal(ctx->reading, h);
	g_mutex_unlock(&ctx->reading_lock);
	if (h->drop && !fs_nodemap_add(&ctx->dropped, h->drop)) {
		/* Forgotten first: an open between this and the invalidation
		 * pushes again, and what that drops of it is read with READs. */
		fs_nodemap_remove(&ctx->pushed, h->drop);
		fs_invalidate_pages(ctx, h->drop);
	}
	fs_reading_free(h);
}

struct fs_handle *fs_handle(struct fuse_file_info *fi)
{
	return (struct fs_handle *)(uintptr_t)fi->fh;
}

/* What the last READ of ino without an open failed with, if that was
 * under a second ago; else 0. */
static int fs_body_failed_just_now(struct fs_ctx *ctx, fuse_ino_t ino)
{
	int rc = 0;

	g_mutex_lock(&ctx->failed_lock);
	if (ctx->failed_ino == ino && g_get_monotonic_time() - ctx->failed_at < G_USEC_PER_SEC)
		rc = ctx->failed_err;
	g_mutex_unlock(&ctx->failed_lock);
	return rc;
}

/* A READ of ino without an open: a large body read to its end before
 * (ctx->read_through), of another node, leaves the kernel's page cache
 * the first time in a mount, as at a first close (fs_reading_release):
 * a reader going through a folder is done with it, and the cache file
 * holds it already. */
static void fs_read_moved_on(struct fs_ctx *ctx, fuse_ino_t ino)
{
	fuse_ino_t done;

	g_mutex_lock(&ctx->failed_lock);
	done = ctx->read_through != ino ? ctx->read_through : 0;
	if (done)
		ctx->read_through = 0;
	g_mutex_unlock(&ctx->failed_lock);
	if (done && !fs_nodemap_add(&ctx->dropped, done))
		fs_invalidate_pages(ctx, done);
}

void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
             struct fuse_file_info *fi)
{
	struct fs_ctx *ctx = fuse_req_userdata(req);
	const struct fs_handle *h = fs_handle(fi);
	struct fs_handle body = { .fd = -1 };
	char *buf;
	ssize_t n;
	int rc, size_changed = 0;

	if (!h || (h->fd < 0 && !h->staged)) {
		/* No open (ctx->no_open), or an open that found the body in the
		 * kernel's page cache (fs_open): the body by its node. */
		if (!h)
			fs_read_moved_on(ctx, ino);
		rc = fs_body_failed_just_now(ctx, ino);
		if (rc == 0) {
			/* Without opens, a reader's first read is its first open. */
			rc = fs_body_of(ctx, ino, &body, &size_changed,
			                h ? 0 : fs_follow_first(ctx, req, ino));
			if (rc != 0) {
				g_mutex_lock(&ctx->failed_lock);
				ctx->failed_ino = ino;
				ctx->failed_err = rc;
				ctx->failed_at = g_get_monotonic_time();
				g_mutex_unlock(&ctx->failed_lock);
			}
		}
		if (rc != 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		/* A size other than the kernel was told: longer, and the body's
		 * commit had it ask the size again (fs_body_grew); shorter, and
		 * it cuts the size itself at this short READ. */
		h = &body;
	}
	if (!h->staged) {
		/* A body's bytes, wherever in its file they lie. */
		stats_add(reads, 1);
		if ((uint64_t)off >= h->len)
			size = 0;
		else if (size > h->len - (uint64_t)off)
			size = (size_t)(h->len - (uint64_t)off);
		off += (off_t)h->off;
	}
	buf = g_malloc(size ? size : 1);
	do
		n = size ? pread(h->fd, buf, size, off) : 0;
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		rc = errno;
	} else if (body.fd >= 0 && ctx->no_open && n > 0 && body.len >= FS_DROP_MIN &&
	           (uint64_t)off + (uint64_t)n >= body.off + body.len) {
		/* Before the reply: the reader's next file may be asked for
		 * the moment it has these bytes (fs_read_moved_on). */
		g_mutex_lock(&ctx->failed_lock);
		ctx->read_through = ino;
		g_mutex_unlock(&ctx->failed_lock);
	}
	if (n < 0)
		fuse_reply_err(req, rc);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	g_free(buf);
	if (body.fd >= 0)
		close(body.fd);
}

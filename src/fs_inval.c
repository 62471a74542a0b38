/* fs_inval.c — what the kernel caches, dropped when it changes. The
 * kernel keeps names and attributes for ctx->timeout; what the mount
 * learns of before then (a name that shifts, a size corrected by a
 * download, a message or folder gone, a message moved away) is pushed
 * to it here: from a thread of its own, never from a request, whose
 * syscall may hold the directory lock the kernel needs for it. */
#include <string.h>
#include <glib.h>
#include "cpus.h"
#include "fs_int.h"
#include "stats.h"

enum fs_inval_kind { FS_INVAL_PATH, FS_INVAL_ENTRY, FS_INVAL_PAGES, FS_INVAL_STORE,
                     FS_INVAL_STOP };

struct fs_inval {
	enum fs_inval_kind kind;
	char *path;            /* FS_INVAL_PATH: a store path */
	fuse_ino_t ino;        /* FS_INVAL_ENTRY: the name's directory; FS_INVAL_PAGES: the node */
	char *name;
	void *body;            /* FS_INVAL_STORE: the body to push into node ino */
	size_t len;
};

/* Bytes of bodies queued to be pushed: a reader far behind its stream
 * must not have the stream's whole window held twice in memory. */
#define FS_PUSH_QUEUE_MAX (8 * 1024 * 1024)

static void fs_inval_free(struct fs_ctx *ctx, struct fs_inval *iv)
{
	if (iv->body)
		__atomic_sub_fetch(&ctx->push_queued, iv->len, __ATOMIC_RELAXED);
	g_free(iv->body);
	g_free(iv->path);
	g_free(iv->name);
	g_free(iv);
}

static void fs_inval_push(struct fs_ctx *ctx, struct fs_inval *iv)
{
	if (ctx->invalidate)
		g_async_queue_push(ctx->invalidate, iv);
	else
		fs_inval_free(ctx, iv);
}

void fs_invalidate(struct fs_ctx *ctx, const char *path)
{
	struct fs_inval *iv = g_new0(struct fs_inval, 1);

	iv->kind = FS_INVAL_PATH;
	iv->path = g_strdup(path);
	fs_inval_push(ctx, iv);
}

/* A store path: "FOLDER" (its attributes; its name when it is gone),
 * "FOLDER/" (its node id changed: its name), or "FOLDER/NAME" (a
 * message: its name, and its attributes and pages when it still is). */
static void fs_inval_path(struct fs_ctx *ctx, const char *path)
{
	size_t len = strlen(path);
	int renumbered = len > 0 && path[len - 1] == '/';
	char *p = g_strndup(path, len - renumbered);
	char *slash = strrchr(p, '/');
	const char *name = slash ? slash + 1 : p;
	struct store_folder f = { 0 }, parent = { 0 };
	struct store_message m = { 0 };
	fuse_ino_t pino = FS_ROOT_INO;

	if (!renumbered && store_folder_by_path(ctx->store, p, &f) == MF_OK) {
		fuse_lowlevel_notify_inval_inode(ctx->se, FS_INO(f.ino_base, 0), -1, 0);
		goto out;
	}
	if (slash) {
		*slash = '\0';
		if (store_folder_by_path(ctx->store, p, &parent) != MF_OK)
			goto out;  /* the kernel knows no name below a folder gone */
		pino = FS_INO(parent.ino_base, 0);
	}
	fuse_lowlevel_notify_inval_entry(ctx->se, pino, name, strlen(name));
	/* Without opens a message's size is the kernel's to cut at a short
	 * READ, and its growth is told at its commit (fs_body_grew). */
	if (!renumbered && slash && !ctx->no_open &&
	    store_message_key_by_name(ctx->store, parent.id, name, &m) == MF_OK)
		fuse_lowlevel_notify_inval_inode(ctx->se, FS_INO(parent.ino_base, m.uid), 0, 0);
out:
	store_message_clear(&m);
	store_folder_clear(&parent);
	store_folder_clear(&f);
	g_free(p);
}

static gpointer fs_invalidator(gpointer data)
{
	struct fs_ctx *ctx = data;

	for (;;) {
		struct fs_inval *iv = g_async_queue_pop(ctx->invalidate);
		enum fs_inval_kind kind = iv->kind;
		if (kind == FS_INVAL_PATH) {
			fs_inval_path(ctx, iv->path);
		} else if (kind == FS_INVAL_ENTRY) {
			fuse_lowlevel_notify_inval_entry(ctx->se, iv->ino, iv->name, strlen(iv->name));
		} else if (kind == FS_INVAL_PAGES) {
			if (fuse_lowlevel_notify_inval_inode(ctx->se, iv->ino, 0, 0) == 0)
				stats_add(bodies_dropped, 1);
		} else if (kind == FS_INVAL_STORE) {
			fs_push_arrived(ctx, iv->ino, iv->body, iv->len);
		}
		fs_inval_free(ctx, iv);
		if (kind == FS_INVAL_STOP)
			return NULL;
	}
}

void fs_invalidate_entry(struct fs_ctx *ctx, fuse_ino_t parent, const char *name)
{
	struct fs_inval *iv = g_new0(struct fs_inval, 1);

	iv->kind = FS_INVAL_ENTRY;
	iv->ino = parent;
	iv->name = g_strdup(name);
	fs_inval_push(ctx, iv);
}

/* sync_set_arrival's listener (every mount): a body a stream brought
 * goes into the kernel's page cache from this thread, never from a
 * request's (whose READ may hold that node's pages locked). */
void fs_body_arrived(void *data, uint64_t ino_base, uint32_t uid, void *body, size_t len)
{
	struct fs_ctx *ctx = data;
	struct fs_inval *iv;

	if (__atomic_add_fetch(&ctx->push_queued, len, __ATOMIC_RELAXED) > FS_PUSH_QUEUE_MAX) {
		__atomic_sub_fetch(&ctx->push_queued, len, __ATOMIC_RELAXED);
		g_free(body);
		return;
	}
	iv = g_new0(struct fs_inval, 1);
	iv->kind = FS_INVAL_STORE;
	iv->ino = FS_INO(ino_base, uid);
	iv->body = body;
	iv->len = len;
	fs_inval_push(ctx, iv);
}

void fs_invalidate_pages(struct fs_ctx *ctx, fuse_ino_t ino)
{
	struct fs_inval *iv = g_new0(struct fs_inval, 1);

	iv->kind = FS_INVAL_PAGES;
	iv->ino = ino;
	fs_inval_push(ctx, iv);
}

void fs_inval_start(struct fs_ctx *ctx)
{
	ctx->invalidate = g_async_queue_new();
	ctx->invalidator = cpus_thread_new("invalidate", fs_invalidator, ctx);
}

void fs_inval_stop(struct fs_ctx *ctx)
{
	struct fs_inval *stop = g_new0(struct fs_inval, 1);

	stop->kind = FS_INVAL_STOP;
	g_async_queue_push(ctx->invalidate, stop);
	g_thread_join(ctx->invalidator);
	ctx->invalidator = NULL;
	g_async_queue_unref(ctx->invalidate);
	ctx->invalidate = NULL;
}

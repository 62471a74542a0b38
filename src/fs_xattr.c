/* fs_xattr.c — extended attributes: a message's flags (the one that can
 * be set), uid, Message-ID, Subject, From and Date; a folder's cache
 * state and the root's statistics, as JSON, for mailfs prefetch and
 * for people. Must not: download a body, or answer another namespace
 * than user. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <glib.h>
#include "fs_int.h"
#include "mime.h"
#include "log.h"
#include "stats.h"

static const char *const fs_message_xattrs[] = {
	"user.mail.flags", "user.mail.uid", "user.mail.message_id",
	"user.mail.subject", "user.mail.from", "user.mail.date",
};
/* listxattr names the first FS_NLISTED: the message's state and its
 * identity. The header values are asked for by name. The body a backup
 * keeps holds them already, and restic and borg ask every file, changed
 * or not, for each listed value: one FUSE round trip each. */
#define FS_NLISTED 2

/* Only the user namespace exists here. Saying ENOTSUP (not ENODATA) for
 * the others lets ls -l stop asking every file for security.selinux and
 * its ACLs: it remembers an unsupported device. */
static int fs_xattr_namespace_ok(const char *name)
{
	return strncmp(name, "user.", 5) == 0;
}

/* What the cache holds of a folder, for mailfs prefetch: its listed
 * messages and their bytes, and how many of them (and bytes) have their
 * body cached. One JSON object, whatever the folder's size: the list of
 * files is readdir's, each file's state its own user.mailfs.cached. */
struct fs_cache_count {
	struct fs_ctx *ctx;
	uint64_t messages, bytes, cached, cached_bytes;
};

static int fs_count_cached(void *data, const struct store_message *m)
{
	struct fs_cache_count *c = data;

	if (sync_hidden(c->ctx->sync, m->flags))
		return 0;
	c->messages++;
	c->bytes += m->size;
	if (m->body_cached) {
		c->cached++;
		c->cached_bytes += m->size;
	}
	return 0;
}

static char *fs_folder_cache_json(struct fs_ctx *ctx, const struct store_folder *f)
{
	struct fs_cache_count c = { ctx, 0, 0, 0, 0 };

	if (!f->noselect) {
		sync_folder_settle(ctx->sync, f->id);  /* a first listing counts once stored */
		if (store_messages_list(ctx->store, f->id, fs_count_cached, &c) != MF_OK)
			return NULL;
	}
	return g_strdup_printf("{\"messages\": %" PRIu64 ", \"bytes\": %" PRIu64
	                       ", \"cached\": %" PRIu64 ", \"cached_bytes\": %" PRIu64 "}",
	                       c.messages, c.bytes, c.cached, c.cached_bytes);
}

/* The mount's counters, and the body cache's cap and use (mailfs
 * prefetch checks that what it is asked to fetch fits). */
static char *fs_root_stats_json(struct fs_ctx *ctx)
{
	GString *s = g_string_new(NULL);
	uint64_t used = 0, count = 0;

	sync_settle_all(ctx->sync);  /* a listing just shown counts once stored */
	stats_format_json(s);
	store_body_usage(ctx->store, &used, &count);
	stats_json_add(s, "cache_size", ctx->cfg->cache_size);
	stats_json_add(s, "cache_used", used);
	return g_string_free(s, FALSE);
}

/* restic asks each file for its list of names twice, then for each
 * name: eight requests a file, each of which resolved the path and
 * decoded From and Date again. The last messages asked about are
 * remembered with their values, for as long as the cache is unchanged
 * (store_generation: any write, flags included, makes them stale). */
#define FS_MEMOS 8
#define FS_NVALUES G_N_ELEMENTS(fs_message_xattrs)
struct fs_memo {
	fuse_ino_t ino;            /* 0: none */
	uint64_t gen;
	char *v[FS_NVALUES];       /* fs_message_xattrs' values; NULL: absent */
};
static GMutex fs_memo_lock;
static struct fs_memo fs_memos[FS_MEMOS];
static unsigned fs_memo_next;

static void fs_memo_copy(char **to, char *const *from)
{
	for (size_t i = 0; i < FS_NVALUES; i++)
		to[i] = g_strdup(from[i]);
}

static void fs_values_clear(char **v)
{
	for (size_t i = 0; i < FS_NVALUES; i++)
		g_clear_pointer(&v[i], g_free);
}

/* The values of fs_message_xattrs for the message ino (copies in v):
 * 1; 0 when ino is no message; or -errno. */
static int fs_message_values(struct fs_ctx *ctx, fuse_ino_t ino, char **v)
{
	uint64_t gen = store_generation(ctx->store);
	struct fs_memo *memo;
	struct fs_node n;
	int rc;

	g_mutex_lock(&fs_memo_lock);
	for (size_t i = 0; i < FS_MEMOS; i++) {
		if (fs_memos[i].ino == ino && fs_memos[i].gen == gen) {
			fs_memo_copy(v, fs_memos[i].v);
			g_mutex_unlock(&fs_memo_lock);
			return 1;
		}
	}
	g_mutex_unlock(&fs_memo_lock);
	if (ino & FS_STAGED_BIT)
		return 0;
	rc = fs_node_of(ctx, ino, &n);
	if (rc != 0)
		return rc;
	if (n.kind != FS_MESSAGE) {
		fs_node_clear(&n);
		return 0;
	}
	v[0] = g_strdup(n.msg.flags ? n.msg.flags : "");
	v[1] = n.msg.remote_id ? g_strdup(n.msg.remote_id) : g_strdup_printf("%u", n.msg.uid);
	v[2] = g_strdup(n.msg.message_id);
	v[3] = g_strdup(n.msg.subject);
	v[4] = mime_decode_from(n.msg.from_raw);
	v[5] = mime_decode_date(n.msg.date_raw);
	fs_node_clear(&n);
	g_mutex_lock(&fs_memo_lock);
	memo = &fs_memos[fs_memo_next++ % FS_MEMOS];
	fs_values_clear(memo->v);
	memo->ino = ino;
	memo->gen = gen;  /* read before the resolve: a write since makes it stale */
	fs_memo_copy(memo->v, v);
	g_mutex_unlock(&fs_memo_lock);
	return 1;
}

void fs_xattr_forget(void)
{
	g_mutex_lock(&fs_memo_lock);
	for (size_t i = 0; i < FS_MEMOS; i++) {
		fs_memos[i].ino = 0;
		fs_values_clear(fs_memos[i].v);
	}
	g_mutex_unlock(&fs_memo_lock);
}

/* The index of name in fs_message_xattrs, or -1. */
static int fs_message_xattr_index(const char *name)
{
	for (size_t i = 0; i < FS_NVALUES; i++)
		if (strcmp(name, fs_message_xattrs[i]) == 0)
			return (int)i;
	return -1;
}

static void fs_xattr_answer(fuse_req_t req, int rc, const char *value, size_t len,
                            size_t size)
{
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

static int fs_getxattr_value(struct fs_ctx *ctx, fuse_ino_t ino, const char *name,
                             char **value)
{
	int k = fs_message_xattr_index(name);
	struct fs_node n;
	int rc;

	if (!fs_xattr_namespace_ok(name))
		return -ENOTSUP;
	if (k >= 0) {
		char *v[FS_NVALUES] = { 0 };
		rc = fs_message_values(ctx, ino, v);
		if (rc < 0)
			return rc;
		*value = g_steal_pointer(&v[k]);
		fs_values_clear(v);
	} else if (!(ino & FS_STAGED_BIT)) {
		rc = fs_node_of(ctx, ino, &n);
		if (rc != 0)
			return rc;
		/* user.mailfs.cache and user.mailfs.cached are not in listxattr:
		 * they change as bodies come and go, and cp -a, rsync -X or tar
		 * --xattrs must not copy a cache's state into a backup. */
		if (n.kind == FS_ROOT && strcmp(name, "user.mailfs.stats") == 0)
			*value = fs_root_stats_json(ctx);
		else if (n.kind == FS_FOLDER && strcmp(name, "user.mailfs.cache") == 0)
			*value = fs_folder_cache_json(ctx, &n.folder);
		else if (n.kind == FS_MESSAGE && strcmp(name, "user.mailfs.cached") == 0)
			*value = g_strdup(n.msg.body_cached ? "1" : "0");
		fs_node_clear(&n);
	}
	return *value ? 0 : -ENODATA;
}

void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char *value = NULL;
	int rc = fs_getxattr_value(fuse_req_userdata(req), ino, name, &value);

	fs_xattr_answer(req, rc, value, value ? strlen(value) : 0, size);
	g_free(value);
}

void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs_ctx *ctx = fuse_req_userdata(req);
	char *v[FS_NVALUES] = { 0 };
	GString *names = g_string_new(NULL);
	int rc = fs_message_values(ctx, ino, v);

	if (rc == 1) {
		for (size_t i = 0; i < FS_NLISTED; i++)
			if (v[i])
				g_string_append_len(names, fs_message_xattrs[i],
				                    strlen(fs_message_xattrs[i]) + 1);
		fs_values_clear(v);
	} else if (rc == 0 && ino == FS_ROOT_INO) {
		g_string_append_len(names, "user.mailfs.stats", sizeof "user.mailfs.stats");
	}
	fs_xattr_answer(req, rc, names->str, names->len, size);
	g_string_free(names, TRUE);
}

static int fs_do_setxattr(struct fs_ctx *ctx, fuse_ino_t ino, const char *name,
                          const char *value, size_t size)
{
	struct fs_node n;
	enum mf_status st;
	char *flagtext;
	int rc;

	if (!fs_xattr_namespace_ok(name))
		return -ENOTSUP;
	if (strcmp(name, "user.mail.flags") != 0)
		return ctx->cfg->readonly ? -EROFS : -ENOTSUP;
	if (ctx->cfg->readonly)
		return -EROFS;
	if (memchr(value, 0, size) || size > 4096)
		return -EINVAL;
	if (ino & FS_STAGED_BIT)
		return -ENOTSUP;
	rc = fs_node_of(ctx, ino, &n);
	if (rc != 0)
		return rc;
	if (n.kind != FS_MESSAGE) {
		fs_node_clear(&n);
		return -ENOTSUP;
	}
	flagtext = g_strndup(value, size);
	st = sync_set_flags(ctx->sync, n.folder.id, n.msg.uid, flagtext);
	g_free(flagtext);
	fs_node_clear(&n);
	return fs_errno(st);
}

void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                 size_t size, int flags)
{
	fuse_reply_err(req, -fs_do_setxattr(fuse_req_userdata(req), ino, name, value, size));
}

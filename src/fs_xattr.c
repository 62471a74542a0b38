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

static int fs_xattr_reply(const char *value, size_t len, char *buf, size_t size)
{
	if (size == 0)
		return (int)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, value, len);
	return (int)len;
}

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

int fs_getxattr(const char *path, const char *name, char *buf, size_t size)
{
	struct fs_ctx *ctx = fs_ctx();
	struct fs_node n;
	char *value = NULL;
	int rc;

	if (!fs_xattr_namespace_ok(name))
		return -ENOTSUP;
	rc = fs_resolve(ctx, path, &n, 0);

	if (rc != 0)
		return rc;
	/* user.mailfs.cache and user.mailfs.cached are not in listxattr:
	 * they change as bodies come and go, and cp -a, rsync -X or tar
	 * --xattrs must not copy a cache's state into a backup. */
	if (n.kind == FS_ROOT && strcmp(name, "user.mailfs.stats") == 0) {
		value = fs_root_stats_json(ctx);
	} else if (n.kind == FS_FOLDER && strcmp(name, "user.mailfs.cache") == 0) {
		value = fs_folder_cache_json(ctx, &n.folder);
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
		else if (strcmp(name, "user.mail.from") == 0)
			value = mime_decode_from(m->from_raw);
		else if (strcmp(name, "user.mail.date") == 0)
			value = mime_decode_date(m->date_raw);
		else if (strcmp(name, "user.mailfs.cached") == 0)
			value = g_strdup(m->body_cached ? "1" : "0");
	}
	fs_node_clear(&n);
	if (!value)
		return -ENODATA;
	rc = fs_xattr_reply(value, strlen(value), buf, size);
	g_free(value);
	return rc;
}

int fs_listxattr(const char *path, char *buf, size_t size)
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
		char *from = mime_decode_from(n.msg.from_raw), *date = mime_decode_date(n.msg.date_raw);
		const char *present[G_N_ELEMENTS(fs_message_xattrs)] = {
			"", "", n.msg.message_id, n.msg.subject, from, date,
		};
		for (size_t i = 0; i < G_N_ELEMENTS(fs_message_xattrs); i++)
			if (present[i])
				g_string_append_len(names, fs_message_xattrs[i],
				                    strlen(fs_message_xattrs[i]) + 1);
		g_free(from);
		g_free(date);
	}
	fs_node_clear(&n);
	rc = fs_xattr_reply(names->str, names->len, buf, size);
	g_string_free(names, TRUE);
	return rc;
}

int fs_setxattr(const char *path, const char *name, const char *value, size_t size,
                int flags)
{
	struct fs_ctx *ctx = fs_ctx();
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
	rc = fs_resolve(ctx, path, &n, 0);
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


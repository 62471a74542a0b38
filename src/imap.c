/* imap.c — the IMAP driver: a command engine over net.c with several
 * tagged commands in flight per connection, a pool of connections, and the
 * mailbox operations (LIST, folder sync, body fetch) built on it.
 *
 * Parsing is imap_parse.c's job (pure); this file only moves bytes and
 * interprets parsed responses. Must not: touch SQLite or FUSE, set \Seen
 * unless mark_seen, wait without a bound, or hold a pool lock across I/O. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "imap_parse.h"
#include "log.h"
#include "mailbox.h"
#include "net.h"
#include "stats.h"
#include "utf7.h"

#define IMAP_RANGE_SIZE (1024 * 1024)  /* bodies above this come in ranges */
#define IMAP_RANGES_IN_FLIGHT 4
#define IMAP_IDLE_CHECK_US (20 * G_USEC_PER_SEC)

enum imap_capability {
	IMAP_CAP_LITERAL_PLUS = 1 << 0,
	IMAP_CAP_MOVE = 1 << 1,
	IMAP_CAP_UIDPLUS = 1 << 2,
	IMAP_CAP_CONDSTORE = 1 << 3,
	IMAP_CAP_QRESYNC = 1 << 4,
	IMAP_CAP_QUOTA = 1 << 5,
	IMAP_CAP_LITERAL_MINUS = 1 << 6,
};

struct imap_done_tag {
	unsigned tag;
	enum mf_status status;
};

struct imap_conn {
	struct net_conn *net;
	char *in;              /* received bytes not yet parsed start at in_pos */
	size_t in_pos, in_len, in_cap;
	unsigned next_tag;
	GArray *done;          /* struct imap_done_tag: completions read early */
	unsigned caps;
	int broken;            /* the connection is unusable: close, don't reuse */
	int reused;            /* it served an earlier operation */
	char *selected;        /* wire name of the selected folder, or NULL */
	int selected_rw;       /* selected with SELECT (else EXAMINE) */
	gint64 idle_since;     /* monotonic µs when it went back to the pool */
	uint32_t exists, uidvalidity, uidnext;
	uint64_t highestmodseq;
};

struct imap_driver {
	struct mailbox base;
	const struct mf_config *cfg;
	GMutex lock;
	GCond cond;
	GPtrArray *idle;       /* struct imap_conn * ready for use */
	int total;             /* open or opening connections */
	int lost;              /* connections dropped, to count reconnects */
	char delim;            /* hierarchy delimiter seen in LIST, 0 unknown */
};

typedef void (*imap_untagged_fn)(void *ctx, struct imap_conn *c,
                                 const struct imap_response *r);

/* ---------------------------------------------------------------- engine */

static void imap_conn_note_capabilities(struct imap_conn *c, const struct imap_value *list)
{
	static const struct { const char *name; unsigned bit; } known[] = {
		{ "LITERAL+", IMAP_CAP_LITERAL_PLUS }, { "LITERAL-", IMAP_CAP_LITERAL_MINUS },
		{ "MOVE", IMAP_CAP_MOVE }, { "UIDPLUS", IMAP_CAP_UIDPLUS },
		{ "CONDSTORE", IMAP_CAP_CONDSTORE }, { "QRESYNC", IMAP_CAP_QRESYNC },
		{ "QUOTA", IMAP_CAP_QUOTA },
	};
	c->caps = 0;
	for (size_t i = 0; i < list->count; i++)
		for (size_t k = 0; k < G_N_ELEMENTS(known); k++)
			if (imap_value_is_atom(&list->items[i], known[k].name))
				c->caps |= known[k].bit;
}

/* State every command's untagged responses may carry, whoever waits. */
static void imap_conn_note_untagged(struct imap_conn *c, const struct imap_response *r)
{
	uint64_t n;

	if (r->kind != IMAP_RESPONSE_UNTAGGED || !r->keyword)
		return;
	if (r->has_number && strcmp(r->keyword, "EXISTS") == 0) {
		c->exists = r->number;
	} else if (r->has_number && strcmp(r->keyword, "EXPUNGE") == 0) {
		if (c->exists)
			c->exists--;
	} else if (strcmp(r->keyword, "CAPABILITY") == 0) {
		imap_conn_note_capabilities(c, &r->args);
	} else if (strcmp(r->keyword, "BYE") == 0) {
		c->broken = 1;
	} else if (r->status == IMAP_STATUS_OK && r->code.type == IMAP_VALUE_LIST &&
	           r->code.count >= 2 && imap_value_number(&r->code.items[1], &n) == 0) {
		if (imap_value_is_atom(&r->code.items[0], "UIDVALIDITY"))
			c->uidvalidity = (uint32_t)n;
		else if (imap_value_is_atom(&r->code.items[0], "UIDNEXT"))
			c->uidnext = (uint32_t)n;
		else if (imap_value_is_atom(&r->code.items[0], "HIGHESTMODSEQ"))
			c->highestmodseq = n;
	}
}

static void imap_trace(const char *dir, const char *data, size_t len)
{
	if (!log_debug_enabled())
		return;
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	log_debug("%s %.*s%s", dir, (int)(len > 300 ? 300 : len), data, len > 300 ? "..." : "");
}

/* Reads one whole response into *r. */
static enum mf_status imap_read_response(struct imap_conn *c, struct imap_response *r)
{
	size_t want = 0;

	for (;;) {
		size_t avail = c->in_len - c->in_pos;
		if (avail > 0 && avail >= want) {
			size_t consumed = 0, need = 0;
			enum imap_parse_result res = imap_parse_response(c->in + c->in_pos, avail,
			                                                 &consumed, &need, r);
			if (res == IMAP_PARSE_OK) {
				imap_trace("S:", c->in + c->in_pos, consumed);
				c->in_pos += consumed;
				return MF_OK;
			}
			if (res == IMAP_PARSE_ERROR) {
				log_error("malformed IMAP response: %.*s", (int)(consumed > 200 ? 200 : consumed),
				          c->in + c->in_pos);
				c->broken = 1;
				return MF_ERR_PROTOCOL;
			}
			want = need > avail ? need : avail + 1;
		}
		if (c->in_pos > 0 && (c->in_pos == c->in_len || c->in_pos > c->in_cap / 2)) {
			memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
			c->in_len -= c->in_pos;
			c->in_pos = 0;
		}
		size_t target = c->in_pos + (want > 65536 ? want : 65536);
		if (c->in_cap < target) {
			c->in_cap = target > c->in_cap * 2 ? target : c->in_cap * 2;
			c->in = g_realloc(c->in, c->in_cap);
		}
		size_t got = 0;
		enum mf_status st = net_recv(c->net, c->in + c->in_len, c->in_cap - c->in_len, &got);
		if (st != MF_OK) {
			if (!c->broken || st != MF_ERR_IO)
				log_warn("IMAP connection lost: %s", mf_status_str(st));
			c->broken = 1;
			return st;
		}
		c->in_len += got;
	}
}

/* Sends "<tag> <command>\r\n"; command is complete IMAP text (arguments
 * already quoted). Returns the tag number, 0 when the connection failed. */
static unsigned imap_send(struct imap_conn *c, const char *command)
{
	unsigned tag = ++c->next_tag;
	char *line = g_strdup_printf("M%u %s\r\n", tag, command);
	enum mf_status st;

	imap_trace("C:", line, strlen(line));
	st = c->broken ? MF_ERR_IO : net_send(c->net, line, strlen(line));
	g_free(line);
	if (st != MF_OK) {
		c->broken = 1;
		return 0;
	}
	return tag;
}

static enum mf_status imap_status_of(const struct imap_response *r)
{
	if (r->status == IMAP_STATUS_OK)
		return MF_OK;
	if (r->code.type == IMAP_VALUE_LIST && r->code.count > 0 &&
	    (imap_value_is_atom(&r->code.items[0], "OVERQUOTA") ||
	     imap_value_is_atom(&r->code.items[0], "LIMIT")))
		return MF_ERR_QUOTA;
	if (r->code.type == IMAP_VALUE_LIST && r->code.count > 0 &&
	    imap_value_is_atom(&r->code.items[0], "NONEXISTENT"))
		return MF_ERR_NOTFOUND;
	if (r->code.type == IMAP_VALUE_LIST && r->code.count > 0 &&
	    imap_value_is_atom(&r->code.items[0], "ALREADYEXISTS"))
		return MF_ERR_EXISTS;  /* RFC 5530: CREATE or RENAME onto a folder that is there */
	return MF_ERR_REFUSED;
}

/* Reads responses until the completion of tag, passing untagged ones to
 * fn (may be NULL). Completions of other tags are remembered for their
 * own wait. Returns the tag's outcome; when final is not NULL it receives
 * the tagged response itself (caller frees; zeroed when the outcome was
 * read earlier or the connection failed). When continuation is not NULL,
 * a "+" ends the wait too, with *continuation set to 1. */
static enum mf_status imap_wait_full(struct imap_conn *c, unsigned tag,
                                     imap_untagged_fn fn, void *ctx,
                                     struct imap_response *final, int *continuation)
{
	char want[16];

	if (final)
		memset(final, 0, sizeof *final);
	if (tag == 0)
		return MF_ERR_IO;
	for (guint i = 0; i < c->done->len; i++) {
		struct imap_done_tag *d = &g_array_index(c->done, struct imap_done_tag, i);
		if (d->tag == tag) {
			enum mf_status st = d->status;
			g_array_remove_index_fast(c->done, i);
			return st;
		}
	}
	g_snprintf(want, sizeof want, "M%u", tag);
	for (;;) {
		struct imap_response r = { 0 };
		enum mf_status st = imap_read_response(c, &r);
		if (st != MF_OK)
			return st;
		if (r.kind == IMAP_RESPONSE_TAGGED) {
			st = imap_status_of(&r);
			if (st != MF_OK)
				log_warn("server refused %s: %s %s", r.tag, r.keyword ? r.keyword : "",
				         r.text ? r.text : "");
			if (strcmp(r.tag, want) == 0) {
				if (final)
					*final = r;
				else
					imap_response_free(&r);
				return st;
			}
			unsigned other = 0;
			if (r.tag[0] == 'M')
				other = (unsigned)strtoul(r.tag + 1, NULL, 10);
			struct imap_done_tag d = { other, st };
			g_array_append_val(c->done, d);
		} else if (r.kind == IMAP_RESPONSE_UNTAGGED) {
			imap_conn_note_untagged(c, &r);
			if (fn)
				fn(ctx, c, &r);
		} else if (continuation) {
			*continuation = 1;
			imap_response_free(&r);
			return MF_OK;
		}
		imap_response_free(&r);
	}
}

static enum mf_status imap_wait(struct imap_conn *c, unsigned tag,
                                imap_untagged_fn fn, void *ctx)
{
	return imap_wait_full(c, tag, fn, ctx, NULL, NULL);
}

static enum mf_status imap_command(struct imap_conn *c, const char *command,
                                   imap_untagged_fn fn, void *ctx)
{
	return imap_wait(c, imap_send(c, command), fn, ctx);
}

/* Appends a mailbox name argument: quoted, or as a LITERAL+ literal when
 * it holds bytes a quoted string cannot. The name can never end the
 * command early or start another. */
static enum mf_status imap_append_mailbox(struct imap_conn *c, GString *cmd, const char *name)
{
	if (imap_quote(cmd, name) == 0)
		return MF_OK;
	if (!(c->caps & IMAP_CAP_LITERAL_PLUS) || strchr(name, '\r') || strchr(name, '\n'))
		return MF_ERR_INVAL;
	g_string_append_printf(cmd, "{%zu+}\r\n%s", strlen(name), name);
	return MF_OK;
}

/* ---------------------------------------------------------------- pool */

static void imap_conn_free(struct imap_conn *c)
{
	if (!c)
		return;
	if (c->net && !c->broken) {
		/* curl sends no LOGOUT at cleanup (NOTES.md). */
		imap_command(c, "LOGOUT", NULL, NULL);
	}
	net_close(c->net);
	g_free(c->in);
	g_array_free(c->done, TRUE);
	g_free(c->selected);
	g_free(c);
}

static enum mf_status imap_conn_open(const struct mf_config *cfg, struct imap_conn **out, char **err)
{
	struct imap_conn *c = g_new0(struct imap_conn, 1);
	enum mf_status st;

	c->done = g_array_new(FALSE, FALSE, sizeof(struct imap_done_tag));
	c->idle_since = g_get_monotonic_time();
	st = net_connect(cfg, &c->net, err);
	if (st != MF_OK) {
		c->broken = 1;
		imap_conn_free(c);
		return st;
	}
	/* curl read the capabilities before login; those after may differ. */
	st = imap_command(c, "CAPABILITY", NULL, NULL);
	if (st != MF_OK) {
		*err = g_strdup_printf("CAPABILITY failed: %s", mf_status_str(st));
		c->broken = 1;
		imap_conn_free(c);
		return st;
	}
	*out = c;
	return MF_OK;
}

static void imap_release(struct imap_driver *d, struct imap_conn *c);

/* Whether an idle connection was closed by the server (or the network)
 * while it sat in the pool. Bytes it sent meanwhile (untagged news) are
 * kept for the next command's reader. */
static int imap_conn_closed_meanwhile(struct imap_conn *c)
{
	size_t got;

	/* A "* BYE" may come before the close: read all that waits. */
	do {
		if (c->in_cap - c->in_len < 4096) {
			c->in_cap = c->in_cap * 2 + 4096;
			c->in = g_realloc(c->in, c->in_cap);
		}
		got = 0;
		if (net_peek_closed(c->net, c->in + c->in_len, c->in_cap - c->in_len, &got)) {
			c->broken = 1;
			return 1;
		}
		c->in_len += got;
	} while (got > 0);
	return 0;
}

/* Takes a connection from the pool, preferring one that has folder
 * selected; opens a new one when the pool has room; waits (bounded)
 * otherwise. */
static enum mf_status imap_acquire(struct imap_driver *d, const char *folder,
                                   struct imap_conn **out)
{
	gint64 deadline = g_get_monotonic_time() + (gint64)d->cfg->timeout * G_USEC_PER_SEC;
	struct imap_conn *c = NULL;
	enum mf_status st;
	char *err = NULL;
	int counted_reconnect = 0;

	g_mutex_lock(&d->lock);
	for (;;) {
		/* Best an idle connection on this folder, then one on no folder;
		 * rather than make an idle one switch folders, open another while
		 * there is room: each busy folder keeps a connection of its own
		 * (a mv between two folders would SELECT back and forth). */
		int pick = -1, blank = -1;
		for (guint i = 0; i < d->idle->len; i++) {
			struct imap_conn *ci = g_ptr_array_index(d->idle, i);
			if (folder && ci->selected && strcmp(ci->selected, folder) == 0)
				pick = (int)i;
			else if (!ci->selected && blank < 0)
				blank = (int)i;
		}
		if (pick < 0)
			pick = blank;
		if (pick < 0 && d->idle->len > 0 && (!folder || d->total >= d->cfg->connections))
			pick = (int)d->idle->len - 1;
		if (pick >= 0) {
			c = g_ptr_array_steal_index_fast(d->idle, (guint)pick);
			g_mutex_unlock(&d->lock);
			c->reused = 1;
			/* A server may drop a connection that idled: find out now,
			 * not in the middle of a command that must not be repeated.
			 * A close already seen costs nothing to notice; a long idle
			 * is worth a NOOP. */
			if (imap_conn_closed_meanwhile(c) ||
			    (g_get_monotonic_time() - c->idle_since > IMAP_IDLE_CHECK_US &&
			     imap_command(c, "NOOP", NULL, NULL) != MF_OK)) {
				imap_release(d, c);
				g_mutex_lock(&d->lock);
				continue;
			}
			*out = c;
			return MF_OK;
		}
		if (d->total < d->cfg->connections) {
			d->total++;
			if (d->lost > 0) {
				d->lost--;
				counted_reconnect = 1;
			}
			break;
		}
		if (!g_cond_wait_until(&d->cond, &d->lock, deadline)) {
			g_mutex_unlock(&d->lock);
			log_warn("no IMAP connection free within %d s", d->cfg->timeout);
			return MF_ERR_TIMEOUT;
		}
	}
	g_mutex_unlock(&d->lock);

	st = imap_conn_open(d->cfg, &c, &err);
	if (st != MF_OK) {
		log_warn("cannot open an IMAP connection: %s", err ? err : mf_status_str(st));
		g_free(err);
		g_mutex_lock(&d->lock);
		d->total--;
		if (counted_reconnect)
			d->lost++;
		/* A server that allows no more connections: an idle one serves. */
		if (d->idle->len > 0) {
			c = g_ptr_array_steal_index_fast(d->idle, d->idle->len - 1);
			g_mutex_unlock(&d->lock);
			c->reused = 1;
			*out = c;
			return MF_OK;
		}
		g_cond_signal(&d->cond);
		g_mutex_unlock(&d->lock);
		return st;
	}
	if (counted_reconnect)
		stats_add(reconnects, 1);
	*out = c;
	return MF_OK;
}

static void imap_release(struct imap_driver *d, struct imap_conn *c)
{
	if (c->broken || c->done->len > 0) {
		/* Unread completions mean a command's replies are still due:
		 * the connection is out of step, don't reuse it. */
		c->broken = 1;
		imap_conn_free(c);
		g_mutex_lock(&d->lock);
		d->total--;
		d->lost++;
		g_cond_signal(&d->cond);
		g_mutex_unlock(&d->lock);
		return;
	}
	c->idle_since = g_get_monotonic_time();
	g_mutex_lock(&d->lock);
	g_ptr_array_add(d->idle, c);
	g_cond_signal(&d->cond);
	g_mutex_unlock(&d->lock);
}

/* EXAMINE folder (read-only: no flag changes, no \Recent taken) unless it
 * is already selected and fresh is 0. */
static enum mf_status imap_select_mode(struct imap_conn *c, const char *wire_name, int rw);

static enum mf_status imap_examine(struct imap_conn *c, const char *wire_name, int fresh)
{
	if (!fresh && c->selected && strcmp(c->selected, wire_name) == 0)
		return MF_OK;
	return imap_select_mode(c, wire_name, 0);
}

/* SELECT (rw) or EXAMINE the folder, fresh. */
static enum mf_status imap_select_mode(struct imap_conn *c, const char *wire_name, int rw)
{
	GString *cmd;
	enum mf_status st;

	g_clear_pointer(&c->selected, g_free);
	c->exists = c->uidvalidity = c->uidnext = 0;
	c->highestmodseq = 0;
	cmd = g_string_new(rw ? "SELECT " : "EXAMINE ");
	st = imap_append_mailbox(c, cmd, wire_name);
	if (st == MF_OK) {
		if (c->caps & IMAP_CAP_CONDSTORE)
			g_string_append(cmd, " (CONDSTORE)");
		st = imap_command(c, cmd->str, NULL, NULL);
	}
	g_string_free(cmd, TRUE);
	if (st == MF_ERR_REFUSED)
		st = MF_ERR_NOTFOUND;  /* the folder is gone, or not selectable */
	if (st == MF_OK) {
		c->selected = g_strdup(wire_name);
		c->selected_rw = rw;
	}
	return st;
}

static enum mf_status imap_select_rw(struct imap_conn *c, const char *folder, uint32_t uidvalidity);

/* Runs op on a pooled connection; retries once on a fresh connection when
 * a reused one turns out to have been closed by the server meanwhile. */
typedef enum mf_status (*imap_op_fn)(struct imap_conn *c, void *arg);

static enum mf_status imap_with_conn(struct imap_driver *d, const char *folder,
                                     imap_op_fn op, void *arg)
{
	enum mf_status st = MF_ERR_IO;

	for (int attempt = 0; attempt < 2; attempt++) {
		struct imap_conn *c;
		int reused;
		st = imap_acquire(d, folder, &c);
		if (st != MF_OK)
			return st;
		reused = c->reused;
		st = op(c, arg);
		imap_release(d, c);
		if (!(st == MF_ERR_IO && reused))
			break;
	}
	return st;
}

/* The attribute list of an untagged "* n FETCH (...)" that carries a
 * UID, with the UID in *uid; NULL for anything else (an unsolicited
 * FETCH without UID is none of ours). */
static const struct imap_value *imap_fetch_attributes(const struct imap_response *r, uint64_t *uid)
{
	const struct imap_value *list;

	if (strcmp(r->keyword, "FETCH") != 0 || r->args.count < 1 ||
	    r->args.items[0].type != IMAP_VALUE_LIST)
		return NULL;
	list = &r->args.items[0];
	if (imap_value_number(imap_fetch_get(list, "UID"), uid) != 0 || *uid == 0 || *uid > UINT32_MAX)
		return NULL;
	return list;
}

/* ---------------------------------------------------------------- LIST */

struct imap_list_ctx {
	GPtrArray *folders;
	char delim;
};

/* Turns a server folder name into a safe relative path: each level
 * decoded from modified UTF-7, '/' inside a level shown as U+2215, empty,
 * "." and ".." levels refused (NULL). */
static char *imap_folder_path(const char *wire, char delim)
{
	char *decoded = imap_utf7_decode(wire);
	GString *path;
	char **levels;
	char sep[2] = { delim, 0 };
	char *result = NULL;

	if (!decoded) {
		if (!g_utf8_validate(wire, -1, NULL))
			return NULL;
		decoded = g_strdup(wire);  /* servers with UTF8=ACCEPT send UTF-8 */
	}
	if (g_ascii_strcasecmp(decoded, "INBOX") == 0) {
		g_free(decoded);
		return g_strdup("INBOX");
	}
	levels = delim ? g_strsplit(decoded, sep, -1) : g_strsplit(decoded, "\x01", -1);
	path = g_string_new(NULL);
	for (char **l = levels; *l; l++) {
		if (!**l || strcmp(*l, ".") == 0 || strcmp(*l, "..") == 0)
			goto out;
		if (path->len)
			g_string_append_c(path, '/');
		for (const char *p = *l; *p; p++) {
			if (*p == '/')
				g_string_append(path, "\u2215");
			else
				g_string_append_c(path, *p);
		}
	}
	if (path->len && path->len < 4096)
		result = g_strdup(path->str);
out:
	g_string_free(path, TRUE);
	g_strfreev(levels);
	g_free(decoded);
	return result;
}

static void imap_list_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_list_ctx *lc = ctx;
	const struct imap_value *flags, *delim, *name;
	struct mailbox_folder *f;
	char d = 0;
	int noselect = 0;

	if (strcmp(r->keyword, "LIST") != 0 || r->args.count < 3)
		return;
	flags = &r->args.items[0];
	delim = &r->args.items[1];
	name = &r->args.items[2];
	if (flags->type != IMAP_VALUE_LIST || name->type == IMAP_VALUE_NIL ||
	    name->type == IMAP_VALUE_LIST || strlen(name->str) != name->len)
		return;
	if (delim->type == IMAP_VALUE_STRING && delim->len == 1)
		d = delim->str[0];
	for (size_t i = 0; i < flags->count; i++)
		if (imap_value_is_atom(&flags->items[i], "\\Noselect") ||
		    imap_value_is_atom(&flags->items[i], "\\NonExistent"))
			noselect = 1;
	char *path = imap_folder_path(name->str, d);
	if (!path) {
		log_warn("skipping folder with an unusable name: %s", name->str);
		return;
	}
	f = g_new0(struct mailbox_folder, 1);
	f->path = path;
	f->wire_name = g_strdup(name->str);
	f->delim = d;
	f->noselect = noselect;
	if (d && !lc->delim)
		lc->delim = d;
	g_ptr_array_add(lc->folders, f);
}

static enum mf_status imap_list_op(struct imap_conn *c, void *arg)
{
	struct imap_list_ctx *lc = arg;
	return imap_command(c, "LIST \"\" \"*\"", imap_list_untagged, lc);
}

static enum mf_status imap_list_folders(struct mailbox *mb, GPtrArray **out)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_list_ctx lc;
	enum mf_status st;

	lc.folders = g_ptr_array_new();
	lc.delim = 0;
	st = imap_with_conn(d, NULL, imap_list_op, &lc);
	if (st == MF_OK && lc.delim)
		d->delim = lc.delim;
	if (st != MF_OK) {
		mailbox_folders_free(lc.folders);
		return st;
	}
	*out = lc.folders;
	return MF_OK;
}

/* ---------------------------------------------------------------- sync */

static char *imap_flags_string(const struct imap_value *v)
{
	GString *s = g_string_new(NULL);

	if (v && v->type == IMAP_VALUE_LIST)
		for (size_t i = 0; i < v->count; i++) {
			/* \Recent belongs to one session and cannot be stored: not a
			 * property of the message a user could act on. */
			if (v->items[i].type != IMAP_VALUE_ATOM ||
			    imap_value_is_atom(&v->items[i], "\\Recent"))
				continue;
			if (s->len)
				g_string_append_c(s, ' ');
			g_string_append(s, v->items[i].str);
		}
	return g_string_free(s, FALSE);
}

struct imap_sync_ctx {
	const struct mailbox_sync_request *req;
	struct mailbox_sync_result *res;
	uint32_t last_uid;     /* UIDs above this are new */
	int bad;               /* a FETCH lacked what it must hold */
};

static void imap_sync_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_sync_ctx *sc = ctx;
	const struct imap_value *list, *v;
	uint64_t uid, size;

	list = imap_fetch_attributes(r, &uid);
	if (!list)
		return;
	if (uid <= sc->last_uid) {
		struct mailbox_flag_update fu = { (uint32_t)uid, NULL };
		uint32_t u32 = (uint32_t)uid;
		v = imap_fetch_get(list, "FLAGS");
		if (!v)
			return;
		fu.flags = imap_flags_string(v);
		g_array_append_val(sc->res->flag_updates, fu);
		g_array_append_val(sc->res->present, u32);
		return;
	}
	/* "n:*" answers with the highest message even below n: the uid
	 * filter above and the presence of the header data sort that out. */
	const struct imap_value *hdr = imap_fetch_get_prefix(list, "BODY[HEADER", NULL);
	const struct imap_value *idate = imap_fetch_get(list, "INTERNALDATE");
	if (imap_value_number(imap_fetch_get(list, "RFC822.SIZE"), &size) != 0 || !idate ||
	    idate->type != IMAP_VALUE_STRING || !hdr) {
		sc->bad = 1;
		return;
	}
	struct mailbox_message m = { 0 };
	m.uid = (uint32_t)uid;
	m.flags = imap_flags_string(imap_fetch_get(list, "FLAGS"));
	m.size = size;
	m.internaldate = imap_parse_internaldate(idate->str);
	if (m.internaldate < 0)
		m.internaldate = 0;
	if (hdr->type == IMAP_VALUE_STRING) {
		m.headers = g_memdup2(hdr->str, hdr->len + 1);
		m.headers_len = hdr->len;
	} else {
		m.headers = g_strdup("");
	}
	g_array_append_val(sc->res->added, m);
	if (sc->req->on_added)
		sc->req->on_added(sc->req->on_added_ctx, &m);
}

static int imap_uid_cmp(gconstpointer a, gconstpointer b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

struct imap_search_ctx {
	GArray *uids;
};

static void imap_search_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_search_ctx *sc = ctx;
	uint64_t n;

	if (strcmp(r->keyword, "SEARCH") != 0)
		return;
	for (size_t i = 0; i < r->args.count; i++)
		if (imap_value_number(&r->args.items[i], &n) == 0 && n <= UINT32_MAX) {
			uint32_t u = (uint32_t)n;
			g_array_append_val(sc->uids, u);
		}
}

static enum mf_status imap_sync_op(struct imap_conn *c, void *arg)
{
	struct imap_sync_ctx *sc = arg;
	const struct mailbox_sync_request *req = sc->req;
	struct mailbox_sync_result *res = sc->res;
	unsigned tag_old = 0, tag_new = 0;
	enum mf_status st, st2;
	char *cmd;
	/* New mail only, in a folder this connection has open anyway (our
	 * own APPEND or MOVE just went there): no EXAMINE, but a NOOP first,
	 * since a server shows a selected folder's new messages to FETCH
	 * only once it has announced them. */
	int reuse = req->new_only && c->selected && strcmp(c->selected, req->wire_name) == 0 &&
	            c->uidvalidity == req->uidvalidity;

again:
	/* A retry on a fresh connection starts from nothing. */
	mailbox_sync_result_clear(res);
	mailbox_sync_result_init(res);
	st = reuse ? MF_OK : imap_examine(c, req->wire_name, 1);
	if (st != MF_OK)
		return st;
	res->uidvalidity = c->uidvalidity;
	res->uidnext = c->uidnext;
	res->highestmodseq = c->highestmodseq;
	sc->last_uid = req->last_uid;
	if (req->uidvalidity != c->uidvalidity) {
		res->reset = req->uidvalidity != 0 || req->last_uid != 0;
		sc->last_uid = 0;
	}
	if (c->exists == 0 && !reuse) {
		res->present_valid = 1;  /* all gone, if there were any */
		return MF_OK;
	}
	/* With CONDSTORE, only flags changed since the cached HIGHESTMODSEQ
	 * are asked for, and the UIDs only when the count says some went. */
	int condstore = (c->caps & IMAP_CAP_CONDSTORE) && req->highestmodseq && c->highestmodseq &&
	                !res->reset && !reuse;
	/* Awaited before the FETCH: Dovecot runs pipelined commands side by
	 * side, and a FETCH sent with the NOOP may not see what it announces. */
	if (reuse) {
		st = imap_command(c, "NOOP", imap_sync_untagged, sc);
		if (st != MF_OK)
			return st;
	}
	/* Both FETCHes go out before either answer is read (pipelining). */
	if (sc->last_uid > 0 && !req->new_only && !condstore) {
		cmd = g_strdup_printf("UID FETCH 1:%u (UID FLAGS)", sc->last_uid);
		tag_old = imap_send(c, cmd);
		g_free(cmd);
		res->present_valid = 1;
	} else if (sc->last_uid > 0 && condstore && c->highestmodseq != req->highestmodseq) {
		cmd = g_strdup_printf("UID FETCH 1:%u (UID FLAGS) (CHANGEDSINCE %" PRIu64 ")",
		                      sc->last_uid, req->highestmodseq);
		tag_old = imap_send(c, cmd);
		g_free(cmd);
	}
	if (reuse || !c->uidnext || c->uidnext > sc->last_uid + 1) {
		cmd = g_strdup_printf("UID FETCH %u:* (UID FLAGS RFC822.SIZE INTERNALDATE "
		                      "BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)])",
		                      sc->last_uid + 1);
		tag_new = imap_send(c, cmd);
		g_free(cmd);
	}
	st = tag_old ? imap_wait(c, tag_old, imap_sync_untagged, sc) : MF_OK;
	st2 = tag_new ? imap_wait(c, tag_new, imap_sync_untagged, sc) : MF_OK;
	if (st == MF_OK)
		st = st2;
	if (st == MF_ERR_REFUSED && reuse) {
		reuse = 0;  /* the folder was emptied meanwhile: ask properly */
		sc->bad = 0;
		tag_old = tag_new = 0;
		goto again;
	}
	if (st == MF_OK && sc->bad)
		st = MF_ERR_PROTOCOL;
	if (st == MF_OK && condstore && sc->last_uid > 0 &&
	    c->exists != req->known_count + res->added->len) {
		/* Some went (or the count cannot be trusted): which are left? */
		struct imap_search_ctx search = { res->present };
		g_array_set_size(res->present, 0);
		cmd = g_strdup_printf("UID SEARCH UID 1:%u", sc->last_uid);
		st = imap_command(c, cmd, imap_search_untagged, &search);
		g_free(cmd);
		res->present_valid = st == MF_OK;
	}
	g_array_sort(res->present, imap_uid_cmp);
	return st;
}

static enum mf_status imap_sync_folder(struct mailbox *mb, const struct mailbox_sync_request *req,
                                       struct mailbox_sync_result *out)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_sync_ctx sc = { .req = req, .res = out };
	enum mf_status st;

	mailbox_sync_result_init(out);
	st = imap_with_conn(d, req->wire_name, imap_sync_op, &sc);
	if (st != MF_OK)
		mailbox_sync_result_clear(out);
	return st;
}

/* ---------------------------------------------------------------- bodies */

struct imap_body_ctx {
	const char *wire_name;
	uint32_t uidvalidity, uid;
	uint64_t size_hint;
	int fd;
	int mark_seen;
	uint64_t end;          /* highest byte written + 1 */
	int got;               /* FETCH responses with our body */
	int full_last;         /* the chunk at the highest offset was full */
	uint64_t last_off;
	enum mf_status err;
};

static void imap_body_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_body_ctx *bc = ctx;
	const struct imap_value *list, *name = NULL, *body;
	uint64_t uid, off = 0;

	list = imap_fetch_attributes(r, &uid);
	if (!list || uid != bc->uid)
		return;
	body = imap_fetch_get_prefix(list, "BODY[]", &name);
	if (!body)
		return;
	if (body->type != IMAP_VALUE_STRING) {
		bc->err = MF_ERR_NOTFOUND;
		return;
	}
	const char *partial = strchr(name->str, '<');
	if (partial)
		off = g_ascii_strtoull(partial + 1, NULL, 10);
	size_t done = 0;
	while (done < body->len) {
		ssize_t n = pwrite(bc->fd, body->str + done, body->len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("cannot write the body cache: %s", g_strerror(errno));
			bc->err = MF_ERR_IO;
			return;
		}
		done += n;
	}
	bc->got++;
	if (off + body->len > bc->end)
		bc->end = off + body->len;
	if (off >= bc->last_off) {
		bc->last_off = off;
		bc->full_last = body->len == IMAP_RANGE_SIZE;
	}
}

static enum mf_status imap_body_op(struct imap_conn *c, void *arg)
{
	struct imap_body_ctx *bc = arg;
	const char *section = bc->mark_seen ? "BODY[]" : "BODY.PEEK[]";
	enum mf_status st;
	char *cmd;

	bc->end = bc->last_off = 0;
	bc->got = bc->full_last = 0;
	bc->err = MF_OK;
	/* BODY[] sets \Seen only in a folder opened with SELECT. */
	if (bc->mark_seen)
		st = imap_select_rw(c, bc->wire_name, bc->uidvalidity);
	else
		st = imap_examine(c, bc->wire_name, 0);
	if (st != MF_OK)
		return st;
	if (c->uidvalidity != bc->uidvalidity)
		return MF_ERR_NOTFOUND;
	if (bc->size_hint <= IMAP_RANGE_SIZE) {
		cmd = g_strdup_printf("UID FETCH %u (UID %s)", bc->uid, section);
		st = imap_command(c, cmd, imap_body_untagged, bc);
		g_free(cmd);
		if (st == MF_OK && bc->err == MF_OK && bc->got == 0)
			st = MF_ERR_NOTFOUND;
		return st != MF_OK ? st : bc->err;
	}
	/* Large: 1 MiB ranges, a few in flight; go on past the announced
	 * size while the last range came back full. */
	uint64_t next = 0;
	unsigned tags[IMAP_RANGES_IN_FLIGHT];
	for (;;) {
		int n = 0;
		uint64_t limit = bc->size_hint > next ? bc->size_hint : next + 1;
		while (n < IMAP_RANGES_IN_FLIGHT && next < limit) {
			cmd = g_strdup_printf("UID FETCH %u (UID %s<%" PRIu64 ".%d>)", bc->uid, section,
			                      next, IMAP_RANGE_SIZE);
			tags[n++] = imap_send(c, cmd);
			g_free(cmd);
			next += IMAP_RANGE_SIZE;
		}
		for (int i = 0; i < n; i++) {
			enum mf_status s = imap_wait(c, tags[i], imap_body_untagged, bc);
			if (st == MF_OK)
				st = s;
		}
		if (st != MF_OK)
			return st;
		if (bc->err != MF_OK)
			return bc->err;
		if (bc->got == 0)
			return MF_ERR_NOTFOUND;
		if (next >= bc->size_hint && !(bc->full_last && bc->last_off + IMAP_RANGE_SIZE == next))
			return MF_OK;
	}
}

static enum mf_status imap_fetch_body(struct mailbox *mb, const char *wire_name,
                                      uint32_t uidvalidity, uint32_t uid,
                                      const char *remote_id, uint64_t size_hint,
                                      int fd, uint64_t *written)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_body_ctx bc = {
		.wire_name = wire_name, .uidvalidity = uidvalidity, .uid = uid,
		.size_hint = size_hint, .fd = fd, .mark_seen = d->cfg->mark_seen,
	};
	enum mf_status st = imap_with_conn(d, wire_name, imap_body_op, &bc);

	if (st == MF_OK) {
		*written = bc.end;
		stats_add(bodies_fetched, 1);
		stats_add(body_bytes_fetched, bc.end);
	}
	return st;
}

/* ---------------------------------------------------------------- writes */

/* Finds the uid of a message that just arrived in folder at or above
 * from_uid, by size and Message-ID: how a copy or an append is confirmed
 * on a server without UIDPLUS. Leaves folder EXAMINEd. */
struct imap_find_ctx {
	uint64_t size;
	const char *message_id;
	uint32_t from_uid;
	uint32_t found;
};

static void imap_find_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_find_ctx *fc = ctx;
	const struct imap_value *list, *hdr;
	uint64_t uid, size;

	list = imap_fetch_attributes(r, &uid);
	if (!list || uid < fc->from_uid ||
	    imap_value_number(imap_fetch_get(list, "RFC822.SIZE"), &size) != 0 || size != fc->size)
		return;
	if (fc->message_id) {
		hdr = imap_fetch_get_prefix(list, "BODY[HEADER", NULL);
		if (!hdr || hdr->type != IMAP_VALUE_STRING ||
		    !g_strstr_len(hdr->str, (gssize)hdr->len, fc->message_id))
			return;
	}
	if (uid > fc->found)
		fc->found = (uint32_t)uid;  /* the newest match is ours */
}

static enum mf_status imap_find_new(struct imap_conn *c, const char *folder, uint32_t from_uid,
                                    uint64_t size, const char *message_id, uint32_t *uid)
{
	struct imap_find_ctx fc = { size, message_id, from_uid ? from_uid : 1, 0 };
	enum mf_status st;
	char *cmd;

	st = imap_examine(c, folder, 1);
	if (st != MF_OK)
		return st;
	if (c->exists == 0)
		return MF_ERR_NOTFOUND;
	cmd = g_strdup_printf("UID FETCH %u:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
	                      fc.from_uid);
	st = imap_command(c, cmd, imap_find_untagged, &fc);
	g_free(cmd);
	if (st != MF_OK)
		return st;
	if (!fc.found)
		return MF_ERR_NOTFOUND;
	*uid = fc.found;
	return MF_OK;
}

/* UIDNEXT of a folder through STATUS (0 when the server does not say). */
struct imap_status_ctx {
	uint64_t uidnext, messages;
};

static void imap_status_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_status_ctx *sc = ctx;
	const struct imap_value *list;

	if (strcmp(r->keyword, "STATUS") != 0 || r->args.count < 2 ||
	    r->args.items[1].type != IMAP_VALUE_LIST)
		return;
	list = &r->args.items[1];
	imap_value_number(imap_fetch_get(list, "UIDNEXT"), &sc->uidnext);
	imap_value_number(imap_fetch_get(list, "MESSAGES"), &sc->messages);
}

static enum mf_status imap_status(struct imap_conn *c, const char *folder,
                                  struct imap_status_ctx *out)
{
	GString *cmd = g_string_new("STATUS ");
	enum mf_status st = imap_append_mailbox(c, cmd, folder);

	out->uidnext = out->messages = 0;
	if (st == MF_OK) {
		g_string_append(cmd, " (MESSAGES UIDNEXT)");
		st = imap_command(c, cmd->str, imap_status_untagged, out);
	}
	g_string_free(cmd, TRUE);
	return st;
}

/* The destination uid from "[COPYUID v src dst]" or "[APPENDUID v uid]". */
static uint32_t imap_code_new_uid(const struct imap_value *code, const char *name)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	uint64_t uid = 0;
	uint32_t result = 0;

	if (code->type != IMAP_VALUE_LIST || code->count < 3 ||
	    !imap_value_is_atom(&code->items[0], name))
		return 0;
	if (strcmp(name, "APPENDUID") == 0) {
		if (imap_value_number(&code->items[2], &uid) == 0 && uid <= UINT32_MAX)
			result = (uint32_t)uid;
	} else if (code->count >= 4 && code->items[3].type == IMAP_VALUE_ATOM &&
	           imap_parse_uid_set(code->items[3].str, &uids, &n, 1) == 0 && n == 1) {
		result = uids[0];
	}
	g_free(uids);
	return result;
}

static void imap_copyuid_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	uint32_t *uid = ctx;
	uint32_t u = imap_code_new_uid(&r->code, "COPYUID");

	if (u)
		*uid = u;
}

/* SELECTs folder for changes and checks that uidvalidity still holds. */
static enum mf_status imap_select_rw(struct imap_conn *c, const char *folder, uint32_t uidvalidity)
{
	enum mf_status st = MF_OK;

	if (!(c->selected && c->selected_rw && strcmp(c->selected, folder) == 0))
		st = imap_select_mode(c, folder, 1);
	if (st == MF_OK && uidvalidity && c->uidvalidity != uidvalidity)
		st = MF_ERR_NOTFOUND;
	return st;
}

/* Expunges uid alone: UID EXPUNGE with UIDPLUS; else a plain EXPUNGE,
 * but only when no other message of the folder is flagged \Deleted. The
 * caller has flagged uid \Deleted and SELECTed the folder. */
static enum mf_status imap_expunge_one(struct imap_conn *c, uint32_t uid)
{
	struct imap_search_ctx sc;
	enum mf_status st;
	char *cmd;

	if (c->caps & IMAP_CAP_UIDPLUS) {
		cmd = g_strdup_printf("UID EXPUNGE %u", uid);
		st = imap_command(c, cmd, NULL, NULL);
		g_free(cmd);
		return st;
	}
	sc.uids = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	st = imap_command(c, "UID SEARCH DELETED", imap_search_untagged, &sc);
	if (st == MF_OK) {
		int only_ours = sc.uids->len == 1 && g_array_index(sc.uids, uint32_t, 0) == uid;
		if (only_ours)
			st = imap_command(c, "EXPUNGE", NULL, NULL);
		else if (sc.uids->len > 0)
			log_warn("%s: the server lacks UIDPLUS and other messages are flagged \\Deleted: "
			         "message %u stays flagged \\Deleted (hidden) rather than expunge theirs",
			         c->selected, uid);
	}
	g_array_free(sc.uids, TRUE);
	return st;
}

static enum mf_status imap_flag_deleted_and_expunge(struct imap_conn *c, const char *folder,
                                                    uint32_t uidvalidity, uint32_t uid)
{
	enum mf_status st = imap_select_rw(c, folder, uidvalidity);
	char *cmd;

	if (st != MF_OK)
		return st;
	cmd = g_strdup_printf("UID STORE %u +FLAGS.SILENT (\\Deleted)", uid);
	st = imap_command(c, cmd, NULL, NULL);
	g_free(cmd);
	if (st == MF_OK)
		st = imap_expunge_one(c, uid);
	return st;
}

/* -- append -- */

struct imap_append_ctx {
	const char *folder;
	int fd;
	uint64_t offset, size;
	int64_t internaldate;
	uint32_t uid;
};

static enum mf_status imap_send_file(struct imap_conn *c, int fd, uint64_t start, uint64_t size)
{
	char buf[65536];
	uint64_t off = 0;

	while (off < size) {
		size_t want = size - off < sizeof buf ? (size_t)(size - off) : sizeof buf;
		ssize_t n = pread(fd, buf, want, (off_t)(start + off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return MF_ERR_IO;  /* the local file shrank: never send a short literal */
		if (net_send(c->net, buf, (size_t)n) != MF_OK) {
			c->broken = 1;
			return MF_ERR_IO;
		}
		off += (uint64_t)n;
	}
	return MF_OK;
}

static enum mf_status imap_append_op(struct imap_conn *c, void *arg)
{
	struct imap_append_ctx *ac = arg;
	struct imap_response final = { 0 };
	GString *cmd = g_string_new("APPEND ");
	int plus = (c->caps & IMAP_CAP_LITERAL_PLUS) != 0, cont = 0;
	enum mf_status st;
	unsigned tag;

	ac->uid = 0;
	st = imap_append_mailbox(c, cmd, ac->folder);
	if (st != MF_OK)
		goto out;
	if (ac->internaldate != MAILBOX_NO_DATE) {
		GDateTime *dt = g_date_time_new_from_unix_utc(ac->internaldate);
		if (dt) {
			char *d = g_date_time_format(dt, " \"%d-%b-%Y %H:%M:%S +0000\"");
			g_string_append(cmd, d);
			g_free(d);
			g_date_time_unref(dt);
		}
	}
	g_string_append_printf(cmd, " {%" PRIu64 "%s}", ac->size, plus ? "+" : "");
	tag = imap_send(c, cmd->str);
	if (!plus) {
		st = imap_wait_full(c, tag, NULL, NULL, &final, &cont);
		if (st != MF_OK || !cont)  /* refused before the data was sent */
			goto done;
	}
	st = imap_send_file(c, ac->fd, ac->offset, ac->size);
	if (st == MF_OK && net_send(c->net, "\r\n", 2) != MF_OK) {
		c->broken = 1;
		st = MF_ERR_IO;
	}
	if (st != MF_OK) {
		c->broken = 1;  /* half a literal went out: the connection is lost */
		goto out;
	}
	st = imap_wait_full(c, tag, NULL, NULL, &final, NULL);
done:
	/* Without UIDPLUS the caller finds the new message itself. */
	if (st == MF_OK)
		ac->uid = imap_code_new_uid(&final.code, "APPENDUID");
	if (st != MF_OK && final.text)
		log_warn("APPEND to %s refused: %s", ac->folder, final.text);
out:
	imap_response_free(&final);
	g_string_free(cmd, TRUE);
	return st;
}

static enum mf_status imap_append(struct mailbox *mb, const char *wire_name, int fd,
                                  uint64_t offset, uint64_t size, int64_t internaldate,
                                  uint32_t *uid_out)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_append_ctx ac = { wire_name, fd, offset, size, internaldate, 0 };
	struct imap_conn *c;
	enum mf_status st;

	/* Not retried: a lost answer could hide an APPEND that took place. */
	st = imap_acquire(d, wire_name, &c);
	if (st != MF_OK)
		return st;
	st = imap_append_op(c, &ac);
	imap_release(d, c);
	*uid_out = ac.uid;
	return st;
}

/* -- move -- */

struct imap_move_ctx {
	const char *src, *dst;
	uint32_t uidvalidity, uid;
	uint64_t size;
	const char *message_id;
	uint32_t dst_uid;
	int copied;        /* the copy is confirmed: only the removal is left */
	int seen_gone;     /* a FETCH found no such uid in src any more */
};

static enum mf_status imap_move_op(struct imap_conn *c, void *arg)
{
	struct imap_move_ctx *mc = arg;
	struct imap_status_ctx before = { 0 };
	struct imap_response final = { 0 };
	GString *cmd;
	enum mf_status st;

	if (mc->copied)
		return imap_flag_deleted_and_expunge(c, mc->src, mc->uidvalidity, mc->uid);
	if (!(c->caps & IMAP_CAP_UIDPLUS)) {
		st = imap_status(c, mc->dst, &before);
		if (st != MF_OK)
			return st;
	}
	st = imap_select_rw(c, mc->src, mc->uidvalidity);
	if (st != MF_OK)
		return st;
	cmd = g_string_new(NULL);
	g_string_printf(cmd, "UID %s %u ", (c->caps & IMAP_CAP_MOVE) ? "MOVE" : "COPY", mc->uid);
	st = imap_append_mailbox(c, cmd, mc->dst);
	if (st == MF_OK)
		st = imap_wait_full(c, imap_send(c, cmd->str), imap_copyuid_untagged, &mc->dst_uid,
		                    &final, NULL);
	g_string_free(cmd, TRUE);
	if (st == MF_OK && !mc->dst_uid)
		mc->dst_uid = imap_code_new_uid(&final.code, "COPYUID");
	imap_response_free(&final);
	if (st != MF_OK)
		return st;
	if (c->caps & IMAP_CAP_MOVE) {
		mc->copied = 1;
		return MF_OK;  /* MOVE is one atomic step on the server */
	}
	/* COPY said OK; without COPYUID, see the copy with our own eyes
	 * before anything happens to the original. */
	if (!mc->dst_uid) {
		st = imap_find_new(c, mc->dst, (uint32_t)before.uidnext, mc->size, mc->message_id,
		                   &mc->dst_uid);
		if (st == MF_ERR_NOTFOUND) {
			log_error("the copy of message %u in %s cannot be found: the original stays",
			          mc->uid, mc->dst);
			return MF_ERR_IO;
		}
		if (st != MF_OK)
			return st;
	}
	mc->copied = 1;
	return imap_flag_deleted_and_expunge(c, mc->src, mc->uidvalidity, mc->uid);
}

/* Is uid still in folder? For telling the truth after a lost answer. */
struct imap_exists_ctx {
	uint32_t uid;
	int found;
	int deleted;
};

static void imap_exists_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_exists_ctx *ec = ctx;
	const struct imap_value *list, *flags;
	uint64_t uid;

	list = imap_fetch_attributes(r, &uid);
	if (!list || uid != ec->uid)
		return;
	ec->found = 1;
	flags = imap_fetch_get(list, "FLAGS");
	for (size_t i = 0; flags && flags->type == IMAP_VALUE_LIST && i < flags->count; i++)
		if (imap_value_is_atom(&flags->items[i], "\\Deleted"))
			ec->deleted = 1;
}

static enum mf_status imap_message_state_op(struct imap_conn *c, void *arg)
{
	struct imap_move_ctx *mc = arg;
	struct imap_exists_ctx ec = { mc->uid, 0, 0 };
	enum mf_status st = imap_examine(c, mc->src, 1);
	char *cmd;

	if (st != MF_OK)
		return st;
	if (c->uidvalidity != mc->uidvalidity)
		return MF_ERR_NOTFOUND;
	cmd = g_strdup_printf("UID FETCH %u (UID FLAGS)", mc->uid);
	st = imap_command(c, cmd, imap_exists_untagged, &ec);
	g_free(cmd);
	if (st == MF_OK && !ec.found)
		mc->seen_gone = 1;
	return st;
}

static enum mf_status imap_move(struct mailbox *mb, const char *src_wire, uint32_t uidvalidity,
                                uint32_t uid, uint64_t size, const char *message_id,
                                const char *dst_wire, uint32_t *dst_uid)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_move_ctx mc = { src_wire, dst_wire, uidvalidity, uid, size, message_id, 0, 0, 0 };
	struct imap_conn *c;
	enum mf_status st;

	st = imap_acquire(d, src_wire, &c);
	if (st != MF_OK)
		return st;
	st = imap_move_op(c, &mc);
	imap_release(d, c);
	if ((st == MF_ERR_IO || st == MF_ERR_TIMEOUT) && mc.copied) {
		/* The copy is safe in dst; finish removing the original on a
		 * new connection (flagging and expunging twice is harmless). */
		log_warn("connection lost while removing message %u from %s: retrying", uid, src_wire);
		st = imap_with_conn(d, src_wire, imap_move_op, &mc);
	} else if ((st == MF_ERR_IO || st == MF_ERR_TIMEOUT) && !mc.copied) {
		/* The answer to MOVE/COPY was lost. A MOVE that took place has
		 * taken the original away: say so truthfully. */
		if (imap_with_conn(d, src_wire, imap_message_state_op, &mc) == MF_OK && mc.seen_gone) {
			log_warn("the answer to moving message %u was lost, but it has left %s: moved",
			         uid, src_wire);
			st = MF_OK;
		}
	}
	*dst_uid = mc.dst_uid;
	return st;
}

/* -- expunge, flags -- */

struct imap_msg_ctx {
	const char *folder;
	uint32_t uidvalidity, uid;
	const char *flags;
};

static enum mf_status imap_expunge_op(struct imap_conn *c, void *arg)
{
	struct imap_msg_ctx *mc = arg;
	return imap_flag_deleted_and_expunge(c, mc->folder, mc->uidvalidity, mc->uid);
}

static enum mf_status imap_expunge(struct mailbox *mb, const char *wire_name,
                                   uint32_t uidvalidity, uint32_t uid)
{
	struct imap_msg_ctx mc = { wire_name, uidvalidity, uid, NULL };
	return imap_with_conn((struct imap_driver *)mb, wire_name, imap_expunge_op, &mc);
}

/* 1 when flags is a space-separated list of IMAP flag atoms: nothing in
 * it can close the list or start another command. */
static int imap_flags_valid(const char *flags)
{
	char **words = g_strsplit(flags, " ", -1);
	int ok = 1;

	for (char **w = words; *w && ok; w++) {
		const char *p = *w;
		if (!*p)
			continue;
		if (*p == '\\')
			p++;
		if (!*p || g_ascii_strcasecmp(*w, "\\Recent") == 0)
			ok = 0;
		for (; *p && ok; p++)
			if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
			    strchr("(){%*\"\\]", *p))
				ok = 0;
	}
	g_strfreev(words);
	return ok;
}

static enum mf_status imap_set_flags_op(struct imap_conn *c, void *arg)
{
	struct imap_msg_ctx *mc = arg;
	enum mf_status st = imap_select_rw(c, mc->folder, mc->uidvalidity);
	char *cmd, *flags;

	if (st != MF_OK)
		return st;
	flags = g_strstrip(g_strdup(mc->flags));
	cmd = g_strdup_printf("UID STORE %u FLAGS.SILENT (%s)", mc->uid, flags);
	st = imap_command(c, cmd, NULL, NULL);
	g_free(cmd);
	g_free(flags);
	return st;
}

static enum mf_status imap_set_flags(struct mailbox *mb, const char *wire_name,
                                     uint32_t uidvalidity, uint32_t uid, const char *flags)
{
	struct imap_msg_ctx mc = { wire_name, uidvalidity, uid, flags };

	if (!imap_flags_valid(flags))
		return MF_ERR_INVAL;
	return imap_with_conn((struct imap_driver *)mb, wire_name, imap_set_flags_op, &mc);
}

/* -- folders -- */

/* "a/b" -> the server's name: each level in modified UTF-7 (U+2215 back
 * to '/'), joined by the delimiter. NULL when a level holds the
 * delimiter itself or the name is unusable. */
static char *imap_wire_name(const struct imap_driver *d, const char *path)
{
	char delim = d->delim ? d->delim : '/';
	char **levels = g_strsplit(path, "/", -1);
	GString *wire = g_string_new(NULL);
	char *result = NULL;

	for (char **l = levels; *l; l++) {
		char *level, *enc;
		if (!**l || strcmp(*l, ".") == 0 || strcmp(*l, "..") == 0)
			goto out;
		char **parts = g_strsplit(*l, "\u2215", -1);
		level = g_strjoinv("/", parts);
		g_strfreev(parts);
		if (strchr(level, delim) || strchr(level, '\r') || strchr(level, '\n')) {
			g_free(level);
			goto out;
		}
		enc = imap_utf7_encode(level);
		g_free(level);
		if (!enc)
			goto out;
		if (wire->len)
			g_string_append_c(wire, delim);
		g_string_append(wire, enc);
		g_free(enc);
	}
	if (g_ascii_strcasecmp(wire->str, "INBOX") == 0)
		goto out;
	result = g_strdup(wire->str);
out:
	g_strfreev(levels);
	g_string_free(wire, TRUE);
	return result;
}

struct imap_folder_ctx {
	const char *verb;
	const char *a, *b;
};

static enum mf_status imap_folder_op(struct imap_conn *c, void *arg)
{
	struct imap_folder_ctx *fc = arg;
	GString *cmd = g_string_new(fc->verb);
	enum mf_status st;

	if (strcmp(fc->verb, "DELETE") == 0) {
		struct imap_status_ctx sc;
		st = imap_status(c, fc->a, &sc);
		if (st == MF_OK && sc.messages > 0)
			st = MF_ERR_NOTEMPTY;
		if (st != MF_OK)
			goto out;
		/* Not while selected: some servers refuse, all must forget it. */
		if (c->selected && strcmp(c->selected, fc->a) == 0) {
			st = imap_command(c, (c->caps & IMAP_CAP_UIDPLUS) ? "UNSELECT" : "CLOSE", NULL, NULL);
			g_clear_pointer(&c->selected, g_free);
			if (st != MF_OK)
				goto out;
		}
	}
	g_string_append_c(cmd, ' ');
	st = imap_append_mailbox(c, cmd, fc->a);
	if (st == MF_OK && fc->b) {
		g_string_append_c(cmd, ' ');
		st = imap_append_mailbox(c, cmd, fc->b);
	}
	if (st == MF_OK)
		st = imap_command(c, cmd->str, NULL, NULL);
	if (st == MF_OK && fc->b)
		g_clear_pointer(&c->selected, g_free);
out:
	g_string_free(cmd, TRUE);
	return st;
}

/* CREATE new_path, or RENAME old_wire to it: both name a folder by a
 * path that must become a server name first. */
static enum mf_status imap_folder_to_path(struct mailbox *mb, const char *old_wire,
                                          const char *new_path)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	char *wire = imap_wire_name(d, new_path);
	struct imap_folder_ctx fc = old_wire ? (struct imap_folder_ctx){ "RENAME", old_wire, wire }
	                                     : (struct imap_folder_ctx){ "CREATE", wire, NULL };
	enum mf_status st;

	if (!wire)
		return MF_ERR_INVAL;
	st = imap_with_conn(d, NULL, imap_folder_op, &fc);
	g_free(wire);
	return st;
}

static enum mf_status imap_create_folder(struct mailbox *mb, const char *path)
{
	return imap_folder_to_path(mb, NULL, path);
}

static enum mf_status imap_delete_folder(struct mailbox *mb, const char *wire_name)
{
	struct imap_folder_ctx fc = { "DELETE", wire_name, NULL };
	return imap_with_conn((struct imap_driver *)mb, NULL, imap_folder_op, &fc);
}

static enum mf_status imap_rename_folder(struct mailbox *mb, const char *old_wire,
                                         const char *new_path)
{
	return imap_folder_to_path(mb, old_wire, new_path);
}

/* -- quota -- */

struct imap_quota_ctx {
	uint64_t used, limit;
	int found;
};

static void imap_quota_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_quota_ctx *qc = ctx;
	const struct imap_value *list;
	uint64_t used, limit;

	if (strcmp(r->keyword, "QUOTA") != 0 || r->args.count < 2 ||
	    r->args.items[1].type != IMAP_VALUE_LIST)
		return;
	list = &r->args.items[1];
	for (size_t i = 0; i + 2 < list->count; i += 3) {
		if (imap_value_is_atom(&list->items[i], "STORAGE") &&
		    imap_value_number(&list->items[i + 1], &used) == 0 &&
		    imap_value_number(&list->items[i + 2], &limit) == 0) {
			qc->used = used * 1024;  /* STORAGE counts KiB (RFC 9208) */
			qc->limit = limit * 1024;
			qc->found = 1;
		}
	}
}

static enum mf_status imap_quota_op(struct imap_conn *c, void *arg)
{
	if (!(c->caps & IMAP_CAP_QUOTA))
		return MF_ERR_NOTFOUND;
	return imap_command(c, "GETQUOTAROOT INBOX", imap_quota_untagged, arg);
}

static enum mf_status imap_quota(struct mailbox *mb, uint64_t *used, uint64_t *limit)
{
	struct imap_quota_ctx qc = { 0 };
	enum mf_status st = imap_with_conn((struct imap_driver *)mb, NULL, imap_quota_op, &qc);

	if (st == MF_OK && !qc.found)
		st = MF_ERR_NOTFOUND;
	*used = qc.used;
	*limit = qc.limit;
	return st;
}

/* -- read-ahead: several small bodies in one UID FETCH -- */

struct imap_bodies_ctx {
	const char *wire_name;
	uint32_t uidvalidity;
	struct mailbox_body_request *reqs;
	size_t n;
	GHashTable *by_uid;    /* uid -> request */
};

static void imap_bodies_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_bodies_ctx *bc = ctx;
	const struct imap_value *list, *body;
	struct mailbox_body_request *req;
	uint64_t uid;
	size_t done = 0;

	list = imap_fetch_attributes(r, &uid);
	if (!list)
		return;
	req = g_hash_table_lookup(bc->by_uid, GUINT_TO_POINTER((guint)uid));
	body = imap_fetch_get(list, "BODY[]");
	if (!req || !body || body->type != IMAP_VALUE_STRING)
		return;
	while (done < body->len) {
		ssize_t w = pwrite(req->fd, body->str + done, body->len - done, (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			req->status = MF_ERR_IO;
			return;
		}
		done += (size_t)w;
	}
	req->written = body->len;
	req->status = MF_OK;
}

static enum mf_status imap_bodies_op(struct imap_conn *c, void *arg)
{
	struct imap_bodies_ctx *bc = arg;
	GString *cmd = g_string_new("UID FETCH ");
	enum mf_status st;

	for (size_t i = 0; i < bc->n; i++)
		bc->reqs[i].status = MF_ERR_NOTFOUND;
	st = imap_examine(c, bc->wire_name, 0);
	if (st == MF_OK && c->uidvalidity != bc->uidvalidity)
		st = MF_ERR_NOTFOUND;
	if (st != MF_OK)
		goto out;
	for (size_t i = 0; i < bc->n; i++)
		g_string_append_printf(cmd, "%s%u", i ? "," : "", bc->reqs[i].uid);
	/* Read-ahead never sets \Seen: sync.c does not use it with mark_seen. */
	g_string_append(cmd, " (UID BODY.PEEK[])");
	st = imap_command(c, cmd->str, imap_bodies_untagged, bc);
out:
	g_string_free(cmd, TRUE);
	return st;
}

static enum mf_status imap_fetch_bodies(struct mailbox *mb, const char *wire_name,
                                        uint32_t uidvalidity,
                                        struct mailbox_body_request *reqs, size_t n)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_bodies_ctx bc = {
		.wire_name = wire_name, .uidvalidity = uidvalidity, .reqs = reqs, .n = n,
	};
	enum mf_status st;

	bc.by_uid = g_hash_table_new(g_direct_hash, g_direct_equal);
	for (size_t i = 0; i < n; i++)
		g_hash_table_insert(bc.by_uid, GUINT_TO_POINTER(reqs[i].uid), &reqs[i]);
	st = imap_with_conn(d, wire_name, imap_bodies_op, &bc);
	g_hash_table_destroy(bc.by_uid);
	for (size_t i = 0; st == MF_OK && i < n; i++)
		if (reqs[i].status == MF_OK) {
			stats_add(bodies_fetched, 1);
			stats_add(body_bytes_fetched, reqs[i].written);
		}
	return st;
}

/* ---------------------------------------------------------------- driver */

static void imap_destroy(struct mailbox *mb)
{
	struct imap_driver *d = (struct imap_driver *)mb;

	for (guint i = 0; i < d->idle->len; i++)
		imap_conn_free(g_ptr_array_index(d->idle, i));
	g_ptr_array_free(d->idle, TRUE);
	g_mutex_clear(&d->lock);
	g_cond_clear(&d->cond);
	g_free(d);
}

static const struct mailbox_ops imap_ops = {
	.caps = MAILBOX_CAP_SERVER_UIDS,
	.list_folders = imap_list_folders,
	.sync_folder = imap_sync_folder,
	.fetch_body = imap_fetch_body,
	.fetch_bodies = imap_fetch_bodies,
	.append = imap_append,
	.move = imap_move,
	.expunge = imap_expunge,
	.set_flags = imap_set_flags,
	.create_folder = imap_create_folder,
	.delete_folder = imap_delete_folder,
	.rename_folder = imap_rename_folder,
	.quota = imap_quota,
	.destroy = imap_destroy,
};

enum mf_status imap_mailbox_open(const struct mf_config *cfg, struct mailbox **out, char **err)
{
	struct imap_driver *d = g_new0(struct imap_driver, 1);
	struct imap_conn *c;
	enum mf_status st;

	d->base.ops = &imap_ops;
	d->cfg = cfg;
	g_mutex_init(&d->lock);
	g_cond_init(&d->cond);
	d->idle = g_ptr_array_new();
	st = imap_conn_open(cfg, &c, err);
	if (st != MF_OK) {
		imap_destroy(&d->base);
		return st;
	}
	d->total = 1;
	g_ptr_array_add(d->idle, c);
	*out = &d->base;
	return MF_OK;
}

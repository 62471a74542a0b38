/* imap_read.c — the IMAP driver's read side: LIST, folder sync (FETCH of
 * new messages and changed flags, SEARCH for those left), bodies one at a
 * time (large ones in ranges) and several at once (read-ahead).
 *
 * Must not: change anything on the server but \Seen, and that only
 * when mark_seen. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "imap_int.h"
#include "log.h"
#include "stats.h"
#include "utf7.h"

#define IMAP_RANGE_SIZE (1024 * 1024)  /* bodies above this come in ranges */
#define IMAP_RANGES_IN_FLIGHT 4
#define IMAP_BODY_SLACK ((uint64_t)64 * 1024)

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

enum mf_status imap_list_folders(struct mailbox *mb, GPtrArray **out)
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
	int selecting;         /* in the EXAMINE: new messages come later, whole */
};

static void imap_sync_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_sync_ctx *sc = ctx;
	const struct imap_value *list, *v;
	const char *set;
	uint64_t uid, size;
	int earlier;

	/* QRESYNC: gone, whether in answer to the EXAMINE or since. */
	set = imap_vanished_set(r, &earlier);
	if (set) {
		if (imap_uid_ranges(set, sc->last_uid, sc->res->vanished) < 0)
			sc->bad = 1;
		return;
	}
	list = imap_fetch_attributes(r, &uid);
	if (!list || (sc->selecting && uid > sc->last_uid))
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
		sc->req->on_added(sc->req->on_added_ctx,
		                  &g_array_index(sc->res->added, struct mailbox_message,
		                                 sc->res->added->len - 1));
}

static int imap_uid_cmp(gconstpointer a, gconstpointer b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

void imap_search_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
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

/* The FETCH of what a listing shows of the messages from UID from on. */
static char *imap_sync_fetch_new(uint32_t from)
{
	return g_strdup_printf("UID FETCH %u:* (UID FLAGS RFC822.SIZE INTERNALDATE "
	                       "BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)])", from);
}

static enum mf_status imap_sync_op(struct imap_conn *c, void *arg)
{
	struct imap_sync_ctx *sc = arg;
	const struct mailbox_sync_request *req = sc->req;
	struct mailbox_sync_result *res = sc->res;
	unsigned tag_old = 0, tag_new = 0, tag_first = 0;
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
	if (!reuse) {
		/* QRESYNC where offered: what vanished and what changed come
		 * with the EXAMINE's answer. A folder never listed: the FETCH
		 * of all it holds goes out with the EXAMINE, one round trip for
		 * both (the FETCH asks nothing the answer could change). */
		char *first = !req->uidvalidity && !req->last_uid && !req->new_only ?
		              imap_sync_fetch_new(1) : NULL;
		tag_first = 0;
		const struct imap_qresync q = {
			req->new_only ? 0 : req->uidvalidity, req->highestmodseq, req->last_uid,
			imap_sync_untagged, sc, first, &tag_first,
		};
		sc->last_uid = req->last_uid;
		sc->selecting = 1;
		st = imap_examine_qresync(c, req->wire_name, &q);
		sc->selecting = 0;
		g_free(first);
		if (st != MF_OK) {
			if (tag_first)
				imap_wait(c, tag_first, NULL, NULL);  /* its NO: in step again */
			return st;
		}
	}
	res->uidvalidity = c->uidvalidity;
	res->uidnext = c->uidnext;
	res->highestmodseq = c->highestmodseq;
	sc->last_uid = req->last_uid;
	if (req->uidvalidity != c->uidvalidity) {
		res->reset = req->uidvalidity != 0 || req->last_uid != 0;
		sc->last_uid = 0;
		/* The server ignores a state of other UIDs: none should have come. */
		g_array_set_size(res->vanished, 0);
		for (guint i = 0; i < res->flag_updates->len; i++)
			g_free(g_array_index(res->flag_updates, struct mailbox_flag_update, i).flags);
		g_array_set_size(res->flag_updates, 0);
		g_array_set_size(res->present, 0);
	}
	if (c->exists == 0 && !reuse) {
		res->present_valid = 1;  /* all gone, if there were any */
		if (tag_first)
			imap_wait(c, tag_first, NULL, NULL);  /* nothing, or a NO for 1:* */
		return c->broken ? MF_ERR_IO : MF_OK;
	}
	/* With CONDSTORE, only flags changed since the cached HIGHESTMODSEQ
	 * are asked for, and the UIDs only when the count says some went. */
	int condstore = (c->caps & IMAP_CAP_CONDSTORE) && req->highestmodseq && c->highestmodseq &&
	                !res->reset && !reuse;
	/* With QRESYNC the EXAMINE said it all: no CHANGEDSINCE, no SEARCH. */
	int qresync = condstore && c->selected_qresync;
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
	} else if (sc->last_uid > 0 && condstore && !qresync &&
	           c->highestmodseq != req->highestmodseq) {
		cmd = g_strdup_printf("UID FETCH 1:%u (UID FLAGS) (CHANGEDSINCE %" PRIu64 ")",
		                      sc->last_uid, req->highestmodseq);
		tag_old = imap_send(c, cmd);
		g_free(cmd);
	}
	if (tag_first) {
		tag_new = tag_first;  /* sent with the EXAMINE */
	} else if (reuse || !c->uidnext || c->uidnext > sc->last_uid + 1) {
		cmd = imap_sync_fetch_new(sc->last_uid + 1);
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
	if (st == MF_OK && condstore && !qresync && sc->last_uid > 0 &&
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
	res->exists = c->exists;
	res->exists_valid = st == MF_OK && !req->new_only;
	return st;
}

enum mf_status imap_sync_folder(struct mailbox *mb, const struct mailbox_sync_request *req,
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

/* A body may be this much longer than its RFC822.SIZE (servers count
 * line ends differently); beyond, it is an error, not a disk filler. */
uint64_t imap_body_limit(uint64_t size)
{
	return size + IMAP_BODY_SLACK + size / 16;
}

/* Writes a streamed literal's bytes at their place in s->fd. */
enum mf_status imap_streamed_write(struct imap_streamed *s, const char *bytes, size_t len)
{
	while (len > 0) {
		if (s->fd < 0) {  /* discarded */
			s->written += len;
			return MF_OK;
		}
		ssize_t n = pwrite(s->fd, bytes, len, (off_t)(s->offset + s->written));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("cannot write the body cache: %s", g_strerror(errno));
			return MF_ERR_IO;
		}
		bytes += n;
		len -= (size_t)n;
		s->written += (uint64_t)n;
	}
	return MF_OK;
}

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
	uint64_t range;        /* the length each range asks for; 0: whole */
	int foreign;           /* bodies of UIDs never asked for came */
	struct imap_streamed streamed;
	enum mf_status err;
};

static enum imap_sink_choice imap_body_literal(void *ctx, const char *head, size_t head_len,
                                               uint64_t n)
{
	struct imap_body_ctx *bc = ctx;
	uint64_t off, uid;

	if (!imap_sink_head_body(head, head_len, &off, &uid))
		return IMAP_SINK_BUFFER;  /* another attribute: bounded as any response */
	if (bc->streamed.active) {
		log_error("IMAP server sent a second body in one FETCH response");
		return IMAP_SINK_FAIL;
	}
	bc->streamed = (struct imap_streamed){ .active = 1, .offset = off, .size = n,
	                                       .uid = uid, .fd = bc->fd };
	if (uid && uid != bc->uid) {
		bc->streamed.fd = -1;  /* not ours: counted, not kept */
		return IMAP_SINK_TAKE;
	}
	if ((bc->range && n > bc->range) || off > imap_body_limit(bc->size_hint) ||
	    n > imap_body_limit(bc->size_hint) - off) {
		log_error("IMAP server sends %" PRIu64 " bytes at offset %" PRIu64 " of message %u, "
		          "whose RFC822.SIZE is %" PRIu64 ": refused", n, off, bc->uid, bc->size_hint);
		return IMAP_SINK_FAIL;
	}
	return IMAP_SINK_TAKE;
}

static enum mf_status imap_body_data(void *ctx, const char *bytes, size_t len)
{
	struct imap_body_ctx *bc = ctx;
	return imap_streamed_write(&bc->streamed, bytes, len);
}

static void imap_body_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_body_ctx *bc = ctx;
	const struct imap_value *list, *name = NULL, *body;
	uint64_t uid, off = 0, len;
	struct imap_streamed streamed = bc->streamed;

	bc->streamed.active = 0;
	list = imap_fetch_attributes(r, &uid);
	if (!list)
		return;
	body = imap_fetch_get_prefix(list, "BODY[]", &name);
	if (!body)
		return;
	if (uid != bc->uid) {
		bc->foreign++;
		if (streamed.active && streamed.fd >= 0) {
			/* Streamed into our file before its UID showed. */
			log_error("IMAP server sent the body of UID %" PRIu64 " for UID %u", uid, bc->uid);
			bc->err = MF_ERR_PROTOCOL;
		}
		return;
	}
	if (body->type != IMAP_VALUE_STRING) {
		bc->err = MF_ERR_NOTFOUND;
		return;
	}
	const char *partial = strchr(name->str, '<');
	if (partial)
		off = g_ascii_strtoull(partial + 1, NULL, 10);
	if (streamed.active) {
		if (streamed.offset != off || streamed.written != streamed.size) {
			bc->err = MF_ERR_PROTOCOL;
			return;
		}
		len = streamed.size;
	} else {
		/* A body sent as a quoted string: small, buffered. */
		struct imap_streamed s = { .offset = off, .fd = bc->fd };
		len = body->len;
		if (off + len > imap_body_limit(bc->size_hint) || (bc->range && len > bc->range)) {
			bc->err = MF_ERR_PROTOCOL;
			return;
		}
		enum mf_status st = imap_streamed_write(&s, body->str, body->len);
		if (st != MF_OK) {
			bc->err = st;
			return;
		}
	}
	bc->got++;
	if (off + len > bc->end)
		bc->end = off + len;
	if (off >= bc->last_off) {
		bc->last_off = off;
		bc->full_last = len == IMAP_RANGE_SIZE;
	}
}

/* Waits for tag with the body sink in place. */
static enum mf_status imap_body_wait(struct imap_conn *c, struct imap_body_ctx *bc, unsigned tag)
{
	const struct imap_sink sink = { imap_body_literal, imap_body_data, bc };
	enum mf_status st;

	c->sink = &sink;
	st = imap_wait(c, tag, imap_body_untagged, bc);
	c->sink = NULL;
	if (st == MF_OK && bc->streamed.active)
		st = MF_ERR_PROTOCOL;  /* a body literal in no FETCH of a UID */
	return st;
}

/* What a body fetch that ended well on the wire still has to say. */
static enum mf_status imap_body_outcome(struct imap_body_ctx *bc)
{
	if (bc->err != MF_OK)
		return bc->err;
	if (bc->got == 0 && bc->foreign) {
		log_error("IMAP server answered with other messages' bodies, not UID %u's", bc->uid);
		return MF_ERR_PROTOCOL;
	}
	return bc->got == 0 ? MF_ERR_NOTFOUND : MF_OK;
}

static enum mf_status imap_body_op(struct imap_conn *c, void *arg)
{
	struct imap_body_ctx *bc = arg;
	const char *section = bc->mark_seen ? "BODY[]" : "BODY.PEEK[]";
	enum mf_status st;
	char *cmd;

	bc->end = bc->last_off = 0;
	bc->got = bc->full_last = bc->foreign = 0;
	bc->streamed.active = 0;
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
		bc->range = 0;
		cmd = g_strdup_printf("UID FETCH %u (UID %s)", bc->uid, section);
		st = imap_body_wait(c, bc, imap_send(c, cmd));
		g_free(cmd);
		return st != MF_OK ? st : imap_body_outcome(bc);
	}
	/* Large: 1 MiB ranges, a few in flight; go on past the announced
	 * size while the last range came back full, but not past the limit
	 * (a server answering every range in full would fill the disk). */
	uint64_t next = 0, limit = imap_body_limit(bc->size_hint);
	unsigned tags[IMAP_RANGES_IN_FLIGHT];
	bc->range = IMAP_RANGE_SIZE;
	for (;;) {
		int n = 0;
		uint64_t until = bc->size_hint > next ? bc->size_hint : next + 1;
		if (next >= limit) {
			log_error("IMAP server sends message %u past %" PRIu64 " bytes, its RFC822.SIZE "
			          "being %" PRIu64 ": refused", bc->uid, limit, bc->size_hint);
			return MF_ERR_PROTOCOL;
		}
		/* Each batch of ranges is a step that must end within the
		 * timeout; a body arriving at a steady pace is not a hang. */
		net_set_deadline(c->net, net_deadline_from_now(c->net));
		while (n < IMAP_RANGES_IN_FLIGHT && next < until && next < limit) {
			cmd = g_strdup_printf("UID FETCH %u (UID %s<%" PRIu64 ".%d>)", bc->uid, section,
			                      next, IMAP_RANGE_SIZE);
			tags[n++] = imap_send(c, cmd);
			g_free(cmd);
			next += IMAP_RANGE_SIZE;
		}
		for (int i = 0; i < n; i++) {
			enum mf_status s = imap_body_wait(c, bc, tags[i]);
			if (st == MF_OK)
				st = s;
		}
		if (st != MF_OK)
			return st;
		st = imap_body_outcome(bc);
		if (st != MF_OK)
			return st;
		if (next >= bc->size_hint && !(bc->full_last && bc->last_off + IMAP_RANGE_SIZE == next))
			return MF_OK;
	}
}

enum mf_status imap_fetch_body(struct mailbox *mb, const char *wire_name,
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

/* -- read-ahead: several small bodies in one UID FETCH -- */

struct imap_bodies_ctx {
	const char *wire_name;
	uint32_t uidvalidity;
	struct mailbox_body_request *reqs;
	size_t n;
	GHashTable *by_uid;    /* uid -> request */
	struct imap_streamed streamed;
	int bad;               /* a body came that was not asked for, or too long */
};

static enum imap_sink_choice imap_bodies_literal(void *ctx, const char *head, size_t head_len,
                                                 uint64_t n)
{
	struct imap_bodies_ctx *bc = ctx;
	struct mailbox_body_request *req;
	uint64_t off, uid;

	if (!imap_sink_head_body(head, head_len, &off, &uid))
		return IMAP_SINK_BUFFER;
	if (bc->streamed.active) {
		log_error("IMAP server sent a second body in one FETCH response");
		return IMAP_SINK_FAIL;
	}
	/* Without the UID first, the body is kept in the response (bounded). */
	if (!uid)
		return IMAP_SINK_BUFFER;
	req = g_hash_table_lookup(bc->by_uid, GUINT_TO_POINTER((guint)uid));
	bc->streamed = (struct imap_streamed){ .active = 1, .offset = off, .size = n, .uid = uid,
	                                       .fd = req ? req->fd : -1 };
	if (req && (off != 0 || n > imap_body_limit(req->size_hint))) {
		log_error("IMAP server sends %" PRIu64 " bytes for message %" PRIu64 ", whose "
		          "RFC822.SIZE is %" PRIu64 ": refused", n, uid, req->size_hint);
		return IMAP_SINK_FAIL;
	}
	return IMAP_SINK_TAKE;
}

static enum mf_status imap_bodies_data(void *ctx, const char *bytes, size_t len)
{
	struct imap_bodies_ctx *bc = ctx;
	return imap_streamed_write(&bc->streamed, bytes, len);
}

static void imap_bodies_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_bodies_ctx *bc = ctx;
	const struct imap_value *list, *body;
	struct mailbox_body_request *req;
	struct imap_streamed streamed = bc->streamed;
	uint64_t uid;

	bc->streamed.active = 0;
	list = imap_fetch_attributes(r, &uid);
	if (!list)
		return;
	req = g_hash_table_lookup(bc->by_uid, GUINT_TO_POINTER((guint)uid));
	body = imap_fetch_get(list, "BODY[]");
	if (!body || body->type != IMAP_VALUE_STRING)
		return;
	if (!req || (streamed.active && streamed.uid != uid)) {
		bc->bad = 1;
		return;
	}
	if (streamed.active) {
		if (streamed.written != streamed.size) {
			req->status = MF_ERR_PROTOCOL;
			return;
		}
		req->written = streamed.size;
		req->status = MF_OK;
		return;
	}
	struct imap_streamed s = { .fd = req->fd };
	if (body->len > imap_body_limit(req->size_hint)) {
		req->status = MF_ERR_PROTOCOL;
		return;
	}
	req->status = imap_streamed_write(&s, body->str, body->len);
	if (req->status == MF_OK)
		req->written = body->len;
}

static enum mf_status imap_bodies_op(struct imap_conn *c, void *arg)
{
	struct imap_bodies_ctx *bc = arg;
	GString *cmd = g_string_new("UID FETCH ");
	enum mf_status st;

	for (size_t i = 0; i < bc->n; i++)
		bc->reqs[i].status = MF_ERR_NOTFOUND;
	bc->bad = 0;
	bc->streamed.active = 0;
	st = imap_examine(c, bc->wire_name, 0);
	if (st == MF_OK && c->uidvalidity != bc->uidvalidity)
		st = MF_ERR_NOTFOUND;
	if (st != MF_OK)
		goto out;
	for (size_t i = 0; i < bc->n; i++)
		g_string_append_printf(cmd, "%s%u", i ? "," : "", bc->reqs[i].uid);
	/* Read-ahead never sets \Seen: sync.c does not use it with mark_seen. */
	g_string_append(cmd, " (UID BODY.PEEK[])");
	const struct imap_sink sink = { imap_bodies_literal, imap_bodies_data, bc };
	c->sink = &sink;
	st = imap_command(c, cmd->str, imap_bodies_untagged, bc);
	c->sink = NULL;
	if (st == MF_OK && (bc->bad || bc->streamed.active)) {
		log_error("IMAP server answered a read-ahead with bodies not asked for");
		st = MF_ERR_PROTOCOL;
	}
out:
	g_string_free(cmd, TRUE);
	return st;
}

enum mf_status imap_fetch_bodies(struct mailbox *mb, const char *wire_name,
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

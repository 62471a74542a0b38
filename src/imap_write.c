/* imap_write.c — the IMAP driver's write side: APPEND, MOVE (or COPY,
 * then \Deleted and EXPUNGE), EXPUNGE of one message, flags, folder
 * CREATE/RENAME/DELETE, and quota.
 *
 * Must not: expunge a message it was not asked to, take an original away
 * before its copy is confirmed, or repeat an APPEND whose answer was
 * lost. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "imap_int.h"
#include "log.h"
#include "utf7.h"

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
	int sent;          /* the whole literal went out: it may have landed */
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
	if (c->appendlimit && ac->size > c->appendlimit) {
		log_warn("APPEND to %s: %" PRIu64 " bytes, the server takes %" PRIu64 " at most",
		         ac->folder, ac->size, c->appendlimit);
		st = MF_ERR_TOOBIG;
		goto out;
	}
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
	ac->sent = 1;
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

struct imap_landed_ctx {
	const char *folder;
	uint32_t after_uid;
	uint64_t size;
	const char *message_id;
	uint32_t uid;
};

static enum mf_status imap_landed_op(struct imap_conn *c, void *arg)
{
	struct imap_landed_ctx *lc = arg;

	return imap_find_new(c, lc->folder, lc->after_uid + 1, lc->size, lc->message_id, &lc->uid);
}

enum mf_status imap_append(struct mailbox *mb, const char *wire_name, int fd,
                           uint64_t offset, uint64_t size, int64_t internaldate,
                           const char *message_id, uint64_t wire_size, uint32_t after_uid,
                           uint32_t *uid_out)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_append_ctx ac = { wire_name, fd, offset, size, internaldate, 0, 0 };
	struct imap_landed_ctx lc = { wire_name, after_uid, wire_size, message_id, 0 };
	enum mf_status st;

	/* Not retried: a lost answer could hide an APPEND that took place. */
	st = imap_with_conn_once(d, wire_name, imap_append_op, &ac);
	if ((st == MF_ERR_IO || st == MF_ERR_TIMEOUT) && ac.sent) {
		/* The message went out and the answer was lost: look for it
		 * before saying anything, so that a second cp adds no copy. */
		if (!message_id) {
			log_warn("the answer to an APPEND to %s was lost, and the message has no "
			         "Message-ID to look for: it may be there", wire_name);
		} else if (imap_with_conn(d, wire_name, imap_landed_op, &lc) == MF_OK) {
			log_warn("the answer to an APPEND to %s was lost, but the message is there "
			         "(uid %u)", wire_name, lc.uid);
			ac.uid = lc.uid;
			st = MF_OK;
		} else {
			log_warn("the answer to an APPEND to %s was lost, and the message is not there",
			         wire_name);
		}
	}
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

enum mf_status imap_move(struct mailbox *mb, const char *src_wire, uint32_t uidvalidity,
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

enum mf_status imap_expunge(struct mailbox *mb, const char *wire_name,
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

enum mf_status imap_set_flags(struct mailbox *mb, const char *wire_name,
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
	int sent;          /* the command went out once: it may have been done */
};

static void imap_listed_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	if (r->kind == IMAP_RESPONSE_UNTAGGED && r->keyword && strcmp(r->keyword, "LIST") == 0)
		(*(int *)ctx)++;
}

/* Whether the server lists a folder of that very (wire) name. */
static enum mf_status imap_folder_listed(struct imap_conn *c, const char *wire, int *listed)
{
	GString *cmd = g_string_new("LIST \"\" ");
	enum mf_status st = imap_append_mailbox(c, cmd, wire);

	*listed = 0;
	if (st == MF_OK)
		st = imap_command(c, cmd->str, imap_listed_untagged, listed);
	g_string_free(cmd, TRUE);
	return st;
}

/* After a lost answer: whether the server already did what fc asks. */
static enum mf_status imap_folder_done(struct imap_conn *c, const struct imap_folder_ctx *fc,
                                       int *done)
{
	int a = 0, b = 0;
	enum mf_status st = imap_folder_listed(c, fc->a, &a);

	if (st == MF_OK && fc->b)
		st = imap_folder_listed(c, fc->b, &b);
	if (strcmp(fc->verb, "CREATE") == 0)
		*done = a > 0;
	else if (strcmp(fc->verb, "DELETE") == 0)
		*done = a == 0;
	else
		*done = a == 0 && b > 0;
	return st;
}

static enum mf_status imap_folder_op(struct imap_conn *c, void *arg)
{
	struct imap_folder_ctx *fc = arg;
	GString *cmd = g_string_new(fc->verb);
	enum mf_status st;
	int done = 0;

	if (fc->sent) {
		/* A retry after a lost connection: sent again blindly, a CREATE
		 * or RENAME the server did would say EEXIST, a DELETE ENOENT. */
		st = imap_folder_done(c, fc, &done);
		if (st != MF_OK || done) {
			if (done)
				log_warn("the answer to %s %s was lost, but the server did it", fc->verb, fc->a);
			goto out;
		}
	}
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
	if (st == MF_OK) {
		fc->sent = 1;
		st = imap_command(c, cmd->str, NULL, NULL);
	}
	if (st == MF_OK && fc->b)
		g_clear_pointer(&c->selected, g_free);
out:
	g_string_free(cmd, TRUE);
	return st;
}

/* Runs a folder command; when its answer was lost, once more on a new
 * connection, which first checks whether the server did it. */
static enum mf_status imap_folder_run(struct imap_driver *d, struct imap_folder_ctx *fc)
{
	enum mf_status st = imap_with_conn(d, NULL, imap_folder_op, fc);

	if ((st == MF_ERR_IO || st == MF_ERR_TIMEOUT) && fc->sent)
		st = imap_with_conn(d, NULL, imap_folder_op, fc);
	return st;
}

/* CREATE new_path, or RENAME old_wire to it: both name a folder by a
 * path that must become a server name first. */
static enum mf_status imap_folder_to_path(struct mailbox *mb, const char *old_wire,
                                          const char *new_path)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	char *wire = imap_wire_name(d, new_path);
	struct imap_folder_ctx fc = old_wire ? (struct imap_folder_ctx){ "RENAME", old_wire, wire, 0 }
	                                     : (struct imap_folder_ctx){ "CREATE", wire, NULL, 0 };
	enum mf_status st;

	if (!wire)
		return MF_ERR_INVAL;
	st = imap_folder_run(d, &fc);
	g_free(wire);
	return st;
}

enum mf_status imap_create_folder(struct mailbox *mb, const char *path)
{
	return imap_folder_to_path(mb, NULL, path);
}

enum mf_status imap_delete_folder(struct mailbox *mb, const char *wire_name)
{
	struct imap_folder_ctx fc = { "DELETE", wire_name, NULL, 0 };
	return imap_folder_run((struct imap_driver *)mb, &fc);
}

enum mf_status imap_rename_folder(struct mailbox *mb, const char *old_wire,
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

enum mf_status imap_quota(struct mailbox *mb, uint64_t *used, uint64_t *limit)
{
	struct imap_quota_ctx qc = { 0 };
	enum mf_status st = imap_with_conn((struct imap_driver *)mb, NULL, imap_quota_op, &qc);

	if (st == MF_OK && !qc.found)
		st = MF_ERR_NOTFOUND;
	*used = qc.used;
	*limit = qc.limit;
	return st;
}

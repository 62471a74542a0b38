/* imap_engine.c — the IMAP command engine: one connection's bytes in and
 * out over net.c, several tagged commands in flight per connection,
 * untagged responses noted (capabilities, EXISTS, UIDVALIDITY...) and
 * handed to the command's caller; SELECT and EXAMINE.
 *
 * Parsing is imap_parse.c's job (pure); this file only moves bytes and
 * interprets parsed responses. Must not: touch SQLite or FUSE, or wait
 * without a bound. */
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "imap_int.h"
#include "log.h"

#define IMAP_RECV_CHUNK ((size_t)64 * 1024)  /* the usual buffer */
#define IMAP_RECV_MIN ((size_t)16 * 1024)    /* room wanted for one recv */
#define IMAP_MAX_RESPONSE_MIB 8
G_STATIC_ASSERT(IMAP_MAX_RESPONSE == (size_t)IMAP_MAX_RESPONSE_MIB * 1024 * 1024);

static void imap_conn_note_capabilities(struct imap_conn *c, const struct imap_value *list)
{
	static const struct { const char *name; unsigned bit; } known[] = {
		{ "LITERAL+", IMAP_CAP_LITERAL_PLUS }, { "LITERAL-", IMAP_CAP_LITERAL_MINUS },
		{ "MOVE", IMAP_CAP_MOVE }, { "UIDPLUS", IMAP_CAP_UIDPLUS },
		{ "CONDSTORE", IMAP_CAP_CONDSTORE }, { "QRESYNC", IMAP_CAP_QRESYNC },
		{ "QUOTA", IMAP_CAP_QUOTA }, { "IDLE", IMAP_CAP_IDLE },
	};
	c->caps = 0;
	c->appendlimit = 0;
	for (size_t i = 0; i < list->count; i++) {
		const struct imap_value *v = &list->items[i];
		for (size_t k = 0; k < G_N_ELEMENTS(known); k++)
			if (imap_value_is_atom(v, known[k].name))
				c->caps |= known[k].bit;
		/* RFC 7889: APPENDLIMIT=n, the largest message it takes. */
		if (v->type == IMAP_VALUE_ATOM && g_ascii_strncasecmp(v->str, "APPENDLIMIT=", 12) == 0)
			c->appendlimit = g_ascii_strtoull(v->str + 12, NULL, 10);
	}
}

int imap_conn_caps_from(struct imap_conn *c, const char *reply)
{
	size_t len = reply ? strlen(reply) : 0, pos = 0;
	int found = 0;

	while (pos < len) {
		struct imap_response r = { 0 };
		size_t consumed = 0;
		if (imap_parse_response(reply + pos, len - pos, &consumed, NULL, &r) != IMAP_PARSE_OK)
			return 0;  /* what the login said is not all understood: ask */
		pos += consumed;
		if (r.kind == IMAP_RESPONSE_UNTAGGED && r.keyword &&
		    strcmp(r.keyword, "CAPABILITY") == 0) {
			imap_conn_note_capabilities(c, &r.args);
			found = 1;
		} else if (r.kind == IMAP_RESPONSE_TAGGED && r.status == IMAP_STATUS_OK &&
		           r.code.type == IMAP_VALUE_LIST && r.code.count >= 2 &&
		           imap_value_is_atom(&r.code.items[0], "CAPABILITY")) {
			struct imap_value rest = r.code;  /* the names after the word */
			rest.items++;
			rest.count--;
			imap_conn_note_capabilities(c, &rest);
			found = 1;
		}
		imap_response_free(&r);
	}
	return found;
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
	} else if (strcmp(r->keyword, "VANISHED") == 0) {
		/* RFC 7162: after ENABLE QRESYNC, what EXPUNGE was; (EARLIER)
		 * answers a re-check and leaves the count alone. */
		int earlier;
		const char *set = imap_vanished_set(r, &earlier);
		int64_t gone = set && !earlier ? imap_uid_ranges(set, 0, NULL) : 0;
		if (gone > 0)
			c->exists = (uint64_t)gone < c->exists ? c->exists - (uint32_t)gone : 0;
	} else if (strcmp(r->keyword, "ENABLED") == 0) {
		for (size_t i = 0; i < r->args.count; i++)
			if (imap_value_is_atom(&r->args.items[i], "QRESYNC"))
				c->qresync = 1;
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

/* Makes room for at least a recv's worth after in_len: moves the unread
 * bytes down, or grows the buffer (never past the response bound, and
 * never by aborting the process when memory is short). */
static enum mf_status imap_make_room(struct imap_conn *c)
{
	size_t cap;
	char *grown;

	if (c->in_cap - c->in_len >= IMAP_RECV_MIN)
		return MF_OK;
	if (c->in_pos > 0) {
		memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
		c->in_len -= c->in_pos;
		c->in_pos = 0;
		if (c->in_cap - c->in_len >= IMAP_RECV_MIN)
			return MF_OK;
	}
	cap = c->in_cap * 2;
	if (cap < IMAP_RECV_CHUNK)
		cap = IMAP_RECV_CHUNK;  /* none yet, or the few KiB a spare's check took */
	if (cap > IMAP_MAX_RESPONSE + IMAP_RECV_CHUNK)
		cap = IMAP_MAX_RESPONSE + IMAP_RECV_CHUNK;
	if (cap - c->in_len < IMAP_RECV_MIN)
		return MF_ERR_PROTOCOL;  /* the caller checked the bound: not here */
	grown = g_try_realloc(c->in, cap);
	if (!grown) {
		log_error("out of memory for an IMAP response of %zu bytes", c->in_len - c->in_pos);
		return MF_ERR_NOMEM;
	}
	c->in = grown;
	c->in_cap = cap;
	return MF_OK;
}

/* A buffer grown for one large response goes back to its usual size. */
static void imap_shrink(struct imap_conn *c)
{
	size_t left = c->in_len - c->in_pos;
	char *smaller;

	if (c->in_cap <= 4 * IMAP_RECV_CHUNK || left > IMAP_RECV_CHUNK / 2)
		return;
	memmove(c->in, c->in + c->in_pos, left);
	c->in_len = left;
	c->in_pos = 0;
	smaller = g_try_realloc(c->in, IMAP_RECV_CHUNK);
	if (smaller) {
		c->in = smaller;
		c->in_cap = IMAP_RECV_CHUNK;
	}
}

static enum mf_status imap_response_refused(struct imap_conn *c, const char *why)
{
	log_error("IMAP response refused: %s; the connection is dropped", why);
	c->broken = 1;
	return MF_ERR_PROTOCOL;
}

/* Reads one whole response into *r: frames it as it arrives (each byte
 * looked at once), hands literals a sink takes to it as they arrive,
 * holds at most IMAP_MAX_RESPONSE of the rest, and parses it once. */
static enum mf_status imap_read_response(struct imap_conn *c, struct imap_response *r)
{
	struct imap_frame frame;
	uint64_t stream_left = 0;
	enum mf_status st;

	imap_frame_init(&frame);
	for (;;) {
		/* Literal bytes a sink took: out of the buffer, to the sink. */
		if (stream_left > 0) {
			size_t at = c->in_pos + frame.scanned, have = c->in_len - at;
			size_t take = stream_left < have ? (size_t)stream_left : have;
			if (take > 0) {
				st = c->sink->data(c->sink->ctx, c->in + at, take);
				if (st != MF_OK) {
					c->broken = 1;  /* the rest of the literal is still due */
					return st;
				}
				memmove(c->in + at, c->in + at + take, have - take);
				c->in_len -= take;
				stream_left -= take;
			}
		}
		while (stream_left == 0) {
			enum imap_frame_event ev = imap_frame_scan(&frame, c->in + c->in_pos,
			                                           c->in_len - c->in_pos);
			if (ev == IMAP_FRAME_MORE)
				break;
			if (ev == IMAP_FRAME_TOO_BIG)
				return imap_response_refused(c, "a line over 1 MiB, a literal over 1 GiB, "
				                                "or too many literals");
			if (ev == IMAP_FRAME_LITERAL) {
				enum imap_sink_choice choice = IMAP_SINK_BUFFER;
				if (c->sink)
					choice = c->sink->literal(c->sink->ctx, c->in + c->in_pos,
					                          frame.announce_at, frame.announced);
				if (choice == IMAP_SINK_FAIL) {
					c->broken = 1;
					return MF_ERR_PROTOCOL;
				}
				if (choice == IMAP_SINK_TAKE) {
					imap_frame_empty_announcement(&frame, c->in + c->in_pos);
					imap_frame_skip_literal(&frame);
					stream_left = frame.announced;
					break;
				}
				if (frame.announced > IMAP_MAX_RESPONSE)
					return imap_response_refused(c, "a literal over the response bound");
				continue;
			}
			/* IMAP_FRAME_COMPLETE: parse it, once. */
			size_t consumed = 0;
			enum imap_parse_result res = imap_parse_response(c->in + c->in_pos, frame.scanned,
			                                                 &consumed, NULL, r);
			if (res == IMAP_PARSE_OK) {
				imap_trace("S:", c->in + c->in_pos, consumed);
				c->in_pos += consumed;
				imap_shrink(c);
				return MF_OK;
			}
			if (consumed == 0 || consumed > frame.scanned)
				consumed = frame.scanned;
			log_error("malformed IMAP response: %.*s", (int)(consumed > 200 ? 200 : consumed),
			          c->in + c->in_pos);
			c->broken = 1;
			return MF_ERR_PROTOCOL;
		}
		if (stream_left > 0 && c->in_pos + frame.scanned < c->in_len)
			continue;  /* more literal bytes are here already */
		if (c->in_len - c->in_pos > IMAP_MAX_RESPONSE)
			return imap_response_refused(c, "over " G_STRINGIFY(IMAP_MAX_RESPONSE_MIB) " MiB");
		st = imap_make_room(c);
		if (st != MF_OK) {
			c->broken = 1;
			return st;
		}
		size_t got = 0;
		st = net_recv(c->net, c->in + c->in_len, c->in_cap - c->in_len, &got);
		if (st != MF_OK) {
			if (st == MF_ERR_TIMEOUT)
				log_warn("the IMAP server did not answer within the timeout: the command fails");
			else if (!c->broken || st != MF_ERR_IO)
				log_warn("IMAP connection lost: %s", mf_status_str(st));
			c->broken = 1;
			return st;
		}
		c->in_len += got;
	}
}

/* For a sink: whether the literal announced after head (an untagged
 * response up to its "{n}") is a FETCH's BODY[] or BODY[]<offset>, with
 * the offset in *offset and the UID in *uid when the response named it
 * before the literal (else 0). */
int imap_sink_head_body(const char *head, size_t head_len, uint64_t *offset, uint64_t *uid)
{
	size_t end = head_len, start;
	const char *fetch, *u;

	*offset = 0;
	*uid = 0;
	while (end > 0 && head[end - 1] == ' ')
		end--;
	start = end;
	while (start > 0 && head[start - 1] != ' ' && head[start - 1] != '(')
		start--;
	if (end - start < 6 || g_ascii_strncasecmp(head + start, "BODY[]", 6) != 0)
		return 0;
	if (end - start > 6) {
		const char *p = head + start + 6;
		if (*p != '<' || head[end - 1] != '>')
			return 0;
		for (p++; p < head + end - 1; p++) {
			if (!g_ascii_isdigit(*p) || *offset > UINT64_MAX / 20)
				return 0;
			*offset = *offset * 10 + (uint64_t)(*p - '0');
		}
	}
	fetch = g_strstr_len(head, (gssize)start, " FETCH (");
	if (head_len < 2 || head[0] != '*' || !fetch)
		return 0;
	/* "UID n" among the attributes before the body. */
	for (u = fetch + 7; u + 4 < head + start; u++) {
		if ((u[-1] == '(' || u[-1] == ' ') && g_ascii_strncasecmp(u, "UID ", 4) == 0) {
			uint64_t n = 0;
			const char *d = u + 4;
			for (; d < head + start && g_ascii_isdigit(*d) && n <= UINT32_MAX; d++)
				n = n * 10 + (uint64_t)(*d - '0');
			if (d > u + 4 && n <= UINT32_MAX && (*d == ' ' || *d == ')'))
				*uid = n;
			break;
		}
	}
	return 1;
}

/* Sends "<tag> <command>\r\n"; command is complete IMAP text (arguments
 * already quoted). Returns the tag number, 0 when the connection failed. */
unsigned imap_send(struct imap_conn *c, const char *command)
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
	c->timed_tag = tag;
	c->timed_at = g_get_monotonic_time();
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

/* The answer to the last command sent: how long it took, the link's
 * round trip and the server's time, is kept at its least. An answer
 * behind others' is late by theirs: the least is the link's. */
static void imap_conn_timed(struct imap_conn *c, const struct imap_response *r)
{
	char want[16];
	gint64 took;

	if (!c->timed_tag)
		return;
	g_snprintf(want, sizeof want, "M%u", c->timed_tag);
	if (strcmp(r->tag, want) != 0)
		return;
	took = g_get_monotonic_time() - c->timed_at;
	if (!c->rtt_us || took < c->rtt_us)
		c->rtt_us = took > 0 ? took : 1;
	c->timed_tag = 0;
}

/* Reads responses until the completion of tag, passing untagged ones to
 * fn (may be NULL). Completions of other tags are remembered for their
 * own wait. Returns the tag's outcome; when final is not NULL it receives
 * the tagged response itself (caller frees; zeroed when the outcome was
 * read earlier or the connection failed). When continuation is not NULL,
 * a "+" ends the wait too, with *continuation set to 1. */
static enum mf_status imap_wait_tag(struct imap_conn *c, unsigned tag,
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
			imap_conn_timed(c, &r);
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

enum mf_status imap_wait_full(struct imap_conn *c, unsigned tag,
                              imap_untagged_fn fn, void *ctx,
                              struct imap_response *final, int *continuation)
{
	enum mf_status st;

	/* Outside an operation (which set its own), the wait is one. */
	if (c->net && !net_get_deadline(c->net)) {
		net_set_deadline(c->net, net_deadline_from_now(c->net));
		st = imap_wait_tag(c, tag, fn, ctx, final, continuation);
		net_set_deadline(c->net, 0);
		return st;
	}
	return imap_wait_tag(c, tag, fn, ctx, final, continuation);
}

enum mf_status imap_wait(struct imap_conn *c, unsigned tag,
                         imap_untagged_fn fn, void *ctx)
{
	return imap_wait_full(c, tag, fn, ctx, NULL, NULL);
}

enum mf_status imap_command(struct imap_conn *c, const char *command,
                            imap_untagged_fn fn, void *ctx)
{
	return imap_wait(c, imap_send(c, command), fn, ctx);
}

/* Appends a mailbox name argument: quoted, or as a LITERAL+ literal when
 * it holds bytes a quoted string cannot. The name can never end the
 * command early or start another. */
enum mf_status imap_append_mailbox(struct imap_conn *c, GString *cmd, const char *name)
{
	if (imap_quote(cmd, name) == 0)
		return MF_OK;
	if (!(c->caps & IMAP_CAP_LITERAL_PLUS) || strchr(name, '\r') || strchr(name, '\n'))
		return MF_ERR_INVAL;
	g_string_append_printf(cmd, "{%zu+}\r\n%s", strlen(name), name);
	return MF_OK;
}

const char *imap_vanished_set(const struct imap_response *r, int *earlier)
{
	const struct imap_value *v;

	*earlier = 0;
	if (r->kind != IMAP_RESPONSE_UNTAGGED || !r->keyword || strcmp(r->keyword, "VANISHED") != 0 ||
	    r->args.count < 1)
		return NULL;
	v = &r->args.items[0];
	if (v->type == IMAP_VALUE_LIST) {
		*earlier = v->count == 1 && imap_value_is_atom(&v->items[0], "EARLIER");
		if (r->args.count < 2)
			return NULL;
		v = &r->args.items[1];
	}
	return v->type == IMAP_VALUE_ATOM && strlen(v->str) == v->len ? v->str : NULL;
}

/* Reads a UID (1..4294967295) at *s, advancing it. */
static int imap_read_uid(const char **s, uint32_t *uid)
{
	uint64_t n = 0;
	const char *p = *s;

	for (; g_ascii_isdigit(*p) && n <= UINT32_MAX; p++)
		n = n * 10 + (uint64_t)(*p - '0');
	if (p == *s || n == 0 || n > UINT32_MAX)
		return -1;
	*uid = (uint32_t)n;
	*s = p;
	return 0;
}

int64_t imap_uid_ranges(const char *set, uint32_t max, GArray *out)
{
	int64_t total = 0;
	const char *p = set;

	for (;;) {
		struct mailbox_uid_range r;
		if (imap_read_uid(&p, &r.first) < 0)
			return -1;
		r.last = r.first;
		if (*p == ':') {
			p++;
			if (imap_read_uid(&p, &r.last) < 0)
				return -1;
			if (r.last < r.first) {
				uint32_t t = r.first;
				r.first = r.last;
				r.last = t;
			}
		}
		total += (int64_t)r.last - r.first + 1;
		if (out && r.first <= max) {
			if (r.last > max)
				r.last = max;
			g_array_append_val(out, r);
		}
		if (*p == '\0')
			return total;
		if (*p++ != ',')
			return -1;
	}
}

/* Once, before a connection's first SELECT (ENABLE is for the
 * authenticated state): ENABLE QRESYNC where offered. Sent, not waited
 * for: the SELECT goes right behind it, and the server answers the two
 * in order (RFC 3501 5.5), one round trip for both. Returns the tag to
 * wait for, 0 when none was sent. */
static unsigned imap_enable_qresync_send(struct imap_conn *c)
{
	if (c->enable_tried || !(c->caps & IMAP_CAP_QRESYNC))
		return 0;
	c->enable_tried = 1;
	return imap_send(c, "ENABLE QRESYNC");
}

/* The untagged responses of a SELECT with QRESYNC parameters: those
 * before "OK [CLOSED]" (RFC 7162 3.2.11) are the previous folder's. */
struct imap_select_ctx {
	const struct imap_qresync *q;
	int closed;            /* the previous folder's news are over */
};

static void imap_select_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_select_ctx *sc = ctx;

	if (r->status == IMAP_STATUS_OK && r->code.type == IMAP_VALUE_LIST && r->code.count >= 1 &&
	    imap_value_is_atom(&r->code.items[0], "CLOSED"))
		sc->closed = 1;
	else if (sc->closed && sc->q->fn)
		sc->q->fn(sc->q->ctx, c, r);
}

/* SELECT (rw) or EXAMINE the folder, fresh; with QRESYNC parameters
 * when q (may be NULL) holds a state and QRESYNC is enabled. */
static enum mf_status imap_select_mode(struct imap_conn *c, const char *wire_name, int rw,
                                       const struct imap_qresync *q)
{
	struct imap_select_ctx sel = { q, !c->opened };
	unsigned enable = imap_enable_qresync_send(c);
	/* A server offering QRESYNC enables it (RFC 7162 3.1): the SELECT
	 * behind the ENABLE counts on that, and goes again if it did not. */
	int qresync = c->qresync || enable;
	GString *cmd;
	enum mf_status st;

again:
	g_clear_pointer(&c->selected, g_free);
	c->exists = c->uidvalidity = c->uidnext = 0;
	c->highestmodseq = 0;
	c->selected_qresync = 0;
	cmd = g_string_new(rw ? "SELECT " : "EXAMINE ");
	st = imap_append_mailbox(c, cmd, wire_name);
	if (st == MF_OK) {
		unsigned tag;
		if (qresync && q && q->uidvalidity && q->modseq) {
			g_string_append_printf(cmd, " (QRESYNC (%u %" G_GUINT64_FORMAT, q->uidvalidity,
			                       q->modseq);
			if (q->last_uid)
				g_string_append_printf(cmd, " 1:%u", q->last_uid);
			g_string_append(cmd, "))");
			c->selected_qresync = 1;
		} else if (c->caps & IMAP_CAP_CONDSTORE) {
			g_string_append(cmd, " (CONDSTORE)");
		}
		tag = imap_send(c, cmd->str);
		if (q && q->then && !*q->then_tag)
			*q->then_tag = imap_send(c, q->then);
		if (enable) {
			imap_wait(c, enable, NULL, NULL);  /* ENABLED QRESYNC set c->qresync */
			enable = 0;
		}
		st = imap_wait(c, tag, q ? imap_select_untagged : NULL, &sel);
		c->opened = st == MF_OK;  /* a failed SELECT leaves none open */
		if (c->selected_qresync && !c->qresync && !c->broken) {
			/* Sent with QRESYNC parameters, which the server then did
			 * not enable: again, the CONDSTORE way. */
			qresync = 0;
			sel.closed = !c->opened;
			g_string_free(cmd, TRUE);
			goto again;
		}
	}
	if (enable)
		imap_wait(c, enable, NULL, NULL);  /* no SELECT went: its answer all the same */
	/* No [CLOSED] after a folder was open: what came cannot be told
	 * apart, and the caller must ask the CONDSTORE way. */
	if (!sel.closed)
		c->selected_qresync = 0;
	g_string_free(cmd, TRUE);
	if (st == MF_ERR_REFUSED)
		st = MF_ERR_NOTFOUND;  /* the folder is gone, or not selectable */
	if (st == MF_OK) {
		c->selected = g_strdup(wire_name);
		c->selected_rw = rw;
	} else {
		c->selected_qresync = 0;
	}
	return st;
}

enum mf_status imap_examine_qresync(struct imap_conn *c, const char *wire_name,
                                    const struct imap_qresync *q)
{
	return imap_select_mode(c, wire_name, 0, q);
}

/* EXAMINE folder (read-only: no flag changes, no \Recent taken) unless it
 * is already selected and fresh is 0. */
enum mf_status imap_examine(struct imap_conn *c, const char *wire_name, int fresh)
{
	if (!fresh && c->selected && strcmp(c->selected, wire_name) == 0)
		return MF_OK;
	return imap_select_mode(c, wire_name, 0, NULL);
}

/* SELECTs folder for changes and checks that uidvalidity still holds. */
enum mf_status imap_select_rw(struct imap_conn *c, const char *folder, uint32_t uidvalidity)
{
	enum mf_status st = MF_OK;

	if (!(c->selected && c->selected_rw && strcmp(c->selected, folder) == 0))
		st = imap_select_mode(c, folder, 1, NULL);
	if (st == MF_OK && uidvalidity && c->uidvalidity != uidvalidity)
		st = MF_ERR_NOTFOUND;
	return st;
}

/* The attribute list of an untagged "* n FETCH (...)" that carries a
 * UID, with the UID in *uid; NULL for anything else (an unsolicited
 * FETCH without UID is none of ours). */
const struct imap_value *imap_fetch_attributes(const struct imap_response *r, uint64_t *uid)
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

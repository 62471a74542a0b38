/* pop3.c — the POP3 driver (read-only): one folder, INBOX, over one POP3
 * session at a time. libcurl connects, secures and logs in (net.c); this
 * file speaks CAPA, UIDL, LIST, TOP and RETR over the connection, pipelined
 * when the server offers PIPELINING (RFC 2449), and keeps the session's
 * message-number <-> UIDL map for the body fetches that follow a listing.
 *
 * A POP3 session shows the maildrop as it was at login, so each listing
 * runs on a new session. Parsing is pop3_parse.c's job (pure).
 * Must not: send DELE or anything else that changes the maildrop (a
 * session that retrieved a message ends with RSET, so that servers such as
 * Dovecot do not set \Seen at QUIT), touch SQLite or FUSE, or wait without
 * a bound: each operation has a deadline no trickle can stretch, each
 * answer a size bound, and the session is owned by one operation at a
 * time without a lock held across I/O. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "log.h"
#include "mailbox.h"
#include "net.h"
#include "pop3_int.h"
#include "pop3_parse.h"
#include "stats.h"

#define POP3_RECV_CHUNK (64 * 1024)
#define POP3_FLUSH_BYTES (256 * 1024)    /* body bytes buffered before a write */
#define POP3_HEADER_KEY_PREFIX "hdr:"   /* keys of a server without UIDL */
/* The most one answer but a message may hold (CAPA, UIDL, LIST, TOP):
 * beyond, the operation fails and the session is dropped. */
#define POP3_MAX_ANSWER ((size_t)8 * 1024 * 1024)
/* A message may be this much longer than LIST said (line ends counted
 * otherwise); beyond, it is an error, not a disk filler. */
#define POP3_GOODBYE_US (2 * G_USEC_PER_SEC)  /* RSET and QUIT at the end */
#define POP3_BODY_SLACK ((uint64_t)64 * 1024)
/* A RETR that delivers this much pushes its deadline on: a large message
 * at a steady pace is no hang. */
#define POP3_PROGRESS_BYTES ((uint64_t)1024 * 1024)

/* One message of a listing. */
struct pop3_entry {
	uint32_t msgno;
	uint64_t size;
	char *key;                 /* owned; NULL until known */
	char *headers;             /* owned, NUL-terminated; NULL when not fetched */
	size_t headers_len;
	int skip;                  /* the server would not give its headers */
};

/* ---------------------------------------------------------------- engine */

/* Logs the first line of what was sent or received (a pipelined batch
 * as its first command and a count). */
static void pop3_trace(const char *dir, const char *data, size_t len)
{
	const char *lf;
	size_t first, more = 0;

	if (!log_debug_enabled())
		return;
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	lf = memchr(data, '\n', len);
	first = lf ? (size_t)(lf - data) : len;
	if (first > 0 && data[first - 1] == '\r')
		first--;
	for (const char *p = lf; p; p = memchr(p + 1, '\n', len - (size_t)(p + 1 - data)))
		more++;
	if (more)
		log_debug("%s %.*s (and %zu more)", dir, (int)(first > 300 ? 300 : first), data, more);
	else
		log_debug("%s %.*s%s", dir, (int)(first > 300 ? 300 : first), data,
		          first > 300 ? "..." : "");
}

/* Sends complete command text (one or more CRLF-terminated lines). */
enum mf_status pop3_send(struct pop3_session *s, const char *text, size_t len)
{
	enum mf_status st;

	if (s->broken)
		return MF_ERR_IO;
	pop3_trace("C:", text, len);
	net_set_deadline(s->net, s->deadline);
	st = net_send(s->net, text, len);
	if (st != MF_OK) {
		log_warn("POP3 connection lost while sending: %s", mf_status_str(st));
		s->broken = 1;
	}
	return st;
}

/* Receives more bytes after the unparsed ones. */
static enum mf_status pop3_fill(struct pop3_session *s)
{
	size_t got = 0;
	enum mf_status st;

	if (s->broken)
		return MF_ERR_IO;
	if (s->in_pos > 0) {
		memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
		s->in_len -= s->in_pos;
		s->in_pos = 0;
	}
	if (s->in_cap - s->in_len < POP3_RECV_CHUNK) {
		s->in_cap = s->in_len + POP3_RECV_CHUNK > s->in_cap * 2 ? s->in_len + POP3_RECV_CHUNK
		                                                       : s->in_cap * 2;
		s->in = g_realloc(s->in, s->in_cap);
	}
	net_set_deadline(s->net, s->deadline);
	st = net_recv(s->net, s->in + s->in_len, s->in_cap - s->in_len, &got);
	if (st != MF_OK) {
		if (st == MF_ERR_TIMEOUT)
			log_warn("the POP3 server did not answer within the timeout: the operation fails");
		else
			log_warn("POP3 connection lost: %s", mf_status_str(st));
		s->broken = 1;
		return st;
	}
	s->in_len += got;
	return MF_OK;
}

/* Reads one status line. */
static enum mf_status pop3_read_status(struct pop3_session *s, struct pop3_status *out)
{
	for (;;) {
		size_t consumed = 0;
		enum pop3_parse_result res = pop3_parse_status(s->in + s->in_pos, s->in_len - s->in_pos,
		                                               &consumed, out);
		if (res == POP3_PARSE_OK) {
			pop3_trace("S:", s->in + s->in_pos, consumed);
			s->in_pos += consumed;
			return MF_OK;
		}
		if (res == POP3_PARSE_ERROR) {
			log_error("malformed POP3 reply: %.*s", (int)(consumed > 200 ? 200 : consumed),
			          s->in + s->in_pos);
			s->broken = 1;
			return MF_ERR_PROTOCOL;
		}
		enum mf_status st = pop3_fill(s);
		if (st != MF_OK)
			return st;
	}
}

/* Writes buf to fd at *off, all of it. */
static enum mf_status pop3_write_at(int fd, const char *buf, size_t len, uint64_t *off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, (off_t)*off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("cannot write the body cache: %s", g_strerror(errno));
			return MF_ERR_IO;
		}
		buf += n;
		len -= (size_t)n;
		*off += (uint64_t)n;
	}
	return MF_OK;
}

/* Reads the multi-line body that follows a +OK, unstuffed, into out; with
 * fd >= 0 the payload goes to fd (from *off on) as it arrives instead,
 * out serving as the buffer. At most max bytes of payload (all of it,
 * for fd >= 0): beyond, the session is dropped. */
static enum mf_status pop3_read_multiline(struct pop3_session *s, GString *out, int fd,
                                          uint64_t *off, uint64_t max)
{
	struct pop3_multiline m;
	uint64_t progress = *off;

	pop3_multiline_init(&m);
	for (;;) {
		size_t consumed = 0;
		enum pop3_parse_result res = pop3_parse_multiline(&m, s->in + s->in_pos,
		                                                  s->in_len - s->in_pos, &consumed, out);
		enum mf_status st;

		s->in_pos += consumed;
		if (res == POP3_PARSE_ERROR) {
			log_error("malformed POP3 reply: a line longer than %zu bytes", POP3_MAX_BODY_LINE);
			s->broken = 1;
			return MF_ERR_PROTOCOL;
		}
		if ((fd >= 0 ? *off : 0) + out->len > max) {
			log_error("POP3 answer over %" PRIu64 " bytes: refused, the session is dropped",
			          max);
			s->broken = 1;
			return MF_ERR_PROTOCOL;
		}
		if (fd >= 0 && (res == POP3_PARSE_OK || out->len >= POP3_FLUSH_BYTES)) {
			st = pop3_write_at(fd, out->str, out->len, off);
			g_string_truncate(out, 0);
			if (st != MF_OK) {
				s->broken = 1;  /* the rest of the reply is still due */
				return st;
			}
			if (*off - progress >= POP3_PROGRESS_BYTES) {
				progress = *off;
				s->deadline = net_deadline_from_now(s->net);
			}
		}
		if (res == POP3_PARSE_OK)
			return MF_OK;
		st = pop3_fill(s);
		if (st != MF_OK)
			return st;
	}
}

/* Sends one command and reads its status line; *ok tells +OK from -ERR. */
static enum mf_status pop3_command(struct pop3_session *s, const char *command, int *ok)
{
	struct pop3_status reply;
	char *line = g_strdup_printf("%s\r\n", command);
	enum mf_status st = pop3_send(s, line, strlen(line));

	g_free(line);
	if (st == MF_OK)
		st = pop3_read_status(s, &reply);
	if (st != MF_OK)
		return st;
	*ok = reply.ok;
	if (!reply.ok)
		log_warn("POP3 server refused %s: %s", command, reply.text);
	pop3_status_clear(&reply);
	return MF_OK;
}

/* ---------------------------------------------------------------- sessions */

static void pop3_session_free(struct pop3_session *s)
{
	if (!s)
		return;
	if (s->net && !s->broken) {
		gint64 soon = g_get_monotonic_time() + POP3_GOODBYE_US;
		int ok;
		s->deadline = soon;  /* a slow goodbye holds up no one */
		/* RSET unmarks what RETR marked as seen: the session leaves the
		 * maildrop exactly as it found it. curl sends no QUIT itself. */
		if (s->retrieved)
			pop3_command(s, "RSET", &ok);
		if (!s->broken)
			pop3_command(s, "QUIT", &ok);
	}
	net_close(s->net);
	if (s->msgno_by_key)
		g_hash_table_destroy(s->msgno_by_key);
	g_free(s->in);
	g_free(s);
}

/* Connects, logs in (libcurl) and asks for the capabilities. */
enum mf_status pop3_session_open(struct pop3_driver *d, struct pop3_session **out,
                                 char **err)
{
	struct pop3_session *s = g_new0(struct pop3_session, 1);
	struct pop3_status reply = { 0 };
	GString *capa = NULL;
	enum mf_status st;
	char *why = NULL;

	*out = NULL;
	st = net_connect(d->cfg, &s->net, &why);
	if (st != MF_OK) {
		s->broken = 1;
		goto out;
	}
	s->deadline = d->deadline;
	/* curl read CAPA before the login; what holds after it may differ. */
	st = pop3_send(s, "CAPA\r\n", 6);
	if (st == MF_OK)
		st = pop3_read_status(s, &reply);
	if (st == MF_OK && reply.ok) {
		uint64_t unused = 0;
		capa = g_string_new(NULL);
		st = pop3_read_multiline(s, capa, -1, &unused, POP3_MAX_ANSWER);
		if (st == MF_OK) {
			s->caps = pop3_parse_capa(capa->str, capa->len);
			s->caps_known = 1;
		}
	}
	if (st != MF_OK)
		why = g_strdup_printf("CAPA failed: %s", mf_status_str(st));
out:
	pop3_status_clear(&reply);
	if (capa)
		g_string_free(capa, TRUE);
	if (st != MF_OK) {
		pop3_session_free(s);
		if (err)
			*err = why;
		else {
			log_warn("cannot open a POP3 session: %s", why ? why : mf_status_str(st));
			g_free(why);
		}
		return st;
	}
	if (d->lost > 0) {
		d->lost--;
		stats_add(reconnects, 1);
	}
	*out = s;
	return MF_OK;
}

/* Waits (at most a timeout) until no other operation owns the session,
 * and takes it: the operation's deadline starts now. */
enum mf_status pop3_enter(struct pop3_driver *d)
{
	gint64 until = g_get_monotonic_time() + (gint64)d->cfg->timeout * G_USEC_PER_SEC;

	g_mutex_lock(&d->lock);
	d->waiting++;
	while (d->busy) {
		if (!g_cond_wait_until(&d->cond, &d->lock, until)) {
			d->waiting--;
			g_mutex_unlock(&d->lock);
			log_warn("the POP3 session stayed busy for %d s", d->cfg->timeout);
			return MF_ERR_TIMEOUT;
		}
	}
	d->waiting--;
	d->busy = 1;
	g_mutex_unlock(&d->lock);
	d->deadline = g_get_monotonic_time() + (gint64)d->cfg->timeout * G_USEC_PER_SEC;
	if (d->session)
		d->session->deadline = d->deadline;
	return MF_OK;
}

void pop3_leave(struct pop3_driver *d)
{
	g_mutex_lock(&d->lock);
	d->busy = 0;
	g_cond_signal(&d->cond);
	g_mutex_unlock(&d->lock);
}

/* Ends the current session (politely, unless it broke). Owner only. */
void pop3_drop_session(struct pop3_driver *d)
{
	if (!d->session)
		return;
	if (d->session->broken)
		d->lost++;
	pop3_session_free(d->session);
	d->session = NULL;
}

/* ---------------------------------------------------------------- listing */

void pop3_entries_free(GArray *entries)
{
	if (!entries)
		return;
	for (guint i = 0; i < entries->len; i++) {
		struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, i);
		g_free(e->key);
		g_free(e->headers);
	}
	g_array_free(entries, TRUE);
}

/* Reads a +OK multi-line reply into out; *ok = 0 (and nothing read) on -ERR. */
static enum mf_status pop3_read_listing(struct pop3_session *s, GString *out, int *ok)
{
	struct pop3_status reply;
	uint64_t unused = 0;
	enum mf_status st = pop3_read_status(s, &reply);

	if (st != MF_OK)
		return st;
	*ok = reply.ok;
	if (!reply.ok)
		log_warn("POP3 server refused a listing: %s", reply.text);
	pop3_status_clear(&reply);
	g_string_truncate(out, 0);
	return *ok ? pop3_read_multiline(s, out, -1, &unused, POP3_MAX_ANSWER) : MF_OK;
}

static int pop3_entry_cmp(const void *a, const void *b)
{
	uint32_t x = ((const struct pop3_entry *)a)->msgno, y = ((const struct pop3_entry *)b)->msgno;
	return x < y ? -1 : x > y;
}

/* UIDL and LIST: one entry per message, in message-number order, keyed
 * by UIDL when the server has it. *have_uidl says whether it does. */
static enum mf_status pop3_list_messages(struct pop3_session *s, GArray **out, int *have_uidl)
{
	GArray *entries = g_array_new(FALSE, TRUE, sizeof(struct pop3_entry));
	GHashTable *index = g_hash_table_new(g_direct_hash, g_direct_equal);
	GString *uidl = g_string_new(NULL), *list = g_string_new(NULL);
	int try_uidl = !s->caps_known || (s->caps & POP3_CAPA_UIDL);
	int pipelining = s->caps & POP3_CAPA_PIPELINING;
	int uidl_ok = 0, list_ok = 0;
	enum mf_status st = MF_OK;
	const char *line;
	size_t pos, line_len;

	*out = NULL;
	*have_uidl = 0;
	/* Both commands go out before either answer is read (pipelining). */
	if (try_uidl && pipelining) {
		st = pop3_send(s, "UIDL\r\nLIST\r\n", 12);
		if (st == MF_OK)
			st = pop3_read_listing(s, uidl, &uidl_ok);
	} else {
		if (try_uidl) {
			st = pop3_send(s, "UIDL\r\n", 6);
			if (st == MF_OK)
				st = pop3_read_listing(s, uidl, &uidl_ok);
		}
		if (st == MF_OK)
			st = pop3_send(s, "LIST\r\n", 6);
	}
	if (st == MF_OK)
		st = pop3_read_listing(s, list, &list_ok);
	if (st != MF_OK)
		goto out;
	if (!list_ok) {
		st = MF_ERR_REFUSED;
		goto out;
	}

	pos = 0;
	while (pop3_next_line(list->str, list->len, &pos, &line, &line_len)) {
		struct pop3_entry e = { 0 };
		if (pop3_parse_list_line(line, line_len, &e.msgno, &e.size) != 0) {
			log_error("malformed POP3 LIST line: %.*s", (int)(line_len > 200 ? 200 : line_len),
			          line);
			st = MF_ERR_PROTOCOL;
			goto out;
		}
		if (g_hash_table_contains(index, GUINT_TO_POINTER(e.msgno)))
			continue;
		g_hash_table_add(index, GUINT_TO_POINTER(e.msgno));
		g_array_append_val(entries, e);
	}
	g_array_sort(entries, pop3_entry_cmp);
	g_hash_table_remove_all(index);
	for (guint i = 0; i < entries->len; i++)
		g_hash_table_insert(index,
		                    GUINT_TO_POINTER(g_array_index(entries, struct pop3_entry, i).msgno),
		                    GUINT_TO_POINTER(i + 1));

	if (uidl_ok) {
		GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
		pos = 0;
		while (pop3_next_line(uidl->str, uidl->len, &pos, &line, &line_len)) {
			const char *id;
			size_t id_len;
			uint32_t msgno;
			if (pop3_parse_uidl_line(line, line_len, &msgno, &id, &id_len) != 0) {
				log_error("malformed POP3 UIDL line: %.*s",
				          (int)(line_len > 200 ? 200 : line_len), line);
				st = MF_ERR_PROTOCOL;
				break;
			}
			guint at = GPOINTER_TO_UINT(g_hash_table_lookup(index, GUINT_TO_POINTER(msgno)));
			if (at == 0)
				continue;  /* not in LIST: not a message of this session */
			struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, at - 1);
			if (e->key)
				continue;
			e->key = g_strndup(id, id_len);
			if (g_hash_table_contains(seen, e->key)) {
				/* UIDLs are unique (RFC 1939); a server that repeats one
				 * would make two messages one. */
				log_warn("POP3 server repeats UIDL %s: message %u skipped", e->key, msgno);
				g_clear_pointer(&e->key, g_free);
				e->skip = 1;
				continue;
			}
			g_hash_table_add(seen, e->key);
		}
		g_hash_table_destroy(seen);
		if (st != MF_OK)
			goto out;
		/* A message that LIST shows and UIDL does not cannot be named. */
		for (guint i = 0; i < entries->len; i++) {
			struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, i);
			if (!e->key && !e->skip) {
				log_warn("POP3 server gave no UIDL for message %u: skipped", e->msgno);
				e->skip = 1;
			}
		}
		*have_uidl = 1;
	}
	*out = entries;
	entries = NULL;
out:
	pop3_entries_free(entries);
	g_hash_table_destroy(index);
	g_string_free(uidl, TRUE);
	g_string_free(list, TRUE);
	return st;
}

/* The headers of the entries whose index is in todo: TOP n 0 (or RETR,
 * cut after the header block, when the server has no TOP), a window of
 * commands in flight when the server pipelines, else one at a time. */
static enum mf_status pop3_fetch_headers(struct pop3_session *s, GArray *entries,
                                         const guint *todo, guint n_todo)
{
	int use_retr = s->caps_known && !(s->caps & POP3_CAPA_TOP);
	guint window = (s->caps & POP3_CAPA_PIPELINING) ? POP3_WINDOW : 1;
	GString *batch = g_string_new(NULL), *block = g_string_new(NULL);
	guint sent = 0, done = 0;
	enum mf_status st = MF_OK;

	if (use_retr)
		s->retrieved = 1;
	while (done < n_todo) {
		/* Refill the window in batches, so that one send carries many. */
		if (sent - done <= window / 2) {
			g_string_truncate(batch, 0);
			while (sent < n_todo && sent - done < window) {
				uint32_t msgno = g_array_index(entries, struct pop3_entry, todo[sent]).msgno;
				g_string_append_printf(batch, use_retr ? "RETR %u\r\n" : "TOP %u 0\r\n", msgno);
				sent++;
			}
			if (batch->len) {
				st = pop3_send(s, batch->str, batch->len);
				if (st != MF_OK)
					break;
			}
		}
		struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, todo[done]);
		int ok = 0;
		st = pop3_read_listing(s, block, &ok);
		if (st != MF_OK)
			break;
		done++;
		if (!ok) {
			e->skip = 1;
			continue;
		}
		e->headers_len = pop3_header_block_len(block->str, block->len);
		e->headers = g_malloc(e->headers_len + 1);
		memcpy(e->headers, block->str, e->headers_len);
		e->headers[e->headers_len] = '\0';
	}
	g_string_free(batch, TRUE);
	g_string_free(block, TRUE);
	return st;
}

/* Lists the session: entries (message-number order) with keys, and the
 * headers of those not in known (all of them without UIDL, which needs
 * them for the keys; none when want_headers is 0 and the server has
 * UIDL). Builds the session's key -> message-number map. known may be NULL. */
enum mf_status pop3_scan(struct pop3_session *s, GHashTable *known, int want_headers,
                         GArray **out)
{
	GArray *entries = NULL;
	GArray *todo = g_array_new(FALSE, FALSE, sizeof(guint));
	GHashTable *map;
	int have_uidl = 0;
	enum mf_status st;

	*out = NULL;
	st = pop3_list_messages(s, &entries, &have_uidl);
	if (st != MF_OK)
		goto out;
	for (guint i = 0; i < entries->len; i++) {
		const struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, i);
		if (e->skip)
			continue;
		if (!have_uidl || (want_headers && !(known && g_hash_table_contains(known, e->key))))
			g_array_append_val(todo, i);
	}
	st = pop3_fetch_headers(s, entries, (const guint *)todo->data, todo->len);
	if (st != MF_OK)
		goto out;
	if (!have_uidl) {
		/* Key by the headers; equal header blocks are told apart by
		 * their order in the list. */
		GHashTable *count = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
		for (guint i = 0; i < entries->len; i++) {
			struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, i);
			if (e->skip || !e->headers)
				continue;
			char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256,
			                                        (const guchar *)e->headers, e->headers_len);
			guint n = GPOINTER_TO_UINT(g_hash_table_lookup(count, sum)) + 1;
			e->key = n == 1 ? g_strconcat(POP3_HEADER_KEY_PREFIX, sum, NULL)
			                : g_strdup_printf(POP3_HEADER_KEY_PREFIX "%s#%u", sum, n);
			g_hash_table_replace(count, sum, GUINT_TO_POINTER(n));
		}
		g_hash_table_destroy(count);
	}
	map = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	for (guint i = 0; i < entries->len; i++) {
		const struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, i);
		if (e->key && !e->skip)
			g_hash_table_insert(map, g_strdup(e->key), GUINT_TO_POINTER(e->msgno));
	}
	if (s->msgno_by_key)
		g_hash_table_destroy(s->msgno_by_key);
	s->msgno_by_key = map;
	*out = entries;
	entries = NULL;
out:
	pop3_entries_free(entries);
	g_array_free(todo, TRUE);
	return st;
}

/* ---------------------------------------------------------------- mailbox ops */

static enum mf_status pop3_list_folders(struct mailbox *mb, GPtrArray **out)
{
	struct mailbox_folder *f = g_new0(struct mailbox_folder, 1);

	f->path = g_strdup("INBOX");
	f->wire_name = g_strdup("INBOX");
	*out = g_ptr_array_new();
	g_ptr_array_add(*out, f);
	return MF_OK;
}

static int pop3_uid_cmp(gconstpointer a, gconstpointer b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static enum mf_status pop3_sync_folder(struct mailbox *mb, const struct mailbox_sync_request *req,
                                       struct mailbox_sync_result *out)
{
	struct pop3_driver *d = (struct pop3_driver *)mb;
	struct pop3_session *s = NULL;
	GArray *entries = NULL;
	enum mf_status st;

	mailbox_sync_result_init(out);
	if (strcmp(req->wire_name, "INBOX") != 0)
		return MF_ERR_NOTFOUND;
	st = pop3_enter(d);
	if (st != MF_OK)
		return st;
	/* POP3 shows the maildrop as it was at login: a listing needs a new
	 * session. The old one ends first, for servers that lock the maildrop. */
	pop3_drop_session(d);
	st = pop3_session_open(d, &s, NULL);
	if (st != MF_OK)
		goto out;
	st = pop3_scan(s, req->known_remote_ids, 1, &entries);
	if (st != MF_OK)
		goto out;
	out->uidvalidity = 1;  /* keys are UIDLs, which never change meaning */
	for (guint i = 0; i < entries->len; i++) {
		struct pop3_entry *e = &g_array_index(entries, struct pop3_entry, i);
		gpointer uid;
		if (e->skip || !e->key)
			continue;
		if (req->known_remote_ids &&
		    g_hash_table_lookup_extended(req->known_remote_ids, e->key, NULL, &uid)) {
			uint32_t u = GPOINTER_TO_UINT(uid);
			g_array_append_val(out->present, u);
			continue;
		}
		if (!e->headers)
			continue;
		struct mailbox_message m = {
			.uid = 0,  /* the store gives it one */
			.remote_id = e->key,
			.flags = g_strdup(""),
			.size = e->size,
			.internaldate = MAILBOX_NO_DATE,
			.headers = e->headers,
			.headers_len = e->headers_len,
		};
		e->key = NULL;
		e->headers = NULL;
		g_array_append_val(out->added, m);
	}
	g_array_sort(out->present, pop3_uid_cmp);
	out->present_valid = 1;
out:
	pop3_entries_free(entries);
	if (s) {
		if (s->broken) {
			d->lost++;
			pop3_session_free(s);
		} else {
			d->session = s;  /* kept for the body fetches that follow */
		}
	}
	pop3_leave(d);
	if (st != MF_OK)
		mailbox_sync_result_clear(out);
	return st;
}

/* RETR msgno into fd from offset 0; size_hint sizes the buffer. */
static enum mf_status pop3_retr(struct pop3_session *s, uint32_t msgno, uint64_t size_hint,
                                int fd, uint64_t *written)
{
	char cmd[32];
	enum mf_status st;
	int n = g_snprintf(cmd, sizeof cmd, "RETR %u\r\n", msgno);

	s->retrieved = 1;
	st = pop3_send(s, cmd, (size_t)n);
	if (st != MF_OK)
		return st;
	return pop3_retr_read(s, msgno, size_hint, fd, written);
}

/* Reads the answer to one RETR msgno (sent already) into fd. */
enum mf_status pop3_retr_read(struct pop3_session *s, uint32_t msgno, uint64_t size_hint,
                              int fd, uint64_t *written)
{
	struct pop3_status reply;
	GString *buf;
	uint64_t off = 0;
	enum mf_status st;

	st = pop3_read_status(s, &reply);
	if (st != MF_OK)
		return st;
	if (!reply.ok) {
		log_warn("POP3 server refused RETR %u: %s", msgno, reply.text);
		pop3_status_clear(&reply);
		return MF_ERR_REFUSED;
	}
	pop3_status_clear(&reply);
	buf = g_string_sized_new(size_hint < POP3_FLUSH_BYTES ? (gsize)size_hint + 1024
	                                                      : POP3_FLUSH_BYTES + POP3_RECV_CHUNK);
	st = pop3_read_multiline(s, buf, fd, &off, size_hint + POP3_BODY_SLACK + size_hint / 16);
	g_string_free(buf, TRUE);
	if (st != MF_OK)
		return st;
	/* An earlier, failed attempt may have written further. */
	if (ftruncate(fd, (off_t)off) != 0) {
		log_error("cannot write the body cache: %s", g_strerror(errno));
		return MF_ERR_IO;
	}
	*written = off;
	return MF_OK;
}

static enum mf_status pop3_fetch_body(struct mailbox *mb, const char *wire_name,
                                      uint32_t uidvalidity, uint32_t uid,
                                      const char *remote_id, uint64_t size_hint,
                                      int fd, uint64_t *written)
{
	struct pop3_driver *d = (struct pop3_driver *)mb;
	enum mf_status st = MF_ERR_NOTFOUND;

	if (!remote_id || strcmp(wire_name, "INBOX") != 0)
		return MF_ERR_NOTFOUND;
	st = pop3_enter(d);
	if (st != MF_OK)
		return st;
	/* The current session's map first; a new session when there is none,
	 * when the message is not in it, or when the old session failed (a
	 * server closes idle sessions). In a new session, a message that is
	 * missing is gone. */
	for (int attempt = 0; attempt < 2; attempt++) {
		int fresh = 0;
		if (attempt > 0 || !d->session || d->session->broken) {
			struct pop3_session *s;
			pop3_drop_session(d);
			st = pop3_session_open(d, &s, NULL);
			if (st != MF_OK)
				break;
			d->session = s;
			fresh = 1;
		}
		struct pop3_session *s = d->session;
		if (!s->msgno_by_key) {
			GArray *entries = NULL;
			st = pop3_scan(s, NULL, 0, &entries);
			pop3_entries_free(entries);
			if (st != MF_OK) {
				pop3_drop_session(d);
				if (!fresh && st == MF_ERR_IO)
					continue;
				break;
			}
		}
		uint32_t msgno = GPOINTER_TO_UINT(g_hash_table_lookup(s->msgno_by_key, remote_id));
		if (msgno == 0) {
			st = MF_ERR_NOTFOUND;
			if (fresh)
				break;
			continue;
		}
		st = pop3_retr(s, msgno, size_hint, fd, written);
		if (s->broken)
			pop3_drop_session(d);
		if (st == MF_OK || fresh || (st != MF_ERR_IO && st != MF_ERR_REFUSED))
			break;
	}
	pop3_leave(d);
	if (st == MF_OK) {
		stats_add(bodies_fetched, 1);
		stats_add(body_bytes_fetched, *written);
	}
	return st;
}

/* Read-ahead: pipelined RETRs (one at a time without PIPELINING) in the
 * current session, opened and listed when needed. */
static enum mf_status pop3_fetch_bodies(struct mailbox *mb, const char *wire_name,
                                        uint32_t uidvalidity,
                                        struct mailbox_body_request *reqs, size_t n)
{
	struct pop3_driver *d = (struct pop3_driver *)mb;
	struct pop3_session *s;
	GArray *todo = g_array_new(FALSE, FALSE, sizeof(guint));
	GArray *msgnos = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	GString *batch = g_string_new(NULL);
	enum mf_status st = MF_OK;
	guint window, sent = 0, done = 0;

	for (size_t i = 0; i < n; i++)
		reqs[i].status = MF_ERR_NOTFOUND;
	if (strcmp(wire_name, "INBOX") != 0)
		goto free;
	st = pop3_enter(d);
	if (st != MF_OK)
		goto free;
	if (!d->session || d->session->broken) {
		pop3_drop_session(d);
		st = pop3_session_open(d, &d->session, NULL);
		if (st != MF_OK)
			goto out;
	}
	s = d->session;
	if (!s->msgno_by_key) {
		GArray *entries = NULL;
		st = pop3_scan(s, NULL, 0, &entries);
		pop3_entries_free(entries);
		if (st != MF_OK)
			goto out;
	}
	for (guint i = 0; i < n; i++) {
		uint32_t msgno = reqs[i].remote_id ? GPOINTER_TO_UINT(
			g_hash_table_lookup(s->msgno_by_key, reqs[i].remote_id)) : 0;
		if (msgno) {
			g_array_append_val(todo, i);
			g_array_append_val(msgnos, msgno);
		}
	}
	window = (s->caps & POP3_CAPA_PIPELINING) ? POP3_WINDOW : 1;
	s->retrieved = 1;
	while (done < todo->len) {
		if (sent - done <= window / 2) {
			g_string_truncate(batch, 0);
			while (sent < todo->len && sent - done < window)
				g_string_append_printf(batch, "RETR %u\r\n", g_array_index(msgnos, uint32_t, sent++));
			if (batch->len) {
				st = pop3_send(s, batch->str, batch->len);
				if (st != MF_OK)
					break;
			}
		}
		struct mailbox_body_request *r = &reqs[g_array_index(todo, guint, done)];
		st = pop3_retr_read(s, g_array_index(msgnos, uint32_t, done), r->size_hint, r->fd,
		                    &r->written);
		done++;
		if (st == MF_ERR_REFUSED) {
			r->status = MF_ERR_REFUSED;
			st = MF_OK;
			continue;
		}
		if (st != MF_OK)
			break;
		r->status = MF_OK;
		stats_add(bodies_fetched, 1);
		stats_add(body_bytes_fetched, r->written);
	}
out:
	if (d->session && (d->session->broken || st != MF_OK))
		pop3_drop_session(d);
	pop3_leave(d);
free:
	g_array_free(todo, TRUE);
	g_array_free(msgnos, TRUE);
	g_string_free(batch, TRUE);
	return st;
}

static void pop3_destroy(struct mailbox *mb)
{
	struct pop3_driver *d = (struct pop3_driver *)mb;

	pop3_drop_session(d);
	g_mutex_clear(&d->lock);
	g_cond_clear(&d->cond);
	g_free(d);
}

static const struct mailbox_ops pop3_ops = {
	.list_folders = pop3_list_folders,
	.sync_folder = pop3_sync_folder,
	.fetch_body = pop3_fetch_body,
	.fetch_bodies = pop3_fetch_bodies,
	.stream_bodies = pop3_stream_bodies,
	.destroy = pop3_destroy,
};

enum mf_status pop3_mailbox_open(const struct mf_config *cfg, struct mailbox **out, char **err)
{
	struct pop3_driver *d = g_new0(struct pop3_driver, 1);
	enum mf_status st;

	d->base.ops = &pop3_ops;
	d->cfg = cfg;
	g_mutex_init(&d->lock);
	g_cond_init(&d->cond);
	d->deadline = g_get_monotonic_time() + (gint64)cfg->timeout * G_USEC_PER_SEC;
	/* Log in once now, so that a bad password fails the mount. The
	 * session stays for a body fetch that comes before any listing. */
	st = pop3_session_open(d, &d->session, err);
	if (st != MF_OK) {
		pop3_destroy(&d->base);
		return st;
	}
	*out = &d->base;
	return MF_OK;
}

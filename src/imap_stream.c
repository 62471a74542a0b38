/* imap_stream.c — streamed read-ahead: the bodies of one folder in
 * pipelined `UID FETCH <set> (UID BODY.PEEK[])` commands on a connection
 * the stream holds for itself. Each body goes to its request's file as
 * its literal arrives and is reported done as soon as its FETCH response
 * ends; the next batch is asked for (and sent) after every body, so the
 * connection has the next command before the current one has finished.
 *
 * Must not: set \Seen, wait without a bound (each body pushes the
 * deadline on: a steady stream is no hang), or put a connection back
 * into the pool with a FETCH still answering: a stream told to stop with
 * commands in flight drops its connection. */
#include <string.h>
#include <glib.h>
#include "imap_int.h"
#include "log.h"
#include "stats.h"

#define IMAP_STREAM_BATCH 256          /* requests asked for at once */
#define IMAP_STREAM_COMMANDS 32        /* UID FETCHes in flight at most: 8 of 256 small
                                          * bodies each held a 100 ms link to 2,048
                                          * messages a round trip */
#define IMAP_STREAM_PROGRESS ((uint64_t)1024 * 1024)  /* bytes that push the deadline */
/* A body's bytes are gathered up to this many before they are written:
 * they arrive a TLS record (about 4 KiB) at a time, and each write at an
 * offset inside a block the file has not got yet costs the kernel a
 * zeroing of that block's rest (9% of a cold tar's CPU, in ext4's
 * write_begin, with one write per record). */
#define IMAP_STREAM_WRITE_BYTES ((size_t)128 * 1024)

struct imap_stream_req {
	struct mailbox_body_request r;
	unsigned tag;
};

struct imap_stream_ctx {
	const struct mailbox_stream *cb;
	struct imap_conn *c;
	GHashTable *by_uid;          /* uid -> struct imap_stream_req * (owned) */
	GQueue tags;                 /* GUINT_TO_POINTER(tag) in flight, oldest first */
	struct mailbox_body_request batch[IMAP_STREAM_BATCH];
	struct imap_streamed streamed;
	char *pending;               /* the literal's next bytes, not written yet */
	size_t n_pending;
	uint64_t since_progress;     /* bytes since the deadline moved */
	int stop;                    /* next said -1: abandon what is in flight */
	int bad;                     /* a body came that was not asked for */
};

static void imap_stream_progress(struct imap_stream_ctx *sc)
{
	sc->since_progress = 0;
	net_set_deadline(sc->c->net, net_deadline_from_now(sc->c->net));
}

static void imap_stream_finish(struct imap_stream_ctx *sc, struct imap_stream_req *q,
                               enum mf_status st)
{
	q->r.status = st;
	if (st == MF_OK) {
		stats_add(bodies_fetched, 1);
		stats_add(body_bytes_fetched, q->r.written);
		stats_add(stream_bodies, 1);
	}
	g_hash_table_steal(sc->by_uid, GUINT_TO_POINTER(q->r.uid));
	sc->cb->done(sc->cb->ctx, &q->r);
	g_free(q);
}

/* Asks for the next batch and sends it, while fewer than the most
 * commands are in flight; wait as in mailbox_stream.next. */
static enum mf_status imap_stream_refill(struct imap_stream_ctx *sc, int wait)
{
	while (!sc->stop && g_queue_get_length(&sc->tags) < IMAP_STREAM_COMMANDS) {
		int n = sc->cb->next(sc->cb->ctx, sc->batch, IMAP_STREAM_BATCH,
		                     wait && g_queue_is_empty(&sc->tags));
		if (n < 0)
			sc->stop = 1;
		if (n <= 0)
			return MF_OK;
		GString *cmd = g_string_new("UID FETCH ");
		for (int i = 0; i < n; i++) {
			struct imap_stream_req *q = g_new0(struct imap_stream_req, 1);
			q->r = sc->batch[i];
			g_string_append_printf(cmd, "%s%u", i ? "," : "", q->r.uid);
			g_hash_table_insert(sc->by_uid, GUINT_TO_POINTER(q->r.uid), q);
		}
		g_string_append(cmd, " (UID BODY.PEEK[])");
		unsigned tag = imap_send(sc->c, cmd->str);
		g_string_free(cmd, TRUE);
		for (int i = 0; i < n; i++) {
			struct imap_stream_req *q = g_hash_table_lookup(sc->by_uid,
			                                                GUINT_TO_POINTER(sc->batch[i].uid));
			if (q)
				q->tag = tag;
		}
		if (!tag)
			return MF_ERR_IO;
		stats_add(stream_fetches, 1);
		g_queue_push_tail(&sc->tags, GUINT_TO_POINTER(tag));
	}
	return MF_OK;
}

/* Writes the literal's gathered bytes. */
static enum mf_status imap_stream_flush(struct imap_stream_ctx *sc)
{
	size_t n = sc->n_pending;

	sc->n_pending = 0;
	return n ? imap_streamed_write(&sc->streamed, sc->pending, n) : MF_OK;
}

/* A body handed out without a descriptor gets its place from the
 * caller, now that its length is known. */
static enum mf_status imap_stream_place(struct imap_stream_ctx *sc, struct imap_stream_req *q,
                                        uint64_t len)
{
	if (q->r.fd >= 0 || !sc->cb->place)
		return q->r.fd >= 0 ? MF_OK : MF_ERR_IO;
	if (sc->cb->place(sc->cb->ctx, &q->r, len) != 0 || q->r.fd < 0) {
		log_error("cannot write the body cache: no room for message %u", q->r.uid);
		return MF_ERR_IO;
	}
	return MF_OK;
}

static enum imap_sink_choice imap_stream_literal(void *ctx, const char *head, size_t head_len,
                                                 uint64_t n)
{
	struct imap_stream_ctx *sc = ctx;
	struct imap_stream_req *q;
	uint64_t off, uid;

	if (!imap_sink_head_body(head, head_len, &off, &uid))
		return IMAP_SINK_BUFFER;
	if (sc->streamed.active) {
		log_error("IMAP server sent a second body in one FETCH response");
		return IMAP_SINK_FAIL;
	}
	if (!uid)
		return IMAP_SINK_BUFFER;  /* bounded as any response */
	q = g_hash_table_lookup(sc->by_uid, GUINT_TO_POINTER((guint)uid));
	sc->streamed = (struct imap_streamed){ .active = 1, .size = n, .uid = uid, .fd = -1 };
	sc->n_pending = 0;
	if (q && (off != 0 || n > imap_body_limit(q->r.size_hint))) {
		log_error("IMAP server sends %" G_GUINT64_FORMAT " bytes for message %" G_GUINT64_FORMAT
		          ", whose RFC822.SIZE is %" G_GUINT64_FORMAT ": refused", n, uid,
		          q->r.size_hint);
		return IMAP_SINK_FAIL;
	}
	if (q && imap_stream_place(sc, q, n) != MF_OK)
		return IMAP_SINK_FAIL;
	if (q) {
		sc->streamed.fd = q->r.fd;
		sc->streamed.offset = q->r.base;
	}
	return IMAP_SINK_TAKE;
}

static enum mf_status imap_stream_data(void *ctx, const char *bytes, size_t len)
{
	struct imap_stream_ctx *sc = ctx;

	if (sc->stop)
		return MF_ERR_IO;  /* abandoned: the connection is dropped */
	sc->since_progress += len;
	if (sc->since_progress >= IMAP_STREAM_PROGRESS)
		imap_stream_progress(sc);
	if (sc->n_pending + len > IMAP_STREAM_WRITE_BYTES) {
		enum mf_status st = imap_stream_flush(sc);
		if (st != MF_OK)
			return st;
		if (len >= IMAP_STREAM_WRITE_BYTES)
			return imap_streamed_write(&sc->streamed, bytes, len);
	}
	memcpy(sc->pending + sc->n_pending, bytes, len);
	sc->n_pending += len;
	return MF_OK;
}

static void imap_stream_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_stream_ctx *sc = ctx;
	const struct imap_value *list, *body;
	struct imap_stream_req *q;
	/* A literal gathered whole: its bytes are there for done (the push of
	 * a small body into the page cache reads no file back). */
	int whole = sc->streamed.active && sc->streamed.written == 0 &&
	            sc->n_pending == sc->streamed.size;
	enum mf_status written = imap_stream_flush(sc);  /* the literal, if any, is whole */
	struct imap_streamed streamed = sc->streamed;
	uint64_t uid;

	sc->streamed.active = 0;
	list = imap_fetch_attributes(r, &uid);
	if (!list)
		return;
	body = imap_fetch_get(list, "BODY[]");
	if (!body)
		return;  /* news about flags, say */
	q = g_hash_table_lookup(sc->by_uid, GUINT_TO_POINTER((guint)uid));
	if (!q || (streamed.active && streamed.uid != uid)) {
		sc->bad = 1;
		return;
	}
	if (body->type != IMAP_VALUE_STRING) {
		imap_stream_finish(sc, q, MF_ERR_NOTFOUND);
	} else if (streamed.active) {
		q->r.written = streamed.written;
		q->r.bytes = whole && written == MF_OK ? sc->pending : NULL;
		imap_stream_finish(sc, q, written != MF_OK ? written
		                          : streamed.written == streamed.size ? MF_OK : MF_ERR_PROTOCOL);
	} else if (body->len > imap_body_limit(q->r.size_hint)) {
		imap_stream_finish(sc, q, MF_ERR_PROTOCOL);
	} else {
		enum mf_status st = imap_stream_place(sc, q, body->len);
		struct imap_streamed s = { .fd = q->r.fd, .offset = q->r.base };
		if (st == MF_OK)
			st = imap_streamed_write(&s, body->str, body->len);
		q->r.written = body->len;
		q->r.bytes = st == MF_OK ? body->str : NULL;
		imap_stream_finish(sc, q, st);
	}
	imap_stream_progress(sc);
	if (imap_stream_refill(sc, 0) != MF_OK)
		c->broken = 1;
}

/* Every request of tag still open is done with st (gone from the server
 * when the command ended well); tag 0: every request. */
static void imap_stream_close_tag(struct imap_stream_ctx *sc, unsigned tag, enum mf_status st)
{
	GHashTableIter it;
	gpointer v;
	GPtrArray *left = g_ptr_array_new();

	g_hash_table_iter_init(&it, sc->by_uid);
	while (g_hash_table_iter_next(&it, NULL, &v))
		if (!tag || ((struct imap_stream_req *)v)->tag == tag)
			g_ptr_array_add(left, v);
	for (guint i = 0; i < left->len; i++)
		imap_stream_finish(sc, g_ptr_array_index(left, i), st);
	g_ptr_array_free(left, TRUE);
}

static enum mf_status imap_stream_run(struct imap_stream_ctx *sc, const char *wire_name,
                                      uint32_t uidvalidity)
{
	const struct imap_sink sink = { imap_stream_literal, imap_stream_data, sc };
	struct imap_conn *c = sc->c;
	enum mf_status st;

	st = imap_examine(c, wire_name, 0);
	if (st == MF_OK && c->uidvalidity != uidvalidity)
		st = MF_ERR_NOTFOUND;
	if (st != MF_OK)
		return st;
	c->sink = &sink;
	for (;;) {
		st = imap_stream_refill(sc, 1);
		if (st != MF_OK || g_queue_is_empty(&sc->tags))
			break;
		unsigned tag = GPOINTER_TO_UINT(g_queue_pop_head(&sc->tags));
		imap_stream_progress(sc);
		st = imap_wait(c, tag, imap_stream_untagged, sc);
		if (st == MF_OK && (sc->bad || sc->streamed.active)) {
			log_error("IMAP server answered a streamed FETCH with bodies not asked for");
			st = MF_ERR_PROTOCOL;
		}
		if (sc->stop && !g_queue_is_empty(&sc->tags))
			st = MF_ERR_IO;  /* abandoned: don't wait for the rest */
		if (st != MF_OK && st != MF_ERR_REFUSED)
			break;
		/* NO for the whole set: each body not answered is gone. */
		imap_stream_close_tag(sc, tag, MF_ERR_NOTFOUND);
		net_set_deadline(c->net, 0);
	}
	c->sink = NULL;
	if (st != MF_OK || !g_queue_is_empty(&sc->tags))
		c->broken = 1;  /* FETCH answers may still be due: never reused */
	return st;
}

enum mf_status imap_stream_bodies(struct mailbox *mb, const char *wire_name,
                                  uint32_t uidvalidity, const struct mailbox_stream *stream)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	struct imap_stream_ctx sc = { .cb = stream };
	enum mf_status st;

	sc.by_uid = g_hash_table_new(g_direct_hash, g_direct_equal);
	sc.pending = g_malloc(IMAP_STREAM_WRITE_BYTES);
	g_queue_init(&sc.tags);
	st = imap_acquire(d, wire_name, &sc.c);
	if (st == MF_OK) {
		net_set_deadline(sc.c->net, net_deadline_from_now(sc.c->net));
		st = imap_stream_run(&sc, wire_name, uidvalidity);
		if (sc.stop && st == MF_ERR_IO)
			st = MF_OK;  /* told to stop */
		net_set_deadline(sc.c->net, 0);
		imap_release(d, sc.c);
	}
	imap_stream_close_tag(&sc, 0, st != MF_OK ? st : MF_ERR_IO);
	g_queue_clear(&sc.tags);
	g_hash_table_destroy(sc.by_uid);
	g_free(sc.pending);
	return st;
}

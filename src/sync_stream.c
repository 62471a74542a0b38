/* sync_stream.c — streamed read-ahead: once a reader goes through a
 * folder in order, a thread of the folder's own keeps the driver's
 * stream_bodies going ahead of it. The stream hands the driver the next
 * uncached messages in the reader's order (names or UIDs) while the bytes
 * ahead of the reader fit the window, commits each body to the store as
 * soon as the driver says it is complete, and wakes an open waiting for
 * it. An open of a message the stream has not reached is fetched at once
 * elsewhere (sync_body.c) and the stream goes on after it; a reader that
 * goes back, far ahead, or makes no open for a while ends the stream.
 * One that ran to the folder's end keeps, until collected, what its
 * reader has not reached: the reader's hits there stay its own.
 *
 * Must not: stream with -o mark_seen (sync_body.c never starts one), hold
 * the context's lock across the store or the network, hand out more than
 * the window (a fraction of cache_size: eviction never throws out what
 * the reader has not reached), or take the last connection. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cpus.h"
#include "log.h"
#include "stats.h"
#include "sync_int.h"

#define SYNC_STREAM_WINDOW ((uint64_t)32 * 1024 * 1024)  /* bytes ahead of the reader */
#define SYNC_STREAM_WINDOW_MAX ((uint64_t)256 * 1024 * 1024)  /* on a far link */
#define SYNC_STREAM_PACE_US 20000  /* the reader's pace, measured over this at least */
#define SYNC_STREAM_FIRST 64    /* messages planned as a stream starts */
#define SYNC_STREAM_MIN_WINDOW ((uint64_t)64 * 1024)
#define SYNC_STREAM_IDLE_US (5 * G_USEC_PER_SEC)   /* no open for so long: the stream ends */
#define SYNC_STREAM_BATCH 16    /* complete bodies worth a transaction of their own */
#define SYNC_STREAM_BACKLOG 1024 /* so many waiting: the stream commits them itself */
#define SYNC_STREAM_LINGER_US 5000  /* fewer wait no longer than this */

struct sync_stream_entry {
	uint32_t uid;
	char *name;                /* its key in name order */
	char *remote_id;           /* the driver's own id (POP3), or NULL */
	uint64_t size;
	char *tmp;                 /* the download's file, until committed */
	int fd;
	int64_t pack;              /* or its place in the stream's pack (pack 0: none) */
	uint64_t off, len;
	int flight;                /* planned, with the driver, or being committed */
	int ready;                 /* complete, waiting in the stream's batch */
	int sent;                  /* handed to the driver */
	int consumed;              /* the reader reached or passed it */
	int waiters;               /* opens waiting for it: it stays */
	char *bytes;               /* its bytes for sync_ctx.arrived, until committed */
	enum mf_status status;     /* once not in flight: MF_OK when in the store */
};

struct sync_stream {
	gint refs;
	struct sync_ctx *s;
	int64_t folder_id;
	uint64_t ino_base;
	char *wire_name;
	uint32_t uidvalidity;
	int by_uid;                /* the reader's order: UIDs, else names */
	uint32_t cursor_uid;       /* the last message handed out (or opened ahead) */
	char *cursor_name;
	uint32_t reader_uid;       /* the furthest the reader went */
	char *reader_name;
	int exhausted;             /* nothing uncached after the cursor */
	GQueue order;              /* struct sync_stream_entry *, planned, in order */
	GList *first_unsent;       /* in order: the first not handed to the driver */
	GHashTable *entries;       /* uid -> entry (borrowed from order) */
	/* Complete bodies not yet in the store, in order: one transaction
	 * per body cost the stream a third of its time, so they go in
	 * batches, at once when a reader waits for one of them. A thread of
	 * their own commits them (the committer), while the stream's goes on
	 * reading: what comes in during a commit is the next batch. */
	GPtrArray *ready;
	int committing;            /* batches being committed */
	GThread *committer;
	GCond commit_cond;         /* ready grew, or the committer must end */
	int commit_stop;
	uint64_t ahead;            /* bytes handed out and not consumed */
	uint64_t window;           /* the most ahead may be, between these two: */
	uint64_t window_base, window_max;
	uint64_t rtt_us;           /* the link's round trip (mailbox_ops.link_rtt) */
	uint64_t consumed, paced;  /* bytes the reader reached; as last measured */
	gint64 paced_at;
	gint64 last_open, progress_at;
	int stop, finished;
	GThread *thread;
	/* Bodies go into packs as they come (the driver asks for a place):
	 * no file is made for each. Without it, each gets a download file. */
	struct store_pack *pack;
};

/* Under s->lock unless noted. */

static void sync_stream_entry_free(struct sync_stream_entry *e)
{
	g_free(e->name);
	g_free(e->remote_id);
	g_free(e->tmp);
	g_free(e->bytes);
	g_free(e);
}

static void sync_stream_unref(struct sync_stream *st)
{
	if (!g_atomic_int_dec_and_test(&st->refs))
		return;
	while (!g_queue_is_empty(&st->order)) {
		sync_stream_entry_free(g_queue_pop_head(&st->order));
	}
	g_hash_table_destroy(st->entries);
	g_ptr_array_free(st->ready, TRUE);
	g_cond_clear(&st->commit_cond);
	g_free(st->cursor_name);
	g_free(st->reader_name);
	g_free(st->wire_name);
	g_free(st);
}

static int sync_stream_before(const struct sync_stream *st, uint32_t uid, const char *name,
                              uint32_t other_uid, const char *other_name)
{
	if (st->by_uid)
		return uid < other_uid;
	return strcmp(name, other_name) < 0;
}

/* Entries the reader is done with, and the driver too, go. */
static void sync_stream_reap(struct sync_stream *st)
{
	struct sync_stream_entry *e;

	while ((e = g_queue_peek_head(&st->order)) && e->consumed && !e->flight && !e->waiters) {
		g_queue_pop_head(&st->order);
		g_hash_table_remove(st->entries, GUINT_TO_POINTER(e->uid));
		sync_stream_entry_free(e);
	}
}

/* The window follows the reader's pace: what it reaches in two round
 * trips of the link is on its way, besides the base (what it may run into
 * at once). A fixed 32 MiB lasted a tar 0.1 s: through a 100 ms round
 * trip it waited on the link, and a cold tar took 3.9-4.3 s where mbsync
 * took 3.1-3.6 s. A reader that slows lets it shrink again (one that
 * stops leaves it as it was, until the stream ends), and on a link slower
 * than the reader the pace is the link's: no more is asked ahead than the
 * link delivers in two round trips. */
static void sync_stream_pace(struct sync_stream *st)
{
	gint64 now = g_get_monotonic_time();
	gint64 spell = now - st->paced_at;
	uint64_t rate, w;

	if (spell < SYNC_STREAM_PACE_US || (uint64_t)spell < st->rtt_us)
		return;
	rate = (st->consumed - st->paced) * (uint64_t)G_USEC_PER_SEC / (uint64_t)spell;
	st->paced = st->consumed;
	st->paced_at = now;
	w = st->window_base + 2 * (rate / 1024) * st->rtt_us / (G_USEC_PER_SEC / 1024);
	w = MIN(w, st->window_max);
	if (w > st->window && w > __atomic_load_n(&mf_stats.stream_window, __ATOMIC_RELAXED))
		log_debug("stream of %s: window %" G_GUINT64_FORMAT " bytes, at %" G_GUINT64_FORMAT
		          " bytes/s through %" G_GUINT64_FORMAT " us", st->wire_name, w, rate, st->rtt_us);
	st->window = w;
	stats_max(stream_window, w);
}

/* What the window has free: bytes that may be planned ahead of the reader. */
static uint64_t sync_stream_room(const struct sync_stream *st)
{
	return st->ahead < st->window ? st->window - st->ahead : 0;
}

/* Whether more is to be planned: a quarter of the window is free. The
 * reader then has three quarters of it ahead, and the next command asks
 * for a quarter at least. A full window refilled as each message was read
 * made a command of each, and woke the stream's thread at each open: a
 * tar of 50,000 small messages sent from 200 to 4,000 FETCHes. A message
 * larger than what is free waits until it fits (one larger than the
 * window is left to its open: sync_stream_pick asks for none such). */
static int sync_stream_wants(const struct sync_stream *st)
{
	return sync_stream_room(st) >= st->window / 4;
}

/* The reader reached the message (uid, name): it and all before it are
 * no longer ahead of it. */
static void sync_stream_consume(struct sync_stream *st, uint32_t uid, const char *name)
{
	if (sync_stream_before(st, st->reader_uid, st->reader_name, uid, name)) {
		st->reader_uid = uid;
		g_free(st->reader_name);
		st->reader_name = g_strdup(name);
	}
	for (GList *l = st->order.head; l; l = l->next) {
		struct sync_stream_entry *e = l->data;
		if (sync_stream_before(st, uid, name, e->uid, e->name))
			break;
		if (!e->consumed) {
			e->consumed = 1;
			st->ahead -= e->size;
			st->consumed += e->size;
		}
	}
	sync_stream_pace(st);
	sync_stream_reap(st);
	if (sync_stream_wants(st))
		g_cond_broadcast(&st->s->stream_cond);  /* the stream's thread plans */
}

/* ---------------------------------------------------------------- the driver's side */

struct sync_stream_pick {
	struct sync_stream *st;
	GPtrArray *entries;
	uint64_t room, bytes;
	size_t max;
	int full;                  /* the next one did not fit */
};

/* A planned entry for m: in flight, no file yet. */
static struct sync_stream_entry *sync_stream_entry_new(const struct store_message *m)
{
	struct sync_stream_entry *e = g_new0(struct sync_stream_entry, 1);

	e->uid = m->uid;
	e->name = g_strdup(m->name);
	e->remote_id = g_strdup(m->remote_id);
	e->size = m->size;
	e->fd = -1;
	e->flight = 1;
	return e;
}

static int sync_stream_collect(void *ctx, const struct store_message *m)
{
	struct sync_stream_pick *p = ctx;
	struct sync_stream_entry *e;

	if (p->entries->len >= p->max || p->bytes + m->size > p->room) {
		p->full = 1;
		return 1;
	}
	e = sync_stream_entry_new(m);
	g_ptr_array_add(p->entries, e);
	p->bytes += m->size;
	return 0;
}

/* Looks up the next messages after the cursor that fit in room; makes
 * their files. Called without the lock; the cursor is st's to change
 * only under it, and only this thread moves it forward by handing out. */
static void sync_stream_pick(struct sync_stream *st, struct store_message *cursor,
                             struct sync_stream_pick *p)
{
	struct store *store = st->s->store;

	store_messages_after(store, st->folder_id, cursor, st->by_uid, STORE_UNCACHED, st->window,
	                     p->max, sync_stream_collect, p);
	for (guint i = 0; i < p->entries->len && !st->pack; i++) {
		struct sync_stream_entry *e = g_ptr_array_index(p->entries, i);
		e->fd = store_body_begin(store, &e->tmp);
		if (e->fd < 0) {
			for (guint j = i; j < p->entries->len; j++)
				sync_stream_entry_free(g_ptr_array_index(p->entries, j));
			g_ptr_array_set_size(p->entries, i);
			break;
		}
	}
}

static void sync_stream_drop(struct sync_stream *st, GPtrArray *entries)
{
	for (guint i = 0; i < entries->len; i++) {
		struct sync_stream_entry *e = g_ptr_array_index(entries, i);
		if (e->fd >= 0)
			close(e->fd);
		store_body_abort(st->s->store, e->tmp);
		sync_stream_entry_free(e);
	}
}

/* e joins the stream's plan, last, ahead of the reader (lock held). */
static void sync_stream_enqueue(struct sync_stream *st, struct sync_stream_entry *e)
{
	g_queue_push_tail(&st->order, e);
	if (!st->first_unsent)
		st->first_unsent = st->order.tail;
	g_hash_table_insert(st->entries, GUINT_TO_POINTER(e->uid), e);
	st->ahead += e->size;
}

/* Adds the next messages that fit in the window to the stream, their
 * files made, not yet handed to the driver. Called with s->lock held,
 * dropped while the store is asked. */
static void sync_stream_plan(struct sync_stream *st, size_t max)
{
	struct sync_ctx *s = st->s;

	for (;;) {
		uint64_t room = sync_stream_room(st);
		if (st->stop || st->exhausted || room == 0)
			return;
		struct store_message cursor = { .uid = st->cursor_uid, .name = g_strdup(st->cursor_name) };
		struct sync_stream_pick p = { st, g_ptr_array_new(), room, 0, max, 0 };
		uint32_t upto = sync_stored_upto(s, st->folder_id);
		g_mutex_unlock(&s->lock);
		sync_stream_pick(st, &cursor, &p);
		g_mutex_lock(&s->lock);
		int moved = cursor.uid != st->cursor_uid || g_strcmp0(cursor.name, st->cursor_name) != 0;
		g_free(cursor.name);
		if (st->stop || moved) {
			/* Stopped, or an open moved the cursor meanwhile. */
			g_mutex_unlock(&s->lock);
			sync_stream_drop(st, p.entries);
			g_mutex_lock(&s->lock);
			g_ptr_array_free(p.entries, TRUE);
			continue;
		}
		/* Nothing after the cursor: the end, unless the folder's first
		 * listing is still being stored (its next part wakes us), or a
		 * part of it landed while the store was asked. */
		if (p.entries->len == 0 && !p.full && sync_stored_upto(s, st->folder_id) != upto) {
			g_ptr_array_free(p.entries, TRUE);
			continue;
		}
		if (p.entries->len == 0 && !p.full && upto == UINT32_MAX)
			st->exhausted = 1;
		for (guint i = 0; i < p.entries->len; i++) {
			struct sync_stream_entry *e = g_ptr_array_index(p.entries, i);
			sync_stream_enqueue(st, e);
			st->cursor_uid = e->uid;
			g_free(st->cursor_name);
			st->cursor_name = g_strdup(e->name);
		}
		g_ptr_array_free(p.entries, TRUE);
		return;
	}
}

static void sync_stream_commit_ready(struct sync_stream *st);

static int sync_stream_next(void *ctx, struct mailbox_body_request *reqs, size_t max, int wait)
{
	struct sync_stream *st = ctx;
	struct sync_ctx *s = st->s;
	int n = 0;

	g_mutex_lock(&s->lock);
	for (;;) {
		if (st->stop) {
			n = -1;
			break;
		}
		/* In sizeable batches, even with the pipe empty (the reader then
		 * has three quarters of a window ahead of it): each batch is a
		 * command, and a command per body is what streaming avoids. */
		if (!st->first_unsent && sync_stream_wants(st))
			sync_stream_plan(st, max);
		while (st->first_unsent && (size_t)n < max) {
			struct sync_stream_entry *e = st->first_unsent->data;
			e->sent = 1;
			reqs[n++] = (struct mailbox_body_request){ .uid = e->uid, .remote_id = e->remote_id,
			                                           .size_hint = e->size, .fd = e->fd };
			st->first_unsent = st->first_unsent->next;
		}
		if (n > 0 || !wait)
			break;
		if (st->exhausted) {
			n = 0;
			break;
		}
		if (st->ready->len > 0) {
			/* Nothing to hand out: what is complete goes to the store. */
			g_mutex_unlock(&s->lock);
			sync_stream_commit_ready(st);
			g_mutex_lock(&s->lock);
			continue;
		}
		/* The window is full: wait for the reader, not forever. */
		gint64 until = st->last_open + SYNC_STREAM_IDLE_US;
		if (!g_cond_wait_until(&s->stream_cond, &s->lock, until) &&
		    g_get_monotonic_time() >= st->last_open + SYNC_STREAM_IDLE_US) {
			log_debug("stream of %s: no reader for %d s, ended", st->wire_name,
			          (int)(SYNC_STREAM_IDLE_US / G_USEC_PER_SEC));
			st->stop = 1;
		}
	}
	g_mutex_unlock(&s->lock);
	return n;
}

/* Commits the complete bodies of the batch to the store, in one
 * transaction, and wakes the opens waiting for them. Called without the
 * lock, by the stream's thread or by an open that waits for a body in the
 * batch; each batch is taken whole by one of them. */
static void sync_stream_commit_ready(struct sync_stream *st)
{
	struct sync_ctx *s = st->s;
	struct store_body_item *items;
	char **bytes;
	GPtrArray *batch;
	size_t n = 0;

	g_mutex_lock(&s->lock);
	if (st->ready->len == 0) {
		g_mutex_unlock(&s->lock);
		return;
	}
	batch = st->ready;
	st->ready = g_ptr_array_new();
	st->committing++;
	for (guint i = 0; i < batch->len; i++)
		((struct sync_stream_entry *)g_ptr_array_index(batch, i))->ready = 0;
	g_mutex_unlock(&s->lock);
	/* The entries stay while in flight: their tmp is ours until then. */
	items = g_new0(struct store_body_item, batch->len);
	bytes = g_new0(char *, batch->len);
	for (guint i = 0; i < batch->len; i++) {
		struct sync_stream_entry *e = g_ptr_array_index(batch, i);
		if (e->status == MF_OK) {
			bytes[n] = g_steal_pointer(&e->bytes);
			items[n++] = (struct store_body_item){ .uid = e->uid, .tmp_path = e->tmp,
			                                       .pack = e->pack, .off = e->off,
			                                       .len = e->len };
		} else {
			store_body_abort(s->store, e->tmp);
		}
	}
	if (n > 0)
		store_body_commit_many(s->store, st->folder_id, items, n);
	g_mutex_lock(&s->arrival_lock);
	/* Not one whose size was news: the kernel's idea of it may be
	 * longer than the body, and what it is given is kept to that. */
	for (size_t i = 0; i < n; i++) {
		if (s->arrived && bytes[i] && items[i].status == MF_OK && !items[i].size_changed)
			s->arrived(s->arrived_ctx, st->ino_base, items[i].uid,
			           g_steal_pointer(&bytes[i]), items[i].len);
		g_free(bytes[i]);
	}
	g_mutex_unlock(&s->arrival_lock);
	g_mutex_lock(&s->lock);
	n = 0;
	for (guint i = 0; i < batch->len; i++) {
		struct sync_stream_entry *e = g_ptr_array_index(batch, i);
		if (e->status == MF_OK)
			e->status = items[n++].status;
		g_clear_pointer(&e->tmp, g_free);
		e->flight = 0;
	}
	st->committing--;
	st->progress_at = g_get_monotonic_time();
	sync_stream_reap(st);
	g_cond_broadcast(&s->stream_cond);
	g_mutex_unlock(&s->lock);
	g_free(items);
	g_free(bytes);
	g_ptr_array_free(batch, TRUE);
}

static void sync_stream_done(void *ctx, const struct mailbox_body_request *req)
{
	struct sync_stream *st = ctx;
	struct sync_ctx *s = st->s;
	struct sync_stream_entry *e;
	int64_t pack;
	uint64_t off, len;
	char *bytes = NULL;
	size_t max;
	int now;

	/* A listener gets the bytes as they were written: from the driver,
	 * or read back now, while they are the stream's alone and in the
	 * page cache. */
	g_mutex_lock(&s->arrival_lock);
	max = s->arrived ? s->arrival_max : 0;
	g_mutex_unlock(&s->arrival_lock);
	if (req->status == MF_OK && req->written > 0 && req->written <= max) {
		if (req->bytes) {
			bytes = g_memdup2(req->bytes, req->written);
		} else {
			bytes = g_malloc(req->written);
			if (pread(req->fd, bytes, req->written, (off_t)req->base) !=
			    (ssize_t)req->written)
				g_clear_pointer(&bytes, g_free);
		}
	}
	g_mutex_lock(&s->lock);
	e = g_hash_table_lookup(st->entries, GUINT_TO_POINTER(req->uid));
	if (!e) {
		g_mutex_unlock(&s->lock);
		g_free(bytes);
		return;
	}
	if (!st->pack)
		e->len = req->written;
	g_free(e->bytes);
	e->bytes = bytes;
	pack = e->pack;
	off = e->off;
	len = e->len;
	e->fd = -1;
	e->status = req->status;
	e->ready = 1;
	g_ptr_array_add(st->ready, e);
	/* An open waiting commits the batch itself (sync_stream_open). */
	if (e->waiters > 0)
		g_cond_broadcast(&s->stream_cond);
	if (st->ready->len >= SYNC_STREAM_BATCH || e->waiters > 0)
		g_cond_signal(&st->commit_cond);
	now = st->ready->len >= SYNC_STREAM_BACKLOG;
	g_mutex_unlock(&s->lock);
	if (!st->pack)
		close(req->fd);
	else if (req->status != MF_OK && pack)
		store_pack_discard(st->pack, pack, off, len);
	if (now)
		sync_stream_commit_ready(st);
}

/* The driver has a body's length: it goes into the stream's pack. */
static int sync_stream_place(void *ctx, struct mailbox_body_request *req, uint64_t len)
{
	struct sync_stream *st = ctx;
	struct sync_stream_entry *e;
	int64_t pack;
	uint64_t off;
	int fd = store_pack_place(st->pack, len, &pack, &off);

	if (fd < 0)
		return -1;
	g_mutex_lock(&st->s->lock);
	e = g_hash_table_lookup(st->entries, GUINT_TO_POINTER(req->uid));
	if (e) {
		e->pack = pack;
		e->off = off;
		e->len = len;
	}
	g_mutex_unlock(&st->s->lock);
	if (!e)
		return -1;
	req->fd = fd;
	req->base = off;
	return 0;
}

/* The committer: a batch once SYNC_STREAM_BATCH bodies wait, or an
 * open waits for one, or the first of them has waited
 * SYNC_STREAM_LINGER_US; until the stream's thread ends it. */
static gpointer sync_stream_committer(gpointer data)
{
	struct sync_stream *st = data;
	struct sync_ctx *s = st->s;
	gint64 since = 0;

	g_mutex_lock(&s->lock);
	while (!st->commit_stop) {
		gint64 now = g_get_monotonic_time();
		if (st->ready->len == 0) {
			since = 0;
			g_cond_wait(&st->commit_cond, &s->lock);
			continue;
		}
		if (!since)
			since = now;
		int waited = 0;
		for (guint i = 0; i < st->ready->len && !waited; i++)
			waited = ((struct sync_stream_entry *)g_ptr_array_index(st->ready, i))->waiters > 0;
		if (st->ready->len < SYNC_STREAM_BATCH && !waited && now < since + SYNC_STREAM_LINGER_US) {
			g_cond_wait_until(&st->commit_cond, &s->lock, since + SYNC_STREAM_LINGER_US);
			continue;
		}
		since = 0;
		g_mutex_unlock(&s->lock);
		sync_stream_commit_ready(st);
		g_mutex_lock(&s->lock);
	}
	g_mutex_unlock(&s->lock);
	return NULL;
}

static gpointer sync_stream_thread(gpointer data)
{
	struct sync_stream *st = data;
	struct sync_ctx *s = st->s;
	const struct mailbox_stream cb = { .next = sync_stream_next, .done = sync_stream_done,
	                                   .place = st->pack ? sync_stream_place : NULL,
	                                   .ctx = st };
	enum mf_status rc;

	rc = s->mb->ops->stream_bodies(s->mb, st->wire_name, st->uidvalidity, &cb);
	if (rc != MF_OK)
		log_warn("the stream of folder %s ended: %s", st->wire_name, mf_status_str(rc));
	g_mutex_lock(&s->lock);
	st->commit_stop = 1;
	g_cond_signal(&st->commit_cond);
	g_mutex_unlock(&s->lock);
	g_thread_join(st->committer);
	st->committer = NULL;
	sync_stream_commit_ready(st);
	g_mutex_lock(&s->lock);
	while (st->committing > 0)  /* an open's batch: its entries are still in flight */
		g_cond_wait(&s->stream_cond, &s->lock);
	st->finished = st->stop = 1;
	st->first_unsent = NULL;
	/* Planned but never sent: their files go (taken under the lock: a
	 * reader may free the entry as soon as it is out of flight). */
	GPtrArray *tmps = g_ptr_array_new_with_free_func(g_free);
	GArray *fds = g_array_new(FALSE, FALSE, sizeof(int));
	for (GList *l = st->order.head; l; l = l->next) {
		struct sync_stream_entry *e = l->data;
		if (e->flight && !e->sent) {
			g_ptr_array_add(tmps, e->tmp);
			g_array_append_val(fds, e->fd);
			e->tmp = NULL;
			e->fd = -1;
			e->status = MF_ERR_IO;
		}
		e->flight = 0;  /* done was called for each one sent */
	}
	g_mutex_unlock(&s->lock);
	for (guint i = 0; i < tmps->len; i++) {
		close(g_array_index(fds, int, i));
		store_body_abort(s->store, g_ptr_array_index(tmps, i));
	}
	g_ptr_array_free(tmps, TRUE);
	g_array_free(fds, TRUE);
	/* Every body of the packs is committed or discarded: they go with
	 * their last body from now on. */
	store_pack_free(st->pack);
	st->pack = NULL;
	g_mutex_lock(&s->lock);
	g_cond_broadcast(&s->stream_cond);
	g_mutex_unlock(&s->lock);
	stats_sub(streams_active, 1);
	return NULL;
}

/* ---------------------------------------------------------------- the reader's side */

int sync_first_message(void *ctx, const struct store_message *m)
{
	struct store_message *next = ctx;

	next->uid = m->uid;
	next->name = g_strdup(m->name);
	return 1;
}

/* The window a stream starts with, and the most it grows to
 * (sync_stream_pace): fractions of cache_size (what the reader has not
 * reached is never evicted). MAILFS_STREAM_WINDOW fixes it, for tests and
 * measurements. */
static void sync_stream_window(const struct sync_ctx *s, uint64_t *base, uint64_t *max)
{
	const char *env = getenv("MAILFS_STREAM_WINDOW");

	*base = MIN(SYNC_STREAM_WINDOW, s->cfg->cache_size / 16);
	*max = MIN(SYNC_STREAM_WINDOW_MAX, s->cfg->cache_size / 4);
	if (env && *env)
		*base = *max = MIN(g_ascii_strtoull(env, NULL, 10), s->cfg->cache_size / 4);
	*base = MAX(*base, SYNC_STREAM_MIN_WINDOW);
	*max = MAX(*max, *base);
}

static struct sync_stream *sync_stream_find(struct sync_ctx *s, int64_t folder_id)
{
	for (guint i = 0; s->streams && i < s->streams->len; i++) {
		struct sync_stream *st = g_ptr_array_index(s->streams, i);
		if (st->folder_id == folder_id && !st->finished)
			return st;
	}
	return NULL;
}

/* Finished streams leave the registry (their threads are joined). */
static void sync_stream_collect_finished(struct sync_ctx *s, int all)
{
	GPtrArray *gone = g_ptr_array_new();

	g_mutex_lock(&s->lock);
	for (guint i = 0; s->streams && i < s->streams->len;) {
		struct sync_stream *st = g_ptr_array_index(s->streams, i);
		if (all)
			st->stop = 1;
		if (st->finished || all) {
			g_ptr_array_add(gone, st);
			g_ptr_array_remove_index(s->streams, i);
		} else {
			i++;
		}
	}
	g_cond_broadcast(&s->stream_cond);
	g_mutex_unlock(&s->lock);
	for (guint i = 0; i < gone->len; i++) {
		struct sync_stream *st = g_ptr_array_index(gone, i);
		g_thread_join(st->thread);
		sync_stream_unref(st);
	}
	g_ptr_array_free(gone, TRUE);
}

int sync_stream_active(struct sync_ctx *s, int64_t folder_id)
{
	int active;

	g_mutex_lock(&s->lock);
	active = sync_stream_find(s, folder_id) != NULL;
	g_mutex_unlock(&s->lock);
	return active;
}

int sync_stream_start(struct sync_ctx *s, const struct store_folder *f,
                      const struct store_message *after, int by_uid)
{
	struct sync_stream *st;
	int first;
	/* One connection stays for everything else, and watched folders
	 * (mailbox_ops.watch) hold one each. */
	int max = s->cfg->connections - 1 - (s->mb && s->mb->ops->watch ? s->cfg->watch : 0);

	if (!s->mb || !s->mb->ops->stream_bodies || s->cfg->mark_seen)
		return 0;
	if (!(s->mb->ops->caps & MAILBOX_CAP_SERVER_UIDS))
		max = 1;  /* one session (POP3): the stream lends it to opens */
	sync_stream_collect_finished(s, 0);
	g_mutex_lock(&s->lock);
	if (!s->streams)
		s->streams = g_ptr_array_new();
	if (sync_stream_find(s, f->id) || (int)s->streams->len >= max) {
		g_mutex_unlock(&s->lock);
		return sync_stream_find(s, f->id) != NULL;
	}
	st = g_new0(struct sync_stream, 1);
	st->refs = 1;
	st->s = s;
	st->folder_id = f->id;
	st->ino_base = f->ino_base;
	st->wire_name = g_strdup(f->wire_name);
	st->uidvalidity = f->uidvalidity;
	st->by_uid = by_uid;
	st->cursor_uid = after->uid;
	st->cursor_name = g_strdup(after->name);
	st->reader_uid = after->uid;
	st->reader_name = g_strdup(after->name);
	g_queue_init(&st->order);
	st->entries = g_hash_table_new(g_direct_hash, g_direct_equal);
	st->ready = g_ptr_array_new();
	sync_stream_window(s, &st->window_base, &st->window_max);
	st->window = st->window_base;
	st->rtt_us = s->mb->ops->link_rtt ? s->mb->ops->link_rtt(s->mb) : 0;
	st->paced_at = g_get_monotonic_time();
	stats_max(stream_window, st->window);
	if (s->mb->ops->caps & MAILBOX_CAP_STREAM_PLACE)
		st->pack = store_pack_new(s->store, f->id);
	st->last_open = st->progress_at = g_get_monotonic_time();
	g_ptr_array_add(s->streams, st);
	first = st->pack && after->size <= st->window;
	if (first) {
		/* The message opened first, its place asked of the pack when its
		 * length is known: no file is made for it now. */
		sync_stream_enqueue(st, sync_stream_entry_new(after));
	}
	/* The first batch now: the reader's next opens find it on its way
	 * while the stream's connection is still being opened. */
	sync_stream_plan(st, SYNC_STREAM_FIRST);
	g_mutex_unlock(&s->lock);
	stats_add(streams_started, 1);
	stats_add(streams_active, 1);
	log_debug("stream of %s starts after %s (%s order, window %" G_GUINT64_FORMAT " bytes)",
	          f->path, after->name, by_uid ? "UID" : "name", st->window);
	g_cond_init(&st->commit_cond);
	st->committer = cpus_thread_new("mailfs-commit", sync_stream_committer, st);
	st->thread = cpus_thread_new("mailfs-stream", sync_stream_thread, st);
	return first ? 2 : 1;
}

/* Whether m is the first uncached message after the stream's cursor: the
 * reader is just ahead of the stream, not elsewhere. */
static int sync_stream_is_next(struct sync_ctx *s, struct sync_stream *st,
                               const struct store_message *m)
{
	struct store_message cursor = { .uid = st->cursor_uid, .name = g_strdup(st->cursor_name) };
	struct store_message next = { 0 };
	int by_uid = st->by_uid;
	int64_t folder_id = st->folder_id;

	g_mutex_unlock(&s->lock);
	store_messages_after(s->store, folder_id, &cursor, by_uid, STORE_UNCACHED, UINT64_MAX, 1,
	                     sync_first_message, &next);
	g_mutex_lock(&s->lock);
	g_free(cursor.name);
	g_free(next.name);
	return next.uid == m->uid;
}

int sync_stream_note_hit(struct sync_ctx *s, int64_t folder_id, uint32_t uid)
{
	int running = 0, brought = 0;

	g_mutex_lock(&s->lock);
	for (guint i = 0; !brought && s->streams && i < s->streams->len; i++) {
		struct sync_stream *st = g_ptr_array_index(s->streams, i);
		struct sync_stream_entry *e;
		if (st->folder_id != folder_id)
			continue;
		running |= !st->finished;
		e = g_hash_table_lookup(st->entries, GUINT_TO_POINTER(uid));
		/* A finished stream keeps what its reader has not reached: the
		 * reader coming to one of those is no news for anyone, when the
		 * kernel holds the body (sync_ahead would only look it up). */
		if (!e || (st->finished && (e->status != MF_OK ||
		                            !sync_body_held(s, st->ino_base, uid))))
			continue;
		if (!st->finished)
			st->last_open = g_get_monotonic_time();
		sync_stream_consume(st, e->uid, e->name);
		brought = 1;
	}
	g_mutex_unlock(&s->lock);
	return brought ? 2 : running;
}

int sync_stream_open(struct sync_ctx *s, int64_t folder_id, const struct store_message *m,
                     int *fd_out, uint64_t *off, uint64_t *len, enum mf_status *failed)
{
	gint64 timeout_us = (gint64)s->cfg->timeout * G_USEC_PER_SEC;
	struct sync_stream *st;
	struct sync_stream_entry *e;
	int served = 0, timed_out = 0;

	*failed = MF_OK;

	g_mutex_lock(&s->lock);
	st = sync_stream_find(s, folder_id);
	if (!st) {
		g_mutex_unlock(&s->lock);
		return 0;
	}
	st->last_open = g_get_monotonic_time();
again:
	e = g_hash_table_lookup(st->entries, GUINT_TO_POINTER(m->uid));
	if (e) {
		/* On its way: wait for it alone, as long as the stream moves. */
		g_atomic_int_inc(&st->refs);
		e->waiters++;
		sync_stream_consume(st, e->uid, e->name);
		while (e->flight && !st->finished) {
			if (e->ready) {
				/* Complete, in the batch: committed now, for us. */
				g_mutex_unlock(&s->lock);
				sync_stream_commit_ready(st);
				g_mutex_lock(&s->lock);
				continue;
			}
			gint64 until = st->progress_at + timeout_us;
			if (!g_cond_wait_until(&s->stream_cond, &s->lock, until) &&
			    g_get_monotonic_time() >= st->progress_at + timeout_us) {
				timed_out = 1;
				break;
			}
		}
		served = !e->flight && e->status == MF_OK;
		/* The reader waited a whole timeout for it already: asked again
		 * alone, it would wait another. */
		if (!served && (timed_out || (!e->flight && e->status == MF_ERR_TIMEOUT)))
			*failed = MF_ERR_TIMEOUT;
		e->waiters--;
		sync_stream_reap(st);
		g_mutex_unlock(&s->lock);
		sync_stream_unref(st);
		if (served) {
			*fd_out = store_body_open(s->store, folder_id, m->uid, off, len);
			served = *fd_out >= 0;
		}
		return served;
	}
	if (m->uid == st->cursor_uid) {
		/* The message the stream started after. */
	} else if (!sync_stream_before(st, m->uid, m->name, st->cursor_uid, st->cursor_name)) {
		/* Not reached yet: fetched at once elsewhere, and the stream goes
		 * on after it; a reader far ahead has left it. */
		uint32_t cursor_uid = st->cursor_uid;
		char *cursor_name = g_strdup(st->cursor_name);
		int next = sync_stream_is_next(s, st, m);
		int moved = cursor_uid != st->cursor_uid || g_strcmp0(cursor_name, st->cursor_name) != 0;
		g_free(cursor_name);
		if (moved) {
			/* The stream planned meanwhile (the lock was dropped): the
			 * message may be on its way now, or even in the cache, and
			 * must not be fetched twice. */
			goto again;
		}
		if (next && !st->finished) {
			sync_stream_consume(st, m->uid, m->name);
			st->cursor_uid = m->uid;
			g_free(st->cursor_name);
			st->cursor_name = g_strdup(m->name);
			st->exhausted = 0;
		} else {
			log_debug("a reader left the stream of %s: ended", st->wire_name);
			st->stop = 1;
		}
	} else {
		/* Behind the cursor: one the stream passed over (too large for
		 * the window) is fetched elsewhere; before what the stream holds,
		 * the reader went back. */
		if (sync_stream_before(st, st->reader_uid, st->reader_name, m->uid, m->name)) {
			sync_stream_consume(st, m->uid, m->name);
		} else {
			log_debug("a reader went back in the stream of %s: ended", st->wire_name);
			st->stop = 1;
		}
	}
	g_cond_broadcast(&s->stream_cond);
	g_mutex_unlock(&s->lock);
	return 0;
}

void sync_streams_stop(struct sync_ctx *s)
{
	sync_stream_collect_finished(s, 1);
	if (s->streams)
		g_ptr_array_free(s->streams, TRUE);
	s->streams = NULL;
}

/* sync_ahead.c — cached bodies pushed ahead of a reader. Once a reader
 * goes through a folder in order (names or UIDs) and finds the bodies in
 * the cache, a thread reads the next small ones from the cache and hands
 * them to the arrival listener (sync_set_arrival: fs puts them into the
 * kernel's page cache), as a stream does with the bodies it brings. An
 * open of a pushed body then asks the store nothing, and a read-only
 * mount sees no request for it at all: a warm tar there costs a READ
 * where the pushed run ends, not one a file. While a stream runs for the
 * folder, or a stream that ran to its end brought the body the reader
 * reaches (and the kernel holds it), the thread hears of no hit.
 *
 * Must not: hold more than SYNC_AHEAD_COUNT bodies and SYNC_AHEAD_BYTES
 * ahead of the reader, push a body whose length is not the size the
 * kernel was told (a READ serves that one), make an open wait (the open
 * notes where it is and goes on; the thread does the rest), or touch the
 * network. */
#include <string.h>
#include <unistd.h>
#include "cpus.h"
#include "log.h"
#include "sync_int.h"

#define SYNC_AHEAD_COUNT 64                       /* bodies ahead of the reader */
#define SYNC_AHEAD_BYTES ((uint64_t)2 * 1024 * 1024)  /* and their bytes, at most */
#define SYNC_AHEAD_HITS 1024                      /* hits waiting to be looked at */

struct sync_ahead_hit {
	int64_t folder;
	uint32_t uid;
};

struct sync_ahead {
	struct sync_ctx *s;
	GMutex lock;
	GCond cond;
	GThread *thread;
	int stop;
	/* Hits not yet looked at, oldest first (under lock): a reader far
	 * ahead of the thread has the older ones dropped. */
	GArray *hits;                  /* struct sync_ahead_hit */
	/* The thread's own: */
	int64_t folder;
	uint64_t ino_base;
	struct store_message prev;     /* the last hit looked at (uid and name) */
	int run;                       /* the reader goes in order: bodies are pushed */
	int by_uid;                    /* in UID order, else name order */
	struct store_message upto;     /* the last message the run went past */
	GQueue pending;                /* struct store_message (uid, name, size) pushed,
	                                  in order, not reached by the reader */
	uint64_t pending_bytes;
};

static void sync_ahead_set(struct store_message *to, const struct store_message *m)
{
	to->uid = m->uid;
	g_free(to->name);
	to->name = g_strdup(m->name);
}

static int sync_ahead_before(const struct sync_ahead *a, const struct store_message *x,
                             const struct store_message *y)
{
	return a->by_uid ? x->uid < y->uid : strcmp(x->name, y->name) < 0;
}

/* The first cached message after m, in UID or name order; 0 when none. */
static uint32_t sync_ahead_next(struct sync_ctx *s, int64_t folder, const struct store_message *m,
                                int by_uid)
{
	struct store_message next = { 0 };

	store_messages_after(s->store, folder, m, by_uid, STORE_CACHED, UINT64_MAX, 1,
	                     sync_first_message, &next);
	g_free(next.name);
	return next.uid;
}

struct sync_ahead_find {
	uint32_t uid;
	int found;
};

static int sync_ahead_match(void *ctx, const struct store_message *m)
{
	struct sync_ahead_find *f = ctx;

	f->found = m->uid == f->uid;
	return f->found;
}

/* Whether m is among the next SYNC_AHEAD_COUNT cached messages after the
 * run's end: a reader faster than the pushes, not one that jumped. */
static int sync_ahead_just_past(struct sync_ctx *s, struct sync_ahead *a,
                                const struct store_message *m)
{
	struct sync_ahead_find f = { m->uid, 0 };

	store_messages_after(s->store, a->folder, &a->upto, a->by_uid, STORE_CACHED, UINT64_MAX,
	                     SYNC_AHEAD_COUNT, sync_ahead_match, &f);
	return f.found;
}

static int sync_ahead_collect(void *ctx, const struct store_message *m)
{
	g_ptr_array_add(ctx, sync_message_copy(m));
	return 0;
}

/* One body from the cache to the listener, when its length is what the
 * kernel was told: 1 when the listener has it now (*pushed: the bytes
 * this call gave it, 0 when it held the body already), else 0. */
static int sync_ahead_push(struct sync_ctx *s, struct sync_ahead *a,
                           const struct store_message *m, uint64_t *pushed)
{
	uint64_t off = 0, len = 0;
	int fd;
	char *body;

	*pushed = 0;
	if (sync_body_held(s, a->ino_base, m->uid))
		return 1;
	fd = store_body_open(s->store, a->folder, m->uid, &off, &len);
	if (fd < 0)
		return 0;
	if (len == 0 || len != m->size) {
		close(fd);
		return 0;
	}
	body = g_malloc(len);
	if (pread(fd, body, len, (off_t)off) != (ssize_t)len) {
		close(fd);
		g_free(body);
		return 0;
	}
	close(fd);
	g_mutex_lock(&s->arrival_lock);
	if (s->arrived && len <= s->arrival_max) {
		s->arrived(s->arrived_ctx, a->ino_base, m->uid, g_steal_pointer(&body), len);
		g_mutex_unlock(&s->arrival_lock);
		*pushed = len;
		return 1;
	}
	g_mutex_unlock(&s->arrival_lock);
	g_free(body);
	return 0;
}

/* Pushes the run's next bodies, after upto, while fewer than the most are
 * ahead of the reader. */
static void sync_ahead_fill(struct sync_ctx *s, struct sync_ahead *a)
{
	GPtrArray *next = g_ptr_array_new_with_free_func(sync_message_free);
	size_t max;
	guint room = SYNC_AHEAD_COUNT - g_queue_get_length(&a->pending);

	g_mutex_lock(&s->arrival_lock);
	max = s->arrived ? s->arrival_max : 0;
	g_mutex_unlock(&s->arrival_lock);
	if (max == 0 || room < SYNC_AHEAD_COUNT / 2 || a->pending_bytes >= SYNC_AHEAD_BYTES / 2) {
		g_ptr_array_free(next, TRUE);
		return;
	}
	store_messages_after(s->store, a->folder, &a->upto, a->by_uid, STORE_CACHED, max, room,
	                     sync_ahead_collect, next);
	for (guint i = 0; i < next->len; i++) {
		const struct store_message *m = g_ptr_array_index(next, i);
		uint64_t n;
		if (a->pending_bytes + m->size > SYNC_AHEAD_BYTES)
			break;
		int had = sync_ahead_push(s, a, m, &n);
		sync_ahead_set(&a->upto, m);
		if (had) {
			struct store_message *c = sync_message_copy(m);
			c->size = n;  /* what it holds of the bytes ahead */
			g_queue_push_tail(&a->pending, c);
			a->pending_bytes += n;
		}
	}
	g_ptr_array_free(next, TRUE);
}

/* The reader reached m: what was pushed up to it is behind it now. */
static void sync_ahead_reached(struct sync_ahead *a, const struct store_message *m)
{
	struct store_message *p;

	while ((p = g_queue_peek_head(&a->pending)) && !sync_ahead_before(a, m, p)) {
		a->pending_bytes -= p->size;
		sync_message_free(g_queue_pop_head(&a->pending));
	}
}

static void sync_ahead_end_run(struct sync_ahead *a)
{
	a->run = 0;
	g_queue_clear_full(&a->pending, sync_message_free);
	a->pending_bytes = 0;
}

/* A hit on (folder, uid): the run goes on, starts, or ends. */
static void sync_ahead_look(struct sync_ctx *s, struct sync_ahead *a, int64_t folder, uint32_t uid)
{
	struct store_message m = { 0 };

	if (folder != a->folder) {
		struct store_folder f = { 0 };
		sync_ahead_end_run(a);
		g_clear_pointer(&a->prev.name, g_free);
		a->folder = folder;
		a->ino_base = 0;
		if (store_folder_by_id(s->store, folder, &f) == MF_OK)
			a->ino_base = f.ino_base;
		store_folder_clear(&f);
	}
	if (sync_stream_active(s, folder)) {
		/* A stream pushes the bodies it brings itself. */
		sync_ahead_end_run(a);
		return;
	}
	if (a->ino_base == 0 || store_message_by_uid(s->store, folder, uid, &m) != MF_OK || !m.name) {
		store_message_clear(&m);
		return;
	}
	if (a->run) {
		if (!sync_ahead_before(a, &m, &a->prev) && !sync_ahead_before(a, &a->upto, &m)) {
			/* Within what the run went past: a pushed one, or one too
			 * large to push that the reader opened on its way. */
			sync_ahead_reached(a, &m);
		} else if (sync_ahead_before(a, &a->upto, &m) && sync_ahead_just_past(s, a, &m)) {
			/* Just past the run's end: the reader read the pushed
			 * bodies without asking (a read-only mount), or went
			 * faster than they were pushed. */
			sync_ahead_reached(a, &m);
			sync_ahead_set(&a->upto, &m);
		} else {
			sync_ahead_end_run(a);
		}
	}
	if (!a->run && a->prev.name) {
		/* The next cached message after the last hit, in either order. */
		if (sync_ahead_next(s, folder, &a->prev, 1) == m.uid) {
			a->run = 1;
			a->by_uid = 1;
		} else if (sync_ahead_next(s, folder, &a->prev, 0) == m.uid) {
			a->run = 1;
			a->by_uid = 0;
		}
		if (a->run) {
			log_debug("cached bodies of folder %" G_GINT64_FORMAT " pushed ahead of a reader "
			          "(%s order)", folder, a->by_uid ? "UID" : "name");
			sync_ahead_set(&a->upto, &m);
		}
	}
	sync_ahead_set(&a->prev, &m);
	if (a->run)
		sync_ahead_fill(s, a);
	store_message_clear(&m);
}

static gpointer sync_ahead_thread(gpointer data)
{
	struct sync_ahead *a = data;
	struct sync_ctx *s = a->s;
	GArray *hits = g_array_new(FALSE, FALSE, sizeof(struct sync_ahead_hit));

	g_mutex_lock(&a->lock);
	while (!a->stop) {
		if (a->hits->len == 0) {
			g_cond_wait(&a->cond, &a->lock);
			continue;
		}
		GArray *t = a->hits;
		a->hits = hits;
		hits = t;
		g_mutex_unlock(&a->lock);
		for (guint i = 0; i < hits->len; i++) {
			const struct sync_ahead_hit *h = &g_array_index(hits, struct sync_ahead_hit, i);
			sync_ahead_look(s, a, h->folder, h->uid);
		}
		g_array_set_size(hits, 0);
		g_mutex_lock(&a->lock);
	}
	g_mutex_unlock(&a->lock);
	g_array_free(hits, TRUE);
	return NULL;
}

void sync_ahead_note(struct sync_ctx *s, int64_t folder_id, uint32_t uid)
{
	struct sync_ahead *a = g_atomic_pointer_get(&s->ahead);

	if (!a) {
		/* The first hit: the thread is made once (s->lock). */
		g_mutex_lock(&s->lock);
		a = s->ahead;
		if (!a) {
			a = g_new0(struct sync_ahead, 1);
			a->s = s;
			g_mutex_init(&a->lock);
			g_cond_init(&a->cond);
			g_queue_init(&a->pending);
			a->hits = g_array_new(FALSE, FALSE, sizeof(struct sync_ahead_hit));
			a->folder = -1;
			a->thread = cpus_thread_new("mailfs-ahead", sync_ahead_thread, a);
			g_atomic_pointer_set(&s->ahead, a);
		}
		g_mutex_unlock(&s->lock);
	}
	g_mutex_lock(&a->lock);
	if (a->hits->len >= SYNC_AHEAD_HITS)
		g_array_remove_range(a->hits, 0, SYNC_AHEAD_HITS / 2);  /* the older half */
	g_array_append_val(a->hits, ((struct sync_ahead_hit){ folder_id, uid }));
	g_cond_signal(&a->cond);
	g_mutex_unlock(&a->lock);
}

void sync_ahead_stop(struct sync_ctx *s)
{
	struct sync_ahead *a = s->ahead;

	if (!a)
		return;
	g_mutex_lock(&a->lock);
	a->stop = 1;
	g_cond_signal(&a->cond);
	g_mutex_unlock(&a->lock);
	g_thread_join(a->thread);
	g_queue_clear_full(&a->pending, sync_message_free);
	g_array_free(a->hits, TRUE);
	g_free(a->prev.name);
	g_free(a->upto.name);
	g_mutex_clear(&a->lock);
	g_cond_clear(&a->cond);
	g_free(a);
	s->ahead = NULL;
}

/* sync_watch.c — push (-o watch=N): which folders are watched, and what
 * the news of one does.
 *
 * The folders in use are INBOX and each folder listed, looked into,
 * opened or written within SYNC_WATCH_WINDOW_US (sync.c notes each use),
 * the most recently used first, N at most; the driver watches them
 * (mailbox_ops.watch: an IMAP IDLE each). A thread of sync's keeps that
 * set (again at most once a second while folders come into use, and every
 * minute as uses grow old) and applies the news: the driver reports
 * through sync_watch_news, which only notes it; once a folder's news has
 * settled (SYNC_WATCH_SETTLE_US without more, SYNC_WATCH_SETTLE_MAX_US at
 * most after the first) it is brought in step through the ordinary
 * re-check (sync_folder_run, forced; only the new messages when the
 * server told of nothing but new ones), unless the cache is in step with
 * what the news tells of: a full check asked the server after the news
 * came (sync_ctx.asked), or the news is only that a watch is in place and
 * the folder it found is the one the cache holds (sync_watch_in_place).
 * The store then tells fs of the names that went or moved, and changed()
 * of the folder: the kernel's caches of it go, so that ls, stat and
 * getfattr see the server's state at once whatever -o refresh says.
 *
 * Must not: call the driver or the store with w->lock held. */
#include <string.h>
#include "cpus.h"
#include "log.h"
#include "sync_int.h"

#define SYNC_WATCH_WINDOW_US ((gint64)10 * 60 * G_USEC_PER_SEC)
#define SYNC_WATCH_REVIEW_US ((gint64)60 * G_USEC_PER_SEC)
#define SYNC_WATCH_REVIEW_MIN_US ((gint64)G_USEC_PER_SEC)
#define SYNC_WATCH_SETTLE_US ((gint64)100 * 1000)
#define SYNC_WATCH_SETTLE_MAX_US ((gint64)1000 * 1000)

struct sync_watch {
	struct sync_ctx *s;
	void (*changed)(void *ctx, const char *folder_path);
	void *changed_ctx;
	GMutex lock;
	GCond cond;
	GThread *thread;
	int stop;
	int max;                 /* folders watched at most */
	int off;                 /* the server cannot push */
	GHashTable *used;        /* folder id -> monotonic µs of its last use */
	GHashTable *watched;     /* folder id -> wire name: the set being watched */
	int review;              /* a folder not watched came into use */
	gint64 reviewed_at;
	GHashTable *pending;     /* wire name -> struct sync_watch_news */
	gint64 first_news, last_news;
};

/* A folder's news not yet applied. */
struct sync_watch_news {
	unsigned bits;           /* enum mailbox_news */
	int in_place;            /* only that the watch is in place: seen holds
	                            what it found */
	struct mailbox_seen seen;
};

struct sync_watch_use {
	int64_t id;
	gint64 at;
};

static int sync_watch_use_cmp(const void *a, const void *b)
{
	const struct sync_watch_use *x = a, *y = b;
	return x->at > y->at ? -1 : x->at < y->at;
}

/* From the driver's threads: noted, applied by sync's thread. */
static void sync_watch_news(void *ctx, const char *wire_name, unsigned news,
                            const struct mailbox_seen *seen)
{
	struct sync_watch *w = ctx;
	gint64 now = g_get_monotonic_time();
	struct sync_watch_news *n;

	g_mutex_lock(&w->lock);
	n = g_hash_table_lookup(w->pending, wire_name);
	if (!n) {
		if (g_hash_table_size(w->pending) == 0)
			w->first_news = now;
		n = g_new0(struct sync_watch_news, 1);
		/* What it found holds only while nothing else is heard. */
		if (seen) {
			n->in_place = 1;
			n->seen = *seen;
		}
		g_hash_table_insert(w->pending, g_strdup(wire_name), n);
	} else {
		n->in_place = 0;
	}
	w->last_news = now;
	n->bits |= news;
	g_cond_broadcast(&w->cond);
	g_mutex_unlock(&w->lock);
}

/* The folders to watch, as folder id -> wire name. */
static GHashTable *sync_watch_choose(struct sync_watch *w)
{
	struct sync_ctx *s = w->s;
	GHashTable *set = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	GArray *uses = g_array_new(FALSE, FALSE, sizeof(struct sync_watch_use));
	struct store_folder f = { 0 };
	gint64 now = g_get_monotonic_time();
	GHashTableIter it;
	gpointer k, v;

	if (store_folder_by_path(s->store, "INBOX", &f) == MF_OK) {
		struct sync_watch_use u = { f.id, G_MAXINT64 };
		g_array_append_val(uses, u);
	}
	store_folder_clear(&f);
	g_mutex_lock(&w->lock);
	g_hash_table_iter_init(&it, w->used);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct sync_watch_use u = { *(int64_t *)k, *(gint64 *)v };
		if (now - u.at > SYNC_WATCH_WINDOW_US)
			g_hash_table_iter_remove(&it);
		else
			g_array_append_val(uses, u);
	}
	g_mutex_unlock(&w->lock);
	g_array_sort(uses, sync_watch_use_cmp);
	for (guint i = 0; i < uses->len && (int)g_hash_table_size(set) < w->max; i++) {
		int64_t id = g_array_index(uses, struct sync_watch_use, i).id;
		if (g_hash_table_contains(set, &id) || store_folder_by_id(s->store, id, &f) != MF_OK)
			continue;
		if (!f.noselect)
			g_hash_table_insert(set, g_memdup2(&id, sizeof id), g_strdup(f.wire_name));
		store_folder_clear(&f);
	}
	g_array_free(uses, TRUE);
	return set;
}

static int sync_watch_same(GHashTable *a, GHashTable *b)
{
	GHashTableIter it;
	gpointer k, v;

	if (g_hash_table_size(a) != g_hash_table_size(b))
		return 0;
	g_hash_table_iter_init(&it, a);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		const char *other = g_hash_table_lookup(b, k);
		if (!other || strcmp(other, v) != 0)
			return 0;
	}
	return 1;
}

/* Chooses the folders and hands them to the driver when they changed. */
static void sync_watch_set(struct sync_watch *w)
{
	GHashTable *set = sync_watch_choose(w);
	GPtrArray *names;
	GHashTableIter it;
	gpointer k, v;
	enum mf_status st;

	g_mutex_lock(&w->lock);
	if (sync_watch_same(set, w->watched)) {
		g_mutex_unlock(&w->lock);
		g_hash_table_destroy(set);
		return;
	}
	g_mutex_unlock(&w->lock);
	names = g_ptr_array_new();
	g_hash_table_iter_init(&it, set);
	while (g_hash_table_iter_next(&it, &k, &v))
		g_ptr_array_add(names, v);
	st = w->s->mb->ops->watch(w->s->mb, (const char *const *)names->pdata, names->len,
	                          sync_watch_news, w);
	g_ptr_array_free(names, TRUE);
	g_mutex_lock(&w->lock);
	if (st == MF_ERR_NOTFOUND) {
		w->off = 1;
		g_hash_table_remove_all(set);
	}
	g_hash_table_destroy(w->watched);
	w->watched = set;
	g_mutex_unlock(&w->lock);
	log_debug("watching %u folders", g_hash_table_size(set));
}

/* Whether the cache holds the folder as a watch found it when it was put
 * in place: nothing happened between the check that wrote the cache and
 * the watch's start, and what came after, the watch tells. A new message
 * moves UIDNEXT, anything else HIGHESTMODSEQ (RFC 7162: an expunge too),
 * and the count must agree; without a HIGHESTMODSEQ nothing shows a flag
 * changed, and the folder is checked. */
static int sync_watch_in_place(const struct store_folder *f, const struct mailbox_seen *seen)
{
	return seen->highestmodseq && f->uidvalidity && f->synced_at &&
	       f->uidvalidity == seen->uidvalidity && f->uidnext == seen->uidnext &&
	       f->highestmodseq == seen->highestmodseq && f->message_count == seen->exists;
}

/* Brings each folder with news in step (lock not held). news_at: when
 * the last of them came. */
static void sync_watch_apply(struct sync_watch *w, GHashTable *pending, gint64 news_at)
{
	struct sync_ctx *s = w->s;
	GHashTableIter it, wi;
	gpointer k, v, wk, wv;

	g_hash_table_iter_init(&it, pending);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		const struct sync_watch_news *n = v;
		unsigned news = n->bits;
		struct store_folder f = { 0 };
		int64_t id = 0;
		int changed = 0;
		enum mf_status st;

		g_mutex_lock(&w->lock);
		g_hash_table_iter_init(&wi, w->watched);
		while (!id && g_hash_table_iter_next(&wi, &wk, &wv))
			if (strcmp(wv, k) == 0)
				id = *(int64_t *)wk;
		g_mutex_unlock(&w->lock);
		if (!id)
			continue;
		/* A sync of the folder under way may have talked to the server
		 * before the change: wait for it (its result would count as
		 * fresh), then check. */
		g_mutex_lock(&s->lock);
		while (g_hash_table_contains(s->busy, &id))
			g_cond_wait(&s->cond, &s->lock);
		gint64 *asked = g_hash_table_lookup(s->asked, &id);
		int in_step = asked && *asked > news_at;
		g_mutex_unlock(&s->lock);
		if (in_step) {
			/* A full check asked the server after the news came (the
			 * first listing, most often, right after the watch was in
			 * place): it brought what the news tells of. Another would
			 * cost a round trip, and take the connection that listing
			 * left warm for the first open. */
			log_debug("watch: %s in step already (checked since its news)", (char *)k);
			continue;
		}
		if (store_folder_by_id(s->store, id, &f) != MF_OK)
			continue;
		if (n->in_place && sync_watch_in_place(&f, &n->seen)) {
			/* A watch put in place after a check had begun (the
			 * folder's first listing, most often: its watch comes a
			 * round trip or more later) found what the cache holds. */
			log_debug("watch: %s in step (as the watch found it)", f.path);
			store_folder_clear(&f);
			continue;
		}
		/* A folder never listed has nothing stale: its first listing
		 * will bring everything. */
		if (!f.noselect && (f.uidvalidity || f.synced_at)) {
			st = sync_folder_run(s, id, 1, news == MAILBOX_NEWS_ADDED, &changed, NULL);
			log_debug("watch: %s brought in step (%s): %s", f.path,
			          news == MAILBOX_NEWS_ADDED ? "new messages" : "re-check",
			          mf_status_str(st));
			if (st == MF_OK && w->changed)
				w->changed(w->changed_ctx, f.path);
		}
		store_folder_clear(&f);
	}
}

static gpointer sync_watch_thread(gpointer data)
{
	struct sync_watch *w = data;

	g_mutex_lock(&w->lock);
	while (!w->stop) {
		gint64 now = g_get_monotonic_time();
		gint64 wake = w->reviewed_at + SYNC_WATCH_REVIEW_US;
		if (g_hash_table_size(w->pending) > 0) {
			gint64 due = MIN(w->last_news + SYNC_WATCH_SETTLE_US,
			                 w->first_news + SYNC_WATCH_SETTLE_MAX_US);
			if (now >= due) {
				GHashTable *pending = w->pending;
				gint64 news_at = w->last_news;
				w->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
				g_mutex_unlock(&w->lock);
				sync_watch_apply(w, pending, news_at);
				g_hash_table_destroy(pending);
				g_mutex_lock(&w->lock);
				continue;
			}
			wake = MIN(wake, due);
		}
		if (w->review)
			wake = MIN(wake, w->reviewed_at + SYNC_WATCH_REVIEW_MIN_US);
		if (now >= wake && !w->off) {
			w->review = 0;
			w->reviewed_at = now;
			g_mutex_unlock(&w->lock);
			sync_watch_set(w);
			g_mutex_lock(&w->lock);
			continue;
		}
		if (now >= wake)
			wake = now + SYNC_WATCH_REVIEW_US;  /* no push: only news, if any */
		g_cond_wait_until(&w->cond, &w->lock, wake);
	}
	g_mutex_unlock(&w->lock);
	return NULL;
}

void sync_watch_note(struct sync_ctx *s, int64_t folder_id)
{
	struct sync_watch *w = g_atomic_pointer_get(&s->watch);
	gint64 now = g_get_monotonic_time();

	if (!w || g_thread_self() == w->thread)
		return;  /* the watch's own re-checks are no use */
	g_mutex_lock(&w->lock);
	/* Every open comes here (cache hits too): a folder already noted
	 * only gets its time moved, no allocation. */
	gint64 *used = g_hash_table_lookup(w->used, &folder_id);
	if (used)
		*used = now;
	else
		g_hash_table_insert(w->used, g_memdup2(&folder_id, sizeof folder_id),
		                    g_memdup2(&now, sizeof now));
	if (!w->off && !g_hash_table_contains(w->watched, &folder_id)) {
		w->review = 1;
		g_cond_broadcast(&w->cond);
	}
	g_mutex_unlock(&w->lock);
}

/* Wakes the thread to choose the folders again, or to end. */
static void sync_watch_wake(struct sync_watch *w, int stop)
{
	g_mutex_lock(&w->lock);
	w->review = 1;
	w->stop |= stop;
	g_cond_broadcast(&w->cond);
	g_mutex_unlock(&w->lock);
}

void sync_watch_review(struct sync_ctx *s)
{
	struct sync_watch *w = g_atomic_pointer_get(&s->watch);

	if (w)
		sync_watch_wake(w, 0);
}

void sync_watch_start(struct sync_ctx *s, void (*changed)(void *ctx, const char *folder_path),
                      void *ctx)
{
	struct sync_watch *w;

	if (!s->mb || !s->mb->ops->watch || s->cfg->watch <= 0 || s->watch)
		return;
	w = g_new0(struct sync_watch, 1);
	w->s = s;
	w->changed = changed;
	w->changed_ctx = ctx;
	w->max = s->cfg->watch;
	g_mutex_init(&w->lock);
	g_cond_init(&w->cond);
	w->used = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	w->watched = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	w->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	w->review = 1;
	/* The thread waits for the lock until w->thread is set: notes from
	 * it are told apart by it. */
	g_mutex_lock(&w->lock);
	w->thread = cpus_thread_new("sync-watch", sync_watch_thread, w);
	g_mutex_unlock(&w->lock);
	g_atomic_pointer_set(&s->watch, w);
}

void sync_watch_stop(struct sync_ctx *s)
{
	struct sync_watch *w = g_atomic_pointer_get(&s->watch);

	if (!w)
		return;
	sync_watch_wake(w, 1);
	g_thread_join(w->thread);
	/* The driver's watchers end (DONE, a bounded wait) before w goes:
	 * they report to it until then. */
	s->mb->ops->watch(s->mb, NULL, 0, NULL, NULL);
	g_atomic_pointer_set(&s->watch, NULL);
	g_hash_table_destroy(w->used);
	g_hash_table_destroy(w->watched);
	g_hash_table_destroy(w->pending);
	g_mutex_clear(&w->lock);
	g_cond_clear(&w->cond);
	g_free(w);
}

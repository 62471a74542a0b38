/* sync.c — keeps the cache in step with the server: the sync context,
 * the folder list, and one folder's contents (new, vanished, flags,
 * UIDVALIDITY): when a folder is stale, who waits for whom, and how a
 * driver's answer becomes one store transaction.
 *
 * Network work happens outside any store call; each result is written to
 * the store in one transaction afterwards (a folder's first listing is
 * made by a thread of its own, which hands readdir each message as it
 * arrives, and stores them all at the end: sync_live.c). Must not: hold a
 * lock across network I/O, download a body to answer a listing, or test
 * which protocol is in use (ask the driver's caps). */
#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <unistd.h>
#include "cpus.h"
#include "log.h"
#include "stats.h"
#include "sync_int.h"

struct sync_ctx *sync_new(const struct mf_config *cfg, struct store *store, struct mailbox *mb)
{
	struct sync_ctx *s = g_new0(struct sync_ctx, 1);

	s->cfg = cfg;
	s->store = store;
	s->mb = mb;
	g_mutex_init(&s->lock);
	g_mutex_init(&s->arrival_lock);
	g_cond_init(&s->cond);
	s->busy = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	s->attempted = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	s->asked = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	s->base_ids = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	s->writing = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	return s;
}

void sync_set_arrival(struct sync_ctx *s, size_t max_len,
                      void (*arrived)(void *ctx, uint64_t ino_base, uint32_t uid, void *body,
                                      size_t len),
                      int (*held)(void *ctx, uint64_t ino_base, uint32_t uid),
                      void *ctx)
{
	g_mutex_lock(&s->arrival_lock);
	s->arrival_max = max_len;
	s->arrived = arrived;
	s->arrival_held = held;
	s->arrived_ctx = ctx;
	g_mutex_unlock(&s->arrival_lock);
}

int sync_body_held(struct sync_ctx *s, uint64_t ino_base, uint32_t uid)
{
	int held;

	g_mutex_lock(&s->arrival_lock);
	held = s->arrival_held && s->arrival_held(s->arrived_ctx, ino_base, uid);
	g_mutex_unlock(&s->arrival_lock);
	return held;
}

void sync_free(struct sync_ctx *s)
{
	if (!s)
		return;
	sync_watch_stop(s);
	sync_settle_all(s);
	sync_streams_stop(s);
	sync_ahead_stop(s);
	g_hash_table_destroy(s->writing);
	g_free(s->ra_next);
	g_hash_table_destroy(s->busy);
	g_hash_table_destroy(s->attempted);
	g_hash_table_destroy(s->asked);
	g_hash_table_destroy(s->base_ids);
	g_mutex_clear(&s->lock);
	g_mutex_clear(&s->arrival_lock);
	g_cond_clear(&s->cond);
	g_free(s);
}

int sync_hidden(const struct sync_ctx *s, const char *flags)
{
	return !s->cfg->show_deleted && mailbox_flags_deleted(flags);
}

static gint64 sync_refresh_us(const struct sync_ctx *s)
{
	return (gint64)s->cfg->refresh * G_USEC_PER_SEC;
}

/* ---------------------------------------------------------------- folders */

enum mf_status sync_folders(struct sync_ctx *s)
{
	GPtrArray *folders = NULL;
	struct store_folder_entry *entries;
	enum mf_status st;

	if (!s->mb)
		return MF_ERR_OFFLINE;
	st = s->mb->ops->list_folders(s->mb, &folders);
	if (st != MF_OK)
		return st;
	entries = g_new0(struct store_folder_entry, folders->len ? folders->len : 1);
	for (guint i = 0; i < folders->len; i++) {
		const struct mailbox_folder *f = g_ptr_array_index(folders, i);
		entries[i] = (struct store_folder_entry){ f->path, f->wire_name, f->delim, f->noselect };
	}
	st = store_folders_replace(s->store, entries, folders->len);
	g_free(entries);
	mailbox_folders_free(folders);
	if (st == MF_OK) {
		g_mutex_lock(&s->lock);
		s->folders_attempted = g_get_monotonic_time();
		g_mutex_unlock(&s->lock);
		sync_watch_review(s);
	}
	return st;
}

enum mf_status sync_folders_if_stale(struct sync_ctx *s)
{
	gint64 now = g_get_monotonic_time();
	enum mf_status st;

	if (!s->mb)
		return MF_OK;
	g_mutex_lock(&s->lock);
	while (s->folders_busy)
		g_cond_wait(&s->cond, &s->lock);
	if (s->folders_attempted && now - s->folders_attempted < sync_refresh_us(s)) {
		g_mutex_unlock(&s->lock);
		return MF_OK;
	}
	s->folders_busy = 1;
	g_mutex_unlock(&s->lock);

	st = sync_folders(s);

	g_mutex_lock(&s->lock);
	s->folders_busy = 0;
	s->folders_attempted = g_get_monotonic_time();
	if (st != MF_OK && sync_refresh_us(s) < SYNC_RETRY_MIN_US)
		s->folders_attempted += SYNC_RETRY_MIN_US - sync_refresh_us(s);
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
	if (st != MF_OK)
		log_warn("cannot list folders: %s; serving the cached list", mf_status_str(st));
	return st;
}

/* ---------------------------------------------------------------- one folder */

static int sync_uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Ranges by their first UID. Walked with ascending UIDs, those ending
 * below a UID are passed for good; the next one holds it, or none does
 * (every later one starts at or above the next one's start). */
static int sync_range_cmp(const void *a, const void *b)
{
	const struct mailbox_uid_range *x = a, *y = b;
	return x->first < y->first ? -1 : x->first > y->first;
}

static const struct mailbox_uid_range *sync_range_at(GArray *ranges, size_t i)
{
	return &g_array_index(ranges, struct mailbox_uid_range, i);
}

static int sync_note_remote_id(void *ctx, uint32_t uid, const char *remote_id)
{
	g_hash_table_insert(ctx, g_strdup(remote_id), GUINT_TO_POINTER(uid));
	return 0;
}

/* Messages known by remote_id alone (no server UIDs) get a local uid:
 * the one known for their remote_id (known: remote_id -> uid, which
 * learns the new ones), else *next, which then moves on. *next starts
 * above every uid the folder ever gave (its uidnext), so that a uid, and
 * the inode number made of it, never means another message; after a
 * reset the folder starts again at 1 (it has a new inode base). */
static enum mf_status sync_local_uids(struct store_sync_message **added, size_t n,
                                      GHashTable *known, int reset, uint64_t *next)
{
	gpointer uid;

	if (reset) {
		g_hash_table_remove_all(known);
		*next = 1;
	}
	for (size_t i = 0; i < n; i++) {
		const char *id = added[i]->remote_id;
		if (id && g_hash_table_lookup_extended(known, id, NULL, &uid)) {
			added[i]->uid = GPOINTER_TO_UINT(uid);
			continue;
		}
		if (*next > UINT32_MAX)
			return MF_ERR_INVAL;
		added[i]->uid = (uint32_t)(*next)++;
		if (id)
			g_hash_table_insert(known, g_strdup(id), GUINT_TO_POINTER(added[i]->uid));
	}
	return MF_OK;
}

/* ---------------------------------------------------------------- one folder */

struct sync_part {
	struct sync_ctx *s;
	int64_t folder_id;
};

/* A part of a first listing is in the store, up to uid: its messages may
 * be opened (sync_message_settle), and a stream may plan them. */
static void sync_part_stored(void *ctx, uint32_t uid)
{
	struct sync_part *p = ctx;
	uint32_t *stored;

	g_mutex_lock(&p->s->lock);
	if ((stored = g_hash_table_lookup(p->s->writing, &p->folder_id)))
		*stored = uid;
	g_cond_broadcast(&p->s->cond);
	g_cond_broadcast(&p->s->stream_cond);
	g_mutex_unlock(&p->s->lock);
	log_debug("first listing of folder %" G_GINT64_FORMAT ": stored up to UID %u", p->folder_id,
	          uid);
}

/* Talks to the server and writes the outcome; no locks held. live (may
 * be NULL): a folder listed for the first time, shown as it arrives; it
 * is completed before the store is written. */
static enum mf_status sync_folder_now(struct sync_ctx *s, int64_t folder_id, int new_only,
                                      int *changed, struct sync_live *live)
{
	struct store_folder f = { 0 };
	struct mailbox_sync_request req = { 0 };
	struct mailbox_sync_result res = { 0 };
	struct store_sync out = { 0 };
	struct store_sync_message **added = NULL;  /* the jobs' rows */
	struct store_sync_flags *flags = NULL;
	struct sync_parser parser;
	struct sync_part part;
	uint32_t *known = NULL, *removed = NULL;
	size_t n_known = 0, n_removed = 0, n_new = 0;
	uint64_t local_next;
	gint64 t_fetch, t_parse, t_store;
	enum mf_status st;

	sync_parser_init(&parser, s, live);
	if (live)
		live->jobs = parser.jobs;
	st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		goto out;
	if (f.noselect)
		goto out;
	st = store_folder_uids(s->store, folder_id, &known, &n_known);
	if (st != MF_OK)
		goto out;
	req.wire_name = f.wire_name;
	req.uidvalidity = f.uidvalidity;
	req.last_uid = n_known ? known[n_known - 1] : 0;
	local_next = (uint64_t)MAX(req.last_uid, f.uidnext ? f.uidnext - 1 : 0) + 1;
	req.known_count = (uint32_t)n_known;
	req.highestmodseq = f.highestmodseq;
	req.new_only = new_only && f.uidvalidity;
	req.on_added = sync_on_added;
	req.on_added_ctx = &parser;
	if (!(s->mb->ops->caps & MAILBOX_CAP_SERVER_UIDS)) {
		req.known_remote_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
		st = store_folder_remote_ids(s->store, folder_id, sync_note_remote_id,
		                             req.known_remote_ids);
		if (st != MF_OK)
			goto out;
	}

	t_fetch = g_get_monotonic_time();
	st = s->mb->ops->sync_folder(s->mb, &req, &res);
	t_parse = g_get_monotonic_time();
	sync_parse_finish(&parser, st == MF_OK ? res.added : NULL);
	if (st != MF_OK) {
		if (st == MF_ERR_NOTFOUND)  /* the folder is gone: re-list soon */
			s->folders_attempted = 0;
		goto out;
	}

	/* Vanished: known UIDs <= last_uid that the server no longer lists,
	 * or that it named as gone. */
	if (!res.reset && n_known) {
		int listed = !req.new_only && res.present_valid;
		removed = g_new(uint32_t, n_known);
		g_array_sort(res.vanished, sync_range_cmp);
		for (size_t i = 0, r = 0; i < n_known; i++) {
			while (r < res.vanished->len && sync_range_at(res.vanished, r)->last < known[i])
				r++;
			if ((r < res.vanished->len && sync_range_at(res.vanished, r)->first <= known[i]) ||
			    (listed && !bsearch(&known[i], res.present->data, res.present->len,
			                        sizeof(uint32_t), sync_uid_cmp)))
				removed[n_removed++] = known[i];
		}
	}

	n_new = res.added->len;
	/* Told what went rather than what is left (QRESYNC, CONDSTORE): when
	 * the count does not add up, something was missed, and the next
	 * check asks for every UID (no modseq to start from). */
	if (!res.reset && !res.present_valid && res.exists_valid && !req.new_only &&
	    (int64_t)n_known - (int64_t)n_removed + (int64_t)n_new != (int64_t)res.exists) {
		log_warn("%s: the server counts %u messages, the cache %zu: the next check "
		         "asks for all of them", f.path, res.exists, n_known - n_removed + n_new);
		res.highestmodseq = 0;
	}
	added = g_new0(struct store_sync_message *, n_new ? n_new : 1);
	for (size_t i = 0; i < n_new; i++) {
		const struct mailbox_message *m = &g_array_index(res.added, struct mailbox_message, i);
		added[i] = sync_row_finish(g_ptr_array_index(parser.jobs, i), m->remote_id);
	}
	if (req.known_remote_ids) {
		st = sync_local_uids(added, n_new, req.known_remote_ids, res.reset, &local_next);
		if (st != MF_OK)
			goto out;
	} else {
		/* The rows hold the jobs' strings, not the driver's: what the
		 * driver listed goes before the store's transaction, the peak
		 * of a first listing. */
		for (size_t i = 0; i < n_new; i++) {
			struct mailbox_message *m = &g_array_index(res.added, struct mailbox_message, i);
			g_clear_pointer(&m->flags, g_free);
			g_clear_pointer(&m->headers, g_free);
		}
		g_array_free(res.added, TRUE);
		res.added = NULL;
	}
	flags = g_new0(struct store_sync_flags, res.flag_updates->len ? res.flag_updates->len : 1);
	for (guint i = 0; i < res.flag_updates->len; i++) {
		const struct mailbox_flag_update *u =
			&g_array_index(res.flag_updates, struct mailbox_flag_update, i);
		flags[i] = (struct store_sync_flags){ u->uid, u->flags, sync_hidden(s, u->flags) };
	}

	out.folder_id = folder_id;
	out.first = f.synced_at == 0;
	out.reset = res.reset;
	out.uidvalidity = res.uidvalidity;
	out.uidnext = req.known_remote_ids ? (uint32_t)local_next : res.uidnext;
	/* A new-only sync has not seen other clients' flag changes: the
	 * cache stays at the modseq of the last full check. */
	out.highestmodseq = req.new_only ? f.highestmodseq : res.highestmodseq;
	out.added_refs = (const struct store_sync_message *const *)added;
	out.n_added = n_new;
	out.flag_updates = flags;
	out.n_flag_updates = res.flag_updates->len;
	out.removed = removed;
	out.n_removed = n_removed;
	/* Only a full check makes the folder fresh. */
	out.now = req.new_only ? f.synced_at : g_get_real_time() / G_USEC_PER_SEC;
	if (live) {
		/* ls has all it needs: the store is written behind it, in parts
		 * whose messages may be opened as each is stored. */
		sync_live_complete(live, parser.jobs, MF_OK);
		live = NULL;
		part = (struct sync_part){ s, folder_id };
		out.stored = sync_part_stored;
		out.stored_ctx = &part;
	}
	if (res.reset)
		log_info("UIDVALIDITY of %s changed: rebuilding its cache", f.path);
	t_store = g_get_monotonic_time();
	st = store_folder_apply_sync(s->store, &out);
	log_debug("synced %s: %zu new, %zu gone, %u flag updates; server %.0f ms, headers %.0f ms, cache %.0f ms",
	          f.path, n_new, n_removed, res.flag_updates->len, (t_parse - t_fetch) / 1000.0,
	          (t_store - t_parse) / 1000.0, (g_get_monotonic_time() - t_store) / 1000.0);
	if (st == MF_OK) {
		stats_add(folders_synced, 1);
		if (changed)
			*changed = res.reset || n_new || n_removed;
		if (!req.new_only) {
			/* What the server had from then on is in the cache: news
			 * older than this needs no check (sync_watch_apply). */
			g_mutex_lock(&s->lock);
			g_hash_table_replace(s->asked, g_memdup2(&folder_id, sizeof folder_id),
			                     g_memdup2(&t_fetch, sizeof t_fetch));
			g_mutex_unlock(&s->lock);
		}
	}
out:
	sync_parse_wait(&parser);
	if (live)  /* it failed before it was complete */
		sync_live_complete(live, NULL, st != MF_OK ? st : MF_ERR_NOTFOUND);
	sync_parser_clear(&parser);
	g_free(added);
	g_free(flags);
	g_free(known);
	g_free(removed);
	mailbox_sync_result_clear(&res);
	if (req.known_remote_ids)
		g_hash_table_destroy(req.known_remote_ids);
	store_folder_clear(&f);
	/* A big listing's buffers are free now: their pages go back, or a
	 * process that once listed 50,000 messages would keep that peak for
	 * good, under what it reads next. */
	if (n_new >= SYNC_TRIM_AFTER)
		malloc_trim(0);
	return st;
}

/* The end of a sync (lock not held): the folder is free for the next,
 * and a failure holds off retries for a while. */
static void sync_folder_done(struct sync_ctx *s, int64_t folder_id, int new_only,
                             enum mf_status st)
{
	g_mutex_lock(&s->lock);
	g_hash_table_remove(s->busy, &folder_id);
	g_hash_table_remove(s->writing, &folder_id);
	if (st != MF_OK && st != MF_ERR_NOTFOUND && !new_only) {
		/* Don't retry on every lookup while the server is away. */
		gint64 wait = sync_refresh_us(s) > SYNC_RETRY_MIN_US ? sync_refresh_us(s) : SYNC_RETRY_MIN_US;
		gint64 until = g_get_monotonic_time() + wait;
		g_hash_table_replace(s->attempted, g_memdup2(&folder_id, sizeof folder_id),
		                     g_memdup2(&until, sizeof until));
		log_warn("cannot check folder %" G_GINT64_FORMAT ": %s; serving the cache",
		         folder_id, mf_status_str(st));
	} else if (st == MF_OK) {
		g_hash_table_remove(s->attempted, &folder_id);
	}
	g_cond_broadcast(&s->cond);
	g_cond_broadcast(&s->stream_cond);  /* a stream waiting for its rows */
	g_mutex_unlock(&s->lock);
}

struct sync_live_run {
	struct sync_ctx *s;
	int64_t folder_id;
	struct sync_live *live;
};

static gpointer sync_live_thread(gpointer data)
{
	struct sync_live_run *r = data;
	struct sync_ctx *s = r->s;

	sync_folder_done(s, r->folder_id, 0, sync_folder_now(s, r->folder_id, 0, NULL, r->live));
	sync_live_unref(r->live);
	g_free(r);
	g_mutex_lock(&s->lock);
	s->storing--;
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
	return NULL;
}

/* new_only: after our own change, fetch just the messages above the
 * cached UIDs (no flag refresh, no expunge check; the folder is not
 * marked fresh), so a write costs what it adds, not the folder's size.
 * live (may be NULL): a folder that holds nothing yet is listed by a
 * thread of its own and *live set (else NULL). */
enum mf_status sync_folder_run(struct sync_ctx *s, int64_t folder_id, int force,
                                      int new_only, int *changed, struct sync_live **live)
{
	struct store_folder f = { 0 };
	gint64 now_real = g_get_real_time() / G_USEC_PER_SEC;
	gint64 *attempted;
	enum mf_status st;
	int fresh, cold;

	if (changed)
		*changed = 0;
	if (live)
		*live = NULL;
	if (!s->mb)
		return MF_OK;
	sync_watch_note(s, folder_id);  /* in use: watched for a while */
	g_mutex_lock(&s->lock);
	while (g_hash_table_contains(s->busy, &folder_id)) {
		/* Someone is syncing it: their result is as fresh as ours
		 * (not for a change of ours that they may have missed). */
		g_cond_wait(&s->cond, &s->lock);
		force = new_only;
	}
	attempted = g_hash_table_lookup(s->attempted, &folder_id);
	if (!force && attempted && g_get_monotonic_time() < *attempted) {
		g_mutex_unlock(&s->lock);
		return MF_OK;
	}
	st = store_folder_by_id(s->store, folder_id, &f);
	fresh = st == MF_OK && f.synced_at && now_real - f.synced_at < s->cfg->refresh;
	cold = st == MF_OK && !f.noselect && f.message_count == 0 && f.uidvalidity == 0;
	store_folder_clear(&f);
	if (st != MF_OK || (fresh && !force)) {
		g_mutex_unlock(&s->lock);
		return st;
	}
	g_hash_table_add(s->busy, g_memdup2(&folder_id, sizeof folder_id));
	/* Names shown as they arrive need UIDs as they arrive. */
	if (live && cold && !new_only && (s->mb->ops->caps & MAILBOX_CAP_SERVER_UIDS)) {
		struct sync_live_run *r = g_new(struct sync_live_run, 1);
		/* Its names are shown before they are stored: every other use
		 * waits (sync_folder_settle), an open for its message's part
		 * (sync_message_settle). */
		g_hash_table_insert(s->writing, g_memdup2(&folder_id, sizeof folder_id),
		                    g_new0(uint32_t, 1));
		s->storing++;
		*r = (struct sync_live_run){ s, folder_id, sync_live_new(!s->cfg->show_deleted) };
		*live = r->live;
		g_atomic_int_inc(&r->live->refs);
		g_mutex_unlock(&s->lock);
		g_thread_unref(cpus_thread_new("sync-live", sync_live_thread, r));
		return MF_OK;
	}
	g_mutex_unlock(&s->lock);

	st = sync_folder_now(s, folder_id, new_only, changed, NULL);
	sync_folder_done(s, folder_id, new_only, st);
	return st;
}

enum mf_status sync_folder_if_stale(struct sync_ctx *s, int64_t folder_id, int force,
                                    int *changed)
{
	return sync_folder_run(s, folder_id, force, 0, changed, NULL);
}

enum mf_status sync_folder_live(struct sync_ctx *s, int64_t folder_id, struct sync_live **live)
{
	return sync_folder_run(s, folder_id, 0, 0, NULL, live);
}

void sync_settle_all(struct sync_ctx *s)
{
	g_mutex_lock(&s->lock);
	while (s->storing)
		g_cond_wait(&s->cond, &s->lock);
	g_mutex_unlock(&s->lock);
}

void sync_folder_settle(struct sync_ctx *s, int64_t folder_id)
{
	g_mutex_lock(&s->lock);
	while (g_hash_table_contains(s->writing, &folder_id))
		g_cond_wait(&s->cond, &s->lock);
	g_mutex_unlock(&s->lock);
}

uint32_t sync_stored_upto(struct sync_ctx *s, int64_t folder_id)
{
	uint32_t *stored = g_hash_table_lookup(s->writing, &folder_id);

	return stored ? *stored : UINT32_MAX;
}

void sync_message_settle(struct sync_ctx *s, int64_t folder_id, uint32_t uid)
{
	g_mutex_lock(&s->lock);
	while (sync_stored_upto(s, folder_id) < uid)
		g_cond_wait(&s->cond, &s->lock);
	g_mutex_unlock(&s->lock);
}

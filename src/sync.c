/* sync.c — keeps the cache in step with the server: folder list, folder
 * contents (new, vanished, flags, UIDVALIDITY), bodies on first read.
 *
 * Network work happens outside any store call; each result is written to
 * the store in one transaction afterwards (a folder's first listing is
 * made by a thread of its own, which hands readdir each message as it
 * arrives, and stores them all at the end). Must not: hold a lock across
 * network I/O, or download a body to answer a listing. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "mime.h"
#include "stats.h"
#include "sync.h"

#define SYNC_RETRY_MIN_US (5 * G_USEC_PER_SEC)  /* after a failure, wait this long at least */
#define SYNC_RA_MAX_MESSAGES 64                 /* read-ahead batch: at most so many */
#define SYNC_RA_MAX_BYTES (16 * 1024 * 1024)    /* and so many bytes */
#define SYNC_RA_MAX_SIZE (1024 * 1024)          /* larger bodies come alone, in ranges */

void sync_init(struct sync_ctx *s, const struct mf_config *cfg, struct store *store,
               struct mailbox *mb)
{
	memset(s, 0, sizeof *s);
	s->cfg = cfg;
	s->store = store;
	s->mb = mb;
	g_mutex_init(&s->lock);
	g_cond_init(&s->cond);
	s->busy = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	s->attempted = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	s->writing = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	s->folders_busy = 0;
	s->folders_attempted = 0;
}

void sync_clear(struct sync_ctx *s)
{
	sync_settle_all(s);
	g_hash_table_destroy(s->writing);
	g_free(s->ra_next);
	g_hash_table_destroy(s->busy);
	g_hash_table_destroy(s->attempted);
	g_mutex_clear(&s->lock);
	g_cond_clear(&s->cond);
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

static int sync_note_remote_id(void *ctx, uint32_t uid, const char *remote_id)
{
	g_hash_table_insert(ctx, g_strdup(remote_id), GUINT_TO_POINTER(uid));
	return 0;
}

/* Messages known by remote_id alone (no server UIDs) get a local uid:
 * the one known for their remote_id (known: remote_id -> uid, which
 * learns the new ones), else the next above last_uid; after a reset the
 * folder starts again at 1. */
static enum mf_status sync_local_uids(struct store_sync_message *added, size_t n,
                                      GHashTable *known, uint32_t last_uid, int reset)
{
	uint64_t next = (reset ? 0 : (uint64_t)last_uid) + 1;
	gpointer uid;

	if (reset)
		g_hash_table_remove_all(known);
	for (size_t i = 0; i < n; i++) {
		const char *id = added[i].remote_id;
		if (id && g_hash_table_lookup_extended(known, id, NULL, &uid)) {
			added[i].uid = GPOINTER_TO_UINT(uid);
			continue;
		}
		if (next > UINT32_MAX)
			return MF_ERR_INVAL;
		added[i].uid = (uint32_t)next++;
		if (id)
			g_hash_table_insert(known, g_strdup(id), GUINT_TO_POINTER(added[i].uid));
	}
	return MF_OK;
}

/* Header parsing and name derivation of new messages, on a pool of
 * threads, while the rest of the listing is still arriving. */
struct sync_parse_job {
	char *headers;            /* copies: a retried sync frees the first attempt's */
	size_t headers_len;
	char *flags;
	uint64_t size;
	int64_t internaldate;
	uint32_t uid;
	int parsed;               /* with a live listing: set under its lock */
	struct mime_header_info info;
	char *name;
};

/* A folder's first listing, shown while it arrives: the parsed messages
 * are named in UID order (as the store will name them) and appended here,
 * where readdir takes them. Shared by the sync and each reader. */
struct sync_live {
	gint refs;
	GMutex lock;
	GCond cond;
	GPtrArray *entries;       /* struct sync_live_entry *, owned */
	int complete;
	enum mf_status status;    /* once complete */
	/* The sync's side (under lock): */
	struct store_namer *namer;
	GPtrArray *jobs;          /* the parser's jobs, grown under lock */
	guint next;               /* jobs[0..next) are named or skipped */
	uint32_t named_uid;       /* the highest UID shown */
	int naming;               /* parsed jobs are named as they come */
	int hide_deleted;         /* \Deleted entries are hidden */
};

struct sync_parser {
	const struct sync_ctx *s;
	GThreadPool *pool;
	GPtrArray *jobs;          /* struct sync_parse_job *, in added order */
	guint queued;             /* jobs[0..queued) are in the pool */
	struct sync_live *live;   /* NULL: no listing is shown before the end */
};

/* Jobs go to the pool in batches: a wake-up per message costs more than
 * parsing it. */
#define SYNC_PARSE_BATCH 32

static int64_t sync_mtime_of(const struct sync_parse_job *j)
{
	if (j->internaldate != MAILBOX_NO_DATE)
		return j->internaldate;
	return j->info.date != MIME_NO_DATE ? j->info.date : 0;
}

/* Shows job j, parsed, unless a message at or below its UID is shown
 * already (a retried listing sends them again). Lock held. */
static void sync_live_show(struct sync_live *l, const struct sync_parse_job *j)
{
	struct sync_live_entry *e;
	char *name;

	if (!l->namer || j->uid <= l->named_uid ||
	    !(name = store_namer_next(l->namer, j->uid, j->name)))
		return;
	e = g_new(struct sync_live_entry, 1);
	e->name = name;
	e->size = j->size;
	e->mtime = sync_mtime_of(j);
	e->hidden = l->hide_deleted && mailbox_flags_deleted(j->flags);
	g_ptr_array_add(l->entries, e);
	l->named_uid = j->uid;
}

/* Names the parsed jobs that are next in line. Lock held. */
static void sync_live_advance(struct sync_live *l)
{
	guint before = l->entries->len;

	while (l->naming && l->next < l->jobs->len &&
	       ((struct sync_parse_job *)l->jobs->pdata[l->next])->parsed)
		sync_live_show(l, l->jobs->pdata[l->next++]);
	if (l->entries->len != before)
		g_cond_broadcast(&l->cond);
}

static void sync_parse_one(const struct mf_config *cfg, unsigned caps, struct sync_parse_job *j)
{
	/* From and Date are decoded for display only when asked (xattrs). */
	mime_parse_headers_lazy(j->headers, j->headers_len, &j->info);
	/* Without server UIDs (POP3) there is no stable number to name by;
	 * without INTERNALDATE the Date header gives the time. */
	if (cfg->names_uid && (caps & MAILBOX_CAP_SERVER_UIDS))
		j->name = g_strdup_printf("%u", j->uid);
	else
		j->name = mime_name_base(&j->info, j->internaldate == MAILBOX_NO_DATE
		                                   ? MIME_NO_DATE : j->internaldate);
}

static void sync_parse_run(gpointer data, gpointer user)
{
	struct sync_parse_job **batch = data;
	struct sync_parser *p = user;

	for (struct sync_parse_job **j = batch; *j; j++)
		sync_parse_one(p->s->cfg, p->s->mb->ops->caps, *j);
	if (p->live) {
		g_mutex_lock(&p->live->lock);
		for (struct sync_parse_job **j = batch; *j; j++)
			(*j)->parsed = 1;
		sync_live_advance(p->live);
		g_mutex_unlock(&p->live->lock);
	}
	g_free(batch);
}

static struct store_sync_message sync_row_of(const struct sync_parse_job *j,
                                             const char *remote_id)
{
	return (struct store_sync_message){
		.uid = j->uid, .remote_id = remote_id, .flags = j->flags,
		.size = j->size, .internaldate = sync_mtime_of(j), .base_name = j->name,
		.subject = j->info.subject, .from_raw = j->info.from_raw,
		.message_id = j->info.message_id, .date_raw = j->info.date_raw,
	};
}

/* Hands the jobs not yet queued to the pool. */
static void sync_parse_flush(struct sync_parser *p)
{
	guint n = p->jobs->len - p->queued;
	struct sync_parse_job **batch;

	if (n == 0)
		return;
	batch = g_new(struct sync_parse_job *, n + 1);
	memcpy(batch, p->jobs->pdata + p->queued, n * sizeof *batch);
	batch[n] = NULL;
	p->queued = p->jobs->len;
	if (!p->pool) {
		int cpus = (int)g_get_num_processors();
		p->pool = g_thread_pool_new(sync_parse_run, p, cpus > 1 ? cpus : 1, FALSE, NULL);
	}
	g_thread_pool_push(p->pool, batch, NULL);
}

static void sync_parse_job_free(gpointer data)
{
	struct sync_parse_job *j = data;

	mime_header_info_clear(&j->info);
	g_free(j->headers);
	g_free(j->flags);
	g_free(j->name);
	g_free(j);
}

static void sync_parse_push(struct sync_parser *p, const struct mailbox_message *m)
{
	struct sync_parse_job *j = g_new0(struct sync_parse_job, 1);

	j->headers = g_memdup2(m->headers, m->headers_len + 1);
	j->headers_len = m->headers_len;
	j->flags = g_strdup(m->flags);
	j->size = m->size;
	j->internaldate = m->internaldate;
	j->uid = m->uid;
	if (p->live)
		g_mutex_lock(&p->live->lock);
	g_ptr_array_add(p->jobs, j);
	if (p->live)
		g_mutex_unlock(&p->live->lock);
	if (p->jobs->len - p->queued >= SYNC_PARSE_BATCH)
		sync_parse_flush(p);
}

static void sync_on_added(void *ctx, const struct mailbox_message *m)
{
	sync_parse_push(ctx, m);
}

static void sync_parse_wait(struct sync_parser *p)
{
	sync_parse_flush(p);
	if (p->pool)
		g_thread_pool_free(p->pool, FALSE, TRUE);
	p->pool = NULL;
}

/* Waits for the jobs, then makes them match added one for one: what did
 * not come through on_added (or came from an attempt the driver retried)
 * is parsed now. added NULL: just wait. A live listing stops naming as
 * they come: the jobs may be cut back here. */
static void sync_parse_finish(struct sync_parser *p, GArray *added)
{
	guint i;

	if (p->live) {
		g_mutex_lock(&p->live->lock);
		p->live->naming = 0;
		g_mutex_unlock(&p->live->lock);
	}
	sync_parse_wait(p);
	if (!added)
		return;
	for (i = 0; i < p->jobs->len && i < added->len; i++)
		if (((struct sync_parse_job *)g_ptr_array_index(p->jobs, i))->uid !=
		    g_array_index(added, struct mailbox_message, i).uid)
			break;
	g_ptr_array_set_size(p->jobs, i);
	p->queued = i;
	for (; i < added->len; i++)
		sync_parse_push(p, &g_array_index(added, struct mailbox_message, i));
	sync_parse_wait(p);
}

/* ---------------------------------------------------------------- live listings */

static struct sync_live *sync_live_new(int hide_deleted)
{
	struct sync_live *l = g_new0(struct sync_live, 1);

	l->refs = 1;
	g_mutex_init(&l->lock);
	g_cond_init(&l->cond);
	l->entries = g_ptr_array_new();
	l->namer = store_namer_new_empty();
	l->naming = 1;
	l->hide_deleted = hide_deleted;
	return l;
}

void sync_live_unref(struct sync_live *l)
{
	if (!l || !g_atomic_int_dec_and_test(&l->refs))
		return;
	store_namer_free(l->namer);  /* (NULL once complete) before the names it borrows */
	for (guint i = 0; i < l->entries->len; i++) {
		struct sync_live_entry *e = l->entries->pdata[i];
		g_free(e->name);
		g_free(e);
	}
	g_ptr_array_free(l->entries, TRUE);
	g_mutex_clear(&l->lock);
	g_cond_clear(&l->cond);
	g_free(l);
}

/* The end of a live listing: what is left is shown (a message that came
 * some other way than as it arrived), and readers are told. jobs NULL: it
 * failed with st. */
static void sync_live_complete(struct sync_live *l, GPtrArray *jobs, enum mf_status st)
{
	g_mutex_lock(&l->lock);
	if (jobs)
		for (guint i = 0; i < jobs->len; i++)
			sync_live_show(l, jobs->pdata[i]);
	l->jobs = NULL;
	store_namer_free(l->namer);  /* it borrows the names: they stay */
	l->namer = NULL;
	l->complete = 1;
	l->status = st;
	g_cond_broadcast(&l->cond);
	g_mutex_unlock(&l->lock);
}

size_t sync_live_wait(struct sync_live *l, size_t n, struct sync_live_entry **out, size_t max,
                      int *complete, enum mf_status *status)
{
	size_t got = 0;

	g_mutex_lock(&l->lock);
	while (l->entries->len <= n && !l->complete)
		g_cond_wait(&l->cond, &l->lock);
	for (size_t i = n; i < l->entries->len && got < max; i++)
		out[got++] = l->entries->pdata[i];
	*complete = l->complete && n + got >= l->entries->len;
	*status = l->status;
	g_mutex_unlock(&l->lock);
	return got;
}

/* ---------------------------------------------------------------- one folder */

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
	struct store_sync_message *added = NULL;
	struct store_sync_flags *flags = NULL;
	struct sync_parser parser = { .s = s, .jobs = g_ptr_array_new_with_free_func(sync_parse_job_free),
	                              .live = live };
	uint32_t *known = NULL, *removed = NULL;
	size_t n_known = 0, n_removed = 0, n_new = 0;
	gint64 t_fetch, t_parse, t_store;
	enum mf_status st;

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

	/* Vanished: known UIDs <= last_uid that the server no longer lists. */
	if (!res.reset && n_known && !req.new_only && res.present_valid) {
		removed = g_new(uint32_t, n_known);
		for (size_t i = 0; i < n_known; i++) {
			if (!bsearch(&known[i], res.present->data, res.present->len, sizeof(uint32_t),
			             sync_uid_cmp))
				removed[n_removed++] = known[i];
		}
	}

	n_new = res.added->len;
	added = g_new0(struct store_sync_message, n_new ? n_new : 1);
	for (size_t i = 0; i < n_new; i++) {
		const struct mailbox_message *m = &g_array_index(res.added, struct mailbox_message, i);
		added[i] = sync_row_of(g_ptr_array_index(parser.jobs, i), m->remote_id);
	}
	if (req.known_remote_ids) {
		st = sync_local_uids(added, n_new, req.known_remote_ids, req.last_uid, res.reset);
		if (st != MF_OK)
			goto out;
	}
	flags = g_new0(struct store_sync_flags, res.flag_updates->len ? res.flag_updates->len : 1);
	for (guint i = 0; i < res.flag_updates->len; i++) {
		const struct mailbox_flag_update *u =
			&g_array_index(res.flag_updates, struct mailbox_flag_update, i);
		flags[i] = (struct store_sync_flags){ u->uid, u->flags };
	}

	out.folder_id = folder_id;
	out.reset = res.reset;
	out.uidvalidity = res.uidvalidity;
	out.uidnext = res.uidnext;
	/* A new-only sync has not seen other clients' flag changes: the
	 * cache stays at the modseq of the last full check. */
	out.highestmodseq = req.new_only ? f.highestmodseq : res.highestmodseq;
	out.added = added;
	out.n_added = n_new;
	out.flag_updates = flags;
	out.n_flag_updates = res.flag_updates->len;
	out.removed = removed;
	out.n_removed = n_removed;
	/* Only a full check makes the folder fresh. */
	out.now = req.new_only ? f.synced_at : g_get_real_time() / G_USEC_PER_SEC;
	if (live) {
		/* ls has all it needs: the store is written behind it. */
		sync_live_complete(live, parser.jobs, MF_OK);
		live = NULL;
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
	}
out:
	sync_parse_wait(&parser);
	if (live)  /* it failed before it was complete */
		sync_live_complete(live, NULL, st != MF_OK ? st : MF_ERR_NOTFOUND);
	g_ptr_array_free(parser.jobs, TRUE);
	g_free(added);
	g_free(flags);
	g_free(known);
	g_free(removed);
	mailbox_sync_result_clear(&res);
	if (req.known_remote_ids)
		g_hash_table_destroy(req.known_remote_ids);
	store_folder_clear(&f);
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
static enum mf_status sync_folder_run(struct sync_ctx *s, int64_t folder_id, int force,
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
		 * waits (sync_folder_settle). */
		g_hash_table_add(s->writing, g_memdup2(&folder_id, sizeof folder_id));
		s->storing++;
		*r = (struct sync_live_run){ s, folder_id, sync_live_new(!s->cfg->show_deleted) };
		*live = r->live;
		g_atomic_int_inc(&r->live->refs);
		g_mutex_unlock(&s->lock);
		g_thread_unref(g_thread_new("sync-live", sync_live_thread, r));
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

/* ---------------------------------------------------------------- bodies */

struct sync_ra_pick {
	GPtrArray *msgs;     /* struct store_message *, owned */
	uint64_t bytes;
};

static int sync_ra_collect(void *ctx, const struct store_message *m)
{
	struct sync_ra_pick *p = ctx;
	struct store_message *copy;

	if (p->bytes + m->size > SYNC_RA_MAX_BYTES)
		return 1;
	copy = g_new0(struct store_message, 1);
	copy->uid = m->uid;
	copy->size = m->size;
	copy->name = g_strdup(m->name);
	copy->remote_id = g_strdup(m->remote_id);
	g_ptr_array_add(p->msgs, copy);
	p->bytes += m->size;
	return 0;
}

static void sync_ra_free(gpointer p)
{
	store_message_clear(p);
	g_free(p);
}

static int sync_ra_first(void *ctx, const struct store_message *m)
{
	struct store_message *next = ctx;

	next->name = g_strdup(m->name);
	next->uid = m->uid;
	return 1;
}

/* Who comes after this batch, for the sequential test of the next miss:
 * in the order the reader went, or in both (name order: the store's
 * listings; UID order: a first listing) before it went any. */
static void sync_ra_remember(struct sync_ctx *s, int64_t folder_id,
                             const struct store_message *last, int streak, int by_uid)
{
	struct store_message by_name = { 0 }, by_number = { 0 };

	if (streak < 2 || !by_uid)
		store_messages_uncached_after(s->store, folder_id, last, 0, UINT64_MAX, 1,
		                              sync_ra_first, &by_name);
	if (streak < 2 || by_uid)
		store_messages_uncached_after(s->store, folder_id, last, 1, UINT64_MAX, 1,
		                              sync_ra_first, &by_number);
	g_mutex_lock(&s->lock);
	g_free(s->ra_next);
	s->ra_next = by_name.name;
	s->ra_next_uid = by_number.uid;
	s->ra_folder = folder_id;
	s->ra_streak = streak;
	g_mutex_unlock(&s->lock);
	g_free(by_number.name);
}

/* Downloads m's body into the cache, and with it the next uncached
 * messages when the reader goes through the folder in order. Returns an
 * fd on m's body in *fd_out. */
static enum mf_status sync_fetch_into_cache(struct sync_ctx *s, const struct store_folder *f,
                                            const struct store_message *m, int *fd_out,
                                            int *size_changed)
{
	struct sync_ra_pick pick = { g_ptr_array_new_with_free_func(sync_ra_free), 0 };
	struct mailbox_body_request *reqs = NULL;
	char **tmp = NULL;
	const struct store_message *last;
	uint64_t written = 0;
	enum mf_status st;
	int streak = 0, by_uid = 0;
	size_t n = 1, n_alloc;

	g_mutex_lock(&s->lock);
	if (s->ra_folder == f->id && s->ra_next && strcmp(s->ra_next, m->name) == 0) {
		streak = s->ra_streak + 1;
	} else if (s->ra_folder == f->id && s->ra_next_uid && s->ra_next_uid == m->uid) {
		streak = s->ra_streak + 1;
		by_uid = 1;
	}
	g_mutex_unlock(&s->lock);

	/* From the third message read in order on: 8, 16, 32, then 64 at once.
	 * Not with mark_seen: messages nobody read would be marked read. */
	if (streak >= 2 && s->mb->ops->fetch_bodies && m->size <= SYNC_RA_MAX_SIZE &&
	    !s->cfg->mark_seen) {
		size_t want = (size_t)4 << (streak - 1 < 4 ? streak - 1 : 4);
		if (want > SYNC_RA_MAX_MESSAGES)
			want = SYNC_RA_MAX_MESSAGES;
		pick.bytes = m->size;
		store_messages_uncached_after(s->store, f->id, m, by_uid, SYNC_RA_MAX_SIZE, want - 1,
		                              sync_ra_collect, &pick);
		n = 1 + pick.msgs->len;
	}
	n_alloc = n;
	reqs = g_new0(struct mailbox_body_request, n);
	tmp = g_new0(char *, n);
	for (size_t i = 0; i < n; i++) {
		const struct store_message *x = i == 0 ? m : g_ptr_array_index(pick.msgs, i - 1);
		reqs[i].uid = x->uid;
		reqs[i].remote_id = x->remote_id;
		reqs[i].size_hint = x->size;
		reqs[i].fd = store_body_begin(s->store, &tmp[i]);
		if (reqs[i].fd < 0) {
			n = i;  /* fetch what has a file; m at least, or nothing */
			break;
		}
	}
	if (n == 0) {
		st = MF_ERR_IO;
		goto out;
	}
	if (n == 1) {
		st = s->mb->ops->fetch_body(s->mb, f->wire_name, f->uidvalidity, m->uid, m->remote_id,
		                            m->size, reqs[0].fd, &written);
		reqs[0].status = st;
	} else {
		st = s->mb->ops->fetch_bodies(s->mb, f->wire_name, f->uidvalidity, reqs, n);
		if (st == MF_OK)
			st = reqs[0].status;
	}
	for (size_t i = 1; i < n; i++) {
		if (reqs[i].status != MF_OK || store_body_commit(s->store, f->id, reqs[i].uid, tmp[i],
		                                                 NULL) != MF_OK)
			store_body_abort(s->store, tmp[i]);
	}
	if (st == MF_OK)
		st = store_body_commit(s->store, f->id, m->uid, tmp[0], size_changed);
	else
		store_body_abort(s->store, tmp[0]);
	if (st == MF_OK) {
		/* The download's own fd still names the file after the rename,
		 * and even after an eviction racing with us. */
		*fd_out = reqs[0].fd;
		reqs[0].fd = -1;
	}
	last = n > 1 ? g_ptr_array_index(pick.msgs, n - 2) : m;
	sync_ra_remember(s, f->id, last, streak, by_uid);
out:
	for (size_t i = 0; i < n; i++)
		if (reqs[i].fd >= 0)
			close(reqs[i].fd);
	for (size_t i = 0; i < n_alloc; i++)
		g_free(tmp[i]);
	g_free(tmp);
	g_free(reqs);
	g_ptr_array_free(pick.msgs, TRUE);
	return st;
}

enum mf_status sync_body_open(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              int *fd_out, int *size_changed)
{
	struct store_folder f = { 0 };
	struct store_message m = { 0 };
	enum mf_status st;
	int fd;

	if (size_changed)
		*size_changed = 0;
	fd = store_body_open(s->store, folder_id, uid);
	if (fd >= 0) {
		stats_add(cache_hits, 1);
		*fd_out = fd;
		return MF_OK;
	}
	stats_add(cache_misses, 1);
	if (!s->mb)
		return MF_ERR_OFFLINE;
	st = store_folder_by_id(s->store, folder_id, &f);
	if (st == MF_OK)
		st = store_message_by_uid(s->store, folder_id, uid, &m);
	if (st == MF_OK)
		st = sync_fetch_into_cache(s, &f, &m, fd_out, size_changed);
	if (st == MF_ERR_NOTFOUND)
		log_warn("message %u of %s is gone from the server", uid, f.path ? f.path : "?");
	else if (st != MF_OK)
		log_warn("cannot fetch message %u of %s: %s", uid, f.path ? f.path : "?",
		         mf_status_str(st));
	store_message_clear(&m);
	store_folder_clear(&f);
	return st;
}

/* ---------------------------------------------------------------- writes */

/* After the server changed a folder: bring the cache up to date now, so
 * the next listing is right at once. A failure here is only logged: the
 * server has the change, and the next refresh catches up. */
static void sync_after_change(struct sync_ctx *s, int64_t folder_id)
{
	enum mf_status st = sync_folder_run(s, folder_id, 1, 1, NULL, NULL);

	if (st != MF_OK)
		log_warn("cannot refresh folder %" G_GINT64_FORMAT " after a change: %s",
		         folder_id, mf_status_str(st));
}

static enum mf_status sync_writable(struct sync_ctx *s)
{
	if (!s->mb)
		return MF_ERR_READONLY;
	if (s->cfg->readonly || !s->mb->ops->append)
		return MF_ERR_READONLY;
	return MF_OK;
}

/* Reads the whole staged file (messages are small next to memory). */
static char *sync_read_all(int fd, uint64_t size)
{
	char *data = g_malloc(size + 1);
	uint64_t off = 0;

	while (off < size) {
		ssize_t n = pread(fd, data + off, size - off, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			g_free(data);
			return NULL;
		}
		off += (uint64_t)n;
	}
	data[size] = 0;
	return data;
}

/* The highest UID the cache holds for the folder, 0 for none. */
static uint32_t sync_max_uid(struct sync_ctx *s, int64_t folder_id)
{
	uint32_t max = 0;

	store_folder_max_uid(s->store, folder_id, &max);
	return max;
}

/* When the server did not say which UID a message got (no UIDPLUS, or
 * its answer was lost): the one above above_uid with this Message-ID and
 * size, among what the last refresh brought in. 0 when none is sure. */
static uint32_t sync_find_arrival(struct sync_ctx *s, int64_t folder_id, uint32_t above_uid,
                                  const char *message_id, uint64_t size)
{
	uint32_t *uids = NULL, found = 0;
	size_t n = 0;

	if (store_folder_uids(s->store, folder_id, &uids, &n) != MF_OK)
		return 0;
	for (size_t i = n; i > 0 && uids[i - 1] > above_uid && !found; i--) {
		struct store_message m = { 0 };
		if (store_message_by_uid(s->store, folder_id, uids[i - 1], &m) == MF_OK &&
		    m.size == size && g_strcmp0(m.message_id, message_id) == 0)
			found = m.uid;
		store_message_clear(&m);
	}
	g_free(uids);
	return found;
}

/* Bytes before the message itself that mail programs leave in .eml
 * files: a UTF-8 byte order mark, an mbox "From " separator line. The
 * server gets the message without them, as mutt and mbsync send it. */
static size_t sync_leading_junk(const char *data, size_t size)
{
	size_t skip = 0;

	if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		skip = 3;
	if (size - skip >= 5 && memcmp(data + skip, "From ", 5) == 0) {
		const char *nl = memchr(data + skip, '\n', size - skip);
		if (nl)
			skip = (size_t)(nl + 1 - data);
	}
	return skip;
}

enum mf_status sync_append(struct sync_ctx *s, int64_t folder_id, const char *name,
                           int fd, const char *tmp_path, uint64_t size,
                           int64_t internaldate)
{
	struct store_folder f = { 0 };
	struct mime_header_info info = { 0 };
	char *data = NULL;
	uint32_t uid = 0, before;
	size_t skip;
	enum mf_status st = sync_writable(s);

	if (st != MF_OK)
		goto fail;
	st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		goto fail;
	if (f.noselect) {
		st = MF_ERR_PERM;
		goto fail;
	}
	data = sync_read_all(fd, size);
	if (!data) {
		st = MF_ERR_IO;
		goto fail;
	}
	skip = sync_leading_junk(data, size);
	if (mime_validate_message(data + skip, size - skip) != 0) {
		log_warn("%s/%s is not a mail message (no RFC 5322 header): not appended", f.path, name);
		st = MF_ERR_INVAL;
		goto fail;
	}
	mime_parse_headers_lazy(data + skip, size - skip, &info);  /* for its Message-ID */
	g_clear_pointer(&data, g_free);
	before = sync_max_uid(s, folder_id);
	st = s->mb->ops->append(s->mb, f.wire_name, fd, skip, size - skip, internaldate, &uid);
	if (st != MF_OK) {
		log_warn("cannot append %s to %s: %s", name, f.path, mf_status_str(st));
		goto fail;
	}
	sync_after_change(s, folder_id);
	if (!uid)
		uid = sync_find_arrival(s, folder_id, before, info.message_id, size - skip);
	log_info("appended %s to %s (uid %u)", name, f.path, uid);
	if (!uid) {
		log_warn("%s/%s: the server did not say which UID it got: it shows under its derived name",
		         f.path, name);
		goto fail_ok;
	}
	if (store_message_set_user_name(s->store, folder_id, uid, name) != MF_OK)
		log_warn("%s/%s: the name could not be kept: it shows under its derived name", f.path, name);
	/* What was written is the message: it becomes the cached body (not
	 * when the server got less than the file). */
	if (skip || store_body_commit(s->store, folder_id, uid, tmp_path, NULL) != MF_OK)
		store_body_abort(s->store, tmp_path);
	goto out;
fail_ok:
	st = MF_OK;
fail:
	store_body_abort(s->store, tmp_path);
out:
	g_free(data);
	mime_header_info_clear(&info);
	store_folder_clear(&f);
	return st;
}

enum mf_status sync_move(struct sync_ctx *s, int64_t src_folder_id, uint32_t uid,
                         int64_t dst_folder_id, const char *name, uint32_t replace_uid)
{
	struct store_folder f = { 0 }, g = { 0 };
	struct store_message m = { 0 };
	uint32_t dst_uid = 0, before;
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, src_folder_id, &f);
	if (st == MF_OK)
		st = store_folder_by_id(s->store, dst_folder_id, &g);
	if (st == MF_OK)
		st = store_message_by_uid(s->store, src_folder_id, uid, &m);
	if (st != MF_OK)
		goto out;
	if (g.noselect) {
		st = MF_ERR_PERM;
		goto out;
	}
	before = sync_max_uid(s, dst_folder_id);
	st = s->mb->ops->move(s->mb, f.wire_name, f.uidvalidity, uid, m.size, m.message_id,
	                      g.wire_name, &dst_uid);
	if (st != MF_OK) {
		log_warn("cannot move %s from %s to %s: %s", m.name, f.path, g.path, mf_status_str(st));
		goto out;
	}
	/* The source lost one message: the cache says so without asking. */
	store_message_remove(s->store, src_folder_id, uid);
	if (replace_uid && replace_uid != dst_uid) {
		st = sync_remove(s, dst_folder_id, replace_uid);
		if (st != MF_OK)
			goto out;
	}
	sync_after_change(s, dst_folder_id);
	if (!dst_uid)
		dst_uid = sync_find_arrival(s, dst_folder_id, before, m.message_id, m.size);
	log_info("moved %s from %s to %s (uid %u)", m.name, f.path, g.path, dst_uid);
	if (name && dst_uid && store_message_set_user_name(s->store, dst_folder_id, dst_uid, name) != MF_OK)
		log_warn("%s/%s: the name could not be kept", g.path, name);
out:
	store_message_clear(&m);
	store_folder_clear(&f);
	store_folder_clear(&g);
	return st;
}

enum mf_status sync_remove(struct sync_ctx *s, int64_t folder_id, uint32_t uid)
{
	struct store_folder f = { 0 }, trash = { 0 };
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		goto out;
	if (s->cfg->trash && strcmp(s->cfg->trash, f.path) != 0) {
		st = store_folder_by_path(s->store, s->cfg->trash, &trash);
		if (st != MF_OK) {
			log_error("the trash folder %s does not exist: nothing removed", s->cfg->trash);
			st = MF_ERR_IO;
			goto out;
		}
		st = sync_move(s, folder_id, uid, trash.id, NULL, 0);
		goto out;
	}
	st = s->mb->ops->expunge(s->mb, f.wire_name, f.uidvalidity, uid);
	if (st != MF_OK) {
		log_warn("cannot remove message %u from %s: %s", uid, f.path, mf_status_str(st));
		goto out;
	}
	store_message_remove(s->store, folder_id, uid);
out:
	store_folder_clear(&f);
	store_folder_clear(&trash);
	return st;
}

enum mf_status sync_rename(struct sync_ctx *s, int64_t folder_id, uint32_t uid, const char *name)
{
	enum mf_status st = sync_writable(s);

	if (st != MF_OK)
		return st;
	return store_message_set_user_name(s->store, folder_id, uid, name);
}

enum mf_status sync_set_flags(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              const char *flags)
{
	struct store_folder f = { 0 };
	char **words = NULL, *normal = NULL;
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		goto out;
	/* One space between flags, none around: as the server will say them. */
	words = g_strsplit_set(flags, " \t\n", -1);
	{
		GString *n = g_string_new(NULL);
		for (char **w = words; *w; w++) {
			if (!**w)
				continue;
			if (n->len)
				g_string_append_c(n, ' ');
			g_string_append(n, *w);
		}
		normal = g_string_free(n, FALSE);
	}
	st = s->mb->ops->set_flags(s->mb, f.wire_name, f.uidvalidity, uid, normal);
	if (st == MF_OK)
		st = store_message_set_flags(s->store, folder_id, uid, normal);
	else
		log_warn("cannot set flags of message %u in %s: %s", uid, f.path, mf_status_str(st));
out:
	g_strfreev(words);
	g_free(normal);
	store_folder_clear(&f);
	return st;
}

/* After CREATE, DELETE or RENAME: the folder list, now. */
static enum mf_status sync_folders_now(struct sync_ctx *s, enum mf_status st)
{
	enum mf_status listed;

	/* "Already exists" means our list is behind the server's: catch up. */
	if (st != MF_OK && st != MF_ERR_EXISTS)
		return st;
	listed = sync_folders(s);
	g_mutex_lock(&s->lock);
	s->folders_attempted = g_get_monotonic_time();
	g_mutex_unlock(&s->lock);
	if (listed != MF_OK)
		log_warn("cannot list folders after a change: %s", mf_status_str(listed));
	return st;
}

enum mf_status sync_create_folder(struct sync_ctx *s, const char *path)
{
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = s->mb->ops->create_folder(s->mb, path);
	if (st != MF_OK && st != MF_ERR_READONLY)
		log_warn("cannot create folder %s: %s", path, mf_status_str(st));
	return sync_folders_now(s, st);
}

enum mf_status sync_delete_folder(struct sync_ctx *s, int64_t folder_id)
{
	struct store_folder f = { 0 };
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st == MF_OK && f.message_count > 0)
		st = MF_ERR_NOTEMPTY;
	if (st == MF_OK && !f.wire_name)
		st = MF_ERR_PERM;  /* a parent the server never listed */
	if (st == MF_OK)
		st = s->mb->ops->delete_folder(s->mb, f.wire_name);
	if (st != MF_OK && st != MF_ERR_READONLY && st != MF_ERR_NOTEMPTY)
		log_warn("cannot delete folder %s: %s", f.path ? f.path : "?", mf_status_str(st));
	store_folder_clear(&f);
	return sync_folders_now(s, st);
}

enum mf_status sync_rename_folder(struct sync_ctx *s, int64_t folder_id, const char *new_path)
{
	struct store_folder f = { 0 };
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st == MF_OK && !f.wire_name)
		st = MF_ERR_PERM;
	if (st == MF_OK)
		st = s->mb->ops->rename_folder(s->mb, f.wire_name, new_path);
	if (st != MF_OK && st != MF_ERR_READONLY)
		log_warn("cannot rename folder %s to %s: %s", f.path ? f.path : "?", new_path,
		         mf_status_str(st));
	store_folder_clear(&f);
	return sync_folders_now(s, st);
}

enum mf_status sync_quota(struct sync_ctx *s, uint64_t *used, uint64_t *limit)
{
	gint64 now = g_get_monotonic_time();
	enum mf_status st;

	if (!s->mb || !s->mb->ops->quota)
		return MF_ERR_NOTFOUND;
	g_mutex_lock(&s->lock);
	if (s->quota_at && now - s->quota_at < 60 * G_USEC_PER_SEC) {
		st = s->quota_status;
		*used = s->quota_used;
		*limit = s->quota_limit;
		g_mutex_unlock(&s->lock);
		return st;
	}
	g_mutex_unlock(&s->lock);
	st = s->mb->ops->quota(s->mb, used, limit);
	g_mutex_lock(&s->lock);
	s->quota_at = g_get_monotonic_time();
	s->quota_status = st;
	s->quota_used = *used;
	s->quota_limit = *limit;
	g_mutex_unlock(&s->lock);
	return st;
}

/* sync_live.c — a folder's new messages on their way into the cache:
 * header parsing and name derivation on a pool of threads while the
 * listing still arrives, and a folder's first listing shown to readdir
 * as it arrives (named in UID order, as the store will name it).
 *
 * Must not: touch the store but through its namer (sync.c stores the
 * result), or hold the listing's lock while parsing. */
#include <string.h>
#include "mime.h"
#include "sync_int.h"

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
	e->uid = j->uid;
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

struct store_sync_message sync_row_of(const struct sync_parse_job *j,
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

void sync_parse_job_free(gpointer data)
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

void sync_on_added(void *ctx, const struct mailbox_message *m)
{
	sync_parse_push(ctx, m);
}

void sync_parse_wait(struct sync_parser *p)
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
void sync_parse_finish(struct sync_parser *p, GArray *added)
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

struct sync_live *sync_live_new(int hide_deleted)
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
void sync_live_complete(struct sync_live *l, GPtrArray *jobs, enum mf_status st)
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

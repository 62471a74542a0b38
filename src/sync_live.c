/* sync_live.c — a folder's new messages on their way into the cache:
 * header parsing and name derivation on a pool of threads while the
 * listing still arrives, and a folder's first listing shown to readdir
 * as it arrives (named in UID order, as the store will name it).
 *
 * Must not: touch the store but through its namer (sync.c stores the
 * result), or hold the listing's lock while parsing. */
#include <malloc.h>
#include <string.h>
#include "cpus.h"
#include "mime.h"
#include "sync_int.h"


/* Shows job j, parsed, unless a message at or below its UID is shown
 * already (a retried listing sends them again). Lock held. */
static void sync_live_show(struct sync_live *l, const struct sync_parse_job *j)
{
	struct sync_live_entry *e;
	char *name;

	if (!l->namer || j->row.uid <= l->named_uid ||
	    !(name = store_namer_next(l->namer, j->row.uid, j->row.base_name)))
		return;
	e = g_new(struct sync_live_entry, 1);
	e->name = name;
	e->uid = j->row.uid;
	e->size = j->row.size;
	e->mtime = j->row.internaldate;
	e->hidden = l->hide_deleted && mailbox_flags_deleted(j->row.flags);
	g_ptr_array_add(l->entries, e);
	l->named_uid = j->row.uid;
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

static const char *sync_parser_keep(struct sync_parser *p, const char *s)
{
	return s ? g_string_chunk_insert(p->strings, s) : NULL;
}

static void sync_parse_one(struct sync_parser *p, unsigned caps, struct sync_parse_job *j)
{
	struct mime_header_info info = { 0 };
	char *name;

	/* From and Date are decoded for display only when asked (xattrs). */
	mime_parse_headers_lazy(j->headers, j->headers_len, &info);
	/* Without server UIDs (POP3) there is no stable number to name by;
	 * without INTERNALDATE the Date header gives the time. */
	if (p->s->cfg->names_uid && (caps & MAILBOX_CAP_SERVER_UIDS))
		name = g_strdup_printf("%u", j->row.uid);
	else
		name = mime_name_base(&info, j->row.internaldate == MAILBOX_NO_DATE
		                             ? MIME_NO_DATE : j->row.internaldate);
	/* What the store keeps moves to the chunk: a big listing holds no
	 * header block longer than its parse. */
	g_mutex_lock(&p->strings_lock);
	j->row.base_name = sync_parser_keep(p, name);
	j->row.subject = sync_parser_keep(p, info.subject);
	j->row.message_id = sync_parser_keep(p, info.message_id);
	j->row.from_raw = sync_parser_keep(p, info.from_raw);
	j->row.date_raw = sync_parser_keep(p, info.date_raw);
	g_mutex_unlock(&p->strings_lock);
	if (j->row.internaldate == MAILBOX_NO_DATE)
		j->row.internaldate = info.date != MIME_NO_DATE ? info.date : 0;
	g_free(name);
	mime_header_info_clear(&info);
	g_clear_pointer(&j->headers, g_free);
	j->headers_len = 0;
}

static void sync_parse_run(gpointer data, gpointer user)
{
	struct sync_parse_job **batch = data;
	struct sync_parser *p = user;

	/* A pool's thread starts on the CPUs of the thread that made it, which
	 * may have been held to a reader's (fs_follow.c). */
	cpus_let_go();
	for (struct sync_parse_job **j = batch; *j; j++)
		sync_parse_one(p, p->s->mb->ops->caps, *j);
	if (p->live) {
		g_mutex_lock(&p->live->lock);
		for (struct sync_parse_job **j = batch; *j; j++)
			(*j)->parsed = 1;
		sync_live_advance(p->live);
		g_mutex_unlock(&p->live->lock);
	}
	g_free(batch);
}

struct store_sync_message *sync_row_finish(struct sync_parse_job *j, const char *remote_id)
{
	j->row.remote_id = remote_id;
	return &j->row;
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

	g_free(j->headers);
	g_free(j);
}

/* A job for m; take: its headers move to the job (m's become NULL). */
static void sync_parse_push(struct sync_parser *p, struct mailbox_message *m, int take)
{
	struct sync_parse_job *j = g_new0(struct sync_parse_job, 1);

	j->headers = take ? g_steal_pointer(&m->headers)
	                  : m->headers ? g_memdup2(m->headers, m->headers_len + 1) : NULL;
	j->headers_len = j->headers ? m->headers_len : 0;
	if (!j->headers)
		j->headers = g_strdup("");
	g_mutex_lock(&p->strings_lock);
	j->row.flags = sync_parser_keep(p, m->flags ? m->flags : "");
	g_mutex_unlock(&p->strings_lock);
	j->row.size = m->size;
	j->row.internaldate = m->internaldate;
	j->row.uid = m->uid;
	if (p->live)
		g_mutex_lock(&p->live->lock);
	g_ptr_array_add(p->jobs, j);
	if (p->live)
		g_mutex_unlock(&p->live->lock);
	if (p->jobs->len - p->queued >= SYNC_PARSE_BATCH)
		sync_parse_flush(p);
}

void sync_parser_init(struct sync_parser *p, const struct sync_ctx *s, struct sync_live *live)
{
	*p = (struct sync_parser){ .s = s, .live = live };
	p->jobs = g_ptr_array_new_with_free_func(sync_parse_job_free);
	g_mutex_init(&p->strings_lock);
	p->strings = g_string_chunk_new(64 * 1024);
}

/* After sync_parse_wait: the jobs and their strings go. */
void sync_parser_clear(struct sync_parser *p)
{
	g_ptr_array_free(p->jobs, TRUE);
	g_string_chunk_free(p->strings);
	g_mutex_clear(&p->strings_lock);
}

void sync_on_added(void *ctx, struct mailbox_message *m)
{
	sync_parse_push(ctx, m, 1);
}

void sync_parse_wait(struct sync_parser *p)
{
	sync_parse_flush(p);
	if (p->pool)
		g_thread_pool_free(p->pool, FALSE, TRUE);
	p->pool = NULL;
}

/* Waits for the jobs, then makes them match added one for one: what did
 * not come through on_added is parsed now. A driver that retried sent
 * the last attempt's messages through on_added after the first's: those
 * are the last jobs, and the only ones kept (their headers moved to the
 * jobs, which is why they cannot be parsed again from added). added NULL:
 * just wait. A live listing stops naming as they come: the jobs may be
 * cut back here. */
void sync_parse_finish(struct sync_parser *p, GArray *added)
{
	guint i, skip = 0;

	if (p->live) {
		g_mutex_lock(&p->live->lock);
		p->live->naming = 0;
		g_mutex_unlock(&p->live->lock);
	}
	sync_parse_wait(p);
	if (!added)
		return;
	if (p->jobs->len > added->len && added->len > 0) {
		skip = p->jobs->len - added->len;
		for (i = 0; i < added->len; i++)
			if (((struct sync_parse_job *)g_ptr_array_index(p->jobs, skip + i))->row.uid !=
			    g_array_index(added, struct mailbox_message, i).uid)
				break;
		if (i == added->len)
			g_ptr_array_remove_range(p->jobs, 0, skip);
	}
	for (i = 0; i < p->jobs->len && i < added->len; i++)
		if (((struct sync_parse_job *)g_ptr_array_index(p->jobs, i))->row.uid !=
		    g_array_index(added, struct mailbox_message, i).uid)
			break;
	g_ptr_array_set_size(p->jobs, i);
	p->queued = i;
	for (; i < added->len; i++)
		sync_parse_push(p, &g_array_index(added, struct mailbox_message, i), 0);
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
	guint n;

	if (!l || !g_atomic_int_dec_and_test(&l->refs))
		return;
	store_namer_free(l->namer);  /* (NULL once complete) before the names it borrows */
	for (guint i = 0; i < l->entries->len; i++) {
		struct sync_live_entry *e = l->entries->pdata[i];
		g_free(e->name);
		g_free(e);
	}
	n = l->entries->len;
	g_ptr_array_free(l->entries, TRUE);
	g_mutex_clear(&l->lock);
	g_cond_clear(&l->cond);
	g_free(l);
	if (n >= SYNC_TRIM_AFTER)
		malloc_trim(0);  /* as after the listing's sync (sync_folder_now) */
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

/* sync.c — keeps the cache in step with the server: folder list, folder
 * contents (new, vanished, flags, UIDVALIDITY), bodies on first read.
 *
 * Network work happens outside any store call; each result is written to
 * the store in one transaction afterwards. Must not: hold a lock across
 * network I/O, or download a body to answer a listing. */
#include <errno.h>
#include <unistd.h>
#include "log.h"
#include "mime.h"
#include "stats.h"
#include "sync.h"

#define SYNC_RETRY_MIN_US (5 * G_USEC_PER_SEC)  /* after a failure, wait this long at least */

void sync_init(struct sync_ctx *s, const struct mf_config *cfg, struct store *store,
               struct mailbox *mb)
{
	s->cfg = cfg;
	s->store = store;
	s->mb = mb;
	g_mutex_init(&s->lock);
	g_cond_init(&s->cond);
	s->busy = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	s->attempted = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	s->folders_busy = 0;
	s->folders_attempted = 0;
}

void sync_clear(struct sync_ctx *s)
{
	g_hash_table_destroy(s->busy);
	g_hash_table_destroy(s->attempted);
	g_mutex_clear(&s->lock);
	g_cond_clear(&s->cond);
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

/* Talks to the server and writes the outcome; no locks held. */
static enum mf_status sync_folder_now(struct sync_ctx *s, int64_t folder_id, int *changed)
{
	struct store_folder f = { 0 };
	struct mailbox_sync_request req = { 0 };
	struct mailbox_sync_result res = { 0 };
	struct store_sync out = { 0 };
	struct store_sync_message *added = NULL;
	struct store_sync_flags *flags = NULL;
	struct mime_header_info *infos = NULL;
	char **names = NULL;
	uint32_t *known = NULL, *removed = NULL;
	size_t n_known = 0, n_removed = 0, n_added = 0;
	enum mf_status st;

	st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		return st;
	if (f.noselect)
		goto out;
	st = store_folder_uids(s->store, folder_id, &known, &n_known);
	if (st != MF_OK)
		goto out;
	req.wire_name = f.wire_name;
	req.uidvalidity = f.uidvalidity;
	req.last_uid = n_known ? known[n_known - 1] : 0;
	req.highestmodseq = f.highestmodseq;
	if (s->cfg->protocol == MF_PROTO_POP3) {
		req.known_remote_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
		st = store_folder_remote_ids(s->store, folder_id, sync_note_remote_id,
		                             req.known_remote_ids);
		if (st != MF_OK)
			goto out;
	}

	st = s->mb->ops->sync_folder(s->mb, &req, &res);
	if (st != MF_OK) {
		if (st == MF_ERR_NOTFOUND)  /* the folder is gone: re-list soon */
			s->folders_attempted = 0;
		goto out;
	}

	/* Vanished: known UIDs <= last_uid that the server no longer lists. */
	if (!res.reset && n_known) {
		removed = g_new(uint32_t, n_known);
		for (size_t i = 0; i < n_known; i++) {
			if (!bsearch(&known[i], res.present->data, res.present->len, sizeof(uint32_t),
			             sync_uid_cmp))
				removed[n_removed++] = known[i];
		}
	}

	n_added = res.added->len;
	added = g_new0(struct store_sync_message, n_added ? n_added : 1);
	infos = g_new0(struct mime_header_info, n_added ? n_added : 1);
	names = g_new0(char *, n_added ? n_added : 1);
	for (size_t i = 0; i < n_added; i++) {
		const struct mailbox_message *m = &g_array_index(res.added, struct mailbox_message, i);
		int64_t mtime = m->internaldate;
		mime_parse_headers(m->headers, m->headers_len, &infos[i]);
		/* POP3 has no INTERNALDATE and no stable number: the Date header
		 * gives the time, and names are always subject names. */
		if (s->cfg->names_uid && s->cfg->protocol == MF_PROTO_IMAP)
			names[i] = g_strdup_printf("%u", m->uid);
		else
			names[i] = mime_name_base(&infos[i], m->internaldate == MAILBOX_NO_DATE
			                                     ? MIME_NO_DATE : m->internaldate);
		if (mtime == MAILBOX_NO_DATE)
			mtime = infos[i].date != MIME_NO_DATE ? infos[i].date : 0;
		added[i] = (struct store_sync_message){
			.uid = m->uid, .remote_id = m->remote_id, .flags = m->flags,
			.size = m->size, .internaldate = mtime, .base_name = names[i],
			.subject = infos[i].subject, .from = infos[i].from,
			.message_id = infos[i].message_id, .date_header = infos[i].date_header,
		};
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
	out.highestmodseq = res.highestmodseq;
	out.added = added;
	out.n_added = n_added;
	out.flag_updates = flags;
	out.n_flag_updates = res.flag_updates->len;
	out.removed = removed;
	out.n_removed = n_removed;
	out.now = g_get_real_time() / G_USEC_PER_SEC;
	if (res.reset)
		log_info("UIDVALIDITY of %s changed: rebuilding its cache", f.path);
	st = store_folder_apply_sync(s->store, &out);
	if (st == MF_OK) {
		stats_add(folders_synced, 1);
		if (changed)
			*changed = res.reset || n_added || n_removed;
	}
out:
	for (size_t i = 0; i < n_added; i++) {
		mime_header_info_clear(&infos[i]);
		g_free(names[i]);
	}
	g_free(infos);
	g_free(names);
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

enum mf_status sync_folder_if_stale(struct sync_ctx *s, int64_t folder_id, int force,
                                    int *changed)
{
	struct store_folder f = { 0 };
	gint64 now_real = g_get_real_time() / G_USEC_PER_SEC;
	gint64 *attempted;
	enum mf_status st;

	if (changed)
		*changed = 0;
	if (!s->mb)
		return MF_OK;
	g_mutex_lock(&s->lock);
	while (g_hash_table_contains(s->busy, &folder_id)) {
		/* Someone is syncing it: their result is as fresh as ours. */
		g_cond_wait(&s->cond, &s->lock);
		force = 0;
	}
	attempted = g_hash_table_lookup(s->attempted, &folder_id);
	if (!force && attempted && g_get_monotonic_time() < *attempted) {
		g_mutex_unlock(&s->lock);
		return MF_OK;
	}
	if (!force) {
		st = store_folder_by_id(s->store, folder_id, &f);
		int fresh = st == MF_OK && f.synced_at && now_real - f.synced_at < s->cfg->refresh;
		store_folder_clear(&f);
		if (st != MF_OK || fresh) {
			g_mutex_unlock(&s->lock);
			return st;
		}
	}
	g_hash_table_add(s->busy, g_memdup2(&folder_id, sizeof folder_id));
	g_mutex_unlock(&s->lock);

	st = sync_folder_now(s, folder_id, changed);

	g_mutex_lock(&s->lock);
	g_hash_table_remove(s->busy, &folder_id);
	if (st != MF_OK && st != MF_ERR_NOTFOUND) {
		/* Don't retry on every lookup while the server is away. */
		gint64 wait = sync_refresh_us(s) > SYNC_RETRY_MIN_US ? sync_refresh_us(s) : SYNC_RETRY_MIN_US;
		gint64 until = g_get_monotonic_time() + wait;
		g_hash_table_replace(s->attempted, g_memdup2(&folder_id, sizeof folder_id),
		                     g_memdup2(&until, sizeof until));
		log_warn("cannot check folder %" G_GINT64_FORMAT ": %s; serving the cache",
		         folder_id, mf_status_str(st));
	} else {
		g_hash_table_remove(s->attempted, &folder_id);
	}
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
	return st;
}

/* ---------------------------------------------------------------- bodies */

enum mf_status sync_body_open(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              int *fd_out, int *size_changed)
{
	struct store_folder f = { 0 };
	struct store_message m = { 0 };
	char *tmp_path = NULL;
	uint64_t written = 0;
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
	if (st != MF_OK)
		goto out;
	fd = store_body_begin(s->store, &tmp_path);
	if (fd < 0) {
		st = MF_ERR_IO;
		goto out;
	}
	st = s->mb->ops->fetch_body(s->mb, f.wire_name, f.uidvalidity, uid, m.remote_id,
	                            m.size, fd, &written);
	if (st != MF_OK) {
		close(fd);
		store_body_abort(s->store, tmp_path);
		goto out;
	}
	st = store_body_commit(s->store, folder_id, uid, tmp_path, size_changed);
	if (st != MF_OK) {
		close(fd);
		goto out;
	}
	/* The download's own fd still names the file after the rename, and
	 * even after an eviction racing with us. */
	*fd_out = fd;
out:
	if (st == MF_ERR_NOTFOUND)
		log_warn("message %u of %s is gone from the server", uid, f.path ? f.path : "?");
	else if (st != MF_OK)
		log_warn("cannot fetch message %u of %s: %s", uid, f.path ? f.path : "?",
		         mf_status_str(st));
	g_free(tmp_path);
	store_message_clear(&m);
	store_folder_clear(&f);
	return st;
}

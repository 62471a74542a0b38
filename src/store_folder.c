/* store_folder.c — the store's folder table: the folder list replaced as
 * a whole, lookups by path and id, children in path order, and the
 * per-folder views the sync needs (UIDs, remote ids, the highest UID).
 *
 * It must not know IMAP, POP3 or FUSE, must not do network I/O and must
 * not log. A callback runs with the store's mutex held and must never
 * call back into the store. */
#include <string.h>

#include <glib.h>
#include <sqlite3.h>

#include "store_int.h"

/* MF_OK when the folder row exists, MF_ERR_NOTFOUND when not. */
enum mf_status store_folder_exists(struct store *st, int64_t folder_id)
{
	sqlite3_stmt *q = store_query_folder(st, Q_FOLDER_EXISTS, folder_id);
	int rc = sqlite3_step(q);

	sqlite3_reset(q);
	return store_found(rc);
}

void store_folder_clear(struct store_folder *f)
{
	if (!f)
		return;
	g_free(f->path);
	g_free(f->wire_name);
	memset(f, 0, sizeof *f);
}

/* A deep copy of f into to. */
static void store_folder_copy(struct store_folder *to, const struct store_folder *f)
{
	*to = *f;
	to->path = g_strdup(f->path);
	to->wire_name = g_strdup(f->wire_name);
}

/* Fills f (a struct store_folder) from a STORE_FOLDER_COLUMNS row;
 * strings copied or borrowed. */
static void store_folder_from_row(sqlite3_stmt *q, void *out, int copy)
{
	char *(*text)(sqlite3_stmt *, int) = copy ? store_column_dup : store_column_borrow;
	struct store_folder *f = out;

	f->id = sqlite3_column_int64(q, 0);
	f->path = text(q, 1);
	f->wire_name = text(q, 2);
	f->delim = (char)sqlite3_column_int(q, 3);
	f->noselect = sqlite3_column_int(q, 4);
	f->uidvalidity = (uint32_t)sqlite3_column_int64(q, 5);
	f->uidnext = (uint32_t)sqlite3_column_int64(q, 6);
	f->highestmodseq = (uint64_t)sqlite3_column_int64(q, 7);
	f->synced_at = sqlite3_column_int64(q, 8);
	f->message_count = (uint32_t)sqlite3_column_int64(q, 9);
	f->ino_base = (uint64_t)sqlite3_column_int64(q, 10);
	f->changed_at = sqlite3_column_int64(q, 11);
}

enum mf_status store_folder_changed(struct store *st, int64_t folder_id, int changed)
{
	sqlite3_stmt *q = store_query_folder(st, Q_FOLDER_CHANGED, folder_id);
	enum mf_status rc;

	sqlite3_bind_int64(q, 2, g_get_real_time());
	sqlite3_bind_int(q, 3, changed != 0);
	rc = store_run(q);
	if (rc == MF_OK && sqlite3_changes(st->db) > 0)
		store_note_change(st, folder_id, NULL);  /* the kernel's attributes of it go */
	return rc;
}

enum mf_status store_folder_new_base(struct store *st, int64_t folder_id)
{
	sqlite3_stmt *q = store_query(st, Q_META_NEXT_BASE);
	int64_t base = 0;
	int src = sqlite3_step(q);

	if (src == SQLITE_ROW)
		base = sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	if (src != SQLITE_ROW)
		return store_db_status(src);
	if (base <= 0 || base >= (INT64_C(1) << 31))
		return MF_ERR_INVAL;  /* 2^31 folders and resets: not in this life */
	q = store_query_folder(st, Q_FOLDER_SET_BASE, folder_id);
	sqlite3_bind_int64(q, 2, base);
	return store_run(q);
}

/* Every folder without an inode base gets one (lock held). */
static enum mf_status store_folders_give_bases(struct store *st)
{
	GArray *ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
	sqlite3_stmt *q = store_query(st, Q_FOLDER_NO_BASE);
	enum mf_status rc;
	int src;

	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(q, 0);
		g_array_append_val(ids, id);
	}
	rc = store_rows_done(q, src);
	for (guint i = 0; rc == MF_OK && i < ids->len; i++)
		rc = store_folder_new_base(st, g_array_index(ids, int64_t, i));
	g_array_free(ids, TRUE);
	return rc;
}

/* A stored path is never "", never starts or ends with '/', never has an
 * empty level. */
static int store_path_valid(const char *path)
{
	size_t len = path ? strlen(path) : 0;

	return len > 0 && path[0] != '/' && path[len - 1] != '/' && !strstr(path, "//");
}

/* The parent part of path ("" at the top), g_malloc'd. */
static char *store_path_parent(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? g_strndup(path, (gsize)(slash - path)) : g_strdup("");
}

enum mf_status store_folder_rename(struct store *st, const char *old_path, const char *new_path)
{
	GArray *stale = g_array_new(FALSE, FALSE, sizeof(int64_t));
	GPtrArray *doomed = g_ptr_array_new_with_free_func(g_free);
	char *parent = NULL;
	enum mf_status rc;
	sqlite3_stmt *q;
	int src;

	if (!store_path_valid(old_path) || !store_path_valid(new_path))
		return MF_ERR_INVAL;
	parent = store_path_parent(new_path);
	store_lock(st);
	rc = store_begin(st);
	if (rc != MF_OK)
		goto out;
	/* Whatever the cache still holds at the new path is stale: the
	 * server just took the name for the renamed folder. */
	q = store_query(st, Q_FOLDER_UNDER);
	sqlite3_bind_text(q, 1, new_path, -1, SQLITE_STATIC);
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(q, 0);
		g_array_append_val(stale, id);
	}
	rc = store_rows_done(q, src);
	for (guint i = 0; rc == MF_OK && i < stale->len; i++) {
		int64_t id = g_array_index(stale, int64_t, i);
		st->body_total = -1;
		rc = store_collect_folder_bodies(st, id, doomed);
		if (rc == MF_OK) {
			store_note_change(st, id, NULL);
			rc = store_run(store_query_folder(st, Q_FOLDER_DELETE, id));
		}
	}
	if (rc != MF_OK)
		goto out;
	q = store_query(st, Q_FOLDER_RENAME);
	sqlite3_bind_text(q, 1, old_path, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, new_path, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, parent, -1, SQLITE_STATIC);
	rc = store_run(q);
out:
	rc = store_end(st, rc, doomed);
	pthread_mutex_unlock(&st->lock);
	g_free(parent);
	g_array_free(stale, TRUE);
	g_ptr_array_free(doomed, TRUE);
	return rc;
}

enum mf_status store_folders_replace(struct store *st,
                                     const struct store_folder_entry *entries,
                                     size_t n)
{
	GHashTable *wanted;
	GArray *gone;
	GPtrArray *doomed;
	enum mf_status rc;
	sqlite3_stmt *q;
	int src;

	for (size_t i = 0; i < n; i++)
		if (!store_path_valid(entries[i].path))
			return MF_ERR_INVAL;

	wanted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	gone = g_array_new(FALSE, FALSE, sizeof(int64_t));
	doomed = g_ptr_array_new_with_free_func(g_free);
	/* A folder's time starts when the mount first sees it (its first
	 * listing learns its contents; it changes nothing): what tar saw
	 * before it read a folder stays what it sees after. */
	int64_t now = g_get_real_time();

	store_lock(st);
	st->body_total = -1;  /* deleted folders take their bodies along */
	rc = store_begin(st);
	if (rc != MF_OK)
		goto out;

	/* Listed folders first, so an implied parent never overrides a listed one. */
	for (size_t i = 0; i < n; i++) {
		char *parent = store_path_parent(entries[i].path);
		q = store_query(st, Q_FOLDER_UPSERT);
		sqlite3_bind_text(q, 1, entries[i].path, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, parent, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, entries[i].wire_name, -1, SQLITE_STATIC);
		sqlite3_bind_int(q, 4, (unsigned char)entries[i].delim);
		sqlite3_bind_int(q, 5, entries[i].noselect ? 1 : 0);
		sqlite3_bind_int64(q, 6, now);
		rc = store_run(q);
		g_free(parent);
		if (rc != MF_OK)
			goto out;
		g_hash_table_add(wanted, g_strdup(entries[i].path));
	}
	for (size_t i = 0; i < n; i++) {
		char *path = g_strdup(entries[i].path);
		char *slash;
		while ((slash = strrchr(path, '/')) != NULL) {
			*slash = '\0';
			if (g_hash_table_contains(wanted, path))
				continue;
			char *parent = store_path_parent(path);
			q = store_query(st, Q_FOLDER_UPSERT_IMPLIED);
			sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
			sqlite3_bind_text(q, 2, parent, -1, SQLITE_STATIC);
			sqlite3_bind_int(q, 3, (unsigned char)entries[i].delim);
			sqlite3_bind_int64(q, 4, now);
			rc = store_run(q);
			g_free(parent);
			if (rc != MF_OK) {
				g_free(path);
				goto out;
			}
			g_hash_table_add(wanted, g_strdup(path));
		}
		g_free(path);
	}

	rc = store_folders_give_bases(st);
	if (rc != MF_OK)
		goto out;

	q = store_query(st, Q_FOLDER_ALL);
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		const char *path = (const char *)sqlite3_column_text(q, 1);
		if (!path || !g_hash_table_contains(wanted, path)) {
			int64_t id = sqlite3_column_int64(q, 0);
			g_array_append_val(gone, id);
		}
	}
	rc = store_rows_done(q, src);
	if (rc != MF_OK)
		goto out;
	for (guint i = 0; i < gone->len; i++) {
		int64_t id = g_array_index(gone, int64_t, i);
		rc = store_collect_folder_bodies(st, id, doomed);
		if (rc != MF_OK)
			goto out;
		/* Messages and body rows go by ON DELETE CASCADE. */
		store_note_change(st, id, NULL);
		rc = store_run(store_query_folder(st, Q_FOLDER_DELETE, id));
		if (rc != MF_OK)
			goto out;
	}
out:
	rc = store_end(st, rc, doomed);
	for (guint i = 0; rc == MF_OK && i < gone->len; i++) {
		char *d = store_body_dir(st, g_array_index(gone, int64_t, i));
		store_empty_dir(d, 1);
		g_free(d);
	}
	pthread_mutex_unlock(&st->lock);
	g_hash_table_destroy(wanted);
	g_array_free(gone, TRUE);
	g_ptr_array_free(doomed, TRUE);
	return rc;
}

/* Whether path may be a folder's: 0 only when it is surely none (lock
 * held). */
static int store_folder_path_may_exist(struct store *st, const char *path)
{
	if (st->folder_paths_stale) {
		sqlite3_stmt *q = store_query(st, Q_FOLDER_ALL);
		int src;

		g_hash_table_remove_all(st->folder_paths);
		while ((src = sqlite3_step(q)) == SQLITE_ROW)
			g_hash_table_add(st->folder_paths, store_column_dup(q, 1));
		sqlite3_reset(q);
		if (src != SQLITE_DONE)
			return 1;  /* unknown: ask the table */
		st->folder_paths_stale = 0;
	}
	return path && g_hash_table_contains(st->folder_paths, path);
}

/* The folder at path, or (path NULL) the one with inode base base, from
 * the last ones asked for while the cache is unchanged, else from the
 * table (lock held). */
static enum mf_status store_folder_memo_fetch(struct store *st, const char *path,
                                              uint64_t base, struct store_folder *out)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	for (size_t i = 0; i < G_N_ELEMENTS(st->folder_memo); i++) {
		const struct store_folder *m = &st->folder_memo[i];
		if (m->path && st->folder_memo_gen[i] == st->gen &&
		    (path ? strcmp(m->path, path) == 0 : m->ino_base == base)) {
			store_folder_copy(out, m);
			return MF_OK;
		}
	}
	if (path) {
		q = store_query(st, Q_FOLDER_BY_PATH);
		sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
	} else {
		q = store_query(st, Q_FOLDER_BY_BASE);
		sqlite3_bind_int64(q, 1, (sqlite3_int64)base);
	}
	rc = store_fetch(q, store_folder_from_row, out);
	if (rc == MF_OK) {
		unsigned k = st->folder_memo_next++ % G_N_ELEMENTS(st->folder_memo);
		store_folder_clear(&st->folder_memo[k]);
		store_folder_copy(&st->folder_memo[k], out);
		st->folder_memo_gen[k] = st->gen;
	}
	return rc;
}

enum mf_status store_folder_by_path(struct store *st, const char *path,
                                    struct store_folder *out)
{
	enum mf_status rc = MF_ERR_NOTFOUND;

	memset(out, 0, sizeof *out);
	store_lock(st);
	/* A NULL path is in no table: MF_ERR_NOTFOUND. */
	if (path && store_folder_path_may_exist(st, path))
		rc = store_folder_memo_fetch(st, path, 0, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* As store_folder_by_path, by inode base: the folder of a node id. */
enum mf_status store_folder_by_base(struct store *st, uint64_t base, struct store_folder *out)
{
	enum mf_status rc = MF_ERR_NOTFOUND;

	memset(out, 0, sizeof *out);
	store_lock(st);
	if (base != 0)
		rc = store_folder_memo_fetch(st, NULL, base, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_by_id(struct store *st, int64_t id, struct store_folder *out)
{
	enum mf_status rc;

	memset(out, 0, sizeof *out);
	store_lock(st);
	rc = store_fetch(store_query_folder(st, Q_FOLDER_BY_ID, id), store_folder_from_row, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_children(struct store *st, const char *parent,
                                     int (*cb)(void *ctx, const struct store_folder *f),
                                     void *ctx)
{
	enum mf_status rc;
	sqlite3_stmt *q;
	int src;

	if (!parent)
		parent = "";
	store_lock(st);
	q = store_query(st, Q_FOLDER_CHILDREN);
	sqlite3_bind_text(q, 1, parent, -1, SQLITE_STATIC);
	/* The mutex stays held while cb runs: the statement is mid-step. */
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_folder f;
		store_folder_from_row(q, &f, 0);
		if (cb(ctx, &f) != 0)
			break;
	}
	rc = store_rows_done(q, src);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_count(struct store *st, size_t *n)
{
	enum mf_status rc = MF_OK;
	sqlite3_stmt *q;
	int src;

	*n = 0;
	store_lock(st);
	q = store_query(st, Q_FOLDER_COUNT);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW)
		*n = (size_t)sqlite3_column_int64(q, 0);
	else
		rc = store_db_status(src);
	sqlite3_reset(q);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_touch(struct store *st, int64_t folder_id, int64_t now)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	store_lock(st);
	q = store_query_folder(st, Q_FOLDER_TOUCH, folder_id);
	sqlite3_bind_int64(q, 2, now);
	rc = store_run(q);
	if (rc == MF_OK && sqlite3_changes(st->db) == 0)
		rc = MF_ERR_NOTFOUND;
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_max_uid(struct store *st, int64_t folder_id, uint32_t *max)
{
	sqlite3_stmt *q;
	int src;

	*max = 0;
	store_lock(st);
	q = store_query_folder(st, Q_MSG_MAX_UID_OF, folder_id);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW)
		*max = (uint32_t)sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	pthread_mutex_unlock(&st->lock);
	return src == SQLITE_ROW ? MF_OK : store_db_status(src);
}

/* Calls cb with the uid (and remote_id, when the query has one) of each
 * row of query id (?1 = the folder), until it returns non-zero.
 * MF_ERR_NOTFOUND when the folder does not exist. */
static enum mf_status store_folder_each_uid(struct store *st, enum store_query id,
                                            int64_t folder_id,
                                            int (*cb)(void *ctx, uint32_t uid,
                                                      const char *remote_id),
                                            void *ctx)
{
	enum mf_status rc;
	sqlite3_stmt *q;
	int src;

	store_lock(st);
	rc = store_folder_exists(st, folder_id);
	if (rc != MF_OK)
		goto out;
	q = store_query_folder(st, id, folder_id);
	/* The mutex stays held while cb runs: the statement is mid-step. */
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		const char *remote_id =
			sqlite3_column_count(q) > 1 ? (const char *)sqlite3_column_text(q, 1) : NULL;
		if (cb(ctx, (uint32_t)sqlite3_column_int64(q, 0), remote_id) != 0)
			break;
	}
	rc = store_rows_done(q, src);
out:
	pthread_mutex_unlock(&st->lock);
	return rc;
}

static int store_uid_append(void *ctx, uint32_t uid, const char *remote_id)
{
	g_array_append_val((GArray *)ctx, uid);
	return 0;
}

enum mf_status store_folder_uids(struct store *st, int64_t folder_id,
                                 uint32_t **uids, size_t *count)
{
	GArray *a = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	enum mf_status rc;

	*uids = NULL;
	*count = 0;
	rc = store_folder_each_uid(st, Q_MSG_UIDS, folder_id, store_uid_append, a);
	if (rc == MF_OK) {
		*count = a->len;
		*uids = (uint32_t *)g_array_free(a, FALSE);
	} else {
		g_array_free(a, TRUE);
	}
	return rc;
}

enum mf_status store_folder_remote_ids(struct store *st, int64_t folder_id,
                                       int (*cb)(void *ctx, uint32_t uid, const char *remote_id),
                                       void *ctx)
{
	return store_folder_each_uid(st, Q_MSG_REMOTE_IDS, folder_id, cb, ctx);
}

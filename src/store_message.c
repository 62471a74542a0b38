/* store_message.c — the store's message rows: a sync result applied in
 * one transaction, lookups by name and UID, listings and read-ahead
 * candidates, and one message's change after the server accepted it
 * (user-given name, flags, removal).
 *
 * It must not know IMAP, POP3 or FUSE, must not do network I/O and must
 * not log; flags are kept as given, and what a listing hides is the
 * caller's business. A callback runs with the store's mutex held and must
 * never call back into the store. */
#include <string.h>

#include <glib.h>
#include <sqlite3.h>

#include "store_int.h"

/* A first listing stored in parts (store_insert_parts): the first part
 * small, so that its first messages may be opened soon, then doubling.
 * A part of 2,048 rows holds the mutex for about 10 ms. */
#define STORE_PART_FIRST 256
#define STORE_PART_MAX 2048

void store_message_clear(struct store_message *m)
{
	if (!m)
		return;
	g_free(m->remote_id);
	g_free(m->name);
	g_free(m->flags);
	g_free(m->subject);
	g_free(m->from_raw);
	g_free(m->message_id);
	g_free(m->date_raw);
	memset(m, 0, sizeof *m);
}

/* Deletes one message row (its body row goes by cascade) and queues its
 * body file. */
static enum mf_status store_delete_message(struct store *st, int64_t folder_id, uint32_t uid,
                                           GPtrArray *doomed)
{
	enum mf_status rc = MF_OK;

	if (store_doom_body_of(st, folder_id, uid, doomed, &rc))
		st->body_total = -1;
	if (rc != MF_OK)
		return rc;
	store_note_message(st, folder_id, uid);
	return store_run(store_query_message(st, Q_MSG_DELETE, folder_id, uid));
}

/* Stores the flags of one message ("" for none). */
static enum mf_status store_set_flags(struct store *st, int64_t folder_id, uint32_t uid,
                                      const char *flags)
{
	sqlite3_stmt *q = store_query_message(st, Q_MSG_SET_FLAGS, folder_id, uid);

	sqlite3_bind_text(q, 3, flags ? flags : "", -1, SQLITE_STATIC);
	return store_run(q);
}

/* Inserts the sync's new messages from..to-1 named by names (or
 * unnamed), lock held. */
static enum mf_status store_insert_messages(struct store *st, const struct store_sync *s,
                                            char **names, size_t from, size_t to)
{
	int64_t folder_id = s->folder_id;
	enum mf_status rc = MF_OK;

	for (size_t i = from; i < to && rc == MF_OK; i++) {
		const struct store_sync_message *a = store_sync_added(s, i);
		uint32_t uid = a->uid;
		sqlite3_stmt *q;
		if (uid == 0)
			return MF_ERR_INVAL;
		q = store_query_message(st, Q_MSG_UPSERT, folder_id, uid);
		store_bind_text_or_null(q, 3, a->remote_id);
		store_bind_text_or_null(q, 4, a->base_name);
		sqlite3_bind_text(q, 5, a->flags ? a->flags : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(q, 6, (sqlite3_int64)a->size);
		sqlite3_bind_int64(q, 7, a->internaldate);
		store_bind_text_or_null(q, 8, a->subject);
		store_bind_text_or_null(q, 9, a->from_raw);
		store_bind_text_or_null(q, 10, a->message_id);
		store_bind_text_or_null(q, 11, a->date_raw);
		store_bind_text_or_null(q, 12, names ? names[i] : NULL);
		rc = store_run(q);
	}
	return rc;
}

/* The folder's state after a sync: its UIDVALIDITY, UIDNEXT, modseq and
 * the time of its last full check (lock held). */
static enum mf_status store_set_sync_state(struct store *st, int64_t folder_id,
                                           uint32_t uidvalidity, uint32_t uidnext,
                                           uint64_t modseq, int64_t now)
{
	sqlite3_stmt *q = store_query_folder(st, Q_FOLDER_SET_SYNC, folder_id);

	sqlite3_bind_int64(q, 2, uidvalidity);
	sqlite3_bind_int64(q, 3, uidnext);
	sqlite3_bind_int64(q, 4, (sqlite3_int64)modseq);
	sqlite3_bind_int64(q, 5, now);
	return store_run(q);
}

/* A first listing in parts (s->stored set, names made, nothing to do
 * but add): all but the last part of the rows, in UID order, each part
 * committed in a transaction of its own with the mutex let go between
 * them, and those who waited for it let in (a cold tar of 50,000 messages
 * would wait a third of a second for one transaction). The last part is
 * left to the caller's transaction, which sets the folder's state. Lock
 * held and a transaction open, on entry and on return; rows from *done
 * on are still to insert.
 *
 * The first part sets the folder's UIDVALIDITY (bodies are fetched
 * against it), but not its UIDNEXT, modseq or time. Should the rest
 * never come (a crash, a full disk), the rows are the start of the
 * listing, named as the whole would name them, and the next check of the
 * folder, which is not fresh, asks for every UID and adds the rest. */
static enum mf_status store_insert_parts(struct store *st, const struct store_sync *s,
                                         char **names, size_t *done)
{
	size_t part = STORE_PART_FIRST;
	enum mf_status rc = MF_OK;

	*done = 0;
	while (s->n_added - *done > part) {
		rc = store_insert_messages(st, s, names, *done, *done + part);
		if (rc == MF_OK && *done == 0)
			rc = store_set_sync_state(st, s->folder_id, s->uidvalidity, 0, 0, 0);
		if (rc == MF_OK)
			rc = store_commit(st);
		if (rc != MF_OK)
			return rc;
		*done += part;
		pthread_mutex_unlock(&st->lock);
		s->stored(s->stored_ctx, store_sync_added(s, *done - 1)->uid);
		store_let_in(st);
		store_lock(st);
		rc = store_begin(st);
		if (rc == MF_OK)
			rc = store_folder_exists(st, s->folder_id);
		if (rc != MF_OK)
			return rc;
		part = MIN(part * 2, STORE_PART_MAX);
	}
	return rc;
}

enum mf_status store_folder_apply_sync(struct store *st, const struct store_sync *s)
{
	char **names = NULL;
	GPtrArray *doomed = g_ptr_array_new_with_free_func(g_free);
	enum mf_status rc;
	size_t done = 0;

	store_lock(st);
	rc = store_begin(st);
	if (rc != MF_OK)
		goto out;
	rc = store_folder_exists(st, s->folder_id);
	if (rc != MF_OK)
		goto out;

	if (s->reset) {
		st->body_total = -1;
		rc = store_collect_folder_bodies(st, s->folder_id, doomed);
		if (rc != MF_OK)
			goto out;
		store_note_folder_messages(st, s->folder_id);
		rc = store_run(store_query_folder(st, Q_MSG_DELETE_FOLDER, s->folder_id));
		if (rc == MF_OK)  /* the UIDs start again: so do its inode numbers */
			rc = store_folder_new_base(st, s->folder_id);
		/* "FOLDER/": the folder's own inode number changed too. */
		store_note_change(st, s->folder_id, "");
		if (rc != MF_OK)
			goto out;
	}

	names = store_names_for_appended(st, s);
	if (names && s->stored && s->first && !s->n_removed && !s->n_flag_updates) {
		rc = store_insert_parts(st, s, names, &done);
		if (rc != MF_OK)
			goto out;
	}
	rc = store_insert_messages(st, s, names, done, s->n_added);
	if (rc != MF_OK)
		goto out;

	for (size_t i = 0; i < s->n_flag_updates; i++) {
		rc = store_set_flags(st, s->folder_id, s->flag_updates[i].uid,
		                     s->flag_updates[i].flags);
		if (rc != MF_OK)
			goto out;
		/* A stat of the name must not answer from the kernel's cache. */
		if (s->flag_updates[i].hidden)
			store_note_message(st, s->folder_id, s->flag_updates[i].uid);
	}

	for (size_t i = 0; i < s->n_removed; i++) {
		rc = store_delete_message(st, s->folder_id, s->removed[i], doomed);
		if (rc != MF_OK)
			goto out;
	}

	rc = store_set_sync_state(st, s->folder_id, s->uidvalidity, s->uidnext, s->highestmodseq,
	                          s->now);
	if (rc != MF_OK)
		goto out;

	/* Flag changes alone never change a name, nor the count. */
	if (s->reset || s->n_added || s->n_removed) {
		rc = store_run(store_query_folder(st, Q_FOLDER_RECOUNT, s->folder_id));
		if (rc == MF_OK && !names)
			rc = store_assign_names(st, s->folder_id);
	}
	if (rc == MF_OK)
		rc = store_folder_changed(st, s->folder_id,
		                          !s->first && (s->reset || s->n_added || s->n_removed));
out:
	rc = store_end(st, rc, doomed);
	pthread_mutex_unlock(&st->lock);
	g_ptr_array_free(doomed, TRUE);
	g_strfreev(names);
	return rc;
}

/* Fills m (a struct store_message) from a STORE_MESSAGE_COLUMNS row;
 * strings copied or borrowed. */
static void store_message_from_row(sqlite3_stmt *q, void *out, int copy)
{
	char *(*text)(sqlite3_stmt *, int) = copy ? store_column_dup : store_column_borrow;
	struct store_message *m = out;

	m->folder_id = sqlite3_column_int64(q, 0);
	m->uid = (uint32_t)sqlite3_column_int64(q, 1);
	m->remote_id = text(q, 2);
	m->name = text(q, 3);
	m->flags = text(q, 4);
	if (!m->flags)
		m->flags = copy ? g_strdup("") : (char *)"";
	m->size = (uint64_t)sqlite3_column_int64(q, 5);
	m->size_known = sqlite3_column_int(q, 6);
	m->internaldate = sqlite3_column_int64(q, 7);
	m->subject = text(q, 8);
	m->from_raw = text(q, 9);
	m->message_id = text(q, 10);
	m->date_raw = text(q, 11);
	m->body_cached = sqlite3_column_int(q, 12);
}

static void store_message_key_from_row(sqlite3_stmt *q, void *out, int copy)
{
	struct store_message *m = out;

	(void)copy;
	m->uid = (uint32_t)sqlite3_column_int64(q, 0);
	m->flags = store_column_dup(q, 1);  /* NULL: not flagged \Deleted */
	if (!m->flags)
		m->flags = g_strdup("");
}

/* The message named name in the folder, read by query and fill. */
static enum mf_status store_message_named(struct store *st, int64_t folder_id, const char *name,
                                          enum store_query query,
                                          void (*fill)(sqlite3_stmt *, void *, int),
                                          struct store_message *out)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	memset(out, 0, sizeof *out);
	out->folder_id = folder_id;
	store_lock(st);
	q = store_query_folder(st, query, folder_id);
	/* A NULL name binds NULL, which no row equals: MF_ERR_NOTFOUND. */
	sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
	rc = store_fetch(q, fill, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_message_by_name(struct store *st, int64_t folder_id,
                                     const char *name, struct store_message *out)
{
	return store_message_named(st, folder_id, name, Q_MSG_BY_NAME, store_message_from_row, out);
}

enum mf_status store_message_key_by_name(struct store *st, int64_t folder_id,
                                         const char *name, struct store_message *out)
{
	return store_message_named(st, folder_id, name, Q_MSG_KEY_BY_NAME,
	                           store_message_key_from_row, out);
}

enum mf_status store_message_by_uid(struct store *st, int64_t folder_id,
                                    uint32_t uid, struct store_message *out)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	memset(out, 0, sizeof *out);
	store_lock(st);
	q = store_query_message(st, Q_MSG_BY_UID, folder_id, uid);
	rc = store_fetch(q, store_message_from_row, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_message_deleted(struct store *st, int64_t folder_id, uint32_t uid,
                                     struct store_message *out)
{
	enum mf_status rc;

	memset(out, 0, sizeof *out);
	out->folder_id = folder_id;
	store_lock(st);
	rc = store_fetch(store_query_message(st, Q_MSG_DELETED_BY_UID, folder_id, uid),
	                 store_message_key_from_row, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* Steps q (bound, ready) over message rows, calling cb with each (the
 * borrowed row) until it returns non-zero. Called with the mutex held, which stays held
 * while cb runs: the statement is mid-step. */
static enum mf_status store_each_message(sqlite3_stmt *q,
                                         int (*cb)(void *ctx, const struct store_message *m),
                                         void *ctx)
{
	int src;

	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_message m;
		store_message_from_row(q, &m, 0);
		if (cb(ctx, &m) != 0)
			break;
	}
	return store_rows_done(q, src);
}

enum mf_status store_messages_list(struct store *st, int64_t folder_id,
                                   int (*cb)(void *ctx, const struct store_message *m),
                                   void *ctx)
{
	enum mf_status rc;

	store_lock(st);
	rc = store_folder_exists(st, folder_id);
	if (rc == MF_OK)
		rc = store_each_message(store_query_folder(st, Q_MSG_LIST, folder_id), cb, ctx);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_message_set_user_name(struct store *st, int64_t folder_id, uint32_t uid,
                                           const char *name)
{
	enum mf_status rc;
	sqlite3_stmt *q;
	int src, recount;

	store_lock(st);
	rc = store_begin(st);
	if (rc != MF_OK)
		goto out;
	/* A name held by another message, given or derived, is refused:
	 * the caller removes that message first. */
	q = store_query_folder(st, Q_MSG_NAME_HOLDER, folder_id);
	sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, uid);
	src = sqlite3_step(q);
	sqlite3_reset(q);
	if (src == SQLITE_ROW) {
		rc = MF_ERR_EXISTS;
		goto out;
	}
	if (src != SQLITE_DONE) {
		rc = store_db_status(src);
		goto out;
	}
	recount = !name || store_name_wanted(st, folder_id, uid);
	q = store_query_message(st, Q_MSG_SET_USER_NAME, folder_id, uid);
	store_bind_text_or_null(q, 3, name);
	rc = store_run(q);
	if (rc == MF_OK && sqlite3_changes(st->db) == 0)
		rc = MF_ERR_NOTFOUND;
	if (rc == MF_OK)
		rc = store_folder_changed(st, folder_id, 1);  /* a name in it changed */
	if (rc == MF_OK && recount) {
		rc = store_assign_names(st, folder_id);
	} else if (rc == MF_OK) {
		/* Nobody wants the old name, nobody holds the new one. */
		store_note_message(st, folder_id, uid);
		store_note_change(st, folder_id, name);
		q = store_query_message(st, Q_MSG_SET_NAME, folder_id, uid);
		sqlite3_bind_text(q, 3, name, -1, SQLITE_STATIC);
		rc = store_run(q);
	}
out:
	rc = store_end(st, rc, NULL);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_message_set_flags(struct store *st, int64_t folder_id, uint32_t uid,
                                       const char *flags)
{
	enum mf_status rc;

	store_lock(st);
	rc = store_set_flags(st, folder_id, uid, flags);
	if (rc == MF_OK && sqlite3_changes(st->db) == 0)
		rc = MF_ERR_NOTFOUND;
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_message_remove(struct store *st, int64_t folder_id, uint32_t uid)
{
	GPtrArray *doomed = g_ptr_array_new_with_free_func(g_free);
	enum mf_status rc;

	int recount;

	store_lock(st);
	rc = store_begin(st);
	recount = rc == MF_OK && store_name_wanted(st, folder_id, uid);
	if (rc == MF_OK)
		rc = store_delete_message(st, folder_id, uid, doomed);
	if (rc == MF_OK && sqlite3_changes(st->db) > 0) {
		rc = store_run(store_query_folder(st, Q_FOLDER_COUNT_DOWN, folder_id));
		if (rc == MF_OK)
			rc = store_folder_changed(st, folder_id, 1);
	}
	if (rc == MF_OK && recount)
		rc = store_assign_names(st, folder_id);
	rc = store_end(st, rc, doomed);
	pthread_mutex_unlock(&st->lock);
	g_ptr_array_free(doomed, TRUE);
	return rc;
}

enum mf_status store_messages_after(struct store *st, int64_t folder_id,
                                    const struct store_message *after, int by_uid,
                                    enum store_cached cached, uint64_t max_size, size_t limit,
                                    int (*cb)(void *ctx, const struct store_message *m),
                                    void *ctx)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	store_lock(st);
	if (cached == STORE_CACHED)
		q = store_query_folder(st, by_uid ? Q_MSG_CACHED_AFTER_UID : Q_MSG_CACHED_AFTER, folder_id);
	else
		q = store_query_folder(st, by_uid ? Q_MSG_UNCACHED_AFTER_UID : Q_MSG_UNCACHED_AFTER,
		                       folder_id);
	if (by_uid)
		sqlite3_bind_int64(q, 2, after->uid);
	else
		sqlite3_bind_text(q, 2, after->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, (sqlite3_int64)(max_size > INT64_MAX ? INT64_MAX : max_size));
	sqlite3_bind_int64(q, 4, (sqlite3_int64)limit);
	rc = store_each_message(q, cb, ctx);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

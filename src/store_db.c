/* store_db.c — the store's database: the schema, the query table, open
 * and close, and the small helpers every file of the store uses to run a
 * statement, a transaction or read a column (store_int.h maps the rest).
 *
 * It must not know IMAP, POP3 or FUSE, must not do network I/O, must not
 * log (callers decide what to say), and must never build SQL from values:
 * every value goes through a bound parameter of a statement prepared once
 * at open, here. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>

#include "log.h"
#include "store_int.h"

#define STORE_SCHEMA_VERSION 7

/* How long a writer between two parts waits for those it kept waiting. */
#define STORE_LET_IN_US 2000

/* ino_base: the last inode base handed out. A counter, so that a base
 * is never handed out twice while the cache lives. */
#define STORE_META_SQL \
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;" \
	"INSERT OR IGNORE INTO meta VALUES('ino_base', 0);"

/* The messages a flag may hide: so few that an open of a message learns
 * whether it is one from this index alone (LIKE is a superset of
 * mailbox_flags_deleted's test, which sees the flags it returns). */
#define STORE_DELETED_INDEX_SQL \
	"CREATE INDEX IF NOT EXISTS messages_deleted ON messages(folder_id, uid)" \
	"  WHERE flags LIKE '%\\Deleted%';"

/* A folder by its inode base: what every request about a node asks. */
#define STORE_BASE_INDEX_SQL \
	"CREATE INDEX IF NOT EXISTS folders_base ON folders(ino_base);"

/* The bodies kept in each pack file: whether one is still used. */
#define STORE_PACK_INDEX_SQL \
	"CREATE INDEX IF NOT EXISTS bodies_pack ON bodies(folder_id, pack, off) WHERE pack != 0;"

/* The step from version i to i + 1, each one transaction. */
static const char *const store_upgrade_sql[STORE_SCHEMA_VERSION] = {
	/* Version 1 kept From and Date decoded; version 2 keeps them as sent
	 * and decodes on demand. A decoded value decodes to itself, so the
	 * rows stay as they are. */
	[1] = "BEGIN IMMEDIATE;"
	      " ALTER TABLE messages RENAME COLUMN from_addr TO from_raw;"
	      " ALTER TABLE messages RENAME COLUMN date_header TO date_raw;"
	      " PRAGMA user_version = 2; COMMIT",
	/* Version 3 numbers inodes: each folder's base is its id (ids are
	 * never reused), the counter above every id ever given. */
	[2] = "BEGIN IMMEDIATE;"
	      " ALTER TABLE folders ADD COLUMN ino_base INTEGER NOT NULL DEFAULT 0;"
	      " UPDATE folders SET ino_base = id;"
	      STORE_META_SQL
	      " UPDATE meta SET value = (SELECT coalesce(max(seq), 0)"
	      "   FROM sqlite_sequence WHERE name = 'folders') WHERE key = 'ino_base';"
	      " PRAGMA user_version = 3; COMMIT",
	/* Version 4 keeps a folder's time: when its contents last changed as
	 * the mount saw them (0 until its first listing). */
	[3] = "BEGIN IMMEDIATE;"
	      " ALTER TABLE folders ADD COLUMN changed_at INTEGER NOT NULL DEFAULT 0;"
	      " PRAGMA user_version = 4; COMMIT",
	/* Version 5 indexes the messages flagged \Deleted. */
	[4] = "BEGIN IMMEDIATE;"
	      STORE_DELETED_INDEX_SQL
	      " PRAGMA user_version = 5; COMMIT",
	/* Version 6 indexes folders by inode base. */
	[5] = "BEGIN IMMEDIATE;"
	      STORE_BASE_INDEX_SQL
	      " PRAGMA user_version = 6; COMMIT",
	/* Version 7 keeps bodies in pack files as well (pack, off). */
	[6] = "BEGIN IMMEDIATE;"
	      " ALTER TABLE bodies ADD COLUMN pack INTEGER NOT NULL DEFAULT 0;"
	      " ALTER TABLE bodies ADD COLUMN off INTEGER NOT NULL DEFAULT 0;"
	      STORE_PACK_INDEX_SQL
	      " PRAGMA user_version = 7; COMMIT",
};

static const char store_schema_sql[] =
	"CREATE TABLE IF NOT EXISTS folders("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT," /* never reuse an id: body dirs are named by it */
	"  path TEXT UNIQUE NOT NULL,"
	"  parent TEXT NOT NULL,"                 /* path of the parent, '' at the top */
	"  wire_name TEXT,"
	"  delim INTEGER NOT NULL DEFAULT 0,"
	"  noselect INTEGER NOT NULL DEFAULT 0,"
	"  uidvalidity INTEGER NOT NULL DEFAULT 0,"
	"  uidnext INTEGER NOT NULL DEFAULT 0,"
	"  highestmodseq INTEGER NOT NULL DEFAULT 0,"
	"  synced_at INTEGER NOT NULL DEFAULT 0,"
	"  messages INTEGER NOT NULL DEFAULT 0,"  /* kept by every change: a lookup must not count */
	"  ino_base INTEGER NOT NULL DEFAULT 0,"  /* inode numbers: see store_folder.ino_base */
	"  changed_at INTEGER NOT NULL DEFAULT 0);" /* µs: see store_folder.changed_at */
	"CREATE INDEX IF NOT EXISTS folders_parent ON folders(parent, path);"
	"CREATE TABLE IF NOT EXISTS messages("
	"  folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,"
	"  uid INTEGER NOT NULL,"
	"  remote_id TEXT,"
	"  base_name TEXT,"
	"  user_name TEXT,"
	"  name TEXT,"
	"  flags TEXT NOT NULL DEFAULT '',"
	"  size INTEGER NOT NULL DEFAULT 0,"
	"  size_known INTEGER NOT NULL DEFAULT 0,"
	"  internaldate INTEGER NOT NULL DEFAULT 0,"
	"  subject TEXT, from_raw TEXT, message_id TEXT, date_raw TEXT,"
	"  PRIMARY KEY(folder_id, uid)) WITHOUT ROWID;"
	"CREATE UNIQUE INDEX IF NOT EXISTS messages_name ON messages(folder_id, name);"
	/* Partial: IMAP rows have no remote_id and cost the index nothing. */
	"CREATE INDEX IF NOT EXISTS messages_remote_id ON messages(folder_id, remote_id)"
	"  WHERE remote_id IS NOT NULL;"
	STORE_DELETED_INDEX_SQL
	STORE_BASE_INDEX_SQL
	"CREATE TABLE IF NOT EXISTS bodies("
	"  folder_id INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  last_used INTEGER NOT NULL,"           /* a counter, not a time: LRU must be exact */
	"  pack INTEGER NOT NULL DEFAULT 0,"      /* 0: its own file; else the pack file's number */
	"  off INTEGER NOT NULL DEFAULT 0,"       /* where it starts in its pack */
	"  PRIMARY KEY(folder_id, uid),"
	"  FOREIGN KEY(folder_id, uid) REFERENCES messages(folder_id, uid) ON DELETE CASCADE"
	") WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS bodies_lru ON bodies(last_used);"
	STORE_PACK_INDEX_SQL
	STORE_META_SQL;

#define STORE_FOLDER_COLUMNS \
	"SELECT f.id, f.path, f.wire_name, f.delim, f.noselect, f.uidvalidity," \
	" f.uidnext, f.highestmodseq, f.synced_at, f.messages, f.ino_base, f.changed_at" \
	" FROM folders f "

#define STORE_MESSAGE_COLUMNS \
	"SELECT m.folder_id, m.uid, m.remote_id, m.name, m.flags, m.size," \
	" m.size_known, m.internaldate, m.subject, m.from_raw, m.message_id," \
	" m.date_raw, b.uid IS NOT NULL FROM messages m" \
	" LEFT JOIN bodies b ON b.folder_id = m.folder_id AND b.uid = m.uid "

/* The next LRU tick: strictly above every body's, so order is exact. */
#define STORE_NEXT_TICK "(SELECT coalesce(max(last_used), 0) + 1 FROM bodies)"

static const char *const store_query_sql[Q_COUNT] = {
	[Q_BEGIN] = "BEGIN IMMEDIATE",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
	[Q_FOLDER_BY_PATH] = STORE_FOLDER_COLUMNS "WHERE f.path = ?1",
	[Q_FOLDER_BY_ID] = STORE_FOLDER_COLUMNS "WHERE f.id = ?1",
	[Q_FOLDER_BY_BASE] = STORE_FOLDER_COLUMNS "WHERE f.ino_base = ?1",
	[Q_FOLDER_CHILDREN] = STORE_FOLDER_COLUMNS "WHERE f.parent = ?1 ORDER BY f.path",
	[Q_FOLDER_COUNT] = "SELECT count(*) FROM folders",
	[Q_FOLDER_EXISTS] = "SELECT 1 FROM folders WHERE id = ?1",
	[Q_FOLDER_UPSERT] =
		"INSERT INTO folders(path, parent, wire_name, delim, noselect, changed_at)"
		" VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(path) DO UPDATE SET"
		" wire_name = excluded.wire_name, delim = excluded.delim,"
		" noselect = excluded.noselect",
	[Q_FOLDER_UPSERT_IMPLIED] =
		"INSERT INTO folders(path, parent, wire_name, delim, noselect, changed_at)"
		" VALUES(?1, ?2, NULL, ?3, 1, ?4) ON CONFLICT(path) DO UPDATE SET noselect = 1",
	[Q_FOLDER_ALL] = "SELECT id, path FROM folders",
	[Q_FOLDER_DELETE] = "DELETE FROM folders WHERE id = ?1",
	[Q_FOLDER_SET_SYNC] =
		"UPDATE folders SET uidvalidity = ?2, uidnext = ?3, highestmodseq = ?4,"
		" synced_at = ?5 WHERE id = ?1",
	[Q_FOLDER_TOUCH] = "UPDATE folders SET synced_at = ?2 WHERE id = ?1",
	/* Forward only, and strictly: each change is a new time. ?3: the
	 * contents changed (else it is set only where it was never set: a
	 * folder of a cache from before schema 4). */
	[Q_FOLDER_CHANGED] =
		"UPDATE folders SET changed_at = max(changed_at + 1, ?2)"
		" WHERE id = ?1 AND (?3 OR changed_at = 0)",
	[Q_MSG_BY_NAME] = STORE_MESSAGE_COLUMNS "WHERE m.folder_id = ?1 AND m.name = ?2",
	/* Indexes alone answer it: the name's (which holds the key), and the
	 * one of \Deleted messages for the flags; a row is read only for a
	 * message that index holds. Reading each row cost a page the cache
	 * missed, for a folder read in name order. */
	[Q_MSG_KEY_BY_NAME] =
		"SELECT m.uid, d.flags FROM messages m"
		" LEFT JOIN messages d INDEXED BY messages_deleted"
		"  ON d.folder_id = m.folder_id AND d.uid = m.uid AND d.flags LIKE '%\\Deleted%'"
		" WHERE m.folder_id = ?1 AND m.name = ?2",
	[Q_MSG_BY_UID] = STORE_MESSAGE_COLUMNS "WHERE m.folder_id = ?1 AND m.uid = ?2",
	/* From the index of \Deleted messages alone: a row only for them. */
	[Q_MSG_DELETED_BY_UID] =
		"SELECT uid, flags FROM messages INDEXED BY messages_deleted"
		" WHERE folder_id = ?1 AND uid = ?2 AND flags LIKE '%\\Deleted%'",
	[Q_MSG_LIST] = STORE_MESSAGE_COLUMNS
		"WHERE m.folder_id = ?1 AND m.name IS NOT NULL ORDER BY m.name",
	[Q_MSG_UIDS] = "SELECT uid FROM messages WHERE folder_id = ?1 ORDER BY uid",
	[Q_MSG_REMOTE_IDS] =
		"SELECT uid, remote_id FROM messages WHERE folder_id = ?1"
		" AND remote_id IS NOT NULL ORDER BY uid",
	[Q_MSG_UPSERT] =
		"INSERT INTO messages(folder_id, uid, remote_id, base_name, flags, size,"
		" size_known, internaldate, subject, from_raw, message_id, date_raw, name)"
		" VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12)"
		" ON CONFLICT(folder_id, uid) DO UPDATE SET"
		" remote_id = excluded.remote_id, base_name = excluded.base_name,"
		" flags = excluded.flags,"
		" size = CASE WHEN size_known THEN size ELSE excluded.size END,"
		" internaldate = excluded.internaldate, subject = excluded.subject,"
		" from_raw = excluded.from_raw, message_id = excluded.message_id,"
		" date_raw = excluded.date_raw",
	[Q_MSG_SET_FLAGS] = "UPDATE messages SET flags = ?3 WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_DELETE] = "DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_DELETE_FOLDER] = "DELETE FROM messages WHERE folder_id = ?1",
	[Q_MSG_NAMES] =
		"SELECT uid, base_name, user_name, name FROM messages"
		" WHERE folder_id = ?1 ORDER BY uid",
	[Q_MSG_SET_NAME] = "UPDATE messages SET name = ?3 WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_SIZE] = "SELECT size, size_known FROM messages WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_SET_SIZE] =
		"UPDATE messages SET size = ?3, size_known = 1 WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_NAME_HOLDER] =
		"SELECT 1 FROM messages WHERE folder_id = ?1 AND uid != ?3"
		" AND (name = ?2 OR user_name = ?2)",
	[Q_MSG_SET_USER_NAME] =
		"UPDATE messages SET user_name = ?3 WHERE folder_id = ?1 AND uid = ?2",
	[Q_BODY_EXISTS] = "SELECT 1 FROM bodies WHERE folder_id = ?1 AND uid = ?2",
	[Q_BODY_OF_FOLDER] = "SELECT uid, size, pack, off FROM bodies WHERE folder_id = ?1",
	[Q_BODY_UPSERT] =
		"INSERT INTO bodies(folder_id, uid, size, last_used, pack, off)"
		" VALUES(?1, ?2, ?3, " STORE_NEXT_TICK ", ?4, ?5)"
		" ON CONFLICT(folder_id, uid) DO UPDATE SET"
		" size = excluded.size, last_used = excluded.last_used,"
		" pack = excluded.pack, off = excluded.off",
	/* ?3: a tick above every body's (Q_BODY_LAST_TICK + 1, + 2, ... for
	 * a batch). */
	[Q_BODY_TOUCH] = "UPDATE bodies SET last_used = ?3 WHERE folder_id = ?1 AND uid = ?2",
	[Q_BODY_LAST_TICK] = "SELECT coalesce(max(last_used), 0) FROM bodies",
	[Q_BODY_DELETE] = "DELETE FROM bodies WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_NAME_WANTED] =
		"SELECT 1 FROM messages WHERE folder_id = ?1 AND uid != ?2 AND base_name IN (?3, ?4)"
		" LIMIT 1",
	[Q_MSG_NAME_OF] = "SELECT name FROM messages WHERE folder_id = ?1 AND uid = ?2",
	[Q_FOLDER_COUNT_DOWN] = "UPDATE folders SET messages = messages - 1 WHERE id = ?1",
	[Q_MSG_MAX_UID_OF] = "SELECT coalesce(max(uid), 0) FROM messages WHERE folder_id = ?1",
	/* A folder and everything below it (no LIKE: names may hold % and _). */
	[Q_META_NEXT_BASE] =
		"UPDATE meta SET value = value + 1 WHERE key = 'ino_base' RETURNING value",
	[Q_FOLDER_SET_BASE] = "UPDATE folders SET ino_base = ?2 WHERE id = ?1",
	[Q_FOLDER_NO_BASE] = "SELECT id FROM folders WHERE ino_base = 0",
	[Q_FOLDER_PATH] = "SELECT path FROM folders WHERE id = ?1",
	[Q_FOLDER_UNDER] =
		"SELECT id FROM folders WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/'",
	[Q_FOLDER_RENAME] =
		"UPDATE folders SET path = ?2 || substr(path, length(?1) + 1),"
		" parent = CASE WHEN path = ?1 THEN ?3 ELSE ?2 || substr(parent, length(?1) + 1) END"
		" WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/'",
	[Q_MSG_UNCACHED_AFTER] = STORE_MESSAGE_COLUMNS
		"WHERE m.folder_id = ?1 AND m.name > ?2 AND b.uid IS NULL AND m.size <= ?3"
		" ORDER BY m.name LIMIT ?4",
	[Q_MSG_UNCACHED_AFTER_UID] = STORE_MESSAGE_COLUMNS
		"WHERE m.folder_id = ?1 AND m.uid > ?2 AND m.name IS NOT NULL AND b.uid IS NULL"
		" AND m.size <= ?3 ORDER BY m.uid LIMIT ?4",
	[Q_MSG_CACHED_AFTER] = STORE_MESSAGE_COLUMNS
		"WHERE m.folder_id = ?1 AND m.name > ?2 AND b.uid IS NOT NULL AND m.size <= ?3"
		" ORDER BY m.name LIMIT ?4",
	[Q_MSG_CACHED_AFTER_UID] = STORE_MESSAGE_COLUMNS
		"WHERE m.folder_id = ?1 AND m.uid > ?2 AND m.name IS NOT NULL AND b.uid IS NOT NULL"
		" AND m.size <= ?3 ORDER BY m.uid LIMIT ?4",
	[Q_BODY_LOC] = "SELECT size, pack, off FROM bodies WHERE folder_id = ?1 AND uid = ?2",
	[Q_BODY_PACK_USED] = "SELECT 1 FROM bodies WHERE folder_id = ?1 AND pack = ?2 LIMIT 1",
	[Q_BODY_PACK_LAST] = "SELECT coalesce(max(pack), 0) FROM bodies",
	[Q_FOLDER_BASE_OF] = "SELECT ino_base FROM folders WHERE id = ?1",
	[Q_FOLDER_RECOUNT] =
		"UPDATE folders SET messages ="
		" (SELECT count(*) FROM messages WHERE folder_id = ?1) WHERE id = ?1",
	[Q_BODY_USAGE] = "SELECT coalesce(sum(size), 0), count(*) FROM bodies",
	[Q_BODY_LRU] =
		"SELECT folder_id, uid, size, pack, off FROM bodies"
		" WHERE NOT (folder_id = ?1 AND uid = ?2) ORDER BY last_used",
};

/* ---- small helpers ---- */

enum mf_status store_db_status(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return MF_OK;
	case SQLITE_NOMEM:
		return MF_ERR_NOMEM;
	case SQLITE_READONLY:
		return MF_ERR_READONLY;
	default:
		return MF_ERR_IO;
	}
}

/* Steps a statement that returns no rows, then resets it (so it holds no
 * read transaction open). */
enum mf_status store_run(sqlite3_stmt *q)
{
	int rc = sqlite3_step(q);

	sqlite3_reset(q);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? MF_OK : store_db_status(rc);
}

/* store_query() with ?1 bound to a folder's id. */
sqlite3_stmt *store_query_folder(struct store *st, enum store_query id, int64_t folder_id)
{
	sqlite3_stmt *q = store_query(st, id);

	sqlite3_bind_int64(q, 1, folder_id);
	return q;
}

/* store_query() with ?1 and ?2 bound to a message's key. */
sqlite3_stmt *store_query_message(struct store *st, enum store_query id, int64_t folder_id,
                                  uint32_t uid)
{
	sqlite3_stmt *q = store_query_folder(st, id, folder_id);

	sqlite3_bind_int64(q, 2, uid);
	return q;
}

/* What a step that wants a row ended with: MF_OK on a row,
 * MF_ERR_NOTFOUND when there is none. */
enum mf_status store_found(int rc)
{
	return rc == SQLITE_DONE ? MF_ERR_NOTFOUND : store_db_status(rc);
}

/* Steps q (bound, ready) for its one row, which fill copies into out;
 * MF_ERR_NOTFOUND when there is none. */
enum mf_status store_fetch(sqlite3_stmt *q, void (*fill)(sqlite3_stmt *q, void *out, int copy),
                           void *out)
{
	int rc = sqlite3_step(q);

	if (rc == SQLITE_ROW)
		fill(q, out, 1);
	sqlite3_reset(q);
	return store_found(rc);
}

/* Resets q, whose last step returned rc, and says how stepping went:
 * SQLITE_DONE (every row read) and SQLITE_ROW (the caller stopped at a
 * row) are MF_OK. */
enum mf_status store_rows_done(sqlite3_stmt *q, int rc)
{
	sqlite3_reset(q);
	return store_db_status(rc);
}

enum mf_status store_begin(struct store *st)
{
	return store_run(store_query(st, Q_BEGIN));
}

void store_lock(struct store *st)
{
	if (pthread_mutex_trylock(&st->lock) == 0)
		return;
	g_atomic_int_inc(&st->waiting);
	pthread_mutex_lock(&st->lock);
	if (g_atomic_int_dec_and_test(&st->waiting) && g_atomic_int_get(&st->letting_in)) {
		g_mutex_lock(&st->let_in_lock);
		g_cond_broadcast(&st->let_in);
		g_mutex_unlock(&st->let_in_lock);
	}
}

void store_let_in(struct store *st)
{
	gint64 until = g_get_monotonic_time() + STORE_LET_IN_US;

	g_mutex_lock(&st->let_in_lock);
	g_atomic_int_inc(&st->letting_in);
	while (g_atomic_int_get(&st->waiting) > 0 &&
	       g_cond_wait_until(&st->let_in, &st->let_in_lock, until))
		;
	g_atomic_int_add(&st->letting_in, -1);
	g_mutex_unlock(&st->let_in_lock);
}

enum mf_status store_commit(struct store *st)
{
	enum mf_status rc = store_run(store_query(st, Q_COMMIT));

	if (rc != MF_OK)
		store_run(store_query(st, Q_ROLLBACK));
	return rc;
}

void store_rollback(struct store *st)
{
	st->body_total = -1;
	if (!sqlite3_get_autocommit(st->db))
		store_run(store_query(st, Q_ROLLBACK));
}

/* Ends the transaction store_begin() opened: commits when rc is MF_OK,
 * then unlinks the files doomed holds (may be NULL): after the commit, so
 * a rollback never leaves rows without files because of us. Rolls back
 * otherwise. Returns the outcome. */
enum mf_status store_end(struct store *st, enum mf_status rc, GPtrArray *doomed)
{
	if (rc == MF_OK)
		rc = store_commit(st);
	if (rc == MF_OK)
		store_doom_run(st, doomed);
	else
		store_rollback(st);
	for (guint i = 0; rc == MF_OK && st->observer && st->changes && i < st->changes->len; i++)
		st->observer(st->observer_ctx, g_ptr_array_index(st->changes, i));
	if (st->changes)
		g_ptr_array_set_size(st->changes, 0);
	g_clear_pointer(&st->noted_path, g_free);  /* folders may move next time */
	return rc;
}

void store_note_change(struct store *st, int64_t folder_id, const char *name)
{
	sqlite3_stmt *q;
	char *path = NULL;

	if (!st->observer)
		return;
	if (folder_id != st->noted_folder || !st->noted_path) {
		g_clear_pointer(&st->noted_path, g_free);
		q = store_query_folder(st, Q_FOLDER_PATH, folder_id);
		if (sqlite3_step(q) == SQLITE_ROW)
			st->noted_path = store_column_dup(q, 0);
		sqlite3_reset(q);
		st->noted_folder = folder_id;
	}
	if (st->noted_path)
		path = name ? g_strconcat(st->noted_path, "/", name, NULL) : g_strdup(st->noted_path);
	if (path)
		g_ptr_array_add(st->changes, path);
}

void store_note_message(struct store *st, int64_t folder_id, uint32_t uid)
{
	sqlite3_stmt *q;

	if (!st->observer)
		return;
	q = store_query_message(st, Q_MSG_NAME_OF, folder_id, uid);
	if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_TEXT)
		store_note_change(st, folder_id, (const char *)sqlite3_column_text(q, 0));
	sqlite3_reset(q);
}

void store_note_folder_messages(struct store *st, int64_t folder_id)
{
	sqlite3_stmt *q;

	if (!st->observer)
		return;
	q = store_query_folder(st, Q_MSG_NAMES, folder_id);
	while (sqlite3_step(q) == SQLITE_ROW)
		if (sqlite3_column_type(q, 3) == SQLITE_TEXT)
			store_note_change(st, folder_id, (const char *)sqlite3_column_text(q, 3));
	sqlite3_reset(q);
}

void store_set_growth_observer(struct store *st,
                               void (*grew)(void *ctx, uint64_t ino_base, uint32_t uid),
                               void *ctx)
{
	store_lock(st);
	st->grew = grew;
	st->grew_ctx = ctx;
	pthread_mutex_unlock(&st->lock);
}

void store_set_observer(struct store *st, void (*changed)(void *ctx, const char *path), void *ctx)
{
	store_lock(st);
	st->observer = changed;
	st->observer_ctx = ctx;
	if (!st->changes)
		st->changes = g_ptr_array_new_with_free_func(g_free);
	pthread_mutex_unlock(&st->lock);
}

char *store_column_dup(sqlite3_stmt *q, int col)
{
	const unsigned char *s = sqlite3_column_text(q, col);

	return s ? g_strdup((const char *)s) : NULL;
}

/* Borrowed text: valid until the statement steps again. */
char *store_column_borrow(sqlite3_stmt *q, int col)
{
	return (char *)sqlite3_column_text(q, col);
}

void store_bind_text_or_null(sqlite3_stmt *q, int col, const char *s)
{
	if (s)
		sqlite3_bind_text(q, col, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(q, col);
}

/* ---- open / close ---- */

/* Creates dir (and parents) mode 0700; tightens an existing looser one. */
static int store_make_private_dir(const char *dir, char **err)
{
	struct stat sb;

	if (g_mkdir_with_parents(dir, 0700) != 0 || stat(dir, &sb) != 0) {
		*err = g_strdup_printf("cannot create cache directory %s: %s", dir, g_strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb.st_mode)) {
		*err = g_strdup_printf("cache path %s is not a directory", dir);
		return -1;
	}
	if ((sb.st_mode & 0077) != 0 && chmod(dir, 0700) != 0) {
		*err = g_strdup_printf("cannot make cache directory %s private: %s", dir,
		                       g_strerror(errno));
		return -1;
	}
	return 0;
}

static int store_pragma_int(sqlite3 *db, const char *sql, int *value)
{
	sqlite3_stmt *q = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(q);
		if (rc == SQLITE_ROW) {
			*value = sqlite3_column_int(q, 0);
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(q);
	return rc;
}

/* One mount per cache: DIR/lock, flock'ed for as long as the store is
 * open (a daemon's fork keeps it: the lock belongs to the open file), and
 * naming the process that holds it. Returns the fd, or -1 and *msg. */
static int store_lock_dir(const char *dir, char **msg)
{
	char *path = g_build_filename(dir, "lock", NULL);
	char owner[32] = "";
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0) {
		*msg = g_strdup_printf("cannot open %s: %s", path, g_strerror(errno));
	} else if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		ssize_t n = errno == EWOULDBLOCK ? pread(fd, owner, sizeof owner - 1, 0) : -1;
		owner[n > 0 ? n : 0] = 0;
		g_strchomp(owner);
		if (errno == EWOULDBLOCK || n >= 0)
			*msg = g_strdup_printf("the cache %s is in use by another mailfs%s%s%s", dir,
			                       *owner ? " (pid " : "", owner, *owner ? ")" : "");
		else
			*msg = g_strdup_printf("cannot lock %s: %s", path, g_strerror(errno));
		close(fd);
		fd = -1;
	} else {
		store_lock_note_pid(fd);
	}
	g_free(path);
	return fd;
}

void store_lock_note_pid(int fd)
{
	char pid[32];
	int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());

	if (fd >= 0 && ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) != len)
		return;  /* the name is a courtesy: the lock itself holds */
}

void store_claim(struct store *st)
{
	store_lock_note_pid(st->lock_fd);
}

enum store_db_open {
	STORE_DB_OK,
	STORE_DB_DAMAGED,  /* not a database, or one that fails its check */
	STORE_DB_FAILED,
};

static int store_db_is_damage(int rc)
{
	rc &= 0xff;
	return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* Closes what store_open_db opened, so that it may be tried again. */
static void store_close_db(struct store *st)
{
	for (int i = 0; i < Q_COUNT; i++)
		g_clear_pointer(&st->q[i], sqlite3_finalize);
	g_clear_pointer(&st->db, sqlite3_close);
}

/* PRAGMA quick_check(1): "ok", or the first problem found (g_malloc'd). */
static char *store_quick_check(sqlite3 *db, int *rc)
{
	sqlite3_stmt *q = NULL;
	char *problem = NULL;

	*rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &q, NULL);
	if (*rc == SQLITE_OK) {
		*rc = sqlite3_step(q);
		if (*rc == SQLITE_ROW) {
			const char *text = (const char *)sqlite3_column_text(q, 0);
			if (!text || strcmp(text, "ok") != 0)
				problem = g_strdup(text ? text : "quick_check failed");
			*rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(q);
	return problem;
}

/* Opens dbpath into st->db: checked, upgraded or created, queries
 * prepared. On failure *msg says why and st->db is closed. */
static enum store_db_open store_open_db(struct store *st, const char *dbpath, char **msg)
{
	int version = 0;
	int rc;
	char *problem;

	rc = sqlite3_open_v2(dbpath, &st->db,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
	                     NULL);
	if (rc != SQLITE_OK) {
		*msg = g_strdup_printf("cannot open %s: %s", dbpath,
		                      st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		goto fail_db;
	}
	sqlite3_busy_timeout(st->db, 5000);
	/* A 2 MiB page cache: a big folder's first listing, written in one
	 * transaction, spills to the WAL file (the OS caches it) rather than
	 * hold the folder twice in memory (a 50,000-message folder must be
	 * listed within 64 MiB of RSS). */
	/* Exclusive: the mount is the cache's one user (DIR/lock), so a
	 * transaction takes no file lock (in WAL mode the WAL's index then
	 * lives in memory, not in a -shm file). Each open of a message used
	 * to take and drop two POSIX locks: four fcntl calls. */
	rc = sqlite3_exec(st->db, "PRAGMA locking_mode=EXCLUSIVE;"
	                  " PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	                  " PRAGMA cache_size=-2048;"
	                  " PRAGMA foreign_keys=ON;", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = store_pragma_int(st->db, "PRAGMA user_version", &version);
	if (rc != SQLITE_OK) {
		/* The mount holds the database alone (locking_mode above): a
		 * program that has it open, sqlite3 say, keeps it out. */
		*msg = g_strdup_printf("cannot use %s: %s%s", dbpath, sqlite3_errmsg(st->db),
		                       rc == SQLITE_BUSY ? " (another program has it open)" : "");
		goto fail_db;
	}
	problem = store_quick_check(st->db, &rc);
	if (problem || rc != SQLITE_OK) {
		*msg = problem ? problem : g_strdup(sqlite3_errmsg(st->db));
		if (!problem && !store_db_is_damage(rc))
			goto fail_db;
		rc = SQLITE_CORRUPT;
		goto fail_db;
	}
	if (version == 0) {
		rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(st->db, store_schema_sql, NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(st->db, "PRAGMA user_version = "
			                  G_STRINGIFY(STORE_SCHEMA_VERSION) "; COMMIT",
			                  NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			*msg = g_strdup_printf("cannot create the cache schema in %s: %s", dbpath,
			                      sqlite3_errmsg(st->db));
			goto fail_db;
		}
		version = STORE_SCHEMA_VERSION;
	}
	/* Older caches are upgraded in steps, each one transaction. */
	for (; version >= 1 && version < STORE_SCHEMA_VERSION; version++) {
		rc = sqlite3_exec(st->db, store_upgrade_sql[version], NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			*msg = g_strdup_printf("cannot upgrade the cache schema in %s: %s", dbpath,
			                      sqlite3_errmsg(st->db));
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
			goto fail_db;
		}
	}
	if (version != STORE_SCHEMA_VERSION) {
		*msg = g_strdup_printf("%s has cache schema version %d; this mailfs knows %d"
		                      " (remove the cache directory or use a newer mailfs)",
		                      dbpath, version, STORE_SCHEMA_VERSION);
		goto fail_db;
	}
	for (int i = 0; i < Q_COUNT; i++) {
		rc = sqlite3_prepare_v3(st->db, store_query_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                        &st->q[i], NULL);
		if (rc != SQLITE_OK) {
			*msg = g_strdup_printf("cannot prepare a cache query: %s", sqlite3_errmsg(st->db));
			goto fail_db;
		}
		st->q_writes[i] = !sqlite3_stmt_readonly(st->q[i]) || i == Q_ROLLBACK;
	}

	return STORE_DB_OK;

fail_db:
	{
		int damaged = store_db_is_damage(rc) ||
		              (st->db && store_db_is_damage(sqlite3_extended_errcode(st->db)));
		store_close_db(st);
		return damaged ? STORE_DB_DAMAGED : STORE_DB_FAILED;
	}
}

/* Renames dbpath and its -wal and -shm files to
 * dbpath.damaged-YYYYmmdd-HHMMSS[...]: the new name (g_malloc'd), or NULL
 * with *msg set. */
static char *store_move_aside(const char *dbpath, char **msg)
{
	GDateTime *now = g_date_time_new_now_local();
	char *stamp = g_date_time_format(now, "%Y%m%d-%H%M%S");
	char *aside = g_strdup_printf("%s.damaged-%s", dbpath, stamp);

	g_date_time_unref(now);
	for (int n = 2; g_file_test(aside, G_FILE_TEST_EXISTS); n++) {
		char *next = g_strdup_printf("%s.damaged-%s-%d", dbpath, stamp, n);
		g_free(aside);
		aside = next;
	}
	g_free(stamp);
	for (int i = 0; i < 3; i++) {
		static const char *const suffix[] = { "", "-wal", "-shm" };
		char *from = g_strconcat(dbpath, suffix[i], NULL);
		char *to = g_strconcat(aside, suffix[i], NULL);
		int rc = rename(from, to);
		int e = errno;
		g_free(from);
		g_free(to);
		if (rc != 0 && !(i > 0 && e == ENOENT)) {
			g_free(*msg);
			*msg = g_strdup_printf("the cache %s is damaged and cannot be moved aside: %s",
			                       dbpath, g_strerror(e));
			g_free(aside);
			return NULL;
		}
	}
	return aside;
}

struct store *store_open(const char *dir, uint64_t body_cap, char **err)
{
	struct store *st = NULL;
	char *sub = NULL, *dbpath = NULL, *msg = NULL;
	int lock_fd = -1;
	int rc;

	if (!dir || !*dir) {
		msg = g_strdup("no cache directory given");
		goto fail;
	}
	if (store_make_private_dir(dir, &msg) != 0)
		goto fail;
	lock_fd = store_lock_dir(dir, &msg);
	if (lock_fd < 0)
		goto fail;
	for (int i = 0; i < 2; i++) {
		sub = g_build_filename(dir, i == 0 ? "bodies" : "tmp", NULL);
		if (store_make_private_dir(sub, &msg) != 0)
			goto fail;
		g_free(sub);
		sub = NULL;
	}

	st = g_new0(struct store, 1);
	st->lock_fd = g_steal_fd(&lock_fd);
	pthread_mutex_init(&st->lock, NULL);
	g_mutex_init(&st->let_in_lock);
	g_cond_init(&st->let_in);
	st->dir = g_strdup(dir);
	st->body_cap = body_cap;
	st->body_total = -1;
	st->touched = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	g_mutex_init(&st->used_lock);
	st->used = g_array_new(FALSE, FALSE, sizeof(gint64));
	st->live_packs = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	st->pack_seq = -1;
	st->folder_paths = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	st->folder_paths_stale = 1;

	dbpath = g_build_filename(dir, "cache.sqlite", NULL);
	rc = store_open_db(st, dbpath, &msg);
	if (rc == STORE_DB_DAMAGED) {
		/* A damaged cache only costs what it remembered: keep it for the
		 * user, build a new one, and go on. */
		char *aside = store_move_aside(dbpath, &msg);
		if (!aside)
			goto fail;
		log_warn("the cache %s was damaged (%s): moved aside to %s, starting a new one",
		         dbpath, msg, aside);
		g_free(aside);
		g_clear_pointer(&msg, g_free);
		rc = store_open_db(st, dbpath, &msg);
	}
	if (rc != STORE_DB_OK)
		goto fail;

	/* Downloads interrupted by a crash or kill leave files nobody will
	 * commit. */
	sub = g_build_filename(dir, "tmp", NULL);
	store_empty_dir(sub, 0);
	store_sweep_orphan_bodies(st);
	goto out;

fail:
	if (st)
		store_close(st);
	if (lock_fd >= 0)
		close(lock_fd);
	st = NULL;
	if (err)
		*err = msg;
	else
		g_free(msg);
out:
	g_free(sub);
	g_free(dbpath);
	return st;
}

uint64_t store_generation(struct store *st)
{
	uint64_t gen;

	store_lock(st);
	gen = st->gen;
	pthread_mutex_unlock(&st->lock);
	return gen;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->db) {
		store_lock(st);
		store_body_touch_flush(st);
		pthread_mutex_unlock(&st->lock);
	}
	for (int i = 0; i < Q_COUNT; i++)
		sqlite3_finalize(st->q[i]);
	sqlite3_close(st->db);
	pthread_mutex_destroy(&st->lock);
	g_mutex_clear(&st->let_in_lock);
	g_cond_clear(&st->let_in);
	if (st->lock_fd >= 0)
		close(st->lock_fd);  /* the lock goes with it */
	if (st->changes)
		g_ptr_array_free(st->changes, TRUE);
	if (st->touched)
		g_hash_table_destroy(st->touched);
	if (st->used)
		g_array_free(st->used, TRUE);
	g_mutex_clear(&st->used_lock);
	if (st->live_packs)
		g_hash_table_destroy(st->live_packs);
	if (st->folder_paths)
		g_hash_table_destroy(st->folder_paths);
	for (size_t i = 0; i < G_N_ELEMENTS(st->folder_memo); i++)
		store_folder_clear(&st->folder_memo[i]);
	g_free(st->noted_path);
	g_free(st->dir);
	g_free(st);
}

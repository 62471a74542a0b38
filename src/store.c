/* store.c — the SQLite metadata cache (folders, messages, names, flags,
 * sync state) and the on-disk body cache with LRU eviction.
 *
 * It must not know IMAP, POP3 or FUSE, must not do network I/O, must not
 * log (callers decide what to say), and must never build SQL from values:
 * every value goes through a bound parameter of a statement prepared once
 * at open. One pthread mutex serialises every public call; callbacks are
 * called with it held (a statement is being stepped), so a callback must
 * never call back into the store. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>

#include "store.h"

#define STORE_SCHEMA_VERSION 2

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
	"  messages INTEGER NOT NULL DEFAULT 0);"  /* kept by every change: a lookup must not count */
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
	"CREATE TABLE IF NOT EXISTS bodies("
	"  folder_id INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  last_used INTEGER NOT NULL,"           /* a counter, not a time: LRU must be exact */
	"  PRIMARY KEY(folder_id, uid),"
	"  FOREIGN KEY(folder_id, uid) REFERENCES messages(folder_id, uid) ON DELETE CASCADE"
	") WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS bodies_lru ON bodies(last_used);";

#define STORE_FOLDER_COLUMNS \
	"SELECT f.id, f.path, f.wire_name, f.delim, f.noselect, f.uidvalidity," \
	" f.uidnext, f.highestmodseq, f.synced_at, f.messages FROM folders f "

#define STORE_MESSAGE_COLUMNS \
	"SELECT m.folder_id, m.uid, m.remote_id, m.name, m.flags, m.size," \
	" m.size_known, m.internaldate, m.subject, m.from_raw, m.message_id," \
	" m.date_raw, b.uid IS NOT NULL FROM messages m" \
	" LEFT JOIN bodies b ON b.folder_id = m.folder_id AND b.uid = m.uid "

/* The next LRU tick: strictly above every body's, so order is exact. */
#define STORE_NEXT_TICK "(SELECT coalesce(max(last_used), 0) + 1 FROM bodies)"

enum store_query {
	Q_BEGIN, Q_COMMIT, Q_ROLLBACK,
	Q_FOLDER_BY_PATH, Q_FOLDER_BY_ID, Q_FOLDER_CHILDREN, Q_FOLDER_COUNT,
	Q_FOLDER_EXISTS, Q_FOLDER_UPSERT, Q_FOLDER_UPSERT_IMPLIED, Q_FOLDER_ALL,
	Q_FOLDER_DELETE, Q_FOLDER_SET_SYNC, Q_FOLDER_TOUCH,
	Q_MSG_BY_NAME, Q_MSG_BY_UID, Q_MSG_LIST, Q_MSG_UIDS, Q_MSG_REMOTE_IDS,
	Q_MSG_UPSERT, Q_MSG_SET_FLAGS,
	Q_MSG_DELETE, Q_MSG_DELETE_FOLDER, Q_MSG_NAMES, Q_MSG_SET_NAME,
	Q_MSG_SIZE, Q_MSG_SET_SIZE, Q_MSG_NAME_HOLDER, Q_MSG_SET_USER_NAME,
	Q_BODY_EXISTS, Q_BODY_OF_FOLDER, Q_BODY_UPSERT, Q_BODY_TOUCH,
	Q_BODY_DELETE, Q_BODY_USAGE, Q_BODY_LRU, Q_FOLDER_RECOUNT, Q_BODY_SIZE,
	Q_MSG_UNCACHED_AFTER, Q_MSG_UNCACHED_AFTER_UID, Q_MSG_NAME_WANTED, Q_MSG_NAME_OF, Q_FOLDER_COUNT_DOWN,
	Q_MSG_MAX_UID_OF,
	Q_COUNT
};

static const char *const store_query_sql[Q_COUNT] = {
	[Q_BEGIN] = "BEGIN IMMEDIATE",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
	[Q_FOLDER_BY_PATH] = STORE_FOLDER_COLUMNS "WHERE f.path = ?1",
	[Q_FOLDER_BY_ID] = STORE_FOLDER_COLUMNS "WHERE f.id = ?1",
	[Q_FOLDER_CHILDREN] = STORE_FOLDER_COLUMNS "WHERE f.parent = ?1 ORDER BY f.path",
	[Q_FOLDER_COUNT] = "SELECT count(*) FROM folders",
	[Q_FOLDER_EXISTS] = "SELECT 1 FROM folders WHERE id = ?1",
	[Q_FOLDER_UPSERT] =
		"INSERT INTO folders(path, parent, wire_name, delim, noselect)"
		" VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(path) DO UPDATE SET"
		" wire_name = excluded.wire_name, delim = excluded.delim,"
		" noselect = excluded.noselect",
	[Q_FOLDER_UPSERT_IMPLIED] =
		"INSERT INTO folders(path, parent, wire_name, delim, noselect)"
		" VALUES(?1, ?2, NULL, ?3, 1) ON CONFLICT(path) DO UPDATE SET noselect = 1",
	[Q_FOLDER_ALL] = "SELECT id, path FROM folders",
	[Q_FOLDER_DELETE] = "DELETE FROM folders WHERE id = ?1",
	[Q_FOLDER_SET_SYNC] =
		"UPDATE folders SET uidvalidity = ?2, uidnext = ?3, highestmodseq = ?4,"
		" synced_at = ?5 WHERE id = ?1",
	[Q_FOLDER_TOUCH] = "UPDATE folders SET synced_at = ?2 WHERE id = ?1",
	[Q_MSG_BY_NAME] = STORE_MESSAGE_COLUMNS "WHERE m.folder_id = ?1 AND m.name = ?2",
	[Q_MSG_BY_UID] = STORE_MESSAGE_COLUMNS "WHERE m.folder_id = ?1 AND m.uid = ?2",
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
	[Q_MSG_SIZE] = "SELECT size FROM messages WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_SET_SIZE] =
		"UPDATE messages SET size = ?3, size_known = 1 WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_NAME_HOLDER] =
		"SELECT 1 FROM messages WHERE folder_id = ?1 AND uid != ?3"
		" AND (name = ?2 OR user_name = ?2)",
	[Q_MSG_SET_USER_NAME] =
		"UPDATE messages SET user_name = ?3 WHERE folder_id = ?1 AND uid = ?2",
	[Q_BODY_EXISTS] = "SELECT 1 FROM bodies WHERE folder_id = ?1 AND uid = ?2",
	[Q_BODY_OF_FOLDER] = "SELECT uid FROM bodies WHERE folder_id = ?1",
	[Q_BODY_UPSERT] =
		"INSERT INTO bodies(folder_id, uid, size, last_used)"
		" VALUES(?1, ?2, ?3, " STORE_NEXT_TICK ")"
		" ON CONFLICT(folder_id, uid) DO UPDATE SET"
		" size = excluded.size, last_used = excluded.last_used",
	[Q_BODY_TOUCH] =
		"UPDATE bodies SET last_used = " STORE_NEXT_TICK
		" WHERE folder_id = ?1 AND uid = ?2",
	[Q_BODY_DELETE] = "DELETE FROM bodies WHERE folder_id = ?1 AND uid = ?2",
	[Q_MSG_NAME_WANTED] =
		"SELECT 1 FROM messages WHERE folder_id = ?1 AND uid != ?2 AND base_name IN (?3, ?4)"
		" LIMIT 1",
	[Q_MSG_NAME_OF] = "SELECT name FROM messages WHERE folder_id = ?1 AND uid = ?2",
	[Q_FOLDER_COUNT_DOWN] = "UPDATE folders SET messages = messages - 1 WHERE id = ?1",
	[Q_MSG_MAX_UID_OF] = "SELECT coalesce(max(uid), 0) FROM messages WHERE folder_id = ?1",
	[Q_MSG_UNCACHED_AFTER] = STORE_MESSAGE_COLUMNS
		"WHERE m.folder_id = ?1 AND m.name > ?2 AND b.uid IS NULL AND m.size <= ?3"
		" ORDER BY m.name LIMIT ?4",
	[Q_MSG_UNCACHED_AFTER_UID] = STORE_MESSAGE_COLUMNS
		"WHERE m.folder_id = ?1 AND m.uid > ?2 AND m.name IS NOT NULL AND b.uid IS NULL"
		" AND m.size <= ?3 ORDER BY m.uid LIMIT ?4",
	[Q_BODY_SIZE] = "SELECT size FROM bodies WHERE folder_id = ?1 AND uid = ?2",
	[Q_FOLDER_RECOUNT] =
		"UPDATE folders SET messages ="
		" (SELECT count(*) FROM messages WHERE folder_id = ?1) WHERE id = ?1",
	[Q_BODY_USAGE] = "SELECT coalesce(sum(size), 0), count(*) FROM bodies",
	[Q_BODY_LRU] =
		"SELECT folder_id, uid, size FROM bodies"
		" WHERE NOT (folder_id = ?1 AND uid = ?2) ORDER BY last_used",
};

struct store {
	pthread_mutex_t lock;
	sqlite3 *db;
	char *dir;
	uint64_t body_cap;
	int64_t body_total;   /* bytes of cached bodies, -1 when it must be summed again */
	sqlite3_stmt *q[Q_COUNT];
};

/* ---- small helpers ---- */

static enum mf_status store_db_status(int rc)
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

/* A cached statement, reset and unbound, ready for new parameters. */
static sqlite3_stmt *store_query(struct store *st, enum store_query id)
{
	sqlite3_stmt *q = st->q[id];

	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return q;
}

/* Steps a statement that returns no rows, then resets it (so it holds no
 * read transaction open). */
static enum mf_status store_run(sqlite3_stmt *q)
{
	int rc = sqlite3_step(q);

	sqlite3_reset(q);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? MF_OK : store_db_status(rc);
}

static enum mf_status store_begin(struct store *st)
{
	return store_run(store_query(st, Q_BEGIN));
}

static enum mf_status store_commit(struct store *st)
{
	enum mf_status rc = store_run(store_query(st, Q_COMMIT));

	if (rc != MF_OK)
		store_run(store_query(st, Q_ROLLBACK));
	return rc;
}

static void store_rollback(struct store *st)
{
	st->body_total = -1;
	if (!sqlite3_get_autocommit(st->db))
		store_run(store_query(st, Q_ROLLBACK));
}

static char *store_body_path(const struct store *st, int64_t folder_id, uint32_t uid)
{
	return g_strdup_printf("%s/bodies/%" PRId64 "/%" PRIu32, st->dir, folder_id, uid);
}

static char *store_body_dir(const struct store *st, int64_t folder_id)
{
	return g_strdup_printf("%s/bodies/%" PRId64, st->dir, folder_id);
}

static char *store_column_dup(sqlite3_stmt *q, int col)
{
	const unsigned char *s = sqlite3_column_text(q, col);

	return s ? g_strdup((const char *)s) : NULL;
}

/* Borrowed text: valid until the statement steps again. */
static char *store_column_borrow(sqlite3_stmt *q, int col)
{
	return (char *)sqlite3_column_text(q, col);
}

/* Removes every file in dir, then dir itself when rmdir_too. Errors are
 * ignored: what remains is swept at the next open. */
static void store_empty_dir(const char *dir, int rmdir_too)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			char *p = g_build_filename(dir, e->d_name, NULL);
			unlink(p);
			g_free(p);
		}
		closedir(d);
	}
	if (rmdir_too)
		rmdir(dir);
}

static void store_unlink_all(GPtrArray *paths)
{
	for (guint i = 0; paths && i < paths->len; i++)
		unlink(g_ptr_array_index(paths, i));
}

/* Adds the paths of the folder's cached bodies to doomed (unlinked after
 * the transaction commits, so a rollback never leaves rows without files
 * because of us). */
static enum mf_status store_collect_folder_bodies(struct store *st, int64_t folder_id,
                                                  GPtrArray *doomed)
{
	sqlite3_stmt *q = store_query(st, Q_BODY_OF_FOLDER);
	int rc;

	sqlite3_bind_int64(q, 1, folder_id);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		g_ptr_array_add(doomed, store_body_path(st, folder_id,
		                                        (uint32_t)sqlite3_column_int64(q, 0)));
	sqlite3_reset(q);
	return rc == SQLITE_DONE ? MF_OK : store_db_status(rc);
}

static int store_has_body(struct store *st, int64_t folder_id, uint32_t uid, enum mf_status *err)
{
	sqlite3_stmt *q = store_query(st, Q_BODY_EXISTS);
	int rc;

	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	rc = sqlite3_step(q);
	sqlite3_reset(q);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		*err = store_db_status(rc);
	return rc == SQLITE_ROW;
}

/* MF_OK when the folder row exists, MF_ERR_NOTFOUND when not. */
static enum mf_status store_folder_exists(struct store *st, int64_t folder_id)
{
	sqlite3_stmt *q = store_query(st, Q_FOLDER_EXISTS);
	int rc;

	sqlite3_bind_int64(q, 1, folder_id);
	rc = sqlite3_step(q);
	sqlite3_reset(q);
	if (rc == SQLITE_ROW)
		return MF_OK;
	return rc == SQLITE_DONE ? MF_ERR_NOTFOUND : store_db_status(rc);
}

/* ---- open / close ---- */

/* Removes body files that have no row (a crash between rename and
 * commit, or between commit and unlink), so the byte total the LRU sees
 * is what the disk holds. */
static void store_sweep_orphan_bodies(struct store *st)
{
	char *root = g_build_filename(st->dir, "bodies", NULL);
	DIR *d = opendir(root);
	struct dirent *e;

	if (!d)
		goto out;
	while ((e = readdir(d)) != NULL) {
		char *end;
		if (e->d_name[0] == '.')
			continue;
		int64_t fid = g_ascii_strtoll(e->d_name, &end, 10);
		char *sub = g_build_filename(root, e->d_name, NULL);
		DIR *sd = *end == '\0' ? opendir(sub) : NULL;
		struct dirent *se;
		while (sd && (se = readdir(sd)) != NULL) {
			enum mf_status err = MF_OK;
			if (se->d_name[0] == '.')
				continue;
			guint64 uid = g_ascii_strtoull(se->d_name, &end, 10);
			int keep = *end == '\0' && uid <= UINT32_MAX &&
			           store_has_body(st, fid, (uint32_t)uid, &err);
			if (!keep && err == MF_OK) {
				char *p = g_build_filename(sub, se->d_name, NULL);
				unlink(p);
				g_free(p);
			}
		}
		if (sd) {
			closedir(sd);
			rmdir(sub); /* only succeeds when empty */
		}
		g_free(sub);
	}
	closedir(d);
out:
	g_free(root);
}

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

struct store *store_open(const char *dir, uint64_t body_cap, char **err)
{
	struct store *st = NULL;
	char *sub = NULL, *dbpath = NULL, *msg = NULL;
	int version = 0;
	int rc;

	if (!dir || !*dir) {
		msg = g_strdup("no cache directory given");
		goto fail;
	}
	if (store_make_private_dir(dir, &msg) != 0)
		goto fail;
	for (int i = 0; i < 2; i++) {
		sub = g_build_filename(dir, i == 0 ? "bodies" : "tmp", NULL);
		if (store_make_private_dir(sub, &msg) != 0)
			goto fail;
		g_free(sub);
		sub = NULL;
	}

	st = g_new0(struct store, 1);
	pthread_mutex_init(&st->lock, NULL);
	st->dir = g_strdup(dir);
	st->body_cap = body_cap;
	st->body_total = -1;

	dbpath = g_build_filename(dir, "cache.sqlite", NULL);
	rc = sqlite3_open_v2(dbpath, &st->db,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
	                     NULL);
	if (rc != SQLITE_OK) {
		msg = g_strdup_printf("cannot open %s: %s", dbpath,
		                      st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 5000);
	/* A 16 MiB page cache holds a 10,000-message folder while it is
	 * written in one transaction. */
	rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	                  " PRAGMA cache_size=-16384;"
	                  " PRAGMA foreign_keys=ON;", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = store_pragma_int(st->db, "PRAGMA user_version", &version);
	if (rc != SQLITE_OK) {
		msg = g_strdup_printf("cannot use %s: %s", dbpath, sqlite3_errmsg(st->db));
		goto fail;
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
			msg = g_strdup_printf("cannot create the cache schema in %s: %s", dbpath,
			                      sqlite3_errmsg(st->db));
			goto fail;
		}
	} else if (version == 1) {
		/* Version 1 kept From and Date decoded; version 2 keeps them as
		 * sent and decodes on demand. A decoded value decodes to itself,
		 * so the rows stay as they are. */
		rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE;"
		                  " ALTER TABLE messages RENAME COLUMN from_addr TO from_raw;"
		                  " ALTER TABLE messages RENAME COLUMN date_header TO date_raw;"
		                  " PRAGMA user_version = 2; COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			msg = g_strdup_printf("cannot upgrade the cache schema in %s: %s", dbpath,
			                      sqlite3_errmsg(st->db));
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
			goto fail;
		}
	} else if (version != STORE_SCHEMA_VERSION) {
		msg = g_strdup_printf("%s has cache schema version %d; this mailfs knows %d"
		                      " (remove the cache directory or use a newer mailfs)",
		                      dbpath, version, STORE_SCHEMA_VERSION);
		goto fail;
	}
	for (int i = 0; i < Q_COUNT; i++) {
		rc = sqlite3_prepare_v3(st->db, store_query_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                        &st->q[i], NULL);
		if (rc != SQLITE_OK) {
			msg = g_strdup_printf("cannot prepare a cache query: %s", sqlite3_errmsg(st->db));
			goto fail;
		}
	}

	/* Downloads interrupted by a crash or kill leave files nobody will
	 * commit. */
	sub = g_build_filename(dir, "tmp", NULL);
	store_empty_dir(sub, 0);
	store_sweep_orphan_bodies(st);
	goto out;

fail:
	if (st)
		store_close(st);
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

void store_close(struct store *st)
{
	if (!st)
		return;
	for (int i = 0; i < Q_COUNT; i++)
		sqlite3_finalize(st->q[i]);
	sqlite3_close(st->db);
	pthread_mutex_destroy(&st->lock);
	g_free(st->dir);
	g_free(st);
}

void store_folder_clear(struct store_folder *f)
{
	if (!f)
		return;
	g_free(f->path);
	g_free(f->wire_name);
	memset(f, 0, sizeof *f);
}

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

/* ---- folders ---- */

/* Fills f from a STORE_FOLDER_COLUMNS row; strings copied or borrowed. */
static void store_folder_from_row(sqlite3_stmt *q, struct store_folder *f, int copy)
{
	char *(*text)(sqlite3_stmt *, int) = copy ? store_column_dup : store_column_borrow;

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
	pthread_mutex_lock(&st->lock);
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

	q = store_query(st, Q_FOLDER_ALL);
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		const char *path = (const char *)sqlite3_column_text(q, 1);
		if (!path || !g_hash_table_contains(wanted, path)) {
			int64_t id = sqlite3_column_int64(q, 0);
			g_array_append_val(gone, id);
		}
	}
	sqlite3_reset(q);
	if (src != SQLITE_DONE) {
		rc = store_db_status(src);
		goto out;
	}
	for (guint i = 0; i < gone->len; i++) {
		int64_t id = g_array_index(gone, int64_t, i);
		rc = store_collect_folder_bodies(st, id, doomed);
		if (rc != MF_OK)
			goto out;
		/* Messages and body rows go by ON DELETE CASCADE. */
		q = store_query(st, Q_FOLDER_DELETE);
		sqlite3_bind_int64(q, 1, id);
		rc = store_run(q);
		if (rc != MF_OK)
			goto out;
	}
	rc = store_commit(st);
	if (rc != MF_OK)
		goto out;
	store_unlink_all(doomed);
	for (guint i = 0; i < gone->len; i++) {
		char *d = store_body_dir(st, g_array_index(gone, int64_t, i));
		store_empty_dir(d, 1);
		g_free(d);
	}
out:
	if (rc != MF_OK)
		store_rollback(st);
	pthread_mutex_unlock(&st->lock);
	g_hash_table_destroy(wanted);
	g_array_free(gone, TRUE);
	g_ptr_array_free(doomed, TRUE);
	return rc;
}

/* Runs a single-row folder query whose parameter 1 is already bound. */
static enum mf_status store_folder_fetch(sqlite3_stmt *q, struct store_folder *out)
{
	int rc = sqlite3_step(q);
	enum mf_status ret;

	if (rc == SQLITE_ROW) {
		store_folder_from_row(q, out, 1);
		ret = MF_OK;
	} else {
		ret = rc == SQLITE_DONE ? MF_ERR_NOTFOUND : store_db_status(rc);
	}
	sqlite3_reset(q);
	return ret;
}

enum mf_status store_folder_by_path(struct store *st, const char *path,
                                    struct store_folder *out)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	memset(out, 0, sizeof *out);
	if (!path)
		return MF_ERR_NOTFOUND;
	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_FOLDER_BY_PATH);
	sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
	rc = store_folder_fetch(q, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_by_id(struct store *st, int64_t id, struct store_folder *out)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_FOLDER_BY_ID);
	sqlite3_bind_int64(q, 1, id);
	rc = store_folder_fetch(q, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_children(struct store *st, const char *parent,
                                     int (*cb)(void *ctx, const struct store_folder *f),
                                     void *ctx)
{
	enum mf_status rc = MF_OK;
	sqlite3_stmt *q;
	int src;

	if (!parent)
		parent = "";
	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_FOLDER_CHILDREN);
	sqlite3_bind_text(q, 1, parent, -1, SQLITE_STATIC);
	/* The mutex stays held while cb runs: the statement is mid-step. */
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_folder f;
		store_folder_from_row(q, &f, 0);
		if (cb(ctx, &f) != 0) {
			src = SQLITE_DONE;
			break;
		}
	}
	if (src != SQLITE_DONE)
		rc = store_db_status(src);
	sqlite3_reset(q);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_count(struct store *st, size_t *n)
{
	enum mf_status rc = MF_OK;
	sqlite3_stmt *q;
	int src;

	*n = 0;
	pthread_mutex_lock(&st->lock);
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

/* ---- messages ---- */

struct store_name_row {
	uint32_t uid;
	char *base, *user, *name, *new_name;
	int user_ok;
};

static void store_name_row_free(struct store_name_row *r)
{
	g_free(r->base);
	g_free(r->user);
	g_free(r->name);
	g_free(r->new_name);
}

/* Recomputes every file name of the folder (DESIGN.md "File names"):
 * in UID order, a user-given name is kept; otherwise base.eml, base~2.eml,
 * ... skipping names held by a lower UID or by any user-given name. So
 * when the holder of base.eml goes, the next UID with that base takes
 * base.eml over. Only rows whose name changes are written; changed rows
 * are first set to NULL (NULLs never conflict in the UNIQUE name index)
 * so that names moving between rows never collide mid-way. Runs inside
 * the caller's transaction. */
static enum mf_status store_assign_names(struct store *st, int64_t folder_id)
{
	GArray *rows = g_array_new(FALSE, TRUE, sizeof(struct store_name_row));
	GHashTable *taken = g_hash_table_new(g_str_hash, g_str_equal);
	GHashTable *next_suffix = g_hash_table_new(g_str_hash, g_str_equal);
	enum mf_status rc = MF_OK;
	sqlite3_stmt *q;
	int src;

	q = store_query(st, Q_MSG_NAMES);
	sqlite3_bind_int64(q, 1, folder_id);
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_name_row r = { 0 };
		r.uid = (uint32_t)sqlite3_column_int64(q, 0);
		r.base = store_column_dup(q, 1);
		r.user = store_column_dup(q, 2);
		r.name = store_column_dup(q, 3);
		if (!r.base || !*r.base) {
			g_free(r.base);
			r.base = g_strdup_printf("%" PRIu32, r.uid);
		}
		g_array_append_val(rows, r);
	}
	sqlite3_reset(q);
	if (src != SQLITE_DONE) {
		rc = store_db_status(src);
		goto out;
	}

	/* User-given names are unique by construction; should two ever clash,
	 * the lower UID keeps it and the other falls back to a derived name. */
	for (guint i = 0; i < rows->len; i++) {
		struct store_name_row *r = &g_array_index(rows, struct store_name_row, i);
		if (r->user && *r->user && !g_hash_table_contains(taken, r->user)) {
			g_hash_table_add(taken, r->user);
			r->user_ok = 1;
		}
	}
	for (guint i = 0; i < rows->len; i++) {
		struct store_name_row *r = &g_array_index(rows, struct store_name_row, i);
		if (r->user_ok) {
			r->new_name = g_strdup(r->user);
			continue;
		}
		/* Suffixes below next were taken when tried and stay taken, so
		 * resuming there keeps many equal bases linear. */
		guint n = GPOINTER_TO_UINT(g_hash_table_lookup(next_suffix, r->base));
		if (n == 0)
			n = 1;
		for (;; n++) {
			char *cand = n == 1 ? g_strconcat(r->base, ".eml", NULL)
			                    : g_strdup_printf("%s~%u.eml", r->base, n);
			if (!g_hash_table_contains(taken, cand)) {
				r->new_name = cand;
				break;
			}
			g_free(cand);
		}
		g_hash_table_add(taken, r->new_name);
		g_hash_table_insert(next_suffix, r->base, GUINT_TO_POINTER(n + 1));
	}

	for (int pass = 0; pass < 2; pass++) {
		for (guint i = 0; i < rows->len; i++) {
			struct store_name_row *r = &g_array_index(rows, struct store_name_row, i);
			if (r->name && strcmp(r->name, r->new_name) == 0)
				continue;
			if (pass == 0 && !r->name)
				continue;
			q = store_query(st, Q_MSG_SET_NAME);
			sqlite3_bind_int64(q, 1, folder_id);
			sqlite3_bind_int64(q, 2, r->uid);
			if (pass == 0)
				sqlite3_bind_null(q, 3);
			else
				sqlite3_bind_text(q, 3, r->new_name, -1, SQLITE_STATIC);
			rc = store_run(q);
			if (rc != MF_OK)
				goto out;
		}
	}
out:
	g_hash_table_destroy(taken);
	g_hash_table_destroy(next_suffix);
	for (guint i = 0; i < rows->len; i++)
		store_name_row_free(&g_array_index(rows, struct store_name_row, i));
	g_array_free(rows, TRUE);
	return rc;
}

/* Deletes one message row (its body row goes by cascade) and queues its
 * body file. */
static enum mf_status store_delete_message(struct store *st, int64_t folder_id, uint32_t uid,
                                           GPtrArray *doomed)
{
	enum mf_status rc = MF_OK;
	sqlite3_stmt *q;

	if (store_has_body(st, folder_id, uid, &rc)) {
		g_ptr_array_add(doomed, store_body_path(st, folder_id, uid));
		st->body_total = -1;
	}
	if (rc != MF_OK)
		return rc;
	q = store_query(st, Q_MSG_DELETE);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	return store_run(q);
}

static void store_bind_text_or_null(sqlite3_stmt *q, int col, const char *s)
{
	if (s)
		sqlite3_bind_text(q, col, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(q, col);
}

/* File names for messages above every stored UID, in UID order: the
 * stored names cannot change (a higher UID never takes a name from a
 * lower one), so the new names follow from the stored ones. */
struct store_namer {
	int64_t folder_id;
	GHashTable *taken;        /* every name held; keys borrowed from seeds or
	                             from the names handed out (which outlive it) */
	GStringChunk *seeds;      /* the stored names */
	GHashTable *next_suffix;  /* base -> the next suffix worth trying, once
	                             base.eml is taken; owned keys */
	uint32_t max_uid;         /* the highest UID named */
};

static struct store_namer *store_namer_new(int64_t folder_id)
{
	struct store_namer *n = g_new0(struct store_namer, 1);

	n->folder_id = folder_id;
	n->taken = g_hash_table_new(g_str_hash, g_str_equal);
	n->seeds = g_string_chunk_new(4096);
	n->next_suffix = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	return n;
}

void store_namer_free(struct store_namer *n)
{
	if (!n)
		return;
	g_hash_table_destroy(n->taken);
	g_string_chunk_free(n->seeds);
	g_hash_table_destroy(n->next_suffix);
	g_free(n);
}

/* Reads the stored names (lock held). */
static enum mf_status store_namer_seed(struct store *st, struct store_namer *n)
{
	sqlite3_stmt *q = store_query(st, Q_MSG_NAMES);
	int src;

	sqlite3_bind_int64(q, 1, n->folder_id);
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(q, 0);
		if (uid > n->max_uid)
			n->max_uid = uid;
		for (int col = 2; col <= 3; col++)
			if (sqlite3_column_type(q, col) == SQLITE_TEXT)
				g_hash_table_add(n->taken, g_string_chunk_insert(n->seeds,
				                 (const char *)sqlite3_column_text(q, col)));
	}
	sqlite3_reset(q);
	if (src != SQLITE_DONE)
		return store_db_status(src);
	return MF_OK;
}

/* Whether added[0..count) are ascending and above every UID named. */
static int store_namer_fits(const struct store_namer *n, const struct store_sync_message *added,
                            size_t count)
{
	for (size_t i = 0; i < count; i++)
		if (added[i].uid == 0 || added[i].uid <= (i ? added[i - 1].uid : n->max_uid))
			return 0;
	return 1;
}

/* The name of the next message (uid above every one named): base.eml
 * when free, else the first free base~K.eml from K = 2 on. The namer
 * borrows it. */
static char *store_namer_one(struct store_namer *n, uint32_t uid, const char *base)
{
	char num[16];
	size_t len;
	char *cand;

	if (!base || !*base) {
		snprintf(num, sizeof num, "%" PRIu32, uid);
		base = num;
	}
	len = strlen(base);
	cand = g_malloc(len + sizeof ".eml");
	memcpy(cand, base, len);
	memcpy(cand + len, ".eml", sizeof ".eml");
	if (g_hash_table_contains(n->taken, cand)) {
		guint k = GPOINTER_TO_UINT(g_hash_table_lookup(n->next_suffix, base));
		for (k = k ? k : 2;; k++) {
			g_free(cand);
			cand = g_strdup_printf("%s~%u.eml", base, k);
			if (!g_hash_table_contains(n->taken, cand))
				break;
		}
		g_hash_table_replace(n->next_suffix, g_strdup(base), GUINT_TO_POINTER(k + 1));
	}
	g_hash_table_add(n->taken, cand);
	n->max_uid = uid;
	return cand;
}

/* Names for added[0..count) (store_namer_fits holds), g_strfreev; they
 * must outlive the namer. */
static char **store_namer_assign(struct store_namer *n, const struct store_sync_message *added,
                                 size_t count)
{
	char **names = g_new0(char *, count + 1);

	for (size_t i = 0; i < count; i++)
		names[i] = store_namer_one(n, added[i].uid, added[i].base_name);
	return names;
}

/* Names for a sync that only adds messages above every stored UID, or
 * NULL when that does not hold and store_assign_names() must run. */
static char **store_names_for_appended(struct store *st, const struct store_sync *s)
{
	struct store_namer *n;
	char **names = NULL;

	if (s->reset || s->n_removed || !s->n_added)
		return NULL;
	n = store_namer_new(s->folder_id);
	if (store_namer_seed(st, n) == MF_OK && store_namer_fits(n, s->added, s->n_added))
		names = store_namer_assign(n, s->added, s->n_added);
	store_namer_free(n);
	return names;
}

/* Inserts added[0..count) named by names (or unnamed), lock held. */
static enum mf_status store_insert_messages(struct store *st, int64_t folder_id,
                                            const struct store_sync_message *added, size_t count,
                                            char **names)
{
	enum mf_status rc = MF_OK;

	for (size_t i = 0; i < count && rc == MF_OK; i++) {
		const struct store_sync_message *a = &added[i];
		uint32_t uid = a->uid;
		sqlite3_stmt *q;
		if (uid == 0)
			return MF_ERR_INVAL;
		q = store_query(st, Q_MSG_UPSERT);
		sqlite3_bind_int64(q, 1, folder_id);
		sqlite3_bind_int64(q, 2, uid);
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

struct store_namer *store_namer_new_empty(void)
{
	return store_namer_new(0);
}

char *store_namer_next(struct store_namer *n, uint32_t uid, const char *base_name)
{
	if (uid == 0 || uid <= n->max_uid)
		return NULL;
	return store_namer_one(n, uid, base_name);
}

enum mf_status store_folder_apply_sync(struct store *st, const struct store_sync *s)
{
	char **names = NULL;
	GPtrArray *doomed = g_ptr_array_new_with_free_func(g_free);
	enum mf_status rc;
	sqlite3_stmt *q;

	pthread_mutex_lock(&st->lock);
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
		q = store_query(st, Q_MSG_DELETE_FOLDER);
		sqlite3_bind_int64(q, 1, s->folder_id);
		rc = store_run(q);
		if (rc != MF_OK)
			goto out;
	}

	names = store_names_for_appended(st, s);
	rc = store_insert_messages(st, s->folder_id, s->added, s->n_added, names);
	if (rc != MF_OK)
		goto out;

	for (size_t i = 0; i < s->n_flag_updates; i++) {
		q = store_query(st, Q_MSG_SET_FLAGS);
		sqlite3_bind_int64(q, 1, s->folder_id);
		sqlite3_bind_int64(q, 2, s->flag_updates[i].uid);
		sqlite3_bind_text(q, 3, s->flag_updates[i].flags ? s->flag_updates[i].flags : "",
		                  -1, SQLITE_STATIC);
		rc = store_run(q);
		if (rc != MF_OK)
			goto out;
	}

	for (size_t i = 0; i < s->n_removed; i++) {
		rc = store_delete_message(st, s->folder_id, s->removed[i], doomed);
		if (rc != MF_OK)
			goto out;
	}

	q = store_query(st, Q_FOLDER_SET_SYNC);
	sqlite3_bind_int64(q, 1, s->folder_id);
	sqlite3_bind_int64(q, 2, s->uidvalidity);
	sqlite3_bind_int64(q, 3, s->uidnext);
	sqlite3_bind_int64(q, 4, (sqlite3_int64)s->highestmodseq);
	sqlite3_bind_int64(q, 5, s->now);
	rc = store_run(q);
	if (rc != MF_OK)
		goto out;

	/* Flag changes alone never change a name, nor the count. */
	if (s->reset || s->n_added || s->n_removed) {
		q = store_query(st, Q_FOLDER_RECOUNT);
		sqlite3_bind_int64(q, 1, s->folder_id);
		rc = store_run(q);
		if (rc == MF_OK && !names)
			rc = store_assign_names(st, s->folder_id);
		if (rc != MF_OK)
			goto out;
	}
	rc = store_commit(st);
	if (rc != MF_OK)
		goto out;
	store_unlink_all(doomed);
out:
	if (rc != MF_OK)
		store_rollback(st);
	pthread_mutex_unlock(&st->lock);
	g_ptr_array_free(doomed, TRUE);
	g_strfreev(names);
	return rc;
}

enum mf_status store_folder_touch(struct store *st, int64_t folder_id, int64_t now)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_FOLDER_TOUCH);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, now);
	rc = store_run(q);
	if (rc == MF_OK && sqlite3_changes(st->db) == 0)
		rc = MF_ERR_NOTFOUND;
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_folder_uids(struct store *st, int64_t folder_id,
                                 uint32_t **uids, size_t *count)
{
	GArray *a = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	enum mf_status rc;
	sqlite3_stmt *q;
	int src;

	*uids = NULL;
	*count = 0;
	pthread_mutex_lock(&st->lock);
	rc = store_folder_exists(st, folder_id);
	if (rc != MF_OK)
		goto out;
	q = store_query(st, Q_MSG_UIDS);
	sqlite3_bind_int64(q, 1, folder_id);
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(q, 0);
		g_array_append_val(a, uid);
	}
	sqlite3_reset(q);
	if (src != SQLITE_DONE)
		rc = store_db_status(src);
out:
	pthread_mutex_unlock(&st->lock);
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
	enum mf_status rc;
	sqlite3_stmt *q;
	int src;

	pthread_mutex_lock(&st->lock);
	rc = store_folder_exists(st, folder_id);
	if (rc != MF_OK)
		goto out;
	q = store_query(st, Q_MSG_REMOTE_IDS);
	sqlite3_bind_int64(q, 1, folder_id);
	/* The mutex stays held while cb runs: the statement is mid-step. */
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		if (cb(ctx, (uint32_t)sqlite3_column_int64(q, 0),
		       (const char *)sqlite3_column_text(q, 1)) != 0) {
			src = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(q);
	if (src != SQLITE_DONE)
		rc = store_db_status(src);
out:
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* Fills m from a STORE_MESSAGE_COLUMNS row; strings copied or borrowed. */
static void store_message_from_row(sqlite3_stmt *q, struct store_message *m, int copy)
{
	char *(*text)(sqlite3_stmt *, int) = copy ? store_column_dup : store_column_borrow;

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

static enum mf_status store_message_fetch(sqlite3_stmt *q, struct store_message *out)
{
	int rc = sqlite3_step(q);
	enum mf_status ret;

	if (rc == SQLITE_ROW) {
		store_message_from_row(q, out, 1);
		ret = MF_OK;
	} else {
		ret = rc == SQLITE_DONE ? MF_ERR_NOTFOUND : store_db_status(rc);
	}
	sqlite3_reset(q);
	return ret;
}

enum mf_status store_message_by_name(struct store *st, int64_t folder_id,
                                     const char *name, struct store_message *out)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	memset(out, 0, sizeof *out);
	if (!name)
		return MF_ERR_NOTFOUND;
	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_MSG_BY_NAME);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
	rc = store_message_fetch(q, out);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_message_by_uid(struct store *st, int64_t folder_id,
                                    uint32_t uid, struct store_message *out)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_MSG_BY_UID);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	rc = store_message_fetch(q, out);
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
		if (cb(ctx, &m) != 0) {
			src = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(q);
	return src == SQLITE_DONE ? MF_OK : store_db_status(src);
}

enum mf_status store_messages_list(struct store *st, int64_t folder_id,
                                   int (*cb)(void *ctx, const struct store_message *m),
                                   void *ctx)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	pthread_mutex_lock(&st->lock);
	rc = store_folder_exists(st, folder_id);
	if (rc == MF_OK) {
		q = store_query(st, Q_MSG_LIST);
		sqlite3_bind_int64(q, 1, folder_id);
		rc = store_each_message(q, cb, ctx);
	}
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* ---- bodies ---- */

/* 1 when the file holds as many bytes as were recorded at commit. */
static int store_body_size_ok(struct store *st, int64_t folder_id, uint32_t uid, int fd)
{
	sqlite3_stmt *q = store_query(st, Q_BODY_SIZE);
	struct stat sb;
	int ok = 0;

	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	if (sqlite3_step(q) == SQLITE_ROW && fstat(fd, &sb) == 0)
		ok = sb.st_size == sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	return ok;
}

int store_body_open(struct store *st, int64_t folder_id, uint32_t uid)
{
	enum mf_status rc = MF_OK;
	char *path = store_body_path(st, folder_id, uid);
	sqlite3_stmt *q;
	int fd = -1;

	pthread_mutex_lock(&st->lock);
	if (!store_has_body(st, folder_id, uid, &rc))
		goto out;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && !store_body_size_ok(st, folder_id, uid, fd)) {
		/* Bodies are written without fsync (they are a cache): after a
		 * crash a file may be short. Never serve it: fetch it again. */
		close(fd);
		fd = -1;
		unlink(path);
	}
	if (fd < 0) {
		/* The row outlived its file (removed by hand, or a crash between
		 * unlink and commit): forget it so the body is fetched again. */
		st->body_total = -1;
		q = store_query(st, Q_BODY_DELETE);
		sqlite3_bind_int64(q, 1, folder_id);
		sqlite3_bind_int64(q, 2, uid);
		store_run(q);
		goto out;
	}
	/* A failed LRU bump only makes eviction slightly less exact. */
	q = store_query(st, Q_BODY_TOUCH);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	store_run(q);
out:
	pthread_mutex_unlock(&st->lock);
	g_free(path);
	return fd;
}

int store_body_begin(struct store *st, char **tmp_path)
{
	char *path = g_strdup_printf("%s/tmp/body.XXXXXX", st->dir);
	int fd;

	/* mkostemp creates the file mode 0600 whatever the umask. */
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		g_free(path);
		path = NULL;
	}
	*tmp_path = path;
	return fd;
}

/* Picks least recently used bodies (never the one just committed) until
 * the total fits under the cap, deletes their rows and queues their
 * files. Runs inside the caller's transaction. */
static enum mf_status store_evict(struct store *st, int64_t keep_folder, uint32_t keep_uid,
                                  GPtrArray *doomed)
{
	GArray *victims = g_array_new(FALSE, FALSE, sizeof(int64_t) * 2);
	enum mf_status rc = MF_OK;
	uint64_t total = 0;
	sqlite3_stmt *q;
	int src;

	if (st->body_total < 0) {
		q = store_query(st, Q_BODY_USAGE);
		src = sqlite3_step(q);
		if (src == SQLITE_ROW)
			st->body_total = sqlite3_column_int64(q, 0);
		sqlite3_reset(q);
		if (src != SQLITE_ROW) {
			rc = store_db_status(src);
			goto out;
		}
	}
	total = (uint64_t)st->body_total;
	if (total <= st->body_cap)
		goto out;

	q = store_query(st, Q_BODY_LRU);
	sqlite3_bind_int64(q, 1, keep_folder);
	sqlite3_bind_int64(q, 2, keep_uid);
	while (total > st->body_cap && (src = sqlite3_step(q)) == SQLITE_ROW) {
		int64_t v[2] = { sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1) };
		uint64_t size = (uint64_t)sqlite3_column_int64(q, 2);
		g_array_append_val(victims, v);
		total = size < total ? total - size : 0;
	}
	sqlite3_reset(q);
	if (src != SQLITE_ROW && src != SQLITE_DONE) {
		rc = store_db_status(src);
		goto out;
	}
	/* Deleted after the scan: never change a table while stepping over it. */
	for (guint i = 0; i < victims->len; i++) {
		int64_t *v = &g_array_index(victims, int64_t, i * 2);
		q = store_query(st, Q_BODY_DELETE);
		sqlite3_bind_int64(q, 1, v[0]);
		sqlite3_bind_int64(q, 2, v[1]);
		rc = store_run(q);
		if (rc != MF_OK)
			goto out;
		g_ptr_array_add(doomed, store_body_path(st, v[0], (uint32_t)v[1]));
	}
	st->body_total = (int64_t)total;
out:
	g_array_free(victims, TRUE);
	return rc;
}

enum mf_status store_body_commit(struct store *st, int64_t folder_id,
                                 uint32_t uid, const char *tmp_path,
                                 int *size_changed)
{
	GPtrArray *doomed = g_ptr_array_new_with_free_func(g_free);
	char *dir = store_body_dir(st, folder_id);
	char *path = store_body_path(st, folder_id, uid);
	enum mf_status rc;
	int renamed = 0, fd = -1, src;
	uint64_t old_size = 0;
	struct stat sb;
	sqlite3_stmt *q;

	if (size_changed)
		*size_changed = 0;
	pthread_mutex_lock(&st->lock);
	/* No fsync: a body is a cache entry, checked by size when opened. */
	fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		rc = MF_ERR_IO;
		goto out;
	}
	rc = store_begin(st);
	if (rc != MF_OK)
		goto out;

	q = store_query(st, Q_MSG_SIZE);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW)
		old_size = (uint64_t)sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	if (src != SQLITE_ROW) {
		rc = src == SQLITE_DONE ? MF_ERR_NOTFOUND : store_db_status(src);
		goto out;
	}

	if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || rename(tmp_path, path) != 0) {
		rc = MF_ERR_IO;
		goto out;
	}
	renamed = 1;

	if (store_has_body(st, folder_id, uid, &rc))
		st->body_total = -1;  /* replaced: sum again */
	else if (st->body_total >= 0)
		st->body_total += sb.st_size;
	if (rc != MF_OK)
		goto out;
	q = store_query(st, Q_BODY_UPSERT);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	sqlite3_bind_int64(q, 3, (sqlite3_int64)sb.st_size);
	rc = store_run(q);
	if (rc != MF_OK)
		goto out;
	q = store_query(st, Q_MSG_SET_SIZE);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	sqlite3_bind_int64(q, 3, (sqlite3_int64)sb.st_size);
	rc = store_run(q);
	if (rc != MF_OK)
		goto out;
	rc = store_evict(st, folder_id, uid, doomed);
	if (rc != MF_OK)
		goto out;
	rc = store_commit(st);
	if (rc != MF_OK)
		goto out;
	store_unlink_all(doomed);
	if (size_changed)
		*size_changed = (uint64_t)sb.st_size != old_size;
out:
	if (rc != MF_OK) {
		store_rollback(st);
		/* Whichever name the file has now, it must not stay behind. */
		unlink(renamed ? path : tmp_path);
	}
	pthread_mutex_unlock(&st->lock);
	if (fd >= 0)
		close(fd);
	g_ptr_array_free(doomed, TRUE);
	g_free(dir);
	g_free(path);
	return rc;
}

void store_body_abort(struct store *st, const char *tmp_path)
{
	(void)st;
	if (tmp_path)
		unlink(tmp_path);
}

enum mf_status store_body_usage(struct store *st, uint64_t *bytes, uint64_t *count)
{
	enum mf_status rc = MF_OK;
	sqlite3_stmt *q;
	int src;

	*bytes = 0;
	*count = 0;
	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_BODY_USAGE);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW) {
		*bytes = (uint64_t)sqlite3_column_int64(q, 0);
		*count = (uint64_t)sqlite3_column_int64(q, 1);
	} else {
		rc = store_db_status(src);
	}
	sqlite3_reset(q);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* ---- single-message changes after a server operation succeeded ---- */

/* Would another message of the folder take over the name uid holds now
 * once uid lets go of it? Only one whose base the name was made from
 * ("b.eml", "b~3.eml" from base "b"). If not, names need no recount. */
static int store_name_wanted(struct store *st, int64_t folder_id, uint32_t uid)
{
	sqlite3_stmt *q = store_query(st, Q_MSG_NAME_OF);
	char *stem = NULL, *bare = NULL;
	int wanted = 1, src;

	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_TEXT) {
		const char *name = (const char *)sqlite3_column_text(q, 0);
		if (g_str_has_suffix(name, ".eml"))
			stem = g_strndup(name, strlen(name) - 4);
	}
	sqlite3_reset(q);
	if (src != SQLITE_ROW)
		return src == SQLITE_DONE ? 0 : 1;
	if (!stem)
		return 1;
	bare = g_strdup(stem);
	{
		char *tilde = strrchr(bare, '~');
		if (tilde && tilde[1] && strspn(tilde + 1, "0123456789") == strlen(tilde + 1))
			*tilde = '\0';
	}
	q = store_query(st, Q_MSG_NAME_WANTED);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	sqlite3_bind_text(q, 3, stem, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, bare, -1, SQLITE_STATIC);
	src = sqlite3_step(q);
	wanted = src != SQLITE_DONE;
	sqlite3_reset(q);
	g_free(stem);
	g_free(bare);
	return wanted;
}

enum mf_status store_folder_max_uid(struct store *st, int64_t folder_id, uint32_t *max)
{
	sqlite3_stmt *q;
	int src;

	*max = 0;
	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_MSG_MAX_UID_OF);
	sqlite3_bind_int64(q, 1, folder_id);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW)
		*max = (uint32_t)sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	pthread_mutex_unlock(&st->lock);
	return src == SQLITE_ROW ? MF_OK : store_db_status(src);
}

enum mf_status store_message_set_user_name(struct store *st, int64_t folder_id, uint32_t uid,
                                           const char *name)
{
	enum mf_status rc;
	sqlite3_stmt *q;
	int src, recount;

	pthread_mutex_lock(&st->lock);
	rc = store_begin(st);
	if (rc != MF_OK)
		goto out;
	/* A name held by another message, given or derived, is refused:
	 * the caller removes that message first. */
	q = store_query(st, Q_MSG_NAME_HOLDER);
	sqlite3_bind_int64(q, 1, folder_id);
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
	q = store_query(st, Q_MSG_SET_USER_NAME);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	store_bind_text_or_null(q, 3, name);
	rc = store_run(q);
	if (rc == MF_OK && sqlite3_changes(st->db) == 0)
		rc = MF_ERR_NOTFOUND;
	if (rc == MF_OK && recount) {
		rc = store_assign_names(st, folder_id);
	} else if (rc == MF_OK) {
		/* Nobody wants the old name, nobody holds the new one. */
		q = store_query(st, Q_MSG_SET_NAME);
		sqlite3_bind_int64(q, 1, folder_id);
		sqlite3_bind_int64(q, 2, uid);
		sqlite3_bind_text(q, 3, name, -1, SQLITE_STATIC);
		rc = store_run(q);
	}
	if (rc == MF_OK)
		rc = store_commit(st);
out:
	if (rc != MF_OK)
		store_rollback(st);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

enum mf_status store_message_set_flags(struct store *st, int64_t folder_id, uint32_t uid,
                                       const char *flags)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	pthread_mutex_lock(&st->lock);
	q = store_query(st, Q_MSG_SET_FLAGS);
	sqlite3_bind_int64(q, 1, folder_id);
	sqlite3_bind_int64(q, 2, uid);
	sqlite3_bind_text(q, 3, flags ? flags : "", -1, SQLITE_STATIC);
	rc = store_run(q);
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

	pthread_mutex_lock(&st->lock);
	rc = store_begin(st);
	recount = rc == MF_OK && store_name_wanted(st, folder_id, uid);
	if (rc == MF_OK)
		rc = store_delete_message(st, folder_id, uid, doomed);
	if (rc == MF_OK && sqlite3_changes(st->db) > 0) {
		sqlite3_stmt *q = store_query(st, Q_FOLDER_COUNT_DOWN);
		sqlite3_bind_int64(q, 1, folder_id);
		rc = store_run(q);
	}
	if (rc == MF_OK && recount)
		rc = store_assign_names(st, folder_id);
	if (rc == MF_OK)
		rc = store_commit(st);
	if (rc == MF_OK)
		store_unlink_all(doomed);
	else
		store_rollback(st);
	pthread_mutex_unlock(&st->lock);
	g_ptr_array_free(doomed, TRUE);
	return rc;
}

enum mf_status store_messages_uncached_after(struct store *st, int64_t folder_id,
                                             const struct store_message *after, int by_uid,
                                             uint64_t max_size, size_t limit,
                                             int (*cb)(void *ctx, const struct store_message *m),
                                             void *ctx)
{
	enum mf_status rc;
	sqlite3_stmt *q;

	pthread_mutex_lock(&st->lock);
	q = store_query(st, by_uid ? Q_MSG_UNCACHED_AFTER_UID : Q_MSG_UNCACHED_AFTER);
	sqlite3_bind_int64(q, 1, folder_id);
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

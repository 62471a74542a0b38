/* store_int.h — what the files of the store share; private to them.
 *
 * Only src/store_*.c include it: the store's API is include/store.h, and
 * nothing here is part of it. The store is one group of files:
 *   store_db.c      the schema, the query table, open/close, and the small
 *                   helpers every file uses (statements, transactions,
 *                   columns)
 *   store_folder.c  the folder table: replace, lookups, children, count,
 *                   touch, UIDs, remote ids, the highest UID
 *   store_message.c message rows: a sync applied, lookups, listings,
 *                   read-ahead candidates, one message's name, flags or
 *                   removal
 *   store_names.c   file names: the collision rule (once), the recount of
 *                   a folder's names, the namer of a first listing
 *   store_body.c    the body cache: files under bodies/, staging in tmp/,
 *                   LRU eviction, the sweep of orphan files at open
 *
 * Every file keeps the store's rules: it must not know IMAP, POP3 or
 * FUSE, must not do network I/O, must not log (callers decide what to
 * say; the one exception: store_open names a damaged cache it moved
 * aside), and must never build SQL from values: every value goes through a
 * bound parameter of a statement prepared once at open. One pthread mutex
 * serialises every public call (taken with store_lock, which counts who
 * waits for it); callbacks are called with it held (a statement is being
 * stepped), so a callback must never call back into the store (a sync's
 * stored() is called between parts, without it). The functions declared
 * here never take the mutex: they run with it held, most inside the
 * caller's transaction. */
#ifndef MAILFS_STORE_INT_H
#define MAILFS_STORE_INT_H

#include <pthread.h>
#include <stdint.h>

#include <glib.h>
#include <sqlite3.h>

#include "store.h"

/* One statement each, prepared at open; the SQL is in store_db.c. */
enum store_query {
	Q_BEGIN, Q_COMMIT, Q_ROLLBACK,
	Q_FOLDER_BY_PATH, Q_FOLDER_BY_ID, Q_FOLDER_BY_BASE, Q_FOLDER_CHILDREN, Q_FOLDER_COUNT,
	Q_FOLDER_EXISTS, Q_FOLDER_UPSERT, Q_FOLDER_UPSERT_IMPLIED, Q_FOLDER_ALL,
	Q_FOLDER_DELETE, Q_FOLDER_SET_SYNC, Q_FOLDER_TOUCH, Q_FOLDER_CHANGED,
	Q_MSG_BY_NAME, Q_MSG_KEY_BY_NAME, Q_MSG_BY_UID, Q_MSG_DELETED_BY_UID, Q_MSG_LIST, Q_MSG_UIDS, Q_MSG_REMOTE_IDS,
	Q_MSG_UPSERT, Q_MSG_SET_FLAGS,
	Q_MSG_DELETE, Q_MSG_DELETE_FOLDER, Q_MSG_NAMES, Q_MSG_SET_NAME,
	Q_MSG_SIZE, Q_MSG_SET_SIZE, Q_MSG_NAME_HOLDER, Q_MSG_SET_USER_NAME,
	Q_BODY_EXISTS, Q_BODY_OF_FOLDER, Q_BODY_UPSERT, Q_BODY_TOUCH, Q_BODY_LAST_TICK,
	Q_BODY_DELETE, Q_BODY_USAGE, Q_BODY_LRU, Q_FOLDER_RECOUNT, Q_BODY_LOC,
	Q_BODY_PACK_USED, Q_BODY_PACK_LAST, Q_FOLDER_BASE_OF,
	Q_MSG_UNCACHED_AFTER, Q_MSG_UNCACHED_AFTER_UID, Q_MSG_CACHED_AFTER, Q_MSG_CACHED_AFTER_UID,
	Q_MSG_NAME_WANTED, Q_MSG_NAME_OF, Q_FOLDER_COUNT_DOWN,
	Q_MSG_MAX_UID_OF, Q_FOLDER_UNDER, Q_FOLDER_RENAME,
	Q_META_NEXT_BASE, Q_FOLDER_SET_BASE, Q_FOLDER_NO_BASE, Q_FOLDER_PATH,
	Q_COUNT
};

struct store {
	pthread_mutex_t lock;
	/* Threads blocked on lock: a first listing stored in parts lets
	 * them in between its parts (store_lock, store_let_in). */
	int waiting;
	GMutex let_in_lock;
	GCond let_in;
	int letting_in;       /* writers in store_let_in */
	sqlite3 *db;
	char *dir;
	uint64_t body_cap;
	int64_t body_total;   /* bytes of cached bodies, -1 when it must be summed again */
	sqlite3_stmt *q[Q_COUNT];
	int lock_fd;          /* DIR/lock, flock'ed: one mount per cache */
	/* Who hears of changed names and sizes (store_set_observer), and
	 * what the transaction in progress changed: paths, told at commit. */
	void (*observer)(void *ctx, const char *path);
	void *observer_ctx;
	GPtrArray *changes;
	int64_t noted_folder; /* the last folder noted, and its path */
	char *noted_path;
	/* Bodies opened since the LRU was last written: (folder_id << 32 |
	 * uid) -> the order of their last open. A write per open cost more
	 * than the rest of an open; store_body_touch_flush writes them, in
	 * that order, before anything reads or extends the LRU. */
	GHashTable *touched;
	uint64_t touch_seq;
	gint64 touch_since;
	/* Uses told by store_body_used, not yet in touched: an open that
	 * finds its body in the kernel's page cache must not wait for the
	 * store's lock, which a commit holds for milliseconds (a cold tar
	 * of 50,000 messages through a read-write mount took 5.0-5.6 s with
	 * that wait, 4.2-4.5 s without it). Under used_lock alone. */
	GMutex used_lock;
	GArray *used;         /* folder_id << 32 | uid, oldest first */
	/* Every folder's path, so that a path that is no folder (each open
	 * of a message asks) costs no query; rebuilt after any statement
	 * that may add, remove or rename a folder (store_query). */
	GHashTable *folder_paths;
	int folder_paths_stale;
	/* Which statements write (or undo writes), and how many ran:
	 * store_generation. */
	uint8_t q_writes[Q_COUNT];
	uint64_t gen;
	/* The folders last looked up by path, valid while gen is theirs:
	 * each open of a message looks up its folder. */
	struct store_folder folder_memo[4];
	uint64_t folder_memo_gen[4];
	unsigned folder_memo_next;
	/* Pack files (store_body.c): the last number handed out (-1: not
	 * read yet), and the packs writers still add to, which stay even
	 * when no body row names them yet. */
	int64_t pack_seq;
	GHashTable *live_packs;
	void (*grew)(void *ctx, uint64_t ino_base, uint32_t uid);  /* store_set_growth_observer */
	void *grew_ctx;
};

/* The entry folder_id/name (name NULL: the folder itself) changed, went
 * or will go: its observer hears of it when the transaction commits. */
void store_note_change(struct store *st, int64_t folder_id, const char *name);
/* The same for a message by uid, and for every message of a folder. */
void store_note_message(struct store *st, int64_t folder_id, uint32_t uid);
void store_note_folder_messages(struct store *st, int64_t folder_id);

void store_lock_note_pid(int fd);
/* Writes the pending LRU bumps (lock held; inside the caller's
 * transaction, or in one of its own). */
enum mf_status store_body_touch_flush(struct store *st);
/* Row i of a sync's new messages, whichever way they were given. */
static inline const struct store_sync_message *store_sync_added(const struct store_sync *s,
                                                                size_t i)
{
	return s->added_refs ? s->added_refs[i] : &s->added[i];
}
/* A new inode base for the folder, from the counter (lock held). */
enum mf_status store_folder_new_base(struct store *st, int64_t folder_id);
/* The folder's contents changed (changed: 1), or it was listed: its
 * changed_at moves to now (a first listing's only when unset), noted. */
enum mf_status store_folder_changed(struct store *st, int64_t folder_id, int changed);


/* ---- store_db.c: statements, transactions, columns ---- */

/* Takes the store's mutex, counted in st->waiting while it waits. */
void store_lock(struct store *st);
/* Unlocked, between two parts of a long write: waits (briefly) until
 * the threads that were waiting for the lock have had it. */
void store_let_in(struct store *st);

enum mf_status store_db_status(int rc);

/* A cached statement, reset and unbound, ready for new parameters. */
static inline sqlite3_stmt *store_query(struct store *st, enum store_query id)
{
	sqlite3_stmt *q = st->q[id];

	/* A rollback may bring back folders a lookup saw deleted. */
	if (id == Q_FOLDER_UPSERT || id == Q_FOLDER_UPSERT_IMPLIED || id == Q_FOLDER_DELETE ||
	    id == Q_FOLDER_RENAME || id == Q_ROLLBACK)
		st->folder_paths_stale = 1;
	if (st->q_writes[id])
		st->gen++;
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return q;
}

sqlite3_stmt *store_query_folder(struct store *st, enum store_query id, int64_t folder_id);
sqlite3_stmt *store_query_message(struct store *st, enum store_query id, int64_t folder_id,
                                  uint32_t uid);
enum mf_status store_run(sqlite3_stmt *q);
enum mf_status store_found(int rc);
enum mf_status store_fetch(sqlite3_stmt *q, void (*fill)(sqlite3_stmt *q, void *out, int copy),
                           void *out);
enum mf_status store_rows_done(sqlite3_stmt *q, int rc);
enum mf_status store_begin(struct store *st);
enum mf_status store_commit(struct store *st);
void store_rollback(struct store *st);
enum mf_status store_end(struct store *st, enum mf_status rc, GPtrArray *doomed);
char *store_column_dup(sqlite3_stmt *q, int col);
char *store_column_borrow(sqlite3_stmt *q, int col);
void store_bind_text_or_null(sqlite3_stmt *q, int col, const char *s);

/* ---- store_folder.c ---- */

enum mf_status store_folder_exists(struct store *st, int64_t folder_id);

/* ---- store_names.c ---- */

enum mf_status store_assign_names(struct store *st, int64_t folder_id);
char **store_names_for_appended(struct store *st, const struct store_sync *s);
int store_name_wanted(struct store *st, int64_t folder_id, uint32_t uid);

/* ---- store_body.c ---- */

char *store_body_path(const struct store *st, int64_t folder_id, uint32_t uid);
char *store_body_dir(const struct store *st, int64_t folder_id);
void store_empty_dir(const char *dir, int rmdir_too);
/* What a transaction's commit frees (store_end): a doomed body is a
 * file to unlink, or a range of a pack to punch out (and the pack
 * unlinked with its last body). Free with g_free. */
struct store_doom {
	int64_t folder_id, pack;   /* pack 0: path is the body's own file */
	uint64_t off, len;
	char path[];
};
void store_doom_body(struct store *st, int64_t folder_id, uint32_t uid, uint64_t size,
                     int64_t pack, uint64_t off, GPtrArray *doomed);
int store_doom_body_of(struct store *st, int64_t folder_id, uint32_t uid, GPtrArray *doomed,
                       enum mf_status *err);
void store_doom_run(struct store *st, GPtrArray *doomed);
enum mf_status store_collect_folder_bodies(struct store *st, int64_t folder_id,
                                           GPtrArray *doomed);
void store_sweep_orphan_bodies(struct store *st);

#endif

/* store_body.c — the store's body cache: one file per cached body under
 * bodies/<folder_id>/<uid>, downloads staged in tmp/ and moved in by
 * commit, least recently used bodies evicted beyond the byte cap, and
 * files without a row swept at open.
 *
 * A body is a cache entry: written without fsync, checked by size when
 * opened. Like the rest of the store it must not know IMAP, POP3 or FUSE,
 * must not do network I/O and must not log. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <sqlite3.h>

#include "store_int.h"

char *store_body_path(const struct store *st, int64_t folder_id, uint32_t uid)
{
	return g_strdup_printf("%s/bodies/%" PRId64 "/%" PRIu32, st->dir, folder_id, uid);
}

char *store_body_dir(const struct store *st, int64_t folder_id)
{
	return g_strdup_printf("%s/bodies/%" PRId64, st->dir, folder_id);
}

/* Removes every file in dir, then dir itself when rmdir_too. Errors are
 * ignored: what remains is swept at the next open. */
void store_empty_dir(const char *dir, int rmdir_too)
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

void store_unlink_all(GPtrArray *paths)
{
	for (guint i = 0; paths && i < paths->len; i++)
		unlink(g_ptr_array_index(paths, i));
}

/* Adds the paths of the folder's cached bodies to doomed (unlinked after
 * the transaction commits, so a rollback never leaves rows without files
 * because of us). */
enum mf_status store_collect_folder_bodies(struct store *st, int64_t folder_id,
                                           GPtrArray *doomed)
{
	sqlite3_stmt *q = store_query_folder(st, Q_BODY_OF_FOLDER, folder_id);
	int rc;

	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		g_ptr_array_add(doomed, store_body_path(st, folder_id,
		                                        (uint32_t)sqlite3_column_int64(q, 0)));
	return store_rows_done(q, rc);
}

int store_has_body(struct store *st, int64_t folder_id, uint32_t uid, enum mf_status *err)
{
	sqlite3_stmt *q = store_query_message(st, Q_BODY_EXISTS, folder_id, uid);
	int rc = sqlite3_step(q);

	sqlite3_reset(q);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		*err = store_db_status(rc);
	return rc == SQLITE_ROW;
}

/* Removes body files that have no row (a crash between rename and
 * commit, or between commit and unlink), so the byte total the LRU sees
 * is what the disk holds. */
void store_sweep_orphan_bodies(struct store *st)
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

/* ---- bodies ---- */

/* The size recorded at commit of the body's file; -1: none cached. */
static int64_t store_body_size(struct store *st, int64_t folder_id, uint32_t uid)
{
	sqlite3_stmt *q = store_query_message(st, Q_BODY_SIZE, folder_id, uid);
	int64_t size = -1;

	if (sqlite3_step(q) == SQLITE_ROW)
		size = sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	return size;
}

/* One pending LRU bump per body: (folder_id << 32 | uid), and the order
 * of the open that asked for it. */
struct store_touch {
	gint64 key;                /* first: the table hashes it */
	uint64_t seq;
};

/* Up to 8,192 bumps wait (about 400 KiB): a batch writes each page of
 * the LRU index it touches once, and a read of a whole folder touches
 * most of them. With batches of 256, the writes of a warm tar of 20,000
 * messages were 14,000 pages. */
#define STORE_TOUCH_BATCH 8192
#define STORE_TOUCH_DELAY_US G_USEC_PER_SEC

static gint store_touch_order(gconstpointer a, gconstpointer b)
{
	const struct store_touch *x = *(const struct store_touch *const *)a;
	const struct store_touch *y = *(const struct store_touch *const *)b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The highest LRU tick in the table (lock held); 0 when none. */
static enum mf_status store_body_last_tick(struct store *st, int64_t *tick)
{
	sqlite3_stmt *q = store_query(st, Q_BODY_LAST_TICK);
	int rc = sqlite3_step(q);

	*tick = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
	sqlite3_reset(q);
	return rc == SQLITE_ROW ? MF_OK : store_db_status(rc);
}

static enum mf_status store_body_set_tick(struct store *st, int64_t folder_id, uint32_t uid,
                                          int64_t tick)
{
	sqlite3_stmt *q = store_query_message(st, Q_BODY_TOUCH, folder_id, uid);

	sqlite3_bind_int64(q, 3, tick);
	return store_run(q);
}

enum mf_status store_body_touch_flush(struct store *st)
{
	GPtrArray *all;
	GHashTableIter it;
	gpointer t;
	enum mf_status rc = MF_OK;
	int64_t tick = 0;
	int own;

	if (g_hash_table_size(st->touched) == 0)
		return MF_OK;
	all = g_ptr_array_sized_new(g_hash_table_size(st->touched));
	g_hash_table_iter_init(&it, st->touched);
	while (g_hash_table_iter_next(&it, &t, NULL))
		g_ptr_array_add(all, t);
	g_ptr_array_sort(all, store_touch_order);
	own = sqlite3_get_autocommit(st->db) != 0;
	if (own)
		rc = store_begin(st);
	if (rc == MF_OK)
		rc = store_body_last_tick(st, &tick);
	/* Ticks above every body's, in the order of the opens: exact LRU. */
	for (guint i = 0; i < all->len && rc == MF_OK; i++) {
		const struct store_touch *x = g_ptr_array_index(all, i);
		rc = store_body_set_tick(st, x->key >> 32, (uint32_t)(x->key & 0xffffffff),
		                         tick + 1 + (int64_t)i);
	}
	if (own)
		rc = store_end(st, rc, NULL);
	g_ptr_array_free(all, TRUE);
	/* A failed LRU bump only makes eviction slightly less exact. */
	g_hash_table_remove_all(st->touched);
	st->touch_since = 0;
	return rc;
}

/* The body was opened: it becomes the most recently used, in memory now
 * and in the table with the next batch (lock held). */
static void store_body_touch(struct store *st, int64_t folder_id, uint32_t uid)
{
	struct store_touch *t;
	gint64 now = g_get_monotonic_time();
	int64_t tick;

	if (folder_id < 0 || folder_id > INT32_MAX) {
		if (store_body_touch_flush(st) == MF_OK && store_body_last_tick(st, &tick) == MF_OK)
			store_body_set_tick(st, folder_id, uid, tick + 1);
		return;
	}
	t = g_new(struct store_touch, 1);
	t->key = folder_id << 32 | uid;
	t->seq = ++st->touch_seq;
	g_hash_table_replace(st->touched, t, NULL);  /* frees an older bump of it */
	if (!st->touch_since)
		st->touch_since = now;
	if (g_hash_table_size(st->touched) >= STORE_TOUCH_BATCH ||
	    now - st->touch_since >= STORE_TOUCH_DELAY_US)
		store_body_touch_flush(st);
}

int store_body_open(struct store *st, int64_t folder_id, uint32_t uid)
{
	char *path = store_body_path(st, folder_id, uid);
	struct stat sb;
	int64_t size;
	int fd = -1;

	pthread_mutex_lock(&st->lock);
	size = store_body_size(st, folder_id, uid);
	if (size < 0)
		goto out;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && (fstat(fd, &sb) != 0 || sb.st_size != size)) {
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
		store_run(store_query_message(st, Q_BODY_DELETE, folder_id, uid));
		goto out;
	}
	store_body_touch(st, folder_id, uid);
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

/* The bytes and count of cached bodies, as the rows add them up (0 and 0
 * when that fails). */
static enum mf_status store_body_sum(struct store *st, uint64_t *bytes, uint64_t *count)
{
	sqlite3_stmt *q = store_query(st, Q_BODY_USAGE);
	int src = sqlite3_step(q);

	*bytes = 0;
	*count = 0;
	if (src == SQLITE_ROW) {
		*bytes = (uint64_t)sqlite3_column_int64(q, 0);
		*count = (uint64_t)sqlite3_column_int64(q, 1);
	}
	return store_rows_done(q, src);
}

/* Picks least recently used bodies (never the one just committed) until
 * the total fits under the cap, deletes their rows and queues their
 * files. Runs inside the caller's transaction. */
static enum mf_status store_evict(struct store *st, int64_t keep_folder, uint32_t keep_uid,
                                  GPtrArray *doomed)
{
	GArray *victims = g_array_new(FALSE, FALSE, sizeof(int64_t) * 2);
	enum mf_status rc = MF_OK;
	uint64_t total = 0, count;
	sqlite3_stmt *q;
	int src = SQLITE_DONE;

	if (st->body_total < 0) {
		rc = store_body_sum(st, &total, &count);
		if (rc != MF_OK)
			goto out;
		st->body_total = (int64_t)total;
	}
	total = (uint64_t)st->body_total;
	if (total <= st->body_cap)
		goto out;

	q = store_query_message(st, Q_BODY_LRU, keep_folder, keep_uid);
	while (total > st->body_cap && (src = sqlite3_step(q)) == SQLITE_ROW) {
		int64_t v[2] = { sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1) };
		uint64_t size = (uint64_t)sqlite3_column_int64(q, 2);
		g_array_append_val(victims, v);
		total = size < total ? total - size : 0;
	}
	rc = store_rows_done(q, src);
	if (rc != MF_OK)
		goto out;
	/* Deleted after the scan: never change a table while stepping over it. */
	for (guint i = 0; i < victims->len; i++) {
		int64_t *v = &g_array_index(victims, int64_t, i * 2);
		rc = store_run(store_query_message(st, Q_BODY_DELETE, v[0], (uint32_t)v[1]));
		if (rc != MF_OK)
			goto out;
		g_ptr_array_add(doomed, store_body_path(st, v[0], (uint32_t)v[1]));
	}
	st->body_total = (int64_t)total;
out:
	g_array_free(victims, TRUE);
	return rc;
}

/* One body of a commit, inside the caller's transaction (lock held):
 * its file renamed into place (*renamed), its row and its size. */
static enum mf_status store_body_commit_one(struct store *st, int64_t folder_id, uint32_t uid,
                                            const char *tmp_path, const char *path,
                                            int *size_changed, int *renamed, GPtrArray *doomed)
{
	static const enum store_query sized[] = { Q_BODY_UPSERT, Q_MSG_SET_SIZE };
	char *dir = NULL;
	enum mf_status rc;
	uint64_t old_size = 0;
	int known = 0;
	struct stat sb;
	sqlite3_stmt *q;
	int src;

	/* No fsync: a body is a cache entry, checked by size when opened. */
	if (stat(tmp_path, &sb) != 0) {
		rc = MF_ERR_IO;
		goto out;
	}
	q = store_query_message(st, Q_MSG_SIZE, folder_id, uid);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW) {
		old_size = (uint64_t)sqlite3_column_int64(q, 0);
		known = sqlite3_column_int(q, 1);
	}
	sqlite3_reset(q);
	rc = store_found(src);
	if (rc != MF_OK)
		goto out;

	/* The folder's directory is made by its first body (and swept when
	 * empty): tried only when the rename says it is missing. */
	if (rename(tmp_path, path) != 0) {
		if (errno == ENOENT)
			dir = store_body_dir(st, folder_id);
		if (!dir || (mkdir(dir, 0700) != 0 && errno != EEXIST) ||
		    rename(tmp_path, path) != 0) {
			rc = MF_ERR_IO;
			goto out;
		}
	}
	*renamed = 1;

	if (store_has_body(st, folder_id, uid, &rc))
		st->body_total = -1;  /* replaced: sum again */
	else if (st->body_total >= 0)
		st->body_total += sb.st_size;
	/* The body's row, and its length as the message's real size (when
	 * that is news): both statements take (folder_id, uid, size). */
	if (rc == MF_OK && (uint64_t)sb.st_size != old_size)
		store_note_message(st, folder_id, uid);  /* its size, as stat says it */
	for (size_t i = 0; i < G_N_ELEMENTS(sized) && rc == MF_OK; i++) {
		if (sized[i] == Q_MSG_SET_SIZE && known && (uint64_t)sb.st_size == old_size)
			break;
		q = store_query_message(st, sized[i], folder_id, uid);
		sqlite3_bind_int64(q, 3, (sqlite3_int64)sb.st_size);
		rc = store_run(q);
	}
	if (rc == MF_OK)
		rc = store_evict(st, folder_id, uid, doomed);
	if (rc == MF_OK && size_changed)
		*size_changed = (uint64_t)sb.st_size != old_size;
out:
	g_free(dir);
	return rc;
}

enum mf_status store_body_commit_many(struct store *st, int64_t folder_id,
                                      struct store_body_item *items, size_t n)
{
	GPtrArray *doomed = g_ptr_array_new_with_free_func(g_free);
	char **paths = g_new0(char *, n);
	int *renamed = g_new0(int, n);
	enum mf_status rc;

	for (size_t i = 0; i < n; i++) {
		items[i].size_changed = 0;
		items[i].status = MF_ERR_IO;
		paths[i] = store_body_path(st, folder_id, items[i].uid);
	}
	pthread_mutex_lock(&st->lock);
	rc = store_begin(st);
	if (rc == MF_OK) {
		/* The opens before this commit come before it in the LRU. */
		store_body_touch_flush(st);
		for (size_t i = 0; i < n && rc == MF_OK; i++) {
			items[i].status = store_body_commit_one(st, folder_id, items[i].uid,
			                                        items[i].tmp_path, paths[i],
			                                        &items[i].size_changed, &renamed[i],
			                                        doomed);
			/* A message gone meanwhile loses its body alone; anything
			 * else undoes the whole commit. */
			if (items[i].status != MF_OK && items[i].status != MF_ERR_NOTFOUND)
				rc = items[i].status;
		}
	}
	rc = store_end(st, rc, doomed);
	for (size_t i = 0; i < n; i++) {
		if (rc != MF_OK)
			items[i].status = rc;
		if (items[i].status != MF_OK) {
			/* Whichever name the file has now, it must not stay behind. */
			unlink(renamed[i] ? paths[i] : items[i].tmp_path);
			items[i].size_changed = 0;
		}
		g_free(paths[i]);
	}
	pthread_mutex_unlock(&st->lock);
	g_ptr_array_free(doomed, TRUE);
	g_free(paths);
	g_free(renamed);
	return rc;
}

enum mf_status store_body_commit(struct store *st, int64_t folder_id,
                                 uint32_t uid, const char *tmp_path,
                                 int *size_changed)
{
	struct store_body_item item = { .uid = uid, .tmp_path = tmp_path };
	enum mf_status rc = store_body_commit_many(st, folder_id, &item, 1);

	if (size_changed)
		*size_changed = item.size_changed;
	return rc == MF_OK ? item.status : rc;
}

void store_body_abort(struct store *st, const char *tmp_path)
{
	(void)st;
	if (tmp_path)
		unlink(tmp_path);
}

enum mf_status store_body_usage(struct store *st, uint64_t *bytes, uint64_t *count)
{
	enum mf_status rc;

	pthread_mutex_lock(&st->lock);
	rc = store_body_sum(st, bytes, count);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

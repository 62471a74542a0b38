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

/* 1 when the file holds as many bytes as were recorded at commit. */
static int store_body_size_ok(struct store *st, int64_t folder_id, uint32_t uid, int fd)
{
	sqlite3_stmt *q = store_query_message(st, Q_BODY_SIZE, folder_id, uid);
	struct stat sb;
	int ok = 0;

	if (sqlite3_step(q) == SQLITE_ROW && fstat(fd, &sb) == 0)
		ok = sb.st_size == sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	return ok;
}

int store_body_open(struct store *st, int64_t folder_id, uint32_t uid)
{
	enum mf_status rc = MF_OK;
	char *path = store_body_path(st, folder_id, uid);
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
		store_run(store_query_message(st, Q_BODY_DELETE, folder_id, uid));
		goto out;
	}
	/* A failed LRU bump only makes eviction slightly less exact. */
	store_run(store_query_message(st, Q_BODY_TOUCH, folder_id, uid));
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

enum mf_status store_body_commit(struct store *st, int64_t folder_id,
                                 uint32_t uid, const char *tmp_path,
                                 int *size_changed)
{
	static const enum store_query sized[] = { Q_BODY_UPSERT, Q_MSG_SET_SIZE };
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

	q = store_query_message(st, Q_MSG_SIZE, folder_id, uid);
	src = sqlite3_step(q);
	if (src == SQLITE_ROW)
		old_size = (uint64_t)sqlite3_column_int64(q, 0);
	sqlite3_reset(q);
	rc = store_found(src);
	if (rc != MF_OK)
		goto out;

	if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || rename(tmp_path, path) != 0) {
		rc = MF_ERR_IO;
		goto out;
	}
	renamed = 1;

	if (store_has_body(st, folder_id, uid, &rc))
		st->body_total = -1;  /* replaced: sum again */
	else if (st->body_total >= 0)
		st->body_total += sb.st_size;
	/* The body's row, and its length as the message's real size: both
	 * statements take (folder_id, uid, size). */
	if (rc == MF_OK && (uint64_t)sb.st_size != old_size)
		store_note_message(st, folder_id, uid);  /* its size, as stat says it */
	for (size_t i = 0; i < G_N_ELEMENTS(sized) && rc == MF_OK; i++) {
		q = store_query_message(st, sized[i], folder_id, uid);
		sqlite3_bind_int64(q, 3, (sqlite3_int64)sb.st_size);
		rc = store_run(q);
	}
	if (rc == MF_OK)
		rc = store_evict(st, folder_id, uid, doomed);
out:
	rc = store_end(st, rc, doomed);
	if (rc == MF_OK && size_changed)
		*size_changed = (uint64_t)sb.st_size != old_size;
	if (rc != MF_OK) {
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
	enum mf_status rc;

	pthread_mutex_lock(&st->lock);
	rc = store_body_sum(st, bytes, count);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

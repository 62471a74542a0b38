/* store_body.c — the store's body cache: a cached body is a file of
 * its own under bodies/<folder_id>/<uid>, or a range of a pack file
 * bodies/<folder_id>/p<n> that a stream of bodies wrote one after
 * another. Downloads are staged in tmp/ and moved in by commit (a pack's
 * bodies are written in place and committed by their rows); least
 * recently used bodies are evicted beyond the byte cap (a pack's range
 * punched out, the pack unlinked with its last body); files without a
 * row are swept at open.
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

/* A pack's bodies start on block boundaries, so that punching one out
 * frees exactly its blocks: on disk a body takes what a file of its own
 * would, without the file (on this machine's ext4 a new file cost about
 * 100 µs: 50,000 small bodies, 5 s). */
#define STORE_PACK_ALIGN 4096
/* A writer starts a new pack beyond this. */
#define STORE_PACK_MAX ((uint64_t)1 << 30)

char *store_body_path(const struct store *st, int64_t folder_id, uint32_t uid)
{
	return g_strdup_printf("%s/bodies/%" PRId64 "/%" PRIu32, st->dir, folder_id, uid);
}

char *store_body_dir(const struct store *st, int64_t folder_id)
{
	return g_strdup_printf("%s/bodies/%" PRId64, st->dir, folder_id);
}

static char *store_pack_path(const struct store *st, int64_t folder_id, int64_t pack)
{
	return g_strdup_printf("%s/bodies/%" PRId64 "/p%" PRId64, st->dir, folder_id, pack);
}

static uint64_t store_pack_span(uint64_t len)
{
	return (len + STORE_PACK_ALIGN - 1) / STORE_PACK_ALIGN * STORE_PACK_ALIGN;
}

/* Whether a pack still holds a body, or a writer adds to it (lock
 * held); 1 when that cannot be told. */
static int store_pack_used(struct store *st, int64_t folder_id, int64_t pack)
{
	sqlite3_stmt *q;
	int rc;

	if (g_hash_table_contains(st->live_packs, &pack))
		return 1;
	q = store_query_folder(st, Q_BODY_PACK_USED, folder_id);
	sqlite3_bind_int64(q, 2, pack);
	rc = sqlite3_step(q);
	sqlite3_reset(q);
	return rc != SQLITE_DONE;
}

/* Punches a body's blocks out of its pack, unless a reader has it open
 * (store_body_open holds a read lock on its range for as long as its
 * descriptor lives): then they stay until the pack goes. */
static void store_pack_punch(const char *path, uint64_t off, uint64_t len)
{
	struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
	                   .l_start = (off_t)off, .l_len = (off_t)len };
	int fd;

	if (len == 0)
		return;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fcntl(fd, F_OFD_SETLK, &l) == 0)
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		          (off_t)store_pack_span(len));
	close(fd);
}

void store_doom_body(struct store *st, int64_t folder_id, uint32_t uid, uint64_t size,
                     int64_t pack, uint64_t off, GPtrArray *doomed)
{
	char *path = pack ? store_pack_path(st, folder_id, pack)
	                  : store_body_path(st, folder_id, uid);
	size_t n = strlen(path) + 1;
	struct store_doom *d = g_malloc(sizeof *d + n);

	d->folder_id = folder_id;
	d->pack = pack;
	d->off = off;
	d->len = size;
	memcpy(d->path, path, n);
	g_ptr_array_add(doomed, d);
	g_free(path);
}

/* Queues the message's cached body, if it has one (lock held): 1 when
 * it had. */
int store_doom_body_of(struct store *st, int64_t folder_id, uint32_t uid, GPtrArray *doomed,
                       enum mf_status *err)
{
	sqlite3_stmt *q = store_query_message(st, Q_BODY_LOC, folder_id, uid);
	int rc = sqlite3_step(q);

	if (rc == SQLITE_ROW)
		store_doom_body(st, folder_id, uid, (uint64_t)sqlite3_column_int64(q, 0),
		                sqlite3_column_int64(q, 1), (uint64_t)sqlite3_column_int64(q, 2),
		                doomed);
	sqlite3_reset(q);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		*err = store_db_status(rc);
	return rc == SQLITE_ROW;
}

void store_doom_run(struct store *st, GPtrArray *doomed)
{
	for (guint i = 0; doomed && i < doomed->len; i++) {
		const struct store_doom *d = g_ptr_array_index(doomed, i);
		if (!d->pack) {
			unlink(d->path);
			continue;
		}
		if (store_pack_used(st, d->folder_id, d->pack))
			store_pack_punch(d->path, d->off, d->len);
		else
			unlink(d->path);
	}
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

/* Adds the folder's cached bodies to doomed (removed after the
 * transaction commits, so a rollback never leaves rows without files
 * because of us). */
enum mf_status store_collect_folder_bodies(struct store *st, int64_t folder_id,
                                           GPtrArray *doomed)
{
	sqlite3_stmt *q = store_query_folder(st, Q_BODY_OF_FOLDER, folder_id);
	int rc;

	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		store_doom_body(st, folder_id, (uint32_t)sqlite3_column_int64(q, 0),
		                (uint64_t)sqlite3_column_int64(q, 1), sqlite3_column_int64(q, 2),
		                (uint64_t)sqlite3_column_int64(q, 3), doomed);
	return store_rows_done(q, rc);
}

static int store_has_body(struct store *st, int64_t folder_id, uint32_t uid,
                          enum mf_status *err)
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
			int keep;
			if (se->d_name[0] == 'p') {
				/* A pack: kept while a row names it. */
				guint64 pack = g_ascii_strtoull(se->d_name + 1, &end, 10);
				keep = *end == '\0' && pack > 0 && pack <= INT64_MAX &&
				       store_pack_used(st, fid, (int64_t)pack);
			} else {
				guint64 uid = g_ascii_strtoull(se->d_name, &end, 10);
				keep = *end == '\0' && uid <= UINT32_MAX &&
				       store_has_body(st, fid, (uint32_t)uid, &err);
			}
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

/* Where the body lies (lock held): its size (-1: not cached), its pack
 * (0: a file of its own) and where it starts in the pack. */
static int64_t store_body_loc(struct store *st, int64_t folder_id, uint32_t uid,
                              int64_t *pack, uint64_t *off)
{
	sqlite3_stmt *q = store_query_message(st, Q_BODY_LOC, folder_id, uid);
	int64_t size = -1;

	*pack = 0;
	*off = 0;
	if (sqlite3_step(q) == SQLITE_ROW) {
		size = sqlite3_column_int64(q, 0);
		*pack = sqlite3_column_int64(q, 1);
		*off = (uint64_t)sqlite3_column_int64(q, 2);
	}
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

static void store_body_touch_one(struct store *st, gint64 key, gint64 now)
{
	struct store_touch *t = g_new(struct store_touch, 1);

	t->key = key;
	t->seq = ++st->touch_seq;
	g_hash_table_replace(st->touched, t, NULL);  /* frees an older bump of it */
	if (!st->touch_since)
		st->touch_since = now;
}

/* The uses store_body_used queued, into st->touched, in their order and
 * before any later open's (lock held). */
static void store_body_take_used(struct store *st)
{
	GArray *used = NULL;
	gint64 now;

	g_mutex_lock(&st->used_lock);
	if (st->used->len > 0) {
		used = st->used;
		st->used = g_array_new(FALSE, FALSE, sizeof(gint64));
	}
	g_mutex_unlock(&st->used_lock);
	if (!used)
		return;
	now = g_get_monotonic_time();
	for (guint i = 0; i < used->len; i++)
		store_body_touch_one(st, g_array_index(used, gint64, i), now);
	g_array_free(used, TRUE);
}

enum mf_status store_body_touch_flush(struct store *st)
{
	GPtrArray *all;
	GHashTableIter it;
	gpointer t;
	enum mf_status rc = MF_OK;
	int64_t tick = 0;
	int own;

	store_body_take_used(st);
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
	gint64 now = g_get_monotonic_time();
	int64_t tick;

	if (folder_id < 0 || folder_id > INT32_MAX) {
		if (store_body_touch_flush(st) == MF_OK && store_body_last_tick(st, &tick) == MF_OK)
			store_body_set_tick(st, folder_id, uid, tick + 1);
		return;
	}
	store_body_take_used(st);
	store_body_touch_one(st, folder_id << 32 | uid, now);
	if (g_hash_table_size(st->touched) >= STORE_TOUCH_BATCH ||
	    now - st->touch_since >= STORE_TOUCH_DELAY_US)
		store_body_touch_flush(st);
}

int store_body_open(struct store *st, int64_t folder_id, uint32_t uid, uint64_t *off_out,
                    uint64_t *len_out)
{
	struct flock l = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
	char *path = NULL;
	struct stat sb;
	int64_t size, pack;
	uint64_t off;
	int fd = -1;

	store_lock(st);
	size = store_body_loc(st, folder_id, uid, &pack, &off);
	if (size < 0)
		goto out;
	path = pack ? store_pack_path(st, folder_id, pack) : store_body_path(st, folder_id, uid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && (fstat(fd, &sb) != 0 ||
	                (pack ? (uint64_t)sb.st_size < off + (uint64_t)size : sb.st_size != size))) {
		/* Bodies are written without fsync (they are a cache): after a
		 * crash a file may be short. Never serve it: fetch it again. */
		close(fd);
		fd = -1;
		if (!pack)
			unlink(path);
	}
	if (fd < 0) {
		/* The row outlived its file (removed by hand, or a crash between
		 * unlink and commit): forget it so the body is fetched again. */
		st->body_total = -1;
		store_run(store_query_message(st, Q_BODY_DELETE, folder_id, uid));
		goto out;
	}
	if (pack && size > 0) {
		/* Held as long as the descriptor lives: an eviction meanwhile
		 * leaves the range alone (store_pack_punch). Taken under the
		 * store's lock, as the punch is: never between the two. */
		l.l_start = (off_t)off;
		l.l_len = (off_t)size;
		fcntl(fd, F_OFD_SETLK, &l);
	}
	if (off_out)
		*off_out = off;
	if (len_out)
		*len_out = (uint64_t)size;
	store_body_touch(st, folder_id, uid);
out:
	pthread_mutex_unlock(&st->lock);
	g_free(path);
	return fd;
}

void store_body_used(struct store *st, int64_t folder_id, uint32_t uid)
{
	gint64 key = folder_id << 32 | uid;
	guint n;

	if (folder_id < 0 || folder_id > INT32_MAX) {
		store_lock(st);
		store_body_touch(st, folder_id, uid);
		pthread_mutex_unlock(&st->lock);
		return;
	}
	g_mutex_lock(&st->used_lock);
	g_array_append_val(st->used, key);
	n = st->used->len;
	g_mutex_unlock(&st->used_lock);
	/* Written with the next commit or open; a reader of cached bodies
	 * alone has them written in batches here. */
	if (n >= STORE_TOUCH_BATCH) {
		store_lock(st);
		store_body_touch_flush(st);
		pthread_mutex_unlock(&st->lock);
	}
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

/* ---- packs ---- */

struct store_pack {
	struct store *st;
	int64_t folder_id;
	int64_t no;                /* the pack being added to (0: none yet) */
	int fd;
	uint64_t end;
	GArray *nos, *fds;         /* every pack begun, and its descriptor */
};

struct store_pack *store_pack_new(struct store *st, int64_t folder_id)
{
	struct store_pack *p = g_new0(struct store_pack, 1);

	p->st = st;
	p->folder_id = folder_id;
	p->fd = -1;
	p->nos = g_array_new(FALSE, FALSE, sizeof(int64_t));
	p->fds = g_array_new(FALSE, FALSE, sizeof(int));
	return p;
}

/* Begins a new pack file (lock held): numbers go up for the whole cache,
 * from the highest a row names. */
static int store_pack_create(struct store_pack *p)
{
	struct store *st = p->st;

	if (st->pack_seq < 0) {
		sqlite3_stmt *q = store_query(st, Q_BODY_PACK_LAST);
		st->pack_seq = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
		sqlite3_reset(q);
	}
	for (int tries = 0; tries < 100; tries++) {
		int64_t no = ++st->pack_seq;
		char *path = store_pack_path(st, p->folder_id, no);
		int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno == ENOENT) {
			/* The folder's first body: its directory. */
			char *dir = store_body_dir(st, p->folder_id);
			if (mkdir(dir, 0700) == 0 || errno == EEXIST)
				fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			g_free(dir);
		}
		g_free(path);
		if (fd >= 0) {
			p->fd = fd;
			p->no = no;
			p->end = 0;
			g_array_append_val(p->nos, no);
			g_array_append_val(p->fds, fd);
			g_hash_table_add(st->live_packs, g_memdup2(&no, sizeof no));
			return 0;
		}
		if (errno != EEXIST)
			return -1;
	}
	return -1;
}

int store_pack_place(struct store_pack *p, uint64_t len, int64_t *pack, uint64_t *off)
{
	int fd;

	pthread_mutex_lock(&p->st->lock);
	if (p->fd < 0 || p->end + len > STORE_PACK_MAX)
		store_pack_create(p);
	fd = p->fd;
	*pack = p->no;
	*off = p->end;
	p->end += store_pack_span(len);
	pthread_mutex_unlock(&p->st->lock);
	return fd;
}

void store_pack_discard(struct store_pack *p, int64_t pack, uint64_t off, uint64_t len)
{
	char *path = store_pack_path(p->st, p->folder_id, pack);

	store_pack_punch(path, off, len);
	g_free(path);
}

void store_pack_free(struct store_pack *p)
{
	struct store *st;

	if (!p)
		return;
	st = p->st;
	store_lock(st);
	for (guint i = 0; i < p->nos->len; i++) {
		int64_t no = g_array_index(p->nos, int64_t, i);
		g_hash_table_remove(st->live_packs, &no);
		if (!store_pack_used(st, p->folder_id, no)) {
			char *path = store_pack_path(st, p->folder_id, no);
			unlink(path);
			g_free(path);
		}
	}
	pthread_mutex_unlock(&st->lock);
	for (guint i = 0; i < p->fds->len; i++)
		close(g_array_index(p->fds, int, i));
	g_array_free(p->nos, TRUE);
	g_array_free(p->fds, TRUE);
	g_free(p);
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
	GArray *victims = g_array_new(FALSE, FALSE, sizeof(int64_t) * 5);
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
		int64_t v[5] = { sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1),
		                 sqlite3_column_int64(q, 3), sqlite3_column_int64(q, 4),
		                 sqlite3_column_int64(q, 2) };
		uint64_t size = (uint64_t)sqlite3_column_int64(q, 2);
		g_array_append_val(victims, v);
		total = size < total ? total - size : 0;
	}
	rc = store_rows_done(q, src);
	if (rc != MF_OK)
		goto out;
	/* Deleted after the scan: never change a table while stepping over it. */
	for (guint i = 0; i < victims->len; i++) {
		int64_t *v = &g_array_index(victims, int64_t, i * 5);
		rc = store_run(store_query_message(st, Q_BODY_DELETE, v[0], (uint32_t)v[1]));
		if (rc != MF_OK)
			goto out;
		store_doom_body(st, v[0], (uint32_t)v[1], (uint64_t)v[4], v[2], (uint64_t)v[3],
		                doomed);
	}
	st->body_total = (int64_t)total;
out:
	g_array_free(victims, TRUE);
	return rc;
}

/* One body of a commit, inside the caller's transaction (lock held):
 * its file renamed into place (*renamed), or its range of a pack named;
 * its row and its size. */
static enum mf_status store_body_commit_one(struct store *st, int64_t folder_id,
                                            struct store_body_item *it, const char *path,
                                            int *renamed, GPtrArray *doomed)
{
	static const enum store_query sized[] = { Q_BODY_UPSERT, Q_MSG_SET_SIZE };
	char *dir = NULL;
	enum mf_status rc;
	uint64_t old_size = 0, size, old_off;
	int64_t old_body, old_pack;
	int known = 0;
	struct stat sb;
	sqlite3_stmt *q;
	int src;

	/* No fsync: a body is a cache entry, checked by size when opened. */
	if (it->pack) {
		size = it->len;
	} else if (stat(it->tmp_path, &sb) == 0) {
		size = (uint64_t)sb.st_size;
	} else {
		rc = MF_ERR_IO;
		goto out;
	}
	q = store_query_message(st, Q_MSG_SIZE, folder_id, it->uid);
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
	if (!it->pack && rename(it->tmp_path, path) != 0) {
		if (errno == ENOENT)
			dir = store_body_dir(st, folder_id);
		if (!dir || (mkdir(dir, 0700) != 0 && errno != EEXIST) ||
		    rename(it->tmp_path, path) != 0) {
			rc = MF_ERR_IO;
			goto out;
		}
	}
	*renamed = !it->pack;

	old_body = store_body_loc(st, folder_id, it->uid, &old_pack, &old_off);
	if (old_body >= 0) {
		st->body_total = -1;  /* replaced: sum again */
		/* A file of its own replaced by a file of its own is gone with
		 * the rename; anything else goes after the commit. */
		if (old_pack || it->pack)
			store_doom_body(st, folder_id, it->uid, (uint64_t)old_body, old_pack, old_off,
			                doomed);
	} else if (st->body_total >= 0) {
		st->body_total += (int64_t)size;
	}
	/* The body's row, and its length as the message's real size (when
	 * that is news): both statements take (folder_id, uid, size). */
	if (size != old_size)
		store_note_message(st, folder_id, it->uid);  /* its size, as it came */
	for (size_t i = 0; i < G_N_ELEMENTS(sized) && rc == MF_OK; i++) {
		if (sized[i] == Q_MSG_SET_SIZE && known && size == old_size)
			break;
		q = store_query_message(st, sized[i], folder_id, it->uid);
		sqlite3_bind_int64(q, 3, (sqlite3_int64)size);
		if (sized[i] == Q_BODY_UPSERT) {
			sqlite3_bind_int64(q, 4, it->pack);
			sqlite3_bind_int64(q, 5, (sqlite3_int64)it->off);
		}
		rc = store_run(q);
	}
	if (rc == MF_OK)
		rc = store_evict(st, folder_id, it->uid, doomed);
	if (rc == MF_OK)
		it->size_changed = size > old_size ? 1 : size < old_size ? -1 : 0;
out:
	g_free(dir);
	return rc;
}

/* The committed bodies longer than their message's size before, to
 * st->grew (lock held). */
static void store_body_tell_growth(struct store *st, int64_t folder_id,
                                   const struct store_body_item *items, size_t n)
{
	sqlite3_stmt *q = NULL;
	uint64_t base = 0;

	for (size_t i = 0; i < n; i++) {
		if (items[i].status != MF_OK || items[i].size_changed <= 0)
			continue;
		if (!q) {
			q = store_query_folder(st, Q_FOLDER_BASE_OF, folder_id);
			if (sqlite3_step(q) == SQLITE_ROW)
				base = (uint64_t)sqlite3_column_int64(q, 0);
			sqlite3_reset(q);
		}
		if (base)
			st->grew(st->grew_ctx, base, items[i].uid);
	}
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
		paths[i] = items[i].pack ? store_pack_path(st, folder_id, items[i].pack)
		                         : store_body_path(st, folder_id, items[i].uid);
	}
	store_lock(st);
	rc = store_begin(st);
	if (rc == MF_OK) {
		/* The opens before this commit come before it in the LRU. */
		store_body_touch_flush(st);
		for (size_t i = 0; i < n && rc == MF_OK; i++) {
			items[i].status = store_body_commit_one(st, folder_id, &items[i], paths[i],
			                                        &renamed[i], doomed);
			/* A message gone meanwhile loses its body alone; anything
			 * else undoes the whole commit. */
			if (items[i].status != MF_OK && items[i].status != MF_ERR_NOTFOUND)
				rc = items[i].status;
		}
	}
	rc = store_end(st, rc, doomed);
	if (rc == MF_OK && st->grew)
		store_body_tell_growth(st, folder_id, items, n);
	for (size_t i = 0; i < n; i++) {
		if (rc != MF_OK)
			items[i].status = rc;
		if (items[i].status != MF_OK) {
			/* Whichever name the file has now, it must not stay behind;
			 * nor a pack's range that no row names. */
			if (items[i].pack)
				store_pack_punch(paths[i], items[i].off, items[i].len);
			else
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

	store_lock(st);
	rc = store_body_sum(st, bytes, count);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

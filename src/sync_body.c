/* sync_body.c — message bodies: an open served from the body cache, or
 * downloaded into it first; and read-ahead for readers that go through a
 * folder in order (tar, rsync, cp -r, grep -r), in name order or in UID
 * order: a stream (sync_stream.c), or batches when no connection is left
 * for one.
 *
 * Must not: read ahead with -o mark_seen (it would mark unread mail
 * read), or hold the context's lock across a download. */
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "log.h"
#include "stats.h"
#include "sync_int.h"

#define SYNC_RA_MAX_MESSAGES 64                 /* read-ahead batch: at most so many */
#define SYNC_RA_MAX_BYTES (16 * 1024 * 1024)    /* and so many bytes */
#define SYNC_RA_MAX_SIZE (1024 * 1024)          /* larger bodies come alone, in ranges */

/* ---------------------------------------------------------------- bodies */

/* A body found in the cache: the reader's progress, told to its folder's
 * stream, or else to the thread that pushes cached bodies ahead (one
 * look at the streams, under s->lock, for both). 1 when a stream brought
 * the body for this reader. */
static int sync_body_hit(struct sync_ctx *s, int64_t folder_id, uint32_t uid)
{
	int seen = sync_stream_note_hit(s, folder_id, uid);

	if (!seen)
		sync_ahead_note(s, folder_id, uid);
	return seen == 2;
}

struct store_message *sync_message_copy(const struct store_message *m)
{
	struct store_message *copy = g_new0(struct store_message, 1);

	copy->uid = m->uid;
	copy->size = m->size;
	copy->name = g_strdup(m->name);
	copy->remote_id = g_strdup(m->remote_id);
	return copy;
}

void sync_message_free(gpointer m)
{
	store_message_clear(m);
	g_free(m);
}

struct sync_ra_pick {
	GPtrArray *msgs;     /* struct store_message *, owned */
	uint64_t bytes;
};

static int sync_ra_collect(void *ctx, const struct store_message *m)
{
	struct sync_ra_pick *p = ctx;
	if (p->bytes + m->size > SYNC_RA_MAX_BYTES)
		return 1;
	g_ptr_array_add(p->msgs, sync_message_copy(m));
	p->bytes += m->size;
	return 0;
}

/* Who comes after this batch, for the sequential test of the next miss:
 * in the order the reader went, or in both (name order: the store's
 * listings; UID order: a first listing) before it went any. */
static void sync_ra_remember(struct sync_ctx *s, int64_t folder_id,
                             const struct store_message *last, int streak, int by_uid)
{
	struct store_message by_name = { 0 }, by_number = { 0 };

	if (streak < 2 || !by_uid)
		store_messages_after(s->store, folder_id, last, 0, STORE_UNCACHED, UINT64_MAX, 1,
		                     sync_first_message, &by_name);
	if (streak < 2 || by_uid)
		store_messages_after(s->store, folder_id, last, 1, STORE_UNCACHED, UINT64_MAX, 1,
		                     sync_first_message, &by_number);
	g_mutex_lock(&s->lock);
	g_free(s->ra_next);
	s->ra_next = by_name.name;
	s->ra_next_uid = by_number.uid;
	s->ra_folder = folder_id;
	s->ra_streak = streak;
	g_mutex_unlock(&s->lock);
	g_free(by_number.name);
}

void sync_reader_listed(struct sync_ctx *s, int64_t folder_id, uint32_t uid, int in_order)
{
	g_mutex_lock(&s->lock);
	g_clear_pointer(&s->ra_next, g_free);
	s->ra_next_uid = uid;
	s->ra_folder = folder_id;
	/* The miss of sync_fetch_into_cache adds one. */
	s->ra_streak = in_order ? 1 : 0;
	g_mutex_unlock(&s->lock);
}

/* Downloads m's body into the cache, and with it the next uncached
 * messages when the reader goes through the folder in order. Returns an
 * fd on m's body in *fd_out. */
static enum mf_status sync_fetch_into_cache(struct sync_ctx *s, const struct store_folder *f,
                                            const struct store_message *m, int *fd_out,
                                            uint64_t *off_out, uint64_t *len_out,
                                            int *size_changed)
{
	struct sync_ra_pick pick = { g_ptr_array_new_with_free_func(sync_message_free), 0 };
	struct mailbox_body_request *reqs = NULL;
	char **tmp = NULL;
	const struct store_message *last;
	uint64_t written = 0;
	enum mf_status st;
	int streak = 0, by_uid = 0, started;
	size_t n = 1, n_alloc = 0;

	g_mutex_lock(&s->lock);
	if (s->ra_folder == f->id && s->ra_next && strcmp(s->ra_next, m->name) == 0) {
		streak = s->ra_streak + 1;
	} else if (s->ra_folder == f->id && s->ra_next_uid && s->ra_next_uid == m->uid) {
		streak = s->ra_streak + 1;
		by_uid = 1;
	}
	g_mutex_unlock(&s->lock);

	/* From the third message read in order on, a stream (sync_stream.c)
	 * goes ahead of the reader, while a connection is free for it; else
	 * batches of 8, 16, 32, then 64 at once. Not with mark_seen: messages
	 * nobody read would be marked read. While a stream runs for the
	 * folder, an open it did not serve is fetched alone. */
	if (sync_stream_active(s, f->id)) {
		streak = -1;
	} else if (streak >= 2 && !s->cfg->mark_seen &&
	           (started = sync_stream_start(s, f, m, by_uid)) != 0) {
		streak = -1;
		/* m is the new stream's first body: no fetch of its own, and
		 * the stream gets the connection it would have taken. */
		if (started == 2 && sync_stream_open(s, f->id, m, fd_out, off_out, len_out, &st)) {
			if (size_changed && *len_out != m->size)
				*size_changed = *len_out > m->size ? 1 : -1;
			st = MF_OK;
			n = 0;
			goto out;
		}
		if (started == 2 && st != MF_OK) {
			n = 0;
			goto out;
		}
	} else if (streak >= 2 && s->mb->ops->fetch_bodies && m->size <= SYNC_RA_MAX_SIZE &&
	           !s->cfg->mark_seen) {
		size_t want = (size_t)4 << (streak - 1 < 4 ? streak - 1 : 4);
		if (want > SYNC_RA_MAX_MESSAGES)
			want = SYNC_RA_MAX_MESSAGES;
		pick.bytes = m->size;
		store_messages_after(s->store, f->id, m, by_uid, STORE_UNCACHED, SYNC_RA_MAX_SIZE,
		                     want - 1, sync_ra_collect, &pick);
		n = 1 + pick.msgs->len;
	}
	n_alloc = n;
	reqs = g_new0(struct mailbox_body_request, n);
	tmp = g_new0(char *, n);
	for (size_t i = 0; i < n; i++) {
		const struct store_message *x = i == 0 ? m : g_ptr_array_index(pick.msgs, i - 1);
		reqs[i].uid = x->uid;
		reqs[i].remote_id = x->remote_id;
		reqs[i].size_hint = x->size;
		reqs[i].fd = store_body_begin(s->store, &tmp[i]);
		if (reqs[i].fd < 0) {
			n = i;  /* fetch what has a file; m at least, or nothing */
			break;
		}
	}
	if (n == 0) {
		st = MF_ERR_IO;
		goto out;
	}
	if (n == 1) {
		st = s->mb->ops->fetch_body(s->mb, f->wire_name, f->uidvalidity, m->uid, m->remote_id,
		                            m->size, reqs[0].fd, &written);
		reqs[0].status = st;
	} else {
		st = s->mb->ops->fetch_bodies(s->mb, f->wire_name, f->uidvalidity, reqs, n);
		if (st == MF_OK)
			st = reqs[0].status;
	}
	for (size_t i = 1; i < n; i++) {
		if (reqs[i].status != MF_OK || store_body_commit(s->store, f->id, reqs[i].uid, tmp[i],
		                                                 NULL) != MF_OK)
			store_body_abort(s->store, tmp[i]);
	}
	if (st == MF_OK)
		st = store_body_commit(s->store, f->id, m->uid, tmp[0], size_changed);
	else
		store_body_abort(s->store, tmp[0]);
	if (st == MF_OK) {
		/* The download's own fd still names the file after the rename,
		 * and even after an eviction racing with us. */
		struct stat sb;
		if (fstat(reqs[0].fd, &sb) != 0) {
			st = MF_ERR_IO;
		} else {
			*fd_out = reqs[0].fd;
			*len_out = (uint64_t)sb.st_size;
			reqs[0].fd = -1;
		}
	}
	last = n > 1 ? g_ptr_array_index(pick.msgs, n - 2) : m;
	if (streak >= 0)
		sync_ra_remember(s, f->id, last, streak, by_uid);
out:
	for (size_t i = 0; i < n; i++)
		if (reqs[i].fd >= 0)
			close(reqs[i].fd);
	for (size_t i = 0; i < n_alloc; i++)
		g_free(tmp[i]);
	g_free(tmp);
	g_free(reqs);
	g_ptr_array_free(pick.msgs, TRUE);
	return st;
}

enum mf_status sync_body_open(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              int *fd_out, uint64_t *off, uint64_t *len, int *size_changed)
{
	struct store_folder f = { 0 };
	struct store_message m = { 0 };
	enum mf_status st;
	int fd;

	if (size_changed)
		*size_changed = 0;
	sync_watch_note(s, folder_id);  /* in use: watched for a while */
	*off = 0;
	fd = store_body_open(s->store, folder_id, uid, off, len);
	if (fd >= 0) {
		stats_add(cache_hits, 1);
		sync_body_hit(s, folder_id, uid);
		*fd_out = fd;
		return MF_OK;
	}
	stats_add(cache_misses, 1);
	if (!s->mb)
		return MF_ERR_OFFLINE;
	st = store_folder_by_id(s->store, folder_id, &f);
	if (st == MF_OK)
		st = store_message_by_uid(s->store, folder_id, uid, &m);
	if (st == MF_OK && sync_stream_open(s, folder_id, &m, fd_out, off, len, &st)) {
		/* As for a body fetched here: a size other than the server said
		 * is read around the kernel's idea of it. */
		if (size_changed && *len != m.size)
			*size_changed = *len > m.size ? 1 : -1;
		store_message_clear(&m);
		store_folder_clear(&f);
		return MF_OK;
	}
	if (st == MF_OK) {
		/* A stream that ended meanwhile may have brought it after all. */
		fd = store_body_open(s->store, folder_id, uid, off, len);
		if (fd >= 0) {
			*fd_out = fd;
			store_message_clear(&m);
			store_folder_clear(&f);
			return MF_OK;
		}
		st = sync_fetch_into_cache(s, &f, &m, fd_out, off, len, size_changed);
	}
	if (st == MF_ERR_NOTFOUND)
		log_warn("message %u of %s is gone from the server", uid, f.path ? f.path : "?");
	else if (st != MF_OK)
		log_warn("cannot fetch message %u of %s: %s", uid, f.path ? f.path : "?",
		         mf_status_str(st));
	store_message_clear(&m);
	store_folder_clear(&f);
	return st;
}

void sync_body_seen(struct sync_ctx *s, uint64_t ino_base, uint32_t uid)
{
	gint64 key = (gint64)ino_base;
	struct store_folder f = { 0 };
	int64_t *id, folder_id = -1;

	stats_add(cache_hits, 1);
	g_mutex_lock(&s->lock);
	id = g_hash_table_lookup(s->base_ids, &key);
	if (id)
		folder_id = *id;
	g_mutex_unlock(&s->lock);
	if (folder_id < 0) {
		if (store_folder_by_base(s->store, ino_base, &f) != MF_OK)
			return;
		folder_id = f.id;
		store_folder_clear(&f);
		g_mutex_lock(&s->lock);
		g_hash_table_replace(s->base_ids, g_memdup2(&key, sizeof key),
		                     g_memdup2(&folder_id, sizeof folder_id));
		g_mutex_unlock(&s->lock);
	}
	/* A use, as an open of the cache file is: least recently used last;
	 * but a body a stream brought for this reader was used at its commit,
	 * after every body it passed (so what it brought and the reader has
	 * not reached yet stays the most recent). */
	if (!sync_body_hit(s, folder_id, uid))
		store_body_used(s->store, folder_id, uid);
}

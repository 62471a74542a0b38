/* sync_write.c — the write operations: each talks to the server first
 * and changes the cache only after the server confirmed; then the
 * touched folders are brought up to date.
 *
 * Must not: remove a message from one place before the server confirmed
 * it is in the other (the driver's move confirms the copy first), or
 * report success for what the server did not confirm. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "mime.h"
#include "sync_int.h"

/* ---------------------------------------------------------------- writes */

/* After the server changed a folder: bring the cache up to date now, so
 * the next listing is right at once. A failure here is only logged: the
 * server has the change, and the next refresh catches up. */
static void sync_after_change(struct sync_ctx *s, int64_t folder_id)
{
	enum mf_status st = sync_folder_run(s, folder_id, 1, 1, NULL, NULL);

	if (st != MF_OK)
		log_warn("cannot refresh folder %" G_GINT64_FORMAT " after a change: %s",
		         folder_id, mf_status_str(st));
}

static enum mf_status sync_writable(struct sync_ctx *s)
{
	if (!s->mb)
		return MF_ERR_READONLY;
	if (s->cfg->readonly || !s->mb->ops->append)
		return MF_ERR_READONLY;
	return MF_OK;
}

#define SYNC_HEAD_MAX (1024 * 1024)   /* what validation reads of a staged file */
#define SYNC_SCAN_CHUNK (64 * 1024)

/* What a staged file holds, read in pieces (never whole in memory): the
 * head for validation and its Message-ID, and whether the server's copy
 * will be these very bytes. */
struct sync_scan {
	size_t skip;              /* leading junk, not sent */
	uint64_t wire_size;       /* the size the server gives it: a bare LF
	                             becomes CRLF there (RFC 5322 line ends) */
	int exact;                /* no junk, no bare LF or CR: BODY[] will be
	                             the file's bytes */
	char *message_id;
};

static enum mf_status sync_pread_all(int fd, char *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return MF_ERR_IO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return MF_OK;
}

static size_t sync_leading_junk(const char *data, size_t size);

/* Validates the staged file (fd, size bytes) and scans its line ends.
 * MF_ERR_INVAL: not a mail message. */
static enum mf_status sync_scan_staged(int fd, uint64_t size, struct sync_scan *sc)
{
	size_t head_len = size < SYNC_HEAD_MAX ? (size_t)size : SYNC_HEAD_MAX;
	char *buf = g_malloc(head_len > SYNC_SCAN_CHUNK ? head_len : SYNC_SCAN_CHUNK);
	struct mime_header_info info = { 0 };
	uint64_t bare = 0, off;
	enum mf_status st;
	char prev = 0;

	*sc = (struct sync_scan){ 0 };
	st = sync_pread_all(fd, buf, head_len, 0);
	if (st != MF_OK)
		goto out;
	sc->skip = sync_leading_junk(buf, head_len);
	if (mime_validate_message(buf + sc->skip, head_len - sc->skip) != 0) {
		st = MF_ERR_INVAL;
		goto out;
	}
	mime_parse_headers_lazy(buf + sc->skip, head_len - sc->skip, &info);  /* for its Message-ID */
	sc->message_id = g_strdup(info.message_id);
	mime_header_info_clear(&info);
	sc->exact = sc->skip == 0;
	for (off = sc->skip; off < size;) {
		size_t len = size - off < SYNC_SCAN_CHUNK ? (size_t)(size - off) : SYNC_SCAN_CHUNK;
		st = sync_pread_all(fd, buf, len, off);
		if (st != MF_OK)
			goto out;
		for (size_t i = 0; i < len; i++) {
			if (buf[i] == '\n' && prev != '\r') {
				bare++;
				sc->exact = 0;
			} else if (prev == '\r' && buf[i] != '\n') {
				sc->exact = 0;
			}
			prev = buf[i];
		}
		off += len;
	}
	if (prev == '\r')
		sc->exact = 0;
	sc->wire_size = size - sc->skip + bare;
out:
	g_free(buf);
	return st;
}

/* The highest UID the cache holds for the folder, 0 for none. */
static uint32_t sync_max_uid(struct sync_ctx *s, int64_t folder_id)
{
	uint32_t max = 0;

	store_folder_max_uid(s->store, folder_id, &max);
	return max;
}

/* When the server did not say which UID a message got (no UIDPLUS, or
 * its answer was lost): the one above above_uid with this Message-ID and
 * size, among what the last refresh brought in. 0 when none is sure. */
static uint32_t sync_find_arrival(struct sync_ctx *s, int64_t folder_id, uint32_t above_uid,
                                  const char *message_id, uint64_t size)
{
	uint32_t *uids = NULL, found = 0;
	size_t n = 0;

	if (store_folder_uids(s->store, folder_id, &uids, &n) != MF_OK)
		return 0;
	for (size_t i = n; i > 0 && uids[i - 1] > above_uid && !found; i--) {
		struct store_message m = { 0 };
		if (store_message_by_uid(s->store, folder_id, uids[i - 1], &m) == MF_OK &&
		    m.size == size && g_strcmp0(m.message_id, message_id) == 0)
			found = m.uid;
		store_message_clear(&m);
	}
	g_free(uids);
	return found;
}

/* Bytes before the message itself that mail programs leave in .eml
 * files: a UTF-8 byte order mark, an mbox "From " separator line. The
 * server gets the message without them, as mutt and mbsync send it. */
static size_t sync_leading_junk(const char *data, size_t size)
{
	size_t skip = 0;

	if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		skip = 3;
	if (size - skip >= 5 && memcmp(data + skip, "From ", 5) == 0) {
		const char *nl = memchr(data + skip, '\n', size - skip);
		if (nl)
			skip = (size_t)(nl + 1 - data);
	}
	return skip;
}

enum mf_status sync_append(struct sync_ctx *s, int64_t folder_id, const char *name,
                           int fd, uint64_t size, int64_t internaldate,
                           const struct sync_appended *prev, struct sync_appended *out)
{
	struct store_folder f = { 0 };
	struct sync_scan sc = { 0 };
	uint32_t uid = 0, before;
	enum mf_status st = sync_writable(s);

	*out = (struct sync_appended){ folder_id, 0, 0 };
	if (st != MF_OK)
		goto out;
	st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		goto out;
	if (f.noselect) {
		st = MF_ERR_PERM;
		goto out;
	}
	st = sync_scan_staged(fd, size, &sc);
	if (st == MF_ERR_INVAL)
		log_warn("%s/%s is not a mail message (no RFC 5322 header): not appended", f.path, name);
	if (st != MF_OK)
		goto out;
	before = sync_max_uid(s, folder_id);
	st = s->mb->ops->append(s->mb, f.wire_name, fd, sc.skip, size - sc.skip, internaldate,
	                        sc.message_id, sc.wire_size, before, &uid);
	if (st != MF_OK) {
		log_warn("cannot append %s to %s: %s", name, f.path, mf_status_str(st));
		goto out;
	}
	sync_after_change(s, folder_id);
	if (!uid)
		uid = sync_find_arrival(s, folder_id, before, sc.message_id, sc.wire_size);
	log_info("appended %s to %s (uid %u)", name, f.path, uid);
	/* An earlier version of the same file goes once this one is safe,
	 * and gives its name up to it. */
	if (prev && prev->uid && sync_append_drop(s, prev) != MF_OK)
		log_warn("%s/%s: an earlier version stays on the server (uid %u)", f.path, name,
		         prev->uid);
	if (!uid) {
		log_warn("%s/%s: the server did not say which UID it got: it shows under its derived name",
		         f.path, name);
		goto out;
	}
	if (store_message_set_user_name(s->store, folder_id, uid, name) != MF_OK)
		log_warn("%s/%s: the name could not be kept: it shows under its derived name", f.path, name);
	*out = (struct sync_appended){ folder_id, uid, sc.exact };
out:
	g_free(sc.message_id);
	store_folder_clear(&f);
	return st;
}

void sync_append_keep(struct sync_ctx *s, const struct sync_appended *v, const char *tmp_path)
{
	/* What was written is the message when the server keeps these very
	 * bytes: it becomes the cached body. Else the body is fetched when
	 * read, so that every mount shows the server's bytes. */
	if (!v->uid || !v->exact ||
	    store_body_commit(s->store, v->folder_id, v->uid, tmp_path, NULL) != MF_OK)
		store_body_abort(s->store, tmp_path);
}

enum mf_status sync_append_drop(struct sync_ctx *s, const struct sync_appended *v)
{
	struct store_folder f = { 0 };
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, v->folder_id, &f);
	/* Expunged, never moved to the trash: it was never a message of
	 * its own, only a stage of a file being written. */
	if (st == MF_OK)
		st = s->mb->ops->expunge(s->mb, f.wire_name, f.uidvalidity, v->uid);
	if (st == MF_OK)
		store_message_remove(s->store, v->folder_id, v->uid);
	else
		log_warn("cannot remove an earlier version (uid %u) of a file from %s: %s", v->uid,
		         f.path ? f.path : "?", mf_status_str(st));
	store_folder_clear(&f);
	return st;
}

enum mf_status sync_move(struct sync_ctx *s, int64_t src_folder_id, uint32_t uid,
                         int64_t dst_folder_id, const char *name, uint32_t replace_uid)
{
	struct store_folder f = { 0 }, g = { 0 };
	struct store_message m = { 0 };
	uint32_t dst_uid = 0, before;
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, src_folder_id, &f);
	if (st == MF_OK)
		st = store_folder_by_id(s->store, dst_folder_id, &g);
	if (st == MF_OK)
		st = store_message_by_uid(s->store, src_folder_id, uid, &m);
	if (st != MF_OK)
		goto out;
	if (g.noselect) {
		st = MF_ERR_PERM;
		goto out;
	}
	before = sync_max_uid(s, dst_folder_id);
	st = s->mb->ops->move(s->mb, f.wire_name, f.uidvalidity, uid, m.size, m.message_id,
	                      g.wire_name, &dst_uid);
	if (st != MF_OK) {
		log_warn("cannot move %s from %s to %s: %s", m.name, f.path, g.path, mf_status_str(st));
		goto out;
	}
	/* The source lost one message: the cache says so without asking. */
	store_message_remove(s->store, src_folder_id, uid);
	if (replace_uid && replace_uid != dst_uid) {
		st = sync_remove(s, dst_folder_id, replace_uid);
		if (st != MF_OK)
			goto out;
	}
	sync_after_change(s, dst_folder_id);
	if (!dst_uid)
		dst_uid = sync_find_arrival(s, dst_folder_id, before, m.message_id, m.size);
	log_info("moved %s from %s to %s (uid %u)", m.name, f.path, g.path, dst_uid);
	if (name && dst_uid && store_message_set_user_name(s->store, dst_folder_id, dst_uid, name) != MF_OK)
		log_warn("%s/%s: the name could not be kept", g.path, name);
out:
	store_message_clear(&m);
	store_folder_clear(&f);
	store_folder_clear(&g);
	return st;
}

enum mf_status sync_remove(struct sync_ctx *s, int64_t folder_id, uint32_t uid)
{
	struct store_folder f = { 0 }, trash = { 0 };
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		goto out;
	if (s->cfg->trash && strcmp(s->cfg->trash, f.path) != 0) {
		st = store_folder_by_path(s->store, s->cfg->trash, &trash);
		if (st != MF_OK) {
			log_error("the trash folder %s does not exist: nothing removed", s->cfg->trash);
			st = MF_ERR_IO;
			goto out;
		}
		st = sync_move(s, folder_id, uid, trash.id, NULL, 0);
		goto out;
	}
	st = s->mb->ops->expunge(s->mb, f.wire_name, f.uidvalidity, uid);
	if (st != MF_OK) {
		log_warn("cannot remove message %u from %s: %s", uid, f.path, mf_status_str(st));
		goto out;
	}
	store_message_remove(s->store, folder_id, uid);
out:
	store_folder_clear(&f);
	store_folder_clear(&trash);
	return st;
}

enum mf_status sync_rename(struct sync_ctx *s, int64_t folder_id, uint32_t uid, const char *name)
{
	enum mf_status st = sync_writable(s);

	if (st != MF_OK)
		return st;
	return store_message_set_user_name(s->store, folder_id, uid, name);
}

enum mf_status sync_set_flags(struct sync_ctx *s, int64_t folder_id, uint32_t uid,
                              const char *flags)
{
	struct store_folder f = { 0 };
	char **words = NULL, *normal = NULL;
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st != MF_OK)
		goto out;
	/* One space between flags, none around: as the server will say them. */
	words = g_strsplit_set(flags, " \t\n", -1);
	{
		GString *n = g_string_new(NULL);
		for (char **w = words; *w; w++) {
			if (!**w)
				continue;
			if (n->len)
				g_string_append_c(n, ' ');
			g_string_append(n, *w);
		}
		normal = g_string_free(n, FALSE);
	}
	st = s->mb->ops->set_flags(s->mb, f.wire_name, f.uidvalidity, uid, normal);
	if (st == MF_OK)
		st = store_message_set_flags(s->store, folder_id, uid, normal);
	else
		log_warn("cannot set flags of message %u in %s: %s", uid, f.path, mf_status_str(st));
out:
	g_strfreev(words);
	g_free(normal);
	store_folder_clear(&f);
	return st;
}

/* After CREATE, DELETE or RENAME: the folder list, now. */
static enum mf_status sync_folders_now(struct sync_ctx *s, enum mf_status st)
{
	enum mf_status listed;

	/* "Already exists" means our list is behind the server's: catch up. */
	if (st != MF_OK && st != MF_ERR_EXISTS)
		return st;
	listed = sync_folders(s);
	g_mutex_lock(&s->lock);
	s->folders_attempted = g_get_monotonic_time();
	g_mutex_unlock(&s->lock);
	if (listed != MF_OK)
		log_warn("cannot list folders after a change: %s", mf_status_str(listed));
	return st;
}

enum mf_status sync_create_folder(struct sync_ctx *s, const char *path)
{
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = s->mb->ops->create_folder(s->mb, path);
	if (st != MF_OK && st != MF_ERR_READONLY)
		log_warn("cannot create folder %s: %s", path, mf_status_str(st));
	return sync_folders_now(s, st);
}

enum mf_status sync_delete_folder(struct sync_ctx *s, int64_t folder_id)
{
	struct store_folder f = { 0 };
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st == MF_OK && f.message_count > 0)
		st = MF_ERR_NOTEMPTY;
	if (st == MF_OK && !f.wire_name)
		st = MF_ERR_PERM;  /* a parent the server never listed */
	if (st == MF_OK)
		st = s->mb->ops->delete_folder(s->mb, f.wire_name);
	if (st != MF_OK && st != MF_ERR_READONLY && st != MF_ERR_NOTEMPTY)
		log_warn("cannot delete folder %s: %s", f.path ? f.path : "?", mf_status_str(st));
	store_folder_clear(&f);
	return sync_folders_now(s, st);
}

enum mf_status sync_rename_folder(struct sync_ctx *s, int64_t folder_id, const char *new_path)
{
	struct store_folder f = { 0 };
	enum mf_status st = sync_writable(s);

	if (st == MF_OK)
		st = store_folder_by_id(s->store, folder_id, &f);
	if (st == MF_OK && !f.wire_name)
		st = MF_ERR_PERM;
	if (st == MF_OK)
		st = s->mb->ops->rename_folder(s->mb, f.wire_name, new_path);
	if (st != MF_OK && st != MF_ERR_READONLY)
		log_warn("cannot rename folder %s to %s: %s", f.path ? f.path : "?", new_path,
		         mf_status_str(st));
	/* The folders keep what the cache knows of them, names given by
	 * hand too; the LIST that follows brings the server's new names. */
	if (st == MF_OK && store_folder_rename(s->store, f.path, new_path) != MF_OK)
		log_warn("the cache could not follow %s to %s: its names given by hand are lost",
		         f.path, new_path);
	store_folder_clear(&f);
	return sync_folders_now(s, st);
}

enum mf_status sync_quota(struct sync_ctx *s, uint64_t *used, uint64_t *limit)
{
	gint64 now = g_get_monotonic_time();
	enum mf_status st;

	if (!s->mb || !s->mb->ops->quota)
		return MF_ERR_NOTFOUND;
	g_mutex_lock(&s->lock);
	if (s->quota_at && now - s->quota_at < 60 * G_USEC_PER_SEC) {
		st = s->quota_status;
		*used = s->quota_used;
		*limit = s->quota_limit;
		g_mutex_unlock(&s->lock);
		return st;
	}
	g_mutex_unlock(&s->lock);
	st = s->mb->ops->quota(s->mb, used, limit);
	g_mutex_lock(&s->lock);
	s->quota_at = g_get_monotonic_time();
	s->quota_status = st;
	s->quota_used = *used;
	s->quota_limit = *limit;
	g_mutex_unlock(&s->lock);
	return st;
}

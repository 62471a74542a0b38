/* test_sync.c — the sync layer against a fake mailbox driver and a real
 * store in a temporary directory: when a folder is stale, what a re-check
 * brings (new, vanished, changed, UIDVALIDITY), local uids for a driver
 * without server UIDs, read-ahead's picks, and the write ordering rule:
 * nothing is removed from one place before the driver confirmed it is in
 * the other. The fake driver records each call it gets, in order. */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>

#include "mailbox.h"
#include "log.h"
#include "mime.h"
#include "store.h"
#include "sync.h"

/* ---------------------------------------------------------------- the fake driver */

struct fake_msg {
	uint32_t uid;
	char *remote_id;     /* without server UIDs */
	char *flags;
	char *subject;
	char *body;
};

struct fake_folder {
	char *path;
	uint32_t uidvalidity, uidnext;
	GPtrArray *msgs;     /* struct fake_msg *, ascending uid */
};

struct fake {
	struct mailbox base;
	struct mailbox_ops ops;
	GPtrArray *folders;  /* struct fake_folder * */
	GString *calls;      /* one line per call: "VERB folder args" */
	int fail_sync, fail_move, fail_expunge;
	/* Not NULL: answer as QRESYNC does, naming what vanished (struct
	 * mailbox_uid_range) instead of listing what is present. */
	GArray *vanished;
	/* Push (fake_watch): the watch's news, and counts read across
	 * threads (sync's watch thread syncs too). */
	mailbox_news_fn news;
	void *news_ctx;
	gint syncs, watches;
	uint64_t modseq;     /* HIGHESTMODSEQ told at a sync (0: none) */
};

static void fake_msg_free(gpointer p)
{
	struct fake_msg *m = p;
	g_free(m->remote_id);
	g_free(m->flags);
	g_free(m->subject);
	g_free(m->body);
	g_free(m);
}

static void fake_folder_free(gpointer p)
{
	struct fake_folder *f = p;
	g_free(f->path);
	g_ptr_array_free(f->msgs, TRUE);
	g_free(f);
}

static void fake_call(struct fake *fk, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void fake_call(struct fake *fk, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_string_append_vprintf(fk->calls, fmt, ap);
	va_end(ap);
	g_string_append_c(fk->calls, '\n');
}

static struct fake_folder *fake_folder(struct fake *fk, const char *path)
{
	for (guint i = 0; i < fk->folders->len; i++) {
		struct fake_folder *f = g_ptr_array_index(fk->folders, i);
		if (strcmp(f->path, path) == 0)
			return f;
	}
	return NULL;
}

static struct fake_folder *fake_add_folder(struct fake *fk, const char *path)
{
	struct fake_folder *f = g_new0(struct fake_folder, 1);

	f->path = g_strdup(path);
	f->uidvalidity = 100;
	f->uidnext = 1;
	f->msgs = g_ptr_array_new_with_free_func(fake_msg_free);
	g_ptr_array_add(fk->folders, f);
	return f;
}

static struct fake_msg *fake_add_msg(struct fake_folder *f, const char *subject,
                                     const char *flags)
{
	struct fake_msg *m = g_new0(struct fake_msg, 1);

	m->uid = f->uidnext++;
	m->remote_id = g_strdup_printf("uidl-%s", subject);
	m->flags = g_strdup(flags ? flags : "");
	m->subject = g_strdup(subject);
	m->body = g_strdup_printf("Subject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\nbody of %s\r\n",
	                          subject, subject, subject);
	g_ptr_array_add(f->msgs, m);
	return m;
}

static struct fake_msg *fake_msg(struct fake_folder *f, uint32_t uid, guint *index)
{
	for (guint i = 0; i < f->msgs->len; i++) {
		struct fake_msg *m = g_ptr_array_index(f->msgs, i);
		if (m->uid == uid) {
			if (index)
				*index = i;
			return m;
		}
	}
	return NULL;
}

static struct fake *fake_of(struct mailbox *mb)
{
	return (struct fake *)mb;
}

static enum mf_status fake_list_folders(struct mailbox *mb, GPtrArray **out)
{
	struct fake *fk = fake_of(mb);

	fake_call(fk, "LIST");
	*out = g_ptr_array_new();
	for (guint i = 0; i < fk->folders->len; i++) {
		struct fake_folder *f = g_ptr_array_index(fk->folders, i);
		struct mailbox_folder *e = g_new0(struct mailbox_folder, 1);
		e->path = g_strdup(f->path);
		e->wire_name = g_strdup(f->path);
		e->delim = '/';
		g_ptr_array_add(*out, e);
	}
	return MF_OK;
}

/* The uid a message is known by to the caller: the server's, or (without
 * server UIDs) the local one the caller gave its remote_id; 0 when new. */
static uint32_t fake_known_uid(struct fake *fk, const struct mailbox_sync_request *req,
                               const struct fake_msg *m, int reset)
{
	gpointer uid;

	if (reset)
		return 0;
	if (fk->ops.caps & MAILBOX_CAP_SERVER_UIDS)
		return m->uid <= req->last_uid ? m->uid : 0;
	if (req->known_remote_ids &&
	    g_hash_table_lookup_extended(req->known_remote_ids, m->remote_id, NULL, &uid))
		return GPOINTER_TO_UINT(uid);
	return 0;
}

static int fake_uid_cmp(gconstpointer a, gconstpointer b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static enum mf_status fake_sync_folder(struct mailbox *mb, const struct mailbox_sync_request *req,
                                       struct mailbox_sync_result *out)
{
	struct fake *fk = fake_of(mb);
	struct fake_folder *f = fake_folder(fk, req->wire_name);
	int server_uids = fk->ops.caps & MAILBOX_CAP_SERVER_UIDS;

	g_atomic_int_inc(&fk->syncs);
	fake_call(fk, "SYNC %s%s", req->wire_name, req->new_only ? " new" : "");
	if (fk->fail_sync)
		return MF_ERR_IO;
	if (!f)
		return MF_ERR_NOTFOUND;
	mailbox_sync_result_init(out);
	out->uidvalidity = f->uidvalidity;
	out->uidnext = f->uidnext;
	out->reset = server_uids && req->uidvalidity && req->uidvalidity != f->uidvalidity;
	out->present_valid = !req->new_only && !fk->vanished;
	out->highestmodseq = fk->modseq;
	if (fk->vanished) {
		g_array_append_vals(out->vanished, fk->vanished->data, fk->vanished->len);
		out->highestmodseq = 7;
		out->exists_valid = 1;
		out->exists = f->msgs->len;
	}
	if (!server_uids)
		g_assert(req->known_remote_ids);  /* sync must fill it for such a driver */
	for (guint i = 0; i < f->msgs->len; i++) {
		const struct fake_msg *m = g_ptr_array_index(f->msgs, i);
		uint32_t known = fake_known_uid(fk, req, m, out->reset);
		if (known) {
			if (req->new_only)
				continue;
			struct mailbox_flag_update u = { known, g_strdup(m->flags) };
			g_array_append_val(out->flag_updates, u);
			g_array_append_val(out->present, known);
			continue;
		}
		struct mailbox_message a = {
			.uid = server_uids ? m->uid : 0,
			.remote_id = server_uids ? NULL : g_strdup(m->remote_id),
			.flags = g_strdup(m->flags),
			.size = strlen(m->body),
			.internaldate = server_uids ? 1700000000 + (int64_t)m->uid : MAILBOX_NO_DATE,
		};
		a.headers = g_strndup(m->body, strstr(m->body, "\r\n\r\n") + 4 - m->body);
		a.headers_len = strlen(a.headers);
		g_array_append_val(out->added, a);
		if (req->on_added)
			req->on_added(req->on_added_ctx, &g_array_index(out->added, struct mailbox_message,
			                                                out->added->len - 1));
	}
	g_array_sort(out->present, fake_uid_cmp);
	return MF_OK;
}

static enum mf_status fake_write_body(const struct fake_msg *m, int fd, uint64_t *written)
{
	size_t len = strlen(m->body);

	if (pwrite(fd, m->body, len, 0) != (ssize_t)len)
		return MF_ERR_IO;
	if (written)
		*written = len;
	return MF_OK;
}

static enum mf_status fake_fetch_body(struct mailbox *mb, const char *wire_name,
                                      uint32_t uidvalidity, uint32_t uid, const char *remote_id,
                                      uint64_t size_hint, int fd, uint64_t *written)
{
	struct fake *fk = fake_of(mb);
	struct fake_folder *f = fake_folder(fk, wire_name);
	struct fake_msg *m = f ? fake_msg(f, uid, NULL) : NULL;

	fake_call(fk, "FETCH %s %u", wire_name, uid);
	return m ? fake_write_body(m, fd, written) : MF_ERR_NOTFOUND;
}

static enum mf_status fake_fetch_bodies(struct mailbox *mb, const char *wire_name,
                                        uint32_t uidvalidity, struct mailbox_body_request *reqs,
                                        size_t n)
{
	struct fake *fk = fake_of(mb);
	struct fake_folder *f = fake_folder(fk, wire_name);
	GString *uids = g_string_new(NULL);

	for (size_t i = 0; i < n; i++) {
		struct fake_msg *m = f ? fake_msg(f, reqs[i].uid, NULL) : NULL;
		g_string_append_printf(uids, "%s%u", i ? "," : "", reqs[i].uid);
		reqs[i].status = m ? fake_write_body(m, reqs[i].fd, &reqs[i].written) : MF_ERR_NOTFOUND;
	}
	fake_call(fk, "FETCHN %s %s", wire_name, uids->str);
	g_string_free(uids, TRUE);
	return MF_OK;
}

static enum mf_status fake_move(struct mailbox *mb, const char *src_wire, uint32_t uidvalidity,
                                uint32_t uid, uint64_t size, const char *message_id,
                                const char *dst_wire, uint32_t *dst_uid)
{
	struct fake *fk = fake_of(mb);
	struct fake_folder *f = fake_folder(fk, src_wire), *g = fake_folder(fk, dst_wire);
	struct fake_msg *m;
	guint i = 0;

	fake_call(fk, "MOVE %s %u %s", src_wire, uid, dst_wire);
	if (fk->fail_move || !f || !g || !(m = fake_msg(f, uid, &i)))
		return MF_ERR_IO;
	m = g_ptr_array_steal_index(f->msgs, i);
	m->uid = g->uidnext++;
	g_ptr_array_add(g->msgs, m);
	*dst_uid = m->uid;
	return MF_OK;
}

static enum mf_status fake_expunge(struct mailbox *mb, const char *wire_name,
                                   uint32_t uidvalidity, uint32_t uid)
{
	struct fake *fk = fake_of(mb);
	struct fake_folder *f = fake_folder(fk, wire_name);
	guint i = 0;

	fake_call(fk, "EXPUNGE %s %u", wire_name, uid);
	if (fk->fail_expunge || !f || !fake_msg(f, uid, &i))
		return MF_ERR_IO;
	g_ptr_array_remove_index(f->msgs, i);
	return MF_OK;
}

static enum mf_status fake_append(struct mailbox *mb, const char *wire_name, int fd,
                                  uint64_t offset, uint64_t size, int64_t internaldate,
                                  const char *message_id, uint64_t wire_size, uint32_t after_uid,
                                  uint32_t *uid_out)
{
	fake_call(fake_of(mb), "APPEND %s", wire_name);
	return MF_ERR_REFUSED;
}

static enum mf_status fake_set_flags(struct mailbox *mb, const char *wire_name,
                                     uint32_t uidvalidity, uint32_t uid, const char *flags)
{
	struct fake *fk = fake_of(mb);
	struct fake_folder *f = fake_folder(fk, wire_name);
	struct fake_msg *m = f ? fake_msg(f, uid, NULL) : NULL;

	fake_call(fk, "FLAGS %s %u %s", wire_name, uid, flags);
	if (!m)
		return MF_ERR_NOTFOUND;
	g_free(m->flags);
	m->flags = g_strdup(flags);
	return MF_OK;
}

/* Each folder's watch is in place at once, which the news says with what
 * it found (as the IMAP driver's does once its IDLE runs). */
static enum mf_status fake_watch(struct mailbox *mb, const char *const *wire_names, size_t n,
                                 mailbox_news_fn news, void *ctx)
{
	struct fake *fk = fake_of(mb);

	fk->news = news;
	fk->news_ctx = ctx;
	for (size_t i = 0; i < n; i++) {
		const struct fake_folder *f = fake_folder(fk, wire_names[i]);
		struct mailbox_seen seen = { 0 };
		if (f)
			seen = (struct mailbox_seen){ f->uidvalidity, f->uidnext, fk->modseq,
			                              f->msgs->len };
		news(ctx, wire_names[i], MAILBOX_NEWS_CHANGED, f ? &seen : NULL);
	}
	if (n)
		g_atomic_int_inc(&fk->watches);
	return MF_OK;
}

static void fake_destroy(struct mailbox *mb)
{
	struct fake *fk = fake_of(mb);

	g_ptr_array_free(fk->folders, TRUE);
	g_string_free(fk->calls, TRUE);
	if (fk->vanished)
		g_array_free(fk->vanished, TRUE);
	g_free(fk);
}

static struct fake *fake_new(unsigned caps)
{
	struct fake *fk = g_new0(struct fake, 1);

	fk->ops = (struct mailbox_ops){
		.caps = caps,
		.list_folders = fake_list_folders,
		.sync_folder = fake_sync_folder,
		.fetch_body = fake_fetch_body,
		.fetch_bodies = fake_fetch_bodies,
		.append = fake_append,
		.move = fake_move,
		.expunge = fake_expunge,
		.set_flags = fake_set_flags,
		.destroy = fake_destroy,
	};
	fk->base.ops = &fk->ops;
	fk->folders = g_ptr_array_new_with_free_func(fake_folder_free);
	fk->calls = g_string_new(NULL);
	return fk;
}

/* ---------------------------------------------------------------- fixture */

struct fixture {
	char base[64];
	struct mf_config cfg;
	struct store *st;
	struct fake *fk;
	struct sync_ctx *s;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(path);
}

static struct fixture *fixture_new(unsigned caps)
{
	struct fixture *fx = g_new0(struct fixture, 1);
	char *dir, *err = NULL;

	strcpy(fx->base, "/tmp/test_sync.XXXXXX");
	assert_non_null(mkdtemp(fx->base));
	dir = g_build_filename(fx->base, "cache", NULL);
	fx->st = store_open(dir, UINT64_C(1) << 30, &err);
	g_free(dir);
	assert_null(err);
	fx->cfg.refresh = 30;
	fx->cfg.timeout = 10;
	fx->cfg.connections = 4;
	fx->fk = fake_new(caps);
	struct fake_folder *inbox = fake_add_folder(fx->fk, "INBOX");
	fake_add_folder(fx->fk, "Archive");
	fake_add_folder(fx->fk, "Trash");
	for (int i = 1; i <= 20; i++) {
		char subject[16];
		snprintf(subject, sizeof subject, "m%02d", i);
		fake_add_msg(inbox, subject, i == 2 ? "\\Seen" : "");
	}
	return fx;
}

/* sync_new after the test set cfg: sync reads it as it goes. */
static struct sync_ctx *fixture_sync(struct fixture *fx)
{
	if (!fx->s) {
		fx->s = sync_new(&fx->cfg, fx->st, &fx->fk->base);
		assert_int_equal(sync_folders(fx->s), MF_OK);
		g_string_truncate(fx->fk->calls, 0);
	}
	return fx->s;
}

static int setup(void **state)
{
	*state = fixture_new(MAILBOX_CAP_SERVER_UIDS);
	return 0;
}

static int setup_no_uids(void **state)
{
	*state = fixture_new(0);
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	sync_free(fx->s);
	fx->fk->base.ops->destroy(&fx->fk->base);
	store_close(fx->st);
	nftw(fx->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	g_free(fx->cfg.trash);
	g_free(fx);
	return 0;
}

static int64_t folder_id(struct fixture *fx, const char *path)
{
	struct store_folder f;
	int64_t id;

	assert_int_equal(store_folder_by_path(fx->st, path, &f), MF_OK);
	id = f.id;
	store_folder_clear(&f);
	return id;
}

/* The calls the driver got since the last look, then forgets them. */
static char *calls(struct fixture *fx)
{
	char *c = g_strdup(fx->fk->calls->str);

	g_string_truncate(fx->fk->calls, 0);
	return c;
}

static void forget_calls(struct fixture *fx)
{
	g_string_truncate(fx->fk->calls, 0);
}

static void assert_calls(struct fixture *fx, const char *want)
{
	char *got = calls(fx);

	if (strcmp(got, want) != 0)
		print_error("driver calls:\n%s---- wanted:\n%s----\n", got, want);
	assert_string_equal(got, want);
	g_free(got);
}

static int collect_uid_flags(void *ctx, const struct store_message *m)
{
	g_string_append_printf(ctx, "%s%u:%s", ((GString *)ctx)->len ? " " : "", m->uid,
	                       m->flags[0] ? m->flags : "-");
	return 0;
}

/* "uid:flags ..." of the folder's stored messages, in name order. */
static char *stored(struct fixture *fx, const char *path)
{
	GString *g = g_string_new(NULL);

	assert_int_equal(store_messages_list(fx->st, folder_id(fx, path), collect_uid_flags, g),
	                 MF_OK);
	return g_string_free(g, FALSE);
}

static void assert_stored(struct fixture *fx, const char *path, const char *want)
{
	char *got = stored(fx, path);

	assert_string_equal(got, want);
	g_free(got);
}

static void check_folder(struct fixture *fx, const char *path, int force, int want_changed)
{
	int changed = -1;

	sync_settle_all(fixture_sync(fx));
	assert_int_equal(sync_folder_if_stale(fx->s, folder_id(fx, path), force, &changed), MF_OK);
	assert_int_equal(changed, want_changed);
}

/* ---------------------------------------------------------------- freshness */

static void test_stale_and_fresh(void **state)
{
	struct fixture *fx = *state;
	int64_t inbox;

	fixture_sync(fx);
	inbox = folder_id(fx, "INBOX");
	check_folder(fx, "INBOX", 0, 1);
	assert_calls(fx, "SYNC INBOX\n");
	/* Fresh for refresh seconds: the cache answers. */
	check_folder(fx, "INBOX", 0, 0);
	assert_calls(fx, "");
	/* Forced (after a miss by name): asked again, nothing changed. */
	check_folder(fx, "INBOX", 1, 0);
	assert_calls(fx, "SYNC INBOX\n");
	/* Another folder has its own freshness. */
	check_folder(fx, "Archive", 0, 0);
	assert_calls(fx, "SYNC Archive\n");

	/* refresh=0: every look asks. */
	fx->cfg.refresh = 0;
	check_folder(fx, "INBOX", 0, 0);
	check_folder(fx, "INBOX", 0, 0);
	assert_calls(fx, "SYNC INBOX\nSYNC INBOX\n");

	/* A failure holds off the next try (the server is away), and the
	 * cache is served as it was. */
	fx->fk->fail_sync = 1;
	assert_int_equal(sync_folder_if_stale(fx->s, inbox, 0, NULL), MF_ERR_IO);
	assert_int_equal(sync_folder_if_stale(fx->s, inbox, 0, NULL), MF_OK);
	assert_calls(fx, "SYNC INBOX\n");
	struct store_message m;
	assert_int_equal(store_message_by_uid(fx->st, inbox, 20, &m), MF_OK);
	store_message_clear(&m);
}

static void test_folder_list_fresh_after_start(void **state)
{
	struct fixture *fx = *state;

	fixture_sync(fx);  /* sync_folders at mount */
	assert_int_equal(sync_folders_if_stale(fx->s), MF_OK);
	assert_calls(fx, "");
	fx->cfg.refresh = 0;
	assert_int_equal(sync_folders_if_stale(fx->s), MF_OK);
	assert_calls(fx, "LIST\n");
}

/* ---------------------------------------------------------------- re-checks */

static void test_recheck_new_vanished_changed(void **state)
{
	struct fixture *fx = *state;
	struct fake_folder *inbox = fake_folder(fx->fk, "INBOX");
	guint i = 0;

	/* Keep it short: five messages. */
	g_ptr_array_set_size(inbox->msgs, 5);
	check_folder(fx, "INBOX", 0, 1);
	assert_stored(fx, "INBOX", "1:- 2:\\Seen 3:- 4:- 5:-");

	/* Another client: a new message, one expunged, flags changed. */
	fake_add_msg(inbox, "m00", "\\Flagged");     /* uid 21, sorts first by name */
	assert_non_null(fake_msg(inbox, 3, &i));
	g_ptr_array_remove_index(inbox->msgs, i);
	g_free(fake_msg(inbox, 2, NULL)->flags);
	fake_msg(inbox, 2, NULL)->flags = g_strdup("");
	g_free(fake_msg(inbox, 5, NULL)->flags);
	fake_msg(inbox, 5, NULL)->flags = g_strdup("\\Answered \\Seen");
	check_folder(fx, "INBOX", 1, 1);
	assert_stored(fx, "INBOX", "21:\\Flagged 1:- 2:- 4:- 5:\\Answered \\Seen");

	/* Flags alone: not a change of the listing. */
	g_free(fake_msg(inbox, 1, NULL)->flags);
	fake_msg(inbox, 1, NULL)->flags = g_strdup("\\Seen");
	check_folder(fx, "INBOX", 1, 0);
	assert_stored(fx, "INBOX", "21:\\Flagged 1:\\Seen 2:- 4:- 5:\\Answered \\Seen");
}

static uint64_t modseq(struct fixture *fx, const char *path)
{
	struct store_folder f;
	uint64_t m;

	assert_int_equal(store_folder_by_id(fx->st, folder_id(fx, path), &f), MF_OK);
	m = f.highestmodseq;
	store_folder_clear(&f);
	return m;
}

/* QRESYNC: what the server names as vanished goes (ranges in any order,
 * overlapping, reaching past what the cache holds), nothing else. */
static void test_recheck_vanished_ranges(void **state)
{
	struct fixture *fx = *state;
	struct fake_folder *inbox = fake_folder(fx->fk, "INBOX");
	const struct mailbox_uid_range gone[] = { { 6, 6 }, { 2, 3 }, { 3, 3 }, { 9, 400 } };
	guint i = 0;

	g_ptr_array_set_size(inbox->msgs, 9);
	check_folder(fx, "INBOX", 0, 1);
	assert_stored(fx, "INBOX", "1:- 2:\\Seen 3:- 4:- 5:- 6:- 7:- 8:- 9:-");
	for (uint32_t uid = 2; uid <= 9; uid++) {
		if (uid == 4 || uid == 5 || uid == 7 || uid == 8)
			continue;
		assert_non_null(fake_msg(inbox, uid, &i));
		g_ptr_array_remove_index(inbox->msgs, i);
	}
	fx->fk->vanished = g_array_new(FALSE, FALSE, sizeof(struct mailbox_uid_range));
	g_array_append_vals(fx->fk->vanished, gone, G_N_ELEMENTS(gone));
	check_folder(fx, "INBOX", 1, 1);
	assert_stored(fx, "INBOX", "1:- 4:- 5:- 7:- 8:-");
	assert_int_equal(modseq(fx, "INBOX"), 7);

	/* A server that does not name all that went: the count says so, and
	 * the next check starts from no modseq (asks for every UID). */
	assert_non_null(fake_msg(inbox, 8, &i));
	g_ptr_array_remove_index(inbox->msgs, i);
	g_array_set_size(fx->fk->vanished, 0);
	check_folder(fx, "INBOX", 1, 0);
	assert_int_equal(modseq(fx, "INBOX"), 0);

}

static void test_uidvalidity_change(void **state)
{
	struct fixture *fx = *state;
	struct fake_folder *inbox = fake_folder(fx->fk, "INBOX");
	int64_t id;
	int fd = -1;
	uint64_t boff, blen;

	g_ptr_array_set_size(inbox->msgs, 3);
	check_folder(fx, "INBOX", 0, 1);
	id = folder_id(fx, "INBOX");
	assert_int_equal(sync_body_open(fx->s, id, 1, &fd, &boff, &blen, NULL), MF_OK);
	close(fd);

	/* The server renumbers the folder: every cached uid is void. */
	inbox->uidvalidity++;
	g_ptr_array_set_size(inbox->msgs, 0);
	inbox->uidnext = 50;
	fake_add_msg(inbox, "n1", "");
	fake_add_msg(inbox, "n2", "\\Seen");
	check_folder(fx, "INBOX", 1, 1);
	assert_stored(fx, "INBOX", "50:- 51:\\Seen");
	assert_int_equal(store_body_open(fx->st, id, 1, NULL, NULL), -1);
	forget_calls(fx);
	/* The next re-check is an ordinary one. */
	check_folder(fx, "INBOX", 1, 0);
	assert_calls(fx, "SYNC INBOX\n");
}

/* ---------------------------------------------------------------- local uids */

static int collect_remote(void *ctx, uint32_t uid, const char *remote_id)
{
	g_string_append_printf(ctx, "%s%u=%s", ((GString *)ctx)->len ? " " : "", uid, remote_id);
	return 0;
}

static void assert_remote_ids(struct fixture *fx, const char *want)
{
	GString *g = g_string_new(NULL);

	assert_int_equal(store_folder_remote_ids(fx->st, folder_id(fx, "INBOX"), collect_remote, g),
	                 MF_OK);
	assert_string_equal(g->str, want);
	g_string_free(g, TRUE);
}

static void test_local_uids_without_server_uids(void **state)
{
	struct fixture *fx = *state;
	struct fake_folder *inbox = fake_folder(fx->fk, "INBOX");
	guint i = 0;

	fx->cfg.names_uid = 1;  /* no stable number to name by: subject names */
	g_ptr_array_set_size(inbox->msgs, 3);
	check_folder(fx, "INBOX", 0, 1);
	assert_remote_ids(fx, "1=uidl-m01 2=uidl-m02 3=uidl-m03");
	struct store_message m;
	assert_int_equal(store_message_by_uid(fx->st, folder_id(fx, "INBOX"), 1, &m), MF_OK);
	assert_non_null(strstr(m.name, "_m01_"));  /* a subject name, not 1.eml */
	store_message_clear(&m);

	/* One gone, two new (one of them listed twice by a confused
	 * server): known ones keep their uid, new ones go above the
	 * highest stored, and one remote id gets one uid. */
	assert_non_null(fake_msg(inbox, 1, &i));
	g_ptr_array_remove_index(inbox->msgs, i);
	fake_add_msg(inbox, "m04", "");
	fake_add_msg(inbox, "m05", "");
	fake_add_msg(inbox, "m05", "");
	check_folder(fx, "INBOX", 1, 1);
	assert_remote_ids(fx, "2=uidl-m02 3=uidl-m03 4=uidl-m04 5=uidl-m05");
	assert_stored(fx, "INBOX", "2:\\Seen 3:- 4:- 5:-");

	/* The highest goes, a new one comes: it never takes a uid (and so
	 * an inode number) that meant another message. */
	for (i = inbox->msgs->len; i-- > 0;)
		if (strcmp(((struct fake_msg *)g_ptr_array_index(inbox->msgs, i))->remote_id,
		           "uidl-m05") == 0)
			g_ptr_array_remove_index(inbox->msgs, i);
	check_folder(fx, "INBOX", 1, 1);
	assert_remote_ids(fx, "2=uidl-m02 3=uidl-m03 4=uidl-m04");
	fake_add_msg(inbox, "m06", "");
	check_folder(fx, "INBOX", 1, 1);
	assert_remote_ids(fx, "2=uidl-m02 3=uidl-m03 4=uidl-m04 6=uidl-m06");
}

static void test_names_by_uid(void **state)
{
	struct fixture *fx = *state;
	struct store_message m;

	fx->cfg.names_uid = 1;
	g_ptr_array_set_size(fake_folder(fx->fk, "INBOX")->msgs, 2);
	check_folder(fx, "INBOX", 0, 1);
	assert_int_equal(store_message_by_uid(fx->st, folder_id(fx, "INBOX"), 2, &m), MF_OK);
	assert_string_equal(m.name, "2.eml");
	store_message_clear(&m);
}

static void test_hidden(void **state)
{
	struct fixture *fx = *state;

	fixture_sync(fx);
	assert_true(sync_hidden(fx->s, "\\Seen \\Deleted"));
	assert_false(sync_hidden(fx->s, "\\Seen"));
	fx->cfg.show_deleted = 1;
	assert_false(sync_hidden(fx->s, "\\Deleted"));
}

/* ---------------------------------------------------------------- read-ahead */

static void open_body(struct fixture *fx, uint32_t uid)
{
	int fd = -1;
	uint64_t boff, blen;

	assert_int_equal(sync_body_open(fx->s, folder_id(fx, "INBOX"), uid, &fd, &boff, &blen,
	                                NULL), MF_OK);
	assert_true(fd >= 0);
	close(fd);
}

static void test_read_ahead_picks(void **state)
{
	struct fixture *fx = *state;

	check_folder(fx, "INBOX", 0, 1);
	forget_calls(fx);
	/* The first two reads in order fetch one each; the third reads
	 * ahead: 8 at once, then 16 from where the reader gets. */
	open_body(fx, 1);
	open_body(fx, 2);
	open_body(fx, 3);
	assert_calls(fx, "FETCH INBOX 1\nFETCH INBOX 2\nFETCHN INBOX 3,4,5,6,7,8,9,10\n");
	for (uint32_t uid = 4; uid <= 10; uid++)
		open_body(fx, uid);
	assert_calls(fx, "");
	open_body(fx, 11);
	assert_calls(fx, "FETCHN INBOX 11,12,13,14,15,16,17,18,19,20\n");
}

static void test_read_ahead_not_for_jumps(void **state)
{
	struct fixture *fx = *state;

	check_folder(fx, "INBOX", 0, 1);
	forget_calls(fx);
	open_body(fx, 1);
	open_body(fx, 2);
	open_body(fx, 9);   /* a jump: not sequential */
	open_body(fx, 4);
	assert_calls(fx, "FETCH INBOX 1\nFETCH INBOX 2\nFETCH INBOX 9\nFETCH INBOX 4\n");
}

static void count_changed(void *ctx, const char *folder_path)
{
	(void)folder_path;
	g_atomic_int_inc((gint *)ctx);
}

/* Waits (10 s at most) for *n to reach want. */
static void wait_count(gint *n, gint want)
{
	for (int i = 0; i < 1000 && g_atomic_int_get(n) < want; i++)
		g_usleep(10 * 1000);
	assert_true(g_atomic_int_get(n) >= want);
}

/* The watch of INBOX is in place, then INBOX is listed: the listing asked
 * the server after that news, so the news costs no check of its own (it
 * cost a second EXAMINE, on the connection the listing had left warm for
 * the first open). News after the listing is still brought in. */
static void test_news_older_than_a_listing_costs_no_check(void **state)
{
	struct fixture *fx = *state;
	struct sync_ctx *s;
	gint changed = 0, listed;
	int64_t inbox;

	fx->cfg.watch = 1;
	fx->fk->ops.watch = fake_watch;
	s = fixture_sync(fx);
	inbox = folder_id(fx, "INBOX");
	sync_watch_start(s, count_changed, &changed);
	wait_count(&fx->fk->watches, 1);
	assert_int_equal(sync_folder_if_stale(s, inbox, 1, NULL), MF_OK);
	listed = g_atomic_int_get(&fx->fk->syncs);
	/* The news is applied within a second of coming (SYNC_WATCH_SETTLE_MAX_US):
	 * a check of it would have come by then. */
	g_usleep(1500 * 1000);
	assert_int_equal(g_atomic_int_get(&fx->fk->syncs), listed);
	assert_int_equal(g_atomic_int_get(&changed), 0);

	fake_add_msg(fake_folder(fx->fk, "INBOX"), "m21", "");
	fx->fk->news(fx->fk->news_ctx, "INBOX", MAILBOX_NEWS_ADDED, NULL);
	wait_count(&changed, 1);
	assert_int_equal(g_atomic_int_get(&fx->fk->syncs), listed + 1);
	sync_watch_stop(s);
	assert_non_null(strstr(fx->fk->calls->str, "SYNC INBOX new"));
}

/* Waits (10 s at most) for a line holding what in the log file at path. */
static int wait_log(const char *path, const char *what)
{
	for (int i = 0; i < 1000; i++) {
		char *text = NULL;
		int found = g_file_get_contents(path, &text, NULL, NULL) && strstr(text, what);
		g_free(text);
		if (found)
			return 1;
		g_usleep(10 * 1000);
	}
	return 0;
}

/* A folder is listed, then its watch is put in place (a folder that came
 * into use is watched a review later; INBOX's watch, through a far link,
 * comes after its first listing began): when the watch found the folder
 * the cache holds, its news costs no check; when it found another, the
 * folder is checked. */
static void test_watch_finding_what_the_cache_holds_costs_no_check(void **state)
{
	struct fixture *fx = *state;
	struct fake_folder *f = fake_folder(fx->fk, "INBOX");
	struct mailbox_seen seen;
	struct sync_ctx *s;
	char *log = g_build_filename(fx->base, "log", NULL), *text = NULL;
	gint changed = 0, listed;
	int64_t inbox;

	assert_int_equal(log_setup(log, 1), 0);
	fx->cfg.watch = 1;
	fx->fk->modseq = 5;
	fx->fk->ops.watch = fake_watch;
	s = fixture_sync(fx);
	inbox = folder_id(fx, "INBOX");
	assert_int_equal(sync_folder_if_stale(s, inbox, 1, NULL), MF_OK);
	listed = g_atomic_int_get(&fx->fk->syncs);
	sync_watch_start(s, count_changed, &changed);
	wait_count(&fx->fk->watches, 1);
	if (!wait_log(log, "watch: INBOX in step (as the watch found it)")) {
		g_file_get_contents(log, &text, NULL, NULL);
		fail_msg("no in-step line in the log:\n%s", text ? text : "");
	}
	assert_int_equal(g_atomic_int_get(&fx->fk->syncs), listed);
	assert_int_equal(g_atomic_int_get(&changed), 0);

	/* Put in place again, finding one message more than the cache holds. */
	seen = (struct mailbox_seen){ f->uidvalidity, f->uidnext + 1, 5, f->msgs->len + 1 };
	fx->fk->news(fx->fk->news_ctx, "INBOX", MAILBOX_NEWS_CHANGED, &seen);
	wait_count(&changed, 1);
	assert_int_equal(g_atomic_int_get(&fx->fk->syncs), listed + 1);
	sync_watch_stop(s);
	log_setup("/dev/stderr", 0);  /* the log file goes with the fixture */
	g_free(log);
}

static void test_read_ahead_not_with_mark_seen(void **state)
{
	struct fixture *fx = *state;

	fx->cfg.mark_seen = 1;  /* read-ahead would mark unread mail read */
	check_folder(fx, "INBOX", 0, 1);
	forget_calls(fx);
	for (uint32_t uid = 1; uid <= 4; uid++)
		open_body(fx, uid);
	assert_calls(fx, "FETCH INBOX 1\nFETCH INBOX 2\nFETCH INBOX 3\nFETCH INBOX 4\n");
}

/* ---------------------------------------------------------------- cached bodies ahead */

struct pushes {
	GMutex lock;
	GCond cond;
	struct store *st;
	int64_t folder;
	GString *uids;       /* "3 4 5": the uids pushed, in the order they came */
	int n;
	int bad;             /* a body that is not the cache's, or pushed twice */
};

static void pushes_arrived(void *ctx, uint64_t ino_base, uint32_t uid, void *body, size_t len)
{
	struct pushes *p = ctx;
	uint64_t off = 0, clen = 0;
	int fd = store_body_open(p->st, p->folder, uid, &off, &clen);
	char *cached = g_malloc(len + 1);
	int same = fd >= 0 && clen == len && pread(fd, cached, len, (off_t)off) == (ssize_t)len &&
	           memcmp(cached, body, len) == 0;

	(void)ino_base;
	if (fd >= 0)
		close(fd);
	g_free(cached);
	g_free(body);
	g_mutex_lock(&p->lock);
	if (!same)
		p->bad = 1;
	g_string_append_printf(p->uids, "%s%u", p->n ? " " : "", uid);
	p->n++;
	g_cond_broadcast(&p->cond);
	g_mutex_unlock(&p->lock);
}

static int pushes_held(void *ctx, uint64_t ino_base, uint32_t uid)
{
	(void)ctx;
	(void)ino_base;
	return uid == 7;  /* the listener has that one already */
}

/* Waits (10 s at most) for n pushes; the uids pushed so far. */
static char *pushes_wait(struct pushes *p, int n)
{
	gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
	char *got;

	g_mutex_lock(&p->lock);
	while (p->n < n && g_cond_wait_until(&p->cond, &p->lock, until))
		;
	got = g_strdup(p->uids->str);
	g_mutex_unlock(&p->lock);
	return got;
}

/* Every body of INBOX cached, fetched in reverse: no hit, no read-ahead.
 * The listener is static: a failed assertion leaves the test at once,
 * and the thread must not call into a stack that is gone. */
static struct pushes *pushes_start(struct fixture *fx, int with_held)
{
	static struct pushes p;

	for (uint32_t uid = 20; uid >= 1; uid--)
		open_body(fx, uid);
	assert_int_equal(fx->fk->calls->len > 0, 1);
	forget_calls(fx);
	if (p.uids)
		g_string_free(p.uids, TRUE);
	memset(&p, 0, sizeof p);
	p.uids = g_string_new(NULL);
	p.st = fx->st;
	p.folder = folder_id(fx, "INBOX");
	g_mutex_init(&p.lock);
	g_cond_init(&p.cond);
	sync_set_arrival(fx->s, 65535, pushes_arrived, with_held ? pushes_held : NULL, &p);
	return &p;
}

/* Opens the uids given, in that order (0 ends them), then waits for the
 * pushes they should bring: want, the uids in the order they came, each
 * body exactly the cache's; no driver call, all from the cache. */
static void pushes_expect(struct fixture *fx, struct pushes *p, const uint32_t *opens,
                          int n, const char *want)
{
	char *got;

	for (; *opens; opens++)
		open_body(fx, *opens);
	got = pushes_wait(p, n);
	assert_string_equal(got, want);
	assert_false(p->bad);
	assert_calls(fx, "");
	g_free(got);
	sync_set_arrival(fx->s, 0, NULL, NULL, NULL);
}

static void test_cached_bodies_go_ahead_of_a_reader(void **state)
{
	struct fixture *fx = *state;

	check_folder(fx, "INBOX", 0, 1);
	/* Two in order: every cached body after them goes to the listener,
	 * in order, but the one it holds (7). */
	pushes_expect(fx, pushes_start(fx, 1), (const uint32_t[]){ 1, 2, 0 }, 17,
	              "3 4 5 6 8 9 10 11 12 13 14 15 16 17 18 19 20");
}

static void test_cached_bodies_not_ahead_of_jumps(void **state)
{
	struct fixture *fx = *state;

	check_folder(fx, "INBOX", 0, 1);
	/* A reader that jumps (9, 4, 15) sends nothing ahead; from two in
	 * order (15, 16) on, what follows them goes. */
	pushes_expect(fx, pushes_start(fx, 0), (const uint32_t[]){ 9, 4, 15, 16, 0 }, 4,
	              "17 18 19 20");
}

/* ---------------------------------------------------------------- write ordering */

/* INBOX 1..3 and Archive 1..2, all listed. */
static void small_account(struct fixture *fx)
{
	struct fake_folder *archive = fake_folder(fx->fk, "Archive");

	g_ptr_array_set_size(fake_folder(fx->fk, "INBOX")->msgs, 3);
	fake_add_msg(archive, "a1", "");
	fake_add_msg(archive, "a2", "");
	check_folder(fx, "INBOX", 0, 1);
	check_folder(fx, "Archive", 0, 1);
	forget_calls(fx);
}

static void test_move_confirms_before_replacing(void **state)
{
	struct fixture *fx = *state;

	small_account(fx);
	/* mv INBOX/m01.eml Archive/a1.eml: the message it replaces goes
	 * only once the move is confirmed. */
	assert_int_equal(sync_move(fx->s, folder_id(fx, "INBOX"), 1, folder_id(fx, "Archive"),
	                           "a1.eml", 1), MF_OK);
	assert_calls(fx, "MOVE INBOX 1 Archive\nEXPUNGE Archive 1\nSYNC Archive new\n");
	assert_stored(fx, "INBOX", "2:\\Seen 3:-");
	/* The moved message (uid 3) under the name it was given, a1.eml,
	 * after a2's derived name (dates sort first). */
	assert_stored(fx, "Archive", "2:- 3:-");
	struct store_message m;
	assert_int_equal(store_message_by_uid(fx->st, folder_id(fx, "Archive"), 3, &m), MF_OK);
	assert_string_equal(m.name, "a1.eml");
	store_message_clear(&m);
}

static void test_failed_move_removes_nothing(void **state)
{
	struct fixture *fx = *state;

	small_account(fx);
	fx->fk->fail_move = 1;
	assert_int_not_equal(sync_move(fx->s, folder_id(fx, "INBOX"), 1, folder_id(fx, "Archive"),
	                               "a1.eml", 1), MF_OK);
	assert_calls(fx, "MOVE INBOX 1 Archive\n");
	assert_stored(fx, "INBOX", "1:- 2:\\Seen 3:-");
	assert_stored(fx, "Archive", "1:- 2:-");
}

static void test_remove_to_trash_moves_first(void **state)
{
	struct fixture *fx = *state;

	fx->cfg.trash = g_strdup("Trash");
	small_account(fx);
	check_folder(fx, "Trash", 0, 0);
	forget_calls(fx);
	assert_int_equal(sync_remove(fx->s, folder_id(fx, "INBOX"), 2), MF_OK);
	assert_calls(fx, "MOVE INBOX 2 Trash\nSYNC Trash new\n");
	assert_stored(fx, "INBOX", "1:- 3:-");
	assert_stored(fx, "Trash", "1:\\Seen");

	/* The trash refuses: the message stays, nothing is expunged. */
	fx->fk->fail_move = 1;
	assert_int_not_equal(sync_remove(fx->s, folder_id(fx, "INBOX"), 3), MF_OK);
	assert_calls(fx, "MOVE INBOX 3 Trash\n");
	assert_stored(fx, "INBOX", "1:- 3:-");

	/* In the trash itself, rm expunges. */
	fx->fk->fail_move = 0;
	assert_int_equal(sync_remove(fx->s, folder_id(fx, "Trash"), 1), MF_OK);
	assert_calls(fx, "EXPUNGE Trash 1\n");
	assert_stored(fx, "Trash", "");
}

static void test_missing_trash_removes_nothing(void **state)
{
	struct fixture *fx = *state;

	fx->cfg.trash = g_strdup("Bin");
	small_account(fx);
	assert_int_equal(sync_remove(fx->s, folder_id(fx, "INBOX"), 1), MF_ERR_IO);
	assert_calls(fx, "");
	assert_stored(fx, "INBOX", "1:- 2:\\Seen 3:-");
}

static void test_failed_expunge_keeps_the_message(void **state)
{
	struct fixture *fx = *state;

	small_account(fx);
	fx->fk->fail_expunge = 1;
	assert_int_not_equal(sync_remove(fx->s, folder_id(fx, "INBOX"), 1), MF_OK);
	assert_stored(fx, "INBOX", "1:- 2:\\Seen 3:-");
	/* Flags: the store changes only after the server said yes. */
	assert_int_equal(sync_set_flags(fx->s, folder_id(fx, "INBOX"), 3, " \\Flagged  \\Seen "), MF_OK);
	assert_stored(fx, "INBOX", "1:- 2:\\Seen 3:\\Flagged \\Seen");
	assert_int_equal(sync_set_flags(fx->s, folder_id(fx, "INBOX"), 9, "\\Seen"), MF_ERR_NOTFOUND);
	assert_calls(fx, "EXPUNGE INBOX 1\nFLAGS INBOX 3 \\Flagged \\Seen\nFLAGS INBOX 9 \\Seen\n");
}

static void test_read_only_driver_refuses_writes(void **state)
{
	struct fixture *fx = *state;

	fx->fk->ops.append = NULL;  /* as the POP3 driver */
	small_account(fx);
	assert_int_equal(sync_remove(fx->s, folder_id(fx, "INBOX"), 1), MF_ERR_READONLY);
	assert_int_equal(sync_move(fx->s, folder_id(fx, "INBOX"), 1, folder_id(fx, "Archive"), NULL, 0),
	                 MF_ERR_READONLY);
	assert_calls(fx, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stale_and_fresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_list_fresh_after_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recheck_new_vanished_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recheck_vanished_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uidvalidity_change, setup, teardown),
		cmocka_unit_test_setup_teardown(test_local_uids_without_server_uids, setup_no_uids,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_names_by_uid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hidden, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_ahead_picks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_ahead_not_for_jumps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_ahead_not_with_mark_seen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_move_confirms_before_replacing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_move_removes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_to_trash_moves_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_trash_removes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_expunge_keeps_the_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only_driver_refuses_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cached_bodies_go_ahead_of_a_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cached_bodies_not_ahead_of_jumps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_news_older_than_a_listing_costs_no_check, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_watch_finding_what_the_cache_holds_costs_no_check,
		                                setup, teardown),
	};

	mime_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}

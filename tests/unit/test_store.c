/* test_store.c — unit tests of the SQLite metadata cache and body cache.
 *
 * Each test runs in a fresh mkdtemp directory, removed afterwards. Must
 * not depend on anything outside that directory. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <sqlite3.h>

#include "mailbox.h"
#include "store.h"

struct fixture {
	char base[64];   /* the mkdtemp directory */
	char *dir;       /* the cache directory inside it */
	struct store *st;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *fx = g_new0(struct fixture, 1);
	char *err = NULL;

	strcpy(fx->base, "/tmp/test_store.XXXXXX");
	assert_non_null(mkdtemp(fx->base));
	fx->dir = g_build_filename(fx->base, "cache", NULL);
	fx->st = store_open(fx->dir, UINT64_C(1) << 30, &err);
	assert_null(err);
	assert_non_null(fx->st);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	store_close(fx->st);
	nftw(fx->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	g_free(fx->dir);
	g_free(fx);
	return 0;
}

/* ---- helpers ---- */

static int64_t make_folder(struct store *st, const char *path)
{
	struct store_folder_entry e = { .path = path, .wire_name = path, .delim = '/' };
	struct store_folder f;
	int64_t id;

	assert_int_equal(store_folders_replace(st, &e, 1), MF_OK);
	assert_int_equal(store_folder_by_path(st, path, &f), MF_OK);
	id = f.id;
	store_folder_clear(&f);
	return id;
}

static struct store_sync_message msg(uint32_t uid, const char *base, const char *flags)
{
	struct store_sync_message m = {
		.uid = uid, .flags = flags, .size = 1000 + uid, .internaldate = 1700000000 + uid,
		.base_name = base, .subject = "Hello", .from_raw = "Ann <ann@example.org>",
		.message_id = "id@example.org", .date_raw = "Mon, 1 Jan 2024 10:00:00 +0000",
	};
	return m;
}

static void sync_add(struct store *st, int64_t fid, const struct store_sync_message *added,
                     size_t n)
{
	struct store_sync s = {
		.folder_id = fid, .uidvalidity = 1, .uidnext = 100, .added = added,
		.n_added = n, .now = 1,
	};
	assert_int_equal(store_folder_apply_sync(st, &s), MF_OK);
}

static void sync_remove(struct store *st, int64_t fid, const uint32_t *uids, size_t n)
{
	struct store_sync s = {
		.folder_id = fid, .uidvalidity = 1, .uidnext = 100, .removed = uids,
		.n_removed = n, .now = 2,
	};
	assert_int_equal(store_folder_apply_sync(st, &s), MF_OK);
}

static char *name_of(struct store *st, int64_t fid, uint32_t uid)
{
	struct store_message m;
	char *name;

	assert_int_equal(store_message_by_uid(st, fid, uid, &m), MF_OK);
	name = g_strdup(m.name);
	store_message_clear(&m);
	return name;
}

static void assert_name(struct store *st, int64_t fid, uint32_t uid, const char *want)
{
	char *name = name_of(st, fid, uid);

	assert_string_equal(name, want);
	g_free(name);
}

static int collect_message_names(void *ctx, const struct store_message *m)
{
	g_ptr_array_add(ctx, g_strdup(m->name));
	return 0;
}

/* As a listing filters the store's rows (sync_hidden). */
static int collect_shown_names(void *ctx, const struct store_message *m)
{
	return mailbox_flags_deleted(m->flags) ? 0 : collect_message_names(ctx, m);
}

/* The listed names joined by ',' (g_free); \Deleted ones too when
 * show_deleted. */
static char *list_names(struct store *st, int64_t fid, int show_deleted)
{
	GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
	char *joined;

	assert_int_equal(store_messages_list(st, fid, show_deleted ? collect_message_names
	                                                          : collect_shown_names, a), MF_OK);
	g_ptr_array_add(a, NULL);
	joined = g_strjoinv(",", (char **)a->pdata);
	g_ptr_array_free(a, TRUE);
	return joined;
}

static void assert_list(struct store *st, int64_t fid, int show_deleted, const char *want)
{
	char *got = list_names(st, fid, show_deleted);

	assert_string_equal(got, want);
	g_free(got);
}

static int collect_folder_paths(void *ctx, const struct store_folder *f)
{
	g_ptr_array_add(ctx, g_strdup(f->path));
	return 0;
}

static void assert_children(struct store *st, const char *parent, const char *want)
{
	GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
	char *got;

	assert_int_equal(store_folder_children(st, parent, collect_folder_paths, a), MF_OK);
	g_ptr_array_add(a, NULL);
	got = g_strjoinv(",", (char **)a->pdata);
	assert_string_equal(got, want);
	g_free(got);
	g_ptr_array_free(a, TRUE);
}

/* Caches a body of len bytes (filled with c) for the message. */
static enum mf_status put_body(struct store *st, int64_t fid, uint32_t uid, size_t len, char c,
                               int *size_changed)
{
	char *tmp = NULL;
	char *data = g_malloc(len + 1);
	int fd = store_body_begin(st, &tmp);
	enum mf_status rc;

	assert_true(fd >= 0);
	assert_non_null(tmp);
	memset(data, c, len);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	rc = store_body_commit(st, fid, uid, tmp, size_changed);
	assert_int_equal(access(tmp, F_OK), -1); /* moved or removed, never left */
	g_free(tmp);
	g_free(data);
	return rc;
}

static char *body_file(struct fixture *fx, int64_t fid, uint32_t uid)
{
	return g_strdup_printf("%s/bodies/%" PRId64 "/%" PRIu32, fx->dir, fid, uid);
}

static int file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static int count_files(const char *dir)
{
	GDir *d = g_dir_open(dir, 0, NULL);
	int n = 0;

	if (!d)
		return 0;
	while (g_dir_read_name(d))
		n++;
	g_dir_close(d);
	return n;
}

static void sql_exec(const char *dir, const char *sql)
{
	char *path = g_build_filename(dir, "cache.sqlite", NULL);
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	g_free(path);
}

/* The store holds its database exclusively while open: a write behind
 * its back is made between a close and a reopen. */
static void fx_sql_exec(struct fixture *fx, const char *sql)
{
	char *err = NULL;

	store_close(fx->st);
	sql_exec(fx->dir, sql);
	fx->st = store_open(fx->dir, UINT64_C(1) << 30, &err);
	assert_null(err);
	assert_non_null(fx->st);
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- tests ---- */

static void test_open_creates_private_dir(void **state)
{
	struct fixture *fx = *state;
	char *dir = g_build_filename(fx->base, "a", "b", "cache", NULL);
	char *p, *err = NULL;
	struct store *st;
	struct stat sb;

	st = store_open(dir, 1000, &err);
	assert_non_null(st);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	p = g_build_filename(dir, "bodies", NULL);
	assert_int_equal(stat(p, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	g_free(p);
	p = g_build_filename(dir, "cache.sqlite", NULL);
	assert_true(file_exists(p));
	g_free(p);
	store_close(st);

	/* A looser existing directory is tightened; stale downloads and
	 * orphan body files are swept. */
	assert_int_equal(chmod(dir, 0755), 0);
	p = g_build_filename(dir, "tmp", "body.stale", NULL);
	assert_true(g_file_set_contents(p, "x", 1, NULL));
	char *orphan_dir = g_build_filename(dir, "bodies", "7", NULL);
	char *orphan = g_build_filename(orphan_dir, "3", NULL);
	assert_int_equal(g_mkdir_with_parents(orphan_dir, 0700), 0);
	assert_true(g_file_set_contents(orphan, "y", 1, NULL));
	st = store_open(dir, 1000, &err);
	assert_non_null(st);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_false(file_exists(p));
	assert_false(file_exists(orphan));
	assert_false(file_exists(orphan_dir));
	store_close(st);
	g_free(p);
	g_free(orphan);
	g_free(orphan_dir);

	/* A schema from a newer mailfs is refused with a message. */
	sql_exec(dir, "PRAGMA user_version = 99");
	st = store_open(dir, 1000, &err);
	assert_null(st);
	assert_non_null(err);
	assert_non_null(strstr(err, "99"));
	g_free(err);
	g_free(dir);
}

/* A version 1 cache (From and Date kept decoded, in columns of other
 * names) opens as version 2 with its rows intact. */
static void test_upgrade_from_version_1(void **state)
{
	struct fixture *fx = *state;
	char *dir = g_build_filename(fx->base, "v1", NULL);
	char *err = NULL;
	struct store_message m = { 0 };
	struct store_folder f = { 0 };
	struct store *st;

	assert_int_equal(g_mkdir_with_parents(dir, 0700), 0);
	sql_exec(dir,
	         "CREATE TABLE folders(id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE NOT NULL,"
	         " parent TEXT NOT NULL, wire_name TEXT, delim INTEGER NOT NULL DEFAULT 0,"
	         " noselect INTEGER NOT NULL DEFAULT 0, uidvalidity INTEGER NOT NULL DEFAULT 0,"
	         " uidnext INTEGER NOT NULL DEFAULT 0, highestmodseq INTEGER NOT NULL DEFAULT 0,"
	         " synced_at INTEGER NOT NULL DEFAULT 0, messages INTEGER NOT NULL DEFAULT 0);"
	         "CREATE INDEX folders_parent ON folders(parent, path);"
	         "CREATE TABLE messages(folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,"
	         " uid INTEGER NOT NULL, remote_id TEXT, base_name TEXT, user_name TEXT, name TEXT,"
	         " flags TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL DEFAULT 0,"
	         " size_known INTEGER NOT NULL DEFAULT 0, internaldate INTEGER NOT NULL DEFAULT 0,"
	         " subject TEXT, from_addr TEXT, message_id TEXT, date_header TEXT,"
	         " PRIMARY KEY(folder_id, uid)) WITHOUT ROWID;"
	         "CREATE UNIQUE INDEX messages_name ON messages(folder_id, name);"
	         "CREATE INDEX messages_remote_id ON messages(folder_id, remote_id)"
	         " WHERE remote_id IS NOT NULL;"
	         "CREATE TABLE bodies(folder_id INTEGER NOT NULL, uid INTEGER NOT NULL,"
	         " size INTEGER NOT NULL, last_used INTEGER NOT NULL, PRIMARY KEY(folder_id, uid),"
	         " FOREIGN KEY(folder_id, uid) REFERENCES messages(folder_id, uid) ON DELETE CASCADE"
	         ") WITHOUT ROWID;"
	         "CREATE INDEX bodies_lru ON bodies(last_used);"
	         "INSERT INTO folders(path, parent, uidvalidity, messages) VALUES('INBOX', '', 7, 1);"
	         "INSERT INTO messages(folder_id, uid, base_name, name, subject, from_addr, message_id,"
	         " date_header) VALUES(1, 3, 'b', 'b.eml', 'Hi', 'Ann <ann@example.org>', 'i@x',"
	         " 'Mon, 1 Jan 2024 10:00:00 +0000');"
	         "PRAGMA user_version = 1;");
	st = store_open(dir, 1000, &err);
	assert_null(err);
	assert_non_null(st);
	assert_int_equal(store_folder_by_path(st, "INBOX", &f), MF_OK);
	assert_int_equal(f.uidvalidity, 7);
	assert_int_equal(store_message_by_uid(st, f.id, 3, &m), MF_OK);
	store_folder_clear(&f);
	assert_string_equal(m.name, "b.eml");
	assert_string_equal(m.from_raw, "Ann <ann@example.org>");
	assert_string_equal(m.date_raw, "Mon, 1 Jan 2024 10:00:00 +0000");
	store_message_clear(&m);
	store_close(st);
	/* And once more: now it is version 2. */
	st = store_open(dir, 1000, &err);
	assert_non_null(st);
	store_close(st);
	g_free(dir);
}

static void test_folders_replace(void **state)
{
	struct fixture *fx = *state;
	struct store_folder_entry e1[] = {
		{ "INBOX", "INBOX", '.', 0 },
		{ "Archive/2023", "Archive.2023", '.', 0 },
		{ "Archive/2024", "Archive.2024", '.', 0 },
		{ "Work/Clients/Acme", "Work.Clients.Acme", '.', 0 },
		{ "Drafts", "Drafts", '.', 1 },
	};
	struct store_folder f;
	size_t n;

	assert_int_equal(store_folders_replace(fx->st, e1, G_N_ELEMENTS(e1)), MF_OK);
	assert_int_equal(store_folder_count(fx->st, &n), MF_OK);
	assert_int_equal(n, 8); /* + Archive, Work, Work/Clients */

	assert_int_equal(store_folder_by_path(fx->st, "Archive", &f), MF_OK);
	assert_int_equal(f.noselect, 1);
	assert_null(f.wire_name);
	store_folder_clear(&f);
	assert_int_equal(store_folder_by_path(fx->st, "Drafts", &f), MF_OK);
	assert_int_equal(f.noselect, 1);
	store_folder_clear(&f);
	assert_int_equal(store_folder_by_path(fx->st, "Archive/2023", &f), MF_OK);
	assert_string_equal(f.wire_name, "Archive.2023");
	assert_int_equal(f.delim, '.');
	assert_int_equal(f.noselect, 0);
	assert_int_equal(f.uidvalidity, 0);
	int64_t a2023 = f.id;
	store_folder_clear(&f);

	assert_children(fx->st, "", "Archive,Drafts,INBOX,Work");
	assert_children(fx->st, "Archive", "Archive/2023,Archive/2024");
	assert_children(fx->st, "Work", "Work/Clients");
	assert_children(fx->st, "Work/Clients", "Work/Clients/Acme");
	assert_children(fx->st, "INBOX", "");

	/* Sync state and messages, so the update below can show they are kept
	 * for known folders and dropped with deleted ones. */
	assert_int_equal(store_folder_by_path(fx->st, "INBOX", &f), MF_OK);
	int64_t inbox = f.id;
	store_folder_clear(&f);
	struct store_sync_message m = msg(1, "x", "");
	struct store_sync s = { .folder_id = inbox, .uidvalidity = 77, .uidnext = 2,
	                        .highestmodseq = 9, .added = &m, .n_added = 1, .now = 5 };
	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_OK);
	s.folder_id = a2023;
	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_OK);
	assert_int_equal(put_body(fx->st, a2023, 1, 10, 'a', NULL), MF_OK);
	char *gone_body = body_file(fx, a2023, 1);
	assert_true(file_exists(gone_body));

	struct store_folder_entry e2[] = {
		{ "Archive", "Archive", '.', 0 },
		{ "INBOX", "INBOX-renamed", '/', 0 },
	};
	assert_int_equal(store_folders_replace(fx->st, e2, G_N_ELEMENTS(e2)), MF_OK);
	assert_int_equal(store_folder_count(fx->st, &n), MF_OK);
	assert_int_equal(n, 2);
	assert_int_equal(store_folder_by_path(fx->st, "INBOX", &f), MF_OK);
	assert_int_equal(f.id, inbox);
	assert_string_equal(f.wire_name, "INBOX-renamed");
	assert_int_equal(f.delim, '/');
	assert_int_equal(f.uidvalidity, 77);
	assert_int_equal(f.highestmodseq, 9);
	assert_int_equal(f.synced_at, 5);
	assert_int_equal(f.message_count, 1);
	store_folder_clear(&f);
	assert_int_equal(store_folder_by_path(fx->st, "Archive", &f), MF_OK);
	assert_int_equal(f.noselect, 0);
	store_folder_clear(&f);
	assert_int_equal(store_folder_by_path(fx->st, "Archive/2023", &f), MF_ERR_NOTFOUND);
	assert_int_equal(store_folder_by_id(fx->st, a2023, &f), MF_ERR_NOTFOUND);
	struct store_message msgout;
	assert_int_equal(store_message_by_uid(fx->st, a2023, 1, &msgout), MF_ERR_NOTFOUND);
	assert_false(file_exists(gone_body));
	uint64_t bytes, count;
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(bytes, 0);
	assert_int_equal(count, 0);
	g_free(gone_body);

	/* An implied parent of a still-listed child turns noselect. */
	struct store_folder_entry e3[] = { { "INBOX/Sub", "INBOX/Sub", '/', 0 } };
	assert_int_equal(store_folders_replace(fx->st, e3, 1), MF_OK);
	assert_int_equal(store_folder_by_path(fx->st, "INBOX", &f), MF_OK);
	assert_int_equal(f.noselect, 1);
	assert_int_equal(f.id, inbox);
	store_folder_clear(&f);

	struct store_folder_entry bad[] = { { "", "", '/', 0 } };
	assert_int_equal(store_folders_replace(fx->st, bad, 1), MF_ERR_INVAL);
	bad[0].path = "a//b";
	assert_int_equal(store_folders_replace(fx->st, bad, 1), MF_ERR_INVAL);
	bad[0].path = "/a";
	assert_int_equal(store_folders_replace(fx->st, bad, 1), MF_ERR_INVAL);
	assert_int_equal(store_folder_count(fx->st, &n), MF_OK);
	assert_int_equal(n, 2);
}

static int stop_after_one(void *ctx, const struct store_folder *f)
{
	(void)f;
	(*(int *)ctx)++;
	return 1;
}

static void test_children_stop(void **state)
{
	struct fixture *fx = *state;
	struct store_folder_entry e[] = { { "a", "a", '/', 0 }, { "b", "b", '/', 0 } };
	int calls = 0;

	assert_int_equal(store_folders_replace(fx->st, e, 2), MF_OK);
	assert_int_equal(store_folder_children(fx->st, "", stop_after_one, &calls), MF_OK);
	assert_int_equal(calls, 1);
}

static void test_apply_sync(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = {
		msg(1, "one", "\\Seen"), msg(2, "two", ""), msg(3, "three", "\\Answered"),
	};
	struct store_sync s = {
		.folder_id = fid, .uidvalidity = 0xFFFFFFF0u, .uidnext = 4,
		.highestmodseq = (UINT64_C(1) << 40) + 5, .added = added, .n_added = 3,
		.now = 1000,
	};
	struct store_folder f;
	struct store_message m;
	uint32_t *uids;
	size_t n;

	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_OK);
	assert_int_equal(store_folder_by_id(fx->st, fid, &f), MF_OK);
	assert_int_equal(f.uidvalidity, 0xFFFFFFF0u);
	assert_int_equal(f.uidnext, 4);
	assert_true(f.highestmodseq == (UINT64_C(1) << 40) + 5);
	assert_int_equal(f.synced_at, 1000);
	assert_int_equal(f.message_count, 3);
	store_folder_clear(&f);

	assert_int_equal(store_folder_uids(fx->st, fid, &uids, &n), MF_OK);
	assert_int_equal(n, 3);
	assert_int_equal(uids[0], 1);
	assert_int_equal(uids[2], 3);
	g_free(uids);

	assert_int_equal(store_message_by_uid(fx->st, fid, 2, &m), MF_OK);
	assert_int_equal(m.folder_id, fid);
	assert_int_equal(m.uid, 2);
	assert_null(m.remote_id);
	assert_string_equal(m.name, "two.eml");
	assert_string_equal(m.flags, "");
	assert_int_equal(m.size, 1002);
	assert_int_equal(m.size_known, 0);
	assert_int_equal(m.internaldate, 1700000002);
	assert_string_equal(m.subject, "Hello");
	assert_string_equal(m.from_raw, "Ann <ann@example.org>");
	assert_string_equal(m.message_id, "id@example.org");
	assert_string_equal(m.date_raw, "Mon, 1 Jan 2024 10:00:00 +0000");
	assert_int_equal(m.body_cached, 0);
	store_message_clear(&m);
	assert_null(m.name); /* clear zeroes */

	/* Flags change, one message goes with its cached body. */
	assert_int_equal(put_body(fx->st, fid, 3, 20, 'c', NULL), MF_OK);
	char *body3 = body_file(fx, fid, 3);
	assert_true(file_exists(body3));
	struct store_sync_flags fl[] = { { 2, "\\Seen \\Flagged" }, { 99, "\\Seen" } };
	uint32_t removed[] = { 3, 42 };
	struct store_sync s2 = {
		.folder_id = fid, .uidvalidity = 0xFFFFFFF0u, .uidnext = 5, .highestmodseq = 7,
		.flag_updates = fl, .n_flag_updates = 2, .removed = removed, .n_removed = 2,
		.now = 2000,
	};
	assert_int_equal(store_folder_apply_sync(fx->st, &s2), MF_OK);
	assert_int_equal(store_message_by_uid(fx->st, fid, 2, &m), MF_OK);
	assert_string_equal(m.flags, "\\Seen \\Flagged");
	store_message_clear(&m);
	assert_int_equal(store_message_by_uid(fx->st, fid, 3, &m), MF_ERR_NOTFOUND);
	assert_false(file_exists(body3));
	assert_list(fx->st, fid, 1, "one.eml,two.eml");

	/* UIDVALIDITY changed: everything goes, bodies too. */
	assert_int_equal(put_body(fx->st, fid, 1, 20, 'a', NULL), MF_OK);
	char *body1 = body_file(fx, fid, 1);
	assert_true(file_exists(body1));
	struct store_sync_message fresh = msg(100, "fresh", "");
	struct store_sync s3 = {
		.folder_id = fid, .reset = 1, .uidvalidity = 12, .uidnext = 101,
		.added = &fresh, .n_added = 1, .now = 3000,
	};
	assert_int_equal(store_folder_apply_sync(fx->st, &s3), MF_OK);
	assert_int_equal(store_folder_uids(fx->st, fid, &uids, &n), MF_OK);
	assert_int_equal(n, 1);
	assert_int_equal(uids[0], 100);
	g_free(uids);
	assert_false(file_exists(body1));
	uint64_t bytes, count;
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(count, 0);
	assert_int_equal(store_folder_by_id(fx->st, fid, &f), MF_OK);
	assert_int_equal(f.uidvalidity, 12);
	assert_int_equal(f.message_count, 1);
	store_folder_clear(&f);

	/* touch, and errors for a folder that does not exist. */
	assert_int_equal(store_folder_touch(fx->st, fid, 4000), MF_OK);
	assert_int_equal(store_folder_by_id(fx->st, fid, &f), MF_OK);
	assert_int_equal(f.synced_at, 4000);
	assert_int_equal(f.uidvalidity, 12);
	store_folder_clear(&f);
	assert_int_equal(store_folder_touch(fx->st, fid + 100, 1), MF_ERR_NOTFOUND);
	s3.folder_id = fid + 100;
	assert_int_equal(store_folder_apply_sync(fx->st, &s3), MF_ERR_NOTFOUND);
	assert_int_equal(store_folder_uids(fx->st, fid + 100, &uids, &n), MF_ERR_NOTFOUND);
	g_free(body1);
	g_free(body3);
}

/* The lower UID keeps base.eml; names are recomputed on every sync that
 * adds or removes, so when uid 5 goes, uid 9 takes base.eml over. */
/* New mail (UIDs above the stored ones) is named in one pass against the
 * names already there, user-given ones included. */
static void test_names_of_appended_mail(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message first[] = { msg(5, "b", ""), msg(6, "c", "") };
	struct store_sync_message later[] = { msg(9, "b", ""), msg(10, "b", ""), msg(11, "c", "") };

	sync_add(fx->st, fid, first, G_N_ELEMENTS(first));
	assert_int_equal(store_message_set_user_name(fx->st, fid, 6, "b~2.eml"), MF_OK);
	assert_int_equal(store_message_set_user_name(fx->st, fid, 5, "b.eml"), MF_OK);
	sync_add(fx->st, fid, later, G_N_ELEMENTS(later));
	assert_name(fx->st, fid, 5, "b.eml");
	assert_name(fx->st, fid, 6, "b~2.eml");
	assert_name(fx->st, fid, 9, "b~3.eml");
	assert_name(fx->st, fid, 10, "b~4.eml");
	assert_name(fx->st, fid, 11, "c.eml");
	assert_int_equal(store_message_set_user_name(fx->st, fid, 11, "b.eml"), MF_ERR_EXISTS);

	/* The holder of b.eml goes: the lowest UID of base b takes it over. */
	assert_int_equal(store_message_remove(fx->st, fid, 5), MF_OK);
	assert_name(fx->st, fid, 9, "b.eml");
	assert_name(fx->st, fid, 10, "b~3.eml");
	/* A message whose name nobody else wants goes without a recount. */
	assert_int_equal(store_message_remove(fx->st, fid, 11), MF_OK);
	assert_name(fx->st, fid, 9, "b.eml");
	struct store_folder f = { 0 };
	assert_int_equal(store_folder_by_id(fx->st, fid, &f), MF_OK);
	assert_int_equal(f.message_count, 3);
	store_folder_clear(&f);
	uint32_t max = 0;
	assert_int_equal(store_folder_max_uid(fx->st, fid, &max), MF_OK);
	assert_int_equal(max, 10);
}

static void test_name_collisions(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = {
		msg(12, "b", ""), msg(5, "b", ""), msg(7, "c", ""), msg(9, "b", ""),
	};

	sync_add(fx->st, fid, added, G_N_ELEMENTS(added));
	assert_name(fx->st, fid, 5, "b.eml");
	assert_name(fx->st, fid, 9, "b~2.eml");
	assert_name(fx->st, fid, 12, "b~3.eml");
	assert_name(fx->st, fid, 7, "c.eml");
	assert_list(fx->st, fid, 1, "b.eml,b~2.eml,b~3.eml,c.eml");

	uint32_t gone = 5;
	sync_remove(fx->st, fid, &gone, 1);
	assert_name(fx->st, fid, 9, "b.eml");
	assert_name(fx->st, fid, 12, "b~2.eml");
	assert_list(fx->st, fid, 1, "b.eml,b~2.eml,c.eml");

	/* A lower UID arriving later (a message moved in) takes precedence. */
	struct store_sync_message low = msg(3, "b", "");
	sync_add(fx->st, fid, &low, 1);
	assert_list(fx->st, fid, 1, "b.eml,b~2.eml,b~3.eml,c.eml");
	assert_name(fx->st, fid, 3, "b.eml");
	assert_name(fx->st, fid, 12, "b~3.eml");

	/* A user-given name is kept and skipped by derived names; several
	 * names shift at once (checks the UNIQUE index never trips). */
	fx_sql_exec(fx, "UPDATE messages SET user_name = 'b~2.eml' WHERE uid = 7");
	/* Behind the store's back: a sync with a removal renames them all
	 * (one that only appends higher UIDs leaves stored names alone). */
	uint32_t unknown = 999;
	sync_remove(fx->st, fid, &unknown, 1);
	struct store_sync_message d = msg(20, "d", "");
	sync_add(fx->st, fid, &d, 1);
	assert_name(fx->st, fid, 3, "b.eml");
	assert_name(fx->st, fid, 7, "b~2.eml");
	assert_name(fx->st, fid, 9, "b~3.eml");
	assert_name(fx->st, fid, 12, "b~4.eml");
	assert_name(fx->st, fid, 20, "d.eml");

	/* The same base in another folder does not collide. */
	int64_t other = make_folder(fx->st, "Other");
	struct store_sync_message o = msg(1, "b", "");
	sync_add(fx->st, other, &o, 1);
	assert_name(fx->st, other, 1, "b.eml");
}

/* Whether the open's lookup of message uid ("m<uid>.eml") says it is
 * flagged \Deleted. */
static void assert_key_deleted(struct store *st, int64_t fid, uint32_t uid, int deleted)
{
	char name[32];
	struct store_message m;

	snprintf(name, sizeof name, "m%u.eml", uid);
	assert_int_equal(store_message_key_by_name(st, fid, name, &m), MF_OK);
	assert_int_equal(m.uid, uid);
	assert_non_null(m.flags);
	assert_int_equal(mailbox_flags_deleted(m.flags), deleted);
	store_message_clear(&m);
}

static void test_show_deleted(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = {
		msg(1, "m1", "\\Seen"),
		msg(2, "m2", "\\Deleted"),
		msg(3, "m3", "\\seen \\deleted"),
		msg(4, "m4", "\\DeletedX $NotDeleted"),
		msg(5, "m5", NULL),
		msg(6, "m6", "\\Flagged  \\DELETED "),
	};

	/* The one test of \Deleted: a listing, a first listing shown
	 * before it is stored, and a lookup all use it (sync_hidden). The
	 * store itself lists every message. */
	static const int deleted[] = { 0, 1, 1, 0, 0, 1 };
	for (size_t i = 0; i < G_N_ELEMENTS(added); i++)
		assert_int_equal(mailbox_flags_deleted(added[i].flags), deleted[i]);
	sync_add(fx->st, fid, added, G_N_ELEMENTS(added));
	assert_list(fx->st, fid, 0, "m1.eml,m4.eml,m5.eml");
	assert_list(fx->st, fid, 1, "m1.eml,m2.eml,m3.eml,m4.eml,m5.eml,m6.eml");
	/* An open's lookup (from indexes) sees what hides a message too,
	 * also once flags change. */
	for (size_t i = 0; i < G_N_ELEMENTS(added); i++)
		assert_key_deleted(fx->st, fid, i + 1, deleted[i]);
	assert_int_equal(store_message_set_flags(fx->st, fid, 1, "\\Seen \\Deleted"), MF_OK);
	assert_int_equal(store_message_set_flags(fx->st, fid, 2, "\\Seen"), MF_OK);
	assert_key_deleted(fx->st, fid, 1, 1);
	assert_key_deleted(fx->st, fid, 2, 0);

	struct store_folder f;
	assert_int_equal(store_folder_by_id(fx->st, fid, &f), MF_OK);
	assert_int_equal(f.message_count, 6); /* \Deleted ones included */
	store_folder_clear(&f);
}

static int64_t folder_id_of(struct store *st, const char *path)
{
	struct store_folder f;
	int64_t id;

	if (store_folder_by_path(st, path, &f) != MF_OK)
		return -1;
	id = f.id;
	store_folder_clear(&f);
	return id;
}

static void test_folder_rename(void **state)
{
	struct fixture *fx = *state;
	struct store_folder_entry e[] = {
		{ "Projects", "Projects", '/', 0 }, { "Projects/2024", "Projects/2024", '/', 0 },
		{ "Projects/2024/Q1", "Projects/2024/Q1", '/', 0 }, { "Projects_x", "Projects_x", '/', 0 },
		{ "Work", "Work", '/', 1 },
	};
	assert_int_equal(store_folders_replace(fx->st, e, G_N_ELEMENTS(e)), MF_OK);
	int64_t q1 = folder_id_of(fx->st, "Projects/2024/Q1"), top = folder_id_of(fx->st, "Projects");
	int64_t other = folder_id_of(fx->st, "Projects_x");
	struct store_sync_message m = msg(7, "seven", "");
	sync_add(fx->st, q1, &m, 1);
	assert_int_equal(store_message_set_user_name(fx->st, q1, 7, "hello.eml"), MF_OK);

	/* The folder and all below it move, with their ids and names given
	 * by hand; a folder that merely starts alike stays; whatever the
	 * cache held at the new path goes. */
	assert_int_equal(store_folder_rename(fx->st, "Projects", "Work"), MF_OK);
	assert_int_equal(folder_id_of(fx->st, "Work"), top);
	assert_int_equal(folder_id_of(fx->st, "Work/2024/Q1"), q1);
	assert_int_equal(folder_id_of(fx->st, "Projects"), -1);
	assert_int_equal(folder_id_of(fx->st, "Projects/2024"), -1);
	assert_int_equal(folder_id_of(fx->st, "Projects_x"), other);
	assert_name(fx->st, q1, 7, "hello.eml");
	GPtrArray *kids = g_ptr_array_new_with_free_func(g_free);
	assert_int_equal(store_folder_children(fx->st, "Work/2024", collect_folder_paths, kids), MF_OK);
	assert_int_equal(kids->len, 1);
	assert_string_equal(g_ptr_array_index(kids, 0), "Work/2024/Q1");
	g_ptr_array_free(kids, TRUE);

	/* Down a level, and names with LIKE's wildcards. */
	assert_int_equal(store_folder_rename(fx->st, "Work/2024", "Work//x"), MF_ERR_INVAL);
	assert_int_equal(store_folder_rename(fx->st, "Projects_x", "A%/b_c"), MF_OK);
	assert_int_equal(folder_id_of(fx->st, "A%/b_c"), other);
}

static void test_one_store_per_directory(void **state)
{
	struct fixture *fx = *state;
	char *err = NULL;
	struct store *second = store_open(fx->dir, 1000, &err);

	assert_null(second);
	assert_non_null(err);
	assert_non_null(strstr(err, "in use by another mailfs"));
	char pid[32];
	snprintf(pid, sizeof pid, "(pid %ld)", (long)getpid());
	assert_non_null(strstr(err, pid));
	g_free(err);
}

/* The mount is the database's one user: it keeps it locked, so that a
 * transaction takes no file lock. */
static void test_database_held_exclusively(void **state)
{
	struct fixture *fx = *state;
	char *path = g_build_filename(fx->dir, "cache.sqlite", NULL);
	sqlite3 *db = NULL;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added = msg(10, "ten", "");
	struct store_message m;

	sync_add(fx->st, fid, &added, 1);
	assert_int_equal(store_message_by_name(fx->st, fid, "ten.eml", &m), MF_OK);
	store_message_clear(&m);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "SELECT count(*) FROM messages", NULL, NULL, NULL),
	                 SQLITE_BUSY);
	sqlite3_close(db);
	g_free(path);
}

/* ...and a program that has it open keeps the mount out, with a clear
 * one-line error (after SQLite's 5 s busy timeout). */
static void test_database_open_elsewhere_is_named(void **state)
{
	struct fixture *fx = *state;
	char *path = g_build_filename(fx->dir, "cache.sqlite", NULL);
	sqlite3 *db = NULL;
	char *err = NULL;
	struct store *st;

	store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "SELECT count(*) FROM messages", NULL, NULL, NULL),
	                 SQLITE_OK);  /* a WAL reader keeps a shared lock while open */
	st = store_open(fx->dir, 1000, &err);
	assert_null(st);
	assert_non_null(err);
	assert_non_null(strstr(err, "another program has it open"));
	assert_null(strchr(err, '\n'));
	g_free(err);
	sqlite3_close(db);
	fx->st = store_open(fx->dir, 1000, &err);
	assert_non_null(fx->st);
	g_free(path);
}

static void test_lookup(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = { msg(10, "ten", "\\Seen"), msg(11, "eleven", "") };
	struct store_message m;
	struct store_folder f;

	sync_add(fx->st, fid, added, 2);
	assert_int_equal(store_message_by_name(fx->st, fid, "ten.eml", &m), MF_OK);
	assert_int_equal(m.uid, 10);
	assert_string_equal(m.flags, "\\Seen");
	store_message_clear(&m);
	assert_int_equal(store_message_by_name(fx->st, fid, "ten", &m), MF_ERR_NOTFOUND);
	assert_int_equal(store_message_by_name(fx->st, fid + 1, "ten.eml", &m), MF_ERR_NOTFOUND);
	assert_int_equal(store_message_by_uid(fx->st, fid, 11, &m), MF_OK);
	assert_string_equal(m.name, "eleven.eml");
	store_message_clear(&m);
	assert_int_equal(store_message_by_uid(fx->st, fid, 12, &m), MF_ERR_NOTFOUND);

	assert_int_equal(store_folder_by_path(fx->st, "INBOX", &f), MF_OK);
	assert_int_equal(f.id, fid);
	assert_int_equal(f.message_count, 2);
	store_folder_clear(&f);
	assert_int_equal(store_folder_by_path(fx->st, "inbox", &f), MF_ERR_NOTFOUND);
	assert_int_equal(store_folder_by_id(fx->st, fid, &f), MF_OK);
	assert_string_equal(f.path, "INBOX");
	store_folder_clear(&f);
	assert_int_equal(store_messages_list(fx->st, fid + 1, collect_message_names, NULL),
	                 MF_ERR_NOTFOUND);
}

static int collect_remote(void *ctx, uint32_t uid, const char *remote_id)
{
	g_string_append_printf(ctx, "%s%" PRIu32 "=%s", ((GString *)ctx)->len ? "," : "", uid,
	                       remote_id);
	return 0;
}

static void assert_remote_ids(struct store *st, int64_t fid, const char *want)
{
	GString *g = g_string_new("");

	assert_int_equal(store_folder_remote_ids(st, fid, collect_remote, g), MF_OK);
	assert_string_equal(g->str, want);
	g_string_free(g, TRUE);
}

static void test_remote_ids(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[3];
	const char *ids[] = { "uidl-a", "uidl-b", "uidl-c" };

	/* The caller gives messages known by remote_id alone their uids
	 * (sync_local_uids); the store keeps the pair. */
	for (int i = 0; i < 3; i++) {
		added[i] = msg((uint32_t)i + 1, "pop", "");
		added[i].remote_id = ids[i];
	}
	sync_add(fx->st, fid, added, 3);
	assert_remote_ids(fx->st, fid, "1=uidl-a,2=uidl-b,3=uidl-c");
	/* Earlier in the list keeps the plain name. */
	assert_name(fx->st, fid, 1, "pop.eml");
	assert_name(fx->st, fid, 3, "pop~3.eml");

	uint32_t gone = 1;
	sync_remove(fx->st, fid, &gone, 1);
	struct store_sync_message e = msg(5, "e", "");
	e.remote_id = "uidl-e";
	sync_add(fx->st, fid, &e, 1);
	assert_remote_ids(fx->st, fid, "2=uidl-b,3=uidl-c,5=uidl-e");

	struct store_message m;
	assert_int_equal(store_message_by_uid(fx->st, fid, 5, &m), MF_OK);
	assert_string_equal(m.remote_id, "uidl-e");
	store_message_clear(&m);

	/* A message without a uid is refused, and nothing of its sync is kept. */
	struct store_sync_message x = msg(0, "x", "");
	x.remote_id = "uidl-x";
	struct store_sync s = { .folder_id = fid, .reset = 1, .added = &x, .n_added = 1 };
	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_ERR_INVAL);
	assert_remote_ids(fx->st, fid, "2=uidl-b,3=uidl-c,5=uidl-e");
	x.uid = 1;
	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_OK);
	assert_remote_ids(fx->st, fid, "1=uidl-x");
}

static void test_body_roundtrip(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = { msg(1, "one", ""), msg(2, "two", "") };
	struct store_message m;
	char buf[128];
	char *tmp = NULL;
	struct stat sb;
	int changed = -1, fd;

	added[0].size = 50;
	sync_add(fx->st, fid, added, 2);
	assert_int_equal(store_body_open(fx->st, fid, 1, NULL, NULL), -1);

	fd = store_body_begin(fx->st, &tmp);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_non_null(strstr(tmp, "/tmp/body."));
	assert_int_equal(write(fd, "From: a\r\n\r\nhello world, this is the body of one\r\n", 49), 49);
	close(fd);
	assert_int_equal(store_body_commit(fx->st, fid, 1, tmp, &changed), MF_OK);
	assert_int_equal(changed, -1); /* 50 announced, 49 real: shorter */
	assert_false(file_exists(tmp));
	g_free(tmp);

	assert_int_equal(store_message_by_uid(fx->st, fid, 1, &m), MF_OK);
	assert_int_equal(m.size, 49);
	assert_int_equal(m.size_known, 1);
	assert_int_equal(m.body_cached, 1);
	store_message_clear(&m);

	fd = store_body_open(fx->st, fid, 1, NULL, NULL);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof buf), 49);
	assert_memory_equal(buf, "From: a\r\n\r\nhello world", 22);
	close(fd);

	uint64_t bytes, count;
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(bytes, 49);
	assert_int_equal(count, 1);

	/* Same length again: no change reported. */
	assert_int_equal(put_body(fx->st, fid, 1, 49, 'z', &changed), MF_OK);
	assert_int_equal(changed, 0);
	/* A later sync re-adding the uid must not overwrite the real size. */
	sync_add(fx->st, fid, added, 1);
	assert_int_equal(store_message_by_uid(fx->st, fid, 1, &m), MF_OK);
	assert_int_equal(m.size, 49);
	assert_int_equal(m.body_cached, 1);
	store_message_clear(&m);

	/* A body file removed behind our back: the row is dropped. */
	char *path = body_file(fx, fid, 1);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(store_body_open(fx->st, fid, 1, NULL, NULL), -1);
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(count, 0);
	assert_int_equal(store_message_by_uid(fx->st, fid, 1, &m), MF_OK);
	assert_int_equal(m.body_cached, 0);
	store_message_clear(&m);
	g_free(path);

	/* Abort removes the download. */
	fd = store_body_begin(fx->st, &tmp);
	assert_true(fd >= 0);
	close(fd);
	store_body_abort(fx->st, tmp);
	assert_false(file_exists(tmp));
	g_free(tmp);
}

/* The store again, its bodies capped at cap bytes. */
static void reopen_capped(struct fixture *fx, uint64_t cap)
{
	char *err = NULL;

	store_close(fx->st);
	fx->st = store_open(fx->dir, cap, &err);
	assert_non_null(fx->st);
}

/* Writes len bytes of c into the writer's pack and commits them as uid's
 * body; returns where they went. */
static uint64_t pack_body(struct store *st, struct store_pack *p, int64_t fid, uint32_t uid,
                          size_t len, char c)
{
	struct store_body_item item = { .uid = uid, .len = len };
	char *data = g_malloc(len + 1);
	int fd = store_pack_place(p, len, &item.pack, &item.off);

	assert_true(fd >= 0);
	assert_true(item.pack > 0);
	assert_int_equal(item.off % 4096, 0);  /* on a block boundary */
	memset(data, c, len);
	assert_int_equal(pwrite(fd, data, len, (off_t)item.off), (ssize_t)len);
	assert_int_equal(store_body_commit_many(st, fid, &item, 1), MF_OK);
	assert_int_equal(item.status, MF_OK);
	g_free(data);
	return item.off;
}

/* The body's bytes through store_body_open: all c, len of them. */
static void assert_body(struct store *st, int64_t fid, uint32_t uid, size_t len, char c)
{
	uint64_t off = 99, got = 99;
	int fd = store_body_open(st, fid, uid, &off, &got);
	char *buf = g_malloc(len + 1);

	assert_true(fd >= 0);
	assert_int_equal(got, len);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(buf[i], c);
	close(fd);
	g_free(buf);
}

/* Bytes at off in path, read directly: a punched range reads zeros. */
static char pack_byte(const char *path, uint64_t off)
{
	char c = 'X';
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
	close(fd);
	return c;
}

/* A stream's bodies in a pack file: each from a block boundary, read back
 * by (fd, off, len); an evicted one's blocks punched out unless a reader
 * holds it; the pack unlinked with its last body once its writer is gone,
 * and swept at open when no row names it. */
static void test_pack_bodies(void **state)
{
	struct fixture *fx = *state;
	uint64_t bytes, count;
	struct stat sb;

	reopen_capped(fx, 20000);
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = {
		msg(1, "one", ""), msg(2, "two", ""), msg(3, "three", ""), msg(4, "four", ""),
		msg(5, "five", ""),
	};
	sync_add(fx->st, fid, added, 5);

	struct store_pack *p = store_pack_new(fx->st, fid);
	assert_int_equal(pack_body(fx->st, p, fid, 1, 5000, '1'), 0);
	assert_int_equal(pack_body(fx->st, p, fid, 2, 100, '2'), 8192);
	assert_int_equal(pack_body(fx->st, p, fid, 3, 4096, '3'), 12288);
	char *pack = g_strdup_printf("%s/bodies/%" PRId64 "/p1", fx->dir, fid);
	assert_true(file_exists(pack));
	assert_body(fx->st, fid, 1, 5000, '1');
	assert_body(fx->st, fid, 3, 4096, '3');
	assert_body(fx->st, fid, 2, 100, '2');  /* 1 is now the least recently used */
	struct store_message m;
	assert_int_equal(store_message_by_uid(fx->st, fid, 2, &m), MF_OK);
	assert_int_equal(m.size, 100);
	assert_int_equal(m.body_cached, 1);
	store_message_clear(&m);

	/* A reader holds 3 while 1 and 3 are evicted (9,196 + 17,000 bytes
	 * over 20,000): 1's blocks are punched out, 3's stay for its reader. */
	uint64_t off3, len3;
	int held = store_body_open(fx->st, fid, 3, &off3, &len3);
	assert_true(held >= 0);
	assert_body(fx->st, fid, 2, 100, '2');
	assert_int_equal(pack_body(fx->st, p, fid, 4, 17000, '4'), 16384);
	assert_int_equal(store_body_open(fx->st, fid, 1, NULL, NULL), -1);
	assert_int_equal(store_body_open(fx->st, fid, 3, NULL, NULL), -1);
	assert_int_equal(pack_byte(pack, 0), 0);
	assert_int_equal(pack_byte(pack, 4999), 0);
	char c = 0;
	assert_int_equal(pread(held, &c, 1, (off_t)off3 + 4095), 1);
	assert_int_equal(c, '3');
	close(held);
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(bytes, 17100);
	assert_int_equal(count, 2);

	/* The writer is gone: the pack stays while a body is in it, and goes
	 * with the last. */
	store_pack_free(p);
	assert_true(file_exists(pack));
	assert_int_equal(store_message_remove(fx->st, fid, 2), MF_OK);
	assert_true(file_exists(pack));
	assert_int_equal(pack_byte(pack, 8192), 0);
	assert_int_equal(store_message_remove(fx->st, fid, 4), MF_OK);
	assert_false(file_exists(pack));

	/* A second writer's pack has the next number; kept across a reopen
	 * while its rows name it, and a pack no row names is swept. */
	p = store_pack_new(fx->st, fid);
	assert_int_equal(pack_body(fx->st, p, fid, 5, 300, '5'), 0);
	store_pack_free(p);
	char *pack2 = g_strdup_printf("%s/bodies/%" PRId64 "/p2", fx->dir, fid);
	char *stray = g_strdup_printf("%s/bodies/%" PRId64 "/p77", fx->dir, fid);
	assert_true(file_exists(pack2));
	assert_true(g_file_set_contents(stray, "left by a crash", -1, NULL));
	reopen_capped(fx, 20000);
	assert_false(file_exists(stray));
	assert_body(fx->st, fid, 5, 300, '5');

	/* A pack cut short (a crash before its pages reached the disk): the
	 * body is not served, and its row goes. */
	assert_int_equal(truncate(pack2, 100), 0);
	assert_int_equal(store_body_open(fx->st, fid, 5, NULL, NULL), -1);
	assert_int_equal(store_message_by_uid(fx->st, fid, 5, &m), MF_OK);
	assert_int_equal(m.body_cached, 0);
	store_message_clear(&m);
	assert_int_equal(stat(pack2, &sb), 0);
	g_free(pack);
	g_free(pack2);
	g_free(stray);
}

static void test_body_commit_vanished(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message m1 = msg(1, "one", "");
	uint32_t gone = 1;
	char *tmp = NULL, *tmpdir;
	int changed = -1, fd;

	sync_add(fx->st, fid, &m1, 1);
	fd = store_body_begin(fx->st, &tmp);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "data", 4), 4);
	close(fd);
	sync_remove(fx->st, fid, &gone, 1); /* expunged while downloading */
	assert_int_equal(store_body_commit(fx->st, fid, 1, tmp, &changed), MF_ERR_NOTFOUND);
	assert_false(file_exists(tmp));
	char *path = body_file(fx, fid, 1);
	assert_false(file_exists(path));
	tmpdir = g_build_filename(fx->dir, "tmp", NULL);
	assert_int_equal(count_files(tmpdir), 0);
	uint64_t bytes, count;
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(count, 0);
	g_free(path);
	g_free(tmp);
	g_free(tmpdir);
}

static void test_lru_eviction(void **state)
{
	struct fixture *fx = *state;
	struct store_message m;

	reopen_capped(fx, 250);
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = {
		msg(1, "one", ""), msg(2, "two", ""), msg(3, "three", ""), msg(4, "four", ""),
	};
	sync_add(fx->st, fid, added, 4);

	assert_int_equal(put_body(fx->st, fid, 1, 100, '1', NULL), MF_OK);
	assert_int_equal(put_body(fx->st, fid, 2, 100, '2', NULL), MF_OK);
	int fd = store_body_open(fx->st, fid, 1, NULL, NULL); /* 1 is now more recent than 2 */
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(put_body(fx->st, fid, 3, 100, '3', NULL), MF_OK);

	for (uint32_t uid = 1; uid <= 3; uid++) {
		assert_int_equal(store_message_by_uid(fx->st, fid, uid, &m), MF_OK);
		assert_int_equal(m.body_cached, uid != 2);
		store_message_clear(&m);
		char *p = body_file(fx, fid, uid);
		assert_int_equal(file_exists(p), uid != 2);
		g_free(p);
	}
	uint64_t bytes, count;
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(bytes, 200);
	assert_int_equal(count, 2);

	/* One body over the cap alone stays; everything else goes. */
	assert_int_equal(put_body(fx->st, fid, 4, 300, '4', NULL), MF_OK);
	assert_int_equal(store_body_usage(fx->st, &bytes, &count), MF_OK);
	assert_int_equal(bytes, 300);
	assert_int_equal(count, 1);
	fd = store_body_open(fx->st, fid, 4, NULL, NULL);
	assert_true(fd >= 0);
	close(fd);
}

/* Opens are written to the LRU in batches: in the order of each body's
 * last open, and before the store closes. */
static void test_lru_touches_batched_in_order(void **state)
{
	struct fixture *fx = *state;

	reopen_capped(fx, 250);
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = { msg(1, "one", ""), msg(2, "two", ""), msg(3, "three", "") };
	sync_add(fx->st, fid, added, 3);
	assert_int_equal(put_body(fx->st, fid, 1, 100, '1', NULL), MF_OK);
	assert_int_equal(put_body(fx->st, fid, 2, 100, '2', NULL), MF_OK);
	const uint32_t opens[] = { 1, 2, 1 };  /* 1 last: the most recent */
	for (size_t i = 0; i < G_N_ELEMENTS(opens); i++) {
		int fd = store_body_open(fx->st, fid, opens[i], NULL, NULL);
		assert_true(fd >= 0);
		close(fd);
	}
	reopen_capped(fx, 250);
	assert_int_equal(put_body(fx->st, fid, 3, 100, '3', NULL), MF_OK);
	for (uint32_t uid = 1; uid <= 3; uid++) {
		char *p = body_file(fx, fid, uid);
		assert_int_equal(file_exists(p), uid != 2);
		g_free(p);
	}
}

/* store_body_used (an open that found its body in the kernel's page
 * cache) counts as an open, in its place among the opens, without the
 * store's lock: what it told comes before a later open's bump, and is
 * written before the next eviction and before the store closes. */
static void test_lru_uses_told_without_the_lock(void **state)
{
	struct fixture *fx = *state;

	reopen_capped(fx, 350);
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message added[] = { msg(1, "one", ""), msg(2, "two", ""),
	                                      msg(3, "three", ""), msg(4, "four", "") };
	sync_add(fx->st, fid, added, 4);
	assert_int_equal(put_body(fx->st, fid, 1, 100, '1', NULL), MF_OK);
	assert_int_equal(put_body(fx->st, fid, 2, 100, '2', NULL), MF_OK);
	assert_int_equal(put_body(fx->st, fid, 3, 100, '3', NULL), MF_OK);
	/* Oldest to newest: 2, then 3 (opened), then 1 (used last). */
	store_body_used(fx->st, fid, 2);
	int fd = store_body_open(fx->st, fid, 3, NULL, NULL);
	assert_true(fd >= 0);
	close(fd);
	store_body_used(fx->st, fid, 1);
	assert_int_equal(put_body(fx->st, fid, 4, 100, '4', NULL), MF_OK);
	for (uint32_t uid = 1; uid <= 4; uid++) {
		char *p = body_file(fx, fid, uid);
		assert_int_equal(file_exists(p), uid != 2);
		g_free(p);
	}
	/* Told, then the store closed: written all the same. 3 is now the
	 * oldest. */
	store_body_used(fx->st, fid, 3);
	store_body_used(fx->st, fid, 1);
	reopen_capped(fx, 350);
	struct store_sync_message five = msg(5, "five", "");
	sync_add(fx->st, fid, &five, 1);
	assert_int_equal(put_body(fx->st, fid, 5, 100, '5', NULL), MF_OK);
	for (uint32_t uid = 1; uid <= 5; uid++) {
		char *p = body_file(fx, fid, uid);
		assert_int_equal(file_exists(p), uid != 2 && uid != 4);
		g_free(p);
	}
}

static void test_persistence(void **state)
{
	struct fixture *fx = *state;
	char *err = NULL;
	struct store_folder_entry e[] = { { "INBOX", "INBOX", '/', 0 }, { "A/B", "A/B", '/', 0 } };
	struct store_folder f;
	struct store_message m;

	assert_int_equal(store_folders_replace(fx->st, e, 2), MF_OK);
	assert_int_equal(store_folder_by_path(fx->st, "A/B", &f), MF_OK);
	int64_t fid = f.id;
	store_folder_clear(&f);
	struct store_sync_message added[] = { msg(7, "seven", "\\Seen"), msg(8, "seven", "") };
	struct store_sync s = {
		.folder_id = fid, .uidvalidity = 0xFFFFFFFFu, .uidnext = 9,
		.highestmodseq = UINT64_C(1) << 50, .added = added, .n_added = 2, .now = 123,
	};
	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_OK);
	assert_int_equal(put_body(fx->st, fid, 8, 64, 'q', NULL), MF_OK);

	store_close(fx->st);
	fx->st = store_open(fx->dir, UINT64_C(1) << 30, &err);
	assert_non_null(fx->st);

	assert_int_equal(store_folder_by_path(fx->st, "A/B", &f), MF_OK);
	assert_int_equal(f.id, fid);
	assert_int_equal(f.uidvalidity, 0xFFFFFFFFu);
	assert_true(f.highestmodseq == UINT64_C(1) << 50);
	assert_int_equal(f.synced_at, 123);
	assert_int_equal(f.message_count, 2);
	store_folder_clear(&f);
	assert_int_equal(store_folder_by_path(fx->st, "A", &f), MF_OK);
	assert_int_equal(f.noselect, 1);
	store_folder_clear(&f);
	assert_int_equal(store_message_by_name(fx->st, fid, "seven~2.eml", &m), MF_OK);
	assert_int_equal(m.uid, 8);
	assert_int_equal(m.size, 64);
	assert_int_equal(m.size_known, 1);
	assert_int_equal(m.body_cached, 1);
	store_message_clear(&m);
	int fd = store_body_open(fx->st, fid, 8, NULL, NULL);
	assert_true(fd >= 0);
	close(fd);
	assert_list(fx->st, fid, 0, "seven.eml,seven~2.eml");
}

static int64_t changed_at(struct store *st, int64_t fid)
{
	struct store_folder f;
	int64_t t;

	assert_int_equal(store_folder_by_id(st, fid, &f), MF_OK);
	t = f.changed_at;
	store_folder_clear(&f);
	return t;
}

static void note_path(void *ctx, const char *path)
{
	g_string_append_printf(ctx, "%s;", path);
}

/* One sync of folder fid: at most one message added (uid, or 0 none), one
 * flag update of uid 1, one removal (uid, or 0); its changed_at after. */
static int64_t sync_once_as(struct store *st, int64_t fid, uint32_t add, int flags, uint32_t rm,
                            int first)
{
	struct store_sync_message added[] = { msg(add, "m", "") };
	struct store_sync_flags seen[] = { { 1, "\\Seen" } };
	struct store_sync s = {
		.folder_id = fid, .uidvalidity = 5, .uidnext = 9, .now = 1,
		.added = added, .n_added = add != 0, .flag_updates = seen, .n_flag_updates = flags != 0,
		.removed = &rm, .n_removed = rm != 0, .first = first,
	};

	assert_int_equal(store_folder_apply_sync(st, &s), MF_OK);
	return changed_at(st, fid);
}

static int64_t sync_once(struct store *st, int64_t fid, uint32_t add, int flags, uint32_t rm)
{
	return sync_once_as(st, fid, add, flags, rm, 0);
}

/* A folder's time: set when the folder is first seen, kept by its first
 * listing (what tar saw before it read the folder is what it sees
 * after), moved forward (strictly) by every change of its contents, not
 * by flags; noted for the kernel; kept across a reopen. */
static void test_folder_changed_at(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	GString *noted = g_string_new(NULL);
	int64_t t0, t1, t2, t3;
	char *err = NULL;

	t0 = changed_at(fx->st, fid);
	assert_true(t0 > 0 && llabs(t0 / G_USEC_PER_SEC - (int64_t)time(NULL)) < 600);
	store_set_observer(fx->st, note_path, noted);
	assert_int_equal(sync_once_as(fx->st, fid, 0, 0, 0, 1), t0);  /* its first listing */
	assert_string_equal(noted->str, "");
	assert_int_equal(sync_once(fx->st, fid, 0, 1, 0), t0);  /* nothing yet to flag */
	t1 = sync_once(fx->st, fid, 1, 0, 0);
	assert_true(t1 > t0);
	assert_int_equal(sync_once(fx->st, fid, 0, 1, 0), t1);  /* flags alone */
	t2 = sync_once(fx->st, fid, 2, 0, 0);
	assert_true(t2 > t1);
	t3 = sync_once(fx->st, fid, 0, 0, 2);
	assert_true(t3 > t2);
	assert_int_equal(store_message_remove(fx->st, fid, 1), MF_OK);
	assert_true(changed_at(fx->st, fid) > t3);
	t3 = changed_at(fx->st, fid);
	assert_int_equal(store_message_remove(fx->st, fid, 1), MF_OK);  /* gone already */
	assert_int_equal(changed_at(fx->st, fid), t3);
	assert_string_equal(noted->str, "INBOX;INBOX;INBOX/m~2.eml;INBOX;INBOX/m.eml;INBOX;");
	store_set_observer(fx->st, NULL, NULL);
	g_string_free(noted, TRUE);

	store_close(fx->st);
	fx->st = store_open(fx->dir, UINT64_C(1) << 30, &err);
	assert_non_null(fx->st);
	assert_int_equal(changed_at(fx->st, fid), t3);
}

/* A first listing that brings messages learns the folder: its time stays
 * the one shown before (tar: "file changed as we read it" otherwise). */
static void test_first_listing_keeps_folder_time(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	GString *noted = g_string_new(NULL);
	int64_t t0 = changed_at(fx->st, fid);

	store_set_observer(fx->st, note_path, noted);
	assert_int_equal(sync_once_as(fx->st, fid, 1, 0, 0, 1), t0);
	assert_string_equal(noted->str, "");
	assert_true(sync_once(fx->st, fid, 2, 0, 0) > t0);  /* then mail arrives */
	store_set_observer(fx->st, NULL, NULL);
	g_string_free(noted, TRUE);
}

static void note_stored(void *ctx, uint32_t uid)
{
	g_array_append_val((GArray *)ctx, uid);
}

/* A first listing given stored() goes into the store in parts, each
 * reported in UID order, and ends as one transaction would leave it: the
 * same names (collisions across the parts' edges included), the count,
 * the folder's state. */
static void test_first_listing_in_parts(void **state)
{
	struct fixture *fx = *state;
	struct store_folder_entry two[] = { { .path = "Parted", .wire_name = "Parted", .delim = '/' },
	                                    { .path = "Whole", .wire_name = "Whole", .delim = '/' } };
	int64_t parted, whole;
	enum { N = 3000 };
	struct store_sync_message *added = g_new0(struct store_sync_message, N);
	char **bases = g_new0(char *, N);
	GArray *parts = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	struct store_folder f;

	assert_int_equal(store_folders_replace(fx->st, two, 2), MF_OK);
	assert_int_equal(store_folder_by_path(fx->st, "Parted", &f), MF_OK);
	parted = f.id;
	store_folder_clear(&f);
	assert_int_equal(store_folder_by_path(fx->st, "Whole", &f), MF_OK);
	whole = f.id;
	store_folder_clear(&f);
	for (int i = 0; i < N; i++) {
		bases[i] = g_strdup_printf("20240101-0000_Same-for-three_%04d", i / 3);
		added[i] = msg((uint32_t)(i + 1), bases[i], "");
	}
	struct store_sync s = { .folder_id = parted, .uidvalidity = 7, .uidnext = N + 1,
	                        .added = added, .n_added = N, .now = 1, .first = 1,
	                        .stored = note_stored, .stored_ctx = parts };
	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_OK);
	struct store_sync w = s;
	w.folder_id = whole;
	w.stored = NULL;
	assert_int_equal(store_folder_apply_sync(fx->st, &w), MF_OK);

	assert_true(parts->len >= 2);
	for (guint i = 0; i < parts->len; i++) {
		uint32_t uid = g_array_index(parts, uint32_t, i);
		assert_true(uid < N);
		assert_true(i == 0 || uid > g_array_index(parts, uint32_t, i - 1));
	}
	for (uint32_t uid = 1; uid <= N; uid++) {
		char *a = name_of(fx->st, parted, uid), *b = name_of(fx->st, whole, uid);
		assert_string_equal(a, b);
		g_free(a);
		g_free(b);
	}
	assert_int_equal(store_folder_by_id(fx->st, parted, &f), MF_OK);
	assert_int_equal(f.message_count, N);
	assert_int_equal(f.uidvalidity, 7);
	assert_int_equal(f.uidnext, N + 1);
	assert_int_equal(f.synced_at, 1);
	store_folder_clear(&f);

	for (int i = 0; i < N; i++)
		g_free(bases[i]);
	g_free(bases);
	g_free(added);
	g_array_free(parts, TRUE);
}

static void test_sync_10000(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	enum { N = 10000 };
	struct store_sync_message *added = g_new0(struct store_sync_message, N);
	char **bases = g_new0(char *, N);
	double t0, t1, t2;

	for (int i = 0; i < N; i++) {
		/* Every tenth pair shares a base, as replies and duplicates do. */
		int j = i % 10 == 1 ? i - 1 : i;
		bases[i] = g_strdup_printf("20240101-%04d_Subject-number-%d_%08x", j % 1440, j,
		                           (unsigned)j * 2654435761u);
		added[i] = msg((uint32_t)(i + 1), bases[i], i % 3 ? "\\Seen" : "");
	}
	struct store_sync s = { .folder_id = fid, .uidvalidity = 1, .uidnext = N + 1,
	                        .added = added, .n_added = N, .now = 1 };
	t0 = now_seconds();
	assert_int_equal(store_folder_apply_sync(fx->st, &s), MF_OK);
	t1 = now_seconds();

	/* An incremental sync in the big folder: one in, one out. */
	struct store_sync_message one = msg(N + 1, "new", "");
	uint32_t gone = 1; /* holder of a shared base: uid 2 takes it over */
	struct store_sync s2 = { .folder_id = fid, .uidvalidity = 1, .uidnext = N + 2,
	                         .added = &one, .n_added = 1, .removed = &gone, .n_removed = 1,
	                         .now = 2 };
	assert_int_equal(store_folder_apply_sync(fx->st, &s2), MF_OK);
	t2 = now_seconds();
	print_message("    sync of %d added messages: %.3f s; incremental sync: %.3f s\n", N,
	              t1 - t0, t2 - t1);

	struct store_folder f;
	assert_int_equal(store_folder_by_id(fx->st, fid, &f), MF_OK);
	assert_int_equal(f.message_count, N);
	store_folder_clear(&f);
	char *name = name_of(fx->st, fid, 2);
	char *want = g_strconcat(bases[1], ".eml", NULL);
	assert_string_equal(name, want);
	g_free(name);
	g_free(want);

	GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
	t0 = now_seconds();
	assert_int_equal(store_messages_list(fx->st, fid, collect_message_names, names), MF_OK);
	t1 = now_seconds();
	print_message("    list of %u messages: %.3f s\n", names->len, t1 - t0);
	assert_int_equal(names->len, N);
	for (guint i = 1; i < names->len; i++)
		assert_true(strcmp(g_ptr_array_index(names, i - 1), g_ptr_array_index(names, i)) < 0);
	g_ptr_array_free(names, TRUE);

	for (int i = 0; i < N; i++)
		g_free(bases[i]);
	g_free(bases);
	g_free(added);
}


/* The names a first listing is shown under while it arrives, one at a
 * time, are the names the store then gives it, collisions and empty bases
 * included; a UID not above the last one, or none, gets no name. */
static void test_names_for_new(void **state)
{
	struct fixture *fx = *state;
	struct store_folder_entry one[] = { { "A", "A", '/', 0 } };
	const char *bases[] = { "x", "y", "x", "x", "", "y", "z", "x", "x~2", "" };
	enum { N = G_N_ELEMENTS(bases) };
	struct store_sync_message added[N];
	struct store_namer *namer = store_namer_new_empty();
	struct store_folder f;
	char *names[N];
	int64_t a;

	assert_int_equal(store_folders_replace(fx->st, one, 1), MF_OK);
	assert_int_equal(store_folder_by_path(fx->st, "A", &f), MF_OK);
	a = f.id;
	store_folder_clear(&f);
	for (int i = 0; i < N; i++) {
		added[i] = msg((uint32_t)(10 * i + 5), bases[i], "");
		names[i] = store_namer_next(namer, added[i].uid, added[i].base_name);
		assert_non_null(names[i]);
	}
	assert_null(store_namer_next(namer, added[N - 1].uid, "again"));
	assert_null(store_namer_next(namer, added[N - 1].uid - 1, "lower"));
	assert_null(store_namer_next(namer, 0, "none"));

	struct store_sync all = { .folder_id = a, .uidvalidity = 1, .uidnext = 200,
	                          .added = added, .n_added = N, .now = 1 };
	assert_int_equal(store_folder_apply_sync(fx->st, &all), MF_OK);
	for (int i = 0; i < N; i++) {
		char *got = name_of(fx->st, a, added[i].uid);
		assert_string_equal(names[i], got);
		g_free(got);
	}
	assert_string_equal(names[2], "x~2.eml");
	assert_string_equal(names[4], "45.eml");
	assert_string_equal(names[8], "x~2~2.eml");
	store_namer_free(namer);  /* before the names it borrows */
	for (int i = 0; i < N; i++)
		g_free(names[i]);
}

/* Many threads reading while one writes: the store's mutex must keep
 * every call whole (run under ASan/TSan to mean something). */
struct reader_ctx {
	struct store *st;
	int64_t fid;
};

static int count_cb(void *ctx, const struct store_message *m)
{
	(void)m;
	(*(int *)ctx)++;
	return 0;
}

static void *reader(void *arg)
{
	struct reader_ctx *rc = arg;

	for (int i = 0; i < 200; i++) {
		struct store_message m;
		int n = 0;
		if (store_message_by_uid(rc->st, rc->fid, 1, &m) == MF_OK)
			store_message_clear(&m);
		store_messages_list(rc->st, rc->fid, count_cb, &n);
		int fd = store_body_open(rc->st, rc->fid, 1, NULL, NULL);
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *fx = *state;
	int64_t fid = make_folder(fx->st, "INBOX");
	struct store_sync_message m1 = msg(1, "one", "");
	struct reader_ctx rc = { fx->st, fid };
	pthread_t t[4];

	sync_add(fx->st, fid, &m1, 1);
	assert_int_equal(put_body(fx->st, fid, 1, 10, 'x', NULL), MF_OK);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &rc), 0);
	for (uint32_t uid = 2; uid < 200; uid++) {
		struct store_sync_message m = msg(uid, uid % 2 ? "odd" : "even", "");
		sync_add(fx->st, fid, &m, 1);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	int n = 0;
	assert_int_equal(store_messages_list(fx->st, fid, count_cb, &n), MF_OK);
	assert_int_equal(n, 199);
	assert_name(fx->st, fid, 2, "even.eml");
	assert_name(fx->st, fid, 199, "odd~99.eml");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_private_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_from_version_1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_changed_at, setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_listing_keeps_folder_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folders_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_children_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apply_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_collisions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_of_appended_mail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_show_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lookup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remote_ids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_store_per_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_database_held_exclusively, setup, teardown),
		cmocka_unit_test_setup_teardown(test_database_open_elsewhere_is_named, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_commit_vanished, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pack_bodies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lru_eviction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lru_touches_batched_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lru_uses_told_without_the_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_for_new, setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_listing_in_parts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_10000, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

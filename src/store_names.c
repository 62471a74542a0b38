/* store_names.c — the file names of a folder's messages (DESIGN.md "File
 * names"): the collision rule, in store_name_pick() alone; the recount of
 * a folder's names after a change; the namer that names new mail, and a
 * first listing before it is stored, the way the recount would.
 *
 * It must not know IMAP, POP3 or FUSE, must not do network I/O and must
 * not log. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>
#include <sqlite3.h>

#include "store_int.h"

/* The names of a folder while new ones are picked. */
struct store_name_set {
	GHashTable *taken;        /* every name held; keys borrowed (from the
	                             caller, or the names picked): they must
	                             outlive the set */
	GHashTable *next_suffix;  /* base -> the next suffix worth trying, once
	                             base.eml is taken; owned keys */
};

static void store_name_set_init(struct store_name_set *ns)
{
	ns->taken = g_hash_table_new(g_str_hash, g_str_equal);
	ns->next_suffix = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
}

static void store_name_set_clear(struct store_name_set *ns)
{
	g_hash_table_destroy(ns->taken);
	g_hash_table_destroy(ns->next_suffix);
}

/* The collision rule: the name of message uid of base (its UID when the
 * base is empty) is base.eml when free, else the first free base~K.eml
 * from K = 2 on. The name is held from then on; the set borrows it. Both
 * the recount and the namer name through here, so a name shown before a
 * folder is stored is the name the store gives it. */
static char *store_name_pick(struct store_name_set *ns, uint32_t uid, const char *base)
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
	if (g_hash_table_contains(ns->taken, cand)) {
		/* Suffixes below next were taken when tried and stay taken, so
		 * resuming there keeps many equal bases linear. */
		guint k = GPOINTER_TO_UINT(g_hash_table_lookup(ns->next_suffix, base));
		for (k = k ? k : 2;; k++) {
			g_free(cand);
			cand = g_strdup_printf("%s~%u.eml", base, k);
			if (!g_hash_table_contains(ns->taken, cand))
				break;
		}
		g_hash_table_replace(ns->next_suffix, g_strdup(base), GUINT_TO_POINTER(k + 1));
	}
	g_hash_table_add(ns->taken, cand);
	return cand;
}

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
enum mf_status store_assign_names(struct store *st, int64_t folder_id)
{
	GArray *rows = g_array_new(FALSE, TRUE, sizeof(struct store_name_row));
	struct store_name_set ns;
	enum mf_status rc = MF_OK;
	sqlite3_stmt *q;
	int src;

	store_name_set_init(&ns);
	q = store_query_folder(st, Q_MSG_NAMES, folder_id);
	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_name_row r = { 0 };
		r.uid = (uint32_t)sqlite3_column_int64(q, 0);
		r.base = store_column_dup(q, 1);
		r.user = store_column_dup(q, 2);
		r.name = store_column_dup(q, 3);
		g_array_append_val(rows, r);
	}
	rc = store_rows_done(q, src);
	if (rc != MF_OK)
		goto out;

	/* User-given names are unique by construction; should two ever clash,
	 * the lower UID keeps it and the other falls back to a derived name. */
	for (guint i = 0; i < rows->len; i++) {
		struct store_name_row *r = &g_array_index(rows, struct store_name_row, i);
		if (r->user && *r->user && !g_hash_table_contains(ns.taken, r->user)) {
			g_hash_table_add(ns.taken, r->user);
			r->user_ok = 1;
		}
	}
	for (guint i = 0; i < rows->len; i++) {
		struct store_name_row *r = &g_array_index(rows, struct store_name_row, i);
		r->new_name = r->user_ok ? g_strdup(r->user) : store_name_pick(&ns, r->uid, r->base);
	}

	for (int pass = 0; pass < 2; pass++) {
		for (guint i = 0; i < rows->len; i++) {
			struct store_name_row *r = &g_array_index(rows, struct store_name_row, i);
			if (r->name && strcmp(r->name, r->new_name) == 0)
				continue;
			if (pass == 0 && !r->name)
				continue;
			if (pass == 0) {  /* a name that shifts: both entries are stale */
				store_note_change(st, folder_id, r->name);
				store_note_change(st, folder_id, r->new_name);
			}
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
	store_name_set_clear(&ns);
	for (guint i = 0; i < rows->len; i++)
		store_name_row_free(&g_array_index(rows, struct store_name_row, i));
	g_array_free(rows, TRUE);
	return rc;
}

/* File names for messages above every stored UID, in UID order: the
 * stored names cannot change (a higher UID never takes a name from a
 * lower one), so the new names follow from the stored ones. */
struct store_namer {
	int64_t folder_id;
	struct store_name_set names;  /* borrows from seeds, and from the names
	                                 handed out (which outlive it) */
	GStringChunk *seeds;      /* the stored names */
	uint32_t max_uid;         /* the highest UID named */
};

static struct store_namer *store_namer_new(int64_t folder_id)
{
	struct store_namer *n = g_new0(struct store_namer, 1);

	n->folder_id = folder_id;
	store_name_set_init(&n->names);
	n->seeds = g_string_chunk_new(4096);
	return n;
}

void store_namer_free(struct store_namer *n)
{
	if (!n)
		return;
	store_name_set_clear(&n->names);
	g_string_chunk_free(n->seeds);
	g_free(n);
}

/* Reads the stored names (lock held). */
static enum mf_status store_namer_seed(struct store *st, struct store_namer *n)
{
	sqlite3_stmt *q = store_query_folder(st, Q_MSG_NAMES, n->folder_id);
	int src;

	while ((src = sqlite3_step(q)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(q, 0);
		if (uid > n->max_uid)
			n->max_uid = uid;
		for (int col = 2; col <= 3; col++)
			if (sqlite3_column_type(q, col) == SQLITE_TEXT)
				g_hash_table_add(n->names.taken, g_string_chunk_insert(n->seeds,
				                 (const char *)sqlite3_column_text(q, col)));
	}
	return store_rows_done(q, src);
}

/* Whether the sync's new messages are ascending and above every UID named. */
static int store_namer_fits(const struct store_namer *n, const struct store_sync *s)
{
	uint32_t last = n->max_uid;

	for (size_t i = 0; i < s->n_added; i++) {
		uint32_t uid = store_sync_added(s, i)->uid;
		if (uid == 0 || uid <= last)
			return 0;
		last = uid;
	}
	return 1;
}

/* The name of the next message (uid above every one named). The namer
 * borrows it. */
static char *store_namer_one(struct store_namer *n, uint32_t uid, const char *base)
{
	n->max_uid = uid;
	return store_name_pick(&n->names, uid, base);
}

/* Names for the sync's new messages (store_namer_fits holds), g_strfreev;
 * they must outlive the namer. */
static char **store_namer_assign(struct store_namer *n, const struct store_sync *s)
{
	char **names = g_new0(char *, s->n_added + 1);

	for (size_t i = 0; i < s->n_added; i++) {
		const struct store_sync_message *a = store_sync_added(s, i);
		names[i] = store_namer_one(n, a->uid, a->base_name);
	}
	return names;
}

/* Names for a sync that only adds messages above every stored UID, or
 * NULL when that does not hold and store_assign_names() must run. */
char **store_names_for_appended(struct store *st, const struct store_sync *s)
{
	struct store_namer *n;
	char **names = NULL;

	if (s->reset || s->n_removed || !s->n_added)
		return NULL;
	n = store_namer_new(s->folder_id);
	if (store_namer_seed(st, n) == MF_OK && store_namer_fits(n, s))
		names = store_namer_assign(n, s);
	store_namer_free(n);
	return names;
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

/* Would another message of the folder take over the name uid holds now
 * once uid lets go of it? Only one whose base the name was made from
 * ("b.eml", "b~3.eml" from base "b"). If not, names need no recount. */
int store_name_wanted(struct store *st, int64_t folder_id, uint32_t uid)
{
	sqlite3_stmt *q = store_query_message(st, Q_MSG_NAME_OF, folder_id, uid);
	char *stem = NULL, *bare = NULL;
	int wanted = 1, src;

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
	q = store_query_message(st, Q_MSG_NAME_WANTED, folder_id, uid);
	sqlite3_bind_text(q, 3, stem, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, bare, -1, SQLITE_STATIC);
	src = sqlite3_step(q);
	wanted = src != SQLITE_DONE;
	sqlite3_reset(q);
	g_free(stem);
	g_free(bare);
	return wanted;
}

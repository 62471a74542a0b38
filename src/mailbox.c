/* mailbox.c — helpers shared by the mailbox drivers' callers. */
#include <string.h>
#include "mailbox.h"

int mailbox_flags_deleted(const char *flags)
{
	static const char word[] = "\\Deleted";
	const size_t len = sizeof word - 1;

	for (const char *p = flags; p && *p;) {
		while (*p == ' ')
			p++;
		size_t n = strcspn(p, " ");
		if (n == len && g_ascii_strncasecmp(p, word, len) == 0)
			return 1;
		p += n;
	}
	return 0;
}

static void mailbox_folder_free(gpointer p)
{
	struct mailbox_folder *f = p;
	g_free(f->path);
	g_free(f->wire_name);
	g_free(f);
}

void mailbox_folders_free(GPtrArray *folders)
{
	if (!folders)
		return;
	g_ptr_array_set_free_func(folders, mailbox_folder_free);
	g_ptr_array_free(folders, TRUE);
}

void mailbox_sync_result_init(struct mailbox_sync_result *r)
{
	*r = (struct mailbox_sync_result){ 0 };
	r->added = g_array_new(FALSE, TRUE, sizeof(struct mailbox_message));
	r->flag_updates = g_array_new(FALSE, TRUE, sizeof(struct mailbox_flag_update));
	r->present = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	r->vanished = g_array_new(FALSE, FALSE, sizeof(struct mailbox_uid_range));
}

void mailbox_sync_result_clear(struct mailbox_sync_result *r)
{
	if (r->added) {
		for (guint i = 0; i < r->added->len; i++) {
			struct mailbox_message *m = &g_array_index(r->added, struct mailbox_message, i);
			g_free(m->remote_id);
			g_free(m->flags);
			g_free(m->headers);
		}
		g_array_free(r->added, TRUE);
	}
	if (r->flag_updates) {
		for (guint i = 0; i < r->flag_updates->len; i++)
			g_free(g_array_index(r->flag_updates, struct mailbox_flag_update, i).flags);
		g_array_free(r->flag_updates, TRUE);
	}
	if (r->present)
		g_array_free(r->present, TRUE);
	if (r->vanished)
		g_array_free(r->vanished, TRUE);
	*r = (struct mailbox_sync_result){ 0 };
}

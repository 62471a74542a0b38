/* imap.c — the IMAP driver: the mailbox_ops table and imap_mailbox_open.
 * The command engine (imap_engine.c), the pool of connections
 * (imap_pool.c) and the mailbox operations built on them (imap_read.c,
 * imap_write.c) share imap_int.h.
 *
 * Must not: touch SQLite or FUSE. */
#include <glib.h>
#include "imap_int.h"

static void imap_destroy(struct mailbox *mb)
{
	struct imap_driver *d = (struct imap_driver *)mb;

	imap_watch_end(d);  /* its connections go back to the pool first */
	for (guint i = 0; i < d->spare->len; i++)
		imap_conn_logout(g_ptr_array_index(d->spare, i));
	for (guint i = 0; i < d->spare->len; i++)
		imap_conn_free(g_ptr_array_index(d->spare, i));
	g_ptr_array_free(d->spare, TRUE);
	g_mutex_clear(&d->lock);
	g_cond_clear(&d->cond);
	g_mutex_clear(&d->watch_lock);
	g_ptr_array_free(d->watchers, TRUE);
	g_free(d);
}

static const struct mailbox_ops imap_ops = {
	.caps = MAILBOX_CAP_SERVER_UIDS | MAILBOX_CAP_STREAM_PLACE,
	.list_folders = imap_list_folders,
	.sync_folder = imap_sync_folder,
	.fetch_body = imap_fetch_body,
	.fetch_bodies = imap_fetch_bodies,
	.stream_bodies = imap_stream_bodies,
	.append = imap_append,
	.move = imap_move,
	.expunge = imap_expunge,
	.set_flags = imap_set_flags,
	.create_folder = imap_create_folder,
	.delete_folder = imap_delete_folder,
	.rename_folder = imap_rename_folder,
	.quota = imap_quota,
	.link_rtt = imap_link_rtt,
	.watch = imap_watch,
	.destroy = imap_destroy,
};

enum mf_status imap_mailbox_open(const struct mf_config *cfg, struct mailbox **out, char **err)
{
	struct imap_driver *d = g_new0(struct imap_driver, 1);
	struct imap_conn *c;
	enum mf_status st;

	d->base.ops = &imap_ops;
	d->cfg = cfg;
	g_mutex_init(&d->lock);
	g_cond_init(&d->cond);
	d->spare = g_ptr_array_new();
	g_mutex_init(&d->watch_lock);
	d->watchers = g_ptr_array_new();
	st = imap_conn_open(cfg, &c, err);
	if (st != MF_OK) {
		imap_destroy(&d->base);
		return st;
	}
	d->total = 1;
	g_ptr_array_add(d->spare, c);
	*out = &d->base;
	return MF_OK;
}

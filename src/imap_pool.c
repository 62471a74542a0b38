/* imap_pool.c — the IMAP driver's pool of connections: opens them up to
 * the configured number, hands one out (best one with the folder already
 * selected), checks that a spare connection is still open before reuse,
 * and retries an operation once on a fresh connection.
 *
 * Must not: hold the pool lock across I/O, or wait without a bound. */
#include <string.h>
#include <glib.h>
#include "imap_int.h"
#include "log.h"
#include "stats.h"

#define IMAP_SPARE_CHECK_US (20 * G_USEC_PER_SEC)
#define IMAP_LOGOUT_WAIT_US (2 * G_USEC_PER_SEC)
/* What a spare connection may have received meanwhile (untagged news):
 * more than this, and it is not worth keeping. */
#define IMAP_SPARE_NEWS_MAX ((size_t)256 * 1024)

void imap_conn_logout(struct imap_conn *c)
{
	if (!c->net || c->broken || c->logout)
		return;
	/* curl sends no LOGOUT at cleanup (NOTES.md); a server that is slow
	 * to answer it holds up no one for long. */
	gint64 soon = g_get_monotonic_time() + IMAP_LOGOUT_WAIT_US;
	gint64 deadline = net_deadline_from_now(c->net);
	net_set_deadline(c->net, soon < deadline ? soon : deadline);
	c->sink = NULL;
	c->logout = imap_send(c, "LOGOUT");
}

void imap_conn_free(struct imap_conn *c)
{
	if (!c)
		return;
	imap_conn_logout(c);
	if (c->logout && !c->broken)
		imap_wait(c, c->logout, NULL, NULL);
	net_close(c->net);
	g_free(c->in);
	g_array_free(c->done, TRUE);
	g_free(c->selected);
	g_free(c);
}

enum mf_status imap_conn_open(const struct mf_config *cfg, struct imap_conn **out, char **err)
{
	struct imap_conn *c = g_new0(struct imap_conn, 1);
	enum mf_status st;

	c->done = g_array_new(FALSE, FALSE, sizeof(struct imap_done_tag));
	c->spare_since = g_get_monotonic_time();
	st = net_connect(cfg, &c->net, err);
	if (st != MF_OK) {
		c->broken = 1;
		imap_conn_free(c);
		return st;
	}
	/* curl read the capabilities before login; those after may differ,
	 * and the login's answer often names them (RFC 9051 6.2.3). */
	if (imap_conn_caps_from(c, net_login_reply(c->net))) {
		*out = c;
		return MF_OK;
	}
	st = imap_command(c, "CAPABILITY", NULL, NULL);
	if (st != MF_OK) {
		*err = g_strdup_printf("CAPABILITY failed: %s", mf_status_str(st));
		c->broken = 1;
		imap_conn_free(c);
		return st;
	}
	*out = c;
	return MF_OK;
}

/* Whether a spare connection was closed by the server (or the network)
 * while it sat in the pool. Bytes it sent meanwhile (untagged news) are
 * kept for the next command's reader. */
static int imap_conn_closed_meanwhile(struct imap_conn *c)
{
	size_t got;

	/* A "* BYE" may come before the close: read what waits, but not
	 * forever (a server can keep a socket full). */
	do {
		if (c->in_len - c->in_pos > IMAP_SPARE_NEWS_MAX) {
			log_warn("a spare IMAP connection received over %zu KiB unasked: dropped",
			         IMAP_SPARE_NEWS_MAX / 1024);
			c->broken = 1;
			return 1;
		}
		if (c->in_cap - c->in_len < 4096) {
			size_t cap = c->in_cap * 2 + 4096;
			char *grown = g_try_realloc(c->in, cap);
			if (!grown) {
				c->broken = 1;
				return 1;
			}
			c->in = grown;
			c->in_cap = cap;
		}
		got = 0;
		if (net_peek_closed(c->net, c->in + c->in_len, c->in_cap - c->in_len, &got)) {
			c->broken = 1;
			return 1;
		}
		c->in_len += got;
	} while (got > 0);
	return 0;
}

/* Takes a connection from the pool, preferring one that has folder
 * selected; opens a new one when the pool has room; otherwise waits its
 * turn (first come, first served). The wait fails only when no connection
 * came back for a whole timeout: every operation holding one is bounded,
 * so waiting behind them while the server answers is no hang. */
static enum mf_status imap_acquire_mode(struct imap_driver *d, const char *folder,
                                        struct imap_conn **out, int own)
{
	gint64 timeout_us = (gint64)d->cfg->timeout * G_USEC_PER_SEC;
	gint64 start = g_get_monotonic_time();
	struct imap_conn *c = NULL;
	enum mf_status st;
	char *err = NULL;
	int counted_reconnect = 0;
	int me;  /* our place in d->waiting */
	int told = 0;

	g_mutex_lock(&d->lock);
	g_queue_push_tail(&d->waiting, &me);
	for (;;) {
		/* Best a spare connection on this folder, then one on no folder;
		 * rather than make a spare one switch folders, open another while
		 * there is room: each busy folder keeps a connection of its own
		 * (a mv between two folders would SELECT back and forth). */
		int pick = -1, blank = -1;
		int first = g_queue_peek_head(&d->waiting) == &me;
		/* own: a connection of its own while there is room; the spare
		 * ones (logged in, a folder selected) stay for what a reader
		 * waits on. */
		int spare_ok = !(own && first && d->total < d->cfg->connections);
		for (guint i = 0; spare_ok && first && i < d->spare->len; i++) {
			struct imap_conn *ci = g_ptr_array_index(d->spare, i);
			if (folder && ci->selected && strcmp(ci->selected, folder) == 0)
				pick = (int)i;
			else if (!ci->selected && blank < 0)
				blank = (int)i;
		}
		if (pick < 0)
			pick = blank;
		if (spare_ok && first && pick < 0 && d->spare->len > 0 &&
		    (!folder || d->total >= d->cfg->connections))
			pick = (int)d->spare->len - 1;
		if (pick >= 0) {
			c = g_ptr_array_steal_index_fast(d->spare, (guint)pick);
			g_mutex_unlock(&d->lock);
			c->reused = 1;
			/* A server may drop a connection left unused: find out now,
			 * not in the middle of a command that must not be repeated.
			 * A close already seen costs nothing to notice; a long spell
			 * as a spare is worth a NOOP. */
			if (imap_conn_closed_meanwhile(c) ||
			    (g_get_monotonic_time() - c->spare_since > IMAP_SPARE_CHECK_US &&
			     imap_command(c, "NOOP", NULL, NULL) != MF_OK)) {
				imap_release(d, c);
				g_mutex_lock(&d->lock);
				continue;
			}
			g_mutex_lock(&d->lock);
			g_queue_remove(&d->waiting, &me);
			g_cond_broadcast(&d->cond);
			g_mutex_unlock(&d->lock);
			*out = c;
			return MF_OK;
		}
		if (first && d->total < d->cfg->connections) {
			d->total++;
			if (d->lost > 0) {
				d->lost--;
				counted_reconnect = 1;
			}
			g_queue_remove(&d->waiting, &me);
			g_cond_broadcast(&d->cond);
			break;
		}
		if (!told) {
			/* Its place in the line, for -o debug (and the fairness test). */
			log_debug("waiting for an IMAP connection: %d ahead",
			          g_queue_index(&d->waiting, &me));
			told = 1;
		}
		gint64 since = d->progress_at > start ? d->progress_at : start;
		if (!g_cond_wait_until(&d->cond, &d->lock, since + timeout_us) &&
		    g_get_monotonic_time() >= (d->progress_at > start ? d->progress_at : start) + timeout_us) {
			g_queue_remove(&d->waiting, &me);
			g_cond_broadcast(&d->cond);
			g_mutex_unlock(&d->lock);
			log_warn("no IMAP connection came free within %d s", d->cfg->timeout);
			return MF_ERR_TIMEOUT;
		}
	}
	g_mutex_unlock(&d->lock);

	st = imap_conn_open(d->cfg, &c, &err);
	if (st != MF_OK) {
		log_warn("cannot open an IMAP connection: %s", err ? err : mf_status_str(st));
		g_free(err);
		g_mutex_lock(&d->lock);
		d->total--;
		if (counted_reconnect)
			d->lost++;
		/* A server that allows no more connections: a spare one serves. */
		if (d->spare->len > 0) {
			c = g_ptr_array_steal_index_fast(d->spare, d->spare->len - 1);
			g_mutex_unlock(&d->lock);
			c->reused = 1;
			*out = c;
			return MF_OK;
		}
		g_cond_broadcast(&d->cond);
		g_mutex_unlock(&d->lock);
		return st;
	}
	if (counted_reconnect)
		stats_add(reconnects, 1);
	*out = c;
	return MF_OK;
}

enum mf_status imap_acquire(struct imap_driver *d, const char *folder,
                            struct imap_conn **out)
{
	return imap_acquire_mode(d, folder, out, 0);
}

enum mf_status imap_acquire_own(struct imap_driver *d, const char *folder,
                                struct imap_conn **out)
{
	return imap_acquire_mode(d, folder, out, 1);
}

void imap_release(struct imap_driver *d, struct imap_conn *c)
{
	if (c->broken || c->done->len > 0) {
		/* Unread completions mean a command's replies are still due:
		 * the connection is out of step, don't reuse it. */
		c->broken = 1;
		imap_conn_free(c);
		g_mutex_lock(&d->lock);
		d->total--;
		d->lost++;
		d->progress_at = g_get_monotonic_time();
		g_cond_broadcast(&d->cond);
		g_mutex_unlock(&d->lock);
		return;
	}
	c->spare_since = g_get_monotonic_time();
	g_mutex_lock(&d->lock);
	if (c->rtt_us && (!d->rtt_us || c->rtt_us < d->rtt_us))
		d->rtt_us = c->rtt_us;
	g_ptr_array_add(d->spare, c);
	d->progress_at = c->spare_since;
	g_cond_broadcast(&d->cond);
	g_mutex_unlock(&d->lock);
}

/* The shortest round trip of a command seen on the connections given
 * back so far, in µs (0: none yet): the link's latency, for the window
 * of a stream (sync_stream.c). */
uint64_t imap_link_rtt(struct mailbox *mb)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	gint64 rtt;

	g_mutex_lock(&d->lock);
	rtt = d->rtt_us;
	g_mutex_unlock(&d->lock);
	return (uint64_t)rtt;
}

/* Runs op on a pooled connection; retries once on a fresh connection when
 * a reused one turns out to have been closed by the server meanwhile. */
enum mf_status imap_with_conn(struct imap_driver *d, const char *folder,
                              imap_op_fn op, void *arg)
{
	enum mf_status st = MF_ERR_IO;

	for (int attempt = 0; attempt < 2; attempt++) {
		struct imap_conn *c;
		int reused;
		st = imap_acquire(d, folder, &c);
		if (st != MF_OK)
			return st;
		reused = c->reused;
		/* One deadline for the whole operation: trickled bytes and
		 * untagged chatter cannot stretch it. */
		net_set_deadline(c->net, net_deadline_from_now(c->net));
		st = op(c, arg);
		net_set_deadline(c->net, 0);
		c->sink = NULL;
		imap_release(d, c);
		if (!(st == MF_ERR_IO && reused))
			break;
	}
	return st;
}

/* Runs op once on a pooled connection: for an operation that must not be
 * repeated when its answer is lost. */
enum mf_status imap_with_conn_once(struct imap_driver *d, const char *folder,
                                   imap_op_fn op, void *arg)
{
	struct imap_conn *c;
	enum mf_status st = imap_acquire(d, folder, &c);

	if (st != MF_OK)
		return st;
	st = op(c, arg);
	imap_release(d, c);
	return st;
}

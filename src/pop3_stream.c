/* pop3_stream.c — the POP3 driver's streamed read-ahead: a window of
 * pipelined RETRs (one at a time without PIPELINING) ahead of the reader,
 * each body reported done as soon as its answer ends.
 *
 * Must not: hold the session while nothing is in flight, or while another
 * operation waits for it (an open the stream has not reached is served
 * between windows); leave a session with RETRs unanswered in use (a
 * stream told to stop with some in flight drops it). */
#include <string.h>
#include <glib.h>
#include "log.h"
#include "pop3_int.h"
#include "pop3_parse.h"
#include "stats.h"

struct pop3_stream_req {
	struct mailbox_body_request r;
	uint32_t msgno;
};

/* The session, listed, for a stream: entered, or an error (left). */
static enum mf_status pop3_stream_enter(struct pop3_driver *d)
{
	enum mf_status st = pop3_enter(d);

	if (st != MF_OK)
		return st;
	if (!d->session || d->session->broken) {
		pop3_drop_session(d);
		st = pop3_session_open(d, &d->session, NULL);
	}
	if (st == MF_OK && !d->session->msgno_by_key) {
		GArray *entries = NULL;
		st = pop3_scan(d->session, NULL, 0, &entries);
		pop3_entries_free(entries);
	}
	if (st != MF_OK) {
		pop3_drop_session(d);
		pop3_leave(d);
	}
	return st;
}

/* Holds the session only while RETRs are in flight: between windows, and
 * whenever another operation waits for it, the session is lent out. */
enum mf_status pop3_stream_bodies(struct mailbox *mb, const char *wire_name,
                                  uint32_t uidvalidity, const struct mailbox_stream *stream)
{
	struct pop3_driver *d = (struct pop3_driver *)mb;
	struct mailbox_body_request batch[POP3_WINDOW];
	GQueue flight = G_QUEUE_INIT;
	GString *cmds = g_string_new(NULL);
	enum mf_status st = MF_OK;
	int entered = 0, stop = 0;

	if (strcmp(wire_name, "INBOX") != 0)
		stop = 1;
	while (!stop || !g_queue_is_empty(&flight)) {
		guint window = POP3_WINDOW;
		int lend;
		if (entered) {
			window = (d->session->caps & POP3_CAPA_PIPELINING) ? POP3_WINDOW : 1;
			g_mutex_lock(&d->lock);
			lend = d->waiting > 0;
			g_mutex_unlock(&d->lock);
		} else {
			lend = 1;
		}
		/* Refill: nothing in flight, ask with wait (the session lent out
		 * meanwhile); else top up what fits without waiting. */
		g_string_truncate(cmds, 0);
		int refill = g_queue_get_length(&flight) <= window / 2;  /* in sets, not one by one */
		while (refill && !stop && !(lend && entered) && g_queue_get_length(&flight) < window) {
			int empty = g_queue_is_empty(&flight);
			if (empty && entered) {
				pop3_leave(d);
				entered = 0;
			}
			int n = stream->next(stream->ctx, batch, window - g_queue_get_length(&flight), empty);
			if (n < 0 || (n == 0 && empty)) {
				stop = 1;
				break;
			}
			if (n == 0)
				break;
			if (!entered) {
				st = pop3_stream_enter(d);
				if (st != MF_OK) {
					for (int i = 0; i < n; i++) {
						batch[i].status = st;
						stream->done(stream->ctx, &batch[i]);
					}
					stop = 1;
					break;
				}
				entered = 1;
				window = (d->session->caps & POP3_CAPA_PIPELINING) ? POP3_WINDOW : 1;
			}
			for (int i = 0; i < n; i++) {
				uint32_t msgno = batch[i].remote_id ? GPOINTER_TO_UINT(g_hash_table_lookup(
					d->session->msgno_by_key, batch[i].remote_id)) : 0;
				if (!msgno) {
					batch[i].status = MF_ERR_NOTFOUND;
					stream->done(stream->ctx, &batch[i]);
					continue;
				}
				struct pop3_stream_req *q = g_new0(struct pop3_stream_req, 1);
				q->r = batch[i];
				q->msgno = msgno;
				g_queue_push_tail(&flight, q);
				g_string_append_printf(cmds, "RETR %u\r\n", msgno);
			}
			if (cmds->len) {
				d->session->retrieved = 1;
				st = pop3_send(d->session, cmds->str, cmds->len);
				g_string_truncate(cmds, 0);
				stats_add(stream_fetches, 1);
				if (st != MF_OK)
					break;
			}
		}
		if (st != MF_OK)
			break;
		if (g_queue_is_empty(&flight)) {
			if (entered && lend) {
				pop3_leave(d);  /* another operation goes first */
				entered = 0;
			}
			continue;
		}
		if (stop)
			break;  /* abandoned: the session is dropped below */
		struct pop3_stream_req *q = g_queue_pop_head(&flight);
		st = pop3_retr_read(d->session, q->msgno, q->r.size_hint, q->r.fd, &q->r.written);
		if (st == MF_ERR_REFUSED || st == MF_OK) {
			q->r.status = st;
			if (st == MF_OK) {
				stats_add(bodies_fetched, 1);
				stats_add(body_bytes_fetched, q->r.written);
				stats_add(stream_bodies, 1);
			}
			st = MF_OK;
			stream->done(stream->ctx, &q->r);
			g_free(q);
			d->deadline = g_get_monotonic_time() + (gint64)d->cfg->timeout * G_USEC_PER_SEC;
			d->session->deadline = d->deadline;
			continue;
		}
		g_queue_push_head(&flight, q);
		break;
	}
	/* Whatever is still in flight fails; the session, out of step, goes. */
	while (!g_queue_is_empty(&flight)) {
		struct pop3_stream_req *q = g_queue_pop_head(&flight);
		q->r.status = st != MF_OK ? st : MF_ERR_IO;
		stream->done(stream->ctx, &q->r);
		g_free(q);
		if (entered)
			d->session->broken = 1;
	}
	if (entered) {
		if (d->session && d->session->broken)
			pop3_drop_session(d);
		pop3_leave(d);
	}
	g_string_free(cmds, TRUE);
	(void)uidvalidity;
	return st;
}


/* imap_watch.c — push from the server (RFC 2177 IDLE): a thread per
 * watched folder holds a connection of the pool (counted among
 * -o connections, never given back while the watch lasts) with the folder
 * EXAMINEd and an IDLE in progress, and passes what the server says of it
 * up through the callback that mailbox_ops.watch was given:
 *
 *   EXISTS (more)             MAILBOX_NEWS_ADDED
 *   EXPUNGE, VANISHED, FETCH,
 *   EXISTS (fewer)            MAILBOX_NEWS_CHANGED
 *   the watch (re)established MAILBOX_NEWS_CHANGED: what happened while
 *                             there was none is unknown
 *
 * The thread waits in poll() on the socket and on an eventfd that ends it;
 * when the server speaks it ends the IDLE (DONE), reads the responses up
 * to the IDLE's tagged answer through the engine (bounded, parsed as any
 * other), reports, and IDLEs again. An IDLE is renewed every 25 minutes
 * (servers may drop one after 30). A lost connection is replaced after a
 * backoff of 1 s doubling to 60 s; a server without IDLE ends every watch
 * (the caller keeps its refresh interval). At the end DONE is given 2 s,
 * then the connection goes back to the pool (or is closed when broken).
 *
 * Must not: touch SQLite or FUSE, hold watch_lock across I/O, or wait
 * without a bound (but in poll on an IDLE, which the eventfd ends). */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <glib.h>
#include "cpus.h"
#include "imap_int.h"
#include "log.h"

#define IMAP_IDLE_RENEW_US ((gint64)25 * 60 * G_USEC_PER_SEC)
#define IMAP_WATCH_END_US (2 * G_USEC_PER_SEC)
#define IMAP_WATCH_BACKOFF_MIN_MS 1000
#define IMAP_WATCH_BACKOFF_MAX_MS 60000

struct imap_watcher {
	struct imap_driver *d;
	char *wire;
	mailbox_news_fn news;
	void *news_ctx;
	GThread *thread;
	int wake;              /* eventfd: readable once the watch is to end */
	gint stop;
	gint done;             /* the thread ended of itself (no IDLE, folder gone) */
	/* The thread's own: */
	uint64_t exists;       /* the folder's count as last heard */
	unsigned heard;        /* enum mailbox_news bits not reported yet */
	struct mailbox_seen seen;  /* the folder as the watch's EXAMINE found it */
	int seen_only;         /* heard holds that the watch is new, and nothing
	                          since: the report says what it found */
	int idled;             /* an IDLE was entered on this connection */
};

enum imap_watch_end { WATCH_LOST, WATCH_STOPPED, WATCH_NO_IDLE, WATCH_GONE };

static int imap_watch_stopping(struct imap_watcher *w)
{
	return g_atomic_int_get(&w->stop);
}

static void imap_watch_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r)
{
	struct imap_watcher *w = ctx;

	if (r->kind != IMAP_RESPONSE_UNTAGGED || !r->keyword)
		return;
	if (r->has_number && g_ascii_strcasecmp(r->keyword, "EXISTS") == 0) {
		if (r->number > w->exists)
			w->heard |= MAILBOX_NEWS_ADDED;
		else if (r->number < w->exists)
			w->heard |= MAILBOX_NEWS_CHANGED;
		if (r->number != w->exists)
			w->seen_only = 0;
		w->exists = r->number;
	} else if (g_ascii_strcasecmp(r->keyword, "EXPUNGE") == 0 ||
	           g_ascii_strcasecmp(r->keyword, "VANISHED") == 0 ||
	           g_ascii_strcasecmp(r->keyword, "FETCH") == 0) {
		w->heard |= MAILBOX_NEWS_CHANGED;
		w->seen_only = 0;
		if (r->has_number && w->exists && g_ascii_strcasecmp(r->keyword, "EXPUNGE") == 0)
			w->exists--;
	}
}

static void imap_watch_report(struct imap_watcher *w)
{
	unsigned heard = w->heard;
	int seen_only = w->seen_only;

	w->heard = 0;
	w->seen_only = 0;
	if (heard && !imap_watch_stopping(w)) {
		log_debug("watch %s: news %s%s%s", w->wire,
		          heard & MAILBOX_NEWS_ADDED ? "added " : "",
		          heard & MAILBOX_NEWS_CHANGED ? "changed" : "",
		          seen_only ? " (in place)" : "");
		w->news(w->news_ctx, w->wire, heard, seen_only ? &w->seen : NULL);
	}
}

/* Waits, without a bound but the eventfd's, until the connection has
 * something to read, the watch is to end, or it is time to renew. */
static void imap_watch_poll(struct imap_watcher *w, struct imap_conn *c, gint64 renew_at)
{
	struct pollfd p[2] = {
		{ .fd = net_socket(c->net), .events = POLLIN },
		{ .fd = w->wake, .events = POLLIN },
	};

	while (!imap_watch_stopping(w) && c->in_len == c->in_pos) {
		gint64 left_ms = (renew_at - g_get_monotonic_time()) / 1000;
		int rc;
		if (left_ms <= 0)
			return;
		rc = poll(p, 2, left_ms > G_MAXINT ? G_MAXINT : (int)left_ms);
		if (rc < 0 && errno != EINTR)
			return;
		if (rc > 0 && p[0].revents)
			return;
	}
}

/* One IDLE: entered, waited in, ended with DONE and its answer read. */
static enum mf_status imap_watch_idle(struct imap_watcher *w, struct imap_conn *c)
{
	gint64 bound;
	unsigned tag;
	int cont = 0;
	enum mf_status st;

	net_set_deadline(c->net, net_deadline_from_now(c->net));
	tag = imap_send(c, "IDLE");
	st = imap_wait_full(c, tag, imap_watch_untagged, w, NULL, &cont);
	net_set_deadline(c->net, 0);
	if (st != MF_OK)
		return st;
	if (!cont)
		return MF_ERR_REFUSED;  /* the IDLE ended at once: try again later */
	w->idled = 1;
	imap_watch_report(w);
	imap_watch_poll(w, c, g_get_monotonic_time() + IMAP_IDLE_RENEW_US);

	/* The server answers the IDLE's tag after whatever it had to say. */
	bound = net_deadline_from_now(c->net);
	if (imap_watch_stopping(w) && bound > g_get_monotonic_time() + IMAP_WATCH_END_US)
		bound = g_get_monotonic_time() + IMAP_WATCH_END_US;
	net_set_deadline(c->net, bound);
	log_debug("C: DONE");
	st = c->broken ? MF_ERR_IO : net_send(c->net, "DONE\r\n", 6);
	if (st == MF_OK)
		st = imap_wait(c, tag, imap_watch_untagged, w);
	else
		c->broken = 1;
	net_set_deadline(c->net, 0);
	return st;
}

/* A connection, the folder EXAMINEd, then IDLEs until the watch ends or
 * the connection fails. *established: an IDLE was entered (a server that
 * refuses every IDLE gets no quick retries). */
static enum imap_watch_end imap_watch_session(struct imap_watcher *w, int *established)
{
	struct imap_conn *c;
	enum imap_watch_end end = WATCH_LOST;
	enum mf_status st = MF_OK;

	*established = 0;
	if (imap_acquire_own(w->d, w->wire, &c) != MF_OK)
		return WATCH_LOST;
	net_set_deadline(c->net, net_deadline_from_now(c->net));
	/* The capabilities the connection read after its login. */
	if (!(c->caps & IMAP_CAP_IDLE))
		end = WATCH_NO_IDLE;
	else
		st = imap_examine(c, w->wire, 1);
	net_set_deadline(c->net, 0);
	if (st == MF_ERR_NOTFOUND)
		end = WATCH_GONE;
	w->idled = 0;
	if (st == MF_OK && end == WATCH_LOST) {
		w->exists = c->exists;
		w->heard = MAILBOX_NEWS_CHANGED;  /* what came before is unknown */
		w->seen = (struct mailbox_seen){ c->uidvalidity, c->uidnext, c->highestmodseq,
		                                 (uint32_t)c->exists };
		w->seen_only = 1;
		while (!imap_watch_stopping(w) && (st = imap_watch_idle(w, c)) == MF_OK)
			imap_watch_report(w);
		imap_watch_report(w);  /* what was heard before a failure */
		if (imap_watch_stopping(w))
			end = WATCH_STOPPED;
	}
	*established = w->idled;
	imap_release(w->d, c);
	return end;
}

static void imap_watch_sleep(struct imap_watcher *w, int ms)
{
	struct pollfd p = { .fd = w->wake, .events = POLLIN };

	if (!imap_watch_stopping(w))
		(void)poll(&p, 1, ms);
}

static gpointer imap_watch_thread(gpointer data)
{
	struct imap_watcher *w = data;
	int backoff = IMAP_WATCH_BACKOFF_MIN_MS;

	while (!imap_watch_stopping(w)) {
		int established;
		enum imap_watch_end end = imap_watch_session(w, &established);
		if (end == WATCH_STOPPED || imap_watch_stopping(w))
			break;
		if (end == WATCH_NO_IDLE) {
			g_mutex_lock(&w->d->watch_lock);
			if (!w->d->watch_off)
				log_info("the server offers no IDLE: changes by other clients are seen "
				         "after -o refresh");
			w->d->watch_off = 1;
			g_mutex_unlock(&w->d->watch_lock);
			break;
		}
		if (end == WATCH_GONE) {
			w->news(w->news_ctx, w->wire, MAILBOX_NEWS_CHANGED, NULL);
			break;
		}
		if (established)
			backoff = IMAP_WATCH_BACKOFF_MIN_MS;
		log_info("watch of %s lost: again in %d s", w->wire, backoff / 1000);
		imap_watch_sleep(w, backoff);
		backoff = backoff * 2 > IMAP_WATCH_BACKOFF_MAX_MS ? IMAP_WATCH_BACKOFF_MAX_MS
		                                                  : backoff * 2;
	}
	g_atomic_int_set(&w->done, 1);
	return NULL;
}

static void imap_watcher_signal(struct imap_watcher *w)
{
	uint64_t one = 1;

	g_atomic_int_set(&w->stop, 1);
	if (write(w->wake, &one, sizeof one) < 0)
		log_debug("watch %s: eventfd: %s", w->wire, g_strerror(errno));
}

static void imap_watcher_free(struct imap_watcher *w)
{
	if (w->thread)
		g_thread_join(w->thread);
	close(w->wake);
	g_free(w->wire);
	g_free(w);
}

static int imap_watch_named(const char *const *names, size_t n, const char *wire)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], wire) == 0)
			return 1;
	return 0;
}

/* Ends the watchers in ending (signalled already) and frees them; no lock
 * held: each may take up to IMAP_WATCH_END_US, all at once. */
static void imap_watch_join(GPtrArray *ending)
{
	for (guint i = 0; i < ending->len; i++)
		imap_watcher_free(g_ptr_array_index(ending, i));
	g_ptr_array_free(ending, TRUE);
}

enum mf_status imap_watch(struct mailbox *mb, const char *const *wire_names, size_t n,
                          mailbox_news_fn news, void *ctx)
{
	struct imap_driver *d = (struct imap_driver *)mb;
	GPtrArray *ending = g_ptr_array_new();
	enum mf_status st = MF_OK;

	g_mutex_lock(&d->watch_lock);
	if (d->watch_off)
		n = 0;
	for (guint i = d->watchers->len; i-- > 0;) {
		struct imap_watcher *w = g_ptr_array_index(d->watchers, i);
		if (!imap_watch_named(wire_names, n, w->wire) || g_atomic_int_get(&w->done)) {
			imap_watcher_signal(w);
			g_ptr_array_add(ending, g_ptr_array_steal_index(d->watchers, i));
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct imap_watcher *w;
		int have = 0;
		for (guint k = 0; k < d->watchers->len && !have; k++)
			have = strcmp(((struct imap_watcher *)g_ptr_array_index(d->watchers, k))->wire,
			              wire_names[i]) == 0;
		if (have)
			continue;
		w = g_new0(struct imap_watcher, 1);
		w->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->wake < 0) {
			log_warn("cannot watch %s: eventfd: %s", wire_names[i], g_strerror(errno));
			g_free(w);
			st = MF_ERR_NOMEM;
			continue;
		}
		w->d = d;
		w->wire = g_strdup(wire_names[i]);
		w->news = news;
		w->news_ctx = ctx;
		w->thread = cpus_thread_new("watch", imap_watch_thread, w);
		g_ptr_array_add(d->watchers, w);
	}
	if (d->watch_off)
		st = MF_ERR_NOTFOUND;
	g_mutex_unlock(&d->watch_lock);
	imap_watch_join(ending);
	return st;
}

void imap_watch_end(struct imap_driver *d)
{
	GPtrArray *ending = g_ptr_array_new();

	g_mutex_lock(&d->watch_lock);
	while (d->watchers->len > 0) {
		struct imap_watcher *w = g_ptr_array_steal_index(d->watchers, d->watchers->len - 1);
		imap_watcher_signal(w);
		g_ptr_array_add(ending, w);
	}
	g_mutex_unlock(&d->watch_lock);
	imap_watch_join(ending);
}

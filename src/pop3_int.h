/* pop3_int.h — what the POP3 driver's files share, and nothing outside
 * them includes (the public API is pop3_mailbox_open in mailbox.h):
 *
 *   pop3.c         the session (send, read, CAPA, UIDL/LIST/TOP scans),
 *                  listing, one body, read-ahead in batches
 *   pop3_stream.c  streamed read-ahead: a window of pipelined RETRs
 *
 * Parsing is pop3_parse.c's job (pure). */
#ifndef MAILFS_POP3_INT_H
#define MAILFS_POP3_INT_H

#include <stdint.h>
#include <glib.h>
#include "mailbox.h"
#include "net.h"

#define POP3_WINDOW 64                   /* TOP or RETR commands in flight when pipelining */

struct pop3_session {
	struct net_conn *net;
	char *in;                  /* received bytes not yet parsed start at in_pos */
	size_t in_pos, in_len, in_cap;
	unsigned caps;             /* enum pop3_capability bits, from CAPA */
	int caps_known;            /* CAPA answered +OK */
	int broken;                /* unusable: close without QUIT, don't reuse */
	int retrieved;             /* a RETR was sent: RSET before QUIT */
	gint64 deadline;           /* the current operation's (monotonic µs) */
	/* key (UIDL, or "hdr:" + SHA-256 of the headers) -> message number;
	 * NULL until the session has been listed. Owns its keys. */
	GHashTable *msgno_by_key;
};

struct pop3_driver {
	struct mailbox base;
	const struct mf_config *cfg;   /* borrowed */
	/* Guards busy: one operation at a time owns the session (POP3
	 * servers lock the maildrop), but the lock itself is never held
	 * across I/O, and a second operation waits for the first at most a
	 * timeout. */
	GMutex lock;
	GCond cond;
	int busy;
	int waiting;                   /* operations waiting for the session */
	gint64 deadline;               /* the owner's operation ends by this */
	struct pop3_session *session;  /* the current session, or NULL; the
	                                  busy owner's */
	int lost;                      /* sessions dropped by errors, for the stats */
};

enum mf_status pop3_send(struct pop3_session *s, const char *text, size_t len);
enum mf_status pop3_session_open(struct pop3_driver *d, struct pop3_session **out,
                                 char **err);
/* One operation at a time owns the session: enter waits (at most a
 * timeout) and takes it, leave gives it back. */
enum mf_status pop3_enter(struct pop3_driver *d);
void pop3_leave(struct pop3_driver *d);
void pop3_drop_session(struct pop3_driver *d);
void pop3_entries_free(GArray *entries);
enum mf_status pop3_scan(struct pop3_session *s, GHashTable *known, int want_headers,
                         GArray **out);
/* Reads the answer to one RETR msgno (sent already) into fd. */
enum mf_status pop3_retr_read(struct pop3_session *s, uint32_t msgno, uint64_t size_hint,
                              int fd, uint64_t *written);

/* pop3_stream.c: mailbox_ops.stream_bodies */
enum mf_status pop3_stream_bodies(struct mailbox *mb, const char *wire_name,
                                  uint32_t uidvalidity, const struct mailbox_stream *stream);

#endif

/* net.h — the transport: libcurl connects, secures (TLS or STARTTLS),
 * checks the certificate and logs in (CURLOPT_CONNECT_ONLY); afterwards
 * the protocol engines speak over net_send/net_recv. Knows nothing of
 * IMAP commands beyond what libcurl does for the login. */
#ifndef MAILFS_NET_H
#define MAILFS_NET_H

#include <stddef.h>
#include <glib.h>
#include "config.h"
#include "status.h"

struct net_conn;

/* Connects and logs in as cfg says. On failure returns the status and
 * sets *err to a one-line g_malloc'd explanation (never holding the
 * password). cfg is borrowed for the call. */
enum mf_status net_connect(const struct mf_config *cfg, struct net_conn **out,
                           char **err);
/* An operation's deadline (monotonic µs, g_get_monotonic_time): no wait
 * of net_send/net_recv goes past it (MF_ERR_TIMEOUT), so that a server
 * trickling bytes cannot stretch an operation. 0: none, each wait is
 * bounded by the timeout alone. */
void net_set_deadline(struct net_conn *c, gint64 deadline);
gint64 net_get_deadline(const struct net_conn *c);
/* Now plus the configured timeout. */
gint64 net_deadline_from_now(const struct net_conn *c);
/* Sends all of data, waiting at most timeout seconds for the socket. */
enum mf_status net_send(struct net_conn *c, const void *data, size_t len);
/* Receives at least one byte (up to cap) into buf, waiting at most
 * timeout seconds. A closed connection is MF_ERR_IO. */
enum mf_status net_recv(struct net_conn *c, void *buf, size_t cap, size_t *got);
/* Without waiting: 1 when the peer has closed the connection; else 0,
 * with whatever had arrived (at most cap bytes) in buf and *got. */
int net_peek_closed(struct net_conn *c, void *buf, size_t cap, size_t *got);
/* The socket, for a poll() beside others (an IMAP IDLE); -1 none. */
int net_socket(const struct net_conn *c);
/* The server's answer to the login (its lines after the client's last
 * one, each ending in CRLF), or NULL: an IMAP server may name its
 * capabilities there. */
const char *net_login_reply(const struct net_conn *c);
/* Closes the connection (the caller sends any LOGOUT first). NULL-safe. */
void net_close(struct net_conn *c);

/* Once per process before threads start / at exit. */
void net_global_init(void);
void net_global_cleanup(void);

#endif

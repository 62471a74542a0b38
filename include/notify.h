/* notify.h — readiness for the service manager: systemd's notification
 * protocol ("READY=1" in a datagram to $NOTIFY_SOCKET), so that a
 * Type=notify unit knows when the mount is up. Without $NOTIFY_SOCKET
 * every call does nothing. */
#ifndef MAILFS_NOTIFY_H
#define MAILFS_NOTIFY_H

/* Takes $NOTIFY_SOCKET out of the environment and keeps its address, so
 * that a password_command or oauth_command never inherits it. Call once,
 * first thing in main. */
void notify_init(void);
/* Sends state, e.g. "READY=1\nSTATUS=mounted", as one datagram to the
 * address notify_init kept. Returns 1 when sent, 0 when there is no
 * address, -errno when sending failed. */
int notify_send(const char *state);

#endif

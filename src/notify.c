/* notify.c — systemd's readiness protocol without libsystemd: the state
 * ("READY=1", "STATUS=…", "STOPPING=1") goes as one datagram to the
 * AF_UNIX socket named by $NOTIFY_SOCKET, a path or, with a leading '@',
 * an abstract address (sd_notify(3)). It knows nothing of mail or FUSE:
 * main decides when the mount is up. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "notify.h"

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;  /* 0: no service manager to tell */

void notify_init(void)
{
	const char *name = getenv("NOTIFY_SOCKET");
	size_t n;

	notify_addr_len = 0;
	if (!name)
		return;
	n = strlen(name);
	/* A path needs its NUL inside sun_path; an abstract name does not. */
	if ((name[0] == '/' && n < sizeof notify_addr.sun_path) ||
	    (name[0] == '@' && n > 1 && n <= sizeof notify_addr.sun_path)) {
		memset(&notify_addr, 0, sizeof notify_addr);
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, name, n);
		if (name[0] == '@')
			notify_addr.sun_path[0] = 0;  /* the abstract namespace */
		/* An abstract name's length is exact: trailing NULs would be part of it. */
		notify_addr_len = offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/');
	}
	unsetenv("NOTIFY_SOCKET");
}

int notify_send(const char *state)
{
	int fd, rc = 1;

	if (notify_addr_len == 0)
		return 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL,
	           (const struct sockaddr *)&notify_addr, notify_addr_len) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

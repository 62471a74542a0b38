/* mountdev.c — a mount's device from /proc/self/mountinfo, and its
 * read-ahead through /sys/class/bdi. The kernel gives a FUSE mount 128
 * KiB of read-ahead, and the INIT reply can only lower it; raised
 * afterwards, a reader of a large body sends a READ per MiB instead of
 * one per 128 KiB. Must not: touch the mount itself (a stat of the
 * mount point from its own server may wait on itself). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "mountdev.h"

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static char *mountdev_unescape(const char *s, size_t len)
{
	GString *out = g_string_sized_new(len);

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\\' && i + 3 < len &&
		    s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
		    s[i + 3] >= '0' && s[i + 3] <= '7') {
			g_string_append_c(out, (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 +
			                              (s[i + 3] - '0')));
			i += 3;
		} else {
			g_string_append_c(out, s[i]);
		}
	}
	return g_string_free(out, FALSE);
}

char *mountdev_of(const char *mountinfo, const char *mountpoint)
{
	char *found = NULL;
	const char *line = mountinfo;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		/* id parent major:minor root mountpoint options ... */
		const char *f[5];
		size_t flen[5];
		const char *p = line, *stop = line + len;
		int n = 0;
		while (n < 5 && p < stop) {
			while (p < stop && *p == ' ')
				p++;
			f[n] = p;
			while (p < stop && *p != ' ')
				p++;
			flen[n] = (size_t)(p - f[n]);
			if (flen[n] > 0)
				n++;
		}
		if (n == 5 && memchr(f[2], ':', flen[2])) {
			char *mp = mountdev_unescape(f[4], flen[4]);
			if (strcmp(mp, mountpoint) == 0) {
				g_free(found);  /* a later line is a mount on top */
				found = g_strndup(f[2], flen[2]);
			}
			g_free(mp);
		}
		line = end ? end + 1 : NULL;
	}
	return found;
}

int mountdev_set_readahead(const char *mountpoint, unsigned kib)
{
	char *info = NULL, *dev, *path, value[16];
	int fd, rc = 0;
	size_t len;

	if (!g_file_get_contents("/proc/self/mountinfo", &info, NULL, NULL))
		return ENOENT;
	dev = mountdev_of(info, mountpoint);
	g_free(info);
	if (!dev)
		return ENOENT;
	path = g_strdup_printf("/sys/class/bdi/%s/read_ahead_kb", dev);
	g_free(dev);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	g_free(path);
	if (fd < 0)
		return errno;
	len = (size_t)g_snprintf(value, sizeof value, "%u\n", kib);
	if (write(fd, value, len) != (ssize_t)len)
		rc = errno ? errno : EIO;
	close(fd);
	return rc;
}

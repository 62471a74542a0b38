/* mountdev.h — the kernel's side of a mount: which device it is
 * (/proc/self/mountinfo), and its read-ahead (/sys/class/bdi/<dev>). */
#ifndef MAILFS_MOUNTDEV_H
#define MAILFS_MOUNTDEV_H

/* The "major:minor" of the newest mount on mountpoint (an absolute,
 * resolved path) in the text of a /proc/self/mountinfo; NULL when there
 * is none. Caller frees. */
char *mountdev_of(const char *mountinfo, const char *mountpoint);

/* Sets the read-ahead of the mount on mountpoint to kib KiB. Returns 0,
 * or an errno (EACCES when not root, ENOENT when not mounted). */
int mountdev_set_readahead(const char *mountpoint, unsigned kib);

#endif

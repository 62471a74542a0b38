/* floorfs.c — the least a FUSE file system can do for a read: what
 * bench/wakeup-bench.sh sets beside mailfs to tell the kernel's part of a
 * warm read from mailfs's.
 *
 *   floorfs SOURCE MOUNTPOINT
 *
 * It shows the regular files of the directory SOURCE (read once, at the
 * start) read-only in a directory of the same name below MOUNTPOINT.
 * Names and attributes come from memory with timeouts of a day; an open
 * opens the file and answers at once, keep_cache and noflush set, and puts
 * a body of up to 1 MiB into the page cache at its first open, as mailfs
 * does. So a warm tar costs one OPEN (and a RELEASE in the background) a
 * file, and nothing else: any file system that must see its opens pays
 * at least this. Runs in the foreground with libfuse's default
 * multi-threaded loop, as mailfs does; unmount with fusermount3 -u. */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 34
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TIMEOUT 86400.0
#define PUSH_MAX (1024 * 1024)

struct entry {
	char *name;
	struct stat st;
	int pushed;
};

static const char *src_dir, *dir_name;
static struct entry *entries;
static size_t n_entries;
static struct fuse_session *se;

/* Node ids: 1 the root, 2 the directory, 3 + i entry i. */
static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static void fill(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	if (ino <= 2) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
	} else {
		*st = entries[ino - 3].st;
		st->st_ino = ino;
		st->st_mode = S_IFREG | 0444;
	}
}

static void ff_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct entry key = { .name = (char *)name }, *hit = NULL;

	memset(&e, 0, sizeof e);
	if (parent == 1 && strcmp(name, dir_name) == 0)
		e.ino = 2;
	else if (parent == 2 &&
	         (hit = bsearch(&key, entries, n_entries, sizeof *entries, by_name)) != NULL)
		e.ino = 3 + (fuse_ino_t)(hit - entries);
	if (!e.ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	e.attr_timeout = e.entry_timeout = TIMEOUT;
	fill(e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void ff_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill(ino, &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

static void ff_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
	char *buf = malloc(size);
	size_t used = 0, count = ino == 1 ? 1 : ino == 2 ? n_entries : 0;

	(void)fi;
	for (size_t i = (size_t)off; buf && i < count; i++) {
		struct fuse_entry_param e;
		const char *name = ino == 1 ? dir_name : entries[i].name;
		size_t len;

		memset(&e, 0, sizeof e);
		e.ino = ino == 1 ? 2 : 3 + i;
		e.attr_timeout = e.entry_timeout = TIMEOUT;
		fill(e.ino, &e.attr);
		len = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)i + 1);
		if (len > size - used)
			break;
		used += len;
	}
	if (buf)
		fuse_reply_buf(req, buf, used);
	else
		fuse_reply_err(req, ENOMEM);
	free(buf);
}

static void ff_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct entry *en = &entries[ino - 3];
	char *path;
	int fd;

	if (ino < 3) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (asprintf(&path, "%s/%s", src_dir, en->name) < 0) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	fi->keep_cache = 1;
	fi->noflush = 1;
	if (!__atomic_exchange_n(&en->pushed, 1, __ATOMIC_RELAXED) &&
	    en->st.st_size > 0 && en->st.st_size <= PUSH_MAX) {
		struct fuse_bufvec bufv = FUSE_BUFVEC_INIT((size_t)en->st.st_size);

		bufv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bufv.buf[0].fd = fd;
		bufv.buf[0].pos = 0;
		fuse_lowlevel_notify_store(se, ino, 0, &bufv, 0);
	}
	fuse_reply_open(req, fi);
}

static void ff_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	char *buf = malloc(size ? size : 1);
	ssize_t n = buf ? pread((int)fi->fh, buf, size, off) : -1;

	(void)ino;
	if (n < 0)
		fuse_reply_err(req, buf ? errno : ENOMEM);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void ff_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = ff_lookup,
	.getattr = ff_getattr,
	.readdirplus = ff_readdirplus,
	.open = ff_open,
	.read = ff_read,
	.release = ff_release,
};

static int load(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t cap = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (n_entries == cap) {
			cap = cap ? cap * 2 : 1024;
			entries = realloc(entries, cap * sizeof *entries);
			if (!entries)
				return -1;
		}
		entries[n_entries].name = strdup(de->d_name);
		entries[n_entries].st = st;
		entries[n_entries].pushed = 0;
		n_entries++;
	}
	closedir(d);
	qsort(entries, n_entries, sizeof *entries, by_name);
	return 0;
}

int main(int argc, char **argv)
{
	char *fargv[] = { argv[0], "-o", "ro,default_permissions,fsname=floorfs", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	int rc = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: floorfs SOURCE MOUNTPOINT\n");
		return 2;
	}
	src_dir = argv[1];
	dir_name = strrchr(src_dir, '/') ? strrchr(src_dir, '/') + 1 : src_dir;
	if (load(src_dir) != 0) {
		perror(src_dir);
		return 1;
	}
	se = fuse_session_new(&args, &ops, sizeof ops, NULL);
	if (se && fuse_set_signal_handlers(se) == 0 && fuse_session_mount(se, argv[2]) == 0) {
		rc = fuse_session_loop_mt(se, NULL) != 0;
		fuse_session_unmount(se);
	}
	if (se) {
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
	}
	return rc;
}

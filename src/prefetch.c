/* prefetch.c — `mailfs prefetch PATH...`: makes folders (or a whole
 * mount) available offline by having the running mount fetch every
 * uncached body under PATH into its cache.
 *
 * A client of the mount, not a second daemon: it walks PATH, learns from
 * extended attributes what the mount holds (the root's user.mailfs.stats:
 * cache_size and cache_used; a folder's user.mailfs.cache; a message's
 * user.mailfs.cached, asked only in a folder cached in part), and opens
 * (then closes) each uncached message in UID order: an open of an
 * uncached message is what downloads it, and a reader going through a
 * folder in UID order is what the mount's read-ahead follows. So it sets
 * no \Seen (the mount reads with BODY.PEEK unless mounted with
 * mark_seen), fetches nothing twice, and resumes where it stopped.
 *
 * UID order is inode order: a message's inode number is its folder's
 * base << 32 | its UID (the store's: POP3's are in the server's list
 * order), so a folder's files sorted by st_ino are in UID order, at the
 * cost of no request (user.mail.uid would cost a FUSE round trip per
 * message: 0.2 ms each, measured). Were that ever not so, the order
 * would change, not what is fetched.
 *
 * Must not: include store, sync, driver or FUSE headers (it is a plain
 * POSIX client of the mount); read a body (an open is enough). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <glib.h>
#include "prefetch.h"

#define PF_EXIT_OK 0
#define PF_EXIT_FAILURE 1
#define PF_EXIT_USAGE 2
#define PF_DRAW_INTERVAL 0.25    /* seconds between two redraws of the bar */
#define PF_GIVE_UP 5             /* failures in a row that end the run */
#define PF_ERRORS_SHOWN 20       /* error lines printed at most */

static volatile sig_atomic_t pf_signal;

struct pf_item {          /* one uncached message */
	char *path;
	uint64_t ino;         /* its inode number: UID order (see above) */
	uint64_t size;
};

struct pf_folder {
	char *label;          /* its path inside the mount, e.g. "Archive/2023" */
	GArray *todo;         /* struct pf_item, in UID order once sorted */
	GPtrArray *cached;    /* paths of the messages cached already */
};

struct pf_mount {
	char *root;
	dev_t dev;
	uint64_t cache_size, cache_used;
	uint64_t need, held;  /* bytes uncached and cached under its paths */
	GPtrArray *folders;   /* struct pf_folder * */
};

struct pf_run {
	GPtrArray *mounts;    /* struct pf_mount * */
	GHashTable *seen;     /* "dev:ino" of what was walked: PATHs may overlap */
	const char *label;    /* the summary's: PATH, or "N paths" */
	int tty, width;
	double start;
	const char *current;  /* the folder being fetched */
	uint64_t msgs_total, bytes_total, msgs_done, bytes_done;
	uint64_t already, failed, gone, errors_shown;
	int drawn;
	/* On a terminal the bar is redrawn by a thread of its own, so that
	 * it moves (time, rate, time left) while one long open waits. The
	 * lock covers the counters above and stderr. */
	GMutex lock;
	GCond tick;
	GThread *ticker;
	int stop_ticking;
};

/* ------------------------------------------------------------ formatting */

int prefetch_json_u64(const char *json, const char *key, uint64_t *out)
{
	char *pat = g_strdup_printf("\"%s\":", key);
	const char *p = json ? strstr(json, pat) : NULL;
	char *end;

	g_free(pat);
	if (!p)
		return -1;
	p += strlen(key) + 3;
	while (*p == ' ')
		p++;
	if (!g_ascii_isdigit(*p))
		return -1;
	errno = 0;
	*out = g_ascii_strtoull(p, &end, 10);
	return errno ? -1 : 0;
}

static const char *const pf_units[] = { "B", "KiB", "MiB", "GiB", "TiB" };

static int pf_unit_of(uint64_t bytes)
{
	int u = 0;

	while (u + 1 < (int)G_N_ELEMENTS(pf_units) && bytes >= (UINT64_C(1024) << (10 * u)))
		u++;
	return u;
}

static void pf_scaled(char *buf, size_t len, uint64_t bytes, int u)
{
	if (u == 0)
		snprintf(buf, len, "%" PRIu64, bytes);
	else
		snprintf(buf, len, "%.1f", (double)bytes / (double)(UINT64_C(1) << (10 * u)));
}

void prefetch_format_bytes(char *buf, size_t len, uint64_t done, uint64_t total)
{
	char a[32], b[32];
	int u = pf_unit_of(total ? total : done);

	pf_scaled(a, sizeof a, done, u);
	if (!total) {
		snprintf(buf, len, "%s %s", a, pf_units[u]);
		return;
	}
	pf_scaled(b, sizeof b, total, u);
	snprintf(buf, len, "%s/%s %s", a, b, pf_units[u]);
}

void prefetch_format_eta(char *buf, size_t len, double seconds)
{
	uint64_t s = seconds > 0 ? (uint64_t)(seconds + 0.5) : 0;

	if (s >= 3600)
		snprintf(buf, len, "%" PRIu64 ":%02u:%02u", s / 3600, (unsigned)(s / 60 % 60),
		         (unsigned)(s % 60));
	else
		snprintf(buf, len, "%u:%02u", (unsigned)(s / 60), (unsigned)(s % 60));
}

void prefetch_format_bar(char *buf, size_t len, size_t width, const char *label,
                         uint64_t msgs_done, uint64_t msgs_total, uint64_t bytes_done,
                         uint64_t bytes_total, double seconds)
{
	char bytes[64], rate[48], eta[32], tail[192];
	size_t room, lablen = label ? strlen(label) : 0;
	const char *lab = label;

	prefetch_format_bytes(bytes, sizeof bytes, bytes_done, bytes_total);
	if (seconds >= 0.1 && bytes_done > 0) {
		double r = (double)bytes_done / seconds;
		prefetch_format_bytes(rate, sizeof rate, (uint64_t)r, 0);
		prefetch_format_eta(eta, sizeof eta,
		                    bytes_total > bytes_done ? (double)(bytes_total - bytes_done) / r : 0);
	} else {
		snprintf(rate, sizeof rate, "-- %s", pf_units[pf_unit_of(bytes_total)]);
		snprintf(eta, sizeof eta, "-:--");
	}
	snprintf(tail, sizeof tail, "%" PRIu64 "/%" PRIu64 " msgs  %s  %s/s  %s left",
	         msgs_done, msgs_total, bytes, rate, eta);
	/* The label gives way first, from its start ("...2023"), then goes. */
	room = width ? (width > strlen(tail) + 2 ? width - strlen(tail) - 2 : 0) : SIZE_MAX;
	if (lablen > room) {
		if (room < 8) {
			lab = NULL;
		} else {
			lab = label + lablen - (room - 3);
			while (*lab && (*lab & 0xC0) == 0x80)  /* not inside a UTF-8 character */
				lab++;
		}
	}
	if (!lab)
		snprintf(buf, len, "%s", tail);
	else
		snprintf(buf, len, "%s%s: %s", lab == label ? "" : "...", lab, tail);
	if (width && strlen(buf) > width)
		buf[width] = 0;
}

/* --------------------------------------------------------------- output */

static double pf_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* pf_bar_clear and pf_bar_draw: with r->lock held. */
static void pf_bar_clear(struct pf_run *r)
{
	if (r->drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		r->drawn = 0;
	}
}

/* Redraws the bar in place on a terminal. */
static void pf_bar_draw(struct pf_run *r)
{
	char line[512];
	double now = pf_now();

	if (!r->tty)
		return;
	prefetch_format_bar(line, sizeof line, r->width > 1 ? (size_t)r->width - 1 : 0, r->current,
	                    r->msgs_done, r->msgs_total, r->bytes_done, r->bytes_total,
	                    now - r->start);
	fprintf(stderr, "\r%s\033[K", line);
	fflush(stderr);
	r->drawn = 1;
}

static void pf_error(struct pf_run *r, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void pf_error(struct pf_run *r, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_strdelimit(msg, "\r\n", ' ');
	if (r) {
		g_mutex_lock(&r->lock);
		pf_bar_clear(r);
		if (r->errors_shown++ == PF_ERRORS_SHOWN)
			fprintf(stderr, "mailfs: prefetch: more errors; not shown\n");
	}
	if (!r || r->errors_shown <= PF_ERRORS_SHOWN)
		fprintf(stderr, "mailfs: prefetch: %s\n", msg);
	if (r)
		g_mutex_unlock(&r->lock);
	g_free(msg);
}

/* The bar's thread: a draw every PF_DRAW_INTERVAL until told to stop. */
static gpointer pf_ticker(gpointer data)
{
	struct pf_run *r = data;

	g_mutex_lock(&r->lock);
	for (;;) {
		g_cond_wait_until(&r->tick, &r->lock,
		                  g_get_monotonic_time() + (gint64)(PF_DRAW_INTERVAL * G_USEC_PER_SEC));
		if (r->stop_ticking)
			break;
		pf_bar_draw(r);
	}
	g_mutex_unlock(&r->lock);
	return NULL;
}

static void pf_usage(FILE *out)
{
	fprintf(out,
"usage: mailfs prefetch PATH...\n"
"\n"
"Fetches every message body under PATH (folders of a running mailfs mount,\n"
"or the mount itself) into the mount's cache, so that it can be read\n"
"offline. Resumable: what is cached already is skipped. Ctrl-C stops it\n"
"cleanly. It refuses when the paths do not fit in the mount's cache_size.\n"
"\n"
"See mailfs(1), PREFETCH.\n");
}

/* ------------------------------------------------------------ the mount */

/* An extended attribute's value (g_free), or NULL with errno set. */
static char *pf_getxattr(const char *path, const char *name)
{
	char small[256];
	ssize_t n = getxattr(path, name, small, sizeof small - 1);
	char *v;

	if (n >= 0) {
		small[n] = 0;
		return g_strdup(small);
	}
	if (errno != ERANGE)
		return NULL;
	n = getxattr(path, name, NULL, 0);
	if (n < 0)
		return NULL;
	v = g_malloc((size_t)n + 1);
	n = getxattr(path, name, v, (size_t)n);
	if (n < 0) {
		int e = errno;
		g_free(v);
		errno = e;
		return NULL;
	}
	v[n] = 0;
	return v;
}

/* The top directory of the file system real lies on. */
static char *pf_fs_top(const char *real, dev_t dev)
{
	char *cur = g_strdup(real);

	while (strcmp(cur, "/") != 0) {
		char *parent = g_path_get_dirname(cur);
		struct stat sb;
		if (stat(parent, &sb) != 0 || sb.st_dev != dev) {
			g_free(parent);
			break;
		}
		g_free(cur);
		cur = parent;
	}
	return cur;
}

static void pf_folder_free(gpointer p)
{
	struct pf_folder *f = p;

	for (guint i = 0; i < f->todo->len; i++)
		g_free(g_array_index(f->todo, struct pf_item, i).path);
	g_array_free(f->todo, TRUE);
	g_ptr_array_free(f->cached, TRUE);
	g_free(f->label);
	g_free(f);
}

static void pf_mount_free(gpointer p)
{
	struct pf_mount *m = p;

	g_ptr_array_free(m->folders, TRUE);
	g_free(m->root);
	g_free(m);
}

/* The mailfs mount real (a stat'ed path, on dev) is on, known or new;
 * NULL after printing why there is none (an exit status 2). */
static struct pf_mount *pf_mount_of(struct pf_run *r, const char *arg, const char *real,
                                    dev_t dev)
{
	struct pf_mount *m;
	char *root, *stats;

	for (guint i = 0; i < r->mounts->len; i++) {
		m = g_ptr_array_index(r->mounts, i);
		if (m->dev == dev)
			return m;
	}
	root = pf_fs_top(real, dev);
	stats = pf_getxattr(root, "user.mailfs.stats");
	m = g_new0(struct pf_mount, 1);
	m->root = root;
	m->dev = dev;
	m->folders = g_ptr_array_new_with_free_func(pf_folder_free);
	if (!stats) {
		pf_error(NULL, "%s is not on a mailfs mount", arg);
		pf_mount_free(m);
		return NULL;
	}
	if (prefetch_json_u64(stats, "cache_size", &m->cache_size) != 0 ||
	    prefetch_json_u64(stats, "cache_used", &m->cache_used) != 0) {
		pf_error(NULL, "the mailfs mounted on %s does not tell its cache's size "
		         "(an older mailfs?)", root);
		g_free(stats);
		pf_mount_free(m);
		return NULL;
	}
	g_free(stats);
	g_ptr_array_add(r->mounts, m);
	return m;
}

/* ------------------------------------------------------------- the walk */

static int pf_seen(struct pf_run *r, dev_t dev, ino_t ino)
{
	char *key = g_strdup_printf("%ju:%ju", (uintmax_t)dev, (uintmax_t)ino);

	if (g_hash_table_contains(r->seen, key)) {
		g_free(key);
		return 1;
	}
	g_hash_table_add(r->seen, key);
	return 0;
}

static struct pf_folder *pf_folder_new(struct pf_mount *m, const char *dir)
{
	struct pf_folder *f = g_new0(struct pf_folder, 1);
	size_t n = strlen(m->root);

	if (strcmp(m->root, "/") == 0)
		n = 0;
	f->label = g_strdup(dir[n] == '/' ? dir + n + 1 : dir + n);
	if (!*f->label) {
		g_free(f->label);
		f->label = g_path_get_basename(m->root);
	}
	f->todo = g_array_new(FALSE, FALSE, sizeof(struct pf_item));
	f->cached = g_ptr_array_new_with_free_func(g_free);
	g_ptr_array_add(m->folders, f);
	return f;
}

/* Adds the message at path to f: to fetch or cached. cached: 1 or 0
 * when known, -1 to ask the mount. */
static void pf_add_message(struct pf_run *r, struct pf_mount *m, struct pf_folder *f,
                           char *path, int cached)
{
	struct pf_item it = { path, 0, 0 };
	struct stat sb;
	char *v;

	if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		g_free(path);  /* gone meanwhile, or not a message */
		return;
	}
	if (cached < 0) {
		v = pf_getxattr(path, "user.mailfs.cached");
		if (!v) {  /* not a message of the server's (a file being written) */
			g_free(path);
			return;
		}
		cached = strcmp(v, "1") == 0;
		g_free(v);
	}
	if (cached) {
		m->held += (uint64_t)sb.st_size;
		r->already++;
		g_ptr_array_add(f->cached, path);
		return;
	}
	it.ino = (uint64_t)sb.st_ino;
	it.size = (uint64_t)sb.st_size;
	m->need += it.size;
	r->msgs_total++;
	r->bytes_total += it.size;
	g_array_append_val(f->todo, it);
}

static int pf_item_cmp(gconstpointer a, gconstpointer b)
{
	const struct pf_item *x = a, *y = b;

	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Walks the directory dir (a folder, or the mount's root) and the
 * folders below it. Returns 0, or -1 after an error it reported. */
static int pf_walk_dir(struct pf_run *r, struct pf_mount *m, const char *dir)
{
	GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
	GPtrArray *dirs = g_ptr_array_new_with_free_func(g_free);
	uint64_t messages = 0, cached = 0;
	struct pf_folder *f = NULL;
	struct dirent *e;
	char *summary;
	int rc = 0, known = 0;
	DIR *d = opendir(dir);

	if (!d) {
		pf_error(r, "%s: %s", dir, g_strerror(errno));
		rc = -1;
		goto out;
	}
	while (!pf_signal && (errno = 0, e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char *p = g_build_filename(dir, e->d_name, NULL);
		unsigned char type = e->d_type;
		struct stat sb;
		if (type == DT_UNKNOWN)
			type = lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode) ? DT_DIR : DT_REG;
		if (pf_seen(r, m->dev, e->d_ino))
			g_free(p);
		else
			g_ptr_array_add(type == DT_DIR ? dirs : files, p);
	}
	if (errno && !pf_signal) {
		pf_error(r, "%s: %s", dir, g_strerror(errno));
		rc = -1;
	}
	closedir(d);
	if (files->len) {
		f = pf_folder_new(m, dir);
		/* What the folder holds, in one request: whether each file must
		 * be asked (some cached, not all; or a file that is no message,
		 * one being written), or none (all, or none). */
		summary = pf_getxattr(dir, "user.mailfs.cache");
		known = summary && prefetch_json_u64(summary, "messages", &messages) == 0 &&
		        prefetch_json_u64(summary, "cached", &cached) == 0 &&
		        messages == files->len && (cached == 0 || cached == messages);
		g_free(summary);
		for (guint i = 0; i < files->len && !pf_signal; i++) {
			pf_add_message(r, m, f, g_ptr_array_index(files, i), known ? cached != 0 : -1);
			files->pdata[i] = NULL;
		}
		g_array_sort(f->todo, pf_item_cmp);
	}
	for (guint i = 0; i < dirs->len && !pf_signal; i++)
		if (pf_walk_dir(r, m, g_ptr_array_index(dirs, i)) != 0)
			rc = -1;
out:
	g_ptr_array_free(files, TRUE);
	g_ptr_array_free(dirs, TRUE);
	return rc;
}

/* Adds what arg names. Returns 0, -1 after an error it reported (the run
 * goes on), or PF_EXIT_USAGE. */
static int pf_walk_arg(struct pf_run *r, const char *arg)
{
	struct pf_mount *m;
	struct stat sb;
	char *real = realpath(arg, NULL);
	int rc = 0;

	if (!real || stat(real, &sb) != 0) {
		pf_error(NULL, "%s: %s", arg, g_strerror(errno));
		free(real);
		return PF_EXIT_USAGE;
	}
	m = pf_mount_of(r, arg, real, sb.st_dev);
	if (!m) {
		rc = PF_EXIT_USAGE;
	} else if (pf_seen(r, sb.st_dev, sb.st_ino)) {
		rc = 0;  /* named twice */
	} else if (S_ISDIR(sb.st_mode)) {
		rc = pf_walk_dir(r, m, real);
	} else {
		char *dir = g_path_get_dirname(real);
		struct pf_folder *f = pf_folder_new(m, dir);
		pf_add_message(r, m, f, g_strdup(real), -1);
		g_free(dir);
	}
	free(real);
	return rc;
}

/* ----------------------------------------------------------- the fetch */

/* Refuses when a mount's share of the paths does not fit in its cache:
 * what is to be fetched must fit beside what the cache holds of the
 * paths already (the rest, other folders' bodies, the cache evicts). */
static int pf_check_fit(struct pf_run *r)
{
	for (guint i = 0; i < r->mounts->len; i++) {
		struct pf_mount *m = g_ptr_array_index(r->mounts, i);
		uint64_t room = m->cache_size > m->held ? m->cache_size - m->held : 0;
		char need[32], rm[32], size[32], held[32];
		if (m->need <= room)
			continue;
		prefetch_format_bytes(need, sizeof need, m->need, 0);
		prefetch_format_bytes(rm, sizeof rm, room, 0);
		prefetch_format_bytes(size, sizeof size, m->cache_size, 0);
		prefetch_format_bytes(held, sizeof held, m->held, 0);
		pf_error(NULL, "%s: %s to fetch does not fit in the cache, which has room for %s "
		         "(cache_size %s, %s of it holding these folders already); mount with a "
		         "larger -o cache_size", r->mounts->len > 1 ? m->root : r->label, need, rm,
		         size, held);
		return -1;
	}
	return 0;
}

/* Opens path and reads its first byte: the mount fetches the body when
 * it is not cached (at the open, or at the READ of a read-only mount,
 * which sees no opens), and marks it recently used when it is. Returns 0
 * or an errno. */
static int pf_open(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	char c;
	int err = 0;

	if (fd < 0)
		return errno ? errno : EIO;
	if (pread(fd, &c, 1, 0) < 0)
		err = errno ? errno : EIO;
	close(fd);
	return err;
}

/* When the cache must evict to take the new bodies, the cached ones of
 * the paths go last: opened first, they become the most recently used. */
static void pf_touch_cached(struct pf_mount *m)
{
	if (m->cache_used + m->need <= m->cache_size)
		return;
	for (guint i = 0; i < m->folders->len && !pf_signal; i++) {
		struct pf_folder *f = g_ptr_array_index(m->folders, i);
		for (guint j = 0; j < f->cached->len && !pf_signal; j++)
			pf_open(g_ptr_array_index(f->cached, j));
	}
}

/* Returns 0, or -1 after giving up (PF_GIVE_UP failures in a row). */
static int pf_fetch_mount(struct pf_run *r, struct pf_mount *m)
{
	int in_a_row = 0;

	pf_touch_cached(m);
	for (guint i = 0; i < m->folders->len && !pf_signal; i++) {
		struct pf_folder *f = g_ptr_array_index(m->folders, i);
		if (!f->todo->len)
			continue;
		g_mutex_lock(&r->lock);
		r->current = f->label;
		g_mutex_unlock(&r->lock);
		for (guint j = 0; j < f->todo->len && !pf_signal; j++) {
			const struct pf_item *it = &g_array_index(f->todo, struct pf_item, j);
			int err = pf_open(it->path);
			if (err == EINTR && pf_signal)
				break;  /* abandoned: it is fetched again next time */
			g_mutex_lock(&r->lock);
			if (err == ENOENT) {
				r->gone++;  /* expunged meanwhile: nothing to keep */
			} else if (err) {
				r->failed++;
			} else {
				r->msgs_done++;
				r->bytes_done += it->size;
			}
			g_mutex_unlock(&r->lock);
			if (err && err != ENOENT) {
				pf_error(r, "%s: %s", it->path, g_strerror(err));
				if (++in_a_row >= PF_GIVE_UP) {
					pf_error(r, "giving up after %d failures in a row", in_a_row);
					return -1;
				}
				continue;
			}
			in_a_row = 0;
		}
	}
	return 0;
}

static void pf_summary(struct pf_run *r)
{
	char bytes[64], rate[48], extra[96] = "";
	double secs = pf_now() - r->start;

	if (r->gone)
		snprintf(extra, sizeof extra, "; %" PRIu64 " gone from the server", r->gone);
	if (!pf_signal && r->msgs_total == 0) {
		printf("%s: nothing to fetch; %" PRIu64 " messages already cached\n", r->label,
		       r->already);
	} else if (pf_signal || r->msgs_done + r->failed + r->gone < r->msgs_total) {
		prefetch_format_bytes(bytes, sizeof bytes, r->bytes_done, r->bytes_total);
		printf("%s: %s: fetched %" PRIu64 " of %" PRIu64 " messages (%s) in %.1f s; "
		       "%" PRIu64 " already cached; %" PRIu64 " failed%s; run it again to go on\n",
		       r->label, pf_signal ? "interrupted" : "stopped", r->msgs_done, r->msgs_total,
		       bytes, secs, r->already, r->failed, extra);
	} else {
		prefetch_format_bytes(bytes, sizeof bytes, r->bytes_done, 0);
		prefetch_format_bytes(rate, sizeof rate,
		                      secs > 0 ? (uint64_t)((double)r->bytes_done / secs) : 0, 0);
		printf("%s: fetched %" PRIu64 " messages (%s) in %.1f s, %s/s; %" PRIu64
		       " already cached; %" PRIu64 " failed%s\n", r->label, r->msgs_done, bytes, secs,
		       rate, r->already, r->failed, extra);
	}
	fflush(stdout);
}

/* The folder the bar names first: the first with something to fetch. */
static const char *pf_first_label(struct pf_run *r)
{
	for (guint k = 0; k < r->mounts->len; k++) {
		struct pf_mount *m = g_ptr_array_index(r->mounts, k);
		for (guint i = 0; i < m->folders->len; i++) {
			struct pf_folder *f = g_ptr_array_index(m->folders, i);
			if (f->todo->len)
				return f->label;
		}
	}
	return r->label;
}

static void pf_on_signal(int sig)
{
	pf_signal = sig;
}

int prefetch_main(int argc, char **argv)
{
	struct pf_run r = { 0 };
	struct sigaction sa = { 0 };
	struct winsize ws;
	char *label = NULL;
	int rc = PF_EXIT_OK, i, first = 1;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			pf_usage(stdout);
			return PF_EXIT_OK;
		}
		if (strcmp(argv[i], "--") == 0) {
			first = ++i;
			break;
		}
		if (argv[i][0] == '-') {
			pf_error(NULL, "unknown option '%s' (usage: mailfs prefetch PATH...)", argv[i]);
			return PF_EXIT_USAGE;
		}
	}
	if (first >= argc) {
		pf_error(NULL, "no PATH given (usage: mailfs prefetch PATH...)");
		return PF_EXIT_USAGE;
	}

	/* A first Ctrl-C stops after the message being fetched; a second
	 * one (SA_RESETHAND) kills. No SA_RESTART: a wait gives way. */
	sa.sa_handler = pf_on_signal;
	sa.sa_flags = SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	g_mutex_init(&r.lock);
	g_cond_init(&r.tick);
	r.mounts = g_ptr_array_new_with_free_func(pf_mount_free);
	r.seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	if (argc - first == 1) {
		label = g_strdup(argv[first]);
		while (strlen(label) > 1 && label[strlen(label) - 1] == '/')
			label[strlen(label) - 1] = 0;
	} else {
		label = g_strdup_printf("%d paths", argc - first);
	}
	r.label = label;
	r.tty = isatty(STDERR_FILENO);
	r.width = r.tty && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col ? ws.ws_col : 80;
	r.start = pf_now();

	for (i = first; i < argc && !pf_signal; i++) {
		int w = pf_walk_arg(&r, argv[i]);
		if (w == PF_EXIT_USAGE) {
			rc = PF_EXIT_USAGE;
			goto out;
		}
		if (w != 0)
			rc = PF_EXIT_FAILURE;
	}
	if (!pf_signal && pf_check_fit(&r) != 0) {
		rc = PF_EXIT_FAILURE;
		goto out;
	}
	r.start = pf_now();  /* the rate is the fetch's, not the walk's */
	if (r.tty && r.msgs_total) {
		r.current = pf_first_label(&r);
		pf_bar_draw(&r);  /* where it starts: 0 of N */
		r.ticker = g_thread_new("bar", pf_ticker, &r);
	}
	for (guint k = 0; k < r.mounts->len && !pf_signal; k++)
		if (pf_fetch_mount(&r, g_ptr_array_index(r.mounts, k)) != 0)
			break;
	if (r.ticker) {
		g_mutex_lock(&r.lock);
		r.stop_ticking = 1;
		g_cond_signal(&r.tick);
		g_mutex_unlock(&r.lock);
		g_thread_join(r.ticker);
		pf_bar_draw(&r);  /* where it ended */
		pf_bar_clear(&r);
	}
	pf_summary(&r);
	if (r.failed)
		rc = PF_EXIT_FAILURE;
	if (pf_signal)
		rc = 128 + pf_signal;
out:
	g_ptr_array_free(r.mounts, TRUE);
	g_hash_table_destroy(r.seen);
	g_mutex_clear(&r.lock);
	g_cond_clear(&r.tick);
	g_free(label);
	return rc;
}

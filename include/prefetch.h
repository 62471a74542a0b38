/* prefetch.h — `mailfs prefetch PATH...`: every uncached body under PATH
 * into a running mount's cache (src/prefetch.c). A client of the mount
 * through plain POSIX calls: it sees no store, sync, driver or FUSE. */
#ifndef MAILFS_PREFETCH_H
#define MAILFS_PREFETCH_H

#include <stddef.h>
#include <stdint.h>

/* The command; argv[0] is "prefetch". Returns the exit status: 0 all
 * fetched, 1 a message could not be fetched or the paths do not fit in
 * the cache, 2 a usage error or a path not on a mailfs mount, 128 + the
 * signal when SIGINT or SIGTERM stopped it. */
int prefetch_main(int argc, char **argv);

/* Pure helpers, for the unit tests. */

/* Finds "key": <number> in a flat JSON object (our own xattrs'). */
int prefetch_json_u64(const char *json, const char *key, uint64_t *out);
/* done and total in the unit total calls for ("61.2/509.0 MiB"); done
 * alone when total is 0 ("12.3 MiB"). */
void prefetch_format_bytes(char *buf, size_t len, uint64_t done, uint64_t total);
/* Seconds as m:ss or h:mm:ss. */
void prefetch_format_eta(char *buf, size_t len, double seconds);
/* The progress line, at most width bytes (0: no limit): "LABEL: 12/40
 * msgs  0.9/2.8 MiB  2.3 MiB/s  0:01 left"; the label is shortened
 * first, then left out. */
void prefetch_format_bar(char *buf, size_t len, size_t width, const char *label,
                         uint64_t msgs_done, uint64_t msgs_total, uint64_t bytes_done,
                         uint64_t bytes_total, double seconds);

#endif

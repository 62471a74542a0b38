/* stats.h — process-wide counters, shown as JSON in the root's
 * user.mailfs.stats xattr. Updated with atomic adds from any thread. */
#ifndef MAILFS_STATS_H
#define MAILFS_STATS_H

#include <stdint.h>
#include <glib.h>

struct mf_stats {
	uint64_t bytes_received;     /* from the server, after TLS */
	uint64_t bytes_sent;
	uint64_t bodies_fetched;     /* message bodies downloaded */
	uint64_t body_bytes_fetched;
	uint64_t cache_hits;         /* opens served by the body cache */
	uint64_t cache_misses;
	uint64_t connections_open;   /* gauge */
	uint64_t reconnects;
	uint64_t folders_synced;
	uint64_t streams_started;    /* streamed read-ahead (sync_stream.c) */
	uint64_t streams_active;     /* gauge */
	uint64_t stream_fetches;     /* commands a stream sent (UID FETCH, RETR) */
	uint64_t stream_bodies;      /* bodies that came in a stream */
	uint64_t stream_window;      /* the largest window a stream had, in bytes */
	uint64_t getattrs;           /* LOOKUPs and GETATTRs the kernel sent */
	uint64_t opens;              /* OPENs of stored messages */
	uint64_t reads;              /* READs of stored messages */
	uint64_t bodies_pushed;      /* bodies put in the page cache at their open */
	uint64_t bodies_dropped;     /* large bodies' pages dropped at their first close */
};

extern struct mf_stats mf_stats;

#define stats_add(field, n) __atomic_add_fetch(&mf_stats.field, (uint64_t)(n), __ATOMIC_RELAXED)
#define stats_sub(field, n) __atomic_sub_fetch(&mf_stats.field, (uint64_t)(n), __ATOMIC_RELAXED)
#define stats_max(field, n) stats_raise(&mf_stats.field, (uint64_t)(n))

/* Raises *field to n, if it is less. */
static inline void stats_raise(uint64_t *field, uint64_t n)
{
	uint64_t was = __atomic_load_n(field, __ATOMIC_RELAXED);

	while (was < n && !__atomic_compare_exchange_n(field, &was, n, 1, __ATOMIC_RELAXED,
	                                               __ATOMIC_RELAXED))
		;
}

/* Renders the counters as one JSON object into out. */
void stats_format_json(GString *out);
/* Adds "name": value as the last member of the JSON object in json. */
void stats_json_add(GString *json, const char *name, uint64_t value);

#endif

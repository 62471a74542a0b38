/* stats.c — the counters behind user.mailfs.stats. */
#include <inttypes.h>
#include "stats.h"

struct mf_stats mf_stats;

void stats_format_json(GString *out)
{
#define FIELD(name, last) \
	g_string_append_printf(out, "\"" #name "\": %" PRIu64 "%s", \
	                       __atomic_load_n(&mf_stats.name, __ATOMIC_RELAXED), last ? "" : ", ")
	g_string_append(out, "{");
	FIELD(bytes_received, 0);
	FIELD(bytes_sent, 0);
	FIELD(bodies_fetched, 0);
	FIELD(body_bytes_fetched, 0);
	FIELD(cache_hits, 0);
	FIELD(cache_misses, 0);
	FIELD(connections_open, 0);
	FIELD(reconnects, 0);
	FIELD(folders_synced, 0);
	FIELD(streams_started, 0);
	FIELD(streams_active, 0);
	FIELD(stream_fetches, 0);
	FIELD(stream_bodies, 0);
	FIELD(stream_window, 0);
	FIELD(getattrs, 0);
	FIELD(opens, 0);
	FIELD(reads, 0);
	FIELD(bodies_pushed, 0);
	FIELD(bodies_dropped, 1);
	g_string_append(out, "}");
#undef FIELD
}

void stats_json_add(GString *json, const char *name, uint64_t value)
{
	gsize end = json->len && json->str[json->len - 1] == '}' ? json->len - 1 : json->len;
	char *field = g_strdup_printf(", \"%s\": %" PRIu64, name, value);

	g_string_insert(json, (gssize)end, field);
	g_free(field);
}

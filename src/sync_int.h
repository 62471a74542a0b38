/* sync_int.h — what the sync layer's files share; nothing outside
 * src/sync*.c includes it.
 *
 *   sync.c        the context, the folder list, one folder's re-check and
 *                 who waits for it (freshness, settle), local uids
 *   sync_live.c   parse jobs for new messages, a first listing shown as
 *                 it arrives
 *   sync_body.c   bodies on first read, read-ahead in batches
 *   sync_stream.c streamed read-ahead: a thread per folder read in order
 *                 keeps the driver's stream_bodies ahead of the reader
 *   sync_ahead.c  cached bodies pushed into the kernel ahead of a reader
 *   sync_write.c  APPEND, move, remove, flags, folder create/delete/rename,
 *                 quota
 *   sync_watch.c  push: the folders in use watched, their news applied
 *
 * sync is the layer between fs and the store and mailbox drivers: it is
 * the only one that sees both. It asks a driver what it can do through
 * mailbox_ops.caps, never which protocol it speaks. */
#ifndef MAILFS_SYNC_INT_H
#define MAILFS_SYNC_INT_H

#include "mailbox.h"
#include "mime.h"
#include "sync.h"

_Static_assert(SYNC_NO_DATE == MAILBOX_NO_DATE, "one 'no date' for fs and the drivers");

#define SYNC_RETRY_MIN_US (5 * G_USEC_PER_SEC)  /* after a failure, wait this long at least */

struct sync_ctx {
	const struct mf_config *cfg;   /* borrowed */
	struct store *store;           /* borrowed */
	struct mailbox *mb;            /* borrowed; NULL when offline */
	GMutex lock;
	GCond cond;
	GHashTable *busy;              /* folder id -> 1 while a sync of it runs */
	GHashTable *writing;           /* folder id -> the highest UID stored so
	                                  far (uint32_t *) while its first
	                                  listing, shown as it arrives, is being
	                                  stored (in parts) */
	int storing;                   /* threads making such listings */
	GHashTable *attempted;         /* folder id -> monotonic µs of the last try */
	GHashTable *asked;             /* folder id -> monotonic µs a full check that
	                                  succeeded began to ask the server */
	GHashTable *base_ids;          /* inode base -> folder id: a base is never
	                                  given to another folder (store_folder) */
	int folders_busy;
	gint64 folders_attempted;      /* monotonic µs of the last LIST, 0 never */
	gint64 quota_at;               /* monotonic µs of the last quota answer */
	enum mf_status quota_status;
	uint64_t quota_used, quota_limit;
	/* Read-ahead for sequential readers (tar, rsync, grep -r): */
	int64_t ra_folder;             /* folder of the last miss */
	char *ra_next;                 /* the uncached message a sequential reader opens next, */
	uint32_t ra_next_uid;          /* by name or by UID (0: none) */
	int ra_streak;                 /* sequential misses in a row */
	GPtrArray *streams;            /* struct sync_stream * (sync_stream.c) */
	struct sync_ahead *ahead;      /* sync_ahead.c's, made at the first hit */
	GCond stream_cond;             /* a stream moved, or its reader did */
	struct sync_watch *watch;      /* sync_watch.c's; NULL: no push */
	/* Who hears of each body a stream brought, or sync_ahead.c sends
	 * ahead of a reader, and whether it holds one already
	 * (sync_set_arrival): called with arrival_lock held, so that none is
	 * called once they are unset. */
	GMutex arrival_lock;
	void (*arrived)(void *ctx, uint64_t ino_base, uint32_t uid, void *body, size_t len);
	int (*arrival_held)(void *ctx, uint64_t ino_base, uint32_t uid);
	void *arrived_ctx;
	size_t arrival_max;
};

/* Whether the arrival listener holds the body of (ino_base, uid) already
 * (takes arrival_lock; may be called with s->lock held). */
int sync_body_held(struct sync_ctx *s, uint64_t ino_base, uint32_t uid);

/* new_only: after our own change, fetch just the messages above the
 * cached UIDs; live: see sync_folder_live (sync.c). */
enum mf_status sync_folder_run(struct sync_ctx *s, int64_t folder_id, int force,
                               int new_only, int *changed, struct sync_live **live);
/* The highest UID of the folder's first listing in the store while it is
 * being stored in parts; UINT32_MAX when it is all there (or was never
 * listed that way). s->lock held. */
uint32_t sync_stored_upto(struct sync_ctx *s, int64_t folder_id);

/* ---- sync_stream.c */

/* store_messages_after's callback: the first message (name and
 * uid) into the struct store_message ctx. */
int sync_first_message(void *ctx, const struct store_message *m);
/* Starts a stream of f's bodies after the message after (a reader just
 * opened it), in UID or name order; 1 when one runs for f now. 0 when
 * the driver has none, with mark_seen, or when no connection is left.
 * 2: this call started it, and after itself (uncached, and within the
 * window) is its first body (the driver places bodies: sync_stream_open
 * waits for it), so that the reader's connection, warm, is the stream's. */
int sync_stream_start(struct sync_ctx *s, const struct store_folder *f,
                      const struct store_message *after, int by_uid);
int sync_stream_active(struct sync_ctx *s, int64_t folder_id);
/* A cache miss on m: 1 with *fd_out when the stream brought it (the open
 * waited for that body alone); 0 when the caller fetches it itself,
 * unless *failed says why not to (the stream spent the timeout on it:
 * MF_ERR_TIMEOUT). */
int sync_stream_open(struct sync_ctx *s, int64_t folder_id, const struct store_message *m,
                     int *fd_out, uint64_t *off, uint64_t *len, enum mf_status *failed);
/* A cache hit: the reader's progress, for the stream of the folder. 2
 * when a stream brought the body and the reader reaches it now (the
 * stream's commit was its use; a finished stream's only when the kernel
 * holds the body), else 1 when a stream runs for the folder, else 0. */
int sync_stream_note_hit(struct sync_ctx *s, int64_t folder_id, uint32_t uid);
/* Ends every stream and waits for their threads (sync_free). */
void sync_streams_stop(struct sync_ctx *s);

/* ---- sync_body.c */

/* A copy of m's uid, size, name and remote id (a read-ahead's pick), and
 * its free function (GDestroyNotify). */
struct store_message *sync_message_copy(const struct store_message *m);
void sync_message_free(gpointer m);

/* ---- sync_ahead.c */

/* A cache hit on (folder_id, uid) in a folder no stream reads (one
 * pushes the bodies it brings): once hits go in order, the next cached
 * bodies are pushed ahead of the reader (a thread of its own). */
void sync_ahead_note(struct sync_ctx *s, int64_t folder_id, uint32_t uid);
/* Ends the thread (sync_free). */
void sync_ahead_stop(struct sync_ctx *s);

/* ---- sync_watch.c: a folder came into use (listed, looked into,
 * opened, written); the folder list changed. */
void sync_watch_note(struct sync_ctx *s, int64_t folder_id);
void sync_watch_review(struct sync_ctx *s);

/* ---- sync_live.c */

/* Header parsing and name derivation of new messages, on a pool of
 * threads, while the rest of the listing is still arriving. */
struct sync_parse_job {
	char *headers;            /* owned (taken from the driver's result, or a
	                             copy); freed once parsed */
	size_t headers_len;
	int parsed;               /* with a live listing: set under its lock */
	/* The store's row, filled as the job is made and parsed: a first
	 * listing of 50,000 messages is held whole until it is stored, so
	 * nothing is held twice. Its strings are in the parser's chunk
	 * (one allocation each would cost a third more); base_name is the
	 * name derived; internaldate is the server's (MAILBOX_NO_DATE: none)
	 * until the parse makes it the file's time (the Date header's when
	 * the server has none); remote_id is set at the end (sync_row_finish). */
	struct store_sync_message row;
};

/* A folder's first listing, shown while it arrives: the parsed messages
 * are named in UID order (as the store will name them) and appended here,
 * where readdir takes them. Shared by the sync and each reader. */
struct sync_live {
	gint refs;
	GMutex lock;
	GCond cond;
	GPtrArray *entries;       /* struct sync_live_entry *, owned */
	int complete;
	enum mf_status status;    /* once complete */
	/* The sync's side (under lock): */
	struct store_namer *namer;
	GPtrArray *jobs;          /* the parser's jobs, grown under lock */
	guint next;               /* jobs[0..next) are named or skipped */
	uint32_t named_uid;       /* the highest UID shown */
	int naming;               /* parsed jobs are named as they come */
	int hide_deleted;         /* \Deleted entries are hidden */
};

struct sync_parser {
	const struct sync_ctx *s;
	GThreadPool *pool;
	GPtrArray *jobs;          /* struct sync_parse_job *, in added order */
	guint queued;             /* jobs[0..queued) are in the pool */
	struct sync_live *live;   /* NULL: no listing is shown before the end */
	GMutex strings_lock;
	GStringChunk *strings;    /* the jobs' strings */
};

void sync_parser_init(struct sync_parser *p, const struct sync_ctx *s, struct sync_live *live);
void sync_parser_clear(struct sync_parser *p);

/* Jobs go to the pool in batches: a wake-up per message costs more than
 * parsing it. */
#define SYNC_PARSE_BATCH 32
/* Messages in a listing from which its end gives the freed memory back
 * to the system (malloc_trim). */
#define SYNC_TRIM_AFTER 1000


struct sync_live *sync_live_new(int hide_deleted);
/* The listing is complete: jobs (NULL on failure) were its messages, st
 * why it ended. */
void sync_live_complete(struct sync_live *l, GPtrArray *jobs, enum mf_status st);
/* mailbox_sync_request.on_added for a struct sync_parser. */
void sync_on_added(void *ctx, struct mailbox_message *m);
void sync_parse_wait(struct sync_parser *p);
void sync_parse_finish(struct sync_parser *p, GArray *added);
void sync_parse_job_free(gpointer data);
/* The store's row of a parsed job, complete (remote_id is borrowed). */
struct store_sync_message *sync_row_finish(struct sync_parse_job *j, const char *remote_id);

#endif

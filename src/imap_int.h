/* imap_int.h — what the IMAP driver's files share, and nothing outside
 * them includes (no public API here: that is imap_mailbox_open in
 * mailbox.h). The driver is a command engine over net.c with several
 * tagged commands in flight per connection, a pool of connections, and
 * the mailbox operations built on it:
 *
 *   imap.c         the mailbox_ops table, imap_mailbox_open, destroy
 *   imap_engine.c  the command engine: read, send, wait, status of a
 *                  reply, untagged state, SELECT/EXAMINE, FETCH helper
 *   imap_pool.c    the pool: open and free a connection, acquire a
 *                  spare one or a new one, release, with_conn (retry)
 *                  and with_conn_once
 *   imap_read.c    LIST, folder sync (incl. SEARCH), bodies (ranges,
 *                  read-ahead)
 *   imap_stream.c  streamed read-ahead: pipelined UID FETCHes of bodies
 *                  on a connection of its own
 *   imap_write.c   APPEND, MOVE/COPY, EXPUNGE, flags,
 *                  CREATE/RENAME/DELETE, quota
 *   imap_watch.c   push: a thread and an IDLE connection per watched
 *                  folder, news up through mailbox_ops.watch's callback
 *
 * Parsing is imap_parse.c's job (pure). */
#ifndef MAILFS_IMAP_INT_H
#define MAILFS_IMAP_INT_H

#include <stdint.h>
#include <glib.h>
#include "imap_parse.h"
#include "mailbox.h"
#include "net.h"

enum imap_capability {
	IMAP_CAP_LITERAL_PLUS = 1 << 0,
	IMAP_CAP_MOVE = 1 << 1,
	IMAP_CAP_UIDPLUS = 1 << 2,
	IMAP_CAP_CONDSTORE = 1 << 3,
	IMAP_CAP_QRESYNC = 1 << 4,
	IMAP_CAP_QUOTA = 1 << 5,
	IMAP_CAP_LITERAL_MINUS = 1 << 6,
	IMAP_CAP_IDLE = 1 << 7,
};

struct imap_done_tag {
	unsigned tag;
	enum mf_status status;
};

/* The most a connection holds of one response, literals included, but
 * not those a sink takes as they arrive (bodies): beyond it the command
 * fails and the connection is dropped. */
#define IMAP_MAX_RESPONSE ((size_t)8 * 1024 * 1024)

enum imap_sink_choice {
	IMAP_SINK_BUFFER,  /* keep the literal in the response, as usual */
	IMAP_SINK_TAKE,    /* its bytes go to sink->data as they arrive; the
	                      parsed response holds an empty string there */
	IMAP_SINK_FAIL,    /* refuse it (the sink logged why): the command
	                      fails, the connection is dropped */
};

/* Where the literals of an operation's responses may go while they arrive
 * (a body to its file): set on the connection for the operation's waits. */
struct imap_sink {
	/* A literal of n bytes is announced in an untagged response whose
	 * text before the "{n}" is head[0..head_len) (from the "*"). */
	enum imap_sink_choice (*literal)(void *ctx, const char *head, size_t head_len,
	                                 uint64_t n);
	/* The bytes of a taken literal, in order, all n of them unless the
	 * connection fails first. Anything but MF_OK fails the command. */
	enum mf_status (*data)(void *ctx, const char *bytes, size_t len);
	void *ctx;
};

struct imap_conn {
	struct net_conn *net;
	const struct imap_sink *sink;  /* NULL: every literal is buffered */
	char *in;              /* received bytes not yet parsed start at in_pos */
	size_t in_pos, in_len, in_cap;
	unsigned next_tag;
	GArray *done;          /* struct imap_done_tag: completions read early */
	unsigned caps;
	uint64_t appendlimit;  /* RFC 7889 APPENDLIMIT=n; 0 none said */
	int broken;            /* the connection is unusable: close, don't reuse */
	int reused;            /* it served an earlier operation */
	char *selected;        /* wire name of the selected folder, or NULL */
	int selected_rw;       /* selected with SELECT (else EXAMINE) */
	gint64 spare_since;    /* monotonic µs when it went back to the pool */
	uint32_t exists, uidvalidity, uidnext;
	uint64_t highestmodseq;
	int enable_tried;      /* ENABLE QRESYNC was sent (before the first SELECT) */
	int qresync;           /* the server ENABLED QRESYNC: VANISHED, not EXPUNGE */
	int selected_qresync;  /* the last SELECT/EXAMINE carried QRESYNC parameters */
	int opened;            /* a SELECT/EXAMINE succeeded since the last failed one:
	                          the server may have a folder open (selected may be
	                          NULL after UNSELECT or RENAME) */
	unsigned logout;       /* the tag of a LOGOUT sent (imap_conn_logout), or 0 */
	unsigned timed_tag;    /* the last command sent, while its answer is due */
	gint64 timed_at;       /* monotonic µs it was sent */
	gint64 rtt_us;         /* the shortest a command took here, sent to done (0: none) */
};

struct imap_driver {
	struct mailbox base;
	const struct mf_config *cfg;
	GMutex lock;
	GCond cond;
	GPtrArray *spare;      /* struct imap_conn * ready for use */
	GQueue waiting;        /* operations waiting for a connection, first
	                          come first served (zeroed: empty) */
	gint64 progress_at;    /* monotonic µs a connection was last released */
	int total;             /* open or opening connections */
	int lost;              /* connections dropped, to count reconnects */
	char delim;            /* hierarchy delimiter seen in LIST, 0 unknown */
	gint64 rtt_us;         /* the shortest command of a connection given back (0: none) */
	/* imap_watch.c's, under watch_lock (never held across I/O): */
	GMutex watch_lock;
	GPtrArray *watchers;   /* struct imap_watcher *, one per watched folder */
	mailbox_news_fn news;
	void *news_ctx;
	int watch_off;         /* the server offers no IDLE: nothing is watched */
};

typedef void (*imap_untagged_fn)(void *ctx, struct imap_conn *c,
                                 const struct imap_response *r);

/* An operation imap_with_conn runs on a pooled connection. */
typedef enum mf_status (*imap_op_fn)(struct imap_conn *c, void *arg);

/* imap_engine.c */
/* The capabilities reply (the server's answer to the login: lines, each
 * ending in CRLF; may be NULL) names, in an untagged CAPABILITY or a
 * tagged "OK [CAPABILITY ...]", as the connection's: 1, or 0 when it
 * names none or is not all understood. */
int imap_conn_caps_from(struct imap_conn *c, const char *reply);
unsigned imap_send(struct imap_conn *c, const char *command);
enum mf_status imap_wait_full(struct imap_conn *c, unsigned tag,
                              imap_untagged_fn fn, void *ctx,
                              struct imap_response *final, int *continuation);
enum mf_status imap_wait(struct imap_conn *c, unsigned tag,
                         imap_untagged_fn fn, void *ctx);
enum mf_status imap_command(struct imap_conn *c, const char *command,
                            imap_untagged_fn fn, void *ctx);
enum mf_status imap_append_mailbox(struct imap_conn *c, GString *cmd, const char *name);
enum mf_status imap_examine(struct imap_conn *c, const char *wire_name, int fresh);
/* What a re-check knows of a folder, for EXAMINE's QRESYNC parameters
 * (RFC 7162): the server answers with VANISHED (EARLIER) and the FETCHes
 * of what changed since modseq, handed to fn during the EXAMINE. */
struct imap_qresync {
	uint32_t uidvalidity;
	uint64_t modseq;
	uint32_t last_uid;     /* known UIDs are 1:last_uid */
	imap_untagged_fn fn;
	void *ctx;
	/* A command sent right behind the EXAMINE, before its answer (one
	 * round trip for both), or NULL; *then_tag gets its tag. Only one
	 * that the EXAMINE's answer cannot change, with no QRESYNC state. */
	const char *then;
	unsigned *then_tag;
};
/* EXAMINE, fresh, with QRESYNC parameters when the connection has QRESYNC
 * enabled and q holds a state (c->selected_qresync says whether they
 * went); else as imap_examine. */
enum mf_status imap_examine_qresync(struct imap_conn *c, const char *wire_name,
                                    const struct imap_qresync *q);
/* The UID set of a "* VANISHED [(EARLIER)] set" response, or NULL;
 * *earlier tells whether it answers a re-check (else the UIDs just went). */
const char *imap_vanished_set(const struct imap_response *r, int *earlier);
/* Walks a UID set ("1:3,7"): appends to out (may be NULL) each range
 * clipped to UIDs <= max, and returns how many UIDs the set names, -1
 * when it is not a UID set. Bounded by the set's length, never by the
 * numbers in it. */
int64_t imap_uid_ranges(const char *set, uint32_t max, GArray *out);
enum mf_status imap_select_rw(struct imap_conn *c, const char *folder, uint32_t uidvalidity);
const struct imap_value *imap_fetch_attributes(const struct imap_response *r, uint64_t *uid);
int imap_sink_head_body(const char *head, size_t head_len, uint64_t *offset, uint64_t *uid);

/* imap_pool.c */
enum mf_status imap_conn_open(const struct mf_config *cfg, struct imap_conn **out, char **err);
void imap_conn_free(struct imap_conn *c);
/* Sends LOGOUT without waiting: imap_conn_free then waits for its answer.
 * Closing many connections, each is told first, so their answers come in
 * one round trip, not one each. */
void imap_conn_logout(struct imap_conn *c);
enum mf_status imap_acquire(struct imap_driver *d, const char *folder,
                            struct imap_conn **out);
/* The same for a long-lived user (a watch's IDLE): a new connection while
 * the pool has room, so that the spare ones, warm, stay for readers (the
 * mount's first connection served the first listing, a login and a
 * CAPABILITY sooner: four round trips). */
enum mf_status imap_acquire_own(struct imap_driver *d, const char *folder,
                                struct imap_conn **out);
void imap_release(struct imap_driver *d, struct imap_conn *c);
enum mf_status imap_with_conn(struct imap_driver *d, const char *folder,
                              imap_op_fn op, void *arg);
enum mf_status imap_with_conn_once(struct imap_driver *d, const char *folder,
                                   imap_op_fn op, void *arg);

/* imap_read.c: a body literal streamed to its file: where, and how
 * much came; and how long a body may be. */
struct imap_streamed {
	int active;            /* announced and not yet matched to its FETCH */
	uint64_t offset, size, written;
	uint64_t uid;          /* the UID before the literal, 0 if none */
	int fd;                /* -1: discarded */
};

enum mf_status imap_streamed_write(struct imap_streamed *s, const char *bytes, size_t len);
uint64_t imap_body_limit(uint64_t size);

/* imap_stream.c: mailbox_ops.stream_bodies */
enum mf_status imap_stream_bodies(struct mailbox *mb, const char *wire_name,
                                  uint32_t uidvalidity, const struct mailbox_stream *stream);

/* imap_read.c: SEARCH's UIDs, for sync and for expunge */
struct imap_search_ctx {
	GArray *uids;
};

void imap_search_untagged(void *ctx, struct imap_conn *c, const struct imap_response *r);

/* imap_read.c: mailbox_ops */
enum mf_status imap_list_folders(struct mailbox *mb, GPtrArray **out);
enum mf_status imap_sync_folder(struct mailbox *mb, const struct mailbox_sync_request *req,
                                struct mailbox_sync_result *out);
enum mf_status imap_fetch_body(struct mailbox *mb, const char *wire_name,
                               uint32_t uidvalidity, uint32_t uid,
                               const char *remote_id, uint64_t size_hint,
                               int fd, uint64_t *written);
enum mf_status imap_fetch_bodies(struct mailbox *mb, const char *wire_name,
                                 uint32_t uidvalidity,
                                 struct mailbox_body_request *reqs, size_t n);

/* imap_watch.c: mailbox_ops.watch, and the end of every watch (destroy) */
enum mf_status imap_watch(struct mailbox *mb, const char *const *wire_names, size_t n,
                          mailbox_news_fn news, void *ctx);
void imap_watch_end(struct imap_driver *d);

/* imap_write.c: mailbox_ops */
enum mf_status imap_append(struct mailbox *mb, const char *wire_name, int fd,
                           uint64_t offset, uint64_t size, int64_t internaldate,
                           const char *message_id, uint64_t wire_size, uint32_t after_uid,
                           uint32_t *uid_out);
enum mf_status imap_move(struct mailbox *mb, const char *src_wire, uint32_t uidvalidity,
                         uint32_t uid, uint64_t size, const char *message_id,
                         const char *dst_wire, uint32_t *dst_uid);
enum mf_status imap_expunge(struct mailbox *mb, const char *wire_name,
                            uint32_t uidvalidity, uint32_t uid);
enum mf_status imap_set_flags(struct mailbox *mb, const char *wire_name,
                              uint32_t uidvalidity, uint32_t uid, const char *flags);
enum mf_status imap_create_folder(struct mailbox *mb, const char *path);
enum mf_status imap_delete_folder(struct mailbox *mb, const char *wire_name);
enum mf_status imap_rename_folder(struct mailbox *mb, const char *old_wire,
                                  const char *new_path);
enum mf_status imap_quota(struct mailbox *mb, uint64_t *used, uint64_t *limit);
uint64_t imap_link_rtt(struct mailbox *mb);

#endif

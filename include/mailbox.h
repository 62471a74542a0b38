/* mailbox.h — the protocol-neutral mailbox interface (a struct of
 * function pointers, as isync's driver.h) with an IMAP driver and, later,
 * a POP3 one. A driver owns its connections; it never touches SQLite or
 * FUSE. Results are returned in structures the caller frees with the
 * matching *_free / *_clear. All functions are safe to call from several
 * threads at once. */
#ifndef MAILFS_MAILBOX_H
#define MAILFS_MAILBOX_H

#include <stdint.h>
#include <glib.h>
#include "config.h"
#include "status.h"

struct mailbox;

#define MAILBOX_NO_DATE INT64_MIN

/* What a driver's protocol offers, in mailbox_ops.caps. */
enum mailbox_cap {
	/* The server names each message by a UID of its own (IMAP), known
	 * as soon as the message is listed. Without it (POP3) a message is
	 * known by remote_id alone: the caller gives it a local uid, fills
	 * mailbox_sync_request.known_remote_ids, and names by uid are not
	 * offered. */
	MAILBOX_CAP_SERVER_UIDS = 1 << 0,
	/* stream_bodies calls mailbox_stream.place for each body it is
	 * given without a descriptor, once its length is known and before
	 * its first byte is written. */
	MAILBOX_CAP_STREAM_PLACE = 1 << 1,
};

struct mailbox_folder {
	char *path;       /* UTF-8, components joined by '/' */
	char *wire_name;  /* as the server names it */
	char delim;
	int noselect;
};

struct mailbox_message {
	uint32_t uid;
	char *remote_id;  /* POP3 UIDL; NULL for IMAP */
	char *flags;      /* space-separated */
	uint64_t size;
	int64_t internaldate; /* MAILBOX_NO_DATE: none (POP3): the Date header serves */
	char *headers;    /* a header block holding at least Date/From/Subject/Message-ID */
	size_t headers_len;
};

struct mailbox_flag_update {
	uint32_t uid;
	char *flags;
};

/* UIDs first..last (first <= last), both included. */
struct mailbox_uid_range {
	uint32_t first, last;
};

struct mailbox_sync_request {
	const char *wire_name;
	uint32_t uidvalidity;     /* what the cache holds; 0 when nothing */
	uint32_t last_uid;        /* highest UID the cache holds */
	uint32_t known_count;     /* messages the cache holds */
	uint64_t highestmodseq;   /* CONDSTORE: what the cache is in step with; 0 none */
	/* Only messages above last_uid: no flags, no present list. */
	int new_only;
	/* POP3: the UIDLs the cache holds (char * -> GUINT_TO_POINTER(uid)),
	 * so that only new messages are asked for their headers and the
	 * present list can name known messages by uid. NULL for IMAP. */
	GHashTable *known_remote_ids;
	/* Optional: called for each new message as soon as it has arrived,
	 * in the order of the result's added array, from the calling thread;
	 * m is the message in added (its strings stay valid until the result
	 * is cleared). The callee may take m->headers, setting it NULL: a
	 * big listing's headers are then held once, not twice. Lets the
	 * caller start work while the rest is still on the wire. */
	void (*on_added)(void *ctx, struct mailbox_message *m);
	void *on_added_ctx;
};

struct mailbox_sync_result {
	uint32_t uidvalidity, uidnext;
	uint64_t highestmodseq;
	int reset;                /* the cache's messages are void (UIDVALIDITY changed) */
	GArray *added;            /* struct mailbox_message, UIDs > last_uid (all when reset) */
	GArray *flag_updates;     /* struct mailbox_flag_update for UIDs <= last_uid
	                             (with CONDSTORE only those that changed) */
	GArray *present;          /* uint32_t: UIDs <= last_uid still on the server, ascending */
	int present_valid;        /* present was asked for; else nothing vanished
	                             but what vanished names */
	/* struct mailbox_uid_range, in no order, maybe overlapping: UIDs
	 * <= last_uid the server said are gone (IMAP QRESYNC's VANISHED),
	 * whether or not present_valid; they may include UIDs never held. */
	GArray *vanished;
	/* The server's count of the folder's messages once the answer was
	 * complete, when exists_valid: the caller can tell whether what it
	 * holds adds up (else its next check should ask for everything). */
	int exists_valid;
	uint32_t exists;
};

struct mailbox_body_request {
	uint32_t uid;
	const char *remote_id;
	uint64_t size_hint;
	int fd;                   /* the body goes here, from offset base */
	uint64_t base;
	uint64_t written;         /* out */
	enum mf_status status;    /* out: MF_OK, MF_ERR_NOTFOUND, ... */
	/* out, during mailbox_stream.done only: the body's written bytes
	 * when the driver held them whole in memory; else NULL. */
	const char *bytes;
};

/* A stream of bodies of one folder (mailbox_ops.stream_bodies): the
 * caller hands the requests out in batches, the driver keeps them going
 * ahead of the reader on a connection of its own and says when each one
 * is complete. Both callbacks run on the driver's (the caller's) thread. */
struct mailbox_stream {
	/* Fills up to max requests (uid, remote_id, size_hint, fd; the
	 * caller keeps them until done) and returns how many. 0: none now
	 * (the driver reads what is in flight, then asks again with wait);
	 * with wait set, it returns 0 only when the stream is over, after
	 * everything in flight. -1: stop now: what is in flight is abandoned
	 * (the driver drains or drops its connection). */
	int (*next)(void *ctx, struct mailbox_body_request *reqs, size_t max, int wait);
	/* A request handed out is complete (status MF_OK, written) or failed;
	 * called exactly once for each, also when the stream breaks. */
	void (*done)(void *ctx, const struct mailbox_body_request *req);
	/* A request handed out with fd -1 (MAILBOX_CAP_STREAM_PLACE): its
	 * body is len bytes; sets req->fd and req->base, the place to write
	 * them. -1: no place for it (the driver fails the stream). */
	int (*place)(void *ctx, struct mailbox_body_request *req, uint64_t len);
	void *ctx;
};

/* What mailbox_ops.watch reports of a folder (bits). */
enum mailbox_news {
	/* Messages were added, and nothing else changed as far as the
	 * server said: the messages above the known UIDs are all there is
	 * to fetch. */
	MAILBOX_NEWS_ADDED = 1 << 0,
	/* Anything else: messages expunged, flags changed, or the watch was
	 * (re)established and whatever happened before is unknown. */
	MAILBOX_NEWS_CHANGED = 1 << 1,
};

/* A folder as a watch found it when it was (re)established (IMAP: the
 * EXAMINE's answer). */
struct mailbox_seen {
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;   /* 0: the server keeps none (no CONDSTORE) */
	uint32_t exists;
};

/* Called from a thread of the driver's, never with a lock of the
 * caller's held; must not block. seen: NULL, but with the news of a watch
 * just (re)established when nothing else was heard since: the folder's
 * state then. A cache holding that very state missed nothing before the
 * watch. */
typedef void (*mailbox_news_fn)(void *ctx, const char *wire_name, unsigned news,
                                const struct mailbox_seen *seen);

struct mailbox_ops {
	unsigned caps;            /* enum mailbox_cap bits */

	/* All folders, as struct mailbox_folder in a GPtrArray the caller
	 * frees with mailbox_folders_free(). */
	enum mf_status (*list_folders)(struct mailbox *mb, GPtrArray **out);
	/* What changed in one folder since the state in req. */
	enum mf_status (*sync_folder)(struct mailbox *mb,
	                              const struct mailbox_sync_request *req,
	                              struct mailbox_sync_result *out);
	/* Writes the whole message into fd (from offset 0). Returns
	 * MF_ERR_NOTFOUND when it is gone or uidvalidity no longer holds. */
	enum mf_status (*fetch_body)(struct mailbox *mb, const char *wire_name,
	                             uint32_t uidvalidity, uint32_t uid,
	                             const char *remote_id, uint64_t size_hint,
	                             int fd, uint64_t *written);

	/* The write operations (NULL in a read-only driver). Each returns
	 * only after the server confirmed the change; a uid it cannot learn
	 * is returned as 0 (the next sync finds the message). */

	/* Adds the message held in fd (size bytes from offset, sent in
	 * pieces) to the folder, with INTERNALDATE when internaldate is not
	 * MAILBOX_NO_DATE. *uid_out is 0 when the server has no UIDPLUS.
	 * Over quota: MF_ERR_QUOTA; larger than the server takes:
	 * MF_ERR_TOOBIG, nothing sent; other refusals MF_ERR_REFUSED. When
	 * the answer is lost after the message went out, the driver looks
	 * for it before it reports (message_id, may be NULL, and wire_size,
	 * the size the server gives it, among UIDs above after_uid): MF_OK
	 * when it landed, never a second APPEND. */
	enum mf_status (*append)(struct mailbox *mb, const char *wire_name, int fd,
	                         uint64_t offset, uint64_t size, int64_t internaldate,
	                         const char *message_id, uint64_t wire_size, uint32_t after_uid,
	                         uint32_t *uid_out);
	/* Moves one message. The copy is confirmed before the original is
	 * removed; an original that cannot be expunged without taking other
	 * \Deleted messages along stays flagged \Deleted. */
	enum mf_status (*move)(struct mailbox *mb, const char *src_wire,
	                       uint32_t uidvalidity, uint32_t uid, uint64_t size,
	                       const char *message_id, const char *dst_wire,
	                       uint32_t *dst_uid);
	/* Flags the message \Deleted and expunges it alone. */
	enum mf_status (*expunge)(struct mailbox *mb, const char *wire_name,
	                          uint32_t uidvalidity, uint32_t uid);
	/* Replaces the message's flags (space-separated IMAP flags). */
	enum mf_status (*set_flags)(struct mailbox *mb, const char *wire_name,
	                            uint32_t uidvalidity, uint32_t uid, const char *flags);
	/* path: UTF-8, levels joined by '/'. MF_ERR_INVAL for a name the
	 * server's hierarchy cannot hold. */
	enum mf_status (*create_folder)(struct mailbox *mb, const char *path);
	/* MF_ERR_NOTEMPTY while the folder holds messages. */
	enum mf_status (*delete_folder)(struct mailbox *mb, const char *wire_name);
	enum mf_status (*rename_folder)(struct mailbox *mb, const char *old_wire,
	                                const char *new_path);
	/* STORAGE usage and limit in bytes; MF_ERR_NOTFOUND without QUOTA. */
	enum mf_status (*quota)(struct mailbox *mb, uint64_t *used, uint64_t *limit);
	/* The shortest a command took, sent to answered, in µs (0: none yet;
	 * NULL: not measured): the link's round trip, at most the server's
	 * least time more. */
	uint64_t (*link_rtt)(struct mailbox *mb);

	/* Read-ahead: several bodies of one folder in one exchange (IMAP:
	 * one UID FETCH of the set, never setting \Seen; POP3: pipelined
	 * RETR). Every request
	 * gets its own status; the return value is MF_OK or what broke the
	 * whole exchange. */
	enum mf_status (*fetch_bodies)(struct mailbox *mb, const char *wire_name,
	                               uint32_t uidvalidity,
	                               struct mailbox_body_request *reqs, size_t n);

	/* Streaming read-ahead (NULL: not offered): bodies of one folder,
	 * never setting \Seen, pipelined so that the connection never waits
	 * for the caller between batches. Returns when next says the stream
	 * is over or stops, or when the connection broke (every request then
	 * done with an error). */
	enum mf_status (*stream_bodies)(struct mailbox *mb, const char *wire_name,
	                                uint32_t uidvalidity, const struct mailbox_stream *stream);
	/* Push: the server tells of changes to the folders named (wire
	 * names), each on a connection of its own (IMAP IDLE) counted among
	 * the driver's connections, until the next call, which replaces the
	 * set (n 0: none; waits until the folders no longer watched are let
	 * go). news is called for a folder once its watch is in place (and
	 * again after each reconnect: what happened meanwhile is unknown),
	 * then whenever the server reports a change. A lost watch is
	 * re-established with backoff. MF_ERR_NOTFOUND: the server cannot
	 * push (no IDLE); nothing is watched. NULL in a driver without push
	 * (POP3). */
	enum mf_status (*watch)(struct mailbox *mb, const char *const *wire_names, size_t n,
	                        mailbox_news_fn news, void *ctx);

	void (*destroy)(struct mailbox *mb);
};

struct mailbox {
	const struct mailbox_ops *ops;
};

/* Opens the IMAP driver: connects and logs in once now, so that a bad
 * password or certificate fails the mount; *err as net_connect. cfg is
 * borrowed and must outlive the mailbox. */
enum mf_status imap_mailbox_open(const struct mf_config *cfg,
                                 struct mailbox **out, char **err);

/* Opens the POP3 driver (read-only): connects and logs in once now. */
enum mf_status pop3_mailbox_open(const struct mf_config *cfg,
                                 struct mailbox **out, char **err);

/* 1 when space-separated flags hold \Deleted (IMAP flag names are
 * case-insensitive): what a listing hides unless -o show_deleted. */
int mailbox_flags_deleted(const char *flags);

void mailbox_folders_free(GPtrArray *folders);
void mailbox_sync_result_init(struct mailbox_sync_result *r);
void mailbox_sync_result_clear(struct mailbox_sync_result *r);

#endif

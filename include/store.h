/* store.h — the SQLite metadata cache and the on-disk body cache.
 *
 * Knows nothing of IMAP, POP3 or FUSE. Every function is thread-safe: the
 * store serialises access with its own mutex, and each call is one SQLite
 * transaction at most. Never holds a lock across network I/O (it does no
 * network I/O). Passwords never reach it.
 *
 * Layout of a cache directory (created mode 0700):
 *   DIR/lock                     flock'ed by the one store that has it open
 *   DIR/cache.sqlite             the metadata
 *   DIR/bodies/<folder_id>/<uid> a cached body in a file of its own
 *   DIR/bodies/<folder_id>/p<n>  a pack: bodies a stream brought, one
 *                                after another, each from a 4 KiB boundary
 *   DIR/tmp/                     bodies being downloaded
 *
 * Ownership: strings inside structs filled by the store are g_malloc'd and
 * owned by the caller, freed by the matching *_clear(). Input structs are
 * borrowed for the call only. */
#ifndef MAILFS_STORE_H
#define MAILFS_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "status.h"

struct store;

struct store_folder {
	int64_t id;
	char *path;          /* UTF-8, '/' between levels, e.g. "Archive/2023"; never "" */
	char *wire_name;     /* the server's name (modified UTF-7, server delimiter) */
	char delim;          /* hierarchy delimiter, 0 when flat */
	int noselect;        /* \Noselect or implied parent: a directory with no files */
	uint32_t uidvalidity;/* 0 until the first sync */
	uint32_t uidnext;
	uint64_t highestmodseq;
	int64_t synced_at;   /* Unix time of the last successful sync, 0 never */
	uint32_t message_count; /* messages stored (including \Deleted ones) */
	/* Inode numbers: the folder's is ino_base << 32, a message's
	 * (ino_base << 32) | uid. A base is never handed out twice while
	 * the cache lives, and a folder gets a new one when its UIDs start
	 * again (UIDVALIDITY), so an inode number always means one message. */
	uint64_t ino_base;
	/* Unix time in µs when its contents last changed as the mount saw
	 * them (a message new or gone, its own APPEND, removal, move or
	 * rename), or when the mount first saw the folder (a first listing
	 * leaves it); 0 in a cache from before schema 4, until the next
	 * sync. Only ever moves forward, and each change moves it. */
	int64_t changed_at;
};

struct store_message {
	int64_t folder_id;
	uint32_t uid;        /* the server's UID, or a local id (POP3) */
	char *remote_id;     /* the driver's own id (POP3 UIDL), NULL for IMAP */
	char *name;          /* file name including ".eml" */
	char *flags;         /* space-separated, as IMAP spells them; "" none */
	uint64_t size;       /* the real size once the body was read, else the server's */
	int size_known;      /* 1 once size is the real body length */
	int64_t internaldate;/* Unix time */
	char *subject, *message_id;    /* decoded; may be NULL */
	char *from_raw, *date_raw;     /* as sent (mime.h); may be NULL */
	int body_cached;     /* 1 when the body is in the body cache */
};

/* Opens (creating when needed) the cache in dir. readonly: open the
 * database read-only and never write (offline mounts may still use a
 * writable store; this is for tools). body_cap: the byte cap on cached
 * bodies (LRU eviction beyond it). On failure returns NULL and sets *err
 * (g_malloc'd message). */
struct store *store_open(const char *dir, uint64_t body_cap, char **err);
/* The cache is locked while a store has it open: a second store_open of
 * the same directory fails, naming the holder's pid. After a fork that
 * keeps the store (daemon mode), the process that stays claims it. */
void store_claim(struct store *st);
/* changed hears, once each transaction committed, of every path
 * ("INBOX/x.eml", or a folder's "Archive/2023") whose name, size or
 * existence it changed: a message removed, one whose name shifted (both
 * its old and new name), a size corrected by a download, a folder
 * removed, a folder whose changed_at moved, and "FOLDER/" for a folder
 * whose inode base changed (its UIDs started again). Called with the store's lock held: it must not call the
 * store. NULL: nobody. */
/* Who hears, as a body is committed, that it is longer than the size
 * the cache gave before (the server's RFC822.SIZE): the message's inode
 * number is ino_base << 32 | uid. Called with the store's lock held,
 * before anyone can open the body: it must not call the store. */
void store_set_growth_observer(struct store *st,
                               void (*grew)(void *ctx, uint64_t ino_base, uint32_t uid),
                               void *ctx);
void store_set_observer(struct store *st, void (*changed)(void *ctx, const char *path),
                        void *ctx);
void store_close(struct store *st);

void store_folder_clear(struct store_folder *f);
void store_message_clear(struct store_message *m);

/* ---- folders ---- */

struct store_folder_entry {  /* input: one folder as LIST reported it */
	const char *path;
	const char *wire_name;
	char delim;
	int noselect;
};

/* Makes the folder table match entries exactly: new paths are inserted,
 * known ones updated (wire_name, delim, noselect; sync state kept),
 * folders absent from entries are deleted with their messages and body
 * files. Parents implied by a path ("a" for "a/b") that are not in
 * entries are inserted as noselect. One transaction. */
enum mf_status store_folders_replace(struct store *st,
                                     const struct store_folder_entry *entries,
                                     size_t n);
/* The folder at old_path and every folder below it move to new_path,
 * keeping their ids, messages, names given by hand and bodies (after the
 * server renamed it). Whatever the cache held at new_path goes. */
enum mf_status store_folder_rename(struct store *st, const char *old_path, const char *new_path);
/* MF_ERR_NOTFOUND when no such folder. */
enum mf_status store_folder_by_path(struct store *st, const char *path,
                                    struct store_folder *out);
enum mf_status store_folder_by_id(struct store *st, int64_t id,
                                  struct store_folder *out);
/* The folder whose inode base is base (store_folder.ino_base). */
enum mf_status store_folder_by_base(struct store *st, uint64_t base,
                                    struct store_folder *out);
/* Calls cb for every direct child of parent ("" for the top level), in
 * path order. cb returns 0 to go on, non-zero to stop. The folder passed
 * is borrowed for the call. */
enum mf_status store_folder_children(struct store *st, const char *parent,
                                     int (*cb)(void *ctx, const struct store_folder *f),
                                     void *ctx);
/* Number of folders stored. */
enum mf_status store_folder_count(struct store *st, size_t *n);

/* ---- messages ---- */

struct store_sync_message {  /* input: a message new to the cache */
	uint32_t uid;            /* never 0: the server's UID, or one the caller
	                            gave a message known by remote_id alone */
	const char *remote_id;   /* the driver's own id (POP3 UIDL); may be NULL */
	const char *flags;
	uint64_t size;
	int64_t internaldate;
	const char *base_name;   /* mime_name_base(): no suffix, no ".eml" */
	const char *subject, *message_id;  /* decoded; may be NULL */
	const char *from_raw, *date_raw;   /* as sent (mime.h); may be NULL */
};

struct store_sync_flags {
	uint32_t uid;
	const char *flags;
	/* The caller hides it now (\Deleted): its name is gone from the
	 * listing, and the observer hears of it. */
	int hidden;
};

struct store_sync {
	int64_t folder_id;
	int reset;               /* drop every message and cached body of the
	                            folder first (UIDVALIDITY changed) */
	uint32_t uidvalidity, uidnext;
	uint64_t highestmodseq;
	const struct store_sync_message *added; size_t n_added;
	/* Or, when not NULL, the n_added rows by pointer (a caller that holds
	 * them elsewhere need not copy them). */
	const struct store_sync_message *const *added_refs;
	const struct store_sync_flags *flag_updates; size_t n_flag_updates;
	const uint32_t *removed; size_t n_removed; /* uids gone from the server */
	int64_t now;             /* becomes synced_at */
	int first;               /* the folder's first listing: the mount learns
	                            its contents, it sees no change (its time,
	                            set when the folder was first seen, stays) */
	/* A first listing that only adds is stored in parts when stored is
	 * set, each part a transaction of its own, in UID order: stored()
	 * learns the highest UID committed after each part but the last
	 * (store mutex not held; it must not call the store). Until the last,
	 * only those rows may be used, not the folder's count or names. Should
	 * a part fail, the parts before it stay: the start of the listing,
	 * completed by the folder's next check. */
	void (*stored)(void *ctx, uint32_t uid);
	void *stored_ctx;
};

/* Applies one sync result in one transaction, then assigns file names:
 * walking the folder's messages in UID order, a message with a user-given
 * name keeps it; others get base_name + ".eml", or base_name + "~2.eml",
 * "~3.eml"... when a lower UID (or a user-given name) already holds it.
 * Names of existing messages change only when a collision appears or
 * disappears. Removed messages lose their cached bodies. */
enum mf_status store_folder_apply_sync(struct store *st, const struct store_sync *s);

/* The names store_folder_apply_sync() gives the messages of a folder that
 * holds none yet, one at a time in ascending UID order, so that a first
 * listing can be shown as it arrives: NULL when uid is not above the last
 * one named. The namer borrows each name it returns: free them after it. */
struct store_namer;
struct store_namer *store_namer_new_empty(void);
char *store_namer_next(struct store_namer *n, uint32_t uid, const char *base_name);
void store_namer_free(struct store_namer *n);

/* Marks the folder as checked now without other changes. */
enum mf_status store_folder_touch(struct store *st, int64_t folder_id, int64_t now);

/* The highest UID stored for the folder, 0 when none. */
enum mf_status store_folder_max_uid(struct store *st, int64_t folder_id, uint32_t *max);
/* All UIDs of the folder, ascending (g_free *uids). */
enum mf_status store_folder_uids(struct store *st, int64_t folder_id,
                                 uint32_t **uids, size_t *count);
/* POP3: the remote_id -> uid mapping of the folder. Calls cb for each. */
enum mf_status store_folder_remote_ids(struct store *st, int64_t folder_id,
                                       int (*cb)(void *ctx, uint32_t uid, const char *remote_id),
                                       void *ctx);

/* MF_ERR_NOTFOUND when absent. */
enum mf_status store_message_by_name(struct store *st, int64_t folder_id,
                                     const char *name, struct store_message *out);
enum mf_status store_message_by_uid(struct store *st, int64_t folder_id,
                                    uint32_t uid, struct store_message *out);
/* The same by name, with only folder_id, uid and flags filled in, flags
 * only when they hold \Deleted ("" otherwise): what an open needs,
 * answered from indexes. */
enum mf_status store_message_key_by_name(struct store *st, int64_t folder_id,
                                         const char *name, struct store_message *out);
/* The same by uid, from the index of \Deleted messages alone: MF_OK
 * (uid and flags filled in) only for a message flagged \Deleted;
 * MF_ERR_NOTFOUND for every other uid, stored or not. */
enum mf_status store_message_deleted(struct store *st, int64_t folder_id, uint32_t uid,
                                     struct store_message *out);
/* Calls cb for each message of the folder in name order (what to hide
 * is the caller's business). The message passed is borrowed for the
 * call. cb returns non-zero to stop. */
enum mf_status store_messages_list(struct store *st, int64_t folder_id,
                                   int (*cb)(void *ctx, const struct store_message *m),
                                   void *ctx);

/* Read-ahead candidates: messages after `after` (in name order, or in
 * UID order: the order of a first listing) whose body is not cached
 * (STORE_UNCACHED: what to fetch) or is (STORE_CACHED: what to send
 * ahead of a reader), and whose size is at most max_size; at most limit.
 * cb as for store_messages_list. */
enum store_cached { STORE_UNCACHED, STORE_CACHED };
enum mf_status store_messages_after(struct store *st, int64_t folder_id,
                                    const struct store_message *after, int by_uid,
                                    enum store_cached cached, uint64_t max_size, size_t limit,
                                    int (*cb)(void *ctx, const struct store_message *m),
                                    void *ctx);

/* ---- one message, after the server accepted a change ---- */

/* Gives the message the name the user chose (create, rename): kept as
 * long as it is unique in its folder. MF_ERR_EXISTS when another message
 * holds it; NULL returns the message to its derived name. */
enum mf_status store_message_set_user_name(struct store *st, int64_t folder_id,
                                           uint32_t uid, const char *name);
enum mf_status store_message_set_flags(struct store *st, int64_t folder_id,
                                       uint32_t uid, const char *flags);
/* Forgets the message and its cached body; names are recomputed. */
enum mf_status store_message_remove(struct store *st, int64_t folder_id, uint32_t uid);

/* ---- bodies ---- */

/* Opens the cached body read-only: returns an fd (caller closes) and
 * marks it recently used, or -1 when not cached. The body is len bytes
 * of it from off (a pack's range: the descriptor holds it, and an
 * eviction meanwhile leaves it be); off and len may be NULL. */
int store_body_open(struct store *st, int64_t folder_id, uint32_t uid, uint64_t *off,
                    uint64_t *len);
/* Marks the cached body recently used, as an open does (when a reader
 * finds it in the kernel's page cache). */
void store_body_used(struct store *st, int64_t folder_id, uint32_t uid);
/* Creates a temporary file for a body being downloaded: returns a
 * writable fd and *tmp_path (g_free), or -1. */
int store_body_begin(struct store *st, char **tmp_path);
/* Moves a complete download into the cache (fsync, rename), records its
 * size as the message's real size (size_known = 1), then evicts least
 * recently used bodies until the total is under the cap (never the one
 * just committed). *size_changed is set to 1 when the real size differs
 * from what was stored (may be NULL). If the message vanished meanwhile,
 * the file is removed and MF_ERR_NOTFOUND returned. */
enum mf_status store_body_commit(struct store *st, int64_t folder_id,
                                 uint32_t uid, const char *tmp_path,
                                 int *size_changed);
/* The same for several bodies of a folder in one transaction: each
 * item's status says how it went (MF_ERR_NOTFOUND: its message is gone,
 * and only it is lost). Returns MF_OK, or the error that undid the whole
 * commit (every item then has it, and no file stays). */
struct store_body_item {
	uint32_t uid;
	const char *tmp_path;      /* the download, or NULL when in a pack: */
	int64_t pack;              /* store_pack_place's pack, off and length */
	uint64_t off, len;
	enum mf_status status;     /* out */
	int size_changed;          /* out: 1 longer than the size before, -1 shorter */
};
enum mf_status store_body_commit_many(struct store *st, int64_t folder_id,
                                      struct store_body_item *items, size_t n);
/* A writer of bodies into packs (a stream's): each body takes the next
 * range of the writer's pack, from a 4 KiB boundary, and is committed
 * with store_body_commit_many (item.pack, off, len). A pack stays while
 * its writer lives, and goes with its last body after. */
struct store_pack;
struct store_pack *store_pack_new(struct store *st, int64_t folder_id);
/* The range for a body of len bytes: returns the descriptor to write it
 * to (the writer's: not to be closed) and sets *pack and *off, or -1. */
int store_pack_place(struct store_pack *p, uint64_t len, int64_t *pack, uint64_t *off);
/* A range placed and never committed: its blocks are freed. */
void store_pack_discard(struct store_pack *p, int64_t pack, uint64_t off, uint64_t len);
void store_pack_free(struct store_pack *p);
/* Removes an unfinished download. */
void store_body_abort(struct store *st, const char *tmp_path);
/* Bytes and count of cached bodies. */
enum mf_status store_body_usage(struct store *st, uint64_t *bytes, uint64_t *count);

/* A number that changes with every write to the cache (any table): what
 * was read at one generation is still what the cache says while the
 * generation is the same. */
uint64_t store_generation(struct store *st);

#endif

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

struct mailbox_sync_request {
	const char *wire_name;
	uint32_t uidvalidity;     /* what the cache holds; 0 when nothing */
	uint32_t last_uid;        /* highest UID the cache holds */
	uint64_t highestmodseq;
	/* POP3: the UIDLs the cache holds (char * -> GUINT_TO_POINTER(uid)),
	 * so that only new messages are asked for their headers and the
	 * present list can name known messages by uid. NULL for IMAP. */
	GHashTable *known_remote_ids;
};

struct mailbox_sync_result {
	uint32_t uidvalidity, uidnext;
	uint64_t highestmodseq;
	int reset;                /* the cache's messages are void (UIDVALIDITY changed) */
	GArray *added;            /* struct mailbox_message, UIDs > last_uid (all when reset) */
	GArray *flag_updates;     /* struct mailbox_flag_update for UIDs <= last_uid */
	GArray *present;          /* uint32_t: UIDs <= last_uid still on the server, ascending */
};

struct mailbox_ops {
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

void mailbox_folders_free(GPtrArray *folders);
void mailbox_sync_result_init(struct mailbox_sync_result *r);
void mailbox_sync_result_clear(struct mailbox_sync_result *r);

#endif

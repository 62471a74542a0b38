/* config.h — the parsed command line, shared read-only by every layer
 * after startup. Strings are owned by the config (g_free at exit). */
#ifndef MAILFS_CONFIG_H
#define MAILFS_CONFIG_H

#include <stdint.h>

enum mf_protocol { MF_PROTO_IMAP, MF_PROTO_POP3 };
enum mf_tls { MF_TLS_IMPLICIT, MF_TLS_STARTTLS, MF_TLS_NONE };

struct mf_config {
	enum mf_protocol protocol;
	enum mf_tls tls;
	char *scheme;          /* "imap", "imaps", "pop3", "pop3s" */
	char *host;
	int port;              /* 0: the scheme's default */
	char *user;            /* NULL: from ~/.netrc */
	char *password;        /* resolved at startup; NULL with netrc or oauth */
	char *oauth_command;
	char *cafile;
	int insecure;
	char *cache_dir;
	uint64_t cache_size;
	int names_uid;
	int mark_seen;
	int refresh;           /* seconds */
	int connections;
	int watch;             /* folders kept under IDLE at most (0: no push) */
	char *trash;
	int show_deleted;
	int offline;
	int readonly;
	int timeout;           /* seconds, bound on every network wait */
	int debug;
	int follow_reader;     /* answer a lone reader's opens on its CPU (fs_follow.c) */
};

#endif

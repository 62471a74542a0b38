/* status.h — status codes shared by every layer below fs, and the one
 * place that maps them to errno (STYLE: "one place maps errors"). */
#ifndef MAILFS_STATUS_H
#define MAILFS_STATUS_H

enum mf_status {
	MF_OK = 0,
	MF_ERR_IO,        /* connection failed, dropped, or unreadable local file */
	MF_ERR_TIMEOUT,   /* the server did not answer within the bound */
	MF_ERR_NOTFOUND,  /* folder or message does not exist (any more) */
	MF_ERR_REFUSED,   /* the server answered NO/BAD to an operation */
	MF_ERR_PROTOCOL,  /* malformed or unexpected reply */
	MF_ERR_AUTH,      /* login failed */
	MF_ERR_TLS,       /* TLS handshake or certificate check failed */
	MF_ERR_QUOTA,     /* over quota */
	MF_ERR_EXISTS,    /* target exists */
	MF_ERR_NOTEMPTY,  /* folder still holds messages */
	MF_ERR_INVAL,     /* bad argument or bad message data */
	MF_ERR_NOMEM,
	MF_ERR_OFFLINE,   /* offline mount: the network is never used */
	MF_ERR_READONLY,
	MF_ERR_PERM,
	MF_ERR_TOOBIG,    /* larger than the server takes (APPENDLIMIT) */
};

/* Returns a positive errno value for the status (0 for MF_OK). */
int mf_status_to_errno(enum mf_status st);
/* Returns a short static English description. */
const char *mf_status_str(enum mf_status st);

#endif

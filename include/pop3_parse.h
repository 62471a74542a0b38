/* pop3_parse.h — the POP3 reply parser: pure functions over bytes.
 *
 * No sockets, no globals. The engine (pop3.c) appends what it receives to
 * a buffer and calls these; fuzzers and unit tests call them on arbitrary
 * bytes. A reply is a status line ("+OK text" / "-ERR text"), followed for
 * some commands (CAPA, UIDL, LIST, TOP, RETR) by a multi-line body ending
 * in a line holding only "."; body lines that begin with "." arrive with
 * one more "." in front (RFC 1939 section 3), which the parser removes.
 * Lines end in CRLF; a bare LF is accepted as a line end too. */
#ifndef MAILFS_POP3_PARSE_H
#define MAILFS_POP3_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

/* The longest status line (and CAPA/UIDL/LIST line) accepted. */
#ifndef POP3_MAX_STATUS_LINE  /* the fuzz build lowers it (Makefile) */
#define POP3_MAX_STATUS_LINE ((size_t)64 * 1024)
#endif
/* The longest line inside a multi-line body (a message line: RFC 5322
 * says 998, real mail sometimes holds megabytes of unbroken base64). */
#ifndef POP3_MAX_BODY_LINE  /* the fuzz build lowers it (Makefile) */
#define POP3_MAX_BODY_LINE ((size_t)64 * 1024 * 1024)
#endif

enum pop3_parse_result {
	POP3_PARSE_OK = 0,         /* a whole item was parsed; *consumed set */
	POP3_PARSE_INCOMPLETE = 1, /* more bytes are needed */
	POP3_PARSE_ERROR = -1,     /* not a valid reply; see each function */
};

struct pop3_status {
	int ok;      /* 1 for +OK, 0 for -ERR */
	/* The text after the status word, without the separating space and
	 * the line end (owned, NUL-terminated, may be ""). */
	char *text;
	/* RFC 2449 response code, "-ERR [IN-USE] locked" -> "IN-USE" (owned,
	 * upper-cased; "SYS/TEMP" keeps its slash); NULL when absent. */
	char *code;
};

/* Parses the status line at the start of buf[0..len).
 * OK: *out filled (caller frees with pop3_status_clear), *consumed is the
 * line's length including its line end.
 * INCOMPLETE: no line end yet (and the line is still within the limit);
 * nothing allocated.
 * ERROR: the line does not start with "+OK" or "-ERR" followed by a space
 * or the line end (ASCII case ignored), holds a NUL, or is longer than
 * POP3_MAX_STATUS_LINE; *consumed is the end of the offending line (after
 * its LF, or len when there is none). *out is zeroed. */
enum pop3_parse_result pop3_parse_status(const char *buf, size_t len, size_t *consumed,
                                         struct pop3_status *out);
/* Frees what s owns and zeroes it. Safe on a zeroed struct. */
void pop3_status_clear(struct pop3_status *s);

/* The state of one multi-line body being parsed, kept by the caller
 * between calls so that the body may arrive in pieces of any size. */
struct pop3_multiline {
	int at_line_start;  /* the next byte begins a line */
	int done;           /* the terminating "." line was seen */
	size_t line_len;    /* bytes of the current line so far */
	uint64_t bytes;     /* payload bytes produced so far */
};

void pop3_multiline_init(struct pop3_multiline *m);

/* Parses the next piece of a multi-line body (the bytes after the +OK
 * line) from buf[0..len), appending the payload to out: every line as
 * sent, line ends included, with the leading "." removed from a line that
 * begins with one, up to the line holding only "." (which ends the body
 * and is not part of it).
 * OK: the terminator was reached; *consumed counts the bytes up to and
 * including it (bytes after it belong to the next reply), m->done is set.
 * INCOMPLETE: the bytes up to *consumed are used up; the caller keeps
 * buf[*consumed..len) (at most two bytes: a "." or ".\r" at the start of a
 * line, which cannot be decided yet) and calls again with those bytes
 * followed by more.
 * ERROR: a line longer than POP3_MAX_BODY_LINE; *consumed is where it
 * was noticed. out may have grown. Calling again after OK or ERROR
 * returns the same without consuming anything. */
enum pop3_parse_result pop3_parse_multiline(struct pop3_multiline *m, const char *buf,
                                            size_t len, size_t *consumed, GString *out);

/* Walks the lines of a complete, unstuffed payload: from *pos, sets
 * *line and *line_len to the next line without its line end (CRLF or LF) and
 * advances *pos past it. A last line without a line end counts. Returns
 * 1 while there is a line, 0 at the end. */
int pop3_next_line(const char *buf, size_t len, size_t *pos, const char **line,
                   size_t *line_len);

/* A UIDL line, "<msgno> <uidl>" (RFC 1939), spaces or tabs around and
 * between the fields tolerated. The UIDL is returned as a pointer into
 * line (*uidl, *uidl_len): 1 to 512 bytes in 0x21..0x7e (RFC 1939 says
 * 70; servers exceed it). Anything after the UIDL but white space is an
 * error. Returns 0, or -1 (outputs unspecified). msgno must be 1 or more. */
int pop3_parse_uidl_line(const char *line, size_t len, uint32_t *msgno,
                         const char **uidl, size_t *uidl_len);

/* A LIST scan listing, "<msgno> <size>"; white space as for UIDL lines;
 * text after the size (RFC 1939 discourages it, some servers send it)
 * is ignored. Returns 0 or -1. */
int pop3_parse_list_line(const char *line, size_t len, uint32_t *msgno, uint64_t *size);

enum pop3_capability {
	POP3_CAPA_TOP = 1 << 0,
	POP3_CAPA_UIDL = 1 << 1,
	POP3_CAPA_PIPELINING = 1 << 2,
	POP3_CAPA_USER = 1 << 3,
	POP3_CAPA_SASL = 1 << 4,
	POP3_CAPA_STLS = 1 << 5,
	POP3_CAPA_RESP_CODES = 1 << 6,
};

/* The capabilities named in a complete, unstuffed CAPA payload: the
 * first word of each line, ASCII case ignored. Unknown ones are ignored. */
unsigned pop3_parse_capa(const char *buf, size_t len);

/* The length of the header block at the start of a message (or of a
 * TOP n 0 answer): up to and including the first empty line (CRLF CRLF
 * or LF LF, mixed forms too); all of len when there is no empty line. */
size_t pop3_header_block_len(const char *buf, size_t len);

#endif

/* imap_parse.h — the IMAP response parser: a pure function over bytes.
 *
 * No sockets, no globals, no allocation shared between calls. The engine
 * (imap_engine.c) appends what it receives to a buffer and calls
 * imap_parse_response() until it returns IMAP_PARSE_INCOMPLETE; fuzzers and
 * unit tests call it on arbitrary bytes. */
#ifndef MAILFS_IMAP_PARSE_H
#define MAILFS_IMAP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

enum imap_value_type {
	IMAP_VALUE_NIL,    /* NIL */
	IMAP_VALUE_ATOM,   /* atom or number, incl. "\Seen", "BODY[HEADER.FIELDS (DATE)]<0>" */
	IMAP_VALUE_STRING, /* quoted string (unescaped) or literal {n} / {n+} / ~{n} */
	IMAP_VALUE_LIST,   /* parenthesised list */
};

struct imap_value {
	enum imap_value_type type;
	/* ATOM, STRING: owned copy, always NUL-terminated; a literal may hold
	 * NUL bytes, so use len. NULL for NIL and LIST. */
	char *str;
	size_t len;
	/* LIST: owned array of count items. */
	struct imap_value *items;
	size_t count;
};

enum imap_response_kind {
	IMAP_RESPONSE_TAGGED,       /* "A1 OK ..." */
	IMAP_RESPONSE_UNTAGGED,     /* "* ..." */
	IMAP_RESPONSE_CONTINUATION, /* "+ ..." */
};

enum imap_status_word {
	IMAP_STATUS_NONE = 0, /* untagged data response (EXISTS, FETCH, LIST...) */
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_PREAUTH,
	IMAP_STATUS_BYE,
};

struct imap_response {
	enum imap_response_kind kind;
	char *tag;                  /* TAGGED: owned tag; else NULL */
	enum imap_status_word status; /* TAGGED always; UNTAGGED for OK/NO/BAD/PREAUTH/BYE */
	int has_number;             /* UNTAGGED "* 12 EXISTS": 1, number = 12 */
	uint32_t number;
	/* UNTAGGED: the keyword, upper-cased, owned: "EXISTS", "EXPUNGE",
	 * "FETCH", "LIST", "LSUB", "STATUS", "CAPABILITY", "FLAGS", "SEARCH",
	 * "ESEARCH", "ENABLED", "VANISHED", "QUOTA", "QUOTAROOT", "OK", "NO",
	 * "BAD", "BYE", "PREAUTH", or whatever atom the server sent.
	 * TAGGED: the status word ("OK", "NO", "BAD"). CONTINUATION: NULL. */
	char *keyword;
	/* UNTAGGED data responses: the values after the keyword, as a list
	 * (type LIST, possibly empty). For "* 3 FETCH (UID 7 FLAGS (\Seen))"
	 * args.items[0] is the LIST (UID 7 FLAGS (\Seen)).
	 * For "* LIST (\Noselect) "/" "a"" args holds 3 items.
	 * For CAPABILITY/SEARCH/ENABLED args holds the atoms.
	 * For status responses (OK/NO/...): empty list. */
	struct imap_value args;
	/* Response code "[...]" of a status response or continuation, parsed
	 * as a LIST of values: "[UIDVALIDITY 7]" -> (UIDVALIDITY 7),
	 * "[COPYUID 9 1:3 7:9]" -> (COPYUID 9 1:3 7:9),
	 * "[PERMANENTFLAGS (\Seen \*)]" -> (PERMANENTFLAGS (\Seen \*)).
	 * type NIL when absent. code.items[0] is upper-cased. */
	struct imap_value code;
	/* Human-readable text after the status word and code (owned, may be
	 * ""), for status responses and continuations; NULL otherwise. */
	char *text;
};

enum imap_parse_result {
	IMAP_PARSE_OK = 0,         /* one response parsed into *out; *consumed set */
	IMAP_PARSE_INCOMPLETE = 1, /* buf holds the start of a response only */
	IMAP_PARSE_ERROR = -1,     /* not a valid response; *consumed set to the
	                              end of the offending line (after its CRLF, or
	                              len when there is none) so the caller may
	                              resynchronise or drop the connection */
};

/* Parses the first response in buf[0..len).
 * On IMAP_PARSE_OK, *out is filled (caller frees with imap_response_free)
 * and *consumed is the number of bytes it spanned, including the final
 * CRLF. On IMAP_PARSE_INCOMPLETE, *need (when need is not NULL) is the
 * smallest total buffer length that could complete it, when known (a
 * literal announces its size), else len + 1; nothing is allocated.
 * Lines end in CRLF; a bare LF is accepted as a line end too.
 * Literals: "{n}\r\n" and "{n+}\r\n" (and "~{n}" binary) followed by n
 * bytes, which may contain anything, including "A1 OK" lines and CRLF.
 * Limits: lists nest at most 64 deep; a literal may be at most 1 GiB;
 * a line (outside literals) at most 1 MiB — beyond that, ERROR. */
enum imap_parse_result imap_parse_response(const char *buf, size_t len,
                                           size_t *consumed, size_t *need,
                                           struct imap_response *out);

/* Framing: where a response that is still arriving ends, found while it
 * arrives, each byte looked at once however the bytes are split (so that
 * a response of n bytes costs O(n), not a parse per recv). The engine
 * calls imap_frame_scan on the response's bytes so far after each recv and
 * imap_parse_response once, when the frame is complete. A literal is
 * reported when announced, before its bytes, so that its bytes can go
 * elsewhere (a body to its file) as they arrive.
 *
 * The framer is a superset of the parser: every literal the parser
 * would see is announced (a "{n}" ending a line that is not a status
 * response or a continuation); so the parser's end of a response is never
 * after the frame's. */
#define IMAP_FRAME_MAX_LITERALS 4096  /* per response */

struct imap_frame {
	size_t scanned;          /* bytes of the response examined */
	size_t line_start;       /* start of the line being examined */
	uint64_t literal_left;   /* bytes of the current literal still to skip */
	size_t literals;         /* literals announced so far */
	int no_literals;         /* the response is a status response */
	/* IMAP_FRAME_LITERAL: the announced size, and where the "{" (or
	 * "~{") of the announcement is, from the response's start. */
	uint64_t announced;
	size_t announce_at;
};

enum imap_frame_event {
	IMAP_FRAME_MORE,      /* all of buf is examined: more bytes are needed */
	IMAP_FRAME_LITERAL,   /* a literal was announced: its bytes start at
	                         f->scanned (see imap_frame_skip_literal) */
	IMAP_FRAME_COMPLETE,  /* the response is buf[0..f->scanned) */
	IMAP_FRAME_TOO_BIG,   /* a line over 1 MiB, a literal over 1 GiB, or
	                         more than IMAP_FRAME_MAX_LITERALS literals */
};

/* Zeroes *f: before the first byte of a response. */
void imap_frame_init(struct imap_frame *f);
/* Examines buf[f->scanned..len): buf holds the response from its first
 * byte (len never shrinks between calls, except by literal bytes the
 * caller took away, see below). Call again after LITERAL. */
enum imap_frame_event imap_frame_scan(struct imap_frame *f, const char *buf, size_t len);
/* After IMAP_FRAME_LITERAL, for a caller that takes the literal's bytes
 * out of the buffer itself (they never reach buf): the frame goes on
 * right after the announcement. The caller makes the announcement read
 * as an empty literal ("{000}": imap_frame_empty_announcement). */
void imap_frame_skip_literal(struct imap_frame *f);
/* Overwrites the digits of the announcement at buf + f->announce_at with
 * '0's: the parser then reads an empty literal there. */
void imap_frame_empty_announcement(const struct imap_frame *f, char *buf);

/* Frees everything *r owns and zeroes it. Safe on a zeroed struct. */
void imap_response_free(struct imap_response *r);
/* Frees what v owns (not v itself). */
void imap_value_clear(struct imap_value *v);

/* Helpers over parsed values (all pure, none allocate). */

/* 1 when v is an ATOM equal to word, ignoring ASCII case. */
int imap_value_is_atom(const struct imap_value *v, const char *word);
/* Parses an ATOM (or STRING) of decimal digits into *n (<= UINT64_MAX).
 * Returns 0 on success, -1 otherwise. */
int imap_value_number(const struct imap_value *v, uint64_t *n);
/* In a FETCH attribute list (name value name value ...), returns the
 * value that follows the atom equal to name (ASCII case ignored), or NULL.
 * For BODY sections name is matched in full: "BODY[]", "BODY[]<0>",
 * "BODY[HEADER.FIELDS (DATE FROM)]" (the server's spelling of the section
 * is compared case-insensitively, white space as sent). */
const struct imap_value *imap_fetch_get(const struct imap_value *list,
                                        const char *name);
/* Like imap_fetch_get but matches the first attribute whose name starts
 * with prefix (e.g. "BODY[" to find any body section). *name_out (may be
 * NULL) receives the attribute's name value. */
const struct imap_value *imap_fetch_get_prefix(const struct imap_value *list,
                                               const char *prefix,
                                               const struct imap_value **name_out);
/* Renders v in IMAP syntax into out (for logs and tests): atoms as is,
 * strings quoted (or as {n} when they hold CR, LF, NUL, or '"' is not
 * enough), lists in parentheses, NIL. */
void imap_value_format(GString *out, const struct imap_value *v);

/* Appends s to out as an IMAP astring/mailbox argument that cannot break
 * out of its place in a command: a quoted string with '\\' and '"' escaped.
 * Returns 0, or -1 (out unchanged) when s holds CR, LF, NUL or a byte
 * over 0x7f — those must be sent as a literal by the caller. */
int imap_quote(GString *out, const char *s);

/* Parses an IMAP sequence set of UIDs ("1:3,7,9:8") into a sorted array
 * without duplicates (g_free). "*" is not allowed here. Returns 0 or -1.
 * At most max_count values (-1 beyond that). */
int imap_parse_uid_set(const char *s, uint32_t **uids, size_t *count,
                       size_t max_count);

/* An INTERNALDATE ("17-Jul-1996 02:44:25 -0700") as Unix time; -1 when
 * it is not one. */
int64_t imap_parse_internaldate(const char *s);

#endif

/* mime.h — GMime: header decoding, file-name derivation, validation.
 *
 * Pure with respect to the outside world: takes bytes, returns strings.
 * Every GMime object lives only inside one call (GMime objects are not
 * thread-safe); mime_init() must run once before threads start. */
#ifndef MAILFS_MIME_H
#define MAILFS_MIME_H

#include <stddef.h>
#include <stdint.h>

#define MIME_NO_DATE INT64_MIN

struct mime_header_info {
	char *subject;     /* g_mime_message_get_subject(), decoded UTF-8; NULL if absent */
	char *from;        /* the From header decoded to UTF-8 (display form); NULL if absent
	                      (and always NULL from mime_parse_headers_lazy) */
	char *message_id;  /* g_mime_message_get_message_id(): addr-spec, no <>; NULL if absent */
	char *date_header; /* the Date header value decoded, trimmed; NULL if absent
	                      (and always NULL from mime_parse_headers_lazy) */
	char *from_raw;    /* the first From and Date as sent: folding CR/LF removed, */
	char *date_raw;    /* trimmed; NULL if absent or blank. mime_decode_from()
	                      and mime_decode_date() turn them into from, date_header */
	int64_t date;      /* g_mime_message_get_date() as Unix time (UTC), or MIME_NO_DATE */
	char h8[9];        /* first 8 lowercase hex digits of SHA-256 over the
	                      Message-ID addr-spec; without a Message-ID, over the
	                      raw Date, From and Subject values (first instance of
	                      each, unfolded, trimmed, "" when absent) joined by "\n" */
};

/* Once per process, before any thread uses GMime. */
void mime_init(void);
void mime_shutdown(void);

/* Parses a header block (or a whole message: parsing stops at the body)
 * and fills *out. Only the Date, From, Subject and Message-ID fields are
 * read, exactly as an IMAP server returns them for HEADER.FIELDS, so both
 * inputs give the same answer. Returns 0; -1 when none of the four is
 * there, in which case *out holds the defaults (all NULL, date
 * MIME_NO_DATE, h8 of three empty values). Never crashes on any input;
 * data need not be NUL-terminated. */
int mime_parse_headers(const char *data, size_t len, struct mime_header_info *out);
void mime_header_info_clear(struct mime_header_info *info);
/* The same without decoding From and Date for display (an address list
 * with IDN costs more than the rest together): what a listing needs. */
int mime_parse_headers_lazy(const char *data, size_t len, struct mime_header_info *out);
/* The display form of a from_raw / date_raw value, exactly what
 * mime_parse_headers puts in from / date_header; NULL for NULL or when
 * nothing is left. g_malloc'd. */
char *mime_decode_from(const char *from_raw);
char *mime_decode_date(const char *date_raw);
/* The same through a whole GMimeMessage: the reference that
 * mime_parse_headers() must agree with (it takes this path itself for
 * uncommon headers). */
int mime_parse_headers_full(const char *data, size_t len, struct mime_header_info *out);

/* The slug of DESIGN.md "File names" (after NFC normalisation): maximal runs of characters that are
 * not Unicode letters or digits become one '-', leading/trailing '-'
 * stripped, cut to at most 60 bytes on a UTF-8 boundary, trailing '-'
 * stripped again, "" -> "no-subject". subject may be NULL. Invalid UTF-8
 * bytes count as non-letters. Returns g_malloc'd string. */
char *mime_slug(const char *subject);

/* The name without collision suffix and without ".eml":
 * "YYYYMMDD-HHMM_<slug>_<h8>". The date is info->date in UTC; when it is
 * MIME_NO_DATE, fallback_date (IMAP INTERNALDATE, Unix time); when that is
 * MIME_NO_DATE too, "00000000-0000". Returns g_malloc'd string. */
char *mime_name_base(const struct mime_header_info *info, int64_t fallback_date);

/* 0 when data parses as an RFC 5322 message with at least one header
 * field (name: value) before the body; -1 for junk. */
int mime_validate_message(const char *data, size_t len);

#endif

/* utf7.h — modified UTF-7 (RFC 3501 section 5.1.3) for IMAP folder names.
 * Pure functions, no state. */
#ifndef MAILFS_UTF7_H
#define MAILFS_UTF7_H

/* UTF-8 -> modified UTF-7. Returns a g_malloc'd string, or NULL when the
 * input is not valid UTF-8. Printable ASCII (0x20-0x7e) passes through,
 * '&' becomes "&-", everything else is "&<modified base64 of UTF-16BE>-". */
char *imap_utf7_encode(const char *utf8);

/* Modified UTF-7 -> UTF-8. Returns a g_malloc'd string, or NULL when the
 * input is not valid modified UTF-7 (bad base64, unterminated shift,
 * unpaired surrogate, a shifted run that encodes printable ASCII, 8-bit
 * bytes, NUL). */
char *imap_utf7_decode(const char *mutf7);

#endif

/* fuzz_pop3_reply.c — libFuzzer target for the POP3 reply parser.
 * Consumes replies from the input the way the engine does (a status line,
 * then a multi-line body after +OK when the input's first byte says so),
 * checks that a body parsed in two pieces gives the same bytes as parsed
 * whole, that stuffing a payload again and parsing it gives it back, and
 * runs the line helpers on every payload. Calls only pop3_parse.h, so it
 * links alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "pop3_parse.h"

/* Parses a body from buf[0..len) in one call. */
static enum pop3_parse_result fuzz_whole(const char *buf, size_t len, size_t *consumed,
                                         GString *out)
{
	struct pop3_multiline m;
	enum pop3_parse_result rc;
	size_t before = out->len;

	pop3_multiline_init(&m);
	rc = pop3_parse_multiline(&m, buf, len, consumed, out);
	if (*consumed > len || m.bytes != out->len - before)
		abort();
	if (rc == POP3_PARSE_INCOMPLETE && len - *consumed > 2)
		abort();
	if (rc == POP3_PARSE_OK && (!m.done || *consumed < 2))
		abort();
	return rc;
}

/* The same body fed as two pieces cut at cut, the engine's way: the bytes
 * not consumed from the first piece are handed over again with the second.
 * Copies of exactly the bytes given let ASan catch any over-read. */
static enum pop3_parse_result fuzz_pieces(const char *buf, size_t len, size_t cut,
                                          size_t *consumed, GString *out)
{
	struct pop3_multiline m;
	enum pop3_parse_result rc;
	char *first = g_memdup2(buf, cut), *second;
	size_t c1 = 0, c2 = 0;

	pop3_multiline_init(&m);
	rc = pop3_parse_multiline(&m, first, cut, &c1, out);
	g_free(first);
	if (c1 > cut || (rc == POP3_PARSE_INCOMPLETE && cut - c1 > 2))
		abort();
	if (rc != POP3_PARSE_INCOMPLETE) {
		*consumed = c1;
		return rc;
	}
	second = g_memdup2(buf + c1, len - c1);
	rc = pop3_parse_multiline(&m, second, len - c1, &c2, out);
	g_free(second);
	if (c2 > len - c1 || m.bytes != out->len)
		abort();
	*consumed = c1 + c2;
	return rc;
}

/* Stuffs a payload again (a "." before each line that starts with one)
 * and adds the terminator: parsing that must give the payload back. */
static void fuzz_round_trip(const GString *payload)
{
	GString *wire = g_string_new(NULL), *back = g_string_new(NULL);
	const char *line;
	size_t pos = 0, line_len, consumed;

	while (pop3_next_line(payload->str, payload->len, &pos, &line, &line_len)) {
		if (line_len > 0 && line[0] == '.')
			g_string_append_c(wire, '.');
		g_string_append_len(wire, line, (gssize)((payload->str + pos) - line));
	}
	g_string_append(wire, ".\r\n");
	if (fuzz_whole(wire->str, wire->len, &consumed, back) != POP3_PARSE_OK ||
	    consumed != wire->len || back->len != payload->len ||
	    memcmp(back->str, payload->str, back->len) != 0)
		abort();
	g_string_free(wire, TRUE);
	g_string_free(back, TRUE);
}

static void fuzz_helpers(const char *buf, size_t len)
{
	const char *line, *uidl;
	size_t pos = 0, line_len, uidl_len;
	uint32_t msgno;
	uint64_t size;

	while (pop3_next_line(buf, len, &pos, &line, &line_len)) {
		if (line < buf || line + line_len > buf + len || pos > len)
			abort();
		if (pop3_parse_uidl_line(line, line_len, &msgno, &uidl, &uidl_len) == 0) {
			if (msgno == 0 || uidl < line || uidl + uidl_len > line + line_len ||
			    uidl_len == 0 || uidl_len > 512)
				abort();
			for (size_t i = 0; i < uidl_len; i++)
				if ((unsigned char)uidl[i] <= 0x20 || (unsigned char)uidl[i] >= 0x7f)
					abort();
		}
		if (pop3_parse_list_line(line, line_len, &msgno, &size) == 0 && msgno == 0)
			abort();
	}
	(void)pop3_parse_capa(buf, len);
	if (pop3_header_block_len(buf, len) > len)
		abort();
}

/* A body at buf[0..len): whole and in pieces must agree. Returns the bytes
 * the whole parse consumed (len when INCOMPLETE or ERROR). */
static size_t fuzz_body(const char *buf, size_t len, size_t cut)
{
	GString *whole = g_string_new(NULL), *split = g_string_new(NULL);
	size_t whole_consumed = 0, split_consumed = 0;
	enum pop3_parse_result whole_rc, split_rc;

	whole_rc = fuzz_whole(buf, len, &whole_consumed, whole);
	split_rc = fuzz_pieces(buf, len, cut > len ? len : cut, &split_consumed, split);
	if (whole_rc != split_rc)
		abort();
	if (whole_rc != POP3_PARSE_ERROR &&
	    (whole_consumed != split_consumed || whole->len != split->len ||
	     memcmp(whole->str, split->str, whole->len) != 0))
		abort();
	if (whole_rc == POP3_PARSE_OK) {
		fuzz_round_trip(whole);
		fuzz_helpers(whole->str, whole->len);
	}
	g_string_free(whole, TRUE);
	g_string_free(split, TRUE);
	return whole_rc == POP3_PARSE_OK ? whole_consumed : len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data + 1;
	size_t len, off = 0;
	unsigned flags;

	if (size < 1)
		return 0;
	flags = data[0];
	len = size - 1;
	/* Bit 0: the whole input is one body (no status lines). */
	if (flags & 1) {
		fuzz_body(buf, len, (size_t)flags * len / 256);
		return 0;
	}
	while (off < len) {
		struct pop3_status st;
		size_t consumed = 0;
		enum pop3_parse_result rc = pop3_parse_status(buf + off, len - off, &consumed, &st);

		if (rc == POP3_PARSE_INCOMPLETE) {
			if (st.text || st.code || memchr(buf + off, '\n', len - off))
				abort();
			break;
		}
		/* Without progress the engine would loop forever. */
		if (consumed == 0 || consumed > len - off)
			abort();
		off += consumed;
		if (rc == POP3_PARSE_ERROR) {
			if (st.text || st.code)
				abort();
			continue;
		}
		if (!st.text || strlen(st.text) > consumed || (st.code && !*st.code))
			abort();
		/* Bit 1: a +OK starts a multi-line body, as for UIDL or RETR. */
		if (st.ok && (flags & 2))
			off += fuzz_body(buf + off, len - off, (size_t)(flags >> 2) * (len - off) / 64);
		pop3_status_clear(&st);
	}
	return 0;
}

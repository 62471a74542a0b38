/* test_pop3_parse.c — unit tests for the POP3 reply parser: status lines,
 * multi-line bodies arriving in pieces (split at every byte), dot-stuffing,
 * UIDL/LIST/CAPA lines, header blocks, garbage and truncated replies. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <glib.h>
#include "pop3_parse.h"

/* ---------------------------------------------------------------- status */

static void parse_status_ok(const char *s, int ok, const char *text, const char *code)
{
	struct pop3_status st;
	size_t consumed = 0;
	enum pop3_parse_result rc = pop3_parse_status(s, strlen(s), &consumed, &st);

	if (rc != POP3_PARSE_OK)
		fail_msg("\"%s\" gave %d, want OK", s, rc);
	assert_int_equal(consumed, strlen(s));
	assert_int_equal(st.ok, ok);
	assert_string_equal(st.text, text);
	if (code)
		assert_string_equal(st.code, code);
	else
		assert_null(st.code);
	pop3_status_clear(&st);
	assert_null(st.text);
}

static void parse_status_error(const char *s, size_t len, size_t want_consumed)
{
	struct pop3_status st;
	size_t consumed = 0;
	enum pop3_parse_result rc = pop3_parse_status(s, len, &consumed, &st);

	if (rc != POP3_PARSE_ERROR)
		fail_msg("\"%.*s\" gave %d, want ERROR", (int)(len > 60 ? 60 : len), s, rc);
	assert_int_equal(consumed, want_consumed);
	assert_null(st.text);
	assert_null(st.code);
}

static void test_status(void **state)
{
	(void)state;
	parse_status_ok("+OK 2 messages (320 octets)\r\n", 1, "2 messages (320 octets)", NULL);
	parse_status_ok("+OK\r\n", 1, "", NULL);
	parse_status_ok("+OK\n", 1, "", NULL);
	parse_status_ok("+ok lower case\n", 1, "lower case", NULL);
	parse_status_ok("-ERR no such message\r\n", 0, "no such message", NULL);
	parse_status_ok("-ERR\r\n", 0, "", NULL);
	parse_status_ok("-ERR [IN-USE] Mailbox locked\r\n", 0, "Mailbox locked", "IN-USE");
	parse_status_ok("-ERR [sys/temp] try later  \r\n", 0, "try later", "SYS/TEMP");
	parse_status_ok("+OK\t  spaced\r\n", 1, "spaced", NULL);
	/* not a code: unclosed, empty, or with a space inside */
	parse_status_ok("-ERR [IN-USE locked\r\n", 0, "[IN-USE locked", NULL);
	parse_status_ok("-ERR [] x\r\n", 0, "[] x", NULL);
	parse_status_ok("-ERR [A B] x\r\n", 0, "[A B] x", NULL);
}

static void test_status_split_and_rest(void **state)
{
	const char *s = "+OK hello\r\nnext";
	struct pop3_status st;
	size_t consumed;

	(void)state;
	/* Every prefix without the LF is INCOMPLETE; nothing is allocated. */
	for (size_t cut = 0; cut < 11; cut++) {
		assert_int_equal(pop3_parse_status(s, cut, &consumed, &st), POP3_PARSE_INCOMPLETE);
		assert_null(st.text);
	}
	/* An engine's empty buffer may be NULL. */
	assert_int_equal(pop3_parse_status(NULL, 0, &consumed, &st), POP3_PARSE_INCOMPLETE);
	assert_int_equal(pop3_parse_status(s, strlen(s), &consumed, &st), POP3_PARSE_OK);
	assert_int_equal(consumed, 11);
	assert_string_equal(st.text, "hello");
	pop3_status_clear(&st);
}

static void test_status_garbage(void **state)
{
	char *longline;
	size_t n = POP3_MAX_STATUS_LINE + 10;

	(void)state;
	parse_status_error("+OKAY\r\n", 7, 7);
	parse_status_error("* OK hello\r\nrest", 16, 12);
	parse_status_error("OK\r\n", 4, 4);
	parse_status_error("\r\n", 2, 2);
	parse_status_error("-ER\r\n", 5, 5);
	parse_status_error("+OK a\0b\r\n", 9, 9);
	parse_status_error("+OK\rx\r\n", 7, 7);
	/* Too long without a line end: ERROR at once, all consumed. */
	longline = g_malloc(n + 20);
	memcpy(longline, "+OK ", 4);
	memset(longline + 4, 'a', n - 4);
	parse_status_error(longline, n, n);
	/* ... and with one, consumed up to it. */
	memcpy(longline + n, "\r\n+OK\r\n", 7);
	parse_status_error(longline, n + 7, n + 2);
	/* The longest line accepted. */
	memset(longline + 4, 'a', POP3_MAX_STATUS_LINE - 4);
	memcpy(longline + POP3_MAX_STATUS_LINE, "\r\n", 2);
	{
		struct pop3_status st;
		size_t consumed;
		assert_int_equal(pop3_parse_status(longline, POP3_MAX_STATUS_LINE + 2, &consumed, &st),
		                 POP3_PARSE_OK);
		assert_int_equal(consumed, POP3_MAX_STATUS_LINE + 2);
		assert_int_equal(strlen(st.text), POP3_MAX_STATUS_LINE - 4);
		pop3_status_clear(&st);
	}
	g_free(longline);
}

/* ---------------------------------------------------------------- multi-line */

/* Parses the whole of wire (one multi-line body plus anything after it)
 * in one call; returns the payload and sets *consumed. */
static GString *multiline_whole(const char *wire, size_t len, enum pop3_parse_result *rc,
                                size_t *consumed)
{
	struct pop3_multiline m;
	GString *out = g_string_new(NULL);

	pop3_multiline_init(&m);
	*rc = pop3_parse_multiline(&m, wire, len, consumed, out);
	return out;
}

/* Feeds wire to the parser as the engine does, in pieces cut at the
 * positions in cuts (ascending, each < len), keeping unconsumed bytes.
 * Returns the payload; *total is the bytes consumed until OK. */
static GString *multiline_pieces(const char *wire, size_t len, const size_t *cuts, size_t n_cuts,
                                 enum pop3_parse_result *rc, size_t *total)
{
	struct pop3_multiline m;
	GString *out = g_string_new(NULL);
	GString *pending = g_string_new(NULL);
	size_t from = 0;

	pop3_multiline_init(&m);
	*total = 0;
	*rc = POP3_PARSE_INCOMPLETE;
	for (size_t i = 0; i <= n_cuts && *rc == POP3_PARSE_INCOMPLETE; i++) {
		size_t to = i < n_cuts ? cuts[i] : len;
		size_t consumed = 0;
		char *copy;
		/* A private copy of exactly these bytes: ASan sees any over-read. */
		g_string_append_len(pending, wire + from, (gssize)(to - from));
		copy = g_memdup2(pending->str, pending->len);
		*rc = pop3_parse_multiline(&m, copy, pending->len, &consumed, out);
		g_free(copy);
		assert_true(consumed <= pending->len);
		if (*rc == POP3_PARSE_INCOMPLETE)
			assert_true(pending->len - consumed <= 2);
		*total += consumed;
		g_string_erase(pending, 0, (gssize)consumed);
		from = to;
	}
	g_string_free(pending, TRUE);
	return out;
}

static void assert_payload(const GString *got, const char *want, size_t want_len)
{
	if (got->len != want_len || memcmp(got->str, want, want_len) != 0)
		fail_msg("payload \"%.*s\" (%zu bytes), want \"%.*s\" (%zu bytes)", (int)got->len,
		         got->str, got->len, (int)want_len, want, want_len);
}

#define WIRE_SAMPLE \
	"From: a@example.org\r\n" \
	"Subject: dots\r\n" \
	"\r\n" \
	"..\r\n" \
	"...\r\n" \
	"..hidden\r\n" \
	"bare lf\n" \
	".\r\r\n" \
	"a.b.\r\n" \
	"\r\n" \
	"..\r\n" \
	".\r\n" \
	"+OK next reply\r\n"

#define PAYLOAD_SAMPLE \
	"From: a@example.org\r\n" \
	"Subject: dots\r\n" \
	"\r\n" \
	".\r\n" \
	"..\r\n" \
	".hidden\r\n" \
	"bare lf\n" \
	"\r\r\n" \
	"a.b.\r\n" \
	"\r\n" \
	".\r\n"

static void test_multiline_whole(void **state)
{
	enum pop3_parse_result rc;
	size_t consumed;
	GString *out;

	(void)state;
	out = multiline_whole(WIRE_SAMPLE, strlen(WIRE_SAMPLE), &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_OK);
	assert_payload(out, PAYLOAD_SAMPLE, strlen(PAYLOAD_SAMPLE));
	assert_int_equal(consumed, strlen(WIRE_SAMPLE) - strlen("+OK next reply\r\n"));
	g_string_free(out, TRUE);

	/* An empty body; bare LF terminator; a stuffed ".x" loses its dot. */
	out = multiline_whole(".\r\n", 3, &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_OK);
	assert_int_equal(consumed, 3);
	assert_int_equal(out->len, 0);
	g_string_free(out, TRUE);
	out = multiline_whole("a\n.\nb", 5, &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_OK);
	assert_int_equal(consumed, 4);
	assert_payload(out, "a\n", 2);
	g_string_free(out, TRUE);
	out = multiline_whole(".x\r\n.\r\n", 7, &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_OK);
	assert_payload(out, "x\r\n", 3);
	g_string_free(out, TRUE);
	/* A body line that is only "." arrives as "..". */
	out = multiline_whole("before\r\n..\r\nafter\r\n.\r\n", 22, &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_OK);
	assert_payload(out, "before\r\n.\r\nafter\r\n", 18);
	g_string_free(out, TRUE);
	/* A dot inside a line is no terminator. */
	out = multiline_whole("x.\r\n.\r\n", 7, &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_OK);
	assert_payload(out, "x.\r\n", 4);
	g_string_free(out, TRUE);
}

/* The same payload and length whatever the split: one cut at every
 * position, two cuts at every pair, and one byte at a time. */
static void test_multiline_split_everywhere(void **state)
{
	const char *wire = WIRE_SAMPLE;
	size_t len = strlen(wire), want_consumed = len - strlen("+OK next reply\r\n");
	enum pop3_parse_result rc;
	size_t total, cuts[2];
	GString *out;

	(void)state;
	for (size_t a = 0; a <= len; a++) {
		cuts[0] = a;
		out = multiline_pieces(wire, len, cuts, 1, &rc, &total);
		assert_int_equal(rc, POP3_PARSE_OK);
		assert_int_equal(total, want_consumed);
		assert_payload(out, PAYLOAD_SAMPLE, strlen(PAYLOAD_SAMPLE));
		g_string_free(out, TRUE);
		for (size_t b = a; b <= len; b++) {
			cuts[1] = b;
			out = multiline_pieces(wire, len, cuts, 2, &rc, &total);
			assert_int_equal(rc, POP3_PARSE_OK);
			assert_int_equal(total, want_consumed);
			assert_payload(out, PAYLOAD_SAMPLE, strlen(PAYLOAD_SAMPLE));
			g_string_free(out, TRUE);
		}
	}
	{
		size_t *every = g_new(size_t, len);
		for (size_t i = 0; i < len; i++)
			every[i] = i + 1;
		out = multiline_pieces(wire, len, every, len - 1, &rc, &total);
		assert_int_equal(rc, POP3_PARSE_OK);
		assert_int_equal(total, want_consumed);
		assert_payload(out, PAYLOAD_SAMPLE, strlen(PAYLOAD_SAMPLE));
		g_string_free(out, TRUE);
		g_free(every);
	}
}

/* The start of a line beginning with "." is held back until it can be
 * told apart: the terminator, or a stuffed line. */
static void test_multiline_held_back(void **state)
{
	struct pop3_multiline m;
	GString *out = g_string_new(NULL);
	size_t consumed;

	(void)state;
	pop3_multiline_init(&m);
	assert_int_equal(pop3_parse_multiline(&m, NULL, 0, &consumed, out), POP3_PARSE_INCOMPLETE);
	assert_int_equal(consumed, 0);
	assert_int_equal(pop3_parse_multiline(&m, "abc\r\n.", 6, &consumed, out),
	                 POP3_PARSE_INCOMPLETE);
	assert_int_equal(consumed, 5);
	assert_payload(out, "abc\r\n", 5);
	assert_int_equal(pop3_parse_multiline(&m, ".\r", 2, &consumed, out), POP3_PARSE_INCOMPLETE);
	assert_int_equal(consumed, 0);
	assert_int_equal(pop3_parse_multiline(&m, ".\r\n", 3, &consumed, out), POP3_PARSE_OK);
	assert_int_equal(consumed, 3);
	assert_true(m.done);
	assert_int_equal(m.bytes, 5);
	/* After OK, nothing more is taken. */
	assert_int_equal(pop3_parse_multiline(&m, "x\r\n", 3, &consumed, out), POP3_PARSE_OK);
	assert_int_equal(consumed, 0);
	assert_payload(out, "abc\r\n", 5);

	/* ".." split after the first dot: the stuffed line survives. */
	g_string_truncate(out, 0);
	pop3_multiline_init(&m);
	assert_int_equal(pop3_parse_multiline(&m, ".", 1, &consumed, out), POP3_PARSE_INCOMPLETE);
	assert_int_equal(consumed, 0);
	assert_int_equal(pop3_parse_multiline(&m, "..", 2, &consumed, out), POP3_PARSE_INCOMPLETE);
	assert_int_equal(consumed, 2);
	assert_payload(out, ".", 1);
	assert_int_equal(pop3_parse_multiline(&m, "\r", 1, &consumed, out), POP3_PARSE_INCOMPLETE);
	assert_int_equal(pop3_parse_multiline(&m, "\n.\r\n", 4, &consumed, out), POP3_PARSE_OK);
	assert_payload(out, ".\r\n", 3);
	g_string_free(out, TRUE);
}

static void test_multiline_truncated(void **state)
{
	const char *wire = "line one\r\n..two\r\nthree";
	enum pop3_parse_result rc;
	size_t consumed;
	GString *out;

	(void)state;
	/* Every prefix of a body is INCOMPLETE, never OK or ERROR. */
	for (size_t cut = 0; cut <= strlen(WIRE_SAMPLE) - strlen(".\r\n+OK next reply\r\n") + 2;
	     cut++) {
		out = multiline_whole(WIRE_SAMPLE, cut, &rc, &consumed);
		assert_int_equal(rc, POP3_PARSE_INCOMPLETE);
		assert_true(cut - consumed <= 2);
		g_string_free(out, TRUE);
	}
	out = multiline_whole(wire, strlen(wire), &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_INCOMPLETE);
	assert_int_equal(consumed, strlen(wire));
	assert_payload(out, "line one\r\n.two\r\nthree", 21);
	g_string_free(out, TRUE);
}

/* Anything between the lines passes through: NUL, 8-bit, lone CR, reply
 * lookalikes. */
static void test_multiline_garbage(void **state)
{
	static const char wire[] = "\0\xff\xfe\r\x01.\r\n+OK fake\r\n-ERR fake\r\n .\r\n.\r\n";
	static const char want[] = "\0\xff\xfe\r\x01.\r\n+OK fake\r\n-ERR fake\r\n .\r\n";
	enum pop3_parse_result rc;
	size_t consumed;
	GString *out;

	(void)state;
	out = multiline_whole(wire, sizeof wire - 1, &rc, &consumed);
	assert_int_equal(rc, POP3_PARSE_OK);
	assert_int_equal(consumed, sizeof wire - 1);
	assert_payload(out, want, sizeof want - 1);
	g_string_free(out, TRUE);
}

/* A line longer than POP3_MAX_BODY_LINE is an ERROR, fed in 1 MiB pieces
 * (the caller empties out between pieces, as the engine does); one just
 * below the limit is not. */
static void test_multiline_long_line(void **state)
{
	size_t piece = 1024 * 1024;
	char *chunk = g_malloc(piece);
	struct pop3_multiline m;
	GString *out = g_string_new(NULL);
	enum pop3_parse_result rc = POP3_PARSE_INCOMPLETE;
	size_t consumed, fed = 0;

	(void)state;
	memset(chunk, 'x', piece);
	pop3_multiline_init(&m);
	while (rc == POP3_PARSE_INCOMPLETE && fed < POP3_MAX_BODY_LINE + 2 * piece) {
		rc = pop3_parse_multiline(&m, chunk, piece, &consumed, out);
		fed += piece;
		g_string_truncate(out, 0);
	}
	assert_int_equal(rc, POP3_PARSE_ERROR);
	assert_true(fed > POP3_MAX_BODY_LINE);
	/* It stays an error. */
	assert_int_equal(pop3_parse_multiline(&m, "\r\n.\r\n", 5, &consumed, out), POP3_PARSE_ERROR);
	assert_int_equal(consumed, 0);

	/* Exactly the limit, then CRLF and the terminator: OK. */
	pop3_multiline_init(&m);
	fed = 0;
	while (fed < POP3_MAX_BODY_LINE) {
		rc = pop3_parse_multiline(&m, chunk, piece, &consumed, out);
		assert_int_equal(rc, POP3_PARSE_INCOMPLETE);
		fed += piece;
		g_string_truncate(out, 0);
	}
	assert_int_equal(fed, POP3_MAX_BODY_LINE);
	assert_int_equal(pop3_parse_multiline(&m, "\r\n.\r\n", 5, &consumed, out), POP3_PARSE_OK);
	assert_int_equal(m.bytes, POP3_MAX_BODY_LINE + 2);
	g_string_free(out, TRUE);
	g_free(chunk);
}

/* A status line, its body, and the next reply, from one buffer. */
static void test_replies_in_sequence(void **state)
{
	const char *wire = "+OK 2 messages\r\n1 120\r\n2 300\r\n.\r\n-ERR no such message\r\n";
	struct pop3_status st;
	struct pop3_multiline m;
	GString *out = g_string_new(NULL);
	size_t pos = 0, consumed;

	(void)state;
	assert_int_equal(pop3_parse_status(wire, strlen(wire), &consumed, &st), POP3_PARSE_OK);
	assert_true(st.ok);
	pop3_status_clear(&st);
	pos += consumed;
	pop3_multiline_init(&m);
	assert_int_equal(pop3_parse_multiline(&m, wire + pos, strlen(wire) - pos, &consumed, out),
	                 POP3_PARSE_OK);
	pos += consumed;
	assert_payload(out, "1 120\r\n2 300\r\n", 14);
	assert_int_equal(pop3_parse_status(wire + pos, strlen(wire) - pos, &consumed, &st),
	                 POP3_PARSE_OK);
	assert_false(st.ok);
	assert_string_equal(st.text, "no such message");
	pop3_status_clear(&st);
	assert_int_equal(pos + consumed, strlen(wire));
	g_string_free(out, TRUE);
}

/* ---------------------------------------------------------------- lines */

static void test_next_line(void **state)
{
	const char *buf = "a\r\nb\n\r\nc";
	const char *line;
	size_t pos = 0, len;

	(void)state;
	assert_true(pop3_next_line(buf, strlen(buf), &pos, &line, &len));
	assert_int_equal(len, 1);
	assert_memory_equal(line, "a", 1);
	assert_true(pop3_next_line(buf, strlen(buf), &pos, &line, &len));
	assert_memory_equal(line, "b", 1);
	assert_int_equal(len, 1);
	assert_true(pop3_next_line(buf, strlen(buf), &pos, &line, &len));
	assert_int_equal(len, 0);
	assert_true(pop3_next_line(buf, strlen(buf), &pos, &line, &len));
	assert_int_equal(len, 1);
	assert_memory_equal(line, "c", 1);
	assert_false(pop3_next_line(buf, strlen(buf), &pos, &line, &len));
	pos = 0;
	assert_false(pop3_next_line("", 0, &pos, &line, &len));
}

static void uidl_ok(const char *line, uint32_t want_msgno, const char *want_uidl)
{
	const char *uidl;
	size_t uidl_len;
	uint32_t msgno;

	if (pop3_parse_uidl_line(line, strlen(line), &msgno, &uidl, &uidl_len) != 0)
		fail_msg("UIDL line \"%s\" refused", line);
	assert_int_equal(msgno, want_msgno);
	assert_int_equal(uidl_len, strlen(want_uidl));
	assert_memory_equal(uidl, want_uidl, uidl_len);
}

static void uidl_bad(const char *line)
{
	const char *uidl;
	size_t uidl_len;
	uint32_t msgno;

	if (pop3_parse_uidl_line(line, strlen(line), &msgno, &uidl, &uidl_len) == 0)
		fail_msg("UIDL line \"%s\" accepted", line);
}

static void test_uidl_lines(void **state)
{
	char *long_id;

	(void)state;
	uidl_ok("1 000000016b022cfb", 1, "000000016b022cfb");
	uidl_ok("  2\t\tQhdPYR:00WBw1Ph7x7  ", 2, "QhdPYR:00WBw1Ph7x7");
	uidl_ok("3 a\r", 3, "a");
	uidl_ok("4294967295 ~!{}", 4294967295u, "~!{}");
	uidl_ok("007 x", 7, "x");
	uidl_bad("");
	uidl_bad("1");
	uidl_bad("1 ");
	uidl_bad("1abc");
	uidl_bad("0 abc");
	uidl_bad("-1 abc");
	uidl_bad("4294967296 abc");
	uidl_bad("99999999999999999999999 abc");
	uidl_bad("x abc");
	uidl_bad("1 abc def");
	uidl_bad("1 ab\x01");
	uidl_bad("1 ab\xc3\xa4");
	long_id = g_strnfill(515, 'u');  /* "1 " and 513 bytes of UIDL */
	long_id[0] = '1';
	long_id[1] = ' ';
	uidl_bad(long_id);
	long_id[514] = '\0';
	uidl_ok(long_id, 1, long_id + 2);
	g_free(long_id);
}

static void test_list_lines(void **state)
{
	uint32_t msgno;
	uint64_t size;

	(void)state;
	assert_int_equal(pop3_parse_list_line("1 120", 5, &msgno, &size), 0);
	assert_int_equal(msgno, 1);
	assert_int_equal(size, 120);
	assert_int_equal(pop3_parse_list_line(" 2 \t 300  extra info", 20, &msgno, &size), 0);
	assert_int_equal(msgno, 2);
	assert_int_equal(size, 300);
	assert_int_equal(pop3_parse_list_line("3 18446744073709551615", 22, &msgno, &size), 0);
	assert_true(size == UINT64_MAX);
	assert_int_equal(pop3_parse_list_line("3 0\r", 4, &msgno, &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(pop3_parse_list_line("3 18446744073709551616", 22, &msgno, &size), -1);
	assert_int_equal(pop3_parse_list_line("3 -1", 4, &msgno, &size), -1);
	assert_int_equal(pop3_parse_list_line("3 12x", 5, &msgno, &size), -1);
	assert_int_equal(pop3_parse_list_line("3", 1, &msgno, &size), -1);
	assert_int_equal(pop3_parse_list_line("0 12", 4, &msgno, &size), -1);
	assert_int_equal(pop3_parse_list_line("", 0, &msgno, &size), -1);
	assert_int_equal(pop3_parse_list_line("a b", 3, &msgno, &size), -1);
	assert_int_equal(pop3_parse_list_line("3  ", 3, &msgno, &size), -1);
}

static void test_capa(void **state)
{
	const char *capa = "CAPA\r\ntop\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nSASL PLAIN LOGIN\r\n"
	                   "USER\r\nSTLS\r\n";
	unsigned caps;

	(void)state;
	caps = pop3_parse_capa(capa, strlen(capa));
	assert_int_equal(caps, POP3_CAPA_TOP | POP3_CAPA_UIDL | POP3_CAPA_RESP_CODES |
	                       POP3_CAPA_PIPELINING | POP3_CAPA_SASL | POP3_CAPA_USER |
	                       POP3_CAPA_STLS);
	/* Only whole first words count. */
	caps = pop3_parse_capa("TOPX\nX UIDL\nPIPELINING-NOT\n", 27);
	assert_int_equal(caps, 0);
	caps = pop3_parse_capa("  UIDL\n", 7);
	assert_int_equal(caps, POP3_CAPA_UIDL);
	assert_int_equal(pop3_parse_capa("", 0), 0);
}

static void test_header_block(void **state)
{
	const char *crlf = "A: b\r\nC: d\r\n\r\nbody\r\n\r\nmore";
	const char *lf = "A: b\n\nbody";
	const char *none = "A: b\r\nC: d\r\n";

	(void)state;
	assert_int_equal(pop3_header_block_len(crlf, strlen(crlf)), 14);
	assert_int_equal(pop3_header_block_len(lf, strlen(lf)), 6);
	assert_int_equal(pop3_header_block_len(none, strlen(none)), strlen(none));
	assert_int_equal(pop3_header_block_len("\r\nbody", 6), 2);
	assert_int_equal(pop3_header_block_len("A: b\r\n\n", 7), 7);
	assert_int_equal(pop3_header_block_len("", 0), 0);
	assert_int_equal(pop3_header_block_len(NULL, 0), 0);
	assert_int_equal(pop3_parse_capa(NULL, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_status_split_and_rest),
		cmocka_unit_test(test_status_garbage),
		cmocka_unit_test(test_multiline_whole),
		cmocka_unit_test(test_multiline_split_everywhere),
		cmocka_unit_test(test_multiline_held_back),
		cmocka_unit_test(test_multiline_truncated),
		cmocka_unit_test(test_multiline_garbage),
		cmocka_unit_test(test_multiline_long_line),
		cmocka_unit_test(test_replies_in_sequence),
		cmocka_unit_test(test_next_line),
		cmocka_unit_test(test_uidl_lines),
		cmocka_unit_test(test_list_lines),
		cmocka_unit_test(test_capa),
		cmocka_unit_test(test_header_block),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_imap_parse.c — unit tests for the IMAP response parser and its
 * helpers (fetch lookups, formatting, quoting, UID sets). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <glib.h>
#include "imap_parse.h"
#include "../../src/imap_int.h"  /* imap_uid_ranges, imap_vanished_set */

/* Parses s (which must hold exactly one response) and checks OK. */
static void parse_one(const char *s, size_t len, struct imap_response *r)
{
	size_t consumed = 0, need = 0;
	enum imap_parse_result rc = imap_parse_response(s, len, &consumed, &need, r);

	if (rc != IMAP_PARSE_OK)
		fail_msg("parse of \"%.*s\" gave %d", (int)len, s, rc);
	assert_int_equal(consumed, len);
}

static void parse_str(const char *s, struct imap_response *r)
{
	parse_one(s, strlen(s), r);
}

/* v rendered in IMAP syntax equals want. */
static void assert_format(const struct imap_value *v, const char *want)
{
	GString *out = g_string_new(NULL);

	imap_value_format(out, v);
	if (strcmp(out->str, want) != 0)
		fail_msg("formatted \"%s\", want \"%s\"", out->str, want);
	g_string_free(out, TRUE);
}

static void assert_parse_error(const char *s, size_t len, size_t want_consumed)
{
	struct imap_response r;
	size_t consumed = 0;
	enum imap_parse_result rc = imap_parse_response(s, len, &consumed, NULL, &r);

	if (rc != IMAP_PARSE_ERROR)
		fail_msg("\"%.*s\" gave %d, want ERROR", (int)(len > 80 ? 80 : len), s, rc);
	assert_int_equal(consumed, want_consumed);
	assert_null(r.tag);
	assert_null(r.keyword);
	assert_null(r.args.items);
}

static void test_tagged(void **state)
{
	struct imap_response r;

	(void)state;
	parse_str("A12 OK [READ-ONLY] EXAMINE completed\r\n", &r);
	assert_int_equal(r.kind, IMAP_RESPONSE_TAGGED);
	assert_string_equal(r.tag, "A12");
	assert_int_equal(r.status, IMAP_STATUS_OK);
	assert_string_equal(r.keyword, "OK");
	assert_int_equal(r.code.type, IMAP_VALUE_LIST);
	assert_format(&r.code, "(READ-ONLY)");
	assert_string_equal(r.text, "EXAMINE completed");
	assert_int_equal(r.args.type, IMAP_VALUE_LIST);
	assert_int_equal(r.args.count, 0);
	imap_response_free(&r);

	/* tag case preserved, status word upper-cased, no text */
	parse_str("a7b bad\r\n", &r);
	assert_string_equal(r.tag, "a7b");
	assert_int_equal(r.status, IMAP_STATUS_BAD);
	assert_string_equal(r.keyword, "BAD");
	assert_int_equal(r.code.type, IMAP_VALUE_NIL);
	assert_string_equal(r.text, "");
	imap_response_free(&r);

	parse_str("A3 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n", &r);
	assert_format(&r.code, "(COPYUID 38505 304,319:320 3956:3958)");
	assert_true(imap_value_is_atom(&r.code.items[0], "copyuid"));
	assert_string_equal(r.text, "Done");
	imap_response_free(&r);

	parse_str("A4 NO [OVERQUOTA] Quota exceeded\r\n", &r);
	assert_int_equal(r.status, IMAP_STATUS_NO);
	assert_format(&r.code, "(OVERQUOTA)");
	assert_string_equal(r.text, "Quota exceeded");
	imap_response_free(&r);

	/* the code's first atom is upper-cased, the rest kept */
	parse_str("A5 OK [uidnext 44292] predicted\r\n", &r);
	assert_format(&r.code, "(UIDNEXT 44292)");
	imap_response_free(&r);
}

static void test_untagged_numbers(void **state)
{
	struct imap_response r;

	(void)state;
	parse_str("* 12 EXISTS\r\n", &r);
	assert_int_equal(r.kind, IMAP_RESPONSE_UNTAGGED);
	assert_null(r.tag);
	assert_int_equal(r.status, IMAP_STATUS_NONE);
	assert_true(r.has_number);
	assert_int_equal(r.number, 12);
	assert_string_equal(r.keyword, "EXISTS");
	assert_int_equal(r.args.type, IMAP_VALUE_LIST);
	assert_int_equal(r.args.count, 0);
	assert_null(r.text);
	imap_response_free(&r);

	parse_str("* 3 expunge\r\n", &r);
	assert_int_equal(r.number, 3);
	assert_string_equal(r.keyword, "EXPUNGE");
	imap_response_free(&r);

	parse_str("* 4294967295 EXISTS\r\n", &r);
	assert_int_equal(r.number, 4294967295u);
	imap_response_free(&r);

	assert_parse_error("* 4294967296 EXISTS\r\n", 21, 21);
	assert_parse_error("* 12\r\n", 6, 6);
}

static void test_untagged_status(void **state)
{
	struct imap_response r;
	uint64_t n;

	(void)state;
	parse_str("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n", &r);
	assert_int_equal(r.status, IMAP_STATUS_OK);
	assert_false(r.has_number);
	assert_string_equal(r.keyword, "OK");
	assert_int_equal(r.code.count, 2);
	assert_true(imap_value_is_atom(&r.code.items[0], "UIDVALIDITY"));
	assert_int_equal(imap_value_number(&r.code.items[1], &n), 0);
	assert_int_equal(n, 3857529045u);
	assert_string_equal(r.text, "UIDs valid");
	assert_int_equal(r.args.count, 0);
	imap_response_free(&r);

	parse_str("* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n", &r);
	assert_format(&r.code, "(PERMANENTFLAGS (\\Deleted \\Seen \\*))");
	assert_int_equal(r.code.items[1].type, IMAP_VALUE_LIST);
	assert_true(imap_value_is_atom(&r.code.items[1].items[2], "\\*"));
	assert_string_equal(r.text, "Limited");
	imap_response_free(&r);

	parse_str("* BYE Logging out\r\n", &r);
	assert_int_equal(r.status, IMAP_STATUS_BYE);
	assert_string_equal(r.keyword, "BYE");
	assert_int_equal(r.code.type, IMAP_VALUE_NIL);
	assert_string_equal(r.text, "Logging out");
	imap_response_free(&r);

	parse_str("* PREAUTH [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n", &r);
	assert_int_equal(r.status, IMAP_STATUS_PREAUTH);
	assert_format(&r.code, "(CAPABILITY IMAP4rev1 LITERAL+)");
	imap_response_free(&r);

	parse_str("* NO [ALERT] Disk is full\r\n", &r);
	assert_int_equal(r.status, IMAP_STATUS_NO);
	assert_format(&r.code, "(ALERT)");
	assert_string_equal(r.text, "Disk is full");
	imap_response_free(&r);

	parse_str("* OK\r\n", &r);
	assert_int_equal(r.status, IMAP_STATUS_OK);
	assert_string_equal(r.text, "");
	imap_response_free(&r);
}

static void test_codes_odd(void **state)
{
	struct imap_response r;

	(void)state;
	/* odd but parseable: atoms may hold such characters */
	parse_str("* OK [something weird ~!@] hm\r\n", &r);
	assert_int_equal(r.code.type, IMAP_VALUE_LIST);
	assert_true(imap_value_is_atom(&r.code.items[0], "SOMETHING"));
	assert_string_equal(r.code.items[0].str, "SOMETHING");
	assert_string_equal(r.text, "hm");
	imap_response_free(&r);

	/* unparseable: kept whole as one raw atom */
	parse_str("A1 NO [weird (unbalanced \"q] Nope\r\n", &r);
	assert_int_equal(r.code.type, IMAP_VALUE_LIST);
	assert_int_equal(r.code.count, 1);
	assert_string_equal(r.code.items[0].str, "WEIRD (UNBALANCED \"Q");
	assert_string_equal(r.text, "Nope");
	imap_response_free(&r);

	/* a code that does not start with an atom is kept raw too */
	parse_str("A1 OK [\"x\"] y\r\n", &r);
	assert_int_equal(r.code.count, 1);
	assert_string_equal(r.code.items[0].str, "\"X\"");
	imap_response_free(&r);
	parse_str("A1 OK [] y\r\n", &r);
	assert_int_equal(r.code.type, IMAP_VALUE_NIL);
	assert_string_equal(r.text, "[] y");
	imap_response_free(&r);

	/* a literal is not allowed inside a code */
	parse_str("A1 OK [X {3}] y\r\n", &r);
	assert_string_equal(r.code.items[0].str, "X {3}");
	imap_response_free(&r);

	/* no ']': just text */
	parse_str("* OK [ALERT no end\r\n", &r);
	assert_int_equal(r.code.type, IMAP_VALUE_NIL);
	assert_string_equal(r.text, "[ALERT no end");
	imap_response_free(&r);

	/* brackets inside text after the code stay text */
	parse_str("* OK [ALERT] see [this]\r\n", &r);
	assert_format(&r.code, "(ALERT)");
	assert_string_equal(r.text, "see [this]");
	imap_response_free(&r);
}

static void test_continuation(void **state)
{
	struct imap_response r;

	(void)state;
	parse_str("+ Ready\r\n", &r);
	assert_int_equal(r.kind, IMAP_RESPONSE_CONTINUATION);
	assert_null(r.tag);
	assert_null(r.keyword);
	assert_int_equal(r.code.type, IMAP_VALUE_NIL);
	assert_string_equal(r.text, "Ready");
	imap_response_free(&r);

	parse_str("+ \r\n", &r);
	assert_string_equal(r.text, "");
	imap_response_free(&r);

	parse_str("+\r\n", &r);
	assert_int_equal(r.kind, IMAP_RESPONSE_CONTINUATION);
	assert_string_equal(r.text, "");
	imap_response_free(&r);

	parse_str("+ dGVzdA==\r\n", &r);
	assert_string_equal(r.text, "dGVzdA==");
	imap_response_free(&r);

	parse_str("+ [ALERT] go ahead\r\n", &r);
	assert_format(&r.code, "(ALERT)");
	assert_string_equal(r.text, "go ahead");
	imap_response_free(&r);
}

static void test_data_responses(void **state)
{
	struct imap_response r;

	(void)state;
	parse_str("* CAPABILITY IMAP4rev1 LITERAL+ MOVE AUTH=PLAIN\r\n", &r);
	assert_string_equal(r.keyword, "CAPABILITY");
	assert_int_equal(r.args.count, 4);
	assert_true(imap_value_is_atom(&r.args.items[1], "literal+"));
	assert_false(imap_value_is_atom(&r.args.items[1], "literal"));
	imap_response_free(&r);

	parse_str("* SEARCH 2 3 6\r\n", &r);
	assert_string_equal(r.keyword, "SEARCH");
	assert_format(&r.args, "(2 3 6)");
	imap_response_free(&r);

	parse_str("* SEARCH\r\n", &r);
	assert_int_equal(r.args.type, IMAP_VALUE_LIST);
	assert_int_equal(r.args.count, 0);
	imap_response_free(&r);

	parse_str("* ESEARCH (TAG \"A1\") UID ALL 1:3\r\n", &r);
	assert_string_equal(r.keyword, "ESEARCH");
	assert_format(&r.args, "((TAG \"A1\") UID ALL 1:3)");
	assert_int_equal(r.args.items[0].items[1].type, IMAP_VALUE_STRING);
	imap_response_free(&r);

	parse_str("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n", &r);
	assert_int_equal(r.args.count, 2);
	assert_true(imap_value_is_atom(&r.args.items[0], "blurdybloop"));
	assert_format(imap_fetch_get(&r.args.items[1], "uidnext"), "44292");
	imap_response_free(&r);

	parse_str("* QUOTA \"\" (STORAGE 10 512)\r\n", &r);
	assert_string_equal(r.keyword, "QUOTA");
	assert_int_equal(r.args.items[0].type, IMAP_VALUE_STRING);
	assert_int_equal(r.args.items[0].len, 0);
	assert_string_equal(r.args.items[0].str, "");
	assert_format(&r.args.items[1], "(STORAGE 10 512)");
	imap_response_free(&r);

	parse_str("* VANISHED (EARLIER) 41,43:116\r\n", &r);
	assert_string_equal(r.keyword, "VANISHED");
	assert_format(&r.args, "((EARLIER) 41,43:116)");
	imap_response_free(&r);

	parse_str("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n", &r);
	assert_int_equal(r.args.items[0].count, 6);
	imap_response_free(&r);

	parse_str("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n", &r);
	assert_int_equal(r.args.count, 3);
	assert_int_equal(r.args.items[1].type, IMAP_VALUE_NIL);
	imap_response_free(&r);

	/* keyword upper-cased, unknown keywords kept */
	parse_str("* xapplepushservice aps-version 2\r\n", &r);
	assert_string_equal(r.keyword, "XAPPLEPUSHSERVICE");
	imap_response_free(&r);
}

static void test_list(void **state)
{
	struct imap_response r;
	static const char lit[] = "* LIST (\\HasNoChildren) \"/\" {8}\r\nA \"b\"\\ c\r\n";

	(void)state;
	parse_str("* LIST (\\HasNoChildren \\Noselect) \"/\" \"INBOX\"\r\n", &r);
	assert_string_equal(r.keyword, "LIST");
	assert_int_equal(r.args.count, 3);
	assert_format(&r.args.items[0], "(\\HasNoChildren \\Noselect)");
	assert_int_equal(r.args.items[1].type, IMAP_VALUE_STRING);
	assert_string_equal(r.args.items[1].str, "/");
	assert_int_equal(r.args.items[2].type, IMAP_VALUE_STRING);
	assert_string_equal(r.args.items[2].str, "INBOX");
	imap_response_free(&r);

	parse_str("* LIST () NIL INBOX\r\n", &r);
	assert_int_equal(r.args.items[0].type, IMAP_VALUE_LIST);
	assert_int_equal(r.args.items[0].count, 0);
	assert_int_equal(r.args.items[1].type, IMAP_VALUE_NIL);
	assert_null(r.args.items[1].str);
	assert_int_equal(r.args.items[2].type, IMAP_VALUE_ATOM);
	assert_string_equal(r.args.items[2].str, "INBOX");
	imap_response_free(&r);

	parse_str(lit, &r);
	assert_int_equal(r.args.items[2].type, IMAP_VALUE_STRING);
	assert_int_equal(r.args.items[2].len, 8);
	assert_string_equal(r.args.items[2].str, "A \"b\"\\ c");
	assert_format(&r.args.items[2], "\"A \\\"b\\\"\\\\ c\"");
	imap_response_free(&r);

	/* quoted string escapes are undone */
	parse_str("* LIST (\\Marked) \".\" \"a\\\\b \\\"q\\\"\"\r\n", &r);
	assert_string_equal(r.args.items[2].str, "a\\b \"q\"");
	assert_int_equal(r.args.items[2].len, 7);
	imap_response_free(&r);

	/* a mailbox whose name holds brackets, atom and quoted */
	parse_str("* LIST (\\HasChildren) \"/\" [Gmail]\r\n", &r);
	assert_string_equal(r.args.items[2].str, "[Gmail]");
	imap_response_free(&r);
	parse_str("* LIST (\\HasChildren) \"/\" \"[Gmail]/Sent Mail\"\r\n", &r);
	assert_string_equal(r.args.items[2].str, "[Gmail]/Sent Mail");
	imap_response_free(&r);
}

static const char fetch_header[] =
	"Date: Fri, 05 Jan 2024 10:22:00 +0000\r\n"
	"From: Ann <ann@example.org>\r\n"
	"Subject: hi\r\n"
	"Message-ID: <1@example.org>\r\n"
	"\r\n";

static char *make_fetch(size_t *len)
{
	char *s = g_strdup_printf(
		"* 5 FETCH (UID 7 FLAGS (\\Seen $Work) RFC822.SIZE 1234 "
		"INTERNALDATE \"05-Jan-2024 10:22:00 +0000\" "
		"BODY[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)] {%zu}\r\n%s)\r\n",
		strlen(fetch_header), fetch_header);

	*len = strlen(s);
	return s;
}

static void test_fetch(void **state)
{
	struct imap_response r;
	const struct imap_value *attrs, *v, *name;
	size_t len;
	char *s = make_fetch(&len);
	uint64_t n;

	(void)state;
	parse_one(s, len, &r);
	assert_string_equal(r.keyword, "FETCH");
	assert_true(r.has_number);
	assert_int_equal(r.number, 5);
	assert_int_equal(r.args.count, 1);
	attrs = &r.args.items[0];
	assert_int_equal(attrs->type, IMAP_VALUE_LIST);
	assert_int_equal(attrs->count, 10);

	v = imap_fetch_get(attrs, "UID");
	assert_non_null(v);
	assert_int_equal(imap_value_number(v, &n), 0);
	assert_int_equal(n, 7);
	v = imap_fetch_get(attrs, "flags");
	assert_non_null(v);
	assert_format(v, "(\\Seen $Work)");
	v = imap_fetch_get(attrs, "RFC822.SIZE");
	assert_int_equal(imap_value_number(v, &n), 0);
	assert_int_equal(n, 1234);
	v = imap_fetch_get(attrs, "INTERNALDATE");
	assert_int_equal(v->type, IMAP_VALUE_STRING);
	assert_string_equal(v->str, "05-Jan-2024 10:22:00 +0000");

	v = imap_fetch_get(attrs, "BODY[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)]");
	assert_non_null(v);
	assert_int_equal(v->type, IMAP_VALUE_STRING);
	assert_int_equal(v->len, strlen(fetch_header));
	assert_memory_equal(v->str, fetch_header, v->len);
	/* the section is compared without regard to case */
	assert_ptr_equal(imap_fetch_get(attrs, "body[header.fields (date from subject message-id)]"), v);
	/* ... but in full */
	assert_null(imap_fetch_get(attrs, "BODY[HEADER.FIELDS (DATE FROM)]"));
	assert_null(imap_fetch_get(attrs, "BODY"));
	assert_null(imap_fetch_get(attrs, "MODSEQ"));
	/* values are never taken for names */
	assert_null(imap_fetch_get(attrs, "7"));

	assert_ptr_equal(imap_fetch_get_prefix(attrs, "BODY[", &name), v);
	assert_string_equal(name->str, "BODY[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)]");
	assert_null(imap_fetch_get_prefix(attrs, "BINARY[", &name));
	assert_null(name);

	assert_null(imap_fetch_get(&r.args, "FETCH"));
	assert_null(imap_fetch_get(NULL, "UID"));
	imap_response_free(&r);
	g_free(s);
}

static void test_fetch_partial(void **state)
{
	struct imap_response r;
	const struct imap_value *v, *name;

	(void)state;
	parse_str("* 1 FETCH (UID 9 BODY[]<0> {5}\r\nhello BODY[TEXT] NIL)\r\n", &r);
	v = imap_fetch_get(&r.args.items[0], "BODY[]<0>");
	assert_non_null(v);
	assert_string_equal(v->str, "hello");
	assert_null(imap_fetch_get(&r.args.items[0], "BODY[]"));
	v = imap_fetch_get_prefix(&r.args.items[0], "body[", &name);
	assert_string_equal(name->str, "BODY[]<0>");
	v = imap_fetch_get(&r.args.items[0], "BODY[TEXT]");
	assert_non_null(v);
	assert_int_equal(v->type, IMAP_VALUE_NIL);
	imap_response_free(&r);

	parse_str("* 2 FETCH (BODY[1.MIME]<1024> \"x\" BINARY.SIZE[1] 3)\r\n", &r);
	assert_non_null(imap_fetch_get(&r.args.items[0], "BODY[1.MIME]<1024>"));
	assert_non_null(imap_fetch_get(&r.args.items[0], "BINARY.SIZE[1]"));
	imap_response_free(&r);
}

static void test_literal_looks_like_reply(void **state)
{
	static const char body[] = "Subject: x\r\n\r\nA1 OK FETCH completed\r\n* BYE\r\n";
	struct imap_response r;
	char *s = g_strdup_printf("* 1 FETCH (UID 3 BODY[] {%zu}\r\n%s)\r\nA1 OK FETCH completed\r\n",
	                          strlen(body), body);
	size_t consumed, len = strlen(s), first_len = len - strlen("A1 OK FETCH completed\r\n");
	const struct imap_value *v;

	(void)state;
	assert_int_equal(imap_parse_response(s, len, &consumed, NULL, &r), IMAP_PARSE_OK);
	assert_int_equal(consumed, first_len);
	assert_string_equal(r.keyword, "FETCH");
	v = imap_fetch_get(&r.args.items[0], "BODY[]");
	assert_int_equal(v->len, strlen(body));
	assert_string_equal(v->str, body);
	imap_response_free(&r);

	assert_int_equal(imap_parse_response(s + consumed, len - consumed, &consumed, NULL, &r),
	                 IMAP_PARSE_OK);
	assert_string_equal(r.tag, "A1");
	imap_response_free(&r);
	g_free(s);
}

static void test_literal_forms(void **state)
{
	static const char nul_lit[] = "* 1 FETCH (BODY[] {4}\r\na\0\r\n)\r\n";
	struct imap_response r;
	const struct imap_value *v;

	(void)state;
	parse_str("* 1 FETCH (BODY[] {3+}\r\nabc)\r\n", &r);
	v = imap_fetch_get(&r.args.items[0], "BODY[]");
	assert_int_equal(v->type, IMAP_VALUE_STRING);
	assert_string_equal(v->str, "abc");
	imap_response_free(&r);

	parse_str("* 1 FETCH (BINARY[1] ~{3}\r\n\x01\x02\x03)\r\n", &r);
	v = imap_fetch_get(&r.args.items[0], "BINARY[1]");
	assert_int_equal(v->len, 3);
	assert_memory_equal(v->str, "\x01\x02\x03", 3);
	imap_response_free(&r);

	/* NUL, CR and LF inside a literal; formatted back as a literal */
	parse_one(nul_lit, sizeof nul_lit - 1, &r);
	v = imap_fetch_get(&r.args.items[0], "BODY[]");
	assert_int_equal(v->len, 4);
	assert_memory_equal(v->str, "a\0\r\n", 4);
	assert_int_equal(v->str[4], '\0');
	{
		GString *out = g_string_new(NULL);
		imap_value_format(out, v);
		assert_int_equal(out->len, 9);
		assert_memory_equal(out->str, "{4}\r\na\0\r\n", 9);
		g_string_free(out, TRUE);
	}
	imap_response_free(&r);

	/* empty literal; two literals in one response */
	parse_str("* 1 FETCH (BODY[1] {0}\r\n BODY[2] {2}\r\nxy)\r\n", &r);
	assert_format(&r.args.items[0], "(BODY[1] \"\" BODY[2] \"xy\")");
	imap_response_free(&r);

	/* a literal as the last thing of the data, a literal in a list */
	parse_str("* LIST () \"/\" {3}\r\nabc\r\n", &r);
	assert_string_equal(r.args.items[2].str, "abc");
	imap_response_free(&r);
}

/* Every prefix of s must be INCOMPLETE (with a sane need), and the whole
 * must parse to the same thing as in one piece. */
static void check_every_split(const char *s, size_t len)
{
	struct imap_response whole, r;
	GString *want = g_string_new(NULL), *got = g_string_new(NULL);
	size_t cut, consumed, need;

	parse_one(s, len, &whole);
	imap_value_format(want, &whole.args);
	for (cut = 0; cut < len; cut++) {
		/* a copy of exactly cut bytes, so ASan catches any over-read */
		char *prefix = g_memdup2(s, cut);
		need = 0;
		if (imap_parse_response(prefix, cut, &consumed, &need, &r) != IMAP_PARSE_INCOMPLETE)
			fail_msg("prefix of %zu bytes not INCOMPLETE", cut);
		assert_true(need > cut);
		assert_true(need <= len);
		assert_null(r.keyword);
		g_free(prefix);
	}
	parse_one(s, len, &r);
	imap_value_format(got, &r.args);
	assert_string_equal(got->str, want->str);
	assert_string_equal(r.keyword, whole.keyword);
	imap_response_free(&r);
	imap_response_free(&whole);
	g_string_free(want, TRUE);
	g_string_free(got, TRUE);
}

static void test_split_reads(void **state)
{
	size_t len;
	char *s = make_fetch(&len);
	static const char two[] = "* 2 FETCH (BODY[1] {3}\r\nabc BODY[2] {4+}\r\nd\r\nf FLAGS ())\r\n";
	static const char tagged[] = "A1 OK [READ-WRITE] SELECT done\r\n";

	(void)state;
	check_every_split(s, len);
	check_every_split(two, sizeof two - 1);
	check_every_split(tagged, sizeof tagged - 1);
	g_free(s);
}

static void test_need(void **state)
{
	struct imap_response r;
	size_t consumed, need;
	static const char s[] = "* 1 FETCH (BODY[] {100}\r\nabc";

	(void)state;
	/* the literal announces its size: its end plus a line end is needed */
	assert_int_equal(imap_parse_response(s, sizeof s - 1, &consumed, &need, &r),
	                 IMAP_PARSE_INCOMPLETE);
	assert_int_equal(need, sizeof s - 1 - 3 + 100 + 1);
	assert_int_equal(consumed, 0);
	/* no line end yet: one more byte */
	assert_int_equal(imap_parse_response("* 1 EXI", 7, &consumed, &need, &r),
	                 IMAP_PARSE_INCOMPLETE);
	assert_int_equal(need, 8);
	assert_int_equal(imap_parse_response("", 0, &consumed, &need, &r), IMAP_PARSE_INCOMPLETE);
	assert_int_equal(need, 1);
	assert_int_equal(imap_parse_response(NULL, 0, NULL, NULL, &r), IMAP_PARSE_INCOMPLETE);
	/* a huge announced literal is fine while it is not there */
	assert_int_equal(imap_parse_response("* 1 FETCH (BODY[] {1073741824}\r\n", 32,
	                                     &consumed, &need, &r), IMAP_PARSE_INCOMPLETE);
	assert_int_equal(need, (size_t)32 + 1073741824 + 1);
}

static void test_nil(void **state)
{
	struct imap_response r;

	(void)state;
	parse_str("* X NIL nil \"NIL\" NILS (NIL) {3}\r\nNIL\r\n", &r);
	assert_int_equal(r.args.count, 6);
	assert_int_equal(r.args.items[0].type, IMAP_VALUE_NIL);
	assert_int_equal(r.args.items[1].type, IMAP_VALUE_NIL);
	assert_int_equal(r.args.items[2].type, IMAP_VALUE_STRING);
	assert_string_equal(r.args.items[2].str, "NIL");
	assert_int_equal(r.args.items[3].type, IMAP_VALUE_ATOM);
	assert_string_equal(r.args.items[3].str, "NILS");
	assert_int_equal(r.args.items[4].items[0].type, IMAP_VALUE_NIL);
	assert_int_equal(r.args.items[5].type, IMAP_VALUE_STRING);
	assert_format(&r.args, "(NIL NIL \"NIL\" NILS (NIL) \"NIL\")");
	imap_response_free(&r);
}

static void test_nested_lists(void **state)
{
	struct imap_response r;
	GString *s = g_string_new("* X ");
	int i;

	(void)state;
	parse_str("* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 12 1)"
	          "(\"TEXT\" \"HTML\" NIL NIL NIL \"8BIT\" 40 2) \"ALTERNATIVE\"))\r\n", &r);
	{
		const struct imap_value *bs = imap_fetch_get(&r.args.items[0], "BODYSTRUCTURE");
		assert_int_equal(bs->count, 3);
		assert_int_equal(bs->items[0].items[2].type, IMAP_VALUE_LIST);
		assert_string_equal(bs->items[0].items[2].items[1].str, "utf-8");
		assert_string_equal(bs->items[2].str, "ALTERNATIVE");
	}
	imap_response_free(&r);

	/* 64 levels are fine, 65 are not */
	for (i = 0; i < 64; i++)
		g_string_append_c(s, '(');
	for (i = 0; i < 64; i++)
		g_string_append_c(s, ')');
	g_string_append(s, "\r\n");
	parse_str(s->str, &r);
	imap_response_free(&r);
	g_string_assign(s, "* X ");
	for (i = 0; i < 65; i++)
		g_string_append_c(s, '(');
	for (i = 0; i < 65; i++)
		g_string_append_c(s, ')');
	g_string_append(s, "\r\n");
	assert_parse_error(s->str, s->len, s->len);
	g_string_free(s, TRUE);
}

static void test_truncated(void **state)
{
	static const char *const partial[] = {
		"* 1 FETCH (UID 1",
		"* 1 FETCH (UID 1)\r",
		"* 1 FETCH (BODY[] {10}\r\nabc",
		"* 1 FETCH (BODY[] {10}\r\n0123456789",
		"* 1 FETCH (BODY[] {10}\r\n0123456789)",
		"* 1 FETCH (BODY[] {10}",
		"A1 OK [READ-ONLY",
		"+",
		"*",
	};
	struct imap_response r;
	size_t i, consumed, need;

	(void)state;
	for (i = 0; i < G_N_ELEMENTS(partial); i++) {
		memset(&r, 0x5a, sizeof r);
		if (imap_parse_response(partial[i], strlen(partial[i]), &consumed, &need, &r) !=
		    IMAP_PARSE_INCOMPLETE)
			fail_msg("\"%s\" not INCOMPLETE", partial[i]);
		assert_int_equal(consumed, 0);
		assert_true(need > strlen(partial[i]));
		/* zeroed, so freeing it is harmless */
		assert_null(r.keyword);
		assert_null(r.args.items);
		imap_response_free(&r);
	}
}

static void test_garbage(void **state)
{
	static const char *const bad[] = {
		"hello\r\n",                       /* tag without status */
		"A1 FOO bar\r\n",                  /* tagged, not OK/NO/BAD */
		"A1 BYE\r\n",
		"\r\n",
		"\n",
		") x\r\n",
		"(A1 OK\r\n",
		"* \r\n",
		"*\r\n",
		"*X\r\n",
		"* 1 FETCH (UID 1))\r\n",          /* unbalanced ')' */
		"* 1 FETCH (UID 1\r\n",            /* unbalanced '(' */
		"* 1 FETCH (BODY[] {12a}\r\nabc\r\n", /* literal size with a non-digit */
		"* 1 FETCH (BODY[] {}\r\n",
		"* 1 FETCH (BODY[] {3} x\r\n",     /* literal not at the end of its line */
		"* 1 FETCH (BODY[] {2000000000}\r\n", /* over 1 GiB */
		"* X \"unterminated\r\n",
		"* X \"a\\\r\n",
		"* X a\rb\r\n",
		"* 12 34 FOO\r\n",
		"* (X)\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < G_N_ELEMENTS(bad); i++) {
		const char *lf = strchr(bad[i], '\n');
		assert_parse_error(bad[i], strlen(bad[i]), (size_t)(lf - bad[i]) + 1);
	}
	/* NUL outside a literal */
	assert_parse_error("* X a\0b\r\n", 9, 9);
	/* consumed ends the offending line, so the next response is intact */
	{
		static const char s[] = "garbage here\r\n* 3 EXISTS\r\n";
		struct imap_response r;
		size_t consumed;
		assert_int_equal(imap_parse_response(s, sizeof s - 1, &consumed, NULL, &r),
		                 IMAP_PARSE_ERROR);
		assert_int_equal(consumed, 14);
		parse_str(s + consumed, &r);
		assert_int_equal(r.number, 3);
		imap_response_free(&r);
	}
	/* the error is on the line after a literal: that line's end */
	{
		static const char s[] = "* 1 FETCH (BODY[] {2}\r\nab ))\r\n* 2 EXISTS\r\n";
		assert_parse_error(s, sizeof s - 1, sizeof s - 1 - strlen("* 2 EXISTS\r\n"));
	}
}

static void test_long_line(void **state)
{
	size_t n = 1024 * 1024 + 100, consumed, need;
	char *s = g_malloc(n);
	struct imap_response r;

	(void)state;
	memset(s, 'a', n);
	memcpy(s, "* X ", 4);
	/* no line end within the limit: ERROR, all of it consumed */
	assert_int_equal(imap_parse_response(s, n, &consumed, &need, &r), IMAP_PARSE_ERROR);
	assert_int_equal(consumed, n);
	/* with a line end past the limit: up to it */
	s[n - 2] = '\r';
	s[n - 1] = '\n';
	assert_parse_error(s, n, n);
	/* just under the limit is fine, and so is the same data as a literal */
	s[1024 * 1024] = '\r';
	s[1024 * 1024 + 1] = '\n';
	assert_int_equal(imap_parse_response(s, n, &consumed, &need, &r), IMAP_PARSE_OK);
	assert_int_equal(consumed, 1024 * 1024 + 2);
	assert_int_equal(r.args.items[0].len, 1024 * 1024 - 4);
	imap_response_free(&r);
	g_free(s);
}

static void test_several_responses(void **state)
{
	static const char s[] =
		"* 1 EXISTS\r\n"
		"* 1 FETCH (UID 5 BODY[] {3}\r\n)\r\n)\r\n"
		"+ go\n"                      /* bare LF accepted */
		"* OK [UNSEEN 1] x\r\n"
		"A9 OK done\r\n"
		"* 2 EXI";
	static const char *const keywords[] = { "EXISTS", "FETCH", NULL, "OK", "OK" };
	struct imap_response r;
	size_t off = 0, consumed, need, i;

	(void)state;
	for (i = 0; i < G_N_ELEMENTS(keywords); i++) {
		assert_int_equal(imap_parse_response(s + off, sizeof s - 1 - off, &consumed, &need, &r),
		                 IMAP_PARSE_OK);
		if (keywords[i])
			assert_string_equal(r.keyword, keywords[i]);
		else
			assert_null(r.keyword);
		if (i == 1)
			assert_string_equal(imap_fetch_get(&r.args.items[0], "BODY[]")->str, ")\r\n");
		if (i == 2)
			assert_string_equal(r.text, "go");
		imap_response_free(&r);
		off += consumed;
	}
	assert_int_equal(off, sizeof s - 1 - 7);
	assert_int_equal(imap_parse_response(s + off, sizeof s - 1 - off, &consumed, &need, &r),
	                 IMAP_PARSE_INCOMPLETE);
}

static void test_value_helpers(void **state)
{
	struct imap_response r;
	uint64_t n = 42;

	(void)state;
	parse_str("* X 18446744073709551615 18446744073709551616 12a \"77\" () NIL 007\r\n", &r);
	assert_int_equal(imap_value_number(&r.args.items[0], &n), 0);
	assert_true(n == UINT64_MAX);
	assert_int_equal(imap_value_number(&r.args.items[1], &n), -1);
	assert_int_equal(imap_value_number(&r.args.items[2], &n), -1);
	assert_int_equal(imap_value_number(&r.args.items[3], &n), 0);
	assert_int_equal(n, 77);
	assert_int_equal(imap_value_number(&r.args.items[4], &n), -1);
	assert_int_equal(imap_value_number(&r.args.items[5], &n), -1);
	assert_int_equal(imap_value_number(&r.args.items[6], &n), 0);
	assert_int_equal(n, 7);
	assert_int_equal(imap_value_number(NULL, &n), -1);
	assert_false(imap_value_is_atom(&r.args.items[3], "77")); /* a string, not an atom */
	assert_false(imap_value_is_atom(&r.args.items[5], "NIL"));
	assert_false(imap_value_is_atom(NULL, "x"));
	imap_response_free(&r);

	/* imap_response_free on a zeroed struct, twice */
	memset(&r, 0, sizeof r);
	imap_response_free(&r);
	imap_response_free(&r);
	imap_value_clear(NULL);
}

static void test_quote(void **state)
{
	GString *out = g_string_new("x ");

	(void)state;
	assert_int_equal(imap_quote(out, "INBOX"), 0);
	assert_string_equal(out->str, "x \"INBOX\"");
	g_string_assign(out, "");
	assert_int_equal(imap_quote(out, "a\"b\\c"), 0);
	assert_string_equal(out->str, "\"a\\\"b\\\\c\"");
	g_string_assign(out, "");
	assert_int_equal(imap_quote(out, ""), 0);
	assert_string_equal(out->str, "\"\"");

	g_string_assign(out, "keep");
	assert_int_equal(imap_quote(out, "a\r\nA2 DELETE INBOX"), -1);
	assert_int_equal(imap_quote(out, "a\nb"), -1);
	assert_int_equal(imap_quote(out, "a\rb"), -1);
	assert_int_equal(imap_quote(out, "Entw\xc3\xbcrfe"), -1);
	assert_string_equal(out->str, "keep");
	g_string_free(out, TRUE);
}

static void test_format(void **state)
{
	struct imap_response r;

	(void)state;
	parse_str("* X (a \"b c\" NIL (\\Seen) {2}\r\n\r\n \"q\\\"\\\\\" BODY[]<0>)\r\n", &r);
	assert_format(&r.args, "((a \"b c\" NIL (\\Seen) {2}\r\n\r\n \"q\\\"\\\\\" BODY[]<0>))");
	imap_response_free(&r);
}

static void assert_uid_set(const char *s, const uint32_t *want, size_t want_count)
{
	uint32_t *uids = NULL;
	size_t count = 99;

	if (imap_parse_uid_set(s, &uids, &count, 1000) != 0)
		fail_msg("\"%s\" refused", s);
	assert_int_equal(count, want_count);
	assert_memory_equal(uids, want, want_count * sizeof *want);
	g_free(uids);
}

static void test_uid_set(void **state)
{
	static const uint32_t a[] = { 1, 2, 3, 7, 8, 9 };
	static const uint32_t b[] = { 304, 319, 320 };
	static const uint32_t c[] = { 5 };
	static const uint32_t d[] = { 1, 2, 3, 4, 5, 6 };
	static const uint32_t e[] = { 4294967294u, 4294967295u };
	static const char *const bad[] = {
		"", "*", "1:*", "0", "1,", ",1", "1::2", "1:", "a", "1 2", "1,,2",
		"4294967296", "-1", "1:2:3", " 1",
	};
	uint32_t *uids;
	size_t count, i;

	(void)state;
	assert_uid_set("1:3,7,9:8", a, 6);
	assert_uid_set("304,319:320", b, 3);
	assert_uid_set("5", c, 1);
	assert_uid_set("5,5,5:5", c, 1);
	assert_uid_set("6,1:3,2:5,4", d, 6);
	assert_uid_set("4294967295:4294967294", e, 2);

	for (i = 0; i < G_N_ELEMENTS(bad); i++) {
		uids = (uint32_t *)&count;
		if (imap_parse_uid_set(bad[i], &uids, &count, 1000) != -1)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_null(uids);
	}
	/* max_count counts distinct values; a huge range fails without
	 * trying to build it */
	assert_int_equal(imap_parse_uid_set("1:6", &uids, &count, 6), 0);
	g_free(uids);
	assert_int_equal(imap_parse_uid_set("1:7", &uids, &count, 6), -1);
	assert_int_equal(imap_parse_uid_set("1:6,2,3", &uids, &count, 6), 0);
	g_free(uids);
	assert_int_equal(imap_parse_uid_set("1:4294967295", &uids, &count, 1000000), -1);
}

/* INTERNALDATE by another road: the fields as sscanf finds them (the
 * engine's first reader), the zone as a GTimeZone, the rest GDateTime's. */
static int64_t internaldate_reference(const char *s)
{
	static const char *names[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	int f[6], zone, month = 0;
	char mon[4], sign;

	if (sscanf(s, " %d-%3s-%d %d:%d:%d %c%4d", &f[0], mon, &f[1], &f[2], &f[3], &f[4],
	           &sign, &zone) != 8 || (sign != '+' && sign != '-'))
		return -1;
	for (int i = 0; i < 12; i++)
		if (strcmp(mon, names[i]) == 0)
			month = i + 1;
	if (!month)
		return -1;
	GTimeZone *tz = g_time_zone_new_offset((sign == '-' ? -1 : 1) *
	                                       ((zone / 100) * 3600 + (zone % 100) * 60));
	GDateTime *dt = g_date_time_new(tz, f[1], month, f[0], f[2], f[3], f[4]);
	int64_t t = dt ? g_date_time_to_unix(dt) : -1;

	if (dt)
		g_date_time_unref(dt);
	g_time_zone_unref(tz);
	return t;
}

static void test_internaldate(void **state)
{
	static const char *mons[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
	                              "Sep", "Oct", "Nov", "Dec", "Foo", "jan", "Ja" };
	GRand *r = g_rand_new_with_seed(7);
	char buf[80];
	(void)state;

	assert_int_equal(imap_parse_internaldate("17-Jul-1996 02:44:25 -0700"), 837596665);
	assert_int_equal(imap_parse_internaldate(" 1-Jan-1970 00:00:00 +0000"), 0);
	assert_int_equal(imap_parse_internaldate("01-Jan-1970 01:00:00 +0100"), 0);
	assert_int_equal(imap_parse_internaldate("29-Feb-2023 00:00:00 +0000"), -1);
	assert_int_equal(imap_parse_internaldate("01-Jan-1970 00:00:00 -9959"), 99 * 3600 + 59 * 60);
	assert_int_equal(imap_parse_internaldate("garbage"), -1);
	assert_int_equal(imap_parse_internaldate(""), -1);
	for (int i = 0; i < 40000; i++) {
		int day = g_rand_int_range(r, 0, 33), year = g_rand_int_range(r, 0, 10001);
		int hh = g_rand_int_range(r, 0, 25), mm = g_rand_int_range(r, 0, 61);
		int ss = g_rand_int_range(r, 0, 61);
		int zone = g_rand_int_range(r, 0, 24) * 100 + g_rand_int_range(r, 0, 60);
		const char *mon = mons[g_rand_int_range(r, 0, G_N_ELEMENTS(mons))];
		if (g_rand_int_range(r, 0, 4))
			year = g_rand_int_range(r, 1960, 2100);
		snprintf(buf, sizeof buf, g_rand_boolean(r) ? "%02d-%s-%04d %02d:%02d:%02d %c%04d"
		                                            : "%2d-%s-%04d %02d:%02d:%02d %c%04d",
		         day, mon, year, hh, mm, ss, g_rand_boolean(r) ? '+' : '-', zone);
		if (g_rand_int_range(r, 0, 8) == 0) {  /* and broken ones */
			size_t len = strlen(buf), at = (size_t)g_rand_int_range(r, 0, (gint32)len);
			switch (g_rand_int_range(r, 0, 3)) {
			case 0: buf[at] = "0 -:+x\t"[g_rand_int_range(r, 0, 7)]; break;
			case 1: buf[at] = '\0'; break;
			default: memmove(buf + at + 1, buf + at, len - at + 1); buf[at] = ' '; break;
			}
		}
		int64_t want = internaldate_reference(buf), got = imap_parse_internaldate(buf);
		if (want != got)
			fail_msg("\"%s\": %" G_GINT64_FORMAT ", the reference %" G_GINT64_FORMAT, buf, got, want);
	}
	g_rand_free(r);
}

/* Frames buf fed one byte at a time (literals kept); the event that
 * ended it, with the frame. */
static enum imap_frame_event frame_bytewise(const char *buf, size_t len, struct imap_frame *f)
{
	enum imap_frame_event ev = IMAP_FRAME_MORE;

	imap_frame_init(f);
	for (size_t n = 1; n <= len; n++) {
		while ((ev = imap_frame_scan(f, buf, n)) == IMAP_FRAME_LITERAL)
			;
		if (ev != IMAP_FRAME_MORE)
			return ev;
	}
	return ev;
}

static void test_frame(void **state)
{
	static const char fetch[] = "* 1 FETCH (UID 7 BODY[] {11}\r\nA1 OK x\r\n\r\n)\r\nM2 OK done\r\n";
	static const char status[] = "* OK [ALERT] text ending in {5}\r\nM2 OK done\r\n";
	struct imap_frame f;

	(void)state;
	/* The literal's bytes (a tagged line among them) are inside the frame. */
	assert_int_equal(frame_bytewise(fetch, sizeof fetch - 1, &f), IMAP_FRAME_COMPLETE);
	assert_int_equal(f.scanned, strstr(fetch, "M2") - fetch);
	assert_int_equal(f.literals, 1);
	/* A status response's text holds no literal. */
	assert_int_equal(frame_bytewise(status, sizeof status - 1, &f), IMAP_FRAME_COMPLETE);
	assert_int_equal(f.scanned, strstr(status, "M2") - status);
	/* Incomplete, not an error, while the literal is still due. */
	assert_int_equal(frame_bytewise(fetch, 30, &f), IMAP_FRAME_MORE);
}

static void test_frame_bounds(void **state)
{
	GString *s = g_string_new("* 1 FETCH (X (");
	struct imap_frame f;

	(void)state;
	for (int i = 0; i <= IMAP_FRAME_MAX_LITERALS; i++)
		g_string_append(s, "{1}\r\na ");
	g_string_append(s, "))\r\n");
	imap_frame_init(&f);
	enum imap_frame_event ev;
	while ((ev = imap_frame_scan(&f, s->str, s->len)) == IMAP_FRAME_LITERAL)
		;
	assert_int_equal(ev, IMAP_FRAME_TOO_BIG);  /* too many literals */

	imap_frame_init(&f);
	assert_int_equal(imap_frame_scan(&f, "* 1 FETCH (BODY[] {2147483648}\r\n", 33),
	                 IMAP_FRAME_TOO_BIG);  /* a literal over 1 GiB */

	g_string_assign(s, "* 1 FETCH (X \"");
	while (s->len < 1024 * 1024 + 16)
		g_string_append(s, "xxxxxxxxxxxxxxxx");
	imap_frame_init(&f);
	assert_int_equal(imap_frame_scan(&f, s->str, s->len), IMAP_FRAME_TOO_BIG);  /* no CRLF */
	g_string_free(s, TRUE);
}

/* A literal taken out of the buffer: the announcement reads as empty. */
static void test_frame_taken_literal(void **state)
{
	char buf[] = "* 1 FETCH (UID 7 BODY[] {5}\r\nhello UID 7)\r\n";
	size_t len = sizeof buf - 1;
	struct imap_frame f;
	struct imap_response r;
	size_t consumed;

	(void)state;
	imap_frame_init(&f);
	assert_int_equal(imap_frame_scan(&f, buf, len), IMAP_FRAME_LITERAL);
	assert_int_equal(f.announced, 5);
	imap_frame_empty_announcement(&f, buf);
	imap_frame_skip_literal(&f);
	memmove(buf + f.scanned, buf + f.scanned + 5, len - f.scanned - 5);
	len -= 5;
	assert_int_equal(imap_frame_scan(&f, buf, len), IMAP_FRAME_COMPLETE);
	assert_int_equal(f.scanned, len);
	assert_int_equal(imap_parse_response(buf, len, &consumed, NULL, &r), IMAP_PARSE_OK);
	assert_int_equal(consumed, len);
	const struct imap_value *body = imap_fetch_get(&r.args.items[0], "BODY[]");
	assert_non_null(body);
	assert_int_equal(body->type, IMAP_VALUE_STRING);
	assert_int_equal(body->len, 0);
	imap_response_free(&r);
}

/* QRESYNC's VANISHED: the set, whether (EARLIER), and its ranges clipped
 * to what the cache holds, never expanded. */
static void test_vanished(void **state)
{
	struct imap_response r = { 0 };
	GArray *ranges = g_array_new(FALSE, FALSE, sizeof(struct mailbox_uid_range));
	struct mailbox_uid_range *g;
	int earlier = -1;

	(void)state;
	parse_str("* VANISHED (EARLIER) 1:3,9:7,41\r\n", &r);
	assert_string_equal(imap_vanished_set(&r, &earlier), "1:3,9:7,41");
	assert_int_equal(earlier, 1);
	assert_int_equal(imap_uid_ranges("1:3,9:7,41", 8, ranges), 7);
	assert_int_equal(ranges->len, 2);  /* 41 is above what is held */
	g = &g_array_index(ranges, struct mailbox_uid_range, 0);
	assert_int_equal(g[0].first, 1);
	assert_int_equal(g[0].last, 3);
	assert_int_equal(g[1].first, 7);
	assert_int_equal(g[1].last, 8);  /* clipped */
	imap_response_free(&r);

	parse_str("* VANISHED 5\r\n", &r);
	assert_string_equal(imap_vanished_set(&r, &earlier), "5");
	assert_int_equal(earlier, 0);
	imap_response_free(&r);
	parse_str("* 5 EXPUNGE\r\n", &r);
	assert_null(imap_vanished_set(&r, &earlier));
	imap_response_free(&r);
	parse_str("* VANISHED (EARLIER)\r\n", &r);
	assert_null(imap_vanished_set(&r, &earlier));
	imap_response_free(&r);

	/* The whole UID space costs nothing; nonsense is refused. */
	g_array_set_size(ranges, 0);
	assert_int_equal(imap_uid_ranges("1:4294967295", 0, ranges), 4294967295LL);
	assert_int_equal(ranges->len, 0);
	assert_int_equal(imap_uid_ranges("1:4294967295,1:4294967295", 0, NULL), 2 * 4294967295LL);
	assert_int_equal(imap_uid_ranges("", 10, NULL), -1);
	assert_int_equal(imap_uid_ranges("0", 10, NULL), -1);
	assert_int_equal(imap_uid_ranges("1:", 10, NULL), -1);
	assert_int_equal(imap_uid_ranges("1,,2", 10, NULL), -1);
	assert_int_equal(imap_uid_ranges("4294967296", 10, NULL), -1);
	assert_int_equal(imap_uid_ranges("3:*", 10, NULL), -1);
	assert_int_equal(imap_uid_ranges("1 2", 10, NULL), -1);
	g_array_free(ranges, TRUE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tagged),
		cmocka_unit_test(test_untagged_numbers),
		cmocka_unit_test(test_untagged_status),
		cmocka_unit_test(test_codes_odd),
		cmocka_unit_test(test_continuation),
		cmocka_unit_test(test_data_responses),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_fetch),
		cmocka_unit_test(test_fetch_partial),
		cmocka_unit_test(test_literal_looks_like_reply),
		cmocka_unit_test(test_literal_forms),
		cmocka_unit_test(test_split_reads),
		cmocka_unit_test(test_need),
		cmocka_unit_test(test_nil),
		cmocka_unit_test(test_nested_lists),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_several_responses),
		cmocka_unit_test(test_value_helpers),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_uid_set),
		cmocka_unit_test(test_vanished),
		cmocka_unit_test(test_internaldate),
		cmocka_unit_test(test_frame),
		cmocka_unit_test(test_frame_bounds),
		cmocka_unit_test(test_frame_taken_literal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

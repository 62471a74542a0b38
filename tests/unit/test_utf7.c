/* test_utf7.c — unit tests for modified UTF-7 folder name conversion. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <glib.h>
#include "utf7.h"

struct utf7_vector {
	const char *mutf7;
	const char *utf8;
};

static const struct utf7_vector vectors[] = {
	{ "", "" },
	{ "INBOX", "INBOX" },
	{ "&Jjo-!", "\xe2\x98\xba!" },
	{ "Entw&APw-rfe", "Entw\xc3\xbcrfe" },
	{ "&ZeVnLIqe-", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	{ "&-", "&" },
	{ "&-&-", "&&" },
	{ "a&-b", "a&b" },
	{ "~peter/mail/&U,BTFw-/&ZeVnLIqe-",
	  "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	/* U+1F600 as the surrogate pair D83D DE00 */
	{ "&2D3eAA-", "\xf0\x9f\x98\x80" },
	{ "x&2D3eAA-y", "x\xf0\x9f\x98\x80y" },
	/* control characters are shifted too */
	{ "a&AAk-b", "a\tb" },
	{ "&AH8-", "\x7f" },
	{ "Gel&APY-schte Elemente", "Gel\xc3\xb6schte Elemente" },
};

static void test_utf7_decode_vectors(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < G_N_ELEMENTS(vectors); i++) {
		char *s = imap_utf7_decode(vectors[i].mutf7);
		assert_non_null(s);
		assert_string_equal(s, vectors[i].utf8);
		g_free(s);
	}
}

static void test_utf7_encode_vectors(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < G_N_ELEMENTS(vectors); i++) {
		char *s = imap_utf7_encode(vectors[i].utf8);
		assert_non_null(s);
		assert_string_equal(s, vectors[i].mutf7);
		g_free(s);
	}
}

static void test_utf7_round_trip(void **state)
{
	static const char *const names[] = {
		"Sent & Received", "\xd0\x9f\xd0\xb8\xd1\x81\xd1\x8c\xd0\xbc\xd0\xb0",
		"a\xc3\xa9&\xc3\xa9\x62", "\xf0\x9f\x98\x80\xf0\x9f\x98\x81 x \xef\xbf\xbd",
		"tab\there", "-&-", "\xc3\xa4\xc3\xb6\xc3\xbc\xc3\x9f",
	};
	size_t i;

	(void)state;
	for (i = 0; i < G_N_ELEMENTS(names); i++) {
		char *enc = imap_utf7_encode(names[i]);
		char *dec;
		assert_non_null(enc);
		dec = imap_utf7_decode(enc);
		assert_non_null(dec);
		assert_string_equal(dec, names[i]);
		g_free(enc);
		g_free(dec);
	}
}

static void test_utf7_decode_rejects(void **state)
{
	static const char *const bad[] = {
		"&Jjo",        /* unterminated */
		"&",           /* unterminated */
		"&AGE-",       /* encodes ASCII 'a' */
		"&ACY-",       /* encodes '&' */
		"&AAA-",       /* encodes NUL */
		"Entw\xc3\xbcrfe", /* 8-bit byte */
		"a\tb",        /* raw control character */
		"&Jj!o-",      /* bad base64 character */
		"&Jjo=-",      /* '=' padding is not modified base64 */
		"&Jjo/-",      /* '/' is ',' in modified base64 */
		"&2D0-",       /* lone high surrogate */
		"&3gA-",       /* lone low surrogate */
		"&2D3YPQ-",    /* high surrogate followed by a high one */
		"&Jjp-",       /* non-zero padding bits */
		"&JjoA-",      /* a whole spare character */
	};
	size_t i;

	(void)state;
	for (i = 0; i < G_N_ELEMENTS(bad); i++) {
		char *s = imap_utf7_decode(bad[i]);
		if (s)
			fail_msg("accepted \"%s\" as \"%s\"", bad[i], s);
	}
	assert_null(imap_utf7_decode(NULL));
}

static void test_utf7_encode_rejects(void **state)
{
	(void)state;
	assert_null(imap_utf7_encode("\xff"));
	assert_null(imap_utf7_encode("ab\xc3"));
	assert_null(imap_utf7_encode("\xed\xa0\xbd")); /* a surrogate in UTF-8 */
	assert_null(imap_utf7_encode(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf7_decode_vectors),
		cmocka_unit_test(test_utf7_encode_vectors),
		cmocka_unit_test(test_utf7_round_trip),
		cmocka_unit_test(test_utf7_decode_rejects),
		cmocka_unit_test(test_utf7_encode_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

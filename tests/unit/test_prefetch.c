/* test_prefetch.c — unit tests for mailfs prefetch's pure parts: the
 * numbers read from the mount's JSON xattrs, and the progress bar. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include "prefetch.h"

static void test_json_u64(void **state)
{
	const char *stats = "{\"bodies_fetched\": 150, \"cache_hits\": 139, "
	                    "\"cache_size\": 1073741824, \"cache_used\": 2101722}";
	uint64_t v = 7;

	(void)state;
	assert_int_equal(prefetch_json_u64(stats, "cache_size", &v), 0);
	assert_true(v == UINT64_C(1073741824));
	assert_int_equal(prefetch_json_u64(stats, "cache_used", &v), 0);
	assert_true(v == 2101722);
	/* A key that is the end of another key is not that key. */
	assert_int_equal(prefetch_json_u64(stats, "hits", &v), -1);
	assert_int_equal(prefetch_json_u64(stats, "missing", &v), -1);
	assert_int_equal(prefetch_json_u64("{\"a\": -1}", "a", &v), -1);
	assert_int_equal(prefetch_json_u64("{\"a\": \"1\"}", "a", &v), -1);
	assert_int_equal(prefetch_json_u64("{\"a\": 99999999999999999999}", "a", &v), -1);
	assert_int_equal(prefetch_json_u64("{\"a\":18446744073709551615}", "a", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(prefetch_json_u64(NULL, "a", &v), -1);
}

static void test_format_bytes(void **state)
{
	char buf[64];

	(void)state;
	prefetch_format_bytes(buf, sizeof buf, 0, 0);
	assert_string_equal(buf, "0 B");
	prefetch_format_bytes(buf, sizeof buf, 1023, 0);
	assert_string_equal(buf, "1023 B");
	prefetch_format_bytes(buf, sizeof buf, 1024, 0);
	assert_string_equal(buf, "1.0 KiB");
	prefetch_format_bytes(buf, sizeof buf, 64172851, 533725184);
	assert_string_equal(buf, "61.2/509.0 MiB");
	prefetch_format_bytes(buf, sizeof buf, 0, 3 * 1024 * 1024);
	assert_string_equal(buf, "0.0/3.0 MiB");
	prefetch_format_bytes(buf, sizeof buf, 500, 900);
	assert_string_equal(buf, "500/900 B");
	prefetch_format_bytes(buf, sizeof buf, UINT64_C(5) << 40, 0);
	assert_string_equal(buf, "5.0 TiB");
	prefetch_format_bytes(buf, sizeof buf, UINT64_C(5) << 50, 0);
	assert_string_equal(buf, "5120.0 TiB");
}

static void test_format_eta(void **state)
{
	char buf[32];

	(void)state;
	prefetch_format_eta(buf, sizeof buf, 0);
	assert_string_equal(buf, "0:00");
	prefetch_format_eta(buf, sizeof buf, 36.4);
	assert_string_equal(buf, "0:36");
	prefetch_format_eta(buf, sizeof buf, 3599.4);
	assert_string_equal(buf, "59:59");
	prefetch_format_eta(buf, sizeof buf, 3725);
	assert_string_equal(buf, "1:02:05");
	prefetch_format_eta(buf, sizeof buf, -3);
	assert_string_equal(buf, "0:00");
}

static void test_format_bar(void **state)
{
	char buf[256];

	(void)state;
	/* 61.2 MiB in 5 s: 12.2 MiB/s; 447.8 MiB left: 37 s. */
	prefetch_format_bar(buf, sizeof buf, 0, "INBOX", 1234, 10000, 64172851, 533725184, 5.0);
	assert_string_equal(buf, "INBOX: 1234/10000 msgs  61.2/509.0 MiB  12.2 MiB/s  0:37 left");
	/* No rate before there is one. */
	prefetch_format_bar(buf, sizeof buf, 0, "INBOX", 0, 40, 0, 1000, 0.0);
	assert_string_equal(buf, "INBOX: 0/40 msgs  0/1000 B  -- B/s  -:-- left");
	/* A narrow terminal: the label gives way from its start... */
	prefetch_format_bar(buf, sizeof buf, 60, "Lists/debian/2024/very-long-folder-name", 1, 2,
	                    500, 1000, 1.0);
	assert_true(strlen(buf) <= 60);
	assert_string_equal(buf, "...ong-folder-name: 1/2 msgs  500/1000 B  500 B/s  0:01 left");
	/* ...then goes, and what is left is cut to the width. */
	prefetch_format_bar(buf, sizeof buf, 44, "INBOX/sub", 1, 2, 500, 1000, 1.0);
	assert_string_equal(buf, "1/2 msgs  500/1000 B  500 B/s  0:01 left");
	prefetch_format_bar(buf, sizeof buf, 20, "INBOX", 1, 2, 500, 1000, 1.0);
	assert_string_equal(buf, "1/2 msgs  500/1000 B");
	/* Never inside a UTF-8 character. */
	prefetch_format_bar(buf, sizeof buf, 50, "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc", 1, 2,
	                    500, 1000, 1.0);
	assert_string_equal(buf, "...\xc3\xbc\xc3\xbc: 1/2 msgs  500/1000 B  500 B/s  0:01 left");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_u64),
		cmocka_unit_test(test_format_bytes),
		cmocka_unit_test(test_format_eta),
		cmocka_unit_test(test_format_bar),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

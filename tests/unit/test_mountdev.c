/* test_mountdev.c — unit tests for finding a mount's device in the text
 * of /proc/self/mountinfo. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <glib.h>
#include "mountdev.h"

static const char *info =
	"22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
	"36 22 0:45 / /tmp/m rw,nosuid,nodev,relatime shared:20 - fuse.mailfs a@h rw,user_id=0\n"
	"37 22 0:46 / /tmp/mail\\040box rw shared:21 - fuse.mailfs a@h rw\n"
	"38 22 0:47 / /tmp/back\\134slash rw - fuse.mailfs a@h rw\n"
	"40 36 0:52 / /tmp/m rw shared:22 - fuse.mailfs b@h rw\n"
	"41 22 0:53 / /tmp/mm rw - fuse.mailfs c@h rw";   /* no newline at the end */

static void check(const char *mountpoint, const char *want)
{
	char *got = mountdev_of(info, mountpoint);
	if (want)
		assert_string_equal(got, want);
	else
		assert_null(got);
	g_free(got);
}

static void test_the_mount_on_a_path(void **state)
{
	(void)state;
	check("/", "254:1");
	check("/tmp/mm", "0:53");
	check("/tmp/nothing", NULL);
	check("/tmp", NULL);
}

static void test_the_newest_mount_on_a_path_wins(void **state)
{
	(void)state;
	check("/tmp/m", "0:52");
}

static void test_escaped_names(void **state)
{
	(void)state;
	check("/tmp/mail box", "0:46");
	check("/tmp/mail\\040box", NULL);
	check("/tmp/back\\slash", "0:47");
}

static void test_damaged_text(void **state)
{
	(void)state;
	char *got = mountdev_of("", "/");
	assert_null(got);
	got = mountdev_of("1 2 3\n\n   \n36 22 0:45 /", "/");
	assert_null(got);
	got = mountdev_of("36 22 nodev / /x rw\n36 22 0:9 / /x\\04 rw\n", "/x\\04");
	assert_string_equal(got, "0:9");   /* a short escape stays as it is */
	g_free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_mount_on_a_path),
		cmocka_unit_test(test_the_newest_mount_on_a_path_wins),
		cmocka_unit_test(test_escaped_names),
		cmocka_unit_test(test_damaged_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

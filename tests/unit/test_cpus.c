/* test_cpus.c — unit tests for cpus.c: the "processor" field of a
 * /proc/PID/stat text, and threads held to a CPU or let go. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <sched.h>
#include <string.h>
#include <cmocka.h>
#include <glib.h>
#include "cpus.h"

/* A stat text as Linux writes it (52 fields), named name, whose field
 * 39 is processor. */
static char *stat_text(const char *name, const char *processor)
{
	GString *s = g_string_new("4242 (");

	g_string_append_printf(s, "%s) S", name);
	for (int field = 4; field <= 52; field++) {
		if (field == 39)
			g_string_append_printf(s, " %s", processor);
		else
			g_string_append_printf(s, " %d", field * 10 + 1);
	}
	g_string_append_c(s, '\n');
	return g_string_free(s, FALSE);
}

static void test_stat_processor(void **state)
{
	static const struct { const char *name, *processor; int want; } cases[] = {
		{ "tar", "1", 1 },
		{ "tar", "0", 0 },
		{ "tar", "17", 17 },
		/* A name may hold spaces and ") ": the last ')' ends it. */
		{ "a) S 1 2 (b", "3", 3 },
		{ "x y z", "2", 2 },
		{ ")", "5", 5 },
		{ "tar", "-1", -1 },
		{ "tar", "1x", -1 },
		{ "tar", "99999999", -1 },
	};
	char *t;

	(void)state;
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		t = stat_text(cases[i].name, cases[i].processor);
		assert_int_equal(cpus_stat_processor(t), cases[i].want);
		g_free(t);
	}
	/* Cut before field 39, or no name's end at all. */
	t = stat_text("tar", "1");
	*strstr(t, " 381 ") = '\0';
	assert_int_equal(cpus_stat_processor(t), -1);
	g_free(t);
	assert_int_equal(cpus_stat_processor("4242 (tar S 1 2 3"), -1);
	assert_int_equal(cpus_stat_processor(""), -1);
	assert_int_equal(cpus_stat_processor(NULL), -1);
}

static void test_stat_processor_of_this_process(void **state)
{
	char *text = NULL;
	int cpu;

	(void)state;
	assert_true(g_file_get_contents("/proc/self/stat", &text, NULL, NULL));
	cpu = cpus_stat_processor(text);
	assert_true(cpu >= 0 && cpu < CPU_SETSIZE);
	g_free(text);
}

static int cpus_now(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
	return CPU_COUNT(&set);
}

/* The first (or the last) CPU the process may use. */
static int edge_cpu(int last)
{
	cpu_set_t set;
	int found = -1;

	CPU_ZERO(&set);
	assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
	for (int i = 0; i < CPU_SETSIZE; i++) {
		if (CPU_ISSET(i, &set)) {
			found = i;
			if (!last)
				break;
		}
	}
	assert_true(found >= 0);
	return found;
}

static int first_cpu(void)
{
	return edge_cpu(0);
}

static int last_cpu(void)
{
	return edge_cpu(1);
}

static gpointer count_cpus(gpointer unused)
{
	(void)unused;
	return GINT_TO_POINTER(cpus_now());
}

static void test_threads_made_while_held_run_free(void **state)
{
	int all, first = first_cpu();

	(void)state;
	cpus_init();
	all = cpus_now();
	if (all < 2)
		skip();  /* nothing to hold to on one CPU */
	assert_int_equal(cpus_hold(first), 0);
	assert_int_equal(cpus_now(), 1);
	assert_int_equal(cpus_hold(first), 0);  /* held there already */
	/* What cpus_thread_new is for: a plain thread inherits the hold. */
	assert_int_equal(GPOINTER_TO_INT(g_thread_join(g_thread_new("plain", count_cpus, NULL))), 1);
	assert_int_equal(GPOINTER_TO_INT(g_thread_join(cpus_thread_new("free", count_cpus, NULL))), all);
	assert_int_equal(cpus_now(), 1);  /* the maker is still held */
	cpus_let_go();
	assert_int_equal(cpus_now(), all);
}

static void test_hold_outside_the_set_lets_go(void **state)
{
	int all;

	(void)state;
	cpus_init();
	all = cpus_now();
	assert_int_equal(cpus_hold(-1), -1);
	assert_int_equal(cpus_hold(CPU_SETSIZE), -1);
	assert_int_equal(cpus_now(), all);
	if (all >= 2) {
		assert_int_equal(cpus_hold(first_cpu()), 0);
		assert_int_equal(cpus_hold(CPU_SETSIZE + 1), -1);
		assert_int_equal(cpus_now(), all);
	}
}

struct hold_try {
	int cpu;
	int rc;      /* cpus_hold's */
	int count;   /* CPUs the thread may run on after it */
};

static gpointer hold_and_count(gpointer p)
{
	struct hold_try *t = p;

	t->rc = cpus_hold(t->cpu);
	t->count = cpus_now();
	return NULL;
}

static void test_a_process_pinned_later_stays_pinned(void **state)
{
	struct hold_try t;
	cpu_set_t one, all;

	(void)state;
	cpus_init();  /* this thread is the main one: the process's set is its */
	if (cpus_now() < 2)
		skip();
	CPU_ZERO(&all);
	assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
	t = (struct hold_try){ .cpu = last_cpu() };
	g_thread_join(g_thread_new("hold", hold_and_count, &t));
	assert_int_equal(t.rc, 0);
	assert_int_equal(t.count, 1);
	/* taskset -p -c FIRST PID: the main thread alone is pinned. */
	CPU_ZERO(&one);
	CPU_SET(first_cpu(), &one);
	assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
	t = (struct hold_try){ .cpu = last_cpu() };
	g_thread_join(g_thread_new("hold", hold_and_count, &t));
	assert_int_equal(t.rc, -1);
	assert_int_equal(t.count, 1);   /* let go, to the main thread's one CPU */
	assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stat_processor),
		cmocka_unit_test(test_stat_processor_of_this_process),
		cmocka_unit_test(test_threads_made_while_held_run_free),
		cmocka_unit_test(test_hold_outside_the_set_lets_go),
		cmocka_unit_test(test_a_process_pinned_later_stays_pinned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

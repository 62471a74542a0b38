/* cpus.c — which CPUs a thread runs on: the process's own set, and a
 * thread held to one of them or let go again. The process's set is the
 * main thread's, which taskset(1) sets (-p alone sets it alone), so a
 * process pinned after it started stays pinned. A thread
 * inherits the CPUs of the thread that made it, so mailfs's own threads
 * (a stream's, a listing's, the watch's) are started through
 * cpus_thread_new: one made while answering an open of a reader that
 * fs_follow.c followed would otherwise share that reader's CPU for its
 * whole life. Must not: log, or fail anything when the system says no
 * (a thread then runs where the kernel puts it). */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cpus.h"

static cpu_set_t cpus_all;      /* the process's set, as first noted */
static int cpus_known;          /* cpus_all holds it */
static pid_t cpus_main;         /* the thread that noted it: main's */
static gint cpus_main_held;     /* main's is held (it answers requests under -s) */
static GOnce cpus_once = G_ONCE_INIT;

/* The CPU the calling thread is held to; CPUS_FREE when it runs on the
 * process's set; CPUS_UNKNOWN when it may have inherited a hold. */
#define CPUS_FREE (-1)
#define CPUS_UNKNOWN (-2)
static __thread int cpus_held = CPUS_UNKNOWN;

static gpointer cpus_note(gpointer unused)
{
	(void)unused;
	CPU_ZERO(&cpus_all);
	cpus_known = sched_getaffinity(0, sizeof cpus_all, &cpus_all) == 0 &&
	             CPU_COUNT(&cpus_all) > 0;
	cpus_main = gettid();
	return NULL;
}

/* The CPUs the process may use now: the main thread's, unless it is
 * held itself (under -s it answers requests): then the set first noted. */
static int cpus_allowed(cpu_set_t *set)
{
	if (!cpus_known)
		return -1;
	CPU_ZERO(set);
	if (gettid() != cpus_main && !g_atomic_int_get(&cpus_main_held) &&
	    sched_getaffinity(cpus_main, sizeof *set, set) == 0 && CPU_COUNT(set) > 0)
		return 0;
	*set = cpus_all;
	return 0;
}

void cpus_init(void)
{
	g_once(&cpus_once, cpus_note, NULL);
}

void cpus_let_go(void)
{
	cpu_set_t set;

	cpus_init();
	if (cpus_held == CPUS_FREE || cpus_allowed(&set) != 0)
		return;
	if (sched_setaffinity(0, sizeof set, &set) == 0) {
		cpus_held = CPUS_FREE;
		if (gettid() == cpus_main)
			g_atomic_int_set(&cpus_main_held, 0);
	}
}

int cpus_hold(int cpu)
{
	cpu_set_t set, one;

	cpus_init();
	if (cpus_allowed(&set) != 0 || cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &set) ||
	    CPU_COUNT(&set) < 2) {
		cpus_let_go();
		return -1;
	}
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	/* Held there already, unless the thread's CPUs were set since. */
	if (cpu == cpus_held && sched_getaffinity(0, sizeof set, &set) == 0 && CPU_EQUAL(&set, &one))
		return 0;
	if (gettid() == cpus_main)
		g_atomic_int_set(&cpus_main_held, 1);
	if (sched_setaffinity(0, sizeof one, &one) != 0) {
		if (gettid() == cpus_main && cpus_held == CPUS_FREE)
			g_atomic_int_set(&cpus_main_held, 0);
		cpus_let_go();
		return -1;
	}
	cpus_held = cpu;
	return 0;
}

struct cpus_start {
	GThreadFunc fn;
	gpointer data;
};

static gpointer cpus_thread_run(gpointer p)
{
	struct cpus_start s = *(struct cpus_start *)p;

	g_free(p);
	cpus_let_go();
	return s.fn(s.data);
}

GThread *cpus_thread_new(const char *name, GThreadFunc fn, gpointer data)
{
	struct cpus_start *s = g_new(struct cpus_start, 1);

	cpus_init();
	s->fn = fn;
	s->data = data;
	return g_thread_new(name, cpus_thread_run, s);
}

int cpus_stat_processor(const char *stat)
{
	/* The name ends at the last ')': a name can hold ") " itself. */
	const char *p = stat ? strrchr(stat, ')') : NULL;
	int field = 2;
	char *end;
	long cpu;

	if (!p)
		return -1;
	for (p++; *p && field < 39; p++) {
		if (*p == ' ')
			field++;
	}
	if (field != 39 || *p < '0' || *p > '9')
		return -1;
	cpu = strtol(p, &end, 10);
	if ((*end != ' ' && *end != '\n' && *end != '\0') || cpu >= CPU_SETSIZE)
		return -1;
	return (int)cpu;
}

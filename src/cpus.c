/* cpus.c — which CPUs a thread runs on: the process's own set, noted
 * once, and a thread held to one of them or let go again. A thread
 * inherits the CPUs of the thread that made it, so mailfs's own threads
 * (a stream's, a listing's, the watch's) are started through
 * cpus_thread_new: one made while answering an open of a reader that
 * fs_follow.c followed would otherwise share that reader's CPU for its
 * whole life. Must not: log, or fail anything when the system says no
 * (a thread then runs where the kernel puts it). */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include "cpus.h"

static cpu_set_t cpus_all;
static int cpus_known;          /* cpus_all holds the process's set */
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
	return NULL;
}

void cpus_init(void)
{
	g_once(&cpus_once, cpus_note, NULL);
}

void cpus_let_go(void)
{
	cpus_init();
	if (cpus_held == CPUS_FREE || !cpus_known)
		return;
	if (sched_setaffinity(0, sizeof cpus_all, &cpus_all) == 0)
		cpus_held = CPUS_FREE;
}

int cpus_hold(int cpu)
{
	cpu_set_t one;

	cpus_init();
	if (cpu >= 0 && cpu == cpus_held)
		return 0;
	if (!cpus_known || cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &cpus_all) ||
	    CPU_COUNT(&cpus_all) < 2) {
		cpus_let_go();
		return -1;
	}
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof one, &one) != 0) {
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

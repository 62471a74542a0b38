/* cpus.h — which CPUs a thread of mailfs runs on. A thread that answers
 * FUSE requests may be held to one CPU for a while (fs_follow.c); every
 * other thread runs on any CPU the process may use, whoever made it. */
#ifndef MAILFS_CPUS_H
#define MAILFS_CPUS_H

#include <glib.h>

/* Notes the main thread, and the CPUs the process may use, before any
 * thread is held to one (fs_new calls it in the main thread, before the
 * first request; the first use of the others below does too). */
void cpus_init(void);

/* g_thread_new for mailfs's own threads: the new thread runs on any of
 * the process's CPUs, even when the thread that made it was held to one. */
GThread *cpus_thread_new(const char *name, GThreadFunc fn, gpointer data);

/* Holds the calling thread to the CPU cpu: one of the process's set,
 * which holds two at least, else the thread is let go as by cpus_let_go;
 * nothing when it is held there already. 0, or -1 when it runs free. */
int cpus_hold(int cpu);

/* Lets the calling thread run on any of the process's CPUs again (the
 * main thread's, which taskset(1) may have set since the start); a
 * system call the first time in a thread, then only after a hold (so a
 * thread mailfs did not make, a GThreadPool's, calls it as its work
 * starts). */
void cpus_let_go(void);

/* The CPU a task last ran on, from the text of its /proc/PID/stat (its
 * 39th field, "processor"); -1 when the text has none. The task's name,
 * field 2, may hold spaces and parentheses. */
int cpus_stat_processor(const char *stat);

#endif

/* fs_follow.c — a lone reader followed: its CPU, and the listing it read.
 *
 * Its CPU: while one process opens file after file
 * (tar, rsync, cp -r, grep -r), the thread that answers an open moves to
 * the CPU that process last ran on, and stays there as it waits for the
 * next request (the CPU read from /proc every FS_FOLLOW_REREAD opens).
 * Each open is two wake-ups, the kernel waking a thread of
 * mailfs with the OPEN and the reply waking the reader; the kernel puts a
 * woken thread on an idle CPU if it finds one, and on a VM a wake-up that
 * crosses CPUs costs more than the open itself (bench/wakeup-bench.sh). The
 * reader waits for its OPEN's reply, so its CPU is free while mailfs
 * answers: held there, both wake-ups stay on one CPU. A warm
 * open+read+close of a small message took 55-59 µs, against 108-127 µs
 * with -o follow_reader=0 in the same run.
 *
 * Only a reader alone: FS_FOLLOW_STREAK opens in a row from one thread
 * of one process. Two readers at once, or a multi-threaded one, make
 * runs shorter than that, and the threads run free as before (a thread
 * moved back and forth at each open cost more than it saved). Threads
 * mailfs makes while one is held start free (cpus_thread_new). Off with
 * -o follow_reader=0. Must not: cost an open that follows no one more
 * than a lock (and a system call, in a thread that was held), or hold a
 * thread to a CPU the process may not use.
 *
 * The listing it read: tar, rsync, cp -r and grep -r read a directory to
 * its end, then open its files in that order. A thread that read a
 * folder's first listing (UID order) to its end and then opens the first
 * message of it (-o ro, with no opens: reads it) reads the folder in
 * order: its first open starts the stream of the folder
 * (sync_reader_listed), not its third, which saved two lone fetches, two
 * round trips, before the stream's first body. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include "cpus.h"
#include "fs_int.h"

/* Opens in a row from one thread before its CPU is followed. */
#define FS_FOLLOW_STREAK 8

/* Opens that take the reader's CPU as last read, before it is read again:
 * the kernel's answer costs more than the rest of an open that follows
 * (a tenth of the answering threads' time in a cold tar of 50,000
 * messages), and a reader held company on its CPU seldom moves. */
#define FS_FOLLOW_REREAD 8

/* The CPU the reader (the thread pid) last ran on, or -1; f->lock held.
 * Its /proc file stays open while it reads: a pread of it at 0 is the
 * task's state now. */
static int fs_follow_cpu_of(struct fs_follow *f, pid_t pid)
{
	char buf[1024];
	ssize_t n;

	for (int attempt = 0; attempt < 2; attempt++) {
		if (f->fd < 0) {
			char path[64];
			snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
			f->fd = open(path, O_RDONLY | O_CLOEXEC);
			if (f->fd < 0)
				return -1;
		}
		n = pread(f->fd, buf, sizeof buf - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			return cpus_stat_processor(buf);
		}
		/* A task gone (its number perhaps another's now): once anew. */
		close(f->fd);
		f->fd = -1;
	}
	return -1;
}

void fs_follow_open(struct fs_ctx *ctx, fuse_req_t req)
{
	struct fs_follow *f = &ctx->follow;
	pid_t pid;
	int cpu = -1;

	if (!ctx->cfg->follow_reader)
		return;
	pid = fuse_req_ctx(req)->pid;
	g_mutex_lock(&f->lock);
	if (pid != f->pid) {
		f->pid = pid;
		f->streak = 0;
		f->cpu = -1;
		if (f->fd >= 0)
			close(f->fd);
		f->fd = -1;
	}
	if (f->streak < FS_FOLLOW_STREAK)
		f->streak++;
	if (pid > 0 && f->streak >= FS_FOLLOW_STREAK) {
		if (f->cpu < 0 || f->since_read >= FS_FOLLOW_REREAD) {
			f->cpu = fs_follow_cpu_of(f, pid);
			f->since_read = 0;
		}
		f->since_read++;
		cpu = f->cpu;
	}
	g_mutex_unlock(&f->lock);
	if (cpu >= 0)
		cpus_hold(cpu);
	else
		cpus_let_go();
}

void fs_follow_listed(struct fs_ctx *ctx, fuse_req_t req, fuse_ino_t first, fuse_ino_t least)
{
	struct fs_follow *f = &ctx->follow;

	g_mutex_lock(&f->lock);
	f->listed = first;
	f->least = least;
	g_atomic_int_set(&f->lister, fuse_req_ctx(req)->pid);
	g_mutex_unlock(&f->lock);
}

int fs_follow_first(struct fs_ctx *ctx, fuse_req_t req, fuse_ino_t ino)
{
	struct fs_follow *f = &ctx->follow;
	pid_t pid = fuse_req_ctx(req)->pid;
	int first = 0;

	if (g_atomic_int_get(&f->lister) != pid || pid <= 0)
		return 0;  /* the usual case: no lock taken */
	g_mutex_lock(&f->lock);
	if (f->lister == pid) {
		if (f->listed == ino)
			first = f->least == ino ? 1 : 2;
		g_atomic_int_set(&f->lister, 0);  /* its next open, whichever, ends the hint */
	}
	g_mutex_unlock(&f->lock);
	return first;
}

void fs_follow_init(struct fs_ctx *ctx)
{
	g_mutex_init(&ctx->follow.lock);
	ctx->follow.fd = -1;
	ctx->follow.cpu = -1;
	cpus_init();
}

void fs_follow_end(struct fs_ctx *ctx)
{
	if (ctx->follow.fd >= 0)
		close(ctx->follow.fd);
	ctx->follow.fd = -1;
	g_mutex_clear(&ctx->follow.lock);
}

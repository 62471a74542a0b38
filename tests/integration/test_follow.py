"""A reader's CPU (fs_follow.c): while one process opens file after file,
the threads of mailfs that answer its opens move to the CPU it runs on;
two readers at once, or -o follow_reader=0, leave them free; and a thread
mailfs makes while one is held (a stream's, for a folder the reader goes
on to) runs on every CPU.

What a thread may run on is read from /proc/PID/task/TID/status
(Cpus_allowed_list). The threads that answer FUSE requests keep the
process's name; mailfs's own threads have names of their own
(mailfs-stream, mailfs-commit, sync-live, ...). Every reader here pins
itself to one CPU, so the CPU to follow is known. Needs two CPUs.
"""

import os
import subprocess
import threading

import pytest

import sample_mail
from harness import USER

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                reason="following a reader's CPU needs two CPUs")

ALL = sorted(os.sched_getaffinity(0))


def cpu_list(cpus):
    """The kernel's Cpus_allowed_list text for a set of CPUs."""
    cpus, out, i = sorted(cpus), [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out)


def threads(pid):
    """[(tid, name, Cpus_allowed_list)] of the process pid."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue  # a thread that just ended
        out.append((int(tid), fields.get("Name", ""), fields.get("Cpus_allowed_list", "")))
    return out


def main_name(ts, pid):
    return [t for t in ts if t[0] == pid][0][1]


def held_to(m, cpu):
    """The request threads of the mount held to cpu alone."""
    ts = threads(m.proc.pid)
    return [t for t in ts if t[1] == main_name(ts, m.proc.pid) and t[2] == str(cpu)]


def held(m):
    """Any thread of the mount that may run on one CPU only."""
    return [t for t in threads(m.proc.pid) if "," not in t[2] and "-" not in t[2]]


def own_threads_not_free(m):
    """mailfs's own threads (not the request threads) that may not run on
    every CPU."""
    all_ = cpu_list(ALL)
    ts = threads(m.proc.pid)
    return [t for t in ts if t[1] != main_name(ts, m.proc.pid) and t[2] != all_]


def make_folder(dc, name, n, seed):
    dc.create_folder(USER, name)
    dc.append_many(USER, name, [
        (sample_mail.build(
            [("From", "Follow <follow@example.org>"), ("To", "alice@example.org"),
             ("Subject", "Follow %s %03d" % (seed, i)),
             ("Date", "Tue, %02d Apr 2024 09:%02d:00 +0000" % (1 + i % 28, i % 60)),
             ("Message-ID", "<follow.%s.%d@mailfs.test>" % (seed, i))],
            ("line %d of %s\n" % (i, seed)) * (40 + i)),
         "", sample_mail.sample_internaldate(i, seed))
        for i in range(n)])
    assert len(dc.messages(USER, name)) == n


def read_files(paths, cpu):
    """Reads each file, from a thread of its own pinned to cpu (pinning
    the test's own thread would pin every test after it)."""
    def reader():
        os.sched_setaffinity(0, {cpu})
        for p in paths:
            with open(p, "rb") as f:
                f.read()
    t = threading.Thread(target=reader)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the reader did not finish"


@pytest.fixture
def dc(mount):
    return mount.private_server()


def test_a_lone_reader_is_answered_on_its_cpu(mount, dc):
    """One thread reads a folder: the threads answering it end up held to
    its CPU. It goes on to a second folder, whose stream starts from a held
    thread: the stream's threads run on every CPU all the same."""
    make_folder(dc, "Near", 30, "near")
    make_folder(dc, "Next", 60, "next")
    m = mount(server=dc, env={"MAILFS_STREAM_WINDOW": "60000"}, options=["watch=0"])
    cpu = ALL[-1]
    near = [m.p("Near", n) for n in sorted(os.listdir(m.p("Near")))]
    nxt = [m.p("Next", n) for n in sorted(os.listdir(m.p("Next")))]
    done, stop = threading.Event(), threading.Event()

    def reader():
        os.sched_setaffinity(0, {cpu})
        for p in near + nxt[:10]:
            with open(p, "rb") as f:
                f.read()
        done.set()
        stop.wait(60)  # alive meanwhile, as a reader that paused
    t = threading.Thread(target=reader)
    t.start()
    try:
        assert done.wait(120), "the reader did not finish"
        # Holds are taken in the opens themselves: nothing to wait for.
        assert held_to(m, cpu), "no thread of mailfs held to the reader's CPU %d: %s" % (
            cpu, threads(m.proc.pid))
        # Next's stream started at its third open, from a held thread, and
        # waits for the reader with its window full (for 5 s after the last
        # open): its threads are there now.
        assert any(n.startswith("mailfs-stream") for _, n, _ in threads(m.proc.pid)), \
            "no stream for Next: %s" % threads(m.proc.pid)
        assert not own_threads_not_free(m), \
            "threads mailfs made while one was held run on fewer CPUs than the process: %s" % (
                own_threads_not_free(m))
    finally:
        stop.set()
        t.join(70)


def test_two_readers_at_once_leave_the_threads_free(mount, dc):
    """Two threads on two CPUs take turns opening files: no run of opens
    from one of them is long enough to follow, and no thread is held."""
    make_folder(dc, "Turns", 40, "turns")
    m = mount(server=dc, options=["watch=0"])
    paths = [m.p("Turns", n) for n in sorted(os.listdir(m.p("Turns")))]
    turn = threading.Condition()
    state = {"next": 0}

    def reader(me, cpu):
        os.sched_setaffinity(0, {cpu})
        for i in range(me, len(paths), 2):
            with turn:
                assert turn.wait_for(lambda: state["next"] == i, 60)
            with open(paths[i], "rb") as f:
                f.read()
            with turn:
                state["next"] = i + 1
                turn.notify_all()
    ts = [threading.Thread(target=reader, args=(k, cpu)) for k, cpu in ((0, ALL[0]), (1, ALL[-1]))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert state["next"] == len(paths), "the readers did not finish"
    assert not held(m), "threads held to one CPU after two readers took turns: %s" % held(m)


def test_follow_reader_0_leaves_the_threads_free(mount, dc):
    make_folder(dc, "Free", 30, "free")
    m = mount(server=dc, options=["watch=0", "follow_reader=0"])
    read_files([m.p("Free", n) for n in sorted(os.listdir(m.p("Free")))], ALL[-1])
    assert not held(m), "-o follow_reader=0, and threads are held to one CPU: %s" % held(m)


def test_a_mount_pinned_by_taskset_stays_pinned(mount, dc):
    """taskset -a -p after the mount pins every thread to one CPU: a reader
    on another CPU moves none of them there."""
    make_folder(dc, "Pinned", 30, "pinned")
    m = mount(server=dc, options=["watch=0"])
    paths = [m.p("Pinned", n) for n in sorted(os.listdir(m.p("Pinned")))]
    subprocess.run(["taskset", "-a", "-p", "-c", str(ALL[0]), str(m.proc.pid)], check=True,
                   stdout=subprocess.DEVNULL, timeout=30)
    read_files(paths, ALL[-1])
    moved = [t for t in threads(m.proc.pid) if t[2] != str(ALL[0])]
    assert not moved, "taskset pinned mailfs to CPU %d, and a reader moved threads: %s" % (
        ALL[0], moved)

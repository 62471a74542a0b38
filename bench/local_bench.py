#!/usr/bin/python3
"""local_bench.py: once bodies are cached, does a mount read like a local
disk?  Run by bench/local-bench.sh; see there for the environment.

In one run, against a private Dovecot on loopback holding folder "Big"
(BENCH_MESSAGES messages, every 20th with a 100 KB - 2 MB attachment) and
folder "Many" (BENCH_MANY small ones), with the same messages in a local
Maildir, it measures (medians of BENCH_RUNS):

  - tar cf - Big | cat: mailfs warm (same mount), mailfs after a remount
    (cache on disk), the local Maildir;
  - the same for "Many";
  - restic backup of Big twice, then after a remount, on the mount and on
    the local Maildir (time, and the files restic calls changed);
  - mailfs's peak RSS (VmHWM) in each phase;
  - the FUSE requests per file of a warm tar (libfuse's -d trace, on a
    folder of BENCH_TRACE messages).

It prints the figures and the ratios mailfs / local.  Ratios, not absolute
times, are what carries over: the machine is shared and noisy.
"""

import collections
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import dovecot  # noqa: E402
import raw_imap  # noqa: E402
import sample_mail  # noqa: E402
import sysutil  # noqa: E402

import pwd  # noqa: E402

MAILFS = os.environ.get("MAILFS_BIN") or os.path.join(HERE, "..", "build", "mailfs")
BEFORE = os.environ.get("MAILFS_BEFORE")   # an older build, measured in the same run
N_BIG = int(os.environ.get("BENCH_MESSAGES", "10000"))
N_MANY = int(os.environ.get("BENCH_MANY", "50000"))
N_TRACE = int(os.environ.get("BENCH_TRACE", "500"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
USER, PASSWORD = benchlib.USER, benchlib.PASSWORD


def attachment_message(i, rng):
    """A message with a base64 attachment of 100 KB to 2 MB."""
    size = rng.randint(100 * 1024, 2 * 1024 * 1024)
    blob = rng.randbytes(size * 3 // 4)
    import base64
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    head = ("From: Ann <ann@example.org>\r\nTo: bob@example.org\r\n"
            "Subject: report %d with attachment\r\nMessage-ID: <att.%d@bench.mailfs.test>\r\n"
            "Date: Mon, 07 Jun 2021 08:%02d:10 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n" % (i, i, i % 60, i)).encode()
    parts = (b"--b%d\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n"
             b"--b%d\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Transfer-Encoding: base64\r\n"
             b"Content-Disposition: attachment; filename=\"r%d.bin\"\r\n\r\n" % (i, i, i))
    return head + parts + b64 + b"--b%d--\r\n" % i


def messages_big(n):
    rng = random.Random("local-bench")
    msgs = sample_mail.sample_messages(n, 11, tricky=False)
    for i in range(0, n, 20):
        msgs[i] = attachment_message(i, rng)
    return msgs


def fill(dc, workdir, folder, messages, seed):
    """Writes messages into Dovecot's Maildir for folder and into a local
    Maildir; returns the local Maildir folder."""
    dc.create_folder(USER, folder)
    srv = os.path.join(dc.workdir, "home", USER, "Maildir", folder)
    owner = pwd.getpwnam("dovecot")
    benchlib._write_maildir(os.path.join(srv, "cur"), messages, seed, owner)
    local = os.path.join(workdir, "maildir", folder)
    benchlib._write_maildir(os.path.join(local, "cur"), messages, seed)
    for d in ("new", "tmp"):
        os.makedirs(os.path.join(local, d), exist_ok=True)
    benchlib._chown_tree(os.path.join(dc.workdir, "home", USER), owner)
    for _ in range(2):   # Dovecot's index and cache, warm as for a real account
        raw_imap.listing(dc.host, dc.imaps_port, dc.ca_file, USER, PASSWORD, folder)
    return local


class Mount:
    def __init__(self, workdir, dc, name="mnt", extra=(), debug=False, binary=None):
        self.binary = binary or MAILFS
        self.dir = os.path.join(workdir, name)
        self.cache = os.path.join(workdir, name + "-cache")
        self.dc, self.extra, self.debug = dc, list(extra), debug
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.trace = os.path.join(workdir, name + ".trace")

    def up(self):
        opts = ["cafile=" + self.dc.ca_file, "cache_dir=" + self.cache,
                "logfile=" + self.cache + ".log", "refresh=3600"] + self.extra
        args = [self.binary, "-d" if self.debug else "-f", "-o", ",".join(opts),
                "imaps://%s@%s:%d/" % (USER, self.dc.host, self.dc.imaps_port), self.dir]
        out = open(self.trace, "ab") if self.debug else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, env=dict(os.environ, MAILFS_PASSWORD=PASSWORD),
                                     stdout=out, stderr=out)
        deadline = time.monotonic() + 120
        while not sysutil.is_mounted(self.dir):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("local-bench: mailfs did not mount")
            time.sleep(0.02)
        return self

    def hwm_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def down(self):
        subprocess.run(["fusermount3", "-u", self.dir], check=False)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sh(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True)
    if r.returncode != 0:
        raise SystemExit("local-bench: %s: %s" % (cmd, r.stderr.decode(errors="replace")))
    return r.stdout


def timed(cmd, runs=RUNS, prepare=None):
    times = []
    for _ in range(runs):
        if prepare:
            prepare()
        t0 = time.monotonic()
        sh(cmd)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def tar_cmd(parent, folder):
    # | cat: GNU tar reads nothing when its output is /dev/null itself.
    return "tar cf - -C %s %s | cat > /dev/null" % (parent, folder)


def restic(repo, path):
    """(seconds, files changed, files unmodified) of one restic backup."""
    t0 = time.monotonic()
    out = sh("RESTIC_PASSWORD=bench restic -q --json -r %s backup %s" % (repo, path))
    dt = time.monotonic() - t0
    summary = [json.loads(l) for l in out.decode().splitlines() if '"summary"' in l][-1]
    return dt, summary["files_changed"] + summary["files_new"], summary["files_unmodified"]


def fuse_requests_per_file(workdir, dc, binary, tag):
    """A tar of folder "Trace" on a -d mount, warm (same mount), then
    after a remount: (requests per file, {opcode: count}) of each."""
    def traced(m):
        mark = os.path.getsize(m.trace)
        sh(tar_cmd(m.dir, "Trace"))
        time.sleep(0.5)
        with open(m.trace, "rb") as f:
            f.seek(mark)
            data = f.read().decode(errors="replace")
        ops = collections.Counter(re.findall(r"opcode: (\w+)", data))
        return sum(ops.values()) / N_TRACE, dict(ops)

    m = Mount(workdir, dc, tag + "trace-mnt", debug=True, binary=binary).up()
    try:
        sh(tar_cmd(m.dir, "Trace"))             # cold: lists and fetches
        sh(tar_cmd(m.dir, "Trace"))             # warm once
        warm = traced(m)
        m.down()
        m = Mount(workdir, dc, tag + "trace-mnt", debug=True, binary=binary).up()
        remount = traced(m)
    finally:
        m.down()
    return warm, remount


def mailfs_phase(workdir, dc, big, res, binary, tag):
    """Everything measured on mailfs (binary), into res under keys
    prefixed with tag; restic on the local Maildir too, the first time."""
    m = Mount(workdir, dc, tag + "mnt", binary=binary).up()
    t0 = time.monotonic()
    sh(tar_cmd(m.dir, "Big"))                # cold: list and fetch every body
    res[tag + "cold_big"] = time.monotonic() - t0
    res[tag + "warm_big"] = timed(tar_cmd(m.dir, "Big"))
    sh(tar_cmd(m.dir, "Many"))
    res[tag + "warm_many"] = timed(tar_cmd(m.dir, "Many"))
    res[tag + "rss_after_reads_kib"] = m.hwm_kib()
    m.down()

    def remount():
        nonlocal m
        m.down()
        m = Mount(workdir, dc, tag + "mnt", binary=binary).up()
    m = Mount(workdir, dc, tag + "mnt", binary=binary).up()
    res[tag + "remount_big"] = timed(tar_cmd(m.dir, "Big"), prepare=remount)
    res[tag + "remount_many"] = timed(tar_cmd(m.dir, "Many"), prepare=remount)
    res[tag + "rss_remount_kib"] = m.hwm_kib()

    # restic: twice on the same mount, then after a remount.
    for side, path in (("mailfs", os.path.join(m.dir, "Big")),
                       ("local", os.path.join(big))):
        repo = os.path.join(workdir, tag + "restic-" + side)
        sh("RESTIC_PASSWORD=bench restic -q init -r %s" % repo)
        first = restic(repo, path)
        second = restic(repo, path)
        if side == "mailfs":
            remount()
            path = os.path.join(m.dir, "Big")
        third = restic(repo, path)
        res[tag + "restic_" + side] = [first, second, third]
    res[tag + "rss_restic_kib"] = m.hwm_kib()
    m.down()

    res[tag + "fuse_warm"], res[tag + "fuse_remount"] = fuse_requests_per_file(workdir, dc,
                                                                             binary, tag)


def main():
    workdir = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mailfs-lbench.")
    os.makedirs(workdir, exist_ok=True)
    dc = dovecot.Dovecot(os.path.join(workdir, "dovecot"), users={USER: PASSWORD})
    dc.start()
    res = {}
    try:
        t0 = time.monotonic()
        big = fill(dc, workdir, "Big", messages_big(N_BIG), 11)
        many = fill(dc, workdir, "Many", sample_mail.sample_messages(N_MANY, 12, tricky=False), 12)
        fill(dc, workdir, "Trace", sample_mail.sample_messages(N_TRACE, 13, tricky=False), 13)
        big_bytes = sum(os.path.getsize(os.path.join(big, "cur", f))
                        for f in os.listdir(os.path.join(big, "cur")))
        print("setup: Big %d messages, %.0f MB; Many %d; in %.0f s" % (
            N_BIG, big_bytes / 1e6, N_MANY, time.monotonic() - t0), flush=True)
        local_parent = os.path.join(workdir, "maildir")

        # The local Maildir: warm (its pages in memory, as the mount's are).
        sh(tar_cmd(local_parent, "Big"))
        res["local_big"] = timed(tar_cmd(local_parent, "Big"))
        sh(tar_cmd(local_parent, "Many"))
        res["local_many"] = timed(tar_cmd(local_parent, "Many"))

        mailfs_phase(workdir, dc, big, res, MAILFS, "")
        if BEFORE:
            mailfs_phase(workdir, dc, big, res, BEFORE, "before_")
    finally:
        dc.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)

    print("\n== local-bench: %d messages (Big, %.0f MB), %d (Many); medians of %d runs" % (
        N_BIG, big_bytes / 1e6, N_MANY, RUNS))
    for tag, label in (("", "mailfs " + MAILFS), ("before_", "before: " + str(BEFORE))):
        if tag and not BEFORE:
            continue
        print("\n-- %s" % label)
        report(res, tag)


def report(res, tag):
    rows = [
        ("tar Big: local Maildir", res["local_big"]),
        ("tar Big: mailfs warm, same mount", res[tag + "warm_big"]),
        ("tar Big: mailfs after a remount (cache on disk)", res[tag + "remount_big"]),
        ("tar Big: mailfs cold (list + fetch, for scale)", res[tag + "cold_big"]),
        ("tar Many: local Maildir", res["local_many"]),
        ("tar Many: mailfs warm, same mount", res[tag + "warm_many"]),
        ("tar Many: mailfs after a remount", res[tag + "remount_many"]),
    ]
    for label, v in rows:
        print("%-55s %8.2f s" % (label, v))
    for side in ("local", "mailfs"):
        r = res[tag + "restic_" + side]
        print("restic %-6s: first %6.2f s; again %6.2f s (%d changed, %d unmodified); "
              "after a remount %6.2f s (%d changed, %d unmodified)" % (
                  side, r[0][0], r[1][0], r[1][1], r[1][2], r[2][0], r[2][1], r[2][2]))
    rss = [res[tag + k] for k in ("rss_after_reads_kib", "rss_remount_kib", "rss_restic_kib")]
    print("mailfs peak RSS: %.1f MiB after the reads, %.1f after a remount, %.1f with restic" % (
        rss[0] / 1024, rss[1] / 1024, rss[2] / 1024))
    for what in ("warm", "remount"):
        per, ops = res[tag + "fuse_" + what]
        print("FUSE requests per file of a tar, %s: %.2f %s" % (
            "warm" if what == "warm" else "after a remount", per, ops))
    print()

    def ratio(what, a, b, target):
        x = a / b if b else float("inf")
        print("ratio %-46s %6.2fx  (target <= %.1fx: %s)" % (what, x, target,
                                                             "meets" if x <= target else "MISSES"))
    restic_m, restic_l = res[tag + "restic_mailfs"], res[tag + "restic_local"]
    ratio("warm tar Big / local", res[tag + "warm_big"], res["local_big"], 2.0)
    ratio("tar Big after a remount / local", res[tag + "remount_big"], res["local_big"], 2.0)
    ratio("warm tar Many / local", res[tag + "warm_many"], res["local_many"], 4.0)
    ratio("tar Many after a remount / local", res[tag + "remount_many"], res["local_many"], 4.0)
    ratio("restic again / local again", restic_m[1][0], restic_l[1][0], 3.0)
    ratio("restic after a remount / local again", restic_m[2][0], restic_l[1][0], 3.0)
    print("restic after a remount: %d files changed (target 0: %s)" % (
        restic_m[2][1], "meets" if restic_m[2][1] == 0 else "MISSES"))
    print("peak RSS %.1f MiB (target <= 64: %s)" % (
        max(rss) / 1024, "meets" if max(rss) <= 64 * 1024 else "MISSES"))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""million_bench.py: can a folder of a million messages be listed, and
what does it cost?  Run by bench/million-bench.sh; see there for the
environment.

In one run, against a private Dovecot on loopback holding folder "Big"
with BENCH_MESSAGES small messages (Maildir files written directly, the
server's index warmed), it measures once each:

  - the yardstick: a raw client's one UID FETCH 1:* of the listing's
    fields (bench/raw_imap.py), after the warm-up;
  - mailfs cold: mount on a new cache and `ls -f Big | wc -l`, until the
    listing is stored (the mount's cache file no longer grows);
  - mailfs warm: `ls -l Big` again on the same mount, and after a remount;
  - mailfs's peak RSS (VmHWM) after each phase, and the cache's size;
  - Dovecot's own out= bytes for the cold listing.

Ratios, not absolute times, carry over: the machine is shared and noisy.
"""

import os
import pwd
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import dovecot  # noqa: E402
import sample_mail  # noqa: E402
import local_bench  # noqa: E402
import raw_imap  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "1000000"))
SEED = int(os.environ.get("BENCH_SEED", "1"))


def write_maildir(curdir, messages, first, owner):
    """Maildir files as Dovecot names its own (S=, W=), numbered from first."""
    os.makedirs(curdir, exist_ok=True)
    total = 0
    for i, raw in enumerate(messages, first):
        path = os.path.join(curdir, "%d.M%dP1.bench,S=%d,W=%d:2,S" % (
            1700000000 + i, i, len(raw), len(raw)))
        with open(path, "wb") as f:
            f.write(raw)
        os.chown(path, owner.pw_uid, owner.pw_gid)
        total += len(raw)
    return total


def timed(cmd):
    t0 = time.monotonic()
    out = local_bench.sh(cmd)
    return time.monotonic() - t0, out


def mib(kib):
    return kib / 1024.0


def main():
    workdir = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mailfs-mbench.")
    os.makedirs(workdir, exist_ok=True)
    mounts, dcs = [], []
    try:
        t0 = time.monotonic()
        # As benchlib's setup, without a local copy: Maildir files written
        # directly, then Dovecot's index built by two listings (the first
        # one of a million messages takes minutes before its first byte).
        dc = dovecot.Dovecot(os.path.join(workdir, "dovecot"),
                             users={benchlib.USER: benchlib.PASSWORD},
                             # A million messages' index is more than the
                             # 256 MB an imap process may map by default.
                             extra_conf="service imap {\n  vsz_limit = 4G\n}\n")
        dc.start()
        dcs.append(dc)
        dc.create_folder(benchlib.USER, benchlib.FOLDER)
        maildir = os.path.join(dc.workdir, "home", benchlib.USER, "Maildir", benchlib.FOLDER)
        owner = pwd.getpwnam("dovecot")
        size = 0
        for start in range(0, N, 50000):   # in slices: a million messages at once is GBs
            msgs = sample_mail.sample_messages(min(50000, N - start), SEED + start, tricky=False)
            size += write_maildir(os.path.join(maildir, "cur"), msgs, start, owner)
        benchlib._chown_tree(os.path.join(dc.workdir, "home", benchlib.USER), owner)
        host, port, ca = dc.host, dc.imaps_port, dc.ca_file
        for _ in range(2):
            got, _ = raw_imap.listing(host, port, ca, benchlib.USER, benchlib.PASSWORD,
                                      benchlib.FOLDER, timeout=3600)
        print("setup: %d messages, %.1f MB, %.0f s (fill and Dovecot's index)" % (
            N, size / 1e6, time.monotonic() - t0), flush=True)

        t1 = time.monotonic()
        got, received = raw_imap.listing(host, port, ca, benchlib.USER, benchlib.PASSWORD,
                                         benchlib.FOLDER, timeout=3600)
        t_yard = time.monotonic() - t1
        if got != N:
            raise SystemExit("million-bench: the yardstick saw %d messages, not %d" % (got, N))

        class Server:   # what local_bench.Mount needs of a server
            pass
        srv = Server()
        srv.host, srv.imaps_port, srv.ca_file = host, port, ca
        m = local_bench.Mount(workdir, srv, "mnt",
                              extra=[o for o in os.environ.get("BENCH_OPTIONS", "").split(",") if o])
        mounts.append(m)
        # Sessions are logged when they end: wait until the two warm-ups'
        # and the yardstick's listings are all in the log, so that after
        # it the log holds only the mount's sessions. (Counting sessions
        # alone was not enough: the folder's CREATE is one too, and at
        # 200,000 messages the yardstick's line came after the offset.)
        def listings_logged():
            return sum(1 for x in dc.sessions(benchlib.USER) if x.get("hdr_count", 0) >= N)
        deadline = time.monotonic() + 60
        while listings_logged() < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        off = dc.log_offset()
        t1 = time.monotonic()
        m.up()
        t_cold, listed = timed("ls -f %s/%s | wc -l" % (m.dir, benchlib.FOLDER))
        t_cold = time.monotonic() - t1
        if int(listed) != N + 2:   # ls -f shows . and ..
            raise SystemExit("million-bench: ls listed %d names, not %d" % (int(listed) - 2, N))
        # The listing is shown while it is stored: wait until the cache
        # stops growing, so the warm figures and RSS include the storing.
        db = os.path.join(m.cache, "cache.sqlite")
        last, changed = -1, time.monotonic()
        while time.monotonic() - changed < 3:
            now = sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s))
            if now != last:
                last, changed = now, time.monotonic()
            time.sleep(0.05)
        t_stored = changed - t1
        hwm_cold = m.hwm_kib()
        t_warm, _ = timed("ls -l %s/%s | wc -l" % (m.dir, benchlib.FOLDER))
        hwm_warm = m.hwm_kib()
        m.down()
        sessions = []
        deadline = time.monotonic() + 10
        while not sessions and time.monotonic() < deadline:
            time.sleep(0.2)
            sessions = dc.sessions(benchlib.USER, since=off)
        out_bytes = sum(x["out"] for x in sessions)
        m.up()
        t_re, _ = timed("ls -l %s/%s | wc -l" % (m.dir, benchlib.FOLDER))
        hwm_re = m.hwm_kib()
        m.down()
        cache_bytes = sum(os.path.getsize(os.path.join(d, f))
                          for d, _, fs in os.walk(m.cache) for f in fs)

        print()
        print("folder of %d messages (%.1f MB on the server)" % (N, size / 1e6))
        print("%-52s %9s %9s" % ("", "seconds", "/ yard"))
        rows = [("yardstick: one raw UID FETCH 1:* of the listing", t_yard),
                ("mailfs cold: mount + ls -f (names shown)", t_cold),
                ("mailfs cold: until the cache holds the listing", t_stored),
                ("mailfs warm: ls -l, same mount", t_warm),
                ("mailfs warm: ls -l after a remount", t_re)]
        for what, t in rows:
            print("%-52s %9.1f %8.2fx" % (what, t, t / t_yard))
        print("mailfs peak RSS: %.1f MiB after the cold listing, %.1f MiB after ls -l, "
              "%.1f MiB after a remount and ls -l" % (mib(hwm_cold), mib(hwm_warm), mib(hwm_re)))
        print("cache on disk: %.1f MB (%.0f bytes per message)" % (cache_bytes / 1e6, cache_bytes / N))
        print("server sent (Dovecot out=): %.1f MB for the cold mount; the yardstick "
              "received %.1f MB" % (out_bytes / 1e6, received / 1e6))
    finally:
        for m in mounts:
            if m.proc and m.proc.poll() is None:
                m.down()
        for dc in dcs:
            dc.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

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
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import local_bench  # noqa: E402
import raw_imap  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "1000000"))
SEED = int(os.environ.get("BENCH_SEED", "1"))


def timed(cmd):
    t0 = time.monotonic()
    out = local_bench.sh(cmd)
    return time.monotonic() - t0, out


def mib(kib):
    return kib / 1024.0


def main():
    workdir = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mailfs-mbench.")
    os.makedirs(workdir, exist_ok=True)
    mounts = []
    try:
        t0 = time.monotonic()
        # benchlib's setup prints shell assignments; here they are parsed.
        out = subprocess.run([sys.executable, os.path.join(HERE, "benchlib.py"), "setup",
                              workdir, str(N), str(SEED)], check=True,
                             capture_output=True).stdout.decode()
        env = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
        print("setup: %d messages, %.1f MB, %.0f s (fill and Dovecot's index)" % (
            N, int(env["MAILBOX_BYTES"]) / 1e6, time.monotonic() - t0), flush=True)
        host, port, ca = env["DC_HOST"], int(env["DC_IMAPS_PORT"]), env["DC_CA"]

        t1 = time.monotonic()
        got, received = raw_imap.listing(host, port, ca, benchlib.USER, benchlib.PASSWORD,
                                         benchlib.FOLDER)
        t_yard = time.monotonic() - t1
        if got != N:
            raise SystemExit("million-bench: the yardstick saw %d messages, not %d" % (got, N))

        class Server:   # what local_bench.Mount needs of a server
            pass
        srv = Server()
        srv.host, srv.imaps_port, srv.ca_file = host, port, ca
        m = local_bench.Mount(workdir, srv, "mnt")
        mounts.append(m)
        off = int(subprocess.run([sys.executable, os.path.join(HERE, "benchlib.py"),
                                  "log-offset", workdir], check=True,
                                 capture_output=True).stdout)
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
            size = sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s))
            if size != last:
                last, changed = size, time.monotonic()
            time.sleep(0.05)
        t_stored = changed - t1
        hwm_cold = m.hwm_kib()
        t_warm, _ = timed("ls -l %s/%s | wc -l" % (m.dir, benchlib.FOLDER))
        hwm_warm = m.hwm_kib()
        m.down()
        out_bytes = subprocess.run([sys.executable, os.path.join(HERE, "benchlib.py"),
                                    "out-bytes", workdir, str(off)], check=True,
                                   capture_output=True).stdout.decode().split()
        m.up()
        t_re, _ = timed("ls -l %s/%s | wc -l" % (m.dir, benchlib.FOLDER))
        hwm_re = m.hwm_kib()
        m.down()
        cache_bytes = sum(os.path.getsize(os.path.join(d, f))
                          for d, _, fs in os.walk(m.cache) for f in fs)

        print()
        print("folder of %d messages (%.1f MB on the server)" % (N, int(env["MAILBOX_BYTES"]) / 1e6))
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
              "received %.1f MB" % (int(out_bytes[0]) / 1e6, received / 1e6))
    finally:
        for m in mounts:
            if m.proc and m.proc.poll() is None:
                m.down()
        subprocess.run([sys.executable, os.path.join(HERE, "benchlib.py"), "stop", workdir],
                       check=False)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""resync_bench.py: what a re-check of a big folder costs.  Run by
bench/resync-bench.sh; see there for the environment.

In one run, against a private Dovecot on loopback holding folder "Big"
(BENCH_MESSAGES messages, Maildir files written directly), for each of
three capability lists (Dovecot's own, with QRESYNC and CONDSTORE; one
with CONDSTORE only; one with neither: Dovecot's imap_capability):

  - a mount (-o refresh=BENCH_REFRESH) lists Big once (its first listing);
  - the no-change re-check, BENCH_RUNS times: once refresh has expired,
    `stat MOUNT/Big` (a directory getattr re-checks a stale folder: the
    EXAMINE and what follows, plus the store's work) minus a cached
    `stat` right after; and the bytes it moved (the stats xattr's
    bytes_received + bytes_sent);
  - another client (imaplib) sets flags on 10 messages and expunges 5;
    once refresh has expired, `stat` re-checks: the bytes it moved, and
    the listing then holds exactly the server's count.

Then mbsync (isync, `FSync no`, pull only) syncs Big into a local Maildir
once, and its no-change run is timed (median of BENCH_RUNS), against
mailfs's QRESYNC no-change re-check.  mbsync's run includes its connect,
TLS and login; mailfs's re-check uses a pooled connection (a mount keeps
them): that is how each is used.
"""

import json
import os
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
import local_bench  # noqa: E402
import sample_mail  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "50000"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
REFRESH = int(os.environ.get("BENCH_REFRESH", "2"))
USER, PASSWORD = benchlib.USER, benchlib.PASSWORD
FOLDER = "Big"

BASE_CAPABILITY = ("IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE CHILDREN UIDPLUS "
                   "MOVE UNSELECT")
KINDS = [("qresync", None), ("condstore", BASE_CAPABILITY + " CONDSTORE"),
         ("plain", BASE_CAPABILITY)]


def stats(mnt):
    raw = subprocess.run(["getfattr", "--only-values", "-n", "user.mailfs.stats", mnt],
                         capture_output=True, check=True).stdout
    s = json.loads(raw)
    return s["bytes_received"] + s["bytes_sent"]


def timed_stat(path):
    t0 = time.monotonic()
    os.stat(path)
    return time.monotonic() - t0


def wait_stale(since):
    """Until the folder checked at monotonic time since is older than refresh."""
    left = since + REFRESH + 0.3 - time.monotonic()
    if left > 0:
        time.sleep(left)


def count(mnt):
    return len(os.listdir(os.path.join(mnt, FOLDER)))


def other_client_changes(dc, expunged_so_far):
    """10 flag changes and 5 expunges by imaplib; returns the UIDs expunged."""
    with dc.session(USER) as c:
        typ, data = c.select(FOLDER)
        assert typ == "OK", data
        typ, data = c.uid("SEARCH", "ALL")
        uids = [int(u) for u in data[0].split()]
        step = max(1, len(uids) // 20)
        flagged = uids[step:11 * step:step]
        start = len(uids) // 2 + 60 * expunged_so_far
        gone = uids[start:start + 50:10]
        for u in flagged:
            c.uid("STORE", str(u), "+FLAGS.SILENT", "(\\Flagged $Bench)")
        s = ",".join(str(u) for u in gone)
        c.uid("STORE", s, "+FLAGS.SILENT", "(\\Deleted)")
        c.uid("EXPUNGE", s)
    return gone


def bench_kind(workdir, dc, kind, expunged):
    m = local_bench.Mount(workdir, dc, "mnt-" + kind, extra=["refresh=%d" % REFRESH])
    m.up()
    res = {}
    try:
        t0 = time.monotonic()
        n0 = count(m.dir)
        res["first_listing_s"] = time.monotonic() - t0
        checked = time.monotonic()
        times, moved = [], []
        for _ in range(RUNS):
            wait_stale(checked)
            b0 = stats(m.dir)
            t_recheck = timed_stat(os.path.join(m.dir, FOLDER))
            checked = time.monotonic()
            b1 = stats(m.dir)
            t_cached = timed_stat(os.path.join(m.dir, FOLDER))
            times.append(t_recheck - t_cached)
            moved.append(b1 - b0)
        res["nochange_s"] = statistics.median(times)
        res["nochange_bytes"] = statistics.median(moved)
        gone = other_client_changes(dc, expunged)
        wait_stale(checked)
        b0 = stats(m.dir)
        t0 = time.monotonic()
        os.stat(os.path.join(m.dir, FOLDER))
        res["change_s"] = time.monotonic() - t0
        res["change_bytes"] = stats(m.dir) - b0
        n1 = count(m.dir)
        want = len(dc.messages(USER, FOLDER))
        if n1 != want or n1 != n0 - len(gone):
            raise SystemExit("resync-bench: %s: the mount lists %d, the server holds %d "
                             "(was %d, %d expunged)" % (kind, n1, want, n0, len(gone)))
        res["expunged"] = len(gone)
    finally:
        m.down()
    return res, len(gone)


def mbsync(workdir, dc):
    conf = os.path.join(workdir, "mbsyncrc")
    local = os.path.join(workdir, "mbsync-maildir")
    os.makedirs(local, exist_ok=True)
    with open(conf, "w") as f:
        f.write("""FSync no

IMAPAccount bench
Host %s
Port %d
User %s
Pass %s
SSLType IMAPS
CertificateFile %s

IMAPStore remote
Account bench

MaildirStore local
Path %s/
Inbox %s/INBOX

Channel big
Far :remote:%s
Near :local:%s
Sync Pull
Create Near
SyncState *
""" % ("localhost", dc.imaps_port, USER, PASSWORD, dc.ca_file, local, local, FOLDER, FOLDER))
    t0 = time.monotonic()
    subprocess.run(["mbsync", "-q", "-c", conf, "big"], check=True)
    first = time.monotonic() - t0
    times = []
    for _ in range(RUNS):
        t0 = time.monotonic()
        subprocess.run(["mbsync", "-q", "-c", conf, "big"], check=True)
        times.append(time.monotonic() - t0)
    return first, statistics.median(times)


def main():
    workdir = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mailfs-rbench.")
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)
    dc = dovecot.Dovecot(os.path.join(workdir, "dovecot"), users={USER: PASSWORD})
    dc.start()
    results = {}
    try:
        t0 = time.monotonic()
        dc.create_folder(USER, FOLDER)
        srv = os.path.join(dc.workdir, "home", USER, "Maildir", FOLDER)
        owner = local_bench.pwd.getpwnam("dovecot")
        benchlib._write_maildir(os.path.join(srv, "cur"),
                                sample_mail.sample_messages(N, 21, tricky=False), 21, owner)
        benchlib._chown_tree(os.path.join(dc.workdir, "home", USER), owner)
        for _ in range(2):   # Dovecot's index and cache, warm
            local_bench.raw_imap.listing(dc.host, dc.imaps_port, dc.ca_file, USER, PASSWORD,
                                         FOLDER)
        print("setup: %d messages in %s in %.0f s" % (N, FOLDER, time.monotonic() - t0))
        expunged = 0
        for kind, cap in KINDS:
            dc.capability = cap
            dc.restart()
            results[kind], n = bench_kind(workdir, dc, kind, expunged)
            expunged += 1
            print("%-9s first listing %.1f s; no-change re-check %.1f ms, %d bytes; "
                  "after 10 flag changes and %d expunges: %d bytes, %.1f ms" % (
                      kind, results[kind]["first_listing_s"], results[kind]["nochange_s"] * 1000,
                      results[kind]["nochange_bytes"], n, results[kind]["change_bytes"],
                      results[kind]["change_s"] * 1000), flush=True)
        dc.capability = None
        dc.restart()
        first, nochange = mbsync(workdir, dc)
        results["mbsync"] = {"first_s": first, "nochange_s": nochange}
    finally:
        dc.stop()
    print()
    print("%-62s %12s" % ("measurement (medians of %d runs)" % RUNS, ""))
    for kind, _ in KINDS:
        r = results[kind]
        print("%-62s %9.1f ms" % ("mailfs no-change re-check, %s" % kind, r["nochange_s"] * 1000))
    print("%-62s %9.1f ms" % ("mbsync no-change run (connect, login, sync; FSync no)",
                              results["mbsync"]["nochange_s"] * 1000))
    print("%-62s %9.1f s" % ("mbsync first run (all %d bodies)" % N, results["mbsync"]["first_s"]))
    for kind, _ in KINDS:
        r = results[kind]
        print("%-62s %9.1f KB" % ("bytes of a no-change re-check, %s" % kind,
                                  r["nochange_bytes"] / 1000))
    for kind, _ in KINDS:
        r = results[kind]
        print("%-62s %9.1f KB" % ("bytes of a re-check after 10 flags + 5 expunges, %s" % kind,
                                  r["change_bytes"] / 1000))
    x = results["qresync"]["nochange_s"] / results["mbsync"]["nochange_s"]
    print("ratio mailfs QRESYNC no-change re-check / mbsync no-change run: %.2fx "
          "(target <= 1.0x: %s)" % (x, "meets" if x <= 1.0 else "MISSES"))
    b = results["qresync"]["change_bytes"]
    print("QRESYNC re-check after the changes: %.1f KB (target < 100 KB: %s)" % (
        b / 1000, "meets" if b < 100000 else "MISSES"))
    if not os.environ.get("BENCH_KEEP") and not os.environ.get("BENCH_DIR"):
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

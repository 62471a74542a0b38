#!/usr/bin/python3
"""The write benchmark (run by bench/write-bench.sh): time per message of

    (a) mailfs:  mv MOUNT/MvA/* MOUNT/MvB/      (one shell command, N messages)
    (b) mailfs:  cp SRC/*.eml MOUNT/CpDst/      (N local files)
    (c) raw:     one UID MOVE 1:N from a raw IMAP client (Python ssl socket)
    (d) raw:     N pipelined APPENDs with LITERAL+ from the same client

in one run, on a private Dovecot on loopback (tests/dovecot.py) holding
sample messages (tests/sample_mail.py).  The folders are filled with
pipelined APPENDs (the raw client of (d)).  Each round uses fresh folders
and a fresh mailfs cache; the figures are the medians over the rounds.  The
raw figures time the command alone on a logged-in connection (as mailfs's
are timed on a mounted file system); the whole raw session is shown too.

Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (1000),
BENCH_ROUNDS (3), BENCH_SEED (1), BENCH_DIR (default: a new
/tmp/mailfs-wbench.*), BENCH_KEEP=1 (keep BENCH_DIR), BENCH_OPTIONS (extra
mailfs -o options, e.g. connections=8), BENCH_FSYNC (Dovecot's mail_fsync:
default Dovecot's "optimized", an fsync per APPEND; "never" takes the disk
out of the comparison), BENCH_JSON=FILE (the raw figures).
"""

import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import dovecot  # noqa: E402  (tests/dovecot.py)
import sample_mail  # noqa: E402  (tests/sample_mail.py)

USER = "alice"
PASSWORD = "secret"
_TAGGED = re.compile(rb"^(\S+) (OK|NO|BAD)\b(.*)$")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


# --- the raw client --------------------------------------------------------------

class RawClient:
    """A minimal IMAP client on an ssl socket: pipelined commands, tagged
    replies matched by tag, literals read by length."""

    def __init__(self, dc):
        ctx = ssl.create_default_context(cafile=dc.ca_file)
        raw = socket.create_connection((dc.host, dc.imaps_port), timeout=300)
        self.sock = ctx.wrap_socket(raw, server_hostname=dc.host)
        self.buf = bytearray()
        self.n = 0
        self.line()                                  # greeting
        self.command(b"LOGIN %s %s" % (USER.encode(), PASSWORD.encode()))

    def _fill(self):
        data = self.sock.recv(1 << 18)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    def line(self):
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                out = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                return out
            start = max(0, len(self.buf) - 1)
            self._fill()

    def response(self):
        """One whole response line (literals skipped)."""
        line = self.line()
        m = _LITERAL.search(line)
        while m:
            while len(self.buf) < int(m.group(1)):
                self._fill()
            del self.buf[:int(m.group(1))]
            line = self.line()
            m = _LITERAL.search(line)
        return line

    def tag(self):
        self.n += 1
        return b"b%d" % self.n

    def wait(self, tags):
        """Read until every tag in tags is answered; returns {tag: line}."""
        want = set(tags)
        got = {}
        while want:
            line = self.response()
            m = _TAGGED.match(line)
            if m and m.group(1) in want:
                want.discard(m.group(1))
                got[m.group(1)] = line
        bad = [line for line in got.values() if not _TAGGED.match(line).group(2) == b"OK"]
        if bad:
            raise RuntimeError("refused: %r" % bad[:3])
        return got

    def command(self, text):
        t = self.tag()
        self.sock.sendall(t + b" " + text + b"\r\n")
        return self.wait([t])[t]

    def append_pipelined(self, folder, messages):
        """APPEND every message with LITERAL+, without waiting in between."""
        box = dovecot.imap_quote(dovecot.utf7_encode(folder)).encode()
        tags = []
        chunks = []
        for raw in messages:
            t = self.tag()
            tags.append(t)
            chunks.append(b"%s APPEND %s {%d+}\r\n" % (t, box, len(raw)))
            chunks.append(raw)
            chunks.append(b"\r\n")
        # One write, then the answers: they are small (some 60 bytes each),
        # so the socket buffers hold them while the data goes out (an SSL
        # socket must not be read and written from two threads at once).
        self.sock.sendall(b"".join(chunks))
        self.wait(tags)

    def close(self):
        try:
            self.command(b"LOGOUT")
        except (OSError, EOFError, RuntimeError):
            pass
        self.sock.close()


def count(dc, folder):
    c = dc.imap(USER)
    try:
        typ, data = c.status(dovecot.imap_quote(dovecot.utf7_encode(folder)), "(MESSAGES)")
        return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    finally:
        c.logout()


# --- mailfs ----------------------------------------------------------------------

def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Mount:
    def __init__(self, binary, dc, workdir, n, extra):
        self.mnt = os.path.join(workdir, "mnt%d" % n)
        self.cache = os.path.join(workdir, "cache%d" % n)
        self.log = os.path.join(workdir, "mailfs%d.log" % n)
        os.makedirs(self.mnt)
        opts = "cafile=%s,cache_dir=%s,logfile=%s" % (dc.ca_file, self.cache, self.log)
        if extra:
            opts += "," + extra
        env = dict(os.environ, MAILFS_PASSWORD=PASSWORD)
        self.proc = subprocess.Popen(
            [binary, "-f", "-o", opts, "imaps://%s@%s:%d/" % (USER, dc.host, dc.imaps_port),
             self.mnt], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.log + ".stderr", "wb"), env=env)
        deadline = time.monotonic() + 30
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError("mailfs did not mount; see %s" % self.log)
            time.sleep(0.02)

    def unmount(self):
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True)
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.proc.returncode:
            print("warning: mailfs exited with %s (log %s)" % (self.proc.returncode, self.log),
                  file=sys.stderr)


def timed_shell(cmd):
    t0 = time.monotonic()
    r = subprocess.run(cmd, shell=True, capture_output=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd, r.stderr.decode(errors="replace")[-2000:]))
    return dt


# --- one round ---------------------------------------------------------------------

def one_round(dc, binary, workdir, messages, srcdir, rnd, extra):
    n = len(messages)
    res = {}
    for f in ("MvA", "MvB", "CpDst", "RawA", "RawB", "RawAppend"):
        dc.create_folder(USER, "%s%d" % (f, rnd))
    fill = RawClient(dc)
    t0 = time.monotonic()
    fill.append_pipelined("MvA%d" % rnd, messages)
    res["fill"] = time.monotonic() - t0
    fill.append_pipelined("RawA%d" % rnd, messages)
    fill.close()

    m = Mount(binary, dc, workdir, rnd, extra)
    try:
        a, b, c = (os.path.join(m.mnt, "%s%d" % (f, rnd)) for f in ("MvA", "MvB", "CpDst"))
        # List first: the mv is timed on a mounted, listed folder.
        listed = len(os.listdir(a))
        if listed != n:
            raise RuntimeError("the mount lists %d messages in %s, want %d" % (listed, a, n))
        os.listdir(b)
        os.listdir(c)
        res["mailfs_mv"] = timed_shell("mv %s/* %s/" % (a, b))
        res["mailfs_cp"] = timed_shell("cp %s/*.eml %s/" % (srcdir, c))
    finally:
        m.unmount()
    got = (count(dc, "MvA%d" % rnd), count(dc, "MvB%d" % rnd), count(dc, "CpDst%d" % rnd))
    if got != (0, n, n):
        raise RuntimeError("after mailfs: MvA/MvB/CpDst hold %s, want (0, %d, %d)" % (got, n, n))

    t0 = time.monotonic()
    raw = RawClient(dc)
    raw.command(b"SELECT \"RawA%d\"" % rnd)
    t1 = time.monotonic()
    raw.command(b"UID MOVE 1:%d \"RawB%d\"" % (n, rnd))
    t2 = time.monotonic()
    raw.close()
    res["raw_move"], res["raw_move_session"] = t2 - t1, time.monotonic() - t0
    t0 = time.monotonic()
    raw = RawClient(dc)
    t1 = time.monotonic()
    raw.append_pipelined("RawAppend%d" % rnd, messages)
    t2 = time.monotonic()
    raw.close()
    res["raw_append"], res["raw_append_session"] = t2 - t1, time.monotonic() - t0
    got = (count(dc, "RawA%d" % rnd), count(dc, "RawB%d" % rnd), count(dc, "RawAppend%d" % rnd))
    if got != (0, n, n):
        raise RuntimeError("after the raw client: %s, want (0, %d, %d)" % (got, n, n))
    return res


def main():
    binary = os.path.abspath(os.environ.get("MAILFS_BIN") or os.path.join(ROOT, "build",
                                                                           "mailfs"))
    n = int(os.environ.get("BENCH_MESSAGES", "1000"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    seed = os.environ.get("BENCH_SEED", "1")
    extra = os.environ.get("BENCH_OPTIONS", "")
    if not os.access(binary, os.X_OK):
        sys.exit("write-bench: no mailfs at %s (run make, or set MAILFS_BIN)" % binary)
    workdir = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mailfs-wbench.", dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)
    messages = sample_mail.sample_messages(n, "wbench-%s" % seed, tricky=False)
    srcdir = os.path.join(workdir, "src")
    os.makedirs(srcdir, exist_ok=True)
    for i, raw in enumerate(messages):
        with open(os.path.join(srcdir, "m%05d.eml" % i), "wb") as f:
            f.write(raw)
    total = sum(len(r) for r in messages)
    fsync = os.environ.get("BENCH_FSYNC", "")
    dc = dovecot.Dovecot(os.path.join(workdir, "dovecot"), users={USER: PASSWORD},
                         extra_conf=("mail_fsync = %s\n" % fsync) if fsync else "")
    results = []
    try:
        dc.start()
        for rnd in range(1, rounds + 1):
            r = one_round(dc, binary, workdir, messages, srcdir, rnd, extra)
            results.append(r)
            print("round %d: %s" % (rnd, ", ".join("%s %.3f s" % kv for kv in sorted(r.items()))),
                  file=sys.stderr)
    finally:
        dc.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)

    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    per = lambda k: med[k] / n * 1000.0   # ms per message
    print("write-bench: %d messages (%.1f MiB), %d rounds, medians; Dovecot mail_fsync=%s; "
          "mailfs %s%s" % (n, total / 1048576.0, rounds, fsync or "optimized (default)", binary,
                           (" -o " + extra) if extra else ""))
    print("%-52s %10s %12s" % ("", "total s", "ms/message"))
    rows = [
        ("mailfs  mv MOUNT/A/* MOUNT/B/", "mailfs_mv"),
        ("raw     UID MOVE 1:%d (command alone)" % n, "raw_move"),
        ("raw     UID MOVE, whole session (TLS, LOGIN, SELECT)", "raw_move_session"),
        ("mailfs  cp SRC/*.eml MOUNT/C/", "mailfs_cp"),
        ("raw     %d pipelined APPENDs, LITERAL+ (alone)" % n, "raw_append"),
        ("raw     APPENDs, whole session", "raw_append_session"),
    ]
    for label, k in rows:
        print("%-52s %10.3f %12.3f" % (label, med[k], per(k)))
    print("ratio mv: mailfs / raw UID MOVE   = %.0fx" % (med["mailfs_mv"] / med["raw_move"]))
    print("ratio cp: mailfs / raw APPENDs    = %.1fx" % (med["mailfs_cp"] / med["raw_append"]))
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w") as f:
            json.dump({"messages": n, "rounds": results, "median": med}, f, indent=1)


if __name__ == "__main__":
    main()

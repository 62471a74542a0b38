"""mailfs prefetch PATH...: every uncached body under PATH into the running
mount's cache, checked with the real binary against a real Dovecot, and
the server side with imaplib.

prefetch is a client of the mount: it walks PATH, asks each folder's
user.mailfs.cache and each message's user.mailfs.cached, and opens the
uncached ones in UID order. A prefetch is stopped half way by SIGINT
while a gate in a TCP proxy holds the server's stream of bodies (so that
the signal lands in the middle of the run, whatever the speed), never
after a sleep.
"""

import collections
import fcntl
import random
import hashlib
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time

import sample_mail
from harness import (SANITIZER_MARKS, append_samples, child_env, files_in, getfattr,
                     mailfs_bin, new_folder, run, sanitizer_reports, server_messages,
                     server_url, wait_for)
from tcp_proxy import FaultProxy

TIMEOUT = 60
BODY_LINE = re.compile(rb"^\* \d+ FETCH .*BODY\[\]")
BODY_FETCH = re.compile(r"\bC: \S+ UID FETCH ([0-9,:]+) \(.*BODY(\.PEEK)?\[\]")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def prefetch(tmp_path, *paths, timeout=120):
    """Runs mailfs prefetch PATH... without a terminal; CompletedProcess."""
    return run([mailfs_bin(), "prefetch"] + [str(p) for p in paths], check=False,
               timeout=timeout, env=child_env(tmp_path, password=None),
               input=b"")


def out_lines(r):
    return [line for line in r.stdout.decode("utf-8", "replace").split("\n") if line]


def err_lines(r):
    return [line for line in r.stderr.decode("utf-8", "replace").split("\n") if line]


def no_sanitizer_report(tmp_path):
    text = sanitizer_reports(tmp_path)
    for mark in SANITIZER_MARKS:
        assert mark not in text, "mailfs prefetch: sanitizer report\n" + text


def cached_names(folder_path):
    """{name: "1" or "0"}: each file's user.mailfs.cached."""
    return {n: getfattr(os.path.join(folder_path, n), "user.mailfs.cached")
            for n in files_in(folder_path)}


def seen_flags(dc, folder):
    return {r["uid"]: "\\Seen" in r["flags"] for r in server_messages(dc, folder)}


class Gate:
    """A proxy's rewrite hook that holds the server's stream back at the
    n-th body (a `* N FETCH (... BODY[] {..}` line) until opened: whatever
    the mount fetches ahead, the reader waits there."""

    def __init__(self, n):
        self.n = n
        self.count = 0
        self.reached = threading.Event()
        self.gate = threading.Event()

    def __call__(self, line):
        if BODY_LINE.match(line):
            self.count += 1
            if self.count == self.n:
                self.reached.set()
                self.gate.wait(TIMEOUT)
        return line


def test_interrupted_prefetch_resumes_and_the_folder_reads_offline(mount, tmp_path):
    """SIGINT half way: a clean stop (exit 130, a summary saying so); the
    next run fetches only what is missing; a third fetches nothing; no
    \\Seen set; then, with the server stopped, every body of the folder
    reads from the cache, byte-identical to imaplib's BODY[]."""
    dc = mount.private_server()
    # About 30 KB each: more than a small read-ahead window holds.
    pad = b"".join(b"padding %04d %s\r\n" % (k, b"x" * 60) for k in range(400))
    raws = [raw + pad for raw in sample_mail.sample_messages(40, 61, tricky=False)]
    random.Random(61).shuffle(raws)  # name order is not UID order
    dc.create_folder("alice", "Pre")
    append_samples(dc, "Pre", raws, 61)
    want = collections.Counter(sha(b) for b in dc.fetch_bodies("alice", "Pre").values())
    seen_before = seen_flags(dc, "Pre")
    gate = Gate(5)
    px = FaultProxy(("127.0.0.1", dc.imap_port), None, rewrite=gate).start()
    try:
        # A mount that streams read-ahead keeps a window ahead of the
        # reader: a small one, so that a stop half way leaves half.
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  options=["tls=none", "timeout=%d" % TIMEOUT, "refresh=3600"],
                  env={"MAILFS_STREAM_WINDOW": "65536"})
        folder = m.p("Pre")
        assert len(files_in(folder)) == 40
        assert set(cached_names(folder).values()) == {"0"}

        proc = subprocess.Popen([mailfs_bin(), "prefetch", folder], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_env(tmp_path, password=None))
        try:
            wait_for(gate.reached.is_set, TIMEOUT, what="the 5th body to reach the proxy")
            proc.send_signal(signal.SIGINT)
        finally:
            gate.gate.set()
        out, err = proc.communicate(timeout=TIMEOUT)
        first = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert first.returncode == 130, "SIGINT: exit %s, want 130\nstdout: %r\nstderr: %r" % (
            first.returncode, out, err)
        assert not err_lines(first), "an interrupted prefetch is no error: %r" % err
        assert len(out_lines(first)) == 1 and "interrupted" in out_lines(first)[0], out
        # What the mount fetched ahead of the reader lands before its
        # stream ends (streams_active: where the mount has streams).
        s1 = wait_for(lambda: (lambda s: s.get("streams_active", 0) == 0 and s)(m.stats()),
                      TIMEOUT, what="the read-ahead to end after the reader stopped")
        part = cached_names(folder)
        done = sorted(n for n, v in part.items() if v == "1")
        assert 0 < len(done) < 40, "SIGINT half way left %d of 40 cached" % len(done)
        assert s1["bodies_fetched"] == len(done), (s1, done)

        second = prefetch(tmp_path, folder)
        assert second.returncode == 0, second
        assert not err_lines(second), second.stderr
        line = out_lines(second)
        assert len(line) == 1 and "fetched %d messages" % (40 - len(done)) in line[0] and \
            "%d already cached" % len(done) in line[0], line
        s2 = m.stats()
        assert s2["bodies_fetched"] == 40, \
            "the second run fetched %d bodies, the missing ones are %d" % (
                s2["bodies_fetched"] - s1["bodies_fetched"], 40 - len(done))
        assert set(cached_names(folder).values()) == {"1"}

        third = prefetch(tmp_path, folder)
        assert third.returncode == 0, third
        assert out_lines(third) == ["%s: nothing to fetch; 40 messages already cached" % folder]
        s3 = m.stats()
        assert s3["bodies_fetched"] == 40 and s3["cache_misses"] == s2["cache_misses"], \
            "a run on a complete folder fetched bodies: %s -> %s" % (s2, s3)
        assert seen_flags(dc, "Pre") == seen_before, "prefetch set \\Seen on the server"

        dc.stop()
        px.stop()
        dest = tmp_path / "copy"
        run(["cp", "-r", folder, str(dest)], timeout=TIMEOUT)
        got = collections.Counter(sha((dest / n).read_bytes()) for n in os.listdir(dest))
        assert got == want, "with the server stopped, the folder read differs from BODY[]"
        s4 = m.stats()
        assert s4["bodies_fetched"] == 40 and s4["cache_misses"] == s3["cache_misses"], \
            "a read with the server stopped missed the cache: %s -> %s" % (s3, s4)
    finally:
        gate.gate.set()
        px.stop()
    no_sanitizer_report(tmp_path)


def test_refused_when_the_folder_does_not_fit(mount, session_dovecot, tmp_path):
    raws = sample_mail.sample_messages(30, 62, tricky=False)
    name = new_folder(session_dovecot, "PfBig", raws)
    total = sum(r["size"] for r in server_messages(session_dovecot, name))
    cap_k = total // 2 // 1024
    m = mount(options=["cache_size=%dK" % cap_k])
    r = prefetch(tmp_path, m.p(name))
    assert r.returncode == 1, r
    assert not r.stdout, r.stdout
    lines = err_lines(r)
    assert len(lines) == 1 and lines[0].startswith("mailfs: prefetch: "), lines
    assert "does not fit" in lines[0] and "cache_size %d.0 KiB" % cap_k in lines[0], lines
    assert m.stats()["bodies_fetched"] == 0, "a refused prefetch fetched bodies"
    # What does fit: the same folder on a mount with room for it.
    m2 = mount(options=["cache_size=%dK" % (total // 1024 + 64)])
    assert prefetch(tmp_path, m2.p(name)).returncode == 0
    assert m2.stats()["bodies_fetched"] == 30
    no_sanitizer_report(tmp_path)


def test_paths_not_on_a_mailfs_mount(mount, tmp_path, account):
    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "a.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    m = mount()
    for args, why in (([str(outside)], "is not on a mailfs mount"),
                      ([str(outside / "a.eml")], "is not on a mailfs mount"),
                      ([m.p("INBOX"), str(outside)], "is not on a mailfs mount"),
                      ([str(tmp_path / "missing")], "No such file"),
                      ([], "no PATH"),
                      (["-q", m.p("INBOX")], "unknown option")):
        r = prefetch(tmp_path, *args)
        assert r.returncode == 2, (args, r)
        lines = err_lines(r)
        assert len(lines) == 1 and lines[0].startswith("mailfs: prefetch: ") and \
            why in lines[0], (args, lines)
        assert not r.stdout, (args, r.stdout)
    assert m.stats()["bodies_fetched"] == 0, "a refused command fetched bodies"
    no_sanitizer_report(tmp_path)


def test_without_a_terminal_one_summary_line(mount, session_dovecot, tmp_path):
    """Output to a pipe: one line on stdout, nothing on stderr. The whole
    mount as PATH: every folder, and the names given twice count once."""
    raws = sample_mail.sample_messages(12, 63, tricky=False)
    name = new_folder(session_dovecot, "PfPipe", raws)
    m = mount()
    r = prefetch(tmp_path, m.p(name), m.p(name) + "/", m.p(name, files_in(m.p(name))[0]))
    assert r.returncode == 0, r
    assert r.stderr == b"", r.stderr
    assert re.fullmatch(r"3 paths: fetched 12 messages \(\S+ \S+\) in [0-9.]+ s, \S+ \S+/s; "
                        r"0 already cached; 0 failed\n", r.stdout.decode()), r.stdout
    whole = prefetch(tmp_path, m.path)
    assert whole.returncode == 0 and whole.stderr == b"", whole
    assert len(out_lines(whole)) == 1, whole.stdout
    for folder in (name, "Archive/2023", "Lists/debian"):
        assert set(cached_names(m.p(folder)).values()) == {"1"}, folder
    no_sanitizer_report(tmp_path)


def read_pty(master, proc, timeout):
    """All a child wrote to its terminal, until it exits (bounded)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: the child's side closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_progress_bar_on_a_terminal(mount, session_dovecot, tmp_path):
    """On a terminal: a bar redrawn in place on one line (carriage
    returns, no newline), counting messages and bytes, then the summary."""
    raws = sample_mail.sample_messages(20, 64, tricky=False)
    name = new_folder(session_dovecot, "PfTty", raws)
    m = mount()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen([mailfs_bin(), "prefetch", m.p(name)], stdin=slave,
                                stdout=slave, stderr=slave, close_fds=True,
                                env=child_env(tmp_path, password=None))
        os.close(slave)
        slave = None
        out = read_pty(master, proc, TIMEOUT)
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    text = out.decode("utf-8", "replace")
    assert rc == 0, text
    bars = re.findall(r"\r(\S+): (\d+)/20 msgs  [0-9.]+/[0-9.]+ \S+  \S+ \S+/s  \S+ left\x1b\[K",
                      text)
    assert bars, "no progress bar on the terminal: %r" % text
    assert bars[0][1] == "0" and bars[-1][1] == "20", bars
    assert all(b[0] == name for b in bars), bars
    assert text.count("\n") == 1, "the bar must be redrawn in place: %r" % text
    assert re.search(r"\r\x1b\[K%s: fetched 20 messages .* 0 failed\r\n$" % re.escape(m.p(name)),
                     text), text
    drawn = re.findall(r"\r([^\r\n\x1b]*)\x1b\[K", text)
    assert all(len(bar) < 100 for bar in drawn), "a bar wider than the terminal: %r" % drawn
    no_sanitizer_report(tmp_path)


def test_cache_xattrs(mount, account, tmp_path):
    """What prefetch reads: a message's user.mailfs.cached, a folder's
    user.mailfs.cache, the root's cache_size and cache_used; none of them
    listed (cp -a and rsync -X must not copy a cache's state)."""
    m = mount(options=["cache_size=300M"])
    folder = m.p("Archive")
    names = files_in(folder)
    before = getfattr(folder, "user.mailfs.cache")
    sizes = {n: os.stat(os.path.join(folder, n)).st_size for n in names}
    assert before == ('{"messages": %d, "bytes": %d, "cached": 0, "cached_bytes": 0}' %
                      (len(names), sum(sizes.values()))), before
    stats = m.stats()
    assert stats["cache_size"] == 300 * 1024 * 1024 and stats["cache_used"] == 0, stats
    path = os.path.join(folder, names[0])
    assert getfattr(path, "user.mailfs.cached") == "0"
    data = run(["cat", path]).stdout
    assert getfattr(path, "user.mailfs.cached") == "1"
    after = getfattr(folder, "user.mailfs.cache")
    assert '"cached": 1, "cached_bytes": %d}' % len(data) in after, after
    assert m.stats()["cache_used"] >= len(data)
    listed = run(["getfattr", "-d", "-m", "-", "--absolute-names", path, folder, m.path])
    assert b"user.mailfs.cache" not in listed.stdout, listed.stdout


def test_pop3_inbox_prefetched_reads_offline(mount, tmp_path):
    """A POP3 mount: its UIDLs are no numbers, so the listing's order;
    every body cached once, then read with the server stopped,
    byte-identical to poplib's RETR."""
    from pop_helpers import server_state
    dc = mount.private_server()
    append_samples(dc, "INBOX", sample_mail.sample_messages(15, 65, tricky=False), 65)
    want = collections.Counter(sha(b) for b in server_state(dc)["bodies"])
    m = mount(url=server_url(dc, "pop3s"), server=dc, options=["refresh=3600"])
    r = prefetch(tmp_path, m.p("INBOX"))
    assert r.returncode == 0 and r.stderr == b"", r
    assert "fetched 15 messages" in r.stdout.decode(), r.stdout
    assert m.stats()["bodies_fetched"] == 15
    again = prefetch(tmp_path, m.p("INBOX"))
    assert out_lines(again) == ["%s: nothing to fetch; 15 messages already cached" % m.p("INBOX")]
    dc.stop()
    got = collections.Counter(sha(open(m.p("INBOX", n), "rb").read())
                              for n in files_in(m.p("INBOX")))
    assert got == want, "with the server stopped, INBOX read differs from RETR"
    assert m.stats()["bodies_fetched"] == 15
    no_sanitizer_report(tmp_path)


def test_messages_are_opened_in_uid_order(mount, session_dovecot, tmp_path):
    """In UID order, not in name order (here the names, dates first, are
    shuffled against the UIDs). With -o mark_seen the mount reads nothing
    ahead, so each body FETCH it sends is one open of prefetch's."""
    raws = sample_mail.sample_messages(25, 66, tricky=False)
    random.Random(66).shuffle(raws)
    name = new_folder(session_dovecot, "PfOrder", raws)
    uids = [r["uid"] for r in server_messages(session_dovecot, name)]
    m = mount(options=["mark_seen", "debug"])
    names = files_in(m.p(name))
    by_name = [int(getfattr(m.p(name, n), "user.mail.uid")) for n in names]
    assert by_name != sorted(by_name), "name order happens to be UID order"
    r = prefetch(tmp_path, m.p(name))
    assert r.returncode == 0, r
    sent = [mt.group(1) for mt in map(BODY_FETCH.search, m.log_text().split("\n")) if mt]
    assert [int(u) for u in sent] == sorted(uids), "body FETCHes: %s" % sent
    no_sanitizer_report(tmp_path)


def test_what_is_cached_of_path_is_not_what_makes_room(mount, session_dovecot, tmp_path):
    """A cache too small for both: a folder read in part long ago, another
    read since. Prefetching the first makes room by evicting the other
    (least recently read), never the first's own bodies: they are opened
    first, so that every body of the folder is cached at the end."""
    a = new_folder(session_dovecot, "PfKeep", sample_mail.sample_messages(20, 67, tricky=False))
    b = new_folder(session_dovecot, "PfOther", sample_mail.sample_messages(20, 68, tricky=False))
    size_a = sum(r["size"] for r in server_messages(session_dovecot, a))
    size_b = sum(r["size"] for r in server_messages(session_dovecot, b))
    m = mount(options=["cache_size=%dK" % ((size_a + size_b // 2) // 1024)])
    names = files_in(m.p(a))
    early = names[::4]  # out of order: nothing read ahead
    for n in early:
        run(["cat", m.p(a, n)])
    run("cat %s/* >/dev/null" % m.p(b))
    assert sorted(n for n, v in cached_names(m.p(a)).items() if v == "1") == sorted(early)
    r = prefetch(tmp_path, m.p(a))
    assert r.returncode == 0, r
    assert "%d already cached" % len(early) in r.stdout.decode(), r.stdout
    lost = sorted(n for n, v in cached_names(m.p(a)).items() if v != "1")
    assert not lost, "not cached after prefetch (evicted to make room): %s" % lost
    assert "0" in cached_names(m.p(b)).values(), "the other folder made no room"
    no_sanitizer_report(tmp_path)


def test_the_bar_moves_while_a_message_is_fetched(mount, tmp_path):
    """A message that takes long (here: its body held back by the proxy)
    does not freeze the bar: it is redrawn meanwhile (time, rate, time
    left), on the same line."""
    dc = mount.private_server()
    dc.create_folder("alice", "Slow")
    append_samples(dc, "Slow", sample_mail.sample_messages(6, 69, tricky=False), 69)
    gate = Gate(1)
    px = FaultProxy(("127.0.0.1", dc.imap_port), None, rewrite=gate).start()
    master = slave = None
    try:
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  options=["tls=none", "timeout=%d" % TIMEOUT])
        assert len(files_in(m.p("Slow"))) == 6
        master, slave = pty.openpty()
        proc = subprocess.Popen([mailfs_bin(), "prefetch", m.p("Slow")], stdin=slave,
                                stdout=slave, stderr=slave, close_fds=True,
                                env=child_env(tmp_path, password=None))
        os.close(slave)
        slave = None
        seen = [b""]

        def drawn_twice_while_held():
            while select.select([master], [], [], 0)[0]:
                seen[0] += os.read(master, 65536)
            return gate.reached.is_set() and seen[0].count(b"Slow: 0/6 msgs") >= 2

        try:
            wait_for(drawn_twice_while_held, TIMEOUT, interval=0.05,
                     what="the bar redrawn while the first body is held back")
        finally:
            gate.gate.set()
        seen[0] += read_pty(master, proc, TIMEOUT)
        assert proc.wait(timeout=TIMEOUT) == 0, seen[0]
        assert seen[0].count(b"\n") == 1, seen[0]
    finally:
        gate.gate.set()
        px.stop()
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
    no_sanitizer_report(tmp_path)

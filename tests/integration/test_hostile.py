"""A hostile or failing server cannot take the mount down.

Against tests/hostile_imap.py (a small IMAP server that misbehaves on cue
when asked for a body), for each misbehaviour: reading the message fails
with EIO within the timeout plus a few seconds; mailfs's peak RSS
(VmHWM in /proc/PID/status) stays under 64 MiB; the cache's disk use
stays within cache_size; a cached message is still served meanwhile; and
once the server behaves again the same read works, without a remount.
The same for POP3 (tests/hostile_pop3.py) where it applies: a line that
never ends, a trickle, an answer without end.

And a damaged cache.sqlite: the mount warns once, moves it aside (kept),
and works with a new one.
"""

import errno
import os
import re
import threading
import time

import pytest

import sample_mail
from harness import (PASSWORD, call_with_timeout, checked_mounts, files_in, listing,
                     mailfs_bin, name_of, read_errno, run, wait_for)
from hostile_imap import MODES, HostileImap
from hostile_pop3 import POP3_MODES, HostilePop3

TIMEOUT = 5                       # mailfs -o timeout
FEW = 5                           # the seconds an EIO may come after the timeout
CACHE_SIZE = 16 * 1024 * 1024     # mailfs -o cache_size
RSS_LIMIT = 64 * 1024 * 1024
LARGE = 1536 * 1024               # a message fetched in ranges (over 1 MiB)


def messages():
    small = sample_mail.sample_messages(4, 61, tricky=False)
    large = sample_mail.build(
        [("From", "Big <big@example.org>"), ("To", "alice@example.org"),
         ("Subject", "A large one"), ("Date", "Tue, 02 Jan 2024 09:00:00 +0000"),
         ("Message-ID", "<large@hostile.mailfs.test>")],
        "".join("line %06d of a long message, long enough to need ranges\n" % i
                for i in range(LARGE // 58)))
    assert len(large) > 1024 * 1024
    return small + [large]


def asan_build():
    return "build-asan" in mailfs_bin()


def peak_rss(pid):
    """VmHWM (the peak resident set) of a process, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/%d/status" % pid)


def disk_use(path):
    total = 0
    for root, _, files in os.walk(path):
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_blocks * 512
            except OSError:
                pass
    return total


class DiskWatch:
    """The most disk a directory took while the watch ran (sampled)."""

    def __init__(self, path):
        self.path = path
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, disk_use(self.path))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, disk_use(self.path))
        return False


@pytest.fixture
def factory(tmp_path):
    """A MountFactory for servers of the test's own; a crash, a non-zero
    exit or a sanitizer report of a mount fails the test."""
    with checked_mounts(tmp_path, None) as f:
        yield f


def check_survived(m, victim, expected, cached, cached_raw, what):
    """The affected read fails with EIO in time, memory and disk stay
    bounded, the cached message is served meanwhile."""
    # In a thread: a read the daemon never answers cannot be killed (the
    # kernel waits for the answer); the test fails without waiting, and the
    # server's end then lets the read finish.
    bound = TIMEOUT + 30
    with DiskWatch(m.cache_dir) as disk:
        done, result, secs = call_with_timeout(
            lambda: read_errno(m.p("INBOX", victim), timeout=bound + 60), bound)
    assert done, "the read hung (over %d s)\n%s" % (bound, m.log_tail(15))
    err, data, secs = result
    info = "%s: errno %s after %.1f s\n%s" % (what, err, secs, m.log_tail(15))
    assert err == errno.EIO, "want EIO\n" + info
    assert secs < TIMEOUT + FEW, "the EIO took too long (timeout=%d)\n%s" % (TIMEOUT, info)
    assert disk.peak <= CACHE_SIZE, "the cache took %d bytes on disk (cache_size %d)\n%s" % (
        disk.peak, CACHE_SIZE, info)
    t0 = time.monotonic()
    got = run(["cat", m.p("INBOX", cached)], timeout=30).stdout
    assert got == cached_raw, "a cached message changed while the server misbehaved"
    assert time.monotonic() - t0 < 3, "a cached message took %.1f s" % (time.monotonic() - t0)
    if not asan_build():  # ASan's shadow memory is not mailfs's
        rss = peak_rss(m.proc.pid)
        assert rss < RSS_LIMIT, "mailfs's peak RSS reached %.1f MiB\n%s" % (rss / 2**20, info)
    return secs


def check_recovered(m, victim, expected):
    def read_ok():
        done, result, _ = call_with_timeout(
            lambda: read_errno(m.p("INBOX", victim), timeout=TIMEOUT + 30), 2 * TIMEOUT)
        assert done, "a read hung once the server behaved again"
        return result[0] == 0 and result[1] == expected
    wait_for(read_ok, 3 * TIMEOUT, interval=0.5,
             what="the read to work once the server behaves:\n" + m.log_tail(10))


# --- IMAP ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_hostile_imap(factory, mode):
    msgs = messages()
    with HostileImap(msgs, password=PASSWORD) as server:
        m = factory(url="imap://alice@%s:%d/" % (server.host, server.port), server=server,
                    cafile=False, options=["tls=none", "ro", "timeout=%d" % TIMEOUT,
                                           "cache_size=%d" % CACHE_SIZE, "refresh=3600"])
        names = {name_of(raw): raw for raw in msgs}
        assert files_in(m.p("INBOX")) == sorted(names), "the listing of the hostile server"
        cached = name_of(msgs[0])
        assert run(["cat", m.p("INBOX", cached)]).stdout == msgs[0]
        victim_raw = msgs[-1] if mode == "endless_ranges" else msgs[1]
        victim = name_of(victim_raw)

        server.cue(mode)
        secs = check_survived(m, victim, victim_raw, cached, msgs[0], mode)
        assert server.misbehaved, "the server was never asked for the body"
        if mode == "big_literal":
            # The announcement alone is too big: no need to wait for bytes.
            assert secs < TIMEOUT, "a 2 GB literal for a small message took %.1f s" % secs

        server.behave()
        check_recovered(m, victim, victim_raw)


@pytest.mark.parametrize("mode", ("trickle", "keepalive"))
def test_hostile_imap_in_a_stream(factory, mode):
    """The third message read in order starts a stream, and its open waits
    for the stream's FETCH, which the server spreads out: EIO within the
    timeout, as for a fetch alone, not a second timeout spent asking for
    it again alone."""
    msgs = [raw for raw in messages() if len(raw) < 65536]
    with HostileImap(msgs, password=PASSWORD) as server:
        m = factory(url="imap://alice@%s:%d/" % (server.host, server.port), server=server,
                    cafile=False, options=["tls=none", "ro", "timeout=%d" % TIMEOUT,
                                           "cache_size=%d" % CACHE_SIZE, "refresh=3600"])
        by_name = {name_of(raw): raw for raw in msgs}
        names = files_in(m.p("INBOX"))
        assert names == sorted(by_name), "the listing of the hostile server"
        for n in names[:2]:
            assert run(["cat", m.p("INBOX", n)]).stdout == by_name[n]
        server.cue(mode)
        check_survived(m, names[2], by_name[names[2]], names[0], by_name[names[0]], mode)
        assert server.misbehaved, "the server was never asked for the body"
        assert m.stats()["streams_started"] == 1, "no stream: %s" % m.stats()


def test_log_escapes_server_text(factory):
    """Control characters the server sends (a folder name with ESC and CR)
    reach the log as \\xNN, never raw."""
    msgs = messages()[:2]
    evil = "Evil\x1b[31mRED\rforged: line"
    with HostileImap(msgs, password=PASSWORD, folders=[evil]) as server:
        m = factory(url="imap://alice@%s:%d/" % (server.host, server.port), server=server,
                    cafile=False, options=["tls=none", "ro", "timeout=%d" % TIMEOUT, "debug"])
        listing(m.path)
        m.unmount()
    with open(m.log, "rb") as f:
        log = f.read()
    assert b"Evil" in log, "the LIST answer is not in the debug log"
    assert b"\x1b" not in log and b"\rforged" not in log, "raw control characters in the log"
    assert b"\\x1b[31mRED\\x0dforged" in log, "the folder name is not escaped as expected"


# --- POP3 ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", POP3_MODES)
def test_hostile_pop3(factory, mode):
    msgs = messages()
    with HostilePop3(msgs, password=PASSWORD) as server:
        m = factory(url="pop3://alice@%s:%d/" % (server.host, server.port), server=server,
                    cafile=False, options=["tls=none", "timeout=%d" % TIMEOUT,
                                           "cache_size=%d" % CACHE_SIZE, "refresh=3600"])
        names = files_in(m.p("INBOX"))
        assert len(names) == len(msgs), names
        by_name = {n: raw for n in names for raw in msgs if name_of(raw) == n}
        cached = name_of(msgs[0])
        assert run(["cat", m.p("INBOX", cached)]).stdout == msgs[0]
        victim_raw = msgs[1]
        victim = name_of(victim_raw)
        assert victim in by_name

        server.cue(mode)
        check_survived(m, victim, victim_raw, cached, msgs[0], mode)
        server.behave()
        check_recovered(m, victim, victim_raw)


# --- a damaged cache ---------------------------------------------------------------------

def damage(path, how):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "header":
            f.write(b"this is no SQLite database any more" * 3)
        else:
            # Every page but the first (the schema): what quick_check finds.
            page = 4096
            assert size > 2 * page, "the cache is too small to damage its pages"
            f.seek(page)
            f.write(bytes((i * 7 + 13) % 251 for i in range(size - page)))


@pytest.mark.parametrize("how", ["header", "pages"])
def test_damaged_cache_is_moved_aside(mount, account, tmp_path, how):
    cache = str(tmp_path / "cache")
    m1 = mount(cache_dir=cache)
    names = listing(m1.p("INBOX"))
    first = run(["cat", m1.p("INBOX", names[0])]).stdout
    m1.unmount()
    db = os.path.join(cache, "cache.sqlite")
    assert not os.path.exists(db + "-wal") or os.path.getsize(db + "-wal") == 0
    damage(db, how)
    with open(db, "rb") as f:
        damaged = f.read()

    m2 = mount(cache_dir=cache)
    assert listing(m2.p("INBOX")) == names, "the new cache lists INBOX differently"
    assert run(["cat", m2.p("INBOX", names[0])]).stdout == first
    warnings = [line for line in m2.log_text().splitlines()
                if " warning: " in line and "damaged" in line]
    assert len(warnings) == 1, "want one warning about the damaged cache:\n%s" % m2.log_tail()
    aside = [n for n in os.listdir(cache) if re.match(r"cache\.sqlite\.damaged-\d{8}-\d{6}", n)]
    assert len(aside) == 1, os.listdir(cache)
    assert aside[0] in warnings[0], "the warning does not name %s: %s" % (aside[0], warnings[0])
    with open(os.path.join(cache, aside[0]), "rb") as f:
        assert f.read() == damaged, "the damaged cache was not kept as it was"
    m2.unmount()
    m3 = mount(cache_dir=cache)  # the new cache is a good one: no second warning
    assert listing(m3.p("INBOX")) == names
    assert not [line for line in m3.log_text().splitlines() if " warning: " in line], \
        m3.log_tail()

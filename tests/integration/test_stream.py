"""Streamed read-ahead (issue 10): a reader going through a folder in order
(tar, rsync -a, cp -r, grep -r, two tars at once) gets its bodies from
pipelined UID FETCHes (POP3: RETRs) running ahead of it, within a window in
bytes, checked against what imaplib (poplib) sees on the server.

The stats xattr tells how the bodies came: stream_fetches (commands a
stream sent), stream_bodies (bodies that came in one), streams_started,
streams_active (a gauge).  MAILFS_STREAM_WINDOW sets the window in bytes
(man page, ENVIRONMENT), so that small folders can overflow it.
"""

import collections
import hashlib
import json
import os
import random
import sqlite3
import threading
import time

import pytest

import sample_mail
from harness import USER, getfattr, run, server_url, wait_for
from pop_helpers import server_state
from tcp_proxy import DelayProxy, FaultProxy

TIMEOUT = 8          # the mounts' -o timeout in the fault test
BOUND = 120          # any tool run here ends within this


def sha(data):
    return hashlib.sha256(data).hexdigest()


def padded(i, seed, size):
    """A message of about size bytes (plain text lines), distinct per (i, seed)."""
    rng = random.Random("%s-%d" % (seed, i))
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    lines, n = [], 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(12))
        lines.append(line)
        n += len(line) + 2
    return sample_mail.build(
        [("From", "Stream Tester <stream@example.org>"), ("To", "alice@example.org"),
         ("Subject", "Stream %s number %d" % (seed, i)),
         ("Date", "Mon, %02d Mar 2024 10:%02d:00 +0000" % (1 + i % 28, i % 60)),
         ("Message-ID", "<stream.%s.%d@mailfs.test>" % (seed, i))],
        "\n".join(lines) + "\n")


def put(dc, folder, raws, seed):
    """APPENDs raws; the folder must then hold them all (checked by count:
    under load imaplib sometimes misses an APPENDUID, which proves nothing)."""
    dc.append_many(USER, folder, [(raw, "", sample_mail.sample_internaldate(i, seed))
                                  for i, raw in enumerate(raws)])
    bodies = dc.fetch_bodies(USER, folder)
    assert sorted(bodies.values()) == sorted(raws), "the server did not take every message"
    return bodies


def make_folder(dc, name, raws, seed):
    dc.create_folder(USER, name)
    return put(dc, name, raws, seed)


def stats(m):
    return json.loads(getfattr(m.path, "user.mailfs.stats"))


def tree_hashes(top):
    """Counter of the sha256 of every file under top."""
    got = collections.Counter()
    for d, _, files in os.walk(top):
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                got[sha(f.read())] += 1
    return got


def want_hashes(bodies):
    return collections.Counter(sha(b) for b in bodies.values())


def no_seen(dc, folder):
    seen = [m["uid"] for m in dc.messages(USER, folder) if "\\Seen" in m["flags"]]
    assert not seen, "reading through the stream set \\Seen on UIDs %s" % seen[:10]


def assert_streamed(st, n, what):
    """The bodies came in streams, not one command per message."""
    assert st["streams_started"] >= 1, "%s: no stream started: %s" % (what, st)
    assert st["stream_bodies"] >= n - 5, \
        "%s: only %d of %d bodies came in a stream: %s" % (what, st["stream_bodies"], n, st)
    assert st["stream_fetches"] <= max(4, n // 8), \
        "%s: %d stream commands for %d bodies: not streamed in sets" % (
            what, st["stream_fetches"], n)
    assert st["bodies_fetched"] <= n + 2, \
        "%s: %d bodies fetched for %d messages: some twice" % (what, st["bodies_fetched"], n)


@pytest.fixture
def dc(mount):
    return mount.private_server()


def mixed(seed, n=60):
    """Small messages and a few of 200-400 KB, names out of UID order."""
    raws = sample_mail.sample_messages(n, seed, tricky=False)
    for i in (7, 23, 41):
        raws[i] = padded(i, seed, 200_000 + 50_000 * (i % 5))
    random.Random(seed).shuffle(raws)
    return raws


@pytest.mark.parametrize("tool", ["tar", "rsync", "cp", "grep"])
def test_tools_read_a_folder_through_a_stream(mount, dc, tmp_path, tool):
    bodies = make_folder(dc, "Box", mixed(tool), 3)
    m = mount(server=dc)
    dest = tmp_path / "out"
    dest.mkdir()
    if tool == "tar":
        run(["sh", "-c", "tar cf - -C %s Box | tar xf - -C %s" % (m.path, dest)], timeout=BOUND)
    elif tool == "rsync":
        run(["rsync", "-a", m.p("Box") + "/", str(dest) + "/"], timeout=BOUND)
    elif tool == "cp":
        run(["cp", "-r", m.p("Box"), str(dest)], timeout=BOUND)
    else:
        r = run(["grep", "-rl", "Message-ID", m.p("Box")], timeout=BOUND)
        assert len(r.stdout.split(b"\n")) - 1 == len(bodies)
    st = stats(m)
    if tool == "grep":
        # Everything grep read is in the cache now: copy it from there.
        run(["cp", "-r", m.p("Box"), str(dest)], timeout=BOUND)
        assert stats(m)["bodies_fetched"] == st["bodies_fetched"], "grep -r left bodies uncached"
    m.unmount()
    assert tree_hashes(dest) == want_hashes(bodies), \
        "%s through the stream differs from the server's BODY[]" % tool
    assert_streamed(st, len(bodies), tool)
    no_seen(dc, "Box")
    # A stream's bodies go into pack files, not a file each: what the
    # cache holds is the bodies fetched alone and a pack a stream.
    files = sum(len(f) for _, _, f in os.walk(os.path.join(m.cache_dir, "bodies")))
    assert files <= len(bodies) - st["stream_bodies"] + st["streams_started"], \
        "%d files in the body cache for %d bodies, %d of them streamed" % (
            files, len(bodies), st["stream_bodies"])
    if tool == "tar":
        # ... and read back from there after a remount, with the server
        # stopped: every body exact, none fetched.
        dc.stop()
        m2 = mount(server=dc, cache_dir=m.cache_dir, options=["offline"])
        again = tmp_path / "again"
        again.mkdir()
        run(["sh", "-c", "tar cf - -C %s Box | tar xf - -C %s" % (m2.path, again)],
            timeout=BOUND)
        assert tree_hashes(again) == want_hashes(bodies), \
            "the cached bodies, read after a remount, differ from the server's BODY[]"
        assert stats(m2)["bodies_fetched"] == 0


def test_two_folders_at_once_each_get_a_stream(mount, dc, tmp_path):
    a = make_folder(dc, "One", mixed("one"), 4)
    b = make_folder(dc, "Two", mixed("two"), 5)
    # Two streams, two watched folders (-o watch=2), one for the rest.
    m = mount(server=dc, options=["connections=5"])
    outs = {}

    def tar(folder):
        outs[folder] = run(["tar", "cf", str(tmp_path / (folder + ".tar")), "-C", m.path, folder],
                           timeout=BOUND)
    threads = [threading.Thread(target=tar, args=(f,)) for f in ("One", "Two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND + 10)
    assert set(outs) == {"One", "Two"}, "a tar did not finish"
    st = stats(m)
    m.unmount()
    for folder, bodies in (("One", a), ("Two", b)):
        out = tmp_path / ("x" + folder)
        out.mkdir()
        run(["tar", "xf", str(tmp_path / (folder + ".tar")), "-C", str(out)])
        assert tree_hashes(out) == want_hashes(bodies), "%s differs from the server" % folder
        no_seen(dc, folder)
    assert st["streams_started"] >= 2, "two folders read at once, %d streams: %s" % (
        st["streams_started"], st)
    assert st["stream_bodies"] >= len(a) + len(b) - 10, st
    assert st["stream_fetches"] <= (len(a) + len(b)) // 8, st


def test_reader_that_stops_leaves_no_stream(mount, dc):
    """A reader that stops after 10 messages: the stream fills its window,
    then ends; its connection goes back to the pool in step (no reconnect),
    and the bytes fetched stay within what was read plus the window."""
    window = 150_000
    raws = [padded(i, "stop", 20_000) for i in range(80)]
    bodies = make_folder(dc, "Stop", raws, 6)
    m = mount(server=dc, env={"MAILFS_STREAM_WINDOW": str(window)},
              options=["connections=2", "watch=0", "debug"])
    names = sorted(os.listdir(m.p("Stop")))
    by_sha = {sha(b): u for u, b in bodies.items()}
    read = 0
    for n in names[:10]:
        with open(m.p("Stop", n), "rb") as f:
            data = f.read()
        assert sha(data) in by_sha, "%s differs from the server's BODY[]" % n
        read += len(data)
    assert stats(m)["streams_started"] == 1
    wait_for(lambda: stats(m)["streams_active"] == 0, 60, interval=0.3,
             what="the stream to end once its reader stopped")
    st = stats(m)
    assert st["body_bytes_fetched"] <= read + window + 25_000, \
        "a stopped reader read %d bytes, %d were fetched: more than the window of %d" % (
            read, st["body_bytes_fetched"], window)
    # The connection the stream had is in step: the next reads work, and
    # nothing was dropped and opened again.
    for n in (names[40], names[79]):
        try:
            with open(m.p("Stop", n), "rb") as f:
                assert sha(f.read()) in by_sha
        except OSError as e:
            raise AssertionError("%s after the stream ended: %s\n%s\nserver: %s" % (
                n, e, m.log_tail(30), dc.log_text()[-3000:]))
    st = stats(m)
    assert st["reconnects"] == 0, "the stream's connection was dropped: %s\n%s" % (
        st, m.log_tail(20))
    m.unmount()
    no_seen(dc, "Stop")


def read_each(m, folder, names, bodies):
    """Reads folder's names in that order, each checked against the
    server's bodies; unmounts m and returns its stats from before."""
    by_sha = {sha(b) for b in bodies.values()}
    for name in names:
        with open(m.p(folder, name), "rb") as f:
            assert sha(f.read()) in by_sha, "%s differs from the server's BODY[]" % name
    st = stats(m)
    m.unmount()
    return st


def test_the_open_that_starts_a_stream_is_its_first_body(mount, dc):
    """The third message read in order starts a stream, and is the
    stream's first body rather than a fetch of its own: its open waits
    for the stream, which takes the connection the first two warmed
    (on a large Maildir Dovecot spends 0.15 s on a session's first body,
    and a new connection costs round trips). Every other body comes in
    the stream, each fetched once, exact. (The folder is listed by ls, not
    by the reader: see the next tests.)"""
    bodies = make_folder(dc, "First", [padded(i, "first", 3_000) for i in range(30)], 9)
    m = mount(server=dc, options=["watch=0"])
    run(["ls", "-f", m.p("First")])
    names = sorted(os.listdir(m.p("First")))
    st = read_each(m, "First", names, bodies)
    assert st["streams_started"] == 1, st
    assert st["bodies_fetched"] == 30, "%d bodies fetched for 30 messages" % st["bodies_fetched"]
    assert st["stream_bodies"] == 28, \
        "%d of 30 bodies came in the stream: the two read before it, and no other, " \
        "come alone" % st["stream_bodies"]
    no_seen(dc, "First")


def backwards(i, seed, size):
    """As padded, dated so that name order is the reverse of UID order."""
    raw = padded(i, seed, size)
    return raw.replace(b"Date: Mon, %02d Mar 2024 10:%02d:00" % (1 + i % 28, i % 60),
                       b"Date: Sun, %02d Mar 2024 10:00:00" % (31 - i), 1)


@pytest.mark.parametrize("ro", [False, True], ids=["rw", "ro"])
def test_a_reader_of_the_whole_listing_streams_from_its_first_open(mount, dc, tmp_path, ro):
    """tar reads a folder's first listing to its end, then opens its files
    in that order (UID order). Its first open (-o ro: its first read), of
    the listing's first message, which is not the first by name, starts
    the stream: every body comes in it, none alone."""
    n = 30
    bodies = make_folder(dc, "Whole", [backwards(i, "whole", 3_000) for i in range(n)], 5)
    m = mount(server=dc, options=["watch=0"] + (["ro"] if ro else []))
    archive = str(tmp_path / "whole.tar")
    run(["tar", "cf", archive, "-C", m.path, "Whole"], timeout=BOUND)
    st = stats(m)
    m.unmount()
    order = [n for n in run(["tar", "tf", archive]).stdout.decode().split("\n")
             if n.endswith(".eml")]
    assert len(order) == n and order[0] != min(order), \
        "the folder was meant to start with a message that is not first by name: %s" % order
    run(["tar", "xf", archive, "-C", str(tmp_path)])
    assert tree_hashes(tmp_path / "Whole") == want_hashes(bodies), "tar's copy differs"
    assert st["streams_started"] == 1, st
    assert st["bodies_fetched"] == n, st
    assert st["stream_bodies"] == n, \
        "%d of %d bodies came in the stream: the first open did not start it" % (
            st["stream_bodies"], n)
    no_seen(dc, "Whole")


def test_a_reader_whose_first_is_first_both_ways_streams_from_its_second(mount, dc):
    """The listing's first message is also the first by name: the reader's
    first open does not tell its order, its second does, and starts the
    stream in it (here: name order, which is not UID order)."""
    n = 30
    raws = [padded(i, "both", 3_000) for i in range(n)]
    bodies = make_folder(dc, "Both", raws, 9)
    m = mount(server=dc, options=["watch=0"])
    listing = os.listdir(m.p("Both"))  # the first listing, read to its end
    names = sorted(listing)
    assert names[0] == listing[0], "the folder was meant to start with the same message"
    assert names != listing, "the folder was meant to differ in name order"
    st = read_each(m, "Both", names, bodies)
    assert st["streams_started"] == 1, st
    assert st["bodies_fetched"] == n, st
    assert st["stream_bodies"] == n - 1, \
        "%d of %d bodies came in the stream, not all but the first" % (st["stream_bodies"], n)


def test_a_stream_that_ran_to_its_end_leaves_its_reader_alone(mount, dc):
    """A stream that brought a folder's last body ends while its reader
    has most of the folder still to go. Reaching what the stream brought
    is news for no one: nothing looks those bodies up again to push them
    ahead (the kernel holds them: no 'pushed ahead' run), and their opens
    write no use to the cache's LRU (their commit was their use), so the
    LRU holds about one tick a body, not two."""
    n = 200
    bodies = make_folder(dc, "Ended", [padded(i, "ended", 3_000) for i in range(n)], 5)
    m = mount(server=dc, options=["watch=0", "debug"])
    names = os.listdir(m.p("Ended"))  # the listing, in UID order
    by_sha = {sha(b) for b in bodies.values()}
    wrong = []
    for i, name in enumerate(names):
        if i == 10:
            # The stream brought all 200 (600 KB, inside its window): the
            # rest are read after it ended.
            wait_for(lambda: stats(m)["streams_active"] == 0 and stats(m)["bodies_fetched"] == n,
                     timeout=30, what="the stream to bring every body and end")
        with open(m.p("Ended", name), "rb") as f:
            if sha(f.read()) not in by_sha:
                wrong.append(name)
    st = stats(m)
    log = m.log_text()
    m.unmount()
    assert not wrong, "read after the stream ended, differing from the server: %s" % wrong[:5]
    assert st["streams_started"] == 1 and st["stream_bodies"] >= n - 2, st
    assert "pushed ahead of a reader" not in log, \
        "bodies the stream brought were looked up again and pushed ahead of their reader"
    db = sqlite3.connect(os.path.join(m.cache_dir, "cache.sqlite"))
    try:
        top, count = db.execute("SELECT max(last_used), count(*) FROM bodies").fetchone()
    finally:
        db.close()
    assert count == n, "%d bodies in the cache for %d messages" % (count, n)
    # One tick a body at its commit; the first ten opens, which may come
    # before the stream's bodies are in the kernel's cache, one each at most.
    assert top <= n + 10, \
        "LRU tick %d for %d bodies: the opens of what the stream brought were written " \
        "as uses again" % (top, n)
    no_seen(dc, "Ended")


def test_message_larger_than_the_window_arrives_whole(mount, dc, tmp_path):
    window = 100_000
    raws = [padded(i, "big", 3_000) for i in range(30)]
    raws[12] = padded(12, "big", 700_000)
    raws[20] = padded(20, "big", 2_500_000)
    bodies = make_folder(dc, "Big", raws, 7)
    m = mount(server=dc, env={"MAILFS_STREAM_WINDOW": str(window)})
    run(["sh", "-c", "tar cf - -C %s Big | tar xf - -C %s" % (m.path, tmp_path)], timeout=BOUND)
    st = stats(m)
    m.unmount()
    assert tree_hashes(tmp_path / "Big") == want_hashes(bodies), \
        "a message larger than the window came out different"
    assert st["streams_started"] >= 1 and st["stream_bodies"] >= 20, st
    no_seen(dc, "Big")


def test_a_full_window_is_refilled_in_sets(mount, dc):
    """A reader slower than the link keeps the window full: the stream asks
    for more once a quarter of it is free, in one command, not a command
    for each message read (a tar of 50,000 messages sent up to 4,000
    FETCHes for what 200 carry).  A window of 64 KiB, 240 messages of 3 KB
    read in order: a FETCH carries 5 of them, and the first few fewer."""
    n = 240
    raws = [padded(i, "refill", 3_000) for i in range(n)]
    bodies = make_folder(dc, "Refill", raws, 9)
    by_sha = set(sha(b) for b in bodies.values())
    m = mount(server=dc, env={"MAILFS_STREAM_WINDOW": "65536"})
    wrong = []
    for name in sorted(os.listdir(m.p("Refill"))):
        with open(m.p("Refill", name), "rb") as f:
            if sha(f.read()) not in by_sha:
                wrong.append(name)
    st = stats(m)
    m.unmount()
    assert not wrong, "read through the stream, differing from the server: %s" % wrong[:5]
    assert st["stream_bodies"] >= n - 5, st
    print("stream commands: %d for %d bodies" % (st["stream_fetches"], n))
    assert st["stream_fetches"] <= n // 4, \
        "%d stream commands for %d bodies read through a full window: one a message" % (
            st["stream_fetches"], n)
    no_seen(dc, "Refill")


def test_cache_never_grows_past_cache_size(mount, dc, tmp_path):
    """cache_size=1M, a folder of 3 MB read in order by a reader that
    pauses: the stream goes no further ahead than a fraction of the cache,
    so what the reader has not reached is never evicted (each body is
    fetched once), and the cache's disk never holds more than the cap plus
    the stream's window (sampled throughout: the blocks the files of
    bodies/ and tmp/ take, cached bodies and downloads not yet committed;
    a pack's evicted bodies are punched out of it)."""
    cap = 1024 * 1024
    raws = [padded(i, "cap", 40_000) for i in range(75)]
    bodies = make_folder(dc, "Cap", raws, 8)
    by_sha = set(sha(b) for b in bodies.values())
    m = mount(server=dc, options=["cache_size=1M"])
    tops = [os.path.join(m.cache_dir, d) for d in ("bodies", "tmp")]
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            total = 0
            for d, _, files in (w for top in tops for w in os.walk(top)):
                for n in files:
                    try:
                        total += os.stat(os.path.join(d, n)).st_blocks * 512
                    except OSError:
                        pass
            peak[0] = max(peak[0], total)
            time.sleep(0.02)
    t = threading.Thread(target=sample)
    t.start()
    wrong, read, ahead, fetches, started = [], 0, None, 0, 0
    try:
        names = sorted(os.listdir(m.p("Cap")))
        for i, n in enumerate(names):
            with open(m.p("Cap", n), "rb") as f:
                data = f.read()
            read += len(data)
            if sha(data) not in by_sha:
                wrong.append(n)
            if stats(m)["streams_started"] > started:
                # A stream started (at the third message read in order, and
                # again once the reader is past what the first one brought):
                # its first FETCH goes out before the reader runs on. A reader
                # faster than a connection's start fetches each message
                # alone, and the stream has nothing left to carry.
                started += 1
                wait_for(lambda: stats(m)["stream_fetches"] > fetches, 60, interval=0.05,
                         what="the stream's first FETCH")
            if i == 8:
                # The reader pauses: the stream fills what it may, then ends.
                wait_for(lambda: stats(m)["streams_active"] == 0, 60, interval=0.2,
                         what="the stream to stop while its reader pauses")
                ahead = stats(m)["body_bytes_fetched"] - read
                fetches = stats(m)["stream_fetches"]
    finally:
        done.set()
        t.join(10)
    st = stats(m)
    m.unmount()
    assert not wrong, "read through the stream, differing from the server: %s" % wrong[:5]
    # Downloads not yet committed: up to the window (a quarter of the cap)
    # and the one being written, in whole blocks.
    slack = -(-max(len(b) for b in bodies.values()) // 4096) * 4096
    assert peak[0] <= cap + cap // 4 + slack, \
        "the body cache held %d bytes, cache_size is %d" % (peak[0], cap)
    assert ahead <= cap // 4 + slack, \
        "the stream went %d bytes ahead of its reader, over a quarter of cache_size" % ahead
    assert st["stream_bodies"] >= len(bodies) // 2, st
    assert st["bodies_fetched"] <= len(bodies) + 2, \
        "%d fetched for %d: the stream fetched bodies that were evicted before the reader " \
        "came: %s" % (st["bodies_fetched"], len(bodies), st)


def test_connection_cut_in_the_middle_of_a_stream(mount, dc, tmp_path):
    """The stream's connection is cut right after its second streamed FETCH
    goes out: the reader gets the rest after a reconnect (or EIO within
    the timeout), never wrong bytes."""
    raws = [padded(i, "cut", 15_000) for i in range(120)]
    bodies = make_folder(dc, "Cut", raws, 9)
    by_sha = set(sha(b) for b in bodies.values())
    with FaultProxy(("127.0.0.1", dc.imap_port), r"^\S+ UID FETCH \d+,\d+[0-9,]* \(UID BODY",
                    "sent", nth=2) as px:
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  env={"MAILFS_STREAM_WINDOW": "400000"},
                  options=["tls=none", "timeout=%d" % TIMEOUT, "debug"])
        dest = tmp_path / "out"
        dest.mkdir()
        # The stream starts at the third message read in order and needs a
        # connection of its own: it is up before tar starts, or a reader
        # that fetches each message alone in a millisecond could read all
        # 120 before the stream's login is done (a fresh machine's first
        # run did), and there would be no stream to cut.
        for n in sorted(os.listdir(m.p("Cut")))[:3]:
            with open(m.p("Cut", n), "rb") as f:
                f.read()
        wait_for(lambda: stats(m)["stream_fetches"] >= 1, BOUND,
                 what="the stream's first FETCH")
        t0 = time.monotonic()
        r = run(["sh", "-c", "tar cf - -C %s Cut | tar xf - -C %s" % (m.path, dest)],
                timeout=BOUND, check=False)
        elapsed = time.monotonic() - t0
        st = stats(m)
        assert px.fired.is_set(), "the proxy never saw a second streamed FETCH:\n%s" % (
            px.transcript()[-2000:])
        m.unmount()
    got = tree_hashes(dest)
    wrong = [h for h in got if h not in by_sha]
    assert not wrong, "%d files with bytes the server never had" % len(wrong)
    if r.returncode == 0:
        assert got == want_hashes(bodies), "tar succeeded but the copy differs"
    else:
        assert b"Input/output error" in r.stderr, r.stderr[-500:]
        assert elapsed < BOUND
    assert st["reconnects"] >= 1 or st["connections_open"] >= 1, st


def test_window_follows_the_reader_through_a_far_link(mount, dc, tmp_path):
    """Through a 60 ms round trip, a window sized for a near server leaves
    the reader waiting on the link: it grows with the reader's pace times
    the link's round trip, towards its cap (a quarter of cache_size), and
    a tar still gets every body exact.  On the same folder without the
    delay it stays near where it starts (a sixteenth of cache_size).  A
    reader that stops leaves no more fetched than the window it had."""
    cap = 16 * 1024 * 1024
    base, top = cap // 16, cap // 4
    grown = 3 * top // 4
    raws = [padded(i, "far", 100_000) for i in range(120)]
    bodies = make_folder(dc, "Far", raws, 11)
    by_sha = set(sha(b) for b in bodies.values())
    opts = ["tls=none", "cache_size=16M", "watch=0", "debug"]
    with DelayProxy(("127.0.0.1", dc.imap_port), 0.060) as px:
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  options=opts)
        dest = tmp_path / "far"
        dest.mkdir()
        run(["sh", "-c", "tar cf - -C %s Far | tar xf - -C %s" % (m.path, dest)],
            timeout=BOUND)
        st = stats(m)
        m.unmount()
        assert tree_hashes(dest) == want_hashes(bodies), "a body came out different"
        assert st["streams_started"] >= 1, st
        # 1 MiB a round trip: a pace of 17 MB/s, and the window grows to
        # 1 MiB + 2 x 17 MB/s x 60 ms = 3 MiB, then to its cap.
        assert st["stream_window"] >= grown, \
            "through a 60 ms round trip the window reached %d bytes, not %d (cap %d):\n%s" % (
                st["stream_window"], grown, top, m.log_tail(40))
        # A reader that stops half way: no more than the grown window past it.
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  options=opts)
        read = 0
        for n in sorted(os.listdir(m.p("Far")))[:60]:
            with open(m.p("Far", n), "rb") as f:
                data = f.read()
            assert sha(data) in by_sha
            read += len(data)
        wait_for(lambda: stats(m)["streams_active"] == 0, 60, interval=0.3,
                 what="the stream to end once its reader stopped")
        st = stats(m)
        m.unmount()
        assert st["body_bytes_fetched"] <= read + st["stream_window"] + 110_000, \
            "a stopped reader read %d bytes, %d were fetched, the window was %d" % (
                read, st["body_bytes_fetched"], st["stream_window"])
    m = mount(server=dc, options=["cache_size=16M", "watch=0"])
    run(["sh", "-c", "tar cf - -C %s Far | cat >/dev/null" % m.path], timeout=BOUND)
    st = stats(m)
    m.unmount()
    assert st["streams_started"] >= 1, st
    assert st["stream_window"] < grown, \
        "on loopback the window grew to %d bytes from %d" % (st["stream_window"], base)
    no_seen(dc, "Far")


def test_mark_seen_reads_no_further_than_asked(mount, dc, tmp_path):
    """-o mark_seen: no stream (it would mark unread mail read)."""
    make_folder(dc, "Seen", [padded(i, "seen", 2_000) for i in range(30)], 10)
    m = mount(server=dc, options=["mark_seen"])
    names = sorted(os.listdir(m.p("Seen")))
    for n in names[:10]:
        run(["cat", m.p("Seen", n)])
    st = stats(m)
    m.unmount()
    assert st["streams_started"] == 0 and st["bodies_fetched"] == 10, st
    seen = [x for x in dc.messages(USER, "Seen") if "\\Seen" in x["flags"]]
    assert len(seen) == 10


def test_pop3_stream_of_retrs(mount, dc, tmp_path):
    raws = [padded(i, "pop", 8_000) for i in range(80)]
    put(dc, "INBOX", raws, 11)
    want = server_state(dc)["bodies"]
    m = mount(url=server_url(dc, "pop3s"), server=dc)
    run(["sh", "-c", "tar cf - -C %s INBOX | tar xf - -C %s" % (m.path, tmp_path)],
        timeout=BOUND)
    st = stats(m)
    m.unmount()
    assert tree_hashes(tmp_path / "INBOX") == collections.Counter(sha(b) for b in want), \
        "a POP3 tar through the stream differs from poplib's RETR"
    assert_streamed(st, len(want), "POP3")

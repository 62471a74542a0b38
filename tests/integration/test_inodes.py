"""Inode numbers come from the cache: every folder and message keeps its
number across an unmount and a remount of the same cache and across
re-checks that find other changes, a moved message gets a number no other
message has, and what backup tools compare to skip unchanged files (inode,
size, ctime: restic, borg) is the same after a remount.

Checked against a private Dovecot of the test's own (changed with imaplib).
"""

import os
import re
import time

import pytest

import sample_mail
from harness import (SEQ, USER, append_samples, getfattr, listing, new_folder, run, server_url,
                     wait_for)
from tcp_proxy import FaultProxy


def tree_stats(root):
    """{relative path: (st_ino, st_size, st_ctime, st_mtime)} of every folder
    and message under root (lstat, as tar and restic do)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_size, int(st.st_ctime),
                                             int(st.st_mtime))
    return out


def inos(stats):
    return {k: v[0] for k, v in stats.items()}


def assert_unique(stats):
    seen = {}
    for path, v in stats.items():
        assert v[0] not in seen, "%s and %s share inode %d" % (path, seen[v[0]], v[0])
        assert v[0] > 1, "%s has inode %d" % (path, v[0])
        seen[v[0]] = path


def test_inodes_survive_a_remount(mount, private_dovecot, tmp_path):
    cache = str(tmp_path / "cache")
    m = mount(server=private_dovecot, cache_dir=cache)
    before = tree_stats(m.path)
    assert len(before) >= 12, before
    assert_unique(before)
    assert os.stat(m.path).st_ino == 1
    m.unmount()
    m2 = mount(server=private_dovecot, cache_dir=cache)
    after = tree_stats(m2.path)
    # What restic and borg compare to call a file unchanged: all of it.
    assert after == before, "changed after a remount: %s" % sorted(
        k for k in set(before) | set(after) if before.get(k) != after.get(k))


def test_inodes_survive_a_recheck_with_other_changes(mount, private_dovecot):
    m = mount(server=private_dovecot, options=["refresh=1"])
    before = tree_stats(m.path)
    # Another client: a new message in INBOX, one expunged from Other.
    append_samples(private_dovecot, "INBOX",
                   sample_mail.sample_messages(1, "ino-%d" % next(SEQ), tricky=False), 5)
    first = private_dovecot.messages(USER, "Other")[0]["uid"]
    private_dovecot.expunge_uids(USER, "Other", [first])
    wait_for(lambda: len(listing(m.p("INBOX"))) == 9 and len(listing(m.p("Other"))) == 2, 20,
             what="the re-check to see the other client's changes")
    after = tree_stats(m.path)
    gone = set(before) - set(after)
    new = set(after) - set(before)
    assert len(gone) == 1 and len(new) == 1, (gone, new)
    for path in set(before) & set(after):
        assert after[path][0] == before[path][0], "%s: inode %d, was %d" % (
            path, after[path][0], before[path][0])
    assert_unique(after)
    assert after[new.pop()][0] not in set(inos(before).values())


def test_a_moved_message_gets_a_new_number(mount, private_dovecot):
    m = mount(server=private_dovecot)
    before = tree_stats(m.path)
    name = listing(m.p("INBOX"))[0]
    run(["mv", m.p("INBOX", name), m.p("Other") + "/"])
    after = tree_stats(m.path)
    moved = after[os.path.join("Other", name)][0]
    assert moved not in set(inos(before).values()), \
        "the moved message took inode %d, which another message had" % moved
    assert_unique(after)
    # The others kept theirs.
    for path in set(before) & set(after):
        assert after[path][0] == before[path][0], path


# --- what the kernel caches is pushed out when it changes --------------------------------
# refresh=3600: the kernel may keep names and attributes for an hour, so
# only a push from mailfs explains a change seen at once.

def test_a_name_that_shifts_after_rm_is_seen_at_once(mount, private_dovecot):
    folder = "Twins%d" % next(SEQ)
    private_dovecot.create_folder(USER, folder)
    raws = sample_mail.sample_messages(2, "twin-%d" % next(SEQ), tricky=False)
    # Same Subject and Date: the same derived name, the second one ~2.
    twin = [re.sub(rb"(?m)^Subject: .*$", b"Subject: twins", r) for r in raws]
    twin = [re.sub(rb"(?m)^Date: .*$", b"Date: Mon, 07 Jun 2021 08:09:10 +0000", r)
            for r in twin]
    mid = re.search(rb"(?m)^Message-ID: .*$", twin[0]).group(0)
    twin[1] = re.sub(rb"(?m)^Message-ID: .*$", mid, twin[1]) + b"and a longer body\r\n"
    append_samples(private_dovecot, folder, twin, 6)
    m = mount(server=private_dovecot, options=["refresh=3600"])
    names = listing(m.p(folder))
    assert len(names) == 2 and names[1].replace("~2", "") == names[0], names
    plain, second = names
    st_second = os.stat(m.p(folder, second))      # the kernel now knows both
    os.stat(m.p(folder, plain))
    os.unlink(m.p(folder, plain))
    # The ~2 takes the plain name: its old name is gone at once (pushed to
    # the kernel by a thread of its own: within seconds on a loaded
    # machine, not after refresh's hour), and the plain name is the other
    # message (its inode, its size).
    wait_for(lambda: not os.path.exists(m.p(folder, second)), 5,
             what="the old name %s to be gone" % second)
    st = os.stat(m.p(folder, plain))
    assert (st.st_ino, st.st_size) == (st_second.st_ino, st_second.st_size)
    assert listing(m.p(folder)) == [plain]


def test_a_size_corrected_by_the_first_read_is_seen_at_once(mount, private_dovecot):
    """A server whose RFC822.SIZE is short: the listing's size is the
    server's word until the first read, then the body's, at once (the
    kernel shrinks a size on a short read by itself, but never grows it)."""
    def lie(line):
        return re.sub(rb"RFC822\.SIZE (\d+)", lambda mo: b"RFC822.SIZE %d" % (
            int(mo.group(1)) - 100), line)
    with FaultProxy(("127.0.0.1", private_dovecot.imap_port), rewrite=lie) as px:
        m = mount(url=server_url(private_dovecot, "imap", port=px.port), server=private_dovecot,
                  cafile=False, options=["tls=none", "refresh=3600"])
        name = listing(m.p("INBOX"))[0]
        listed = os.stat(m.p("INBOX", name)).st_size
        with open(m.p("INBOX", name), "rb") as f:
            body = f.read()
        assert listed == len(body) - 100
        assert os.stat(m.p("INBOX", name)).st_size == len(body), \
            "stat still says the server's size after the read"
        m.unmount()


def test_a_read_only_mount_reads_without_opens(mount, private_dovecot, tmp_path):
    """-o ro: the kernel opens and closes files alone (no OPEN, RELEASE or
    FLUSH reaches mailfs), a READ finds its body by the node, and a second
    read of the folder sends nothing at all; the bytes are the server's,
    and writes are refused with EROFS by the kernel."""
    dc = private_dovecot
    name = new_folder(dc, "Ro", sample_mail.sample_messages(40, "ro-%d" % next(SEQ),
                                                            tricky=False))
    want = sorted(dc.fetch_bodies(USER, name).values())
    m = mount(server=dc, options=["ro", "refresh=3600"])
    folder = m.p(name)
    for round in (1, 2):
        before = m.stats()
        got = []
        for n in sorted(os.listdir(folder)):
            with open(os.path.join(folder, n), "rb") as f:
                got.append(f.read())
        after = m.stats()
        assert sorted(got) == want, "round %d: the bodies differ from BODY[]" % round
        assert after["opens"] == 0, "a read-only mount was sent %d OPENs" % after["opens"]
        if round == 2:
            assert after["reads"] - before["reads"] <= 2, \
                "a second read of 40 cached messages sent %d READs" % (
                    after["reads"] - before["reads"])
    victim = os.path.join(folder, sorted(os.listdir(folder))[0])
    for cmd in (["touch", os.path.join(folder, "new.eml")], ["rm", victim],
                ["sh", "-c", "echo more >> '%s'" % victim]):
        r = run(cmd, check=False)
        assert r.returncode != 0 and b"Read-only file system" in r.stderr, (cmd, r.stderr)
    assert sorted(dc.fetch_bodies(USER, name).values()) == want


def test_cached_bodies_go_ahead_of_a_reader_so_a_warm_tar_sends_few_reads(mount,
                                                                          private_dovecot,
                                                                          tmp_path):
    """Every body cached, a backup's tar through a read-only remount: once
    the tar goes through the folder in order, the next cached bodies are
    put into the kernel's page cache ahead of it, so most files cost no
    request at all (before: a READ each).  The bytes are the server's."""
    dc = private_dovecot
    n = 300
    name = new_folder(dc, "Ahead", sample_mail.sample_messages(n, "ahead-%d" % next(SEQ),
                                                               tricky=False))
    want = sorted(dc.fetch_bodies(USER, name).values())
    cache = str(tmp_path / "cache")
    m = mount(server=dc, cache_dir=cache, options=["refresh=3600"])
    run(["sh", "-c", "tar cf - -C %s %s | cat >/dev/null" % (m.path, name)], timeout=120)
    assert m.stats()["bodies_fetched"] >= n
    m.unmount()
    m = mount(server=dc, cache_dir=cache, options=["ro", "refresh=3600"])
    out = tmp_path / "out"
    out.mkdir()
    before = m.stats()
    run(["sh", "-c", "tar cf - -C %s %s | tar xf - -C %s" % (m.path, name, out)], timeout=120)
    after = m.stats()
    asked = {k: after[k] - before[k] for k in ("reads", "bodies_pushed", "bodies_fetched")}
    got = []
    for f in os.listdir(out / name):
        with open(out / name / f, "rb") as fh:
            got.append(fh.read())
    assert sorted(got) == want, "the bodies differ from BODY[]"
    assert asked["bodies_fetched"] == 0, asked
    assert asked["bodies_pushed"] >= n // 4 and asked["reads"] <= n * 3 // 4, \
        "a warm tar of %d cached messages: %s (no body went ahead of it)" % (n, asked)


def test_a_read_only_mount_drops_a_large_body_read_through_once(mount, private_dovecot):
    """-o ro, no opens: a body of 64 KiB or more read to its end leaves the
    kernel's page cache when the reader moves on to another file (the
    cache file holds it already), as a first close drops it on a mount
    with opens; read again, it stays. Bytes as the server's each time."""
    dc = private_dovecot

    def big(k):
        return sample_mail.build(
            [("From", "a@example.org"), ("To", "b@example.org"), ("Subject", "big %d" % k),
             ("Date", "Mon, 01 Jan 2024 10:0%d:00 +0000" % k),
             ("Message-ID", "<big.%d.%d@mailfs.test>" % (k, next(SEQ)))],
            "".join("line %06d of large body %d\n" % (i, k) for i in range(12000)))
    smalls = sample_mail.sample_messages(3, "rodrop-%d" % next(SEQ), tricky=False)
    name = new_folder(dc, "RoDrop", [big(1), big(2)] + smalls)
    want = dc.fetch_bodies(USER, name)
    m = mount(server=dc, options=["ro", "refresh=3600"])
    by_uid = {int(getfattr(m.p(name, n), "user.mail.uid")): n for n in listing(m.p(name))}
    bigs = sorted(u for u in want if len(want[u]) > 300_000)
    small = sorted(u for u in want if len(want[u]) < 65536)
    assert len(bigs) == 2 and len(small) == 3

    def read(uid):
        with open(m.p(name, by_uid[uid]), "rb") as f:
            assert f.read() == want[uid], "message %d differs from BODY[]" % uid

    read(bigs[0])
    read(small[0])          # moved on: the first large body is dropped
    wait_for(lambda: m.stats()["bodies_dropped"] == 1, 10,
             what="the large body to leave the page cache once the reader moved on")
    read(bigs[0])           # read again: it stays from now on
    read(small[1])
    read(bigs[1])
    read(small[2])          # the second one is dropped, after whatever came before
    wait_for(lambda: m.stats()["bodies_dropped"] >= 2, 10, what="the second large body dropped")
    before = m.stats()
    read(bigs[0])
    after = m.stats()
    assert after["reads"] - before["reads"] <= 1, \
        "a large body read twice left the page cache again: %d READs for its third read" % (
            after["reads"] - before["reads"])
    assert after["bodies_dropped"] == 2 and after["opens"] == 0, after


def test_a_large_body_is_read_a_mebibyte_at_a_time(mount, private_dovecot):
    """Mounted by root, the mount's read-ahead is 1 MiB (the kernel gives a
    FUSE mount 128 KiB): a 4 MB body read through a read-only mount comes
    in a handful of READs, not one per 128 KiB (32).  Bytes as the
    server's."""
    if os.geteuid() != 0:
        pytest.skip("only root may set a mount's read-ahead")
    dc = private_dovecot
    body = "".join("line %06d of a body of four megabytes\n" % i for i in range(100000))
    raw = sample_mail.build(
        [("From", "a@example.org"), ("To", "b@example.org"), ("Subject", "four MB"),
         ("Date", "Mon, 01 Jan 2024 10:00:00 +0000"),
         ("Message-ID", "<four.%d@mailfs.test>" % next(SEQ))], body)
    name = new_folder(dc, "ReadAhead", [raw])
    want = dc.fetch_bodies(USER, name)
    (uid, data), = want.items()
    assert len(data) > 4_000_000
    m = mount(server=dc, options=["ro", "refresh=3600"])
    (n,) = listing(m.p(name))
    before = m.stats()["reads"]
    with open(m.p(name, n), "rb") as f:
        assert f.read() == data, "the body differs from BODY[]"
    reads = m.stats()["reads"] - before
    assert reads <= 12, "%d READs for %d bytes: the read-ahead is not raised" % (reads, len(data))


def test_sizes_the_server_gets_wrong_read_exact_through_a_read_only_mount(mount,
                                                                        private_dovecot):
    """A server whose RFC822.SIZE is 100 short or 100 long, and a mount
    that sees no opens (-o ro): a read of each message gives the body,
    every byte of it and nothing after (no zeros), and stat then says its
    size. The kernel took the listing's size; a body found longer has the
    size asked again at the next read past it, a shorter one ends the
    READ short."""
    for delta in (-100, 100):
        def lie(line, delta=delta):
            return re.sub(rb"RFC822\.SIZE (\d+)", lambda mo: b"RFC822.SIZE %d" % (
                int(mo.group(1)) + delta), line)
        with FaultProxy(("127.0.0.1", private_dovecot.imap_port), rewrite=lie) as px:
            m = mount(url=server_url(private_dovecot, "imap", port=px.port),
                      server=private_dovecot, cafile=False,
                      options=["tls=none", "refresh=3600", "ro"])
            want = private_dovecot.fetch_bodies(USER, "INBOX")
            names = listing(m.p("INBOX"))
            by_uid = {int(getfattr(m.p("INBOX", n), "user.mail.uid")): n for n in names}
            for uid, n in sorted(by_uid.items()):
                p = m.p("INBOX", n)
                # The server's size until the body is in (the read-ahead
                # may have brought it already).
                assert os.stat(p).st_size in (len(want[uid]) + delta, len(want[uid]))
                with open(p, "rb") as f:
                    got = f.read()
                assert got == want[uid], "RFC822.SIZE %+d: message %d reads %d bytes%s, " \
                    "the body is %d" % (delta, uid, len(got),
                                        " ending in zeros" if got.endswith(b"\0") else "",
                                        len(want[uid]))
                assert os.stat(p).st_size == len(want[uid])
            assert m.stats()["opens"] == 0
            m.unmount()


def test_flags_changed_on_the_server_are_seen_at_the_next_look(mount, private_dovecot):
    m = mount(server=private_dovecot, options=["refresh=1"])
    name = listing(m.p("Other"))[0]
    uid = int(getfattr(m.p("Other", name), "user.mail.uid"))
    assert "\\Flagged" not in getfattr(m.p("Other", name), "user.mail.flags")
    private_dovecot.store_flags(USER, "Other", uid, "+FLAGS", "\\Flagged")
    wait_for(lambda: listing(m.p("Other")) and
             "\\Flagged" in getfattr(m.p("Other", name), "user.mail.flags"), 10,
             what="the flag set by another client in user.mail.flags")


def test_libfuse_loop_options(mount, private_dovecot):
    """-o max_threads, max_idle_threads and clone_fd are libfuse's loop
    options: accepted (fuse_parse_cmdline reads them, fuse_loop_mt's
    config takes them), and the mount serves with them."""
    m = mount(server=private_dovecot, options=["max_threads=2", "max_idle_threads=1",
                                                "clone_fd"])
    names = listing(m.p("INBOX"))
    assert len(names) == 8
    with open(m.p("INBOX", names[0]), "rb") as f:
        assert f.read(5) == b"From:" or len(f.read()) > 0


def test_a_default_mount_writes_nothing_to_stderr(mount, private_dovecot):
    """In the foreground (a systemd unit's journal) a mount with libfuse's
    loop options left unset says nothing: libfuse 3.14 logs "Ignoring
    invalid max threads value 4294967295" when handed the unset value."""
    m = mount(server=private_dovecot)
    assert len(listing(m.p("INBOX"))) == 8
    m.unmount()
    with open(m.stderr_path, encoding="utf-8", errors="replace") as f:
        err = f.read()
    assert err == "", err


def test_a_listing_after_a_remount_gives_every_attribute(mount, private_dovecot, tmp_path):
    """tar, rsync and restic list a folder, then lstat each name: after a
    remount (the kernel knows nothing yet) the listing itself must carry
    every entry's attributes, or each lstat costs a LOOKUP round trip.
    The stats xattr counts the LOOKUPs and GETATTRs mailfs is sent."""
    dc = private_dovecot
    name = new_folder(dc, "Many", sample_mail.sample_messages(300, "plus", tricky=False))
    cache = str(tmp_path / "cache")
    m = mount(server=dc, cache_dir=cache, options=["refresh=3600"])
    assert len(listing(m.p(name))) == 300
    m.unmount()
    m = mount(server=dc, cache_dir=cache, options=["refresh=3600"])
    folder = m.p(name)
    os.stat(folder)
    before = m.stats()["getattrs"]
    names = os.listdir(folder)
    sizes = [os.lstat(os.path.join(folder, n)).st_size for n in names]
    asked = m.stats()["getattrs"] - before
    assert len(names) == 300 and min(sizes) > 0
    # The folder itself may be asked once or twice; not each message.
    assert asked <= 5, "lstat of 300 listed names after a remount: %d LOOKUP/GETATTR" % asked


def test_an_open_pushes_the_body_so_reading_costs_no_read_request(mount, private_dovecot,
                                                                   tmp_path):
    """A FUSE round trip is the expensive part of reading a small file:
    after a remount the kernel READs each file, then asks for its
    attributes again (the READ made its atime stale). Each body of up to
    1 MiB is put in the page cache at its open instead, so reading 200
    cached messages of two folders (the same uids in each) costs one OPEN
    each: no READ, no LOOKUP or GETATTR; a second read in the same mount
    pushes nothing again. The bytes are the server's BODY[]."""
    dc = private_dovecot
    folders = [new_folder(dc, "Push", sample_mail.sample_messages(100, "push%d" % i,
                                                                  tricky=False))
               for i in range(2)]
    cache = str(tmp_path / "cache")
    m = mount(server=dc, cache_dir=cache, options=["refresh=3600"])
    run(["sh", "-c", "tar cf - -C %s %s | cat >/dev/null" % (m.path, " ".join(folders))],
        timeout=120)
    m.unmount()
    m = mount(server=dc, cache_dir=cache, options=["refresh=3600"])
    paths = [os.path.join(m.p(f), n) for f in folders for n in sorted(os.listdir(m.p(f)))]
    assert len(paths) == 200

    def read_all():
        got = []
        for p in paths:
            size = os.lstat(p).st_size
            with open(p, "rb") as f:
                got.append(f.read())
                assert os.fstat(f.fileno()).st_size == size == len(got[-1]), p
        return got

    before = m.stats()
    got = read_all()
    after = m.stats()
    asked = {k: after[k] - before[k] for k in ("opens", "reads", "getattrs", "bodies_pushed")}
    # Pushed at its open, or before it, as the reader went in order.
    assert asked["opens"] == 200 and asked["bodies_pushed"] >= 200, asked
    assert asked["reads"] == 0 and asked["getattrs"] <= 5, asked
    again = read_all()
    last = m.stats()
    assert last["bodies_pushed"] == after["bodies_pushed"], "pushed twice in one mount"
    assert last["reads"] == after["reads"], "the pages pushed were not kept"
    server = [item[1] for f in folders for item in dc.fetch_all(USER, f, "(BODY.PEEK[])")
              if isinstance(item, tuple)]
    assert sorted(got) == sorted(again) == sorted(server), "bytes differ from the server's BODY[]"


def test_a_stream_pushes_bodies_into_a_read_write_mount_and_a_dropped_page_reads_back(
        mount, private_dovecot):
    """A read-write mount: the small bodies a read-ahead stream brings go
    into the kernel's page cache as they come, so a reader going through
    the folder sends no READ, and its opens find them there without the
    cache's help. Should the kernel let a page go (fadvise DONTNEED), the
    READ that follows gets the body's bytes all the same, through the
    handle of such an open. Bytes as the server's BODY[] each time."""
    dc = private_dovecot
    name = new_folder(dc, "RwPush", sample_mail.sample_messages(60, "rwpush-%d" % next(SEQ),
                                                                tricky=False))
    want = dc.fetch_bodies(USER, name)
    m = mount(server=dc, options=["refresh=3600"])
    folder = m.p(name)
    by_uid = {int(getfattr(os.path.join(folder, n), "user.mail.uid")): n
              for n in listing(folder)}
    first = sorted(by_uid)[:3]
    for u in first:   # in order: a stream starts and goes ahead of the reader
        with open(os.path.join(folder, by_uid[u]), "rb") as f:
            assert f.read() == want[u]
    wait_for(lambda: m.stats()["bodies_pushed"] >= 50, 15,
             what="the stream's bodies pushed into the kernel")
    before = m.stats()
    for u in sorted(by_uid):
        with open(os.path.join(folder, by_uid[u]), "rb") as f:
            assert f.read() == want[u], "message %d differs from BODY[]" % u
    after = m.stats()
    assert after["reads"] - before["reads"] <= 3, \
        "%d READs for bodies pushed as they came" % (after["reads"] - before["reads"])
    victim = sorted(by_uid)[30]
    with open(os.path.join(folder, by_uid[victim]), "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        got = f.read()
        f.seek(0)
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        again = f.read()
    assert got == again == want[victim], "a page let go reads back other bytes"
    assert m.stats()["reads"] > after["reads"], "the kernel let no page go: nothing was checked"


def test_a_large_body_read_once_leaves_the_page_cache_and_read_twice_stays(mount,
                                                                          private_dovecot):
    """The body cache's file holds a message, in the page cache too; a
    second copy in the mount's page cache for every large message a
    backup reads once would double the memory it takes. So a body of 64
    KiB or more leaves the kernel's page cache at its first close in a
    mount: read again it is pushed (up to 1 MiB) or READ again, and from
    its second close on it stays (no push at a third read, nothing dropped). A
    small body stays from the first read on. Every read gives the bytes
    of the server's BODY[]."""
    dc = private_dovecot
    sizes = {"small": 10 * 1024, "pushed": 300 * 1024, "read": 1536 * 1024}
    raws = [sample_mail.build([("From", "a@example.org"), ("Subject", "%s body" % what),
                               ("Message-ID", "<%s.drop@example.org>" % what)],
                              "\n".join(("%s line %d " % (what, i)) * 3
                                         for i in range(size // 60)))
            for what, size in sizes.items()]
    folder = new_folder(dc, "Drop", raws)
    m = mount(server=dc, options=["refresh=3600"])
    names = sorted(os.listdir(m.p(folder)))
    server = {item[1] for item in dc.fetch_all(USER, folder, "(BODY.PEEK[])")
              if isinstance(item, tuple)}
    assert len(names) == 3 and len(server) == 3

    def read_all():
        before = m.stats()
        for n in names:
            with open(os.path.join(m.p(folder), n), "rb") as f:
                assert f.read() in server, "%s: bytes differ from the server's BODY[]" % n
        after = m.stats()
        return {k: after[k] - before[k] for k in ("bodies_pushed", "reads", "bodies_dropped")}

    read_all()
    wait_for(lambda: m.stats()["bodies_dropped"] == 2, 10,
             what="the two large bodies dropped from the page cache at their first close")
    second = read_all()
    assert second["bodies_pushed"] == 1, "the 300 KiB body was not pushed again: %r" % second
    assert second["reads"] > 0, "the 1.5 MiB body was not READ again: %r" % second
    # Read twice, they stay: no drop follows the second close (a bounded look)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert m.stats()["bodies_dropped"] == 2, "dropped again at the second close"
        time.sleep(0.1)
    # Kept: no push. (Not "no READ": the kernel may reclaim a page of its own
    # accord, and under memory pressure it does; then a READ brings it back.)
    third = read_all()
    assert third["bodies_pushed"] == 0 and third["bodies_dropped"] == 0, third

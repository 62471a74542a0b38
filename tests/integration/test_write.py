"""The write path: each row of DESIGN.md's table "What each operation does
(IMAP)", driven with the shell tools scripts use (cp, mv, rm, mkdir, rmdir,
rsync, setfattr) and checked on the server with imaplib only.

These tests change mail, so they use private Dovecots of this module, never
the session account: "move" (Dovecot's own capabilities: MOVE, UIDPLUS),
"nomove" (imap_capability without MOVE and UIDPLUS: UID COPY, then UID STORE
\\Deleted and a plain EXPUNGE only when no other message is \\Deleted) and
"quota" (a small QUOTA STORAGE limit).  Each test works in folders of its
own, so the tests share the servers without seeing each other.
"""

import datetime
import errno
import os
import re
import shutil

import pytest

import sample_mail
from harness import (SEQ, USER, corpus_messages_dir, getfattr, listing, name_of, new_folder, run,
                     server_messages, wait_for)

NO_MOVE_CAPABILITY = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE CHILDREN"
QUOTA_KB = 300


# --- servers --------------------------------------------------------------------

# conftest's module-scoped `servers` (harness.PrivateServers) starts these.
SERVER_KINDS = {
    "move": {},
    "nomove": {"capability": NO_MOVE_CAPABILITY},
    "quota": {"quota_storage_kb": QUOTA_KB},
}


@pytest.fixture
def dc(servers):
    """The server with MOVE and UIDPLUS."""
    return servers.get("move")


@pytest.fixture(params=["move", "nomove"])
def anydc(request, servers):
    """Each of: the server with MOVE and UIDPLUS, the one without both."""
    return servers.get(request.param)


def has_caps(dc):
    return dc.capability is None


# --- the server as imaplib sees it ---------------------------------------------------

def mids(dc, folder, deleted=True):
    """The Message-IDs in folder (a list, so duplicates show)."""
    return sorted(r["mid"] for r in server_messages(dc, folder) or []
                  if deleted or "\\Deleted" not in r["flags"])


def body_of(dc, folder, uid):
    return dc.fetch_bodies(USER, folder, [uid])[uid]


def server_folders(dc):
    return {name for name, flags, _ in dc.list_folders(USER)}


def raw_list(dc):
    """The raw LIST lines (to see the wire encoding of names)."""
    with dc.session(USER) as c:
        typ, data = c.list('""', '"*"')
    return b"\n".join(d if isinstance(d, bytes) else b"".join(d) for d in data if d)


def msgs(n, tag):
    """n distinct well-formed messages (unique Message-IDs per tag)."""
    return sample_mail.sample_messages(n, "w-%s" % tag, tricky=False)


def mount_of(mount, dc, options=()):
    return mount(server=dc, options=["debug"] + list(options))


def assert_once_each(dc, folder, want_mids, m=None):
    got = mids(dc, folder)
    dups = sorted({x for x in got if got.count(x) > 1})
    missing = sorted(set(want_mids) - set(got))
    extra = sorted(set(got) - set(want_mids))
    info = "" if m is None else "\nmailfs log (tail):\n" + m.log_tail()
    assert not dups and not missing and not extra, (
        "%s on the server: %d duplicated %s, %d missing %s, %d unexpected %s%s" % (
            folder, len(dups), dups[:5], len(missing), missing[:5], len(extra), extra[:5],
            info))


# --- cp: APPEND ----------------------------------------------------------------------

def test_cp_appends_byte_identical_with_mtime_as_internaldate(mount, dc, tmp_path):
    folder = new_folder(dc, "CpIn")
    m = mount_of(mount, dc)
    raw = msgs(1, "cp")[0]
    src = tmp_path / "letter.eml"
    src.write_bytes(raw)
    when = datetime.datetime(2021, 6, 7, 8, 9, 10, tzinfo=datetime.timezone.utc)
    os.utime(src, (when.timestamp(), when.timestamp()))
    run(["cp", "-p", str(src), m.p(folder, "given name.eml")])
    srv = server_messages(dc, folder)
    assert len(srv) == 1, "cp -p must APPEND exactly one message: %s\n%s" % (srv, m.log_tail())
    assert body_of(dc, folder, srv[0]["uid"]) == raw, "the appended message differs"
    assert srv[0]["internaldate"] == when, \
        "INTERNALDATE %s, want the file's mtime %s" % (srv[0]["internaldate"], when)
    # The file stays under the name given, at once, with the server's date.
    assert listing(m.p(folder)) == ["given name.eml"]
    st = os.stat(m.p(folder, "given name.eml"))
    assert st.st_size == len(raw)
    assert int(st.st_mtime) == int(when.timestamp())
    with open(m.p(folder, "given name.eml"), "rb") as f:
        assert f.read() == raw


def test_cp_without_p_appends_with_time_of_now(mount, dc, tmp_path):
    folder = new_folder(dc, "CpNow")
    m = mount_of(mount, dc)
    raws = msgs(3, "cpnow")
    for i, raw in enumerate(raws):
        (tmp_path / ("%d.eml" % i)).write_bytes(raw)
        os.utime(tmp_path / ("%d.eml" % i), (1e9, 1e9))  # not carried over without -p
    before = datetime.datetime.now(datetime.timezone.utc)
    run("cp %s/*.eml %s/" % (tmp_path, m.p(folder)))
    srv = server_messages(dc, folder)
    assert sorted(r["mid"] for r in srv) == sorted(sample_mail.message_id(r) for r in raws)
    for r in srv:
        assert abs((r["internaldate"] - before).total_seconds()) < 300, r
    assert listing(m.p(folder)) == ["0.eml", "1.eml", "2.eml"]


def test_cp_corpus_messages(mount, dc, tmp_path):
    """Real-world messages (the corpus): each lands once, byte-identical when
    it has CRLF line endings (Dovecot stores bare LF and serves CRLF)."""
    msgdir = corpus_messages_dir()
    if not msgdir:
        pytest.skip("corpus not found (set CORPUS_DIR or put it at ../shared/corpus)")
    chosen = []
    for n in sorted(os.listdir(msgdir)):
        with open(os.path.join(msgdir, n), "rb") as f:
            data = f.read()
        # Only files that begin with a header field (some are mbox files
        # starting with a "From " line) and that hold no bare LF.
        if not re.match(rb"^[!-9;-~]+:", data) or re.search(rb"(?<!\r)\n", data):
            continue
        if len(data) > 300000:
            continue
        chosen.append((n, data))
    chosen = chosen[::max(1, len(chosen) // 15)][:15]
    assert chosen, "no CRLF corpus message found"
    folder = new_folder(dc, "Corpus")
    m = mount_of(mount, dc)
    for n, data in chosen:
        (tmp_path / n).write_bytes(data)
    bad = []
    for n, data in chosen:
        r = run(["cp", str(tmp_path / n), m.p(folder, n)], check=False)
        if r.returncode != 0:
            bad.append("cp %s: exit %d: %s" % (n, r.returncode, r.stderr.decode().strip()))
    srv = server_messages(dc, folder)
    bodies = dc.fetch_bodies(USER, folder)
    got = sorted(bodies.values())
    want = sorted(d for _, d in chosen)
    if got != want:
        bad.append("the server holds %d messages, want the %d copied byte for byte" % (
            len(got), len(want)))
    assert not bad, "\n".join(bad) + "\n" + m.log_tail()
    assert listing(m.p(folder)) == sorted(n for n, _ in chosen)
    assert len(srv) == len(chosen)


@pytest.mark.parametrize("kind", ["text", "random", "empty"])
def test_junk_is_refused_and_nothing_appended(mount, dc, tmp_path, kind):
    folder = new_folder(dc, "Junk", msgs(2, "junk"))
    m = mount_of(mount, dc)
    before = mids(dc, folder)
    src = tmp_path / "junk"
    if kind == "text":
        src.write_bytes(b"just some notes\nthat are not a mail message at all\n")
    elif kind == "random":
        with open("/dev/urandom", "rb") as f:
            src.write_bytes(b"\x00\xff" + f.read(4094))
    else:
        src.write_bytes(b"")
    r = run(["cp", str(src), m.p(folder, "junk.eml")], check=False)
    assert r.returncode != 0, "cp of %s data into the mount must fail" % kind
    assert "Invalid argument" in r.stderr.decode(errors="replace"), \
        "want EINVAL from close: %s" % r.stderr.decode(errors="replace")
    assert mids(dc, folder) == before, "junk was appended:\n" + m.log_tail()
    assert "junk.eml" not in listing(m.p(folder))
    # The errno, from close() itself.
    fd = os.open(m.p(folder, "junk2.eml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, src.read_bytes() or b"")
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert mids(dc, folder) == before


def test_quota_refusal_is_edquot_and_nothing_appended(mount, servers, tmp_path):
    qdc = servers.get("quota")
    folder = new_folder(qdc, "Full")
    m = mount_of(mount, qdc)
    # A message bigger than the whole quota.
    base = msgs(1, "quota")[0]
    pad = b"".join(b"%076d\r\n" % i for i in range((QUOTA_KB * 1024 * 2) // 78))
    big = base.rstrip(b"\r\n") + b"\r\n" + pad
    src = tmp_path / "big.eml"
    src.write_bytes(big)
    r = run(["cp", str(src), m.p(folder, "big.eml")], check=False)
    assert r.returncode != 0
    assert "Disk quota exceeded" in r.stderr.decode(errors="replace"), \
        "want EDQUOT: %s\n%s" % (r.stderr.decode(errors="replace"), m.log_tail())
    assert server_messages(qdc, folder) == []
    fd = os.open(m.p(folder, "big2.eml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, big)
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EDQUOT, "close: %s" % e.value
    assert server_messages(qdc, folder) == []
    assert "big.eml" not in listing(m.p(folder)) and "big2.eml" not in listing(m.p(folder))
    # A small one still fits.
    small = msgs(2, "quota")[1]
    (tmp_path / "small.eml").write_bytes(small)
    run(["cp", str(tmp_path / "small.eml"), m.p(folder, "small.eml")])
    assert mids(qdc, folder) == [sample_mail.message_id(small)]


def test_df_shows_the_quota(mount, servers):
    qdc = servers.get("quota")
    new_folder(qdc, "Df", msgs(10, "df"))
    with qdc.session(USER) as c:
        typ, data = c.getquotaroot("INBOX")
    text = b" ".join(d for part in data for d in part if isinstance(d, bytes))
    used_kb, limit_kb = map(int, re.search(rb"STORAGE (\d+) (\d+)", text).groups())
    assert limit_kb == QUOTA_KB and used_kb > 0
    m = mount_of(mount, qdc)
    r = run(["df", "-k", "--output=size,used", m.path])
    size, used = map(int, r.stdout.decode().split()[-2:])
    assert abs(size - limit_kb) <= 4, "df size %d KiB, quota limit %d KiB" % (size, limit_kb)
    assert abs(used - used_kb) <= 4, "df used %d KiB, quota usage %d KiB" % (used, used_kb)


# --- mv: MOVE, or COPY + STORE + EXPUNGE ---------------------------------------------

def test_mv_to_another_folder(mount, anydc):
    raws = msgs(4, "mv")
    a = new_folder(anydc, "MvA", raws)
    b = new_folder(anydc, "MvB", msgs(1, "mvb"))
    m = mount_of(mount, anydc)
    name = name_of(raws[1])
    mid = sample_mail.message_id(raws[1])
    before_b = mids(anydc, b)
    run(["mv", m.p(a, name), m.p(b) + "/"])
    # The server: in B once, byte-identical; gone from A (expunged, not
    # left \Deleted, since nothing else in A is \Deleted).
    assert mids(anydc, b) == sorted(before_b + [mid]), m.log_tail()
    moved = [r for r in server_messages(anydc, b) if r["mid"] == mid][0]
    assert body_of(anydc, b, moved["uid"]) == raws[1]
    assert mid not in mids(anydc, a), "the original is still in %s:\n%s" % (a, m.log_tail())
    # The mount, at once: the name is kept.
    assert name in listing(m.p(b))
    assert name not in listing(m.p(a))
    with open(m.p(b, name), "rb") as f:
        assert f.read() == raws[1]
    # A name of the user's own goes along too.
    run(["mv", m.p(a, name_of(raws[2])), m.p(a, "my own name.eml")])
    run(["mv", m.p(a, "my own name.eml"), m.p(b) + "/"])
    assert "my own name.eml" in listing(m.p(b)), listing(m.p(b))
    assert mids(anydc, b) == sorted(before_b + [mid, sample_mail.message_id(raws[2])])
    if not has_caps(anydc):
        assert not re.search(r"UID MOVE", m.log_text()), "UID MOVE sent to a server without MOVE"
        assert re.search(r"UID COPY", m.log_text())
        assert not re.search(r"UID EXPUNGE", m.log_text()), "UID EXPUNGE without UIDPLUS"


def test_mv_within_a_folder_changes_only_the_name(mount, anydc):
    raws = msgs(3, "ren")
    a = new_folder(anydc, "Ren", raws)
    m = mount_of(mount, anydc)
    before = server_messages(anydc, a)
    old = name_of(raws[0])
    run(["mv", m.p(a, old), m.p(a, "renamed.eml")])
    assert server_messages(anydc, a) == before, "a rename in one folder changed the server"
    names = listing(m.p(a))
    assert "renamed.eml" in names and old not in names, names
    with open(m.p(a, "renamed.eml"), "rb") as f:
        assert f.read() == raws[0]
    assert getfattr(m.p(a, "renamed.eml"), "user.mail.uid") == str(before[0]["uid"])


def test_rename_onto_an_existing_message_replaces_it(mount, anydc):
    raws = msgs(3, "onto")
    a = new_folder(anydc, "OntoA", raws)
    b_raws = msgs(2, "ontob")
    b = new_folder(anydc, "OntoB", b_raws)
    m = mount_of(mount, anydc)
    # Across folders: raws[0] replaces b_raws[0] under b_raws[0]'s name.
    target = name_of(b_raws[0])
    run(["mv", m.p(a, name_of(raws[0])), m.p(b, target)])
    assert_once_each(anydc, b, [sample_mail.message_id(raws[0]),
                                sample_mail.message_id(b_raws[1])], m)
    assert sample_mail.message_id(raws[0]) not in mids(anydc, a)
    assert sorted(listing(m.p(b))) == sorted([target, name_of(b_raws[1])])
    with open(m.p(b, target), "rb") as f:
        assert f.read() == raws[0]
    # In one folder: raws[1] replaces raws[2].
    target = name_of(raws[2])
    run(["mv", m.p(a, name_of(raws[1])), m.p(a, target)])
    assert_once_each(anydc, a, [sample_mail.message_id(raws[1])], m)
    assert listing(m.p(a)) == [target]
    with open(m.p(a, target), "rb") as f:
        assert f.read() == raws[1]


def test_rm_expunges(mount, anydc):
    raws = msgs(3, "rm")
    a = new_folder(anydc, "Rm", raws)
    m = mount_of(mount, anydc)
    run(["rm", m.p(a, name_of(raws[1]))])
    assert mids(anydc, a) == sorted(sample_mail.message_id(r) for r in (raws[0], raws[2])), \
        "rm must expunge the message (and only it):\n" + m.log_tail()
    assert listing(m.p(a)) == sorted([name_of(raws[0]), name_of(raws[2])])


def test_rm_with_trash_moves_to_trash(mount, anydc):
    raws = msgs(2, "trash")
    a = new_folder(anydc, "RmT", raws)
    trash = new_folder(anydc, "Trash")
    m = mount_of(mount, anydc, ["trash=" + trash])
    run(["rm", m.p(a, name_of(raws[0]))])
    assert mids(anydc, trash) == [sample_mail.message_id(raws[0])], m.log_tail()
    assert mids(anydc, a) == [sample_mail.message_id(raws[1])]
    assert listing(m.p(a)) == [name_of(raws[1])]
    assert listing(m.p(trash)) == [name_of(raws[0])]


def test_message_deleted_by_another_client_survives_mv_and_rm(mount, anydc):
    raws = msgs(5, "other")
    a = new_folder(anydc, "Other", raws)
    b = new_folder(anydc, "OtherB")
    theirs = server_messages(anydc, a)[0]
    anydc.store_flags(USER, a, theirs["uid"], "+FLAGS", "\\Deleted")
    m = mount_of(mount, anydc)
    assert name_of(raws[0]) not in listing(m.p(a)), "a \\Deleted message must be hidden"
    run(["mv", m.p(a, name_of(raws[1])), m.p(b) + "/"])
    run(["rm", m.p(a, name_of(raws[2]))])
    run("mv %s %s %s/" % (m.p(a, name_of(raws[3])), m.p(a, name_of(raws[4])), m.p(b)))
    srv = {r["mid"]: r for r in server_messages(anydc, a)}
    mid0 = sample_mail.message_id(raws[0])
    assert mid0 in srv, "another client's \\Deleted message was expunged:\n" + m.log_tail()
    assert "\\Deleted" in srv[mid0]["flags"]
    assert_once_each(anydc, b, [sample_mail.message_id(r) for r in (raws[1], raws[3], raws[4])], m)
    # What we removed is gone, or (without UIDPLUS) left \Deleted and hidden.
    for r in raws[1:]:
        mid = sample_mail.message_id(r)
        if has_caps(anydc):
            assert mid not in srv, "%s was not expunged with UID EXPUNGE" % mid
        else:
            assert mid not in srv or "\\Deleted" in srv[mid]["flags"], mid
    assert listing(m.p(a)) == []
    assert sorted(listing(m.p(b))) == sorted(name_of(r) for r in (raws[1], raws[3], raws[4]))
    if not has_caps(anydc):
        assert re.search(r"UIDPLUS", m.log_text()), \
            "the log must say why the original stays flagged \\Deleted"


def test_show_deleted_lists_deleted_messages(mount, dc):
    raws = msgs(2, "showdel")
    a = new_folder(dc, "ShowDel", raws)
    dc.store_flags(USER, a, server_messages(dc, a)[0]["uid"], "+FLAGS", "\\Deleted")
    m = mount_of(mount, dc)
    assert listing(m.p(a)) == [name_of(raws[1])]
    m2 = mount_of(mount, dc, ["show_deleted"])
    assert listing(m2.p(a)) == sorted(name_of(r) for r in raws)


def test_mv_of_200_messages_loses_none_and_duplicates_none(mount, anydc):
    raws = msgs(200, "many")
    a = new_folder(anydc, "ManyA", raws)
    b = new_folder(anydc, "ManyB")
    m = mount_of(mount, anydc)
    names = listing(m.p(a))
    assert len(names) == 200
    run("mv %s/* %s/" % (m.p(a), m.p(b)), timeout=300)
    assert_once_each(anydc, b, [sample_mail.message_id(r) for r in raws], m)
    assert mids(anydc, a) == [], "messages left in the source folder"
    assert listing(m.p(b)) == names
    assert listing(m.p(a)) == []


# --- rsync ----------------------------------------------------------------------------

def test_rsync_of_50_messages(mount, dc, tmp_path):
    raws = msgs(50, "rsync")
    src = tmp_path / "src"
    src.mkdir()
    want = {}
    for i, raw in enumerate(raws):
        n = "msg-%02d.eml" % i
        (src / n).write_bytes(raw)
        want[n] = raw
    folder = new_folder(dc, "Rsync")
    m = mount_of(mount, dc)
    run(["rsync", "-r", str(src) + "/", m.p(folder) + "/"], timeout=300)
    assert_once_each(dc, folder, [sample_mail.message_id(r) for r in raws], m)
    assert listing(m.p(folder)) == sorted(want), "rsync's names (no .name.XXXXXX left)"
    for n in ("msg-00.eml", "msg-49.eml"):
        with open(m.p(folder, n), "rb") as f:
            assert f.read() == want[n]
    # Again (rsync sees other mtimes and sends every file again, renaming
    # each onto the old one): still 50, once each.
    run(["rsync", "-r", str(src) + "/", m.p(folder) + "/"], timeout=300)
    assert_once_each(dc, folder, [sample_mail.message_id(r) for r in raws], m)
    assert listing(m.p(folder)) == sorted(want)


# --- folders -------------------------------------------------------------------------

def test_mkdir_of_a_folder_another_client_made_is_eexist(mount, dc):
    m = mount_of(mount, dc)
    name = "Theirs%d" % next(SEQ)
    assert name not in listing(m.path)
    dc.create_folder(USER, name)
    r = run(["mkdir", m.p(name)], check=False)
    assert r.returncode != 0 and b"File exists" in r.stderr, \
        "mkdir of a folder the server has: %r" % r.stderr
    wait_for(lambda: name in listing(m.path), 10, what="the folder to show up")


def test_mkdir_creates_folders(mount, dc):
    m = mount_of(mount, dc)
    tag = next(SEQ)
    plain, deep, umlaut = "Plain%d" % tag, "Deep%d" % tag, "Entwürfe%d" % tag
    run(["mkdir", m.p(plain)])
    run(["mkdir", "-p", m.p(deep, "er", "nest")])
    run(["mkdir", m.p(umlaut)])
    folders = server_folders(dc)
    for f in (plain, deep + "/er/nest", umlaut):
        assert f in folders, "%s not in LIST: %s" % (f, sorted(folders))
    assert ("Entw&APw-rfe%d" % tag).encode() in raw_list(dc), \
        "the name must go out in modified UTF-7"
    root = listing(m.path)
    assert plain in root and deep in root and umlaut in root
    assert listing(m.p(deep, "er")) == ["nest"]
    # The new folders take mail at once.
    raw = msgs(1, "mkdir")[0]
    with open(m.p(umlaut, "x.eml"), "wb") as f:
        f.write(raw)
    assert mids(dc, umlaut) == [sample_mail.message_id(raw)]


def test_rmdir(mount, dc):
    empty = new_folder(dc, "Gone")
    full = new_folder(dc, "Kept", msgs(1, "rmdir"))
    parent = new_folder(dc, "Parent")
    dc.create_folder(USER, parent + "/child")
    m = mount_of(mount, dc)
    run(["rmdir", m.p(empty)])
    assert empty not in server_folders(dc)
    assert empty not in listing(m.path)
    for d in (full, parent):
        r = run(["rmdir", m.p(d)], check=False)
        assert r.returncode != 0 and "Directory not empty" in r.stderr.decode(), \
            "rmdir %s: %r" % (d, r.stderr)
        assert d in server_folders(dc), "%s was deleted on the server" % d
        assert d in listing(m.path)
    with pytest.raises(OSError) as e:
        os.rmdir(m.p(full))
    assert e.value.errno == errno.ENOTEMPTY
    assert len(mids(dc, full)) == 1


def test_mv_directory_renames_the_folder(mount, dc):
    raws = msgs(3, "rendir")
    a = new_folder(dc, "DirA", raws)
    b = "DirB%d" % next(SEQ)
    m = mount_of(mount, dc)
    run(["mv", m.p(a), m.p(b)])
    folders = server_folders(dc)
    assert b in folders and a not in folders, sorted(folders)
    assert_once_each(dc, b, [sample_mail.message_id(r) for r in raws], m)
    assert b in listing(m.path) and a not in listing(m.path)
    assert listing(m.p(b)) == sorted(name_of(r) for r in raws)


# --- flags ----------------------------------------------------------------------------

def test_setfattr_sets_the_flags(mount, dc):
    raws = msgs(2, "flags")
    a = new_folder(dc, "Flags", raws)
    m = mount_of(mount, dc)
    path = m.p(a, name_of(raws[0]))
    run(["setfattr", "-n", "user.mail.flags", "-v", "\\Seen \\Flagged $Work", path])
    srv = server_messages(dc, a)
    assert srv[0]["flags"] == {"\\Seen", "\\Flagged", "$Work"}, srv[0]
    assert srv[1]["flags"] == set(), "the other message changed"
    assert set(getfattr(path, "user.mail.flags").split()) == {"\\Seen", "\\Flagged", "$Work"}
    run(["setfattr", "-n", "user.mail.flags", "-v", "\\Answered", path])
    assert server_messages(dc, a)[0]["flags"] == {"\\Answered"}, "FLAGS replaces the flags"


def test_mark_seen(mount, dc):
    raws = msgs(2, "seen")
    a = new_folder(dc, "Seen", raws)
    m = mount_of(mount, dc, ["mark_seen"])
    with open(m.p(a, name_of(raws[0])), "rb") as f:
        assert f.read() == raws[0]
    wait_for(lambda: "\\Seen" in server_messages(dc, a)[0]["flags"], 15,
             what="\\Seen on the message read with -o mark_seen")
    assert "\\Seen" not in server_messages(dc, a)[1]["flags"]


def test_mark_seen_reading_in_order_marks_only_what_was_read(mount, dc):
    """Reading in name order starts read-ahead without mark_seen; with it,
    the messages fetched must be exactly the ones read."""
    raws = msgs(12, "seenorder")
    a = new_folder(dc, "SeenOrder", raws)
    m = mount_of(mount, dc, ["mark_seen"])
    names = sorted(os.listdir(m.p(a)))
    for n in names[:4]:
        with open(m.p(a, n), "rb") as f:
            f.read()
    seen = [x for x in server_messages(dc, a) if "\\Seen" in x["flags"]]
    assert len(seen) == 4, "read 4 messages in order with mark_seen, %d are \\Seen" % len(seen)


# --- refusals --------------------------------------------------------------------------

def test_write_into_an_existing_message_is_eperm(mount, dc):
    raws = msgs(1, "eperm")
    a = new_folder(dc, "Eperm", raws)
    m = mount_of(mount, dc)
    path = m.p(a, name_of(raws[0]))
    r = run("echo x >> '%s'" % path, check=False)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr.decode(), r.stderr
    for mode in (os.O_WRONLY | os.O_APPEND, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        with pytest.raises(OSError) as e:
            fd = os.open(path, mode)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
        assert e.value.errno == errno.EPERM, (mode, e.value)
    with pytest.raises(OSError) as e:
        os.truncate(path, 0)
    assert e.value.errno == errno.EPERM
    assert body_of(dc, a, server_messages(dc, a)[0]["uid"]) == raws[0]
    with open(path, "rb") as f:
        assert f.read() == raws[0]


def test_read_only_mount_is_erofs(mount, dc, tmp_path):
    raws = msgs(2, "ro")
    a = new_folder(dc, "Ro", raws)
    b = new_folder(dc, "RoB")
    m = mount_of(mount, dc, ["ro"])
    before = server_messages(dc, a)
    path = m.p(a, name_of(raws[0]))
    (tmp_path / "new.eml").write_bytes(msgs(3, "ro")[2])
    checks = {
        "cp": lambda: shutil.copyfile(str(tmp_path / "new.eml"), m.p(a, "new.eml")),
        "rm": lambda: os.unlink(path),
        "mkdir": lambda: os.mkdir(m.p("NewDir")),
        "rmdir": lambda: os.rmdir(m.p(b)),
        "mv": lambda: os.rename(path, m.p(b, "x.eml")),
        "rename": lambda: os.rename(path, m.p(a, "x.eml")),
        "mv dir": lambda: os.rename(m.p(b), m.p("RoC")),
        "setfattr": lambda: os.setxattr(path, "user.mail.flags", b"\\Seen"),
        "write": lambda: open(path, "ab").close(),
    }
    bad = []
    for what, fn in checks.items():
        try:
            fn()
            bad.append("%s succeeded" % what)
        except OSError as e:
            if e.errno != errno.EROFS:
                bad.append("%s: %s, want EROFS" % (what, e))
    r = run(["cp", str(tmp_path / "new.eml"), m.p(a) + "/"], check=False)
    if "Read-only file system" not in r.stderr.decode():
        bad.append("cp: %r" % r.stderr)
    assert not bad, "\n".join(bad)
    assert server_messages(dc, a) == before
    assert server_messages(dc, b) == []
    assert "NewDir" not in server_folders(dc)

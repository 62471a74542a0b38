"""The read path, checked against what imaplib sees on the server.

Each test mounts the session account afresh (its own cache directory) and
drives the mount with the shell tools users use: ls, find, stat, cat, cp,
grep, du, getfattr.
"""

import collections
import hashlib
import json
import os
import random
import re

import pytest

import sample_mail
from harness import (GENERATED, PASSWORD, append_samples, files_in, getfattr, listing, run,
                     server_url, unix_time, wait_for)

STATS_KEYS = ("bytes_received", "bytes_sent", "bodies_fetched", "body_bytes_fetched",
              "cache_hits", "cache_misses", "connections_open", "reconnects", "folders_synced")


def stat_files(path):
    """{name: (size, mtime, blocks, mode_octal, type)} from stat(1)."""
    names = files_in(path)
    if not names:
        return {}
    r = run(["stat", "-c", "%n\t%s\t%Y\t%b\t%a\t%F"] + [os.path.join(path, n) for n in names])
    out = {}
    for line in r.stdout.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        full, size, mtime, blocks, mode, ftype = line.split("\t")
        out[os.path.basename(full)] = (int(size), int(mtime), int(blocks), mode, ftype)
    return out


def no_recent(flags):
    return set(flags) - {"\\Recent"}


def diff_msg(got, want):
    got, want = set(got), set(want)
    return "missing: %s\nunexpected: %s" % (sorted(want - got)[:20], sorted(got - want)[:20])


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --- the tree ------------------------------------------------------------------

def test_folder_tree_matches_list(mount, account):
    m = mount()
    r = run(["find", m.path, "-mindepth", "1", "-type", "d", "-printf", "%P\\n"])
    dirs = {d for d in r.stdout.decode("utf-8").split("\n") if d}
    server = {name for name, _, _ in account.folders()}
    assert dirs == server, "directories differ from the server's LIST:\n" + diff_msg(dirs, server)
    for must in ("INBOX", "Archive/2023", "Entwürfe", "Lists/debian", "Empty"):
        assert os.path.isdir(m.p(must)), "%s is not a directory" % must
    assert "Entwürfe" in listing(m.path), "the non-ASCII folder is not listed as UTF-8"
    st = os.stat(m.p("Archive"))
    assert st.st_mode & 0o777 == 0o755, "directory mode %o, want 0755" % (st.st_mode & 0o777)


def test_noselect_folder_has_only_children(mount, account):
    flags = {n: f for n, f, _ in account.folders()}
    if "\\Noselect" not in flags.get("Lists", set()):
        pytest.skip("the server did not make Lists \\Noselect")
    m = mount()
    assert listing(m.p("Lists")) == ["debian"], "a \\Noselect folder must hold no files"
    assert files_in(m.p("Lists")) == []


def test_file_count_per_folder(mount, account):
    m = mount()
    bad = []
    for folder in account.selectable():
        n_server = len(account.meta(folder))
        n_files = len(files_in(m.p(folder)))
        if n_server != n_files:
            bad.append("%s: %d files, server has %d messages" % (folder, n_files, n_server))
    assert not bad, "\n".join(bad)


def test_names_of_generated_messages(mount, account):
    m = mount()
    bad = []
    for folder in GENERATED:
        want = set(account.expected_names(folder).values())
        got = set(files_in(m.p(folder)))
        if got != want:
            bad.append("%s:\n%s" % (folder, diff_msg(got, want)))
    assert not bad, "names differ from DESIGN.md's rule:\n" + "\n".join(bad)


def test_name_collisions_get_suffix(mount, account):
    m = mount()
    names = files_in(m.p("INBOX"))
    for stem in ("_Weekly-report_", "_Ping_"):
        group = sorted(n for n in names if stem in n)
        assert len(group) == 2, "expected two messages with %r, got %s" % (stem, group)
        assert group[0].endswith("~2.eml") or group[1].endswith("~2.eml"), group
    # The lower UID keeps the bare name.
    expected = account.expected_names("INBOX")
    uids = sorted(u for u, n in expected.items() if "_Weekly-report_" in n)
    assert not expected[uids[0]].endswith("~2.eml")
    bare = expected[uids[0]]
    assert getfattr(m.p("INBOX", bare), "user.mail.uid").strip() == str(uids[0]), \
        "the lower UID must keep the name without ~2"


def test_names_of_corpus_messages_have_the_form(mount, corpus_folder):
    m = mount()
    names = files_in(m.p(corpus_folder))
    bad = [n for n in names if not sample_mail.NAME_RE.match(n)]
    assert not bad, "names not of the form YYYYMMDD-HHMM_slug_h8.eml: %s" % bad[:10]
    long_slugs = [n for n in names if len(sample_mail.NAME_RE.match(n).group(2).encode()) > 60]
    assert not long_slugs, "slugs over 60 bytes: %s" % long_slugs
    assert len(set(names)) == len(names)


def test_names_uid(mount, account):
    m = mount(options=["names=uid"])
    for folder in ("INBOX", "Entwürfe"):
        want = {"%d.eml" % r["uid"] for r in account.meta(folder)}
        got = set(files_in(m.p(folder)))
        assert got == want, "names=uid in %s:\n%s" % (folder, diff_msg(got, want))


# --- attributes ----------------------------------------------------------------

def test_sizes_and_mtimes(mount, account):
    """st_size == RFC822.SIZE and st_mtime == INTERNALDATE; per name where the
    name is predictable, and as a multiset for every folder."""
    m = mount()
    bad = []
    for folder in account.selectable():
        meta = account.meta(folder)
        st = stat_files(m.p(folder))
        got = collections.Counter((s[0], s[1]) for s in st.values())
        want = collections.Counter((r["size"], unix_time(r["internaldate"])) for r in meta)
        if got != want:
            bad.append("%s: (size, mtime) pairs differ: missing %s unexpected %s" % (
                folder, list((want - got).elements())[:5], list((got - want).elements())[:5]))
        if account.generated.get(folder):
            names = account.expected_names(folder)
            for r in meta:
                s = st.get(names[r["uid"]])
                if s is None:
                    continue  # reported by the names test
                if s[0] != r["size"]:
                    bad.append("%s/%s: st_size %d, RFC822.SIZE %d" % (folder, names[r["uid"]], s[0],
                                                                       r["size"]))
                if s[1] != unix_time(r["internaldate"]):
                    bad.append("%s/%s: st_mtime %d, INTERNALDATE %s" % (
                        folder, names[r["uid"]], s[1], r["internaldate"]))
        for name, s in st.items():
            if s[3] != "644" or s[4] != "regular file":
                bad.append("%s/%s: mode %s type %s, want 644 regular file" % (folder, name, s[3], s[4]))
    assert not bad, "\n".join(bad[:30])
    assert m.stats()["bodies_fetched"] == 0, "stat must not download bodies"


def test_blocks_and_du(mount, account):
    m = mount()
    bad = []
    for name, s in stat_files(m.p("INBOX")).items():
        size, blocks = s[0], s[2]
        if not (blocks * 512 >= size and blocks * 512 <= size + 4096):
            bad.append("%s: st_size %d but st_blocks %d" % (name, size, blocks))
    assert not bad, "\n".join(bad[:20])
    total = sum(r["size"] for r in account.meta("INBOX"))
    r = run(["du", "-sk", m.p("INBOX")])
    du_kib = int(r.stdout.split()[0])
    assert total / 1024 <= du_kib <= total / 1024 + 4 * len(account.meta("INBOX")) + 8, \
        "du -sk says %d KiB for %d bytes of mail" % (du_kib, total)
    assert m.stats()["bodies_fetched"] == 0, "du must not download bodies"


# --- content -------------------------------------------------------------------

def test_content_byte_identical(mount, account, tmp_path):
    m = mount()
    bad = []
    for i, folder in enumerate(account.selectable()):
        bodies = account.bodies(folder)
        dest = tmp_path / ("copy-%d" % i) / "x"
        dest.parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-r", m.p(folder), str(dest)], timeout=120)
        copied = {n: (dest / n).read_bytes() for n in os.listdir(dest) if (dest / n).is_file()}
        got = collections.Counter(sha(d) for d in copied.values())
        want = collections.Counter(sha(b) for b in bodies.values())
        if got != want:
            bad.append("%s: %d files differ from the server's BODY[]" % (
                folder, sum((want - got).values())))
        if account.generated.get(folder):
            names = account.expected_names(folder)
            for uid, body in bodies.items():
                data = copied.get(names[uid])
                if data is not None and data != body:
                    bad.append("%s/%s: %d bytes, server's BODY[] has %d (first difference at %d)" % (
                        folder, names[uid], len(data), len(body),
                        next((i for i, (a, b) in enumerate(zip(data, body)) if a != b),
                             min(len(data), len(body)))))
    assert not bad, "\n".join(bad[:30])


def test_large_message_read_with_cat(mount, account):
    names = account.expected_names("INBOX")
    bodies = account.bodies("INBOX")
    uid = max(bodies, key=lambda u: len(bodies[u]))
    assert len(bodies[uid]) > 1536 * 1024
    m = mount()
    r = run(["cat", m.p("INBOX", names[uid])], timeout=120)
    assert r.stdout == bodies[uid], "cat of the %d-byte message gave %d bytes, not BODY[]" % (
        len(bodies[uid]), len(r.stdout))


def test_grep_finds_protocol_lookalike_line(mount, account):
    names = account.expected_names("INBOX")
    bodies = account.bodies("INBOX")
    want = sorted(names[u] for u, b in bodies.items() if b"A1 OK FETCH completed" in b)
    assert want
    m = mount()
    r = run(["grep", "-rlF", "A1 OK FETCH completed", m.p("INBOX")], check=False, timeout=120)
    got = sorted(os.path.basename(p) for p in r.stdout.decode().split("\n") if p)
    assert got == want, "grep -l found %s, want %s" % (got, want)
    dots = [u for u, b in bodies.items() if b"\r\n.\r\n..\r\n" in b]
    assert dots
    for u in dots:
        with open(m.p("INBOX", names[u]), "rb") as f:
            assert f.read() == bodies[u], "dot lines must arrive unchanged"


def test_reading_sets_no_seen(mount, account):
    m = mount()
    run("find %s -type f -exec cat {} + > /dev/null" % m.path, timeout=180)
    changed = []
    for folder in account.selectable():
        before = {r["uid"]: no_recent(r["flags"]) for r in account.meta(folder)}
        after = {r["uid"]: no_recent(r["flags"]) for r in account.fresh_meta(folder)}
        for uid in before:
            if before[uid] != after.get(uid):
                changed.append("%s UID %d: %s -> %s" % (folder, uid, sorted(before[uid]),
                                                         sorted(after.get(uid, set()))))
    assert not changed, "reading changed flags on the server:\n" + "\n".join(changed[:20])


# --- what goes over the wire ----------------------------------------------------

def test_ls_lR_downloads_no_bodies(mount, account, session_dovecot):
    dc = session_dovecot
    total = account.total_size()
    mark = dc.log_offset()
    m = mount()
    run(["ls", "-lR", m.path], timeout=120)
    stats = m.stats()
    assert stats["bodies_fetched"] == 0, "ls -lR fetched %d bodies" % stats["bodies_fetched"]
    assert stats["bytes_received"] < total * 0.25, \
        "ls -lR received %d bytes for a mailbox of %d bytes" % (stats["bytes_received"], total)
    m.unmount()
    logins = wait_for(lambda: dc.logins("alice", since=mark), 5, what="a login in the log")
    try:
        sessions = wait_for(
            lambda: (lambda s: s if len(s) >= len(logins) else None)(
                dc.sessions("alice", since=mark)),
            30, what="a logout line for each of mailfs's %d sessions" % len(logins))
    except AssertionError as e:
        # mailfs has exited (unmount waits for it): every session it had
        # is closed. Show which one Dovecot has not ended.
        raise AssertionError("%s\nlogins:\n%s\nended:\n%s" % (
            e, "\n".join(dc.logins("alice", since=mark)),
            "\n".join(s["line"] for s in dc.sessions("alice", since=mark))))
    out = sum(s["out"] for s in sessions)
    assert out < total * 0.25, "Dovecot sent %d bytes (out=) for a %d-byte mailbox" % (out, total)
    bodies = [s["line"] for s in sessions if s.get("body_count")]
    assert not bodies, "Dovecot counted body fetches:\n" + "\n".join(bodies)


def test_second_listing_from_cache(mount, account):
    # watch=0: the first listing brings every folder into use, and the
    # push that then starts watching them (an EXAMINE and an IDLE each,
    # within a second) is traffic of its own, not the listing's. On a
    # slow machine it landed between the two listings (fresh Debian run).
    m = mount(options=["refresh=3600", "watch=0"])
    run(["ls", "-lR", m.path], timeout=120)
    before = m.stats()
    run(["ls", "-lR", m.path], timeout=120)
    run(["stat", m.p("INBOX")])
    after = m.stats()
    assert after["bytes_received"] == before["bytes_received"], \
        "the second ls -lR went to the server: %d -> %d bytes" % (before["bytes_received"],
                                                                  after["bytes_received"])
    assert after["bytes_sent"] == before["bytes_sent"]


def test_same_names_from_fresh_cache(mount, account):
    def tree(m):
        r = run(["find", m.path, "-mindepth", "1", "-printf", "%P\\n"], timeout=120)
        return sorted(r.stdout.decode("utf-8").split("\n"))

    m1 = mount()
    t1 = tree(m1)
    m1.unmount()
    m2 = mount()
    t2 = tree(m2)
    assert t1 == t2, "a second mount with a new cache names files differently:\n" + diff_msg(t2, t1)


def test_second_read_is_local(mount, account):
    names = account.expected_names("Archive")
    uid = sorted(names)[0]
    m = mount(options=["refresh=3600"])
    path = m.p("Archive", names[uid])
    first = run(["cat", path]).stdout
    s1 = m.stats()
    assert s1["bodies_fetched"] >= 1
    second = run(["cat", path]).stdout
    s2 = m.stats()
    assert first == second == account.bodies("Archive")[uid]
    assert s2["bodies_fetched"] == s1["bodies_fetched"], "the second read fetched the body again"
    assert s2["body_bytes_fetched"] == s1["body_bytes_fetched"]


def test_body_cache_survives_remount(mount, account, tmp_path):
    names = account.expected_names("Archive")
    uid = sorted(names)[1]
    cache = str(tmp_path / "shared-cache")
    m1 = mount(cache_dir=cache)
    run(["cat", m1.p("Archive", names[uid])])
    m1.unmount()
    m2 = mount(cache_dir=cache, options=["refresh=3600"])
    data = run(["cat", m2.p("Archive", names[uid])]).stdout
    assert data == account.bodies("Archive")[uid]
    assert m2.stats()["bodies_fetched"] == 0, "a body cached by the last mount was fetched again"


# --- changes on the server -------------------------------------------------------

@pytest.fixture
def live_folder(session_dovecot, request):
    name = "Live-" + request.node.name.replace("test_", "")[:30]
    dc = session_dovecot
    dc.create_folder("alice", name)
    raws = sample_mail.sample_messages(3, 11, tricky=False)
    uids = append_samples(dc, name, raws, 11)
    yield name, uids, raws
    dc.delete_folder("alice", name)


def test_new_mail_appears(mount, session_dovecot, live_folder):
    folder, uids, _ = live_folder
    m = mount(options=["refresh=1"])
    assert len(files_in(m.p(folder))) == 3
    raw = sample_mail.sample_messages(4, 12, tricky=False)[3]
    date = sample_mail.sample_internaldate(3, 12)
    session_dovecot.append("alice", folder, raw, date_time=date)
    name = sample_mail.expected_name(raw, date)
    wait_for(lambda: name in files_in(m.p(folder)), 15, interval=0.25,
             what="%s to appear after APPEND" % name)
    assert run(["cat", m.p(folder, name)]).stdout == raw


def test_expunged_mail_disappears(mount, session_dovecot, live_folder):
    folder, uids, raws = live_folder
    m = mount(options=["refresh=1"])
    name = sample_mail.expected_name(raws[0], sample_mail.sample_internaldate(0, 11))
    assert name in files_in(m.p(folder))
    session_dovecot.expunge_uids("alice", folder, [uids[0]])
    wait_for(lambda: name not in files_in(m.p(folder)), 15, interval=0.25,
             what="%s to disappear after EXPUNGE" % name)
    assert len(files_in(m.p(folder))) == 2


def test_flag_changes_show_in_xattr(mount, session_dovecot, live_folder):
    folder, uids, raws = live_folder
    m = mount(options=["refresh=1"])
    name = sample_mail.expected_name(raws[1], sample_mail.sample_internaldate(1, 11))
    path = m.p(folder, name)
    assert "\\Flagged" not in getfattr(path, "user.mail.flags").split()
    session_dovecot.store_flags("alice", folder, uids[1], "+FLAGS", "\\Flagged $Work")

    def flagged():
        run(["ls", m.p(folder)])
        fl = getfattr(path, "user.mail.flags").split()
        return "\\Flagged" in fl and "$Work" in fl

    wait_for(flagged, 15, interval=0.25, what="\\Flagged $Work in user.mail.flags")


# --- xattrs --------------------------------------------------------------------

def test_xattr_uid_and_flags(mount, account):
    m = mount()
    names = account.expected_names("INBOX")
    bad = []
    for r in account.meta("INBOX"):
        path = m.p("INBOX", names[r["uid"]])
        if not os.path.exists(path):
            continue  # reported by the names test
        uid = getfattr(path, "user.mail.uid").strip()
        flags = set(getfattr(path, "user.mail.flags").split())
        if uid != str(r["uid"]):
            bad.append("%s: user.mail.uid %r, UID %d" % (names[r["uid"]], uid, r["uid"]))
        if no_recent(flags) != no_recent(r["flags"]):
            bad.append("%s: user.mail.flags %s, FLAGS %s" % (names[r["uid"]], sorted(flags),
                                                             sorted(r["flags"])))
    assert not bad, "\n".join(bad)
    assert any(r["flags"] & {"$Label1"} for r in account.meta("INBOX")), "no keyword was tested"


def test_xattr_headers(mount, account):
    m = mount()
    names = account.expected_names("INBOX")
    bodies = account.bodies("INBOX")
    bad = []
    for uid, body in bodies.items():
        path = m.p("INBOX", names[uid])
        if not os.path.exists(path):
            continue
        r = run(["getfattr", "-d", "--absolute-names", path])
        listed = set(re.findall(r"^(user\.[\w.]+)=", r.stdout.decode("utf-8", "replace"), re.M))
        # The flags and the uid are listed; the header values are asked
        # for by name (restic and borg ask for each listed one, per file)
        if listed != {"user.mail.flags", "user.mail.uid"}:
            bad.append("%s: getfattr -d lists %s" % (names[uid], sorted(listed)))
        subject = sample_mail.decoded_subject(body)
        got = getfattr(path, "user.mail.subject", check=False)
        if subject is not None and " ".join((got or "").split()) != " ".join(subject.split()):
            bad.append("%s: user.mail.subject %r, want %r" % (names[uid], got, subject))
        mid = sample_mail.message_id(body)
        got = getfattr(path, "user.mail.message_id", check=False)
        if mid is not None and (got or "").strip().strip("<>") != mid:
            bad.append("%s: user.mail.message_id %r, want %r" % (names[uid], got, mid))
        frm = getfattr(path, "user.mail.from", check=False) or ""
        addr = re.search(rb"<([^>]+)>", dict(sample_mail.raw_headers(body))["from"]).group(1)
        if addr.decode() not in frm:
            bad.append("%s: user.mail.from %r lacks %s" % (names[uid], frm, addr.decode()))
        if sample_mail.header_date(body) is not None and not getfattr(path, "user.mail.date",
                                                                       check=False):
            bad.append("%s: no user.mail.date" % names[uid])
    assert not bad, "\n".join(bad[:30])


def test_root_stats_json(mount, account):
    m = mount()
    raw = getfattr(m.path, "user.mailfs.stats")
    stats = json.loads(raw)
    missing = [k for k in STATS_KEYS if k not in stats]
    assert not missing, "user.mailfs.stats lacks %s: %s" % (missing, raw)
    notint = [k for k in STATS_KEYS if not isinstance(stats[k], int) or isinstance(stats[k], bool)]
    assert not notint, "not integers: %s" % notint
    assert stats["connections_open"] >= 1
    assert stats["bytes_received"] > 0


# --- transports and password sources -----------------------------------------------

def test_starttls_mount(mount, account, session_dovecot):
    dc = session_dovecot
    mark = dc.log_offset()
    m = mount(url=server_url(dc, "imap"))
    assert "INBOX" in listing(m.path)
    assert len(files_in(m.p("INBOX"))) == len(account.meta("INBOX"))
    logins = dc.logins("alice", since=mark)
    assert logins and all(", TLS" in line for line in logins), \
        "imap:// must log in after STARTTLS; Dovecot logged:\n" + "\n".join(logins)


def test_tls_none_mount(mount, account, session_dovecot):
    dc = session_dovecot
    mark = dc.log_offset()
    m = mount(url=server_url(dc, "imap"), options=["tls=none"],
              cafile=False)
    assert len(files_in(m.p("INBOX"))) == len(account.meta("INBOX"))
    logins = dc.logins("alice", since=mark)
    assert logins and not any(", TLS" in line for line in logins), \
        "tls=none must not use TLS; Dovecot logged:\n" + "\n".join(logins)


def test_password_file(mount, account, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    os.chmod(pw, 0o600)
    m = mount(options=["password_file=%s" % pw], password=None)
    assert "INBOX" in listing(m.path)


def test_password_command(mount, account):
    m = mount(options=["password_command=echo %s" % PASSWORD], password=None)
    assert "INBOX" in listing(m.path)


def test_daemon_mode(mount, account):
    m = mount(foreground=False)
    assert len(files_in(m.p("INBOX"))) == len(account.meta("INBOX"))
    m.unmount()


def test_debug_trace_uses_examine_and_peek(mount, account):
    """The read path opens folders with EXAMINE, fetches with BODY.PEEK and
    fetches a message over 1 MiB in ranges (seen in -o debug's C: lines)."""
    names = account.expected_names("INBOX")
    bodies = account.bodies("INBOX")
    large = max(bodies, key=lambda u: len(bodies[u]))
    m = mount(options=["debug"])
    run(["ls", "-lR", m.path], timeout=120)
    run(["cat", m.p("INBOX", names[large]), m.p("INBOX", names[min(bodies)])], timeout=120)
    m.unmount()
    sent = [re.sub(r"^.*?\bC: ", "", line) for line in m.log_text().split("\n")
            if re.search(r"\bC: \S+ [A-Z]", line)]
    assert sent, "the -o debug log has no 'C: <tag> <command>' lines to check:\n%s" % (
        m.log_tail(20))
    commands = [s.split(" ", 2)[1:] for s in sent]
    selects = [s for s in sent if re.match(r"\S+ SELECT\b", s)]
    assert not selects, "the read path must use EXAMINE, not SELECT: %s" % selects[:3]
    assert any(c[0] == "EXAMINE" for c in commands), "no EXAMINE was sent"
    fetches = [s for s in sent if re.match(r"\S+ UID FETCH\b", s, re.I)]
    unpeeked = [s for s in fetches if re.search(r"\b(BODY\[|RFC822\b(?!\.SIZE)|RFC822\.TEXT|BINARY\[)", s)]
    assert not unpeeked, "fetches without PEEK would set \\Seen: %s" % unpeeked[:3]
    ranged = [s for s in fetches if re.search(r"BODY\.PEEK\[\]<\d+\.\d+>", s)]
    assert ranged, "the %d-byte message was not fetched in ranges (BODY.PEEK[]<off.len>)" % (
        len(bodies[large]))


@pytest.mark.parametrize("tool", ["cp", "rsync"])
def test_sequential_reading_fetches_ahead(mount, private_dovecot, tmp_path, tool):
    """Backup tools read a folder in order: cp -r in the order its files
    first appeared (a first listing shows them in UID order, as they
    arrive), rsync in name order; here the two differ. Either way, after a
    few such reads the bodies that follow come in one UID FETCH of several
    UIDs, and every copy is still byte-identical to the server's BODY[]."""
    dc = private_dovecot
    raws = sample_mail.sample_messages(40, 11, tricky=False)
    random.Random(11).shuffle(raws)  # names (dates first) out of UID order
    dc.create_folder("alice", "Seq")
    append_samples(dc, "Seq", raws, 11)
    bodies = dc.fetch_bodies("alice", "Seq")
    m = mount(options=["debug"], server=dc)
    dest = tmp_path / "copy"
    if tool == "cp":
        run(["cp", "-r", m.p("Seq"), str(dest)], timeout=120)
    else:
        run(["rsync", "-r", m.p("Seq") + "/", str(dest) + "/"], timeout=120)
    stats = json.loads(getfattr(m.path, "user.mailfs.stats"))
    m.unmount()
    got = collections.Counter(sha((dest / n).read_bytes()) for n in os.listdir(dest))
    assert got == collections.Counter(sha(b) for b in bodies.values()), \
        "a copy made through read-ahead differs from the server's BODY[]"
    sent = [re.sub(r"^.*?\bC: ", "", line) for line in m.log_text().split("\n")
            if re.search(r"\bC: \S+ UID FETCH [0-9,]+ \(UID BODY", line)]
    batches = [s for s in sent if "," in s.split(" ")[3]]
    assert batches, "no read-ahead: every body came in a FETCH of its own"
    assert len(sent) < len(bodies) / 2, \
        "%d body FETCH commands for %d messages" % (len(sent), len(bodies))
    assert stats["bodies_fetched"] == len(bodies), \
        "bodies fetched %d, messages %d: read-ahead fetched one twice or missed one" % (
            stats["bodies_fetched"], len(bodies))


def test_recheck_of_unchanged_folder_fetches_nothing(mount, account):
    """With CONDSTORE, re-checking a folder nobody changed costs an EXAMINE:
    no flag listing of the whole folder (DESIGN: resync with CONDSTORE)."""
    m = mount(options=["debug", "refresh=1"])
    first = listing(m.p("INBOX"))
    mark = len(m.log_text())
    examine = re.compile(r"C: \S+ EXAMINE \"?INBOX")

    def rechecked():
        # A first listing is stored (and logs "synced") after ls has its
        # names, so the line alone may be the first listing's: a re-check
        # is an EXAMINE sent after the mark and the sync it leads to.
        listing(m.p("INBOX"))
        later = m.log_text()[mark:]
        e = examine.search(later)
        return e is not None and "synced INBOX" in later[e.end():]
    wait_for(rechecked, 10, interval=0.3, what="a second check of INBOX")
    assert listing(m.p("INBOX")) == first
    later = m.log_text()[mark:]
    assert not re.search(r"C: \S+ UID FETCH 1:\d+ \(UID FLAGS\)\s*$", later, re.M), \
        "an unchanged folder's flags were listed again in full"


def test_an_unmount_right_after_reads_frees_every_handle(mount, private_dovecot, tmp_path):
    """A close sends its RELEASE in the background: an unmount right after
    a read can end the session before it arrives, as libfuse then drops it.
    mailfs frees the handles of messages still open at its end; under ASan
    (make check) a leaked one fails the unmount's check."""
    cache = str(tmp_path / "cache")
    for i in range(12):
        # One thread kept idle makes a late RELEASE likelier (seen so).
        m = mount(server=private_dovecot, cache_dir=cache,
                  options=["max_threads=2", "max_idle_threads=1", "clone_fd"] if i % 2 else [])
        folder = m.p("INBOX")
        for name in listing(folder):
            with open(os.path.join(folder, name), "rb") as f:
                assert f.read(5)
        m.unmount()

"""POP3 mounts (DESIGN.md: one directory INBOX/, read-only, names as for
IMAP), checked against what Python's poplib sees on the server.

A Dovecot of this module's own serves POP3S and POP3 with STLS (test CA);
tests that change the mailbox get a Dovecot of their own.  A small fake
POP3 server (tests/fakepop3.py) stands in for servers without UIDL, TOP or
PIPELINING, which Dovecot cannot be told to hide.  The server is never
checked through mailfs, and every POP3 session of the test client
(tests/pop_helpers.py) ends with RSET, so that checking changes nothing
(Dovecot sets \\Seen at QUIT for RETR'd messages otherwise).
"""

import errno
import os
import re
import time

import pytest

import sample_mail
from fakepop3 import FakePop3
from harness import (PASSWORD, USER, MountFactory, append_samples, checked_mounts, files_in,
                     getfattr, listing, refused, run, server_url, wait_for)
from pop_helpers import server_state

NAME_RE = re.compile(r"^(\d{8}-\d{4}|00000000-0000)_[^/_ ]+_[0-9a-f]{8}(~\d+)?\.eml$")

# Extra messages: dot lines at every place that dot-stuffing touches.
DOTS_EXTRA = [
    sample_mail.build(
        [("From", "Dot Tester <dots@example.org>"), ("To", "alice@example.org"),
         ("Subject", "Only a dot"), ("Date", "Mon, 04 Mar 2024 10:00:00 +0000"),
         ("Message-ID", "<only-dot@pop3.mailfs.test>")],
        ".\n..\n.\n...\n. .\n.\r\nlast line\n."),
    sample_mail.build(
        [("From", "Dot Tester <dots@example.org>"), ("To", "alice@example.org"),
         ("Subject", ".starts with a dot"), ("Date", "Tue, 05 Mar 2024 11:00:00 +0100"),
         ("Message-ID", "<dot-subject@pop3.mailfs.test>")],
        "..\n" * 3000 + ".hidden\n"),
]


# --- the server side, seen by poplib -----------------------------------------------

def expected_names(bodies):
    """{message number: file name}: the DESIGN.md rule, POP3 flavour (no
    INTERNALDATE: no usable Date gives 00000000-0000; earlier in the list
    keeps a name, later ones get ~2 ...)."""
    pairs = []
    for i, raw in enumerate(bodies, 1):
        dt = sample_mail.header_date(raw)
        date = dt.strftime("%Y%m%d-%H%M") if dt else "00000000-0000"
        pairs.append((i, "%s_%s_%s.eml" % (date, sample_mail.slug(sample_mail.decoded_subject(raw)),
                                           sample_mail.h8(raw))))
    return sample_mail.apply_collisions(pairs)


def imap_flags(dc):
    return [(m["uid"], sorted(m["flags"] - {"\\Recent"})) for m in dc.messages(USER, "INBOX")]


def pop3_sessions(dc, since=0):
    return [s for s in dc.sessions(USER, since=since) if s["proto"] == "pop3"]


# --- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pop3_server(servers):
    """Dovecot with the tricky samples (dot lines, a 1.2 MiB attachment, no
    Date, name collisions) and the dot-line extras in INBOX.  Not changed
    by the tests that use it."""
    dc = servers.get()
    append_samples(dc, "INBOX", sample_mail.sample_messages(34, 41) + DOTS_EXTRA, 41)
    return dc


@pytest.fixture(scope="module")
def pop3_reference(pop3_server):
    """What poplib sees, taken once before any mount touched the server."""
    state = server_state(pop3_server)
    state["names"] = expected_names(state["bodies"])
    state["flags"] = imap_flags(pop3_server)
    return state


@pytest.fixture
def pmount(tmp_path, pop3_server):
    """A mount factory (harness.MountFactory) whose mounts are checked at
    teardown: a crash, a non-zero exit or a sanitizer report fails the test."""
    with checked_mounts(tmp_path, pop3_server) as factory:
        yield factory


@pytest.fixture
def own_dovecot(pmount):
    """A fresh Dovecot with 6 messages, for tests that change the mailbox.
    Stopped after the test's mounts are unmounted."""
    dc = pmount.private_server()
    append_samples(dc, "INBOX", sample_mail.sample_messages(6, 42, tricky=False), 41)
    return dc


# --- listing and reading ---------------------------------------------------------------

def test_tree_and_names(pmount, pop3_server, pop3_reference):
    ref = pop3_reference
    m = pmount(url=server_url(pop3_server, "pop3s"))
    assert listing(m.path) == ["INBOX"], "a POP3 mount shows one directory, INBOX"
    names = files_in(m.p("INBOX"))
    assert len(names) == ref["count"], "%d files, STAT says %d" % (len(names), ref["count"])
    bad = [n for n in names if not NAME_RE.match(n)]
    assert not bad, "names outside the contract: %s" % bad
    want = sorted(ref["names"].values())
    assert names == want, "names differ:\nmissing %s\nunexpected %s" % (
        sorted(set(want) - set(names)), sorted(set(names) - set(want)))
    assert any(n.startswith("00000000-0000_") for n in names), "the undated message"
    assert any("~2.eml" in n for n in names), "a collision"
    # user.mail.uid is the UIDL; st_size the LIST size before any read;
    # mtime the Date header; read-only modes.
    for msgno, name in ref["names"].items():
        path = m.p("INBOX", name)
        assert getfattr(path, "user.mail.uid") == ref["uidls"][msgno - 1]
        st = os.stat(path)
        assert st.st_size == ref["sizes"][msgno - 1], name
        assert st.st_mode & 0o777 == 0o444, "mode %o on a read-only mount" % st.st_mode
        dt = sample_mail.header_date(ref["bodies"][msgno - 1])
        if dt is not None:
            assert int(st.st_mtime) == int(dt.timestamp()), name
    assert os.stat(m.p("INBOX")).st_mode & 0o777 == 0o555
    assert m.stats()["bodies_fetched"] == 0, "listing must not download a body"


def test_bytes_equal_retr_and_server_unchanged(pmount, pop3_server, pop3_reference):
    ref = pop3_reference
    since = pop3_server.log_offset()
    m = pmount(url=server_url(pop3_server, "pop3s"))
    for msgno, name in sorted(ref["names"].items()):
        path = m.p("INBOX", name)
        with open(path, "rb") as f:
            data = f.read()
        want = ref["bodies"][msgno - 1]
        assert data == want, "%s: %d bytes, RETR gives %d" % (name, len(data), len(want))
        assert os.stat(path).st_size == len(data), "st_size differs from the bytes read"
    dots = [b for b in ref["bodies"] if b"\r\n.\r\n" in b]
    assert dots, "the samples must hold a body line that is only '.'"
    # A second read is served from the cache.
    before = m.stats()["bodies_fetched"]
    run(["cat"] + [m.p("INBOX", n) for n in ref["names"].values()])
    assert m.stats()["bodies_fetched"] == before
    # grep through the mount, as a user would.
    r = run(["grep", "-rl", "^\\.hidden", m.p("INBOX")])
    assert r.stdout.strip(), "grep found no line starting with .hidden"
    m.unmount()
    after = server_state(pop3_server, bodies=False)
    assert (after["count"], after["uidls"], after["sizes"]) == \
        (ref["count"], ref["uidls"], ref["sizes"]), "the server's maildrop changed"
    assert imap_flags(pop3_server) == ref["flags"], "reading through the mount changed flags"
    sessions = pop3_sessions(pop3_server, since)
    assert sessions, "no POP3 session in the server log"
    for s in sessions:
        assert s.get("del", 0) == 0, "a DELE was sent: %s" % s["line"]


def test_tar_reads_everything(pmount, pop3_server, pop3_reference):
    m = pmount(url=server_url(pop3_server, "pop3s"))
    r = run("tar cf - -C %s INBOX | tar tvf -" % m.path, timeout=120)
    lines = [line for line in r.stdout.decode("utf-8", "replace").split("\n") if line.strip()]
    files = [line for line in lines if not line.startswith("d")]
    assert len(files) == pop3_reference["count"]
    assert m.stats()["bodies_fetched"] == pop3_reference["count"]


def test_stls_with_cafile(pmount, pop3_server, pop3_reference):
    since = pop3_server.log_offset()
    # names=uid is ignored for POP3: message numbers are not stable.
    m = pmount(url=server_url(pop3_server, "pop3"), options=["names=uid"])
    names = files_in(m.p("INBOX"))
    assert names == sorted(pop3_reference["names"].values())
    msgno, name = sorted(pop3_reference["names"].items())[0]
    with open(m.p("INBOX", name), "rb") as f:
        assert f.read() == pop3_reference["bodies"][msgno - 1]
    logins = [line for line in pop3_server.logins(USER, since) if "pop3-login" in line]
    assert logins, "no POP3 login in the server log"
    for line in logins:
        assert ", TLS," in line, "the STLS session was not encrypted: %s" % line


def test_stls_required(tmp_path):
    """pop3:// needs STLS unless -o tls=none: a server without it is refused.
    The fake server below offers no STLS."""
    with FakePop3(sample_mail.sample_messages(2, 43, tricky=False), capa=("USER", "TOP", "UIDL"),
                  password=PASSWORD) as fake:
        line = refused(tmp_path, server_url(fake, "pop3"), ["cache_dir=%s" % (tmp_path / "c")],
                       within=None)
        assert "STARTTLS" in line or "STLS" in line or "TLS" in line, line
        assert not fake.logged_in, "the password was sent without TLS"


# --- read-only ----------------------------------------------------------------------------

def test_writes_give_erofs(pmount, pop3_server, pop3_reference, tmp_path):
    m = pmount(url=server_url(pop3_server, "pop3s"))
    inbox = m.p("INBOX")
    name = sorted(pop3_reference["names"].values())[0]
    local = tmp_path / "local.eml"
    local.write_bytes(pop3_reference["bodies"][0])
    shell = {
        "touch": ["touch", os.path.join(inbox, "new.eml")],
        "cp into": ["cp", str(local), os.path.join(inbox, "copy.eml")],
        "rm": ["rm", "-f", os.path.join(inbox, name)],
        "mkdir": ["mkdir", m.p("Folder")],
        "mv": ["mv", os.path.join(inbox, name), os.path.join(inbox, "renamed.eml")],
        "mv out": ["mv", os.path.join(inbox, name), str(tmp_path / "out.eml")],
        "rmdir": ["rmdir", inbox],
        "setfattr": ["setfattr", "-n", "user.mail.flags", "-v", "\\Seen",
                     os.path.join(inbox, name)],
    }
    for what, cmd in shell.items():
        r = run(cmd, check=False)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode != 0, "%s succeeded on a POP3 mount" % what
        assert "Read-only file system" in err, "%s: %s" % (what, err.strip())
    calls = {
        "create": lambda: os.open(os.path.join(inbox, "x.eml"), os.O_CREAT | os.O_WRONLY, 0o644),
        "write": lambda: os.open(os.path.join(inbox, name), os.O_WRONLY),
        "append": lambda: os.open(os.path.join(inbox, name), os.O_WRONLY | os.O_APPEND),
        "truncate": lambda: os.truncate(os.path.join(inbox, name), 0),
        "unlink": lambda: os.unlink(os.path.join(inbox, name)),
        "rename": lambda: os.rename(os.path.join(inbox, name), os.path.join(inbox, "y.eml")),
        "mkdir": lambda: os.mkdir(os.path.join(inbox, "sub")),
        "chmod": lambda: os.chmod(os.path.join(inbox, name), 0o600),
        "utime": lambda: os.utime(os.path.join(inbox, name), (0, 0)),
    }
    for what, call in calls.items():
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EROFS, "%s: %s" % (what, e.value)
    assert files_in(inbox) == sorted(pop3_reference["names"].values())
    m.unmount()
    after = server_state(pop3_server, bodies=False)
    assert (after["count"], after["uidls"]) == (pop3_reference["count"], pop3_reference["uidls"])


# --- refresh, offline, login ----------------------------------------------------------------

def test_new_mail_after_refresh(pmount, own_dovecot):
    dc = own_dovecot
    since = dc.log_offset()
    m = pmount(url=server_url(dc, "pop3s"), server=dc, options=["refresh=1"])
    state = server_state(dc)
    names = files_in(m.p("INBOX"))
    assert len(names) == state["count"] == 6
    new = sample_mail.build(
        [("From", "New Sender <new@example.org>"), ("To", "alice@example.org"),
         ("Subject", "Fresh arrival"), ("Date", "Wed, 06 Mar 2024 12:34:00 +0000"),
         ("Message-ID", "<fresh@pop3.mailfs.test>")], "Just arrived.\n.\n")
    dc.append(USER, "INBOX", new)
    want = "20240306-1234_Fresh-arrival_%s.eml" % sample_mail.h8(new)
    wait_for(lambda: want in listing(m.p("INBOX")), 20, interval=0.3, what="the new message")
    with open(m.p("INBOX", want), "rb") as f:
        assert f.read() == server_state(dc)["bodies"][-1]
    assert len(files_in(m.p("INBOX"))) == 7
    # A message removed on the server (here through IMAP) goes away too.
    gone_uid = dc.messages(USER, "INBOX")[0]["uid"]
    gone_name = expected_names(state["bodies"])[1]
    dc.expunge_uids(USER, "INBOX", [gone_uid])
    wait_for(lambda: gone_name not in listing(m.p("INBOX")), 20, interval=0.3,
             what="the expunged message to disappear")
    assert len(files_in(m.p("INBOX"))) == server_state(dc, bodies=False)["count"] == 6
    m.unmount()
    # Headers (TOP) were asked for once per message, never again for a known one.
    sessions = pop3_sessions(dc, since)
    assert sum(s.get("top", 0) for s in sessions) == 7, [s["line"] for s in sessions]
    assert all(s.get("del", 0) == 0 for s in sessions)


def test_offline_remount_serves_cache(pmount, pop3_server, pop3_reference, tmp_path):
    cache = str(tmp_path / "cache")
    ref = pop3_reference
    m = pmount(url=server_url(pop3_server, "pop3s"), cache_dir=cache)
    run(["cat"] + [m.p("INBOX", n) for n in ref["names"].values()])
    m.unmount()
    since = pop3_server.log_offset()
    m2 = pmount(url=server_url(pop3_server, "pop3s"), cache_dir=cache, options=["offline"],
                password=None)
    assert files_in(m2.p("INBOX")) == sorted(ref["names"].values())
    for msgno, name in ref["names"].items():
        with open(m2.p("INBOX", name), "rb") as f:
            assert f.read() == ref["bodies"][msgno - 1], name
    with pytest.raises(OSError) as e:
        os.unlink(m2.p("INBOX", ref["names"][1]))
    assert e.value.errno == errno.EROFS
    m2.unmount()
    assert not [line for line in pop3_server.logins(USER, since) if "pop3-login" in line], \
        "the offline mount connected to the server"


def test_remount_keeps_names_and_cache(pmount, pop3_server, pop3_reference, tmp_path):
    """The cache is keyed by UIDL: a second mount on the same cache asks for
    no headers (TOP) and no bodies already read."""
    cache = str(tmp_path / "cache")
    ref = pop3_reference
    m = pmount(url=server_url(pop3_server, "pop3s"), cache_dir=cache)
    first = files_in(m.p("INBOX"))
    some = first[:5]
    run(["cat"] + [m.p("INBOX", n) for n in some])
    m.unmount()
    since = pop3_server.log_offset()
    m2 = pmount(url=server_url(pop3_server, "pop3s"), cache_dir=cache)
    assert files_in(m2.p("INBOX")) == first
    run(["cat"] + [m2.p("INBOX", n) for n in some])
    assert m2.stats()["bodies_fetched"] == 0
    m2.unmount()
    sessions = pop3_sessions(pop3_server, since)
    assert sum(s.get("top", 0) for s in sessions) == 0, [s["line"] for s in sessions]
    assert sum(s.get("retr", 0) for s in sessions) == 0, [s["line"] for s in sessions]
    assert len(first) == ref["count"]


def test_wrong_password_fails_mount(tmp_path, pop3_server):
    dc = pop3_server
    t0 = time.monotonic()
    line = refused(tmp_path, server_url(dc, "pop3s"), ["cafile=" + dc.ca_file,
                                                      "cache_dir=%s" % (tmp_path / "c")],
                   password="not-the-password", within=None)
    assert time.monotonic() - t0 < 15
    assert "login failed" in line, line
    assert "not-the-password" not in line
    line = refused(tmp_path, server_url(dc, "pop3"), ["cafile=" + dc.ca_file,
                                                     "cache_dir=%s" % (tmp_path / "c")],
                   password="not-the-password", within=None)
    assert "login failed" in line, line


# --- servers without UIDL, TOP or PIPELINING (a fake POP3 server) ------------------------------

@pytest.mark.parametrize("capa,count", [
    (("USER", "TOP"), 17),                   # no UIDL, one command at a time
    (("USER",), 8),                          # no UIDL and no TOP: headers from RETR
    (("USER", "TOP", "PIPELINING"), 150),    # no UIDL, pipelined TOP beyond the window
], ids=["top", "no-top", "pipelining"])
def test_server_without_uidl(tmp_path, capa, count):
    messages = sample_mail.sample_messages(min(count, 17), 44)
    messages += sample_mail.sample_messages(count - len(messages), 45, tricky=False)
    # Two messages with the same header block: keyed apart by list order.
    messages.append(messages[0][:messages[0].find(b"\r\n\r\n") + 4] + b"A different body.\r\n")
    with FakePop3(messages, capa=capa, password=PASSWORD) as fake:
        factory = MountFactory(tmp_path, None)
        try:
            url = server_url(fake, "pop3")
            cache = str(tmp_path / "cache")
            m = factory(url=url, options=["tls=none", "refresh=1"], cafile=False, cache_dir=cache)
            names = expected_names(messages)
            assert files_in(m.p("INBOX")) == sorted(names.values())
            assert any(n.endswith("~2.eml") for n in names.values())
            for msgno in (1, len(messages), len(messages) // 2):
                with open(m.p("INBOX", names[msgno]), "rb") as f:
                    assert f.read() == messages[msgno - 1], names[msgno]
            # The server closes the session: the next read reconnects.
            fake.drop_sessions()
            with open(m.p("INBOX", names[2]), "rb") as f:
                assert f.read() == messages[1]
            # A refresh on a new session keeps every name (the keys are stable).
            sessions = fake.sessions
            wait_for(lambda: listing(m.p("INBOX")) and fake.sessions > sessions, 20,
                     interval=0.3, what="a refresh")
            assert files_in(m.p("INBOX")) == sorted(names.values())
            m.unmount()
            m2 = factory(url=url, options=["tls=none"], cafile=False, cache_dir=cache)
            with open(m2.p("INBOX", names[1]), "rb") as f:
                assert f.read() == messages[0]
            m2.unmount()
        finally:
            problems = factory.finish()
        assert not problems, "\n".join(problems)
        cmds = [c for _, c in fake.commands]
        assert not [c for c in cmds if c.upper().startswith("DELE")], "DELE was sent"
        if "TOP" not in capa:
            # Headers came from RETR: each such session ends with RSET before QUIT.
            by_session = {}
            for n, c in fake.commands:
                by_session.setdefault(n, []).append(c.split()[0].upper() if c else "")
            for n, seq in by_session.items():
                if "RETR" in seq and "QUIT" in seq:
                    assert seq[seq.index("QUIT") - 1] == "RSET", seq

"""Push (issue 14): what another client does shows up in the mount at once.

Every mount here uses -o refresh=3600, so that only the IDLE watch can
explain a change seen within the test; the other client is imaplib. A
folder comes under watch once it is used (here: listed with ls); the
tests wait for the watch to be in place (the mount's debug log says the
folder is in step once its IDLE connection was set up), then let
the other client act, and wait (bounded) for the mount to show it. The
issue asks for 2 s; the bound asserted is LIVE_BOUND, generous for a
loaded machine, and the latency measured is printed.

- a message appended is listed with its name, size and flags;
- one expunged is gone from ls, stat and getfattr;
- a flag set shows in user.mail.flags;
- a message moved between two watched folders is in the new one only;
- the IDLE connection cut (tests/tcp_proxy.py): two appended and one
  expunged meanwhile; after the reconnect the mount holds exactly the
  server's state;
- a watch put in place after the folder was listed, finding what the
  listing stored, costs no EXAMINE of its own beyond its connection's;
- a server without IDLE still gets changes after -o refresh;
- an unmount while the server answers nothing ends within a bound.
"""

import os
import signal
import subprocess
import time

import pytest

import sample_mail
from harness import (SEQ, getfattr, listing, name_of, new_folder, run, server_messages,
                     server_url, wait_for)
from imap_helpers import imap_quote
from tcp_proxy import FaultProxy

NO_IDLE = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE NAMESPACE CHILDREN UIDPLUS MOVE CONDSTORE"
SERVER_KINDS = {"idle": {}, "noidle": {"capability": NO_IDLE}}
LIVE_BOUND = 10          # the 2 s, with room for a loaded machine
OPTIONS = ["refresh=3600", "connections=5", "watch=3", "timeout=10", "debug"]


def mount_live(mount, dc, options=OPTIONS, **kw):
    return mount(url=server_url(dc, "imaps"), server=dc, options=list(options), **kw)


def watched(m, folder, timeout=LIVE_BOUND * 3):
    """Waits until the watch of folder is in place: its IDLE connection set
    up, and the folder brought in step once after it (checked, or found as
    the cache holds it).  Returns the log line that said so."""
    marks = ("watch: %s brought in step" % folder,
             "watch: %s in step (as the watch found it)" % folder)

    def said():
        return next((line for line in m.log_text().splitlines()
                     if any(mark in line for mark in marks)), None)
    return wait_for(said, timeout, what="the watch of %s\n%s" % (folder, m.log_tail(30)))


def shows(m, folder, what, cond):
    """Waits for cond() and prints how long it took."""
    t0 = time.monotonic()
    try:
        wait_for(cond, LIVE_BOUND, interval=0.05, what=what)
    except AssertionError as e:
        raise AssertionError("%s\nls %s: %s\nmailfs log:\n%s" % (
            e, folder, listing(m.p(folder)), m.log_tail(40)))
    dt = time.monotonic() - t0
    print("push latency (%s): %.2f s" % (what, dt))
    return dt


def expected_names(dc, folder):
    """The names the server's messages of folder are listed under (all
    sample messages have a Date and distinct subjects)."""
    return sorted(name_of(b) for b in dc.fetch_bodies("alice", folder).values())


def flags_of(m, folder, name):
    return set(getfattr(m.p(folder, name), "user.mail.flags").split())


def uid_of(dc, folder, raw):
    """The server's UID of the sample message raw in folder."""
    mid = sample_mail.message_id(raw)
    return [r["uid"] for r in server_messages(dc, folder) if r["mid"] == mid][0]


def live_folder(mount, servers, prefix, n, held):
    """A folder of n sample messages (held of them on the server) and a
    mount of the idle server: (dc, raws, folder, m)."""
    dc = servers.get("idle")
    raws = sample_mail.sample_messages(n, "%s-%d" % (prefix, next(SEQ)), tricky=False)
    folder = new_folder(dc, prefix, raws[:held])
    return dc, raws, folder, mount_live(mount, dc)


def gone(path):
    try:
        os.stat(path)
    except FileNotFoundError:
        return getfattr(path, "user.mail.flags", check=False) is None
    return False


def test_appended_message_shows(mount, servers):
    dc, raws, folder, m = live_folder(mount, servers, "LiveAdd", 3, 2)
    assert listing(m.p(folder)) == sorted(name_of(r) for r in raws[:2])
    watched(m, folder)
    uid = dc.append("alice", folder, raws[2], flags="\\Flagged")
    name = name_of(raws[2])
    shows(m, folder, "a new message listed", lambda: name in listing(m.p(folder)))
    server = {r["uid"]: r for r in server_messages(dc, folder)}
    assert os.stat(m.p(folder, name)).st_size == server[uid]["size"]
    assert "\\Flagged" in flags_of(m, folder, name)
    with open(m.p(folder, name), "rb") as f:
        assert f.read() == raws[2]
    m.unmount()


def test_expunged_message_goes(mount, servers):
    dc, raws, folder, m = live_folder(mount, servers, "LiveDel", 3, 3)
    names = listing(m.p(folder))
    assert len(names) == 3
    victim = name_of(raws[1])
    # The kernel knows the entry and its attributes (cached for -o refresh).
    assert os.stat(m.p(folder, victim)).st_size > 0
    assert getfattr(m.p(folder, victim), "user.mail.flags") is not None
    watched(m, folder)
    uid = uid_of(dc, folder, raws[1])
    dc.expunge_uids("alice", folder, [uid])
    shows(m, folder, "an expunged message gone",
          lambda: victim not in listing(m.p(folder)) and gone(m.p(folder, victim)))
    assert listing(m.p(folder)) == sorted(name_of(r) for r in (raws[0], raws[2]))
    m.unmount()


def test_flag_change_shows(mount, servers):
    dc, raws, folder, m = live_folder(mount, servers, "LiveFlag", 2, 2)
    name = name_of(raws[0])
    assert "\\Seen" not in flags_of(m, folder, name)
    watched(m, folder)
    uid = uid_of(dc, folder, raws[0])
    dc.store_flags("alice", folder, uid, "+FLAGS", "\\Seen $Label1")
    shows(m, folder, "a flag set", lambda: {"\\Seen", "$Label1"} <= flags_of(m, folder, name))
    m.unmount()


def test_message_flagged_deleted_goes(mount, servers):
    """Flagged \\Deleted by the other client, not expunged: the listing
    hides it, and a stat of its name (which the kernel knew) says ENOENT
    at once too, not after refresh."""
    dc, raws, folder, m = live_folder(mount, servers, "LiveDel", 2, 2)
    name = name_of(raws[0])
    os.stat(m.p(folder, name))              # the kernel now knows the name
    watched(m, folder)
    dc.store_flags("alice", folder, uid_of(dc, folder, raws[0]), "+FLAGS", "\\Deleted")
    shows(m, folder, "a message flagged \\Deleted hidden",
          lambda: name not in listing(m.p(folder)) and gone(m.p(folder, name)))
    m.unmount()


def test_move_between_watched_folders(mount, servers):
    dc = servers.get("idle")
    raws = sample_mail.sample_messages(3, "live-move-%d" % next(SEQ), tricky=False)
    a = new_folder(dc, "LiveMoveA", raws[:2])
    b = new_folder(dc, "LiveMoveB", raws[2:])
    m = mount_live(mount, dc)
    listing(m.p(a))
    watched(m, a)
    listing(m.p(b))
    watched(m, b)
    name = name_of(raws[0])
    uid = uid_of(dc, a, raws[0])
    with dc.session("alice") as c:
        assert c.select(imap_quote(a))[0] == "OK"
        assert c.uid("MOVE", str(uid), imap_quote(b))[0] == "OK"
    # Looked up by name, not listed: a listing of a would bring it into use
    # again, and a new watch checks its folder.
    shows(m, b, "a moved message in its new folder only",
          lambda: os.path.exists(m.p(b, name)) and not os.path.exists(m.p(a, name)))
    assert listing(m.p(a)) == expected_names(dc, a)
    assert listing(m.p(b)) == expected_names(dc, b)
    m.unmount()


def idle_connection(px, folder):
    """The proxy's number of the connection watching folder: the last one
    that EXAMINEd it and is in IDLE."""
    per = {}
    with px.lock:
        for n, line in px.commands:
            per.setdefault(n, []).append(line.decode("utf-8", "replace"))
    found = None
    for n, lines in per.items():
        if lines[-1].split()[1:2] == ["IDLE"] and any(
                ("EXAMINE " + imap_quote(folder)) in x for x in lines):
            found = n
    return found


def test_watch_finding_the_listed_folder_costs_no_check(mount, servers):
    """A folder listed, then watched (a review after its use): the watch's
    EXAMINE finds the UIDNEXT, HIGHESTMODSEQ and count the listing stored,
    so nothing happened in between and no re-check follows (it cost an
    EXAMINE, and the connection the listing left warm for the first open).
    The server sees two EXAMINEs of the folder: the listing's and the
    watch's."""
    dc = servers.get("idle")
    raws = sample_mail.sample_messages(4, "live-found-%d" % next(SEQ), tricky=False)
    folder = new_folder(dc, "LiveFound", raws)
    with FaultProxy(("127.0.0.1", dc.imap_port)) as px:
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  options=OPTIONS + ["tls=none"])
        assert listing(m.p(folder)) == sorted(name_of(r) for r in raws)
        line = watched(m, folder)
        with px.lock:
            examines = [c.decode("utf-8", "replace") for _, c in px.commands
                        if ("EXAMINE " + imap_quote(folder)).encode() in c]
        assert "as the watch found it" in line, "%s\n%s" % (line, m.log_tail(30))
        assert len(examines) == 2, "\n".join(examines)
        # The watch works all the same: a message appended now shows.
        extra = sample_mail.sample_messages(1, "live-found-new-%d" % next(SEQ), tricky=False)[0]
        dc.append("alice", folder, extra)
        shows(m, folder, "a new message listed", lambda: name_of(extra) in listing(m.p(folder)))
        m.unmount()


def test_reconnect_after_cut_idle(mount, servers):
    dc = servers.get("idle")
    raws = sample_mail.sample_messages(5, "live-cut-%d" % next(SEQ), tricky=False)
    folder = new_folder(dc, "LiveCut", raws[:3])
    with FaultProxy(("127.0.0.1", dc.imap_port)) as px:
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  options=OPTIONS + ["tls=none"])
        assert len(listing(m.p(folder))) == 3
        watched(m, folder)
        n = wait_for(lambda: idle_connection(px, folder), LIVE_BOUND,
                     what="an IDLE on %s through the proxy" % folder)
        with px.lock:
            conn = px._conns[n - 1]
        assert conn.number == n
        conn.cut()
        # Meanwhile (the watch comes back after 1 s at the earliest):
        dc.append_many("alice", folder, [(raws[3], "", None), (raws[4], "\\Seen", None)])
        victim = uid_of(dc, folder, raws[0])
        dc.expunge_uids("alice", folder, [victim])
        want = expected_names(dc, folder)
        assert len(want) == 4
        shows(m, folder, "the state after a reconnect", lambda: listing(m.p(folder)) == want)
        assert "watch of %s lost" % folder in m.log_text()
        wait_for(lambda: (idle_connection(px, folder) or n) != n, LIVE_BOUND,
                 what="a new IDLE connection")
        assert "\\Seen" in flags_of(m, folder, name_of(raws[4]))
        m.unmount()


def test_no_idle_server_changes_after_refresh(mount, servers):
    dc = servers.get("noidle")
    raws = sample_mail.sample_messages(2, "live-noidle-%d" % next(SEQ), tricky=False)
    folder = new_folder(dc, "LiveNoIdle", raws[:1])
    m = mount_live(mount, dc, options=["refresh=2", "connections=5", "watch=3", "debug"])
    assert listing(m.p(folder)) == [name_of(raws[0])]
    wait_for(lambda: "offers no IDLE" in m.log_text(), LIVE_BOUND,
             what="the mount to find no IDLE")
    dc.append("alice", folder, raws[1])
    shows(m, folder, "a new message after refresh (no IDLE)",
          lambda: name_of(raws[1]) in listing(m.p(folder)))
    assert " IDLE" not in m.log_text().replace("offers no IDLE", "")
    m.unmount()


def dovecot_imap_pids(dc):
    """The imap processes of a private Dovecot (children of its master)."""
    r = subprocess.run(["ps", "-o", "pid=,ppid=,comm=", "-e"], capture_output=True, text=True)
    pids = []
    for line in r.stdout.splitlines():
        pid, ppid, comm = line.split(None, 2)
        if int(ppid) == dc.pid and comm.strip() == "imap":
            pids.append(int(pid))
    return pids


def test_unmount_with_a_dead_server_is_bounded(mount):
    dc = mount.private_server()
    dc.create_folder("alice", "Watched")
    m = mount_live(mount, dc)
    r = run(["ls", "-1A", m.p("Watched")], check=False)
    assert r.returncode == 0, "ls failed: %s\n%s" % (r.stderr, m.diagnostics())
    watched(m, "Watched")
    pids = dovecot_imap_pids(dc)
    assert pids, "no imap process of the private Dovecot found"
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        m.unmount()
        dt = time.monotonic() - t0
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
    print("unmount with a dead server: %.1f s" % dt)
    assert dt < 25, "the unmount took %.1f s" % dt

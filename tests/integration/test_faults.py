"""No message is ever lost: a connection cut at each point of a `mv` (and during
a folder's first listing, which is stored as it arrives).

A fault-injecting proxy (tests/tcp_proxy.py) sits between mailfs and
Dovecot's plain IMAP port (mailfs mounts imap://…:<proxy> with -o tls=none,
so the proxy can read the commands; Dovecot takes plaintext logins from
loopback).  On the first command matching a pattern it cuts the connection
before forwarding it, after the server answered it (the answer withheld), or
right after forwarding it.  Then, checked on the server with imaplib:

- every message exists, not flagged \\Deleted, in at least one folder;
- the mv told the truth: exit 0 means the message is in the destination
  (once, and no longer listed in the source); a failure means it is still
  in the source on the server (a copy in the destination is allowed);
- the mount recovers: the next mv through the same mount works.

Three servers: MOVE and UIDPLUS (Dovecot's own capabilities), UIDPLUS
without MOVE (COPY + COPYUID, UID EXPUNGE), and neither (COPY confirmed by
a search, a plain EXPUNGE).
"""

import itertools
import os
import re
import subprocess
import threading
import time

import pytest

import sample_mail
from harness import (SEQ, listing, name_of, new_folder, run, server_messages, server_url,
                     wait_for)
from tcp_proxy import FaultProxy

BASE_CAPABILITY = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE CHILDREN"
CAPABILITIES = {
    "move": None,                                # Dovecot's own: MOVE, UIDPLUS
    "uidplus": BASE_CAPABILITY + " UIDPLUS",     # no MOVE
    "plain": BASE_CAPABILITY,                    # neither MOVE nor UIDPLUS
}
# conftest's module-scoped `servers` (harness.PrivateServers) starts these.
SERVER_KINDS = {kind: {"capability": cap} for kind, cap in CAPABILITIES.items()}
TIMEOUT = 10      # mailfs -o timeout
MV_BOUND = 60     # a mv must end within this (several timeouts at most)

COPY = r"^\S+ UID COPY "
MOVE = r"^\S+ UID MOVE "
STORE_DELETED = r"^\S+ UID STORE \S+ \+FLAGS(\.SILENT)? \(\\Deleted\)"
EXPUNGE = r"^\S+ (UID )?EXPUNGE"

POINT = {COPY: "COPY", MOVE: "MOVE", STORE_DELETED: "STORE", EXPUNGE: "EXPUNGE"}

# (server, pattern, mode): "before" = not forwarded, "after" = done by the
# server, answer lost, "sent" = forwarded and cut at once (either).
SCENARIOS = [
    ("move", MOVE, "before"),
    ("move", MOVE, "after"),
    ("move", MOVE, "sent"),
    ("uidplus", COPY, "before"),
    ("uidplus", COPY, "after"),
    ("uidplus", STORE_DELETED, "after"),
    ("uidplus", EXPUNGE, "before"),
    ("uidplus", EXPUNGE, "after"),
    ("plain", COPY, "before"),
    ("plain", COPY, "after"),
    ("plain", COPY, "sent"),
    ("plain", STORE_DELETED, "after"),
    ("plain", EXPUNGE, "before"),
    ("plain", EXPUNGE, "after"),
]

# --- the server, as imaplib sees it (directly, not through the proxy) ----------------

def folder_state(dc, folder):
    """{Message-ID: [flag sets, one per copy]} of folder."""
    messages = server_messages(dc, folder)
    assert messages is not None, "cannot examine %s" % folder
    state = {}
    for r in messages:
        state.setdefault(r["mid"], []).append(r["flags"])
    return state


def live(state, mid):
    """How many copies of mid in a folder's state are not flagged \\Deleted."""
    return sum(1 for flags in state.get(mid, []) if "\\Deleted" not in flags)


# --- the test ---------------------------------------------------------------------------

def mount_through(mount, dc, proxy):
    return mount(url=server_url(dc, "imap", port=proxy.port), server=dc, cafile=False,
                 options=["tls=none", "timeout=%d" % TIMEOUT, "refresh=1", "debug"])


def report(m, proxy, dc, a, b, extra=""):
    return ("%s\nproxy fired on: %s (answer withheld: %s)\ncommands through the proxy:\n%s\n"
            "server: %s=%s\n        %s=%s\nmailfs log (tail):\n%s" % (
                extra, proxy.fired_line, proxy.answer, proxy.transcript()[-3000:],
                a, folder_state(dc, a), b, folder_state(dc, b), m.log_tail(60)))


def check_truthful(dc, m, proxy, a, b, raw, rc, stderr, all_mids, untouched, name=None):
    mid = sample_mail.message_id(raw)
    name = name or name_of(raw)
    sa, sb = folder_state(dc, a), folder_state(dc, b)
    info = lambda what: report(m, proxy, dc, a, b, "%s\nmv exit %d, stderr: %s" % (
        what, rc, stderr.strip()))
    lost = [x for x in all_mids if live(sa, x) + live(sb, x) == 0]
    assert not lost, info("messages lost (in no folder, or only flagged \\Deleted): %s" % lost)
    if rc == 0:
        assert live(sb, mid) == 1, info("mv said it moved %s, but the destination holds %d "
                                        "live copies" % (name, live(sb, mid)))
        ok = lambda: name in listing(m.p(b)) and name not in listing(m.p(a))
        what = "the listing to show %s moved (in %s, not in %s)" % (name, b, a)
    else:
        assert live(sa, mid) == 1, info("mv failed, but %s is not in the source on the "
                                        "server" % name)
        ok = lambda: name in listing(m.p(a))
        what = "the listing to show %s still in %s after the failed mv" % (name, a)
    try:
        wait_for(ok, TIMEOUT, what=what)
    except AssertionError as e:
        raise AssertionError(info("%s\nls %s: %s\nls %s: %s" % (
            e, a, listing(m.p(a)), b, listing(m.p(b)))))
    for x in untouched:
        assert live(sa, x) + live(sb, x) == 1, info("%s changed" % x)


@pytest.mark.parametrize("kind,pattern,mode", SCENARIOS,
                         ids=["%s-%s-%s" % (k, mode, POINT[p]) for k, p, mode in SCENARIOS])
def test_cut_during_mv(mount, servers, kind, pattern, mode):
    dc = servers.get(kind)
    raws = sample_mail.sample_messages(4, "fault-%s" % next(SEQ), tricky=False)
    a = new_folder(dc, "FaultA", raws[:3])
    b = new_folder(dc, "FaultB", raws[3:])
    all_mids = [sample_mail.message_id(r) for r in raws]
    with FaultProxy(("127.0.0.1", dc.imap_port), pattern, mode) as px:
        m = mount_through(mount, dc, px)
        # A name of the user's own (a rename in one folder, local only): the
        # moved message must keep it.
        given = "given %d.eml" % next(SEQ)
        run(["mv", m.p(a, name_of(raws[0])), m.p(a, given)])
        assert not px.fired.is_set(), "fired before the mv: %s" % px.fired_line
        t0 = time.monotonic()
        r = run(["mv", m.p(a, given), m.p(b) + "/"], timeout=MV_BOUND + 30, check=False)
        elapsed = time.monotonic() - t0
        stderr = r.stderr.decode("utf-8", "replace")
        assert px.fired.is_set(), report(m, px, dc, a, b, "the proxy never saw %r" % pattern)
        assert elapsed < MV_BOUND, "mv took %.0f s" % elapsed
        check_truthful(dc, m, px, a, b, raws[0], r.returncode, stderr, all_mids, all_mids[1:],
                       name=given)
        # The mount recovers: the next mv goes through (the proxy is quiet now).
        r2 = run(["mv", m.p(a, name_of(raws[1])), m.p(b) + "/"], timeout=MV_BOUND + 30,
                 check=False)
        assert r2.returncode == 0, report(m, px, dc, a, b, "the mv after the cut failed: %s"
                                          % r2.stderr.decode(errors="replace"))
        check_truthful(dc, m, px, a, b, raws[1], 0, "", all_mids, all_mids[2:])
        m.unmount()    # while the proxy still forwards: a clean LOGOUT


@pytest.mark.parametrize("kind,pattern", [("move", MOVE), ("plain", STORE_DELETED)],
                         ids=["move-after-3rd-MOVE", "plain-after-3rd-STORE"])
def test_cut_in_the_middle_of_a_mv_of_many(mount, servers, kind, pattern):
    """`mv A/* B/` of 6 messages with the connection cut at the 3rd message:
    none lost, and each file mv reports as failed is still in A."""
    dc = servers.get(kind)
    raws = sample_mail.sample_messages(6, "fault-many-%s" % next(SEQ), tricky=False)
    a = new_folder(dc, "ManyA", raws)
    b = new_folder(dc, "ManyB")
    with FaultProxy(("127.0.0.1", dc.imap_port), pattern, "after", nth=3) as px:
        m = mount_through(mount, dc, px)
        r = run("mv %s/* %s/" % (m.p(a), m.p(b)), timeout=6 * MV_BOUND, check=False)
        stderr = r.stderr.decode("utf-8", "replace")
        assert px.fired.is_set(), report(m, px, dc, a, b, "the proxy never fired")
        sa, sb = folder_state(dc, a), folder_state(dc, b)
        failed = {name_of(x) for x in raws if "/%s'" % name_of(x) in stderr}
        bad = []
        for x in raws:
            mid = sample_mail.message_id(x)
            if live(sa, mid) + live(sb, mid) == 0:
                bad.append("%s lost" % name_of(x))
            elif name_of(x) in failed and live(sa, mid) != 1:
                bad.append("mv reported %s failed, but it is not in %s" % (name_of(x), a))
            elif name_of(x) not in failed and live(sb, mid) != 1:
                bad.append("mv did not report %s failed, but %s holds %d live copies" % (
                    name_of(x), b, live(sb, mid)))
        assert not bad, report(m, px, dc, a, b, "\n".join(bad) + "\nmv exit %d: %s" % (
            r.returncode, stderr))
        assert (r.returncode == 0) == (not failed), stderr
        m.unmount()


@pytest.mark.parametrize("mode", ["before", "sent", "after"])
def test_cut_during_first_listing(mount, servers, mode):
    """A folder's first listing is shown as soon as it arrived and stored
    behind it. Cut the connection
    at its UID FETCH (before it, right after it, or with every message
    delivered but the OK withheld): once the mount has recovered, the
    folder lists exactly what a fresh mount lists, each message once."""
    dc = servers.get("move")
    raws = sample_mail.sample_messages(60, "first-listing-%s" % next(SEQ))
    # Subjects that collide: names with ~2, ~3 must come out the same.
    raws += [r.replace(b"Subject:", b"X-Old-Subject:", 1).replace(
        b"\r\n\r\n", b"\r\nSubject: same\r\n\r\n", 1) for r in raws[:5]]
    a = new_folder(dc, "Listing", raws)
    with FaultProxy(("127.0.0.1", dc.imap_port), r"^\S+ UID FETCH 1:\* ", mode) as px:
        m = mount_through(mount, dc, px)
        t0 = time.monotonic()
        run(["ls", "-l", m.p(a)], timeout=MV_BOUND + 30, check=False)
        assert time.monotonic() - t0 < MV_BOUND
        assert px.fired.is_set(), "the proxy never saw the listing's FETCH"
        fresh = mount(server=dc)
        want = listing(fresh.p(a))
        assert len(want) == len(raws) and len(set(want)) == len(want)
        assert sum(n.endswith("~2.eml") for n in want) >= 1
        try:
            wait_for(lambda: listing(m.p(a)) == want, 4 * TIMEOUT,
                     what="the listing after the cut to match a fresh mount's")
        except AssertionError as e:
            got = listing(m.p(a))
            raise AssertionError("%s\nextra: %s\nmissing: %s\n%s" % (
                e, sorted(set(got) - set(want)), sorted(set(want) - set(got)),
                m.log_tail(40)))
        m.unmount()
        fresh.unmount()


def test_first_listing_used_at_once(mount, servers):
    """A folder's first listing is shown from what the server sent, before
    the cache holds it (the cache is written behind it). The names and
    attributes shown must be those the cache then holds: each listed name
    is the message the server has under that UID, with the size and date
    ls -l showed, collisions included; and xattrs and reads right after the
    listing find every name."""
    dc = servers.get("move")
    raws = sample_mail.sample_messages(3000, "at-once-%s" % next(SEQ), tricky=False)
    raws += raws[:5]  # the same messages again: names with ~2
    a = new_folder(dc, "AtOnce", raws)
    m = mount(server=dc)
    d = m.p(a)
    # ls -l takes each name's size and date from the listing itself.
    out = run(["ls", "-l", "--time-style=+%s", d]).stdout.decode("utf-8")
    listed = {}
    for line in out.splitlines()[1:]:
        f = line.split(None, 6)
        listed[f[6]] = (int(f[4]), int(f[5]))
    names = sorted(listed)
    got = {}
    for n in names[:20] + names[-20:] + names[20:-20]:  # no pause after ls
        p = os.path.join(d, n)
        got[n] = (int(os.getxattr(p, "user.mail.uid")),
                  os.getxattr(p, "user.mail.message_id").decode().strip("<>")) + listed[n]
    with open(os.path.join(d, names[-1]), "rb") as f:
        body = f.read()
    assert len(names) == len(raws) == len(set(names))
    assert sum(n.endswith("~2.eml") for n in names) >= 1
    server = {r["uid"]: (r["mid"], r["size"], int(r["internaldate"].timestamp()))
              for r in server_messages(dc, a)}
    bad = []
    for n, (uid, mid, size, mtime) in sorted(got.items()):
        if server.get(uid) != (mid, size, mtime):
            bad.append("%s: uid %d, Message-ID %s, size %d, mtime %d; the server's %r" % (
                n, uid, mid, size, mtime, server.get(uid)))
    assert not bad, "%d of %d names wrong:\n%s" % (len(bad), len(got), "\n".join(bad[:10]))
    assert len({uid for uid, _, _, _ in got.values()}) == len(raws)
    assert len(server) == len(raws)
    assert sample_mail.message_id(body) == got[names[-1]][1]
    m.unmount()


def test_first_listing_streams(mount, servers):
    """readdir hands a folder's first listing over as it arrives: with every
    message of the listing's UID FETCH delivered but the command's tagged OK
    held back, a reader already has names, and is still waiting for the
    rest (no early end of the directory); once the OK goes, it has every
    message once, and the names a fresh mount shows."""
    dc = servers.get("move")
    raws = sample_mail.sample_messages(300, "streams-%s" % next(SEQ), tricky=False)
    a = new_folder(dc, "Stream", raws)
    # Held for 8 s at most (mailfs gives up after TIMEOUT = 10 s); the
    # names must come within 6 s of that (in well under one, normally).
    with FaultProxy(("127.0.0.1", dc.imap_port), r"^\S+ UID FETCH 1:\* ", "hold",
                    answer_timeout=TIMEOUT * 0.8) as px:
        m = mount_through(mount, dc, px)
        got, errors = [], []

        def reader():
            try:
                with os.scandir(m.p(a)) as it:
                    for e in it:
                        got.append(e.name)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        wait_for(px.holding.is_set, TIMEOUT, what="the proxy to hold the listing's OK back")
        wait_for(lambda: len(got) > 0, TIMEOUT * 0.6,
                 what="names from readdir while the listing's OK is held back")
        assert t.is_alive() and not errors, \
            "the directory ended before the listing did: %d names, %r" % (len(got), errors)
        px.release()
        t.join(TIMEOUT)
        assert not t.is_alive() and not errors, errors
        fresh = mount(server=dc)
        assert sorted(got) == listing(fresh.p(a))
        assert len(got) == len(raws) == len(set(got))
        m.unmount()
        fresh.unmount()


def test_first_listing_goes_out_with_its_examine(mount, servers):
    """A folder never listed: the UID FETCH of all it holds goes out right
    behind the EXAMINE, before the EXAMINE's answer (one round trip for
    both, not two).  With that answer held back, the server has the FETCH
    already; once it goes, the listing is whole."""
    dc = servers.get("move")
    raws = sample_mail.sample_messages(20, "piped-%s" % next(SEQ), tricky=False)
    a = new_folder(dc, "Piped", raws)
    examine = r'^\S+ EXAMINE "?%s' % re.escape(a)
    with FaultProxy(("127.0.0.1", dc.imap_port), examine, "hold",
                    answer_timeout=TIMEOUT * 0.8) as px:
        m = mount_through(mount, dc, px)
        got = []
        t = threading.Thread(target=lambda: got.extend(listing(m.p(a))), daemon=True)
        t.start()
        wait_for(px.holding.is_set, TIMEOUT, what="the proxy to hold the EXAMINE's answer back")

        def fetch_sent():
            lines = px.command_lines()
            at = [i for i, line in enumerate(lines) if re.search(examine, line)]
            return any(re.match(r"^\S+ UID FETCH 1:\* ", line) for line in lines[at[0]:])
        wait_for(fetch_sent, 3, interval=0.05,
                 what="the listing's UID FETCH while the EXAMINE's answer is held:\n%s" % (
                     px.transcript()[-1500:]))
        px.release()
        t.join(TIMEOUT)
        assert not t.is_alive(), "the listing did not end once the answer went"
        assert sorted(got) == sorted(name_of(r) for r in raws)
        m.unmount()


# --- answers lost after an APPEND, CREATE, RENAME or DELETE ---------------------------

APPEND = r"^\S+ APPEND "


@pytest.mark.parametrize("kind", ["move", "plain"])
def test_lost_append_answer_tells_the_truth(mount, servers, tmp_path, kind):
    """The connection is cut after the APPEND's literal, once the server
    took it, before its answer: the close still reports success (the
    message is there, found by Message-ID and size), and a second cp makes
    no duplicate."""
    dc = servers.get(kind)
    folder = new_folder(dc, "LostAppend")
    raw = sample_mail.sample_messages(1, "lost-append-%s" % next(SEQ), tricky=False)[0]
    src = tmp_path / "m.eml"
    src.write_bytes(raw)
    with FaultProxy(("127.0.0.1", dc.imap_port), APPEND, "after") as px:
        m = mount_through(mount, dc, px)
        r = run(["cp", str(src), m.p(folder, "kept.eml")], timeout=MV_BOUND, check=False)
        assert px.fired.is_set(), "the proxy never saw the APPEND"
        srv = server_messages(dc, folder)
        assert len(srv) == 1, "the server holds %d messages\n%s" % (len(srv), m.log_tail())
        assert r.returncode == 0, "cp failed though the message landed: %s\n%s" % (
            r.stderr.decode(errors="replace"), m.log_tail())
        # cp again: the file is there (a message is never overwritten), so
        # nothing is appended a second time.
        run(["cp", str(src), m.p(folder, "kept.eml")], timeout=MV_BOUND, check=False)
        assert len(server_messages(dc, folder)) == 1
        assert listing(m.p(folder)) == ["kept.eml"]
        m.unmount()


@pytest.mark.parametrize("op", ["CREATE", "RENAME", "DELETE"])
def test_lost_folder_answer_tells_the_truth(mount, servers, op):
    """The server did the CREATE/RENAME/DELETE and the answer was lost: the
    retry on a new connection checks what the server holds instead of
    sending the command again (which would say EEXIST or ENOENT)."""
    dc = servers.get("move")
    name = "Lost%s%d" % (op.title(), next(SEQ))
    if op != "CREATE":
        dc.create_folder("alice", name)
    with FaultProxy(("127.0.0.1", dc.imap_port), r"^\S+ %s " % op, "after") as px:
        m = mount_through(mount, dc, px)
        listing(m.p())
        if op == "CREATE":
            r = run(["mkdir", m.p(name)], timeout=MV_BOUND, check=False)
            want = {name}
        elif op == "RENAME":
            r = run(["mv", m.p(name), m.p(name + "x")], timeout=MV_BOUND, check=False)
            want = {name + "x"}
        else:
            r = run(["rmdir", m.p(name)], timeout=MV_BOUND, check=False)
            want = set()
        assert px.fired.is_set(), "the proxy never saw the %s" % op
        have = {f for f, _, _ in dc.list_folders("alice") if f.startswith(name)}
        assert have == want, "the server holds %s, want %s" % (have, want)
        assert r.returncode == 0, "%s reported failure though the server did it: %s\n%s" % (
            op, r.stderr.decode(errors="replace"), m.log_tail())
        m.unmount()


def test_connection_wait_is_first_come_first_served(mount, servers):
    """With every connection busy, operations wait for one in the order
    they came: with -o connections=1 and a body FETCH whose answer the
    proxy holds, three more opens queue behind it (the -o debug log tells
    each one's place); once the answer goes on, their FETCHes reach the
    server in that order, and every copy is the server's BODY[]."""
    dc = servers.get("move")
    raws = sample_mail.sample_messages(9, "fifo-%s" % next(SEQ), tricky=False)
    a = new_folder(dc, "Fifo", raws)
    bodies = dc.fetch_bodies("alice", a)
    by_name = {name_of(raw): uid for uid, raw in
               ((u, bodies[u]) for u in sorted(bodies))}
    with FaultProxy(("127.0.0.1", dc.imap_port), r"^\S+ UID FETCH \d+ \(UID BODY\.PEEK\[\]\)",
                    "hold", answer_timeout=120) as px:
        m = mount(url=server_url(dc, "imap", port=px.port), server=dc, cafile=False,
                  options=["tls=none", "timeout=60", "connections=1", "debug"])
        names = sorted(listing(m.p(a)))
        assert sorted(by_name) == names
        # Never two neighbours in a row, by name or by UID: no read-ahead.
        uids = sorted(bodies)
        order = next(o for o in itertools.permutations(names, 4)
                     if not any(abs(names.index(x) - names.index(y)) <= 1 or
                                abs(uids.index(by_name[x]) - uids.index(by_name[y])) <= 1
                                for x, y in zip(o, o[1:])))
        procs = []
        try:
            procs.append(subprocess.Popen(["cat", m.p(a, order[0])], stdout=subprocess.PIPE))
            wait_for(px.holding.is_set, 30, what="the first body FETCH to be held")
            for place, name in enumerate(order[1:]):
                procs.append(subprocess.Popen(["cat", m.p(a, name)], stdout=subprocess.PIPE))
                line = "waiting for an IMAP connection: %d ahead" % place
                wait_for(lambda: line in m.log_text(), 30, what="'%s' in the log" % line)
        finally:
            px.release()
            outs = [p.communicate(timeout=90)[0] for p in procs]
        for name, out in zip(order, outs):
            assert out == bodies[by_name[name]], "%s: not the server's BODY[]" % name
        fetched = []
        for line in px.command_lines():
            mm = re.match(r"^\S+ UID FETCH (\d+) \(UID BODY\.PEEK\[\]\)", line)
            if mm:
                fetched.append(int(mm.group(1)))
        want = [by_name[n] for n in order]
        assert fetched == want, "FETCH order %s, the opens came in order %s\n%s" % (
            fetched, want, m.log_tail(30))
        m.unmount()

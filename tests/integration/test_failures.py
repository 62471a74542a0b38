"""Refused mounts, secrets, and a server that goes away.

A refused mount (DESIGN.md): a non-zero exit, one line on stderr starting
with "mailfs:", nothing mounted, within 15 s.  The command runs without -f,
as a user would run it.
"""

import base64
import errno
import os
import sys
import time

import pytest

from harness import (CAROL_PASSWORD, PASSWORD, listing, read_errno, read_text, refused, run,
                     server_url)
from sysutil import free_ports


def tree(path):
    """find's view of a mount: directories, and files with size and mtime."""
    r = run(["find", path, "-mindepth", "1", "(", "-type", "d", "-printf", "%P/\\n", ")", "-o",
             "(", "-type", "f", "-printf", "%P %s %T@\\n", ")"], timeout=60)
    return sorted(line for line in r.stdout.decode("utf-8", "replace").split("\n") if line)


def test_wrong_password(tmp_path, session_dovecot):
    dc = session_dovecot
    refused(tmp_path, server_url(dc), ["cafile=" + dc.ca_file, "cache_dir=%s" % (tmp_path / "c")],
            password="not-the-password")


def test_unreachable_server(tmp_path, session_dovecot):
    port = free_ports(1)[0]   # closed: nothing listens there now
    refused(tmp_path, "imaps://alice@127.0.0.1:%d/" % port,
            ["cafile=" + session_dovecot.ca_file, "cache_dir=%s" % (tmp_path / "c")])


def test_unverifiable_certificate(tmp_path, session_dovecot):
    # No cafile: the test CA is not among the system's CAs.
    refused(tmp_path, server_url(session_dovecot), ["cache_dir=%s" % (tmp_path / "c")])


def test_unverifiable_certificate_starttls(tmp_path, session_dovecot):
    dc = session_dovecot
    refused(tmp_path, server_url(dc, "imap"),
            ["cache_dir=%s" % (tmp_path / "c")])


@pytest.mark.parametrize("option", ["nonsense=1", "tls=bogus", "kernel_cache"])
def test_bad_option(tmp_path, session_dovecot, option):
    dc = session_dovecot
    refused(tmp_path, server_url(dc), ["cafile=" + dc.ca_file, option])


def test_bad_url(tmp_path, session_dovecot):
    refused(tmp_path, "http://alice@127.0.0.1:%d/" % session_dovecot.imaps_port,
            ["cafile=" + session_dovecot.ca_file])


def test_no_password_source(tmp_path, session_dovecot):
    dc = session_dovecot
    home = tmp_path / "home"
    home.mkdir()
    refused(tmp_path, server_url(dc), ["cafile=" + dc.ca_file, "cache_dir=%s" % (tmp_path / "c")],
            password=None, env={"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")})


def test_group_readable_password_file_refused(tmp_path, session_dovecot):
    dc = session_dovecot
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    os.chmod(pw, 0o640)
    refused(tmp_path, server_url(dc), ["cafile=" + dc.ca_file, "password_file=%s" % pw,
                                      "cache_dir=%s" % (tmp_path / "c")], password=None)


@pytest.mark.parametrize("source", ["password_file", "MAILFS_PASSWORD"])
def test_password_never_in_log_or_ps(mount, session_dovecot, tmp_path, source):
    """Whichever way the password comes, it is not in ps, in the daemon's
    /proc/PID/environ (MAILFS_PASSWORD is taken out once read) or in the
    debug log."""
    dc = session_dovecot
    if source == "password_file":
        pw = tmp_path / "pw"
        pw.write_text(CAROL_PASSWORD + "\n")
        os.chmod(pw, 0o600)
        m = mount(url=server_url(dc, user="carol"), options=["password_file=%s" % pw, "debug"],
                  password=None)
    else:
        m = mount(url=server_url(dc, user="carol"), options=["debug"], password=CAROL_PASSWORD)
    assert listing(m.p("INBOX")), "carol's INBOX is empty"
    run(["cat"] + [m.p("INBOX", n) for n in listing(m.p("INBOX"))])
    ps = run(["ps", "-eo", "pid,args"]).stdout.decode("utf-8", "replace")
    assert CAROL_PASSWORD not in ps, "the password shows in ps"
    environ = open("/proc/%d/environ" % m.proc.pid, "rb").read()
    assert CAROL_PASSWORD.encode() not in environ
    m.unmount()
    log = read_text(m.log)
    assert log.strip(), "-o debug,logfile= wrote nothing to the log"
    secrets = [CAROL_PASSWORD,
               base64.b64encode(b"\0carol\0" + CAROL_PASSWORD.encode()).decode(),
               base64.b64encode(b"carol\0carol\0" + CAROL_PASSWORD.encode()).decode(),
               base64.b64encode(CAROL_PASSWORD.encode()).decode()]
    for s in secrets:
        assert s not in log, "the password (%s) is in the log" % (
            "plain" if s == CAROL_PASSWORD else "base64")


# --- a server that goes away -------------------------------------------------------

def test_server_stopped_while_mounted(mount, private_dovecot):
    dc = private_dovecot
    bodies = dc.fetch_bodies("alice", "INBOX")
    m = mount(server=dc, options=["refresh=3600", "timeout=5"])
    names = listing(m.p("INBOX"))
    assert len(names) == len(bodies)
    # Every other message: reads in name order would start read-ahead,
    # which would cache the last one too.
    cached = {n: run(["cat", m.p("INBOX", n)]).stdout for n in names[0:6:2]}
    assert sorted(cached.values()) == sorted(
        b for b in bodies.values() if b in cached.values()), "bodies differ before the stop"

    dc.stop()
    assert not dc.is_running()

    for n, data in cached.items():
        got = run(["cat", m.p("INBOX", n)], timeout=30).stdout
        assert got == data, "a cached body changed after the server stopped"
    assert listing(m.p("INBOX")) == names, "ls changed after the server stopped"
    run(["ls", "-l", m.p("INBOX")], timeout=30)

    # A folder never listed has no contents to show: an error, not an
    # empty directory (rsync --delete would take that for "all deleted"),
    # and again while the next try is held off.
    for attempt in range(2):
        t0 = time.monotonic()
        r = run(["ls", m.p("Other")], timeout=30, check=False)
        assert r.returncode != 0 and b"Input/output error" in r.stderr, \
            "ls of a never-listed folder with the server gone (try %d): %r %r" % (
                attempt + 1, r.stdout, r.stderr)
        assert time.monotonic() - t0 < 15

    err, data, secs = read_errno(m.p("INBOX", names[-1]), timeout=30)
    assert err is not None, "reading an uncached body hung (> 30 s) with the server gone"
    assert err == errno.EIO, "an uncached body with the server gone: errno %s, want EIO" % err
    assert secs < 15, "the EIO took %.1f s with timeout=5" % secs


def test_offline_serves_the_cache(mount, private_dovecot, tmp_path):
    dc = private_dovecot
    bodies = dc.fetch_bodies("alice", "INBOX")
    cache = str(tmp_path / "cache")
    m1 = mount(server=dc, cache_dir=cache)
    tree1 = tree(m1.path)
    names = listing(m1.p("INBOX"))
    cached = {n: run(["cat", m1.p("INBOX", n)]).stdout for n in names[0:4:2]}  # no read-ahead
    m1.unmount()
    dc.stop()

    m2 = mount(server=dc, cache_dir=cache, options=["offline"])
    assert listing(m2.p("INBOX")) == names, "offline listing differs"
    tree2 = tree(m2.path)
    assert tree2 == tree1, "offline: names, sizes or mtimes differ from the online mount"
    for n, data in cached.items():
        assert run(["cat", m2.p("INBOX", n)]).stdout == data, "offline read of a cached body"
    assert set(cached.values()) <= set(bodies.values())

    r = run(["touch", m2.p("INBOX", "new.eml")], check=False)
    assert r.returncode != 0 and b"Read-only file system" in r.stderr, \
        "touch on an offline mount must fail with EROFS: %r" % r.stderr
    code = ("import os,sys\ntry:\n    os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o644)\n"
            "except OSError as e:\n    print(e.errno)\n")
    r = run([sys.executable, "-c", code, m2.p("INBOX", "new2.eml")], timeout=30)
    assert r.stdout.strip() == str(errno.EROFS).encode(), "create: errno %r, want EROFS" % r.stdout

    err, _, secs = read_errno(m2.p("INBOX", names[-1]), timeout=30)
    assert err == errno.EIO, "an uncached body offline: errno %s, want EIO" % err
    assert secs < 15

"""What a service manager, a packager and a user at a shell rely on.

- Readiness (sd_notify's protocol, as systemd's Type=notify uses it): with
  NOTIFY_SOCKET set, mailfs sends READY=1 once the mount point is mounted,
  from the process that serves it; a path and an abstract ('@') address both
  work; the commands mailfs runs do not inherit the variable.  A socket
  bound here stands in for systemd's and notes, as each datagram arrives,
  what is mounted at the mount point and which process sent it.  Its queue
  is held full until the mount point is mounted, so that a READY=1 sent
  too early (which would block, as sd_notify's send does) is caught every
  time, not only when it wins a race: mailfs must send nothing before it.
  Meanwhile nothing here may touch the mount (mailfs serves it only once
  its send returns): mounts are read from /proc/self/mountinfo alone.
- Exit statuses: a refused mount (run with -f, as the unit runs it) prints
  one `mailfs:` line, sends no READY=1 and exits with the status of its
  kind; the permanent kinds are the ones the unit's RestartPreventExitStatus=
  lists (read from packaging/mailfs@.service.in, so the two cannot drift),
  and a transient one is not.  SIGTERM (systemctl stop) ends with 0.
- The unit `make install` writes passes `systemd-analyze verify`, the man
  page passes `mandoc -Tlint` (each skipped when the tool is missing), and
  the version is the Makefile's everywhere (packaging/version.sh --check,
  `mailfs --version`).
"""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid

import pytest

from harness import (MOUNT_TIMEOUT, PASSWORD, REPO, SANITIZER_EXIT, child_env, listing,
                     read_text, require_mailfs, run, sanitizer_reports, server_url)
from sysutil import _unescape_mountinfo, force_unmount, free_ports, is_mounted

UNIT_TEMPLATE = os.path.join(REPO, "packaging", "mailfs@.service.in")
MAN_PAGE = os.path.join(REPO, "man", "mailfs.1")

# mailfs(1), EXIT STATUS.
EXIT_FAILURE, EXIT_USAGE, EXIT_LOGIN = 1, 2, 3


def fstype_at(path):
    """The type of what /proc/self/mountinfo shows mounted at path (absolute,
    no symlinks), or None. Unlike sysutil.is_mounted it never looks the path
    up, which would wait for mailfs while it is not serving."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                return fields[fields.index("-") + 1]
    return None


def unit_values(key, path=UNIT_TEMPLATE):
    """The values of every `key=` line of a unit file."""
    with open(path, encoding="utf-8") as f:
        return [line.split("=", 1)[1].strip() for line in f if line.startswith(key + "=")]


def permanent_statuses():
    """The exit statuses the unit does not restart on."""
    values = unit_values("RestartPreventExitStatus")
    assert values, "the unit has no RestartPreventExitStatus="
    return {int(v) for value in values for v in value.split()}


class NotifySocket:
    """An AF_UNIX datagram socket where systemd's would be (a path, or an
    abstract address when the name starts with '@'); each datagram is kept
    with the sender's pid and what was mounted at the mount point the moment
    it was read."""

    def __init__(self, name):
        self.name = name           # the value for NOTIFY_SOCKET
        self.address = "\0" + name[1:] if name.startswith("@") else name
        self.mountpoint = None
        self.messages = []         # (fields, pid, fstype or None)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.address)

    def close(self):
        self.sock.close()

    def hold(self):
        """Fill the queue (net.unix.max_dgram_qlen datagrams): a sender's
        next datagram then waits until this socket is read."""
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            while True:
                filler.sendto(b"FILLER=1", socket.MSG_DONTWAIT, self.address)
        except BlockingIOError:
            pass
        finally:
            filler.close()

    def _receive(self, timeout):
        """Read one datagram (waiting up to timeout); False when none came."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except (socket.timeout, BlockingIOError):
            return False
        fstype = fstype_at(self.mountpoint) if self.mountpoint else None
        pid = None
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", value[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        if "FILLER" not in fields:
            self.messages.append((fields, pid, fstype))
        return True

    def drain(self):
        """Read what is queued, without waiting."""
        while self._receive(0.0):
            pass
        return self.messages

    def wait_for(self, key, proc, diagnostics, timeout=MOUNT_TIMEOUT):
        """The first message with key=1; fails when time runs out, or when
        proc (the sender itself; None for a daemon) has ended without it."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages:
                if msg[0].get(key) == "1":
                    return msg
            if time.monotonic() > deadline:
                raise AssertionError("no %s=1 within %.0f s (got %r)\n%s" % (
                    key, timeout, self.messages, diagnostics()))
            if not self._receive(0.1) and proc is not None and proc.poll() is not None:
                self.drain()
                if not any(m[0].get(key) == "1" for m in self.messages):
                    raise AssertionError("mailfs exited (status %s) without sending %s=1 "
                                         "(got %r)\n%s" % (proc.returncode, key, self.messages,
                                                           diagnostics()))


@pytest.fixture
def notify_socket(tmp_path):
    # Name it after `mount` in a test's arguments: it is closed first then,
    # which releases a mailfs still waiting to send, before the unmount.
    s = NotifySocket(str(tmp_path / "notify"))
    yield s
    s.close()


def start_held(mount, sock, **kwargs):
    """mount(...) with NOTIFY_SOCKET=sock, whose queue is full until read."""
    sock.hold()
    env = dict(kwargs.pop("env", None) or {}, NOTIFY_SOCKET=sock.name)
    return mount(env=env, expect_mount=False, **kwargs)


def assert_ready_when_mounted(sock, m, pid):
    """m was started with start_held: it must mount while its notifications
    are held, then READY=1 must come, from pid (None: any)."""
    # The parent's real path: the mount point's own would be looked up in the mount.
    sock.mountpoint = os.path.join(os.path.realpath(os.path.dirname(m.path)),
                                   os.path.basename(m.path))
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not fstype_at(sock.mountpoint):
        assert m.proc.poll() is None or fstype_at(sock.mountpoint), (
            "mailfs exited (status %s) before mounting\n%s" % (m.proc.returncode, m.diagnostics()))
        assert time.monotonic() < deadline, (
            "not mounted within %.0f s while the notify socket was full: was READY=1 sent "
            "before the mount?\n%s" % (MOUNT_TIMEOUT, m.diagnostics()))
        time.sleep(0.05)
    fields, sender, fstype = sock.wait_for("READY", m.proc if m.foreground else None,
                                           m.diagnostics)
    assert fstype == "fuse.mailfs", (
        "READY=1 arrived while the mount point held %r, not the mailfs mount\n%s" % (
            fstype, m.diagnostics()))
    assert pid is None or sender == pid, (
        "READY=1 came from pid %s, not from the process systemd started (%s): "
        "NotifyAccess=main would drop it" % (sender, pid))
    assert fields.get("STATUS"), "READY=1 came without a STATUS= line: %r" % (fields,)
    assert "INBOX" in listing(m.path)


# --- readiness ---------------------------------------------------------------------------

def test_ready_once_mounted(mount, notify_socket, tmp_path):
    # The password comes from a command that also records whether it saw NOTIFY_SOCKET.
    seen = tmp_path / "password-command-env"
    m = start_held(mount, notify_socket, password=None,
                   options=["password_command=printenv NOTIFY_SOCKET >%s; echo %s" % (
                       seen, PASSWORD)])
    assert_ready_when_mounted(notify_socket, m, m.proc.pid)
    assert read_text(str(seen)) == "", "the password_command inherited NOTIFY_SOCKET"
    m.unmount()
    notify_socket.drain()
    assert notify_socket.messages[-1][0].get("STOPPING") == "1", (
        "no STOPPING=1 after the unmount: %r" % notify_socket.messages)


def test_ready_abstract_address(mount):
    sock = NotifySocket("@mailfs-test-%s" % uuid.uuid4().hex)
    try:
        m = start_held(mount, sock)
        assert_ready_when_mounted(sock, m, m.proc.pid)
    finally:
        sock.close()


def test_ready_from_the_daemon(mount, notify_socket):
    # Without -f the process that stays is the daemon, not the one started.
    m = start_held(mount, notify_socket, foreground=False)
    assert_ready_when_mounted(notify_socket, m, None)
    assert m.proc.wait(timeout=MOUNT_TIMEOUT) == 0
    assert notify_socket.messages[0][1] != m.proc.pid, "READY=1 came from the parent, not the daemon"


def test_sigterm_unmounts_and_exits_zero(mount, notify_socket):
    # systemctl stop sends SIGTERM: a clean stop, not a failed unit.
    m = start_held(mount, notify_socket)
    assert_ready_when_mounted(notify_socket, m, m.proc.pid)
    m.proc.send_signal(signal.SIGTERM)
    rc = m.proc.wait(timeout=30)
    if rc == SANITIZER_EXIT and not sanitizer_reports(m.tmpdir):
        rc = 0      # libfuse's directory handle only (harness.libfuse_dirhandle_leak)
    assert rc == 0, "mailfs exited %s on SIGTERM\n%s" % (rc, m.diagnostics())
    assert not is_mounted(m.path), "still mounted after SIGTERM"


def test_sigterm_while_a_directory_is_open_exits_zero(mount, notify_socket):
    """Directories held open (listed: the root, and INBOX's first listing)
    when SIGTERM comes: the kernel sends no RELEASEDIR after the session
    ends, so mailfs frees those handles itself. Under the sanitizers a
    handle left behind is a leak report, and mailfs exits 86."""
    m = start_held(mount, notify_socket)
    assert_ready_when_mounted(notify_socket, m, m.proc.pid)
    held = [os.open(m.path, os.O_RDONLY | os.O_DIRECTORY),
            os.open(m.p("INBOX"), os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for fd in held:
            assert os.listdir(fd), "an empty listing"
        m.proc.send_signal(signal.SIGTERM)
        rc = m.proc.wait(timeout=30)
    finally:
        for fd in held:
            try:
                os.close(fd)
            except OSError:
                pass
    if rc == SANITIZER_EXIT and not sanitizer_reports(m.tmpdir):
        rc = 0      # libfuse's own allocations only (harness.libfuse_dirhandle_leak)
    assert rc == 0, "mailfs exited %s on SIGTERM\n%s" % (rc, m.diagnostics())


# --- refusals ----------------------------------------------------------------------------

def run_refused(tmp_path, args, sock, password=PASSWORD):
    """mailfs -f ARGS with NOTIFY_SOCKET, expecting a refusal: one `mailfs:`
    line, nothing mounted, no READY=1.  Returns (exit status, the line)."""
    mnt = str(tmp_path / "mnt")
    r = subprocess.run([require_mailfs(), "-f"] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60,
                       env=child_env(tmp_path, password=password,
                                     extra={"NOTIFY_SOCKET": sock.name}))
    mounted = is_mounted(mnt)
    if mounted:
        force_unmount(mnt)
    stderr = r.stderr.decode("utf-8", "replace")
    info = "command: %s\nexit: %s\nstderr: %r" % (" ".join(r.args), r.returncode, stderr)
    assert not mounted, "a refused mount left something mounted\n" + info
    lines = [line for line in stderr.split("\n") if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mailfs: "), (
        "want exactly one line starting with 'mailfs: '\n" + info)
    assert not any(m[0].get("READY") for m in sock.drain()), "READY=1 from a refused mount\n" + info
    return r.returncode, lines[0]


# name -> (arguments after -f, built from (server, tmp_path, mnt); status; words the line must hold)
REFUSALS = {
    "wrong-password": (lambda dc, t, mnt: ["-o", "cafile=%s,cache_dir=%s/c" % (dc.ca_file, t),
                                           server_url(dc), mnt], EXIT_LOGIN, "login failed"),
    "untrusted-certificate": (lambda dc, t, mnt: ["-o", "cache_dir=%s/c" % t, server_url(dc), mnt],
                              EXIT_LOGIN, "TLS"),
    "unreachable": (lambda dc, t, mnt: ["-o", "cafile=%s,cache_dir=%s/c" % (dc.ca_file, t),
                                        "imaps://alice@127.0.0.1:%d/" % free_ports(1)[0], mnt],
                    EXIT_FAILURE, "cannot connect"),
    # The unit passes -o "${MAILFS_OPTIONS}", empty when an account's file sets none:
    # that must get as far as connecting.
    "empty-options": (lambda dc, t, mnt: ["-o", "cache_dir=%s/c" % t, "-o", "fsname=mailfs:test",
                                          "-o", "", "imaps://alice@127.0.0.1:%d/" % free_ports(1)[0],
                                          mnt], EXIT_FAILURE, "cannot connect"),
    "refresh-not-a-number": (lambda dc, t, mnt: ["-o", "refresh=abc", server_url(dc), mnt],
                             EXIT_USAGE, "refresh=abc"),
    "unknown-option": (lambda dc, t, mnt: ["-o", "nonsense=1", server_url(dc), mnt],
                       EXIT_USAGE, "nonsense=1"),
    "no-mount-point": (lambda dc, t, mnt: [server_url(dc)], EXIT_USAGE, "no mount point"),
    "nonexistent-mount-point": (lambda dc, t, mnt: [server_url(dc), mnt + "-missing"],
                                EXIT_USAGE, "mnt-missing"),
    "extra-argument": (lambda dc, t, mnt: [server_url(dc), mnt, "extra"], EXIT_USAGE, "extra"),
    "missing-option-argument": (lambda dc, t, mnt: [server_url(dc), mnt, "-o"], EXIT_USAGE, "-o"),
    "bad-url": (lambda dc, t, mnt: ["http://alice@127.0.0.1/", mnt], EXIT_USAGE, "http"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_refusal_exit_status(tmp_path, session_dovecot, notify_socket, kind):
    build, status, words = REFUSALS[kind]
    (tmp_path / "mnt").mkdir()
    password = "not-the-password" if kind == "wrong-password" else PASSWORD
    rc, line = run_refused(tmp_path, build(session_dovecot, str(tmp_path), str(tmp_path / "mnt")),
                           notify_socket, password=password)
    assert rc == status, "%s: exit status %s, want %s (%s)" % (kind, rc, status, line)
    assert words in line, "%s: the line does not say what was wrong: %s" % (kind, line)
    # Permanent failures are the ones the unit does not retry, and only those.
    assert (rc in permanent_statuses()) == (rc != EXIT_FAILURE), (
        "exit status %s vs the unit's RestartPreventExitStatus=%s" % (
            rc, sorted(permanent_statuses())))


# --- the installed unit, the man page, the version ---------------------------------------

def test_installed_unit_verifies(tmp_path):
    """make install's unit runs the installed binary, as Type=notify with -f,
    and systemd-analyze verify finds nothing to say about it."""
    binary = require_mailfs()
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    build.mkdir()
    shutil.copy(binary, build / "mailfs")
    # -o: install this binary as it is, never rebuild it.
    run(["make", "-s", "-C", REPO, "-o", str(build / "mailfs"), "BUILD=%s" % build,
         "PREFIX=%s" % prefix, "install"], timeout=120)
    unit = prefix / "lib" / "systemd" / "user" / "mailfs@.service"
    assert unit_values("Type", unit) == ["notify"]
    exec_start = unit_values("ExecStart", unit)
    assert len(exec_start) == 1 and exec_start[0].startswith("%s/bin/mailfs -f " % prefix), exec_start
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # MANPATH: so that Documentation=man:mailfs(1) is checked against the installed page.
    r = run(["systemd-analyze", "verify", str(unit)], check=False, timeout=60,
            env=dict(os.environ, MANPATH=str(prefix / "share" / "man")))
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0 and not out.strip(), "systemd-analyze verify:\n" + out


def test_man_page_lint():
    if not shutil.which("mandoc"):
        pytest.skip("mandoc is not installed (packaging/deps.sh installs it)")
    r = run(["mandoc", "-Tlint", MAN_PAGE], check=False)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0 and not out.strip(), "mandoc -Tlint:\n" + out


def test_one_version():
    r = run([os.path.join(REPO, "packaging", "version.sh"), "--check"], check=False)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    version = r.stdout.decode().strip()
    out = run([require_mailfs(), "--version"]).stdout.decode()
    m = re.match(r"mailfs (\S+) \(libfuse (\S+), ", out)
    assert m, "mailfs --version: %r" % out
    assert m.group(1) == version, "--version says %s, the Makefile %s" % (m.group(1), version)
    assert re.fullmatch(r"3\.\d+(\.\d+)?", m.group(2)), "libfuse's version as %r" % m.group(2)

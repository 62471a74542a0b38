"""Processes, ports, mounts and files: small helpers with no test framework
in them, shared by the Dovecot launcher (tests/dovecot.py), the mount test
harness (tests/harness.py), the demo (tests/demo.py) and, through
dovecot.py, the benchmarks (bench/).
"""

import os
import re
import signal
import socket
import subprocess
import time

HOST = "127.0.0.1"


# --- ports ----------------------------------------------------------------------

def free_ports(n, host=HOST):
    """n distinct free TCP ports on loopback (bound to port 0, then closed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_accepts(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- processes ----------------------------------------------------------------------

def pid_alive(pid):
    """Is the process there?  A zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_pid(pid, timeout=10.0, group=True):
    """TERM the process (and its group), wait bounded, then KILL.  Returns
    True when it ended on the TERM."""
    def send(sig, to_group):
        try:
            if to_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(cond, secs):
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not cond():
                return True
            time.sleep(0.02)
        return False

    # TERM to the whole group at once: Dovecot's children (log, imap ...) notice
    # a dead master only after about 10 s, and the log process outlives a TERM
    # while others still write to it.
    send(signal.SIGTERM, group)
    alive = (lambda: group_alive(pid)) if group else (lambda: pid_alive(pid))
    clean = wait(alive, timeout)
    if not clean:
        send(signal.SIGKILL, group)
        wait(alive, 5.0)
    return clean


def pids_with_cmdline(args):
    """Pids of the processes whose argv is exactly args (a daemonized mailfs
    keeps its argv; the mount point in it is unique to the test)."""
    want = b"\0".join(a.encode() for a in args) + b"\0"
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if f.read() == want:
                        pids.append(int(d))
            except OSError:
                pass
    return pids


# --- mounts -------------------------------------------------------------------------

def _unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mountinfo_fields(path):
    """The fields of /proc/self/mountinfo's line for a mount at path, or None."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                return fields
    return None


def is_mounted(path):
    """Is something mounted at path?  Reads /proc/self/mountinfo, so it never
    touches the (possibly hung) filesystem itself."""
    return _mountinfo_fields(path) is not None


def mount_fstype(path):
    fields = _mountinfo_fields(path)
    return fields[fields.index("-") + 1] if fields else None


def force_unmount(path):
    """Unmount whatever is at path (fusermount3 -u, then -uz).  Returns True if
    nothing is mounted there afterwards."""
    deadline = time.monotonic() + 10
    while is_mounted(path) and time.monotonic() < deadline:
        r = subprocess.run(["fusermount3", "-u", path], capture_output=True, timeout=30)
        if r.returncode == 0 and not is_mounted(path):
            break
        time.sleep(0.1)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", path], capture_output=True, timeout=30)
    if is_mounted(path):
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)
    return not is_mounted(path)


# --- files --------------------------------------------------------------------------

def read_text(path, limit=None, since=0):
    """A file's text from byte offset since ("" when it cannot be read);
    with limit, only its last limit characters after a "...\\n"."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if limit is not None and len(text) > limit:
        text = "...\n" + text[-limit:]
    return text

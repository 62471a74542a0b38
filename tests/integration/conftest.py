"""Fixtures for the mount tests: a private Dovecot with a populated account,
and a factory that mounts it with the real mailfs binary.

The server is checked with Python's imaplib only (tests/dovecot.py), never
through mailfs.  A mount fails its test when mailfs exits non-zero, dies of a
signal, or reports AddressSanitizer, LeakSanitizer or UBSan findings.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import dovecot as dovecot_mod  # noqa: E402
import sample_mail  # noqa: E402
from dovecot import Dovecot  # noqa: E402

PASSWORD = "secret"
# A second account with a password distinctive enough to grep for.
CAROL_PASSWORD = "Zq8-kx41-Tr0ub4dor-pw"
USERS = {"alice": PASSWORD, "carol": CAROL_PASSWORD}

MOUNT_TIMEOUT = 20.0
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

# Folders of the session account: name -> (count, seed, tricky)
GENERATED = {
    "INBOX": (40, 1, True),
    "Archive": (12, 2, False),
    "Archive/2023": (10, 3, False),
    "Entwürfe": (5, 4, False),
    "Lists/debian": (8, 5, False),   # "Lists" itself is \Noselect
}
EMPTY_FOLDERS = ["Empty"]
CORPUS_FOLDER = "Corpus"


# --- locating things ---------------------------------------------------------

def mailfs_bin():
    path = os.environ.get("MAILFS_BIN") or os.path.join(REPO, "build", "mailfs")
    return os.path.abspath(path)


def require_mailfs():
    path = mailfs_bin()
    if not os.access(path, os.X_OK):
        # Under make (MAILFS_BIN set) a missing binary is a failure, not a skip.
        if os.environ.get("MAILFS_BIN"):
            pytest.fail("MAILFS_BIN=%s is not an executable" % path)
        pytest.skip("mailfs binary not found at %s (run make, or set MAILFS_BIN)" % path)
    return path


def corpus_messages_dir():
    """The corpus's messages/ directory, or None."""
    cands = []
    if os.environ.get("CORPUS_DIR"):
        c = os.environ["CORPUS_DIR"]
        cands += [os.path.join(c, "messages"), c]
    cands.append(os.path.join(REPO, "..", "shared", "corpus", "messages"))
    for c in cands:
        if os.path.isdir(c) and any(n.endswith(".eml") for n in os.listdir(c)):
            return os.path.abspath(c)
    return None


def select_corpus(msgdir):
    """About 60 corpus files: every 6th, plus one of each MANIFEST feature tag."""
    names = sorted(n for n in os.listdir(msgdir) if n.endswith(".eml"))
    chosen = set(names[::6])
    manifest = os.path.join(os.path.dirname(msgdir), "MANIFEST.tsv")
    if os.path.exists(manifest):
        seen = set()
        with open(manifest, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f][1:]
        tags_of = {r[0]: set(r[5].split(",")) if len(r) > 5 and r[5] else set() for r in rows}
        for n in chosen:
            seen |= tags_of.get(n, set())
        for r in rows:
            missing = tags_of.get(r[0], set()) - seen
            if missing and r[0] in names:
                chosen.add(r[0])
                seen |= tags_of[r[0]]
    return sorted(chosen)


# --- processes and mounts ------------------------------------------------------

def _unescape_mountinfo(s):
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def is_mounted(path):
    """Is something mounted at path?  Reads /proc/self/mountinfo, so it never
    touches the (possibly hung) filesystem itself."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                return True
    return False


def mount_fstype(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                return fields[fields.index("-") + 1]
    return None


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


def read_text(path, limit=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if limit is not None and len(text) > limit:
        text = "...\n" + text[-limit:]
    return text


def child_env(tmpdir, password=PASSWORD, extra=None):
    """The environment for mailfs: the password, sanitizer options, and any
    extra (a value None removes the variable)."""
    env = dict(os.environ)
    env.pop("MAILFS_PASSWORD", None)
    if password is not None:
        env["MAILFS_PASSWORD"] = password
    san = os.path.join(str(tmpdir), "sanitizer")
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:log_path=" + san
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=" + san
    env["LSAN_OPTIONS"] = "log_path=" + san
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def sanitizer_reports(tmpdir):
    """Text of the sanitizer log files (log_path=<tmpdir>/sanitizer.<pid>)."""
    out = []
    for n in sorted(os.listdir(str(tmpdir))):
        if n.startswith("sanitizer."):
            out.append(read_text(os.path.join(str(tmpdir), n), 6000))
    return "\n".join(out)


def run(cmd, timeout=60, check=True, input=None, env=None, cwd=None):
    """Run a command (list, or str for sh -c); returns CompletedProcess with
    bytes stdout/stderr.  check: assert exit status 0 with a clear message."""
    shell = isinstance(cmd, str)
    try:
        r = subprocess.run(cmd, shell=shell, capture_output=True, timeout=timeout,
                           input=input, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise AssertionError("command did not finish within %s s: %s" % (timeout, cmd))
    if check and r.returncode != 0:
        raise AssertionError("command failed (exit %d): %s\nstdout: %s\nstderr: %s" % (
            r.returncode, cmd, r.stdout[-2000:].decode(errors="replace"),
            r.stderr[-2000:].decode(errors="replace")))
    return r


def wait_for(cond, timeout, interval=0.1, what="condition"):
    """Poll cond() until it returns a true value; return it, or raise after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
        except (OSError, AssertionError) as e:
            last = None
            err = e
        else:
            err = None
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s%s" % (
                timeout, what, (" (last error: %s)" % err) if err else ""))
        time.sleep(interval)


def call_with_timeout(fn, timeout):
    """Run fn() in a daemon thread; returns (finished, result_or_exception, seconds)."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: B902 - handed back to the caller
            box["result"] = e

    t0 = time.monotonic()
    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    return (not th.is_alive(), box.get("result"), time.monotonic() - t0)


def read_errno(path, timeout=30):
    """Read a file in a child process bounded by timeout.

    Returns (errno or 0, data bytes, seconds).  errno is None on timeout."""
    code = ("import sys\ntry:\n    d = open(sys.argv[1], 'rb').read()\n"
            "    sys.stdout.buffer.write(d); sys.exit(0)\n"
            "except OSError as e:\n    sys.stderr.write(str(e.errno)); sys.exit(3)\n")
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, b"", time.monotonic() - t0
    dt = time.monotonic() - t0
    if r.returncode == 0:
        return 0, r.stdout, dt
    try:
        return int(r.stderr.decode().strip().splitlines()[-1]), b"", dt
    except (ValueError, IndexError):
        return -1, r.stderr, dt


def getfattr(path, name, check=True):
    """The value of one xattr, via getfattr --only-values; None if absent."""
    r = run(["getfattr", "--only-values", "--absolute-names", "-n", name, path],
            check=False, timeout=60)
    if r.returncode != 0:
        if check:
            raise AssertionError("getfattr -n %s %s failed: %s" % (
                name, path, r.stderr.decode(errors="replace").strip()))
        return None
    return r.stdout.decode("utf-8", "replace")


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


class Mount:
    """One running mailfs.  Use unmount() (or let the fixture do it)."""

    def __init__(self, path, proc, log, stderr_path, cache_dir, tmpdir, args, foreground,
                 launcher_result=None):
        self.path = path
        self.proc = proc
        self.log = log
        self.stderr_path = stderr_path
        self.cache_dir = cache_dir
        self.tmpdir = tmpdir
        self.args = args
        self.foreground = foreground
        self.launcher_result = launcher_result
        self.unmounted = False
        self.problems = []

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def log_text(self):
        return read_text(self.log)

    def diagnostics(self):
        return ("--- mailfs command: %s\n--- stderr:\n%s\n--- log (tail):\n%s\n%s" % (
            " ".join(self.args), read_text(self.stderr_path, 4000), read_text(self.log, 4000),
            sanitizer_reports(self.tmpdir)))

    def stats(self):
        raw = getfattr(self.path, "user.mailfs.stats")
        try:
            return json.loads(raw)
        except ValueError:
            raise AssertionError("user.mailfs.stats is not JSON: %r" % raw)

    def unmount(self, check=True):
        """Unmount, wait for mailfs to end, and check how it ended."""
        if self.unmounted:
            return self.problems
        self.unmounted = True
        daemons = [] if self.foreground else pids_with_cmdline(self.args)
        if not force_unmount(self.path):
            self.problems.append("could not unmount %s" % self.path)
        deadline = time.monotonic() + 30
        while daemons and time.monotonic() < deadline:
            daemons = [p for p in daemons if dovecot_mod._pid_alive(p)]
            time.sleep(0.05)
        if daemons:
            self.problems.append("the mailfs daemon (pid %s) did not exit within 30 s of the "
                                 "unmount" % daemons)
        if self.foreground and self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.problems.append("mailfs did not exit within 30 s of the unmount")
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            rc = self.proc.returncode
            if rc is not None and rc < 0:
                self.problems.append("mailfs was killed by signal %d" % -rc)
            elif rc:
                self.problems.append("mailfs exited with status %d" % rc)
        text = read_text(self.stderr_path) + read_text(self.log) + sanitizer_reports(self.tmpdir)
        for mark in SANITIZER_MARKS:
            if mark in text:
                self.problems.append("sanitizer report (%s)" % mark)
                break
        if self.problems and check:
            raise AssertionError("; ".join(self.problems) + "\n" + self.diagnostics())
        return self.problems


class MountFactory:
    def __init__(self, tmp_path, server):
        self.tmp_path = tmp_path
        self.server = server
        self.mounts = []
        self.servers_to_stop = []
        self.n = 0

    def __call__(self, url=None, options=(), env=None, cache_dir=None, foreground=True,
                 server=None, password=PASSWORD, user="alice", cafile=True, logfile=True,
                 expect_mount=True):
        """Mount with the real binary; returns a Mount.

        url: default imaps://USER@127.0.0.1:<imaps_port>/ of server (default:
        the session server).  options: extra -o options (list or 'a,b').
        env: extra environment (None values remove).  cache_dir: default a
        fresh directory.  password: put in MAILFS_PASSWORD (None: not set)."""
        binary = require_mailfs()
        server = server or self.server
        self.n += 1
        base = os.path.join(str(self.tmp_path), "m%d" % self.n)
        os.makedirs(base)
        mnt = os.path.join(base, "mnt")
        os.makedirs(mnt)
        if cache_dir is None:
            cache_dir = os.path.join(base, "cache")
        log = os.path.join(base, "mailfs.log")
        stderr_path = os.path.join(base, "stderr")
        if url is None:
            url = "imaps://%s@%s:%d/" % (user, server.host, server.imaps_port)
        opts = []
        if cafile:
            opts.append("cafile=" + (cafile if isinstance(cafile, str) else server.ca_file))
        if cache_dir:
            opts.append("cache_dir=" + cache_dir)
        if logfile:
            opts.append("logfile=" + log)
        if isinstance(options, str):
            options = [o for o in options.split(",") if o]
        opts += list(options)
        args = [binary]
        if foreground:
            args.append("-f")
        if opts:
            args += ["-o", ",".join(opts)]
        args += [url, mnt]
        cenv = child_env(base, password=password, extra=env)
        errf = open(stderr_path, "wb")
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                    env=cenv, cwd=base)
        finally:
            errf.close()
        m = Mount(mnt, proc, log, stderr_path, cache_dir, base, args, foreground)
        self.mounts.append(m)
        if not expect_mount:
            return m
        deadline = time.monotonic() + MOUNT_TIMEOUT
        if foreground:
            while not is_mounted(mnt):
                if proc.poll() is not None:
                    m.unmounted = True
                    raise AssertionError("mailfs exited (status %s) before mounting\n%s" % (
                        proc.returncode, m.diagnostics()))
                if time.monotonic() > deadline:
                    raise AssertionError("not mounted within %.0f s\n%s" % (
                        MOUNT_TIMEOUT, m.diagnostics()))
                time.sleep(0.05)
        else:
            try:
                rc = proc.wait(timeout=MOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError("mailfs (daemonizing) did not return within %.0f s\n%s" % (
                    MOUNT_TIMEOUT, m.diagnostics()))
            if rc != 0 or not is_mounted(mnt):
                raise AssertionError("mailfs returned %d, mounted: %s\n%s" % (
                    rc, is_mounted(mnt), m.diagnostics()))
        return m

    def finish(self):
        problems = []
        for m in reversed(self.mounts):
            try:
                for p in m.unmount(check=False):
                    problems.append("%s: %s\n%s" % (m.path, p, m.diagnostics()))
            except Exception as e:  # keep cleaning up
                problems.append("%s: %r" % (m.path, e))
        for dc in self.servers_to_stop:
            dc.stop()
        return problems


# --- the session server and its account ----------------------------------------

class Account:
    """What the server holds, as seen by imaplib (cached for the session)."""

    def __init__(self, dc, user="alice"):
        self.dc = dc
        self.user = user
        self.generated = {}       # folder -> True when names are predictable
        self.corpus_files = {}    # uid -> corpus file name (Corpus folder)
        self._meta = {}
        self._bodies = {}

    def folders(self):
        return self.dc.list_folders(self.user)

    def selectable(self):
        return [n for n, flags, _ in self.folders()
                if not ({"\\Noselect", "\\NonExistent"} & {f for f in flags})]

    def meta(self, folder):
        """[{uid, flags, size, internaldate}] as the server has them now."""
        if folder not in self._meta:
            self._meta[folder] = self.dc.messages(self.user, folder)
        return self._meta[folder]

    def fresh_meta(self, folder):
        return self.dc.messages(self.user, folder)

    def bodies(self, folder):
        if folder not in self._bodies:
            self._bodies[folder] = self.dc.fetch_bodies(self.user, folder)
        return self._bodies[folder]

    def total_size(self):
        return sum(r["size"] for f in self.selectable() for r in self.meta(f))

    def expected_names(self, folder):
        """{uid: file name} under names=subject, for generated folders."""
        bodies = self.bodies(folder)
        pairs = [(r["uid"], sample_mail.expected_name(bodies[r["uid"]], r["internaldate"]))
                 for r in self.meta(folder)]
        return sample_mail.apply_collisions(pairs)


def populate(dc, user="alice", with_corpus=True):
    """Fill an account: the GENERATED folders, EMPTY_FOLDERS, and Corpus."""
    acct = Account(dc, user)
    for folder, (count, seed, tricky) in GENERATED.items():
        if folder != "INBOX":
            dc.create_folder(user, folder)
        items = []
        for i, raw in enumerate(sample_mail.sample_messages(count, seed, tricky=tricky)):
            flags = []
            if i % 5 == 1:
                flags.append("\\Seen")
            if i % 7 == 3:
                flags += ["\\Flagged", "$Label1"]
            if i % 11 == 4:
                flags.append("\\Answered")
            items.append((raw, " ".join(flags), sample_mail.sample_internaldate(i, seed)))
        uids = dc.append_many(user, folder, items)
        assert None not in uids, "the server refused a generated message in %s" % folder
        acct.generated[folder] = True
    for folder in EMPTY_FOLDERS:
        dc.create_folder(user, folder)
    msgdir = corpus_messages_dir() if with_corpus else None
    if msgdir:
        dc.create_folder(user, CORPUS_FOLDER)
        files = select_corpus(msgdir)
        items = []
        for i, n in enumerate(files):
            with open(os.path.join(msgdir, n), "rb") as f:
                items.append((f.read(), "", sample_mail.sample_internaldate(i, "corpus")))
        uids = dc.append_many(user, CORPUS_FOLDER, items)
        acct.corpus_files = {u: n for u, n in zip(uids, files) if u is not None}
        acct.generated[CORPUS_FOLDER] = False
    return acct


@pytest.fixture(scope="session")
def session_dovecot():
    workdir = tempfile.mkdtemp(prefix="mailfs-it-")
    dc = Dovecot(os.path.join(workdir, "dovecot"), users=USERS)
    try:
        dc.start()
        yield dc
    finally:
        dc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def account(session_dovecot):
    acct = populate(session_dovecot)
    session_dovecot.append_many("carol", "INBOX", [
        (raw, "", sample_mail.sample_internaldate(i, 9))
        for i, raw in enumerate(sample_mail.sample_messages(3, 9, tricky=False))])
    # Snapshot what the tests compare with, before any mount touches the account.
    for f in acct.selectable():
        acct.meta(f)
    return acct


@pytest.fixture
def corpus_folder(account):
    if CORPUS_FOLDER not in account.generated:
        pytest.skip("corpus not found (set CORPUS_DIR or put it at ../shared/corpus)")
    return CORPUS_FOLDER


@pytest.fixture
def mount(tmp_path, account, session_dovecot):
    """A factory: mount(url=None, options=(), env=None, cache_dir=None,
    foreground=True, server=None, ...) -> Mount.  Everything is unmounted at
    teardown; a crash, a non-zero exit or a sanitizer report fails the test."""
    require_mailfs()
    factory = MountFactory(tmp_path, session_dovecot)
    yield factory
    problems = factory.finish()
    if problems:
        pytest.fail("mailfs did not end cleanly:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def private_dovecot(tmp_path, mount):
    """A fresh small Dovecot for tests that stop the server.  Stopped after
    the test's mounts are unmounted."""
    dc = Dovecot(str(tmp_path / "dovecot"), users={"alice": PASSWORD})
    mount.servers_to_stop.append(dc)
    dc.start()
    items = [(raw, "", sample_mail.sample_internaldate(i, 7))
             for i, raw in enumerate(sample_mail.sample_messages(8, 7, tricky=False))]
    dc.append_many("alice", "INBOX", items)
    dc.create_folder("alice", "Other")
    dc.append_many("alice", "Other", [(raw, "", sample_mail.sample_internaldate(i, 8))
                                      for i, raw in enumerate(
                                          sample_mail.sample_messages(3, 8, tricky=False))])
    return dc


def listing(path):
    """Sorted names in a directory (via ls -A, one per line)."""
    r = run(["ls", "-1A", path])
    return sorted(line for line in r.stdout.decode("utf-8", "replace").split("\n") if line)


def unix_time(dt):
    return int(dt.timestamp())


"""The harness every mount test uses (tests/integration): mounting the real
mailfs binary and checking how it ended, the one way to get a private
server (PrivateServers), the session account's contents, and the small
helpers the test modules share.  Test modules import from here, never
from conftest; conftest.py only declares the fixtures, as thin wrappers.

The server side is checked with Python's imaplib and poplib only
(tests/imap_helpers.py, tests/pop_helpers.py), never through mailfs.  A
mount fails its test when mailfs exits non-zero, dies of a signal, or
reports AddressSanitizer, LeakSanitizer or UBSan findings.
"""

import contextlib
import itertools
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import sample_mail
from dovecot import Dovecot
from imap_helpers import fetch_meta
from sysutil import force_unmount, is_mounted, pid_alive, pids_with_cmdline, read_text

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

USER = "alice"
PASSWORD = "secret"
# A second account with a password distinctive enough to grep for.
CAROL_PASSWORD = "Zq8-kx41-Tr0ub4dor-pw"
USERS = {"alice": PASSWORD, "carol": CAROL_PASSWORD}

MOUNT_TIMEOUT = 20.0
REFUSAL_BOUND = 15.0   # DESIGN.md: a refused mount returns within 15 s
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")
# The status a sanitizer ends mailfs with (ASAN_OPTIONS exitcode): told apart
# from mailfs's own exit statuses.
SANITIZER_EXIT = 86

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

# Numbers for unique folder names and message seeds: one sequence for the
# whole run, so that no two tests of a shared server pick the same name.
SEQ = itertools.count(1)


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


def server_url(server, scheme="imaps", user=USER, port=None):
    """scheme://user@host:port/ of a server object (port: its <scheme>_port
    unless given, e.g. a proxy's)."""
    return "%s://%s@%s:%d/" % (scheme, user, server.host,
                               port or getattr(server, scheme + "_port"))


# --- commands ---------------------------------------------------------------------

def child_env(tmpdir, password=PASSWORD, extra=None):
    """The environment for mailfs: the password, sanitizer options, and any
    extra (a value None removes the variable)."""
    env = dict(os.environ)
    env.pop("MAILFS_PASSWORD", None)
    if password is not None:
        env["MAILFS_PASSWORD"] = password
    san = os.path.join(str(tmpdir), "sanitizer")
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=%d:log_path=%s" % (
        SANITIZER_EXIT, san)
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=" + san
    env["LSAN_OPTIONS"] = "log_path=" + san
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def sanitizer_reports(tmpdir):
    """Text of the sanitizer log files (log_path=<tmpdir>/sanitizer.<pid>),
    but for the one leak that is libfuse's (see libfuse_dirhandle_leak)."""
    out = []
    for n in sorted(os.listdir(str(tmpdir))):
        if n.startswith("sanitizer."):
            text = read_text(os.path.join(str(tmpdir), n), 200000)
            if not libfuse_dirhandle_leak(text):
                out.append(text[:6000])
    return "\n".join(out)


def libfuse_dirhandle_leak(report):
    """Whether a sanitizer report is only this: libfuse frees no directory
    handle when its session ends, and when a session ends before the
    kernel delivered the RELEASEDIR of a directory just listed (an unmount
    right after a listing: the kernel sends RELEASEDIR in the background,
    and may drop it once DESTROY is answered; or SIGTERM), LeakSanitizer
    finds libfuse's handle (calloc'd in libfuse itself) and, hanging from
    it, its buffer and mailfs's handle. Any other leak, any direct leak
    from mailfs's own code, any other error: not this."""
    if "ERROR: LeakSanitizer" not in report or "ERROR: AddressSanitizer" in report \
            or "runtime error:" in report:
        return False
    blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of )", report)
    direct = [b for b in blocks if b.startswith("Direct leak of ")]
    if not direct:
        return False
    for b in direct:
        frames = re.findall(r"^\s*#(\d+) (.*)$", b, re.M)
        # #0 the allocator, #1 in libfuse itself, and nothing of ours below.
        if len(frames) < 2 or "libfuse3.so" not in frames[1][1] or \
                any("libfuse3.so" not in f and "libc.so" not in f for _, f in frames[1:]):
            return False
    return True


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


# --- looking at a mount -------------------------------------------------------------

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


def listing(path):
    """Sorted names in a directory (via ls -A, one per line)."""
    r = run(["ls", "-1A", path])
    return sorted(line for line in r.stdout.decode("utf-8", "replace").split("\n") if line)


def files_in(path):
    """Names of the regular files directly in path (find -type f), sorted."""
    r = run(["find", path, "-mindepth", "1", "-maxdepth", "1", "-type", "f", "-printf", "%f\\n"])
    return sorted(n for n in r.stdout.decode("utf-8", "replace").split("\n") if n)


def unix_time(dt):
    return int(dt.timestamp())


# --- mounting -------------------------------------------------------------------------

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

    def log_tail(self, n=40):
        """The last n lines of mailfs's log."""
        return "\n".join(self.log_text().splitlines()[-n:])

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
            daemons = [p for p in daemons if pid_alive(p)]
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
            if rc == SANITIZER_EXIT and not sanitizer_reports(self.tmpdir):
                rc = 0      # libfuse's directory handle only (libfuse_dirhandle_leak)
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
    """mount(...) -> Mount, with the real binary; finish() unmounts them all
    (newest first), then stops the servers of private_server()."""

    def __init__(self, tmp_path, server):
        self.tmp_path = tmp_path
        self.server = server
        self.mounts = []
        self.servers = None
        self.n = 0

    def private_server(self, **config):
        """A private Dovecot (PrivateServers.get's config) in this factory's
        directory, stopped by finish() after the mounts are unmounted."""
        if self.servers is None:
            self.servers = PrivateServers(base=str(self.tmp_path))
        return self.servers.get(**config)

    def __call__(self, url=None, options=(), env=None, cache_dir=None, foreground=True,
                 server=None, password=PASSWORD, user=USER, cafile=True, logfile=True,
                 expect_mount=True):
        """Mount with the real binary; returns a Mount.

        url: default imaps://USER@127.0.0.1:<imaps_port>/ of server (default:
        the factory's server).  options: extra -o options (list or 'a,b').
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
            url = server_url(server, "imaps", user)
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
        if self.servers is not None:
            self.servers.stop()
        return problems


@contextlib.contextmanager
def checked_mounts(tmp_path, server):
    """with checked_mounts(tmp_path, server) as mount: a MountFactory whose
    mounts are unmounted at the end, where a crash, a non-zero exit or a
    sanitizer report of any of them fails the test."""
    require_mailfs()
    factory = MountFactory(tmp_path, server)
    try:
        yield factory
    finally:
        problems = factory.finish()
    if problems:
        pytest.fail("mailfs did not end cleanly:\n" + "\n".join(problems), pytrace=False)


def refused(tmp_path, url, options=(), password=PASSWORD, env=None, within=REFUSAL_BOUND):
    """Run mailfs (daemonizing, as a user would) expecting a refusal, and
    assert DESIGN.md's rules for one: a non-zero exit, one line on stderr
    starting with 'mailfs:', nothing mounted, no sanitizer report, and
    (unless within is None) an answer within `within` seconds.  Returns
    that line."""
    binary = require_mailfs()
    mnt = os.path.join(str(tmp_path), "mnt-refused")
    os.makedirs(mnt, exist_ok=True)
    args = [binary]
    if options:
        args += ["-o", ",".join(options)]
    args += [url, mnt]
    errpath = os.path.join(str(tmp_path), "refused.stderr")
    t0 = time.monotonic()
    with open(errpath, "wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=child_env(tmp_path, password=password, extra=env))
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    elapsed = time.monotonic() - t0
    mounted = is_mounted(mnt)
    if mounted:
        force_unmount(mnt)
    stderr = read_text(errpath)
    info = "command: %s\nexit: %s\nstderr: %r\n%s" % (" ".join(args), rc, stderr,
                                                      sanitizer_reports(tmp_path))
    assert not mounted, "the refused mount left something mounted\n" + info
    assert rc is not None, "mailfs did not return within 60 s\n" + info
    assert rc != 0, "mailfs exited 0\n" + info
    lines = [line for line in stderr.split("\n") if line.strip()]
    assert len(lines) == 1, "want exactly one line on stderr\n" + info
    assert lines[0].startswith("mailfs:"), "the error must start with 'mailfs:'\n" + info
    if within is not None:
        assert elapsed < within, "the refusal took %.1f s\n%s" % (elapsed, info)
    for mark in SANITIZER_MARKS:
        assert mark not in stderr + sanitizer_reports(tmp_path), info
    return lines[0]


# --- private servers --------------------------------------------------------------------

class PrivateServers:
    """The one way a test gets a server of its own: private Dovecots, each
    started on first use and kept until stop(), one per configuration.

        servers = PrivateServers(prefix="mailfs-write-")
        dc = servers.get()                                  # Dovecot's own capabilities
        nomove = servers.get(capability="IMAP4rev1 ...")    # imap_capability = ...
        quota = servers.get(quota_storage_kb=300)           # a QUOTA STORAGE limit
        other = servers.get(extra_conf="...")               # more dovecot.conf

    kinds names configurations, so that with kinds={"quota":
    {"quota_storage_kb": 300}}, get("quota") is that server.  base: the
    directory the servers live in; by default a fresh one under /tmp, not
    under pytest's basetemp (another pytest run resets its mode to 0700, and
    Dovecot's unprivileged processes must reach their files), removed by
    stop().  users: {user: password}, alice with PASSWORD by default."""

    CONFIG = ("capability", "quota_storage_kb", "extra_conf")

    def __init__(self, base=None, prefix="mailfs-servers-", users=None, kinds=None):
        self._own_base = base is None
        self.base = tempfile.mkdtemp(prefix=prefix) if base is None else str(base)
        self.users = dict(users) if users is not None else {USER: PASSWORD}
        self.kinds = dict(kinds or {})
        self.running = {}    # (capability, quota_storage_kb, extra_conf) -> Dovecot

    def get(self, kind=None, capability=None, quota_storage_kb=None, extra_conf=""):
        config = dict(zip(self.CONFIG, (capability, quota_storage_kb, extra_conf)))
        if kind is not None:
            config.update(self.kinds[kind])
        key = tuple(config[k] for k in self.CONFIG)
        if key not in self.running:
            taken = {os.path.basename(dc.workdir) for dc in self.running.values()}
            name = first = kind or "dovecot"
            n = 1
            while name in taken:
                n += 1
                name = "%s-%d" % (first, n)
            dc = Dovecot(os.path.join(self.base, name), users=self.users, **config)
            self.running[key] = dc
            dc.start()
        return self.running[key]

    def stop(self):
        for dc in reversed(list(self.running.values())):
            dc.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# --- mail on a server, through imaplib -------------------------------------------------

def append_samples(dc, folder, messages, seed, flags="", user=USER):
    """APPEND messages (raw bytes) to folder, the i-th with the INTERNALDATE
    sample_mail.sample_internaldate(i, seed); returns their UIDs."""
    items = [(raw, flags, sample_mail.sample_internaldate(i, seed))
             for i, raw in enumerate(messages)]
    uids = dc.append_many(user, folder, items)
    assert None not in uids, "the server refused a sample message in %s" % folder
    return uids


def new_folder(dc, prefix, messages=(), flags="", user=USER):
    """A fresh folder (a unique name: prefix and a number) holding messages
    (raw bytes)."""
    name = "%s%d" % (prefix, next(SEQ))
    dc.create_folder(user, name)
    if messages:
        append_samples(dc, name, messages, name, flags, user)
    return name


def server_messages(dc, folder, user=USER):
    """[{uid, flags, size, internaldate, mid}] of folder in UID order,
    \\Deleted ones too (\\Recent left out of flags; mid: the Message-ID);
    None when the folder does not exist."""
    data = dc.fetch_all(user, folder, "(UID FLAGS RFC822.SIZE INTERNALDATE "
                        "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    if data is None:
        return None
    result = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        rec = fetch_meta(item[0])
        rec["flags"] = rec.get("flags", set()) - {"\\Recent"}
        rec["mid"] = sample_mail.message_id(item[1] + b"\r\n")
        result.append(rec)
    return sorted(result, key=lambda r: r["uid"])


def name_of(raw):
    """The file name of a sample message (they all have a Date header)."""
    return sample_mail.expected_name(raw, 0)


# --- the session account -----------------------------------------------------------------

class Account:
    """What the server holds, as seen by imaplib (cached for the session)."""

    def __init__(self, dc, user=USER):
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


def populate(dc, user=USER, with_corpus=True):
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


def populate_small(dc, user=USER):
    """A small account for tests that stop the server: 8 messages in INBOX,
    3 in Other."""
    append_samples(dc, "INBOX", sample_mail.sample_messages(8, 7, tricky=False), 7, user=user)
    dc.create_folder(user, "Other")
    append_samples(dc, "Other", sample_mail.sample_messages(3, 8, tricky=False), 8, user=user)

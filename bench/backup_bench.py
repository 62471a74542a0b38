#!/usr/bin/python3
"""backup_bench.py: how fast a backup tool reads a whole folder through
mailfs, against what users would otherwise run.  Run by bench/backup-bench.sh
(issue 10); `backup_bench.py --help` lists the options.

In one run, on a private Dovecot on loopback (tests/dovecot.py), with mail
from a seeded generator written into its Maildirs:

  alice  INBOX  10,000 messages, ~509 MB (486 with 100 KB - 2 MB attachments)
  carol  INBOX  50,000 small messages, ~104 MB
  bob    INBOX  2,000 messages, ~102 MB (101 with attachments), read over POP3

(--scale multiplies every count), it measures, each case --runs times
(median):

  floor      one streamed `UID FETCH 1:* BODY.PEEK[]` (a raw client)
  server tar `tar cf - Maildir | cat >/dev/null` of Dovecot's own Maildir
  mbsync     mbsync 1.4 (FSync no) into a new Maildir, then tar of it
  mailfs     cold: mount (new cache), `tar cf - INBOX | cat >/dev/null`,
             unmount, all inside the timing; peak RSS (VmHWM) before unmount
  prefetch   mount (new cache), `mailfs prefetch INBOX`, unmount: mbsync's
             own work, against mbsync alone; then a tar of that cache
             mounted -o offline, against tar of mbsync's Maildir: what
             serving costs with no network (--no-prefetch: neither)
  20 ms      floor, mbsync and mailfs through a 20 ms round-trip proxy (--rtt)
             (delayproxy.py: half the round trip each way, per chunk)
  POP3       mailfs pop3 mount + tar, against `mpop --keep` into a new
             Maildir (and mpop + tar of that Maildir)

Every tar must exit 0 and list exactly the server's files and bytes (tar's
-vv index, so a fast but short run cannot pass; mbsync's and mpop's
Maildirs hold LF line ends, and mbsync adds a 21-byte X-TUID header); one
extra untimed mailfs run per folder hashes every body in the tar stream
against the generator's.  mpop fsyncs every message it delivers (mbsync
runs with FSync no): on a busy disk that is most of its time.
It prints a table with the ratios and one verdict line per target of the
issue.  The machine is shared: ratios carry over, absolute times do not.

Before each timed run, every tool's alike, the bench writes and removes a
file of --settle MiB (2048).  On a VM that hands free memory back to its
host (virtio_balloon's free page reporting, as on the machine this was
written on), a page first written after it went back costs ~9 us: a new
500 MiB file is written at 450 MB/s instead of 5.6 GB/s, and pages freed
less than ~2 s before are fast again.  Without the settle step a run's
time depended on what the run before it had freed, by up to 2x.
"""

import argparse
import base64
import collections
import hashlib
import os
import pwd
import random
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402  (bench/benchlib.py: Maildir file writer)
import dovecot  # noqa: E402  (tests/dovecot.py)
import raw_imap  # noqa: E402  (bench/raw_imap.py: Reader, command)
import sample_mail  # noqa: E402  (tests/sample_mail.py)
import sysutil  # noqa: E402  (tests/sysutil.py)

PY = sys.executable or "/usr/bin/python3"
MAILFS = os.path.abspath(os.environ.get("MAILFS_BIN") or os.path.join(HERE, "..", "build", "mailfs"))
# MAILFS_BEFORE: an older build, timed in the same rounds ("before" figures).
BEFORE = os.path.abspath(os.environ["MAILFS_BEFORE"]) if os.environ.get("MAILFS_BEFORE") else None
PASSWORD = "secret"
RTT_MS = 20
MIB = 1024 * 1024

# (user, messages at scale 1, attachment messages at scale 1, seed)
BIG = ("alice", 10000, 486, 21)
MANY = ("carol", 50000, 0, 22)
POP = ("bob", 2000, 101, 23)


def delayproxy_path():
    for p in (os.environ.get("DELAYPROXY"),
              os.path.join(HERE, "..", "..", "shared", "tools", "delayproxy.py"),
              "/work/shared/tools/delayproxy.py"):
        if p and os.path.isfile(p):
            return os.path.abspath(p)
    return None


# --- the generator ------------------------------------------------------------

def small_message(i, rng, tag):
    """A plain-text message of ~0.5 to ~4 KB (2.1 KB on average)."""
    name, addr = rng.choice(sample_mail.PEOPLE)
    to_name, to_addr = rng.choice(sample_mail.PEOPLE)
    when = time.gmtime(1577836800 + rng.randrange(5 * 365 * 86400))
    subject = " ".join(rng.choices(sample_mail.WORDS, k=rng.randrange(2, 8))).capitalize()
    paras = [" ".join(rng.choices(sample_mail.WORDS, k=rng.randrange(30, 130)))
             for _ in range(rng.randrange(1, 6))]
    text = "Hello %s,\n\n%s\n\nRegards,\n%s\n" % (to_name.split()[0], "\n\n".join(paras), name)
    headers = [("From", sample_mail._fmt_addr(name, addr)),
               ("To", sample_mail._fmt_addr(to_name, to_addr)),
               ("Subject", subject),
               ("Date", time.strftime("%a, %d %b %Y %H:%M:%S +0000", when)),
               ("Message-ID", "<%s.%d.%08x@bench.mailfs.test>" % (tag, i, rng.getrandbits(32))),
               ("MIME-Version", "1.0"),
               ("Content-Type", "text/plain; charset=utf-8")]
    return sample_mail.build(headers, text)


def attachment_message(i, rng, tag):
    """A message with one base64 attachment of 100 KB to 2 MB (encoded; a
    triangular distribution whose mean is ~1.0 MB), random bytes."""
    encoded = int(rng.triangular(100000, 2000000, 880000))
    blob = rng.randbytes(encoded * 57 // 78)
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    head = ("From: Ann <ann@example.org>\r\nTo: bob@example.org\r\n"
            "Subject: report %d with attachment\r\n"
            "Message-ID: <%s.att.%d@bench.mailfs.test>\r\n"
            "Date: Mon, 07 Jun 2021 08:%02d:10 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n"
            % (i, tag, i, i % 60, i)).encode()
    parts = (b"--b%d\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n"
             b"--b%d\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Transfer-Encoding: base64\r\n"
             b"Content-Disposition: attachment; filename=\"r%d.bin\"\r\n\r\n" % (i, i, i))
    return head + parts + b64 + b"--b%d--\r\n" % i


def generate(n, n_att, seed, digests, lf_bytes=None):
    """Yields n messages, n_att of them (at seeded positions) with an
    attachment; records each one's sha256 in the Counter digests, and adds
    its size with LF line ends (as mbsync and mpop store it) to lf_bytes[0]."""
    rng = random.Random("backup-bench-%d" % seed)
    with_att = set(rng.sample(range(n), min(n_att, n)))
    for i in range(n):
        raw = attachment_message(i, rng, seed) if i in with_att else small_message(i, rng, seed)
        digests[hashlib.sha256(raw).hexdigest()] += 1
        if lf_bytes is not None:
            lf_bytes[0] += len(raw) - raw.count(b"\r\n")
        yield raw


class Folder:
    """One user's INBOX on the private server, as generated."""

    def __init__(self, dc, spec, scale):
        self.user, n, n_att, self.seed = spec
        self.n = max(1, round(n * scale))
        self.n_att = round(n_att * scale)
        self.digests = collections.Counter()
        self.dc = dc
        self.maildir = os.path.join(dc.workdir, "home", self.user, "Maildir")
        self.bytes = 0
        self.lf_bytes = [0]      # the same messages with LF line ends

    def fill(self):
        self.dc.messages(self.user, "INBOX")      # Dovecot makes the Maildir
        owner = pwd.getpwnam("dovecot")
        self.bytes = benchlib._write_maildir(os.path.join(self.maildir, "cur"),
                                             generate(self.n, self.n_att, self.seed, self.digests,
                                                      self.lf_bytes),
                                             self.seed, owner)
        benchlib._chown_tree(os.path.join(self.dc.workdir, "home", self.user), owner)

    def describe(self):
        return "%s: %d messages (%d with attachments), %.1f MB" % (
            self.user, self.n, self.n_att, self.bytes / 1e6)


# --- processes and clean-up ---------------------------------------------------

class Cleanup:
    """What this run started, undone in reverse order, whatever happens."""

    def __init__(self):
        self.items = []

    def add(self, what, fn):
        self.items.append((what, fn))
        return fn

    def remove(self, fn):
        self.items = [(w, f) for w, f in self.items if f is not fn]

    def run(self):
        while self.items:
            what, fn = self.items.pop()
            t0 = time.monotonic()
            try:
                fn()
                if time.monotonic() - t0 > 5:
                    print("backup-bench: clean-up of %s took %.0f s" % (what, time.monotonic() - t0),
                          file=sys.stderr)
            except Exception as e:   # keep cleaning up
                print("backup-bench: clean-up of %s: %s" % (what, e), file=sys.stderr)


CLEANUP = Cleanup()


def _kill_group(proc):
    if proc.poll() is None:
        sysutil.stop_pid(proc.pid, timeout=5.0, group=True)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def run(cmd, what, env=None, timeout=3600):
    """Runs cmd (a list, or a bash -o pipefail line) in its own process group,
    killed with the group on any exception; returns its stdout, or exits
    with its stderr when it fails."""
    if isinstance(cmd, str):
        cmd = ["bash", "-o", "pipefail", "-c", cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    kill = CLEANUP.add(what, lambda: _kill_group(proc))
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _kill_group(proc)
        CLEANUP.remove(kill)
    if proc.returncode != 0:
        raise SystemExit("backup-bench: %s failed (exit %d): %s" % (
            what, proc.returncode, err.decode(errors="replace")[-2000:]))
    return out


def start_proxy(target_port):
    path = delayproxy_path()
    port = sysutil.free_ports(1)[0]
    proc = subprocess.Popen([PY, path, str(port), str(target_port), str(RTT_MS),
                             "--max-seconds", "14400"], stdin=subprocess.DEVNULL,
                            start_new_session=True)
    CLEANUP.add("delay proxy", lambda: _kill_group(proc))
    deadline = time.monotonic() + 20
    while not sysutil.port_accepts(sysutil.HOST, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("backup-bench: delayproxy.py did not listen on %d" % port)
        time.sleep(0.05)
    return port


# --- tar, checked ---------------------------------------------------------------

def tar_checked(parent, member, expect_n, expect_bytes, what, only_cur=False):
    """`tar cf - MEMBER | cat >/dev/null` (with -vv into an index file, the
    only addition), timed; then checks that tar listed expect_n regular files
    of expect_bytes bytes in all (expect_bytes may be a tuple of the sizes
    allowed; with only_cur: the files in a cur/ or new/ directory, for a
    Maildir).  tar fails (and so does this) when a file gives fewer bytes
    than its size."""
    index = os.path.join(WORKDIR, "tar.index")
    t0 = time.monotonic()
    run("tar -vv --index-file=%s -cf - -C %s %s | cat >/dev/null" % (index, parent, member),
        what)
    dt = time.monotonic() - t0
    n = size = 0
    with open(index, "rb") as f:
        for line in f:
            fields = line.rstrip(b"\n").split(None, 5)
            if len(fields) < 6 or not fields[0].startswith(b"-"):
                continue
            if only_cur and b"/cur/" not in fields[5] and b"/new/" not in fields[5]:
                continue
            n += 1
            size += int(fields[2])
    if not isinstance(expect_bytes, tuple):
        expect_bytes = (expect_bytes,)
    if n != expect_n or size not in expect_bytes:
        raise SystemExit("backup-bench: %s: tar read %d files / %d bytes, the server has %d / %s"
                         % (what, n, size, expect_n, expect_bytes))
    return dt


def tar_content_check(parent, member, folder, what):
    """Untimed: every body in the tar stream, hashed, against the generator's."""
    proc = subprocess.Popen(["tar", "cf", "-", "-C", parent, member], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    kill = CLEANUP.add(what, lambda: _kill_group(proc))
    got = collections.Counter()
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            for m in tf:
                if m.isfile():
                    got[hashlib.sha256(tf.extractfile(m).read()).hexdigest()] += 1
    finally:
        proc.stdout.close()
        rc = proc.wait()
        CLEANUP.remove(kill)
    if rc != 0 or got != folder.digests:
        missing = sum((folder.digests - got).values())
        extra = sum((got - folder.digests).values())
        raise SystemExit("backup-bench: %s: tar exit %d; %d bodies missing or wrong, %d unexpected"
                         % (what, rc, missing, extra))


# --- the floor: one streamed UID FETCH 1:* BODY.PEEK[] ----------------------------

SETTLE_MIB = 0


def settle():
    """Writes and removes SETTLE_MIB MiB, untimed, so each timed run starts
    with pages the host backs (see the docstring at the top)."""
    if SETTLE_MIB <= 0:
        return
    path = os.path.join(WORKDIR, "settle")
    block = bytes(1 << 20)
    try:
        with open(path, "wb") as f:
            for _ in range(SETTLE_MIB):
                f.write(block)
    except OSError as e:      # a small /tmp: as much as fits, every run alike
        print("backup-bench: the settle step stopped early: %s" % e, flush=True)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def floor(port, folder):
    settle()
    t0 = time.monotonic()
    with socket.create_connection((sysutil.HOST, port), timeout=120) as sock:
        if TLS:
            sock = ssl.create_default_context(cafile=DC.ca_file).wrap_socket(
                sock, server_hostname=sysutil.HOST)
        rd = raw_imap.Reader(sock)
        greeting = rd.line()
        if not greeting.startswith(b"* OK"):
            raise SystemExit("backup-bench: greeting %r" % greeting)
        raw_imap.command(sock, rd, b"a", b"LOGIN %s %s" % (folder.user.encode(), PASSWORD.encode()))
        raw_imap.command(sock, rd, b"b", b"EXAMINE INBOX")
        n = raw_imap.command(sock, rd, b"c", b"UID FETCH 1:* BODY.PEEK[]")
        raw_imap.command(sock, rd, b"d", b"LOGOUT")
    dt = time.monotonic() - t0
    if n != folder.n or rd.received < folder.bytes:
        raise SystemExit("backup-bench: the floor got %d FETCH responses / %d bytes, expected %d / %d"
                         % (n, rd.received, folder.n, folder.bytes))
    return dt


# --- mbsync and mpop -------------------------------------------------------------

def discard(d):
    """Sets a tool's output aside, deleted when the bench ends.  Deleting
    10,000 files between two timed runs costs the next run on this
    machine's ext4 (no journal): for a minute or more the inode allocator
    reads past every recently freed inode, and in a profile the cold
    mailfs run spent 58% of its time creating files (ext4's
    recently_deleted and find_get_block_common) after a deletion just
    before it.  Set aside, nothing is freed while the bench measures."""
    if os.path.exists(d):
        trash = os.path.join(WORKDIR, "trash")
        os.makedirs(trash, exist_ok=True)
        os.rename(d, tempfile.mkdtemp(dir=trash))


def mbsync(port, folder):
    """mbsync into a new Maildir, then tar of it: (mbsync s, tar s).  mbsync
    stores LF line ends and adds an X-TUID header (21 bytes) to each message."""
    d = os.path.join(WORKDIR, "mbsync")
    discard(d)
    os.makedirs(os.path.join(d, "mail"))
    rc = os.path.join(d, "mbsyncrc")
    tls = ("SSLType IMAPS\nCertificateFile %s\n" % DC.ca_file) if TLS else "SSLType None\n"
    with open(rc, "w") as f:
        f.write("FSync no\n\n"
                "IMAPAccount bench\nHost %s\nPort %d\nUser %s\nPass %s\n%sAuthMechs LOGIN\n\n"
                "IMAPStore far\nAccount bench\n\n"
                "MaildirStore near\nPath %s/mail/\nInbox %s/mail/INBOX\nSubFolders Verbatim\n\n"
                "Channel bench\nFar :far:\nNear :near:\nPatterns INBOX\nCreate Near\n"
                "Sync Pull\nExpunge None\nSyncState *\n"
                # mbsync 1.4 matches a certificate's DNS names only, not its IP address
                % ("localhost" if TLS else sysutil.HOST, port, folder.user, PASSWORD, tls, d, d))
    settle()
    t0 = time.monotonic()
    run(["mbsync", "-q", "-c", rc, "bench"], "mbsync")
    t1 = time.monotonic() - t0
    t2 = tar_checked(os.path.join(d, "mail"), "INBOX", folder.n,
                     folder.lf_bytes[0] + folder.n * len("X-TUID: 0123456789ab\n"),
                     "tar of mbsync's Maildir", only_cur=True)
    discard(d)
    return t1, t2


def mpop(folder):
    """mpop --keep into a new Maildir, then tar of it: (mpop s, tar s)."""
    d = os.path.join(WORKDIR, "mpop")
    discard(d)
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(d, "Maildir", sub))
    rc = os.path.join(d, "mpoprc")
    tls = ("tls on\ntls_starttls off\ntls_trust_file %s\nauth plain\n" % DC.ca_file) if TLS \
        else "tls off\nauth user\n"
    with open(rc, "w") as f:
        f.write("defaults\n%skeep on\nreceived_header off\npipelining auto\n\n"
                "account bench\nhost %s\nport %d\nuser %s\npasswordeval echo %s\n"
                "delivery maildir %s/Maildir\nuidls_file %s/uidls\n"
                % (tls, sysutil.HOST, DC.pop3s_port if TLS else DC.pop3_port, folder.user,
                   PASSWORD, d, d))
    os.chmod(rc, 0o600)
    settle()
    t0 = time.monotonic()
    run(["mpop", "--keep", "-q", "-C", rc, "bench"], "mpop")
    t1 = time.monotonic() - t0
    t2 = tar_checked(d, "Maildir", folder.n, (folder.bytes, folder.lf_bytes[0]),
                     "tar of mpop's Maildir", only_cur=True)
    discard(d)
    return t1, t2


# --- mailfs ---------------------------------------------------------------------

def _vmhwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mailfs(url, folder, check_content=False, binary=None, ro=False, prefetch=False):
    """Cold: mount on a new cache (ro: with -o ro, as a backup would),
    tar cf - INBOX | cat, unmount; all timed. Returns (seconds, peak RSS in
    KiB).  prefetch: the same with `mailfs prefetch INBOX` instead of the tar
    (every body onto the local disk: mbsync's work), then, untimed, the cache
    is mounted again (-o offline) and a tar of it timed: what serving the
    bodies costs with no network at all (against tar of mbsync's Maildir).
    Returns ((prefetch seconds, tar seconds), peak RSS in KiB)."""
    mnt = os.path.join(WORKDIR, "mnt")
    cache = os.path.join(WORKDIR, "cache")
    discard(cache)
    os.makedirs(mnt, exist_ok=True)
    dt, hwm = _mailfs_mount(url, mnt, cache, ro, binary, [],
                            lambda: _mailfs_work(mnt, folder, check_content, prefetch, binary))
    if prefetch:
        warm, _ = _mailfs_mount(url, mnt, cache, ro, binary, ["offline"],
                                lambda: tar_checked(mnt, "INBOX", folder.n, folder.bytes,
                                                    "tar of the mailfs mount, every body cached"))
        dt = (dt, warm)
    discard(cache)
    return dt, hwm


def _mailfs_work(mnt, folder, check_content, prefetch, binary):
    if check_content:
        tar_content_check(mnt, "INBOX", folder, "mailfs content check")
    elif prefetch:
        run("%s prefetch %s/INBOX >/dev/null" % (binary or MAILFS, mnt), "mailfs prefetch")
    else:
        tar_checked(mnt, "INBOX", folder.n, folder.bytes, "tar of the mailfs mount")


def _mailfs_mount(url, mnt, cache, ro, binary, extra, work):
    """Mounts cache (more options: extra), runs work, unmounts; all timed,
    after the settle step.  Returns (seconds, peak RSS in KiB)."""
    opts = ["cache_dir=" + cache, "logfile=" + os.path.join(WORKDIR, "mailfs.log")]
    opts += ["cafile=" + DC.ca_file] if TLS else ["tls=none"]
    opts += ["ro"] if ro else []
    opts += extra
    log = open(os.path.join(WORKDIR, "mailfs.out"), "ab")
    settle()
    t0 = time.monotonic()
    proc = subprocess.Popen([binary or MAILFS, "-f", "-o", ",".join(opts), url, mnt],
                            env=dict(os.environ, MAILFS_PASSWORD=PASSWORD), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True)
    log.close()

    def down():
        if sysutil.is_mounted(mnt):
            sysutil.force_unmount(mnt)
        _kill_group(proc)
    CLEANUP.add("mailfs mount", down)
    deadline = time.monotonic() + 120
    while not sysutil.is_mounted(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("backup-bench: mailfs did not mount (see %s/mailfs.log)" % WORKDIR)
        time.sleep(0.005)
    work()
    hwm = _vmhwm_kib(proc.pid)
    for _ in range(100):     # fusermount3 -u; EBUSY is retried, bounded
        r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        if r.returncode == 0 or not sysutil.is_mounted(mnt):
            break
        time.sleep(0.05)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        raise SystemExit("backup-bench: mailfs did not exit within 120 s of its unmount")
    dt = time.monotonic() - t0
    down()
    CLEANUP.remove(down)
    if proc.returncode != 0:
        raise SystemExit("backup-bench: mailfs exited with %d" % proc.returncode)
    return dt, hwm


# --- the run --------------------------------------------------------------------

WORKDIR = DC = None
TLS = False


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_s(x):
    return "—" if x is None else ("%.2f s" % x)


def fmt_list(xs):
    return " ".join("%.2f" % x for x in xs)


def run_cases(args, folders, res):
    big, many, pop = folders
    port = DC.imaps_port if TLS else DC.imap_port
    scheme = "imaps" if TLS else "imap"
    url = lambda user, p: "%s://%s@%s:%d/" % (scheme, user, sysutil.HOST, p)

    def imap_case(key, folder, p, server_tar):
        print("\n== %s: %s, port %d" % (key, folder.describe(), p), flush=True)
        if args.verify:
            mailfs(url(folder.user, p), folder, check_content=True)
            mailfs(url(folder.user, p), folder, check_content=True, ro=True)
            print("content check: every body in mailfs's tar stream is the server's "
                  "(also with -o ro)", flush=True)
        for r in range(args.runs):
            res[key, "floor"].append(floor(p, folder))
            if server_tar:
                res[key, "server tar"].append(tar_checked(
                    os.path.join(DC.workdir, "home", folder.user), "Maildir", folder.n,
                    folder.bytes, "tar of the server's Maildir", only_cur=True))
            res[key, "mbsync"].append(mbsync(p, folder))
            res[key, "mailfs"].append(mailfs(url(folder.user, p), folder))
            res[key, "ro"].append(mailfs(url(folder.user, p), folder, ro=True))
            print("run %d: mailfs -o ro %.2f s, %.1f MiB" % (
                r + 1, res[key, "ro"][-1][0], res[key, "ro"][-1][1] / 1024))
            if args.prefetch:
                res[key, "prefetch"].append(mailfs(url(folder.user, p), folder, prefetch=True))
                print("run %d: mailfs prefetch %.2f s; then tar of the cached mount %.2f s" % (
                    (r + 1,) + res[key, "prefetch"][-1][0]))
            if BEFORE:
                res[key, "before"].append(mailfs(url(folder.user, p), folder, binary=BEFORE))
                print("run %d: MAILFS_BEFORE %.2f s, %.1f MiB" % (
                    r + 1, res[key, "before"][-1][0], res[key, "before"][-1][1] / 1024))
            print("run %d: floor %.2f s; %smbsync %.2f + tar %.2f s; mailfs %.2f s, %.1f MiB" % (
                r + 1, res[key, "floor"][-1],
                ("server tar %.2f s; " % res[key, "server tar"][-1]) if server_tar else "",
                res[key, "mbsync"][-1][0], res[key, "mbsync"][-1][1],
                res[key, "mailfs"][-1][0], res[key, "mailfs"][-1][1] / 1024), flush=True)

    if "imap" in args.cases:
        imap_case("imap", big, port, True)
    if "delay" in args.cases:
        if delayproxy_path() is None:
            print("\n== delay: skipped (no delayproxy.py; set DELAYPROXY=PATH)")
        else:
            imap_case("delay", big, start_proxy(port), False)
    if "many" in args.cases:
        imap_case("many", many, port, True)
    if "pop3" in args.cases:
        p = DC.pop3s_port if TLS else DC.pop3_port
        pop_url = "%s://%s@%s:%d/" % ("pop3s" if TLS else "pop3", pop.user, sysutil.HOST, p)
        print("\n== pop3: %s, port %d" % (pop.describe(), p), flush=True)
        if args.verify:
            mailfs(pop_url, pop, check_content=True)
            print("content check: every body in mailfs's tar stream is the server's", flush=True)
        for r in range(args.runs):
            res["pop3", "mpop"].append(mpop(pop))
            res["pop3", "mailfs"].append(mailfs(pop_url, pop))
            if BEFORE:
                res["pop3", "before"].append(mailfs(pop_url, pop, binary=BEFORE))
                print("run %d: MAILFS_BEFORE %.2f s, %.1f MiB" % (
                    r + 1, res["pop3", "before"][-1][0], res["pop3", "before"][-1][1] / 1024))
            print("run %d: mpop --keep %.2f + tar %.2f s; mailfs %.2f s, %.1f MiB" % (
                r + 1, res["pop3", "mpop"][-1][0], res["pop3", "mpop"][-1][1],
                res["pop3", "mailfs"][-1][0], res["pop3", "mailfs"][-1][1] / 1024), flush=True)


def report(args, folders, res):
    big, many, pop = folders
    print("\n== backup-bench: medians of %d runs (scale %g, %s on loopback, mailfs %s)" % (
        args.runs, args.scale, "IMAPS/POP3S" if TLS else "plain IMAP/POP3", MAILFS))
    rows = [("imap", "`tar cf - INBOX \\| cat`, %d msgs / %.0f MB" % (big.n, big.bytes / 1e6)),
            ("delay", "the same through a %d ms round-trip proxy" % RTT_MS),
            ("many", "tar of a %d-message folder (%.0f MB)" % (many.n, many.bytes / 1e6)),
            ("pop3", "POP3, %d msgs / %.0f MB, mount + tar" % (pop.n, pop.bytes / 1e6))]
    print("| work | mailfs cold | mbsync (FSync no) + tar = sum | floor: one UID FETCH 1:* "
          "| tar of server Maildir | mailfs / (mbsync+tar) | mailfs / mbsync | mailfs / floor "
          "| mailfs peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for key, label in rows:
        m = res.get((key, "mailfs"))
        if not m:
            continue
        t_m = med([x[0] for x in m])
        rss = max(x[1] for x in m) / 1024
        other = res.get((key, "mpop")) or res.get((key, "mbsync"))
        t_o, t_tar = med([x[0] for x in other]), med([x[1] for x in other])
        t_sum = med([x[0] + x[1] for x in other])
        t_floor = med(res.get((key, "floor"), []))
        t_srv = med(res.get((key, "server tar"), []))
        name = "mpop --keep" if key == "pop3" else "mbsync"
        r_floor = "%.1f×" % (t_m / t_floor) if t_floor else "—"
        print("| %s | %s | %s %s + tar %s = %s | %s | %s | %.2f× | %.2f× | %s | %.1f MiB |" % (
            label, fmt_s(t_m), name, fmt_s(t_o), fmt_s(t_tar), fmt_s(t_sum), fmt_s(t_floor),
            fmt_s(t_srv), t_m / t_sum, t_m / t_o, r_floor, rss))
        summary[key] = (t_m, t_o, t_sum, rss)
    print("\nper run (seconds):")
    for (key, tool), xs in sorted(res.items()):
        if not xs:
            continue
        if tool == "prefetch":
            print("  %-6s %-11s %s" % (key, "prefetch", fmt_list([x[0][0] for x in xs])))
            print("  %-6s %-11s %s" % (key, "cached tar", fmt_list([x[0][1] for x in xs])))
            continue
        vals = [x[0] + x[1] if tool in ("mbsync", "mpop")
                else x[0] if tool in ("mailfs", "before", "ro")
                else x
                for x in xs]
        print("  %-6s %-11s %s" % (key, tool + (" + tar" if tool in ("mbsync", "mpop") else ""),
                                   fmt_list(vals)))

    print()

    def verdict(what, x, target, unit="×", per_run=""):
        print("verdict %-52s %7.2f%s (target <= %g%s): %s%s" % (
            what, x, unit, target, unit, "meets" if x <= target else "MISSES", per_run))

    def ratio(key, with_tar, what):
        """The ratio of the medians, and each round's own ratio (the tools of
        one round ran one after the other: a busy spell of the shared
        machine tends to hit both)."""
        if key not in summary:
            return
        t_m, t_o, t_sum, _ = summary[key]
        other = res.get((key, "mpop")) or res.get((key, "mbsync"))
        rounds = ["%.2f" % (m[0] / (o[0] + o[1] if with_tar else o[0]))
                  for m, o in zip(res[key, "mailfs"], other)]
        verdict(what, t_m / (t_sum if with_tar else t_o), 1.0,
                per_run="; round by round: " + " ".join(rounds))
        if not with_tar and res.get((key, "mbsync")):
            # The first target's reading of "mbsync": with the tar of the
            # Maildir it made, which a backup then still has to run.
            print("        %-52s %7.2f×; round by round: %s" % (
                "the same against mbsync + tar of its Maildir:", t_m / t_sum,
                " ".join("%.2f" % (m[0] / (o[0] + o[1]))
                         for m, o in zip(res[key, "mailfs"], other))))
        if res.get((key, "ro")):
            t_r = med([x[0] for x in res[key, "ro"]])
            rounds = ["%.2f" % (m[0] / (o[0] + o[1] if with_tar else o[0]))
                      for m, o in zip(res[key, "ro"], other)]
            print("        %-52s %7.2f× (peak RSS %.1f MiB); round by round: %s" % (
                "the same, mailfs -o ro:", t_r / (t_sum if with_tar else t_o),
                max(x[1] for x in res[key, "ro"]) / 1024, " ".join(rounds)))
        if res.get((key, "prefetch")):
            # The same work as mbsync's (every body onto the local disk), and
            # what serving them costs with nothing left to fetch.
            pf, mb = res[key, "prefetch"], res[key, "mbsync"]
            print("        %-52s %7.2f×; round by round: %s" % (
                "mailfs prefetch / mbsync (the same work):",
                med([x[0][0] for x in pf]) / t_o,
                " ".join("%.2f" % (a[0][0] / b[0]) for a, b in zip(pf, mb))))
            print("        %-52s %7.2f×; round by round: %s" % (
                "tar of the cached mount / tar of mbsync's Maildir:",
                med([x[0][1] for x in pf]) / med([x[1] for x in mb]),
                " ".join("%.2f" % (a[0][1] / b[1]) for a, b in zip(pf, mb))))
        if res.get((key, "before")):
            t_b = med([x[0] for x in res[key, "before"]])
            print("        %-52s %7.2f× (MAILFS_BEFORE %s, same rounds; peak RSS %.1f MiB)" % (
                "the same, before:", t_b / (t_sum if with_tar else t_o), BEFORE,
                max(x[1] for x in res[key, "before"]) / 1024))
    ratio("imap", True, "cold tar 10k: mailfs / (mbsync + tar)")
    ratio("delay", False, "cold tar at %d ms: mailfs / mbsync" % RTT_MS)
    ratio("many", True, "cold tar 50k: mailfs / (mbsync + tar)")
    ratio("pop3", False, "POP3: mailfs (mount + tar) / mpop --keep")
    if summary:
        others = [x[1] / 1024 for (k, tool), xs in res.items() if tool in ("ro", "prefetch")
                  for x in xs]
        verdict("mailfs peak RSS, any run", max([v[3] for v in summary.values()] + others), 64,
                " MiB")


def main(argv):
    global WORKDIR, DC, TLS, SETTLE_MIB, RTT_MS
    ap = argparse.ArgumentParser(prog="backup-bench.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")),
                    help="multiply every message count (0.1: a quick run); env BENCH_SCALE")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")),
                    help="repetitions of each case, the median is shown (3); env BENCH_RUNS")
    ap.add_argument("--cases", default="imap,delay,many,pop3",
                    help="which cases, comma-separated (imap,delay,many,pop3)")
    ap.add_argument("--rtt", type=int, default=int(os.environ.get("BENCH_RTT", str(RTT_MS))),
                    help="the delay case's round trip in ms (%d); env BENCH_RTT" % RTT_MS)
    ap.add_argument("--tls", action="store_true",
                    help="IMAPS/POP3S with the test CA for every client (default: plain, loopback)")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip the untimed content check of each mailfs folder")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR"),
                    help="work directory (default: a new /tmp/mailfs-backup-bench.*); env BENCH_DIR")
    ap.add_argument("--settle", type=int, default=int(os.environ.get("BENCH_SETTLE", "2048")),
                    help="MiB written and removed before each timed run, alike for every tool "
                         "(2048; 0: none); env BENCH_SETTLE")
    ap.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                    default=os.environ.get("BENCH_PREFETCH", "1") != "0",
                    help="skip the `mailfs prefetch` runs (each IMAP round: the fetch alone, "
                    "against mbsync alone, and a tar of the cached mount, against tar of "
                    "mbsync's Maildir)")
    ap.add_argument("--keep", action="store_true", default=os.environ.get("BENCH_KEEP") == "1",
                    help="keep the work directory; env BENCH_KEEP=1")
    args = ap.parse_args(argv)
    args.cases = set(args.cases.split(","))
    TLS = args.tls
    SETTLE_MIB = args.settle
    RTT_MS = args.rtt
    if not os.access(MAILFS, os.X_OK):
        raise SystemExit("backup-bench: no executable %s (make first, or set MAILFS_BIN)" % MAILFS)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started ignoring it
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))

    WORKDIR = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="mailfs-backup-bench."))
    os.makedirs(WORKDIR, exist_ok=True)
    os.chmod(WORKDIR, 0o755)
    if not args.keep:
        CLEANUP.add("work directory", lambda: shutil.rmtree(WORKDIR, ignore_errors=True))
    res = collections.defaultdict(list)
    folders = None
    done = False
    try:
        DC = dovecot.Dovecot(os.path.join(WORKDIR, "dovecot"),
                             users={u: PASSWORD for u in (BIG[0], MANY[0], POP[0])})
        CLEANUP.add("Dovecot", DC.stop)
        DC.start()
        t0 = time.monotonic()
        folders = [Folder(DC, spec, args.scale) for spec in (BIG, MANY, POP)]
        for f in folders:
            f.fill()
        for f in folders[:2]:      # Dovecot's index, and the files in the page cache
            floor(DC.imaps_port if TLS else DC.imap_port, f)
        print("setup in %.0f s: %s" % (time.monotonic() - t0,
                                        "; ".join(f.describe() for f in folders)))
        print("Dovecot %s, %s, %s, %s; machine: %d cores, shared (ratios only)" % (
            subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.split()[0],
            subprocess.run(["mbsync", "--version"], capture_output=True, text=True).stdout.strip(),
            subprocess.run(["mpop", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
            subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
            os.cpu_count()), flush=True)
        print("before each timed run: %d MiB written and removed (--settle)" % SETTLE_MIB,
              flush=True)
        run_cases(args, folders, res)
        done = True
    finally:
        if folders and res:
            if not done:
                print("\nbackup-bench: INTERRUPTED or FAILED; the figures below are partial")
            report(args, folders, res)
        if args.keep:
            print("backup-bench: kept %s" % WORKDIR)
        CLEANUP.run()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)

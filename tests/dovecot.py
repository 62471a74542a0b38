"""A private Dovecot (IMAP, IMAPS, POP3, POP3S) on loopback, for tests.

Started as root from a fresh working directory, on free loopback ports,
with TLS from a CA that is made here with openssl.  Used by the mount tests
(tests/integration), the demo (tests/demo.py) and the benchmarks (bench/).
It must never leave a process behind: stop() ends Dovecot by its own pid
(TERM, a bounded wait, then KILL of its process group).

    with Dovecot(tmpdir) as dc:
        dc.create_folder("alice", "Entwürfe")
        dc.append("alice", "INBOX", raw_bytes, flags="\\Seen")
        imap = dc.imap("alice")          # imaplib.IMAP4_SSL, logged in
"""

import base64
import datetime
import imaplib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

DOVECOT_BIN = "/usr/sbin/dovecot"
HOST = "127.0.0.1"


# --- modified UTF-7 (RFC 3501 section 5.1.3) ------------------------------

def utf7_encode(name):
    """A folder name (str) in IMAP's modified UTF-7 (str, ASCII only)."""
    out = []
    run = []

    def flush():
        if run:
            data = "".join(run).encode("utf-16-be")
            b64 = base64.b64encode(data).decode("ascii").rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def utf7_decode(name):
    """Modified UTF-7 (str or bytes) back to a str."""
    if isinstance(name, bytes):
        name = name.decode("ascii")
    out = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.index("-", i)
        chunk = name[i + 1:end]
        if chunk == "":
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64).decode("utf-16-be"))
        i = end + 1
    return "".join(out)


def imap_quote(s):
    """An IMAP quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- small helpers ---------------------------------------------------------

def free_ports(n):
    """n distinct free TCP ports on loopback (bound to port 0, then closed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
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


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_pid(pid, timeout=10.0, group=True):
    """TERM the process (and its group), wait bounded, then KILL.

    Used for a Dovecot that this module started detached (the demo)."""
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
    alive = (lambda: _group_alive(pid)) if group else (lambda: _pid_alive(pid))
    clean = wait(alive, timeout)
    if not clean:
        send(signal.SIGKILL, group)
        wait(alive, 5.0)
    return clean


def _make_searchable(path):
    """Let the dovecot user traverse every directory above path (o+x only)."""
    path = os.path.abspath(path)
    while True:
        st = os.stat(path)
        if not st.st_mode & 0o001:
            os.chmod(path, (st.st_mode & 0o7777) | 0o001)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent


def make_ca(tlsdir, cn="localhost"):
    """A CA and a server certificate for 127.0.0.1/localhost signed by it.

    Returns (ca_cert, server_cert, server_key) paths."""
    os.makedirs(tlsdir, exist_ok=True)
    p = lambda n: os.path.join(tlsdir, n)

    def run(*args):
        r = subprocess.run(["openssl", *args], cwd=tlsdir, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], r.stderr.decode(errors="replace")))

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "3650",
        "-subj", "/CN=mailfs test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *ec, "-keyout", p("server.key"), "-out", p("server.csr"),
        "-subj", "/CN=" + cn)
    with open(p("server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
        "-CAcreateserial", "-out", p("server.crt"), "-days", "3650", "-extfile", p("server.ext"))
    os.chmod(p("server.key"), 0o600)
    os.chmod(p("ca.key"), 0o600)
    return p("ca.crt"), p("server.crt"), p("server.key")


_FETCH_META = re.compile(
    rb"UID (?P<uid>\d+)|FLAGS \((?P<flags>[^)]*)\)|RFC822\.SIZE (?P<size>\d+)"
    rb"|INTERNALDATE \"(?P<date>[^\"]+)\"")

_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')


def parse_internaldate(s):
    """'17-Jul-1996 02:44:25 -0700' -> aware datetime."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    return datetime.datetime.strptime(s.strip(), "%d-%b-%Y %H:%M:%S %z")


def _unquote(b):
    if b.startswith(b'"') and b.endswith(b'"'):
        return re.sub(rb'\\(.)', rb'\1', b[1:-1])
    return b


class ImapError(RuntimeError):
    pass


class Dovecot:
    """A private Dovecot.  See the module docstring."""

    def __init__(self, workdir, users=None, capability=None, quota_storage_kb=None,
                 extra_conf="", detached=False):
        self.workdir = os.path.abspath(workdir)
        self.users = dict(users) if users is not None else {"alice": "secret"}
        self.capability = capability
        self.quota_storage_kb = quota_storage_kb
        self.extra_conf = extra_conf
        self.host = HOST
        self.imap_port = self.imaps_port = self.pop3_port = self.pop3s_port = None
        self.proc = None
        self.pid = None
        self.base_dir = None
        self.conf_path = os.path.join(self.workdir, "dovecot.conf")
        self.log_path = os.path.join(self.workdir, "dovecot.log")
        self.ca_file = None
        self._prepared = False

    # --- lifecycle ---------------------------------------------------------

    def _prepare(self):
        os.makedirs(self.workdir, exist_ok=True)
        _make_searchable(self.workdir)
        os.chmod(self.workdir, 0o755)
        self.ca_file, cert, key = make_ca(os.path.join(self.workdir, "tls"))
        self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port = free_ports(4)
        home = os.path.join(self.workdir, "home")
        os.makedirs(home, exist_ok=True)
        import pwd
        dc = pwd.getpwnam("dovecot")
        os.chown(home, dc.pw_uid, dc.pw_gid)
        for user in self.users:
            d = os.path.join(home, user)
            os.makedirs(d, exist_ok=True)
            os.chown(d, dc.pw_uid, dc.pw_gid)
        passwd = os.path.join(self.workdir, "passwd")
        with open(passwd, "w") as f:
            for user, pw in self.users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (user, pw))
        os.chmod(passwd, 0o644)
        self._cert, self._key = cert, key
        self._prepared = True

    def _config(self):
        w = self.workdir
        quota = ""
        if self.quota_storage_kb is not None:
            quota = """
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = count:User quota
  quota_rule = *:storage=%dK
  quota_vsizes = yes
}
""" % int(self.quota_storage_kb)
        cap = ""
        if self.capability:
            cap = "imap_capability = %s\n" % self.capability
        return """# Written by tests/dovecot.py; a private test server.
base_dir = {base_dir}
state_dir = {w}/state
log_path = {w}/dovecot.log
info_log_path = {w}/dovecot.log
debug_log_path = {w}/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap pop3
listen = {host}
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain login
mail_location = maildir:~/Maildir:LAYOUT=fs
mail_max_userip_connections = 50
login_greeting = mailfs test server ready
imap_logout_format = in=%i out=%o deleted=%{{deleted}} expunged=%{{expunged}} hdr_count=%{{fetch_hdr_count}} hdr_bytes=%{{fetch_hdr_bytes}} body_count=%{{fetch_body_count}} body_bytes=%{{fetch_body_bytes}}
pop3_logout_format = in=%i out=%o top=%t/%p retr=%r/%b del=%d/%m size=%s
pop3_uidl_format = %08Xu%08Xv
{cap}
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {w}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={w}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = {host}
    port = {pop3s}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0
  }}
}}
{quota}
{extra}
""".format(base_dir=self.base_dir, w=w, host=self.host, cert=self._cert, key=self._key,
           cap=cap, imap=self.imap_port, imaps=self.imaps_port, pop3=self.pop3_port,
           pop3s=self.pop3s_port, quota=quota, extra=self.extra_conf)

    def start(self, timeout=20.0):
        if self.is_running():
            return self
        if not self._prepared:
            self._prepare()
        # Unix socket paths are limited to 108 bytes: keep base_dir short.
        parent = tempfile.mkdtemp(prefix="dc-", dir="/tmp")
        os.chmod(parent, 0o755)
        self.base_dir = os.path.join(parent, "run")
        with open(self.conf_path, "w") as f:
            f.write(self._config())
        out = open(os.path.join(self.workdir, "dovecot.out"), "ab")
        try:
            self.proc = subprocess.Popen(
                [DOVECOT_BIN, "-F", "-c", self.conf_path],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.workdir)
        finally:
            out.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        ports = [self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port]
        while True:
            if self.proc.poll() is not None:
                self._cleanup_base_dir()
                raise RuntimeError("dovecot exited with status %s:\n%s\n%s" % (
                    self.proc.returncode, self._read("dovecot.out"), self.log_text()[-3000:]))
            if all(port_accepts(self.host, p) for p in ports):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dovecot did not listen within %.0f s:\n%s" % (
                    timeout, self.log_text()[-3000:]))
            time.sleep(0.05)
        return self

    def stop(self, timeout=10.0):
        """Stop Dovecot and all its processes.  Idempotent."""
        if self.pid is not None:
            pid = self.pid
            stop_pid(pid, timeout=timeout, group=True)
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self.pid = None
            self.proc = None
        self._cleanup_base_dir()

    def _cleanup_base_dir(self):
        if self.base_dir:
            shutil.rmtree(os.path.dirname(self.base_dir), ignore_errors=True)
            self.base_dir = None

    def restart(self):
        """Stop and start again on the same ports, keeping the mail."""
        self.stop()
        return self.start()

    def is_running(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def state(self):
        """What a later process needs to find this server (for the demo)."""
        return {"pid": self.pid, "host": self.host, "imap_port": self.imap_port,
                "imaps_port": self.imaps_port, "pop3_port": self.pop3_port,
                "pop3s_port": self.pop3s_port, "ca_file": self.ca_file,
                "log_path": self.log_path, "base_dir": self.base_dir,
                "workdir": self.workdir}

    # --- the log -----------------------------------------------------------

    def _read(self, name):
        try:
            with open(os.path.join(self.workdir, name), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_text(self, since=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_offset(self):
        """The log's current size: pass it as since= to look at later lines only."""
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    _SESSION_END = re.compile(
        r"(?P<proto>imap|pop3)\((?P<user>[^)]*)\)[^:]*: Info: .*?"
        r"(?:Logged out|Disconnected).*?\bin=(?P<in>\d+) out=(?P<out>\d+)(?P<rest>.*)$")

    def sessions(self, user=None, since=0):
        """The ended IMAP/POP3 sessions in the log: list of dicts with proto,
        user, in, out and the other key=value fields of the logout line."""
        result = []
        for line in self.log_text(since).splitlines():
            m = self._SESSION_END.search(line)
            if not m or (user is not None and m.group("user") != user):
                continue
            d = {"proto": m.group("proto"), "user": m.group("user"),
                 "in": int(m.group("in")), "out": int(m.group("out")), "line": line}
            for k, v in re.findall(r"(\w+)=(\d+)", m.group("rest")):
                d.setdefault(k, int(v))
            result.append(d)
        return result

    def bytes_out(self, user=None, since=0):
        """Total out= bytes of the sessions that ended (logout/disconnect lines)."""
        return sum(s["out"] for s in self.sessions(user, since))

    def logins(self, user=None, since=0):
        """The 'Login: user=<...>' lines of the log (to see TLS/secured)."""
        lines = []
        for line in self.log_text(since).splitlines():
            if "-login: Info: Login: user=<" in line:
                if user is None or "user=<%s>" % user in line:
                    lines.append(line)
        return lines

    # --- an independent client (imaplib) ------------------------------------

    def ssl_context(self):
        return ssl.create_default_context(cafile=self.ca_file)

    def imap(self, user="alice"):
        """An imaplib.IMAP4_SSL logged in as user, verifying with the test CA."""
        c = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.ssl_context(),
                              timeout=30)
        c.login(user, self.users[user])
        return c

    def _session(self, user):
        return _Session(self.imap(user))

    def create_folder(self, user, name_utf8):
        with self._session(user) as c:
            _ok(c.create(imap_quote(utf7_encode(name_utf8))), "CREATE " + name_utf8)

    def delete_folder(self, user, name_utf8):
        with self._session(user) as c:
            _ok(c.delete(imap_quote(utf7_encode(name_utf8))), "DELETE " + name_utf8)

    def append(self, user, folder_utf8, raw_bytes, flags="", date_time=None):
        """APPEND one message.  flags: '\\Seen \\Flagged' (no parentheses needed);
        date_time: a datetime (aware), a Unix time, or None for now."""
        return self.append_many(user, folder_utf8, [(raw_bytes, flags, date_time)])[0]

    def append_many(self, user, folder_utf8, items):
        """APPEND several (raw_bytes, flags, date_time) over one connection.

        Returns the UID of each (from APPENDUID), None where the server refused."""
        uids = []
        with self._session(user) as c:
            box = imap_quote(utf7_encode(folder_utf8))
            for raw, flags, date_time in items:
                fl = None
                if flags:
                    fl = flags if flags.startswith("(") else "(%s)" % flags
                dt = imaplib.Time2Internaldate(date_time) if date_time is not None else None
                try:
                    typ, data = c.append(box, fl, dt, raw)
                except imaplib.IMAP4.error:
                    uids.append(None)
                    continue
                if typ != "OK":
                    uids.append(None)
                    continue
                m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                uids.append(int(m.group(1)) if m else None)
        return uids

    def list_folders(self, user="alice"):
        """[(name_utf8, flags_set, delimiter)] for LIST "" "*"."""
        with self._session(user) as c:
            typ, data = c.list('""', '"*"')
            _ok((typ, data), "LIST")
        result = []
        items = list(data)
        i = 0
        while i < len(items):
            item = items[i]
            i += 1
            if item is None:
                continue
            if isinstance(item, tuple):  # a name sent as a literal
                head, name = item
                m = _LIST_LINE.match(head.rstrip())
                line_name = name
            else:
                m = _LIST_LINE.match(item)
                line_name = None
            if not m:
                raise ImapError("cannot parse LIST line %r" % (item,))
            name = line_name if line_name is not None else _unquote(m.group("name"))
            delim = m.group("delim")
            delim = None if delim == b"NIL" else _unquote(delim).decode()
            flags = set(m.group("flags").decode().split())
            result.append((utf7_decode(name), flags, delim))
        return result

    def messages(self, user, folder_utf8):
        """[{uid, flags (set), size, internaldate (aware datetime)}] in UID order."""
        with self._session(user) as c:
            typ, data = c.select(imap_quote(utf7_encode(folder_utf8)), readonly=True)
            _ok((typ, data), "EXAMINE " + folder_utf8)
            if int(data[0]) == 0:
                return []
            typ, data = c.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
            _ok((typ, data), "UID FETCH")
        result = []
        for line in data:
            if line is None:
                continue
            if isinstance(line, tuple):
                line = line[0]
            rec = {}
            for m in _FETCH_META.finditer(line):
                if m.group("uid"):
                    rec["uid"] = int(m.group("uid"))
                elif m.group("flags") is not None:
                    rec["flags"] = set(m.group("flags").decode().split())
                elif m.group("size"):
                    rec["size"] = int(m.group("size"))
                elif m.group("date"):
                    rec["internaldate"] = parse_internaldate(m.group("date"))
            if "uid" in rec:
                rec.setdefault("flags", set())
                result.append(rec)
        result.sort(key=lambda r: r["uid"])
        return result

    def fetch_bodies(self, user, folder_utf8, uids=None):
        """{uid: BODY[] bytes} fetched with BODY.PEEK[] (sets no flag)."""
        bodies = {}
        with self._session(user) as c:
            typ, data = c.select(imap_quote(utf7_encode(folder_utf8)), readonly=True)
            _ok((typ, data), "EXAMINE " + folder_utf8)
            if uids is None:
                if int(data[0]) == 0:
                    return {}
                typ, data = c.uid("SEARCH", "ALL")
                _ok((typ, data), "UID SEARCH")
                uids = [int(u) for u in data[0].split()]
            for uid in uids:
                typ, data = c.uid("FETCH", str(uid), "(UID BODY.PEEK[])")
                _ok((typ, data), "UID FETCH %d BODY.PEEK[]" % uid)
                for item in data:
                    if isinstance(item, tuple) and b"BODY[]" in item[0]:
                        bodies[uid] = item[1]
        return bodies

    def store_flags(self, user, folder_utf8, uid, how, flags):
        """UID STORE uid how (flags); how is 'FLAGS', '+FLAGS' or '-FLAGS'."""
        with self._session(user) as c:
            _ok(c.select(imap_quote(utf7_encode(folder_utf8))), "SELECT " + folder_utf8)
            _ok(c.uid("STORE", str(uid), how, "(%s)" % flags), "UID STORE")

    def expunge_uids(self, user, folder_utf8, uids):
        """Flag the UIDs \\Deleted and expunge them (UID EXPUNGE)."""
        with self._session(user) as c:
            _ok(c.select(imap_quote(utf7_encode(folder_utf8))), "SELECT " + folder_utf8)
            s = ",".join(str(u) for u in uids)
            _ok(c.uid("STORE", s, "+FLAGS.SILENT", "(\\Deleted)"), "UID STORE")
            _ok(c.uid("EXPUNGE", s), "UID EXPUNGE")


class _Session:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        try:
            self.conn.logout()
        except Exception:
            pass
        return False


def _ok(result, what):
    typ, data = result
    if typ != "OK":
        raise ImapError("%s: %s %r" % (what, typ, data))
    return data

"""A private Dovecot (IMAP, IMAPS, POP3, POP3S) on loopback, for tests.

Started as root from a fresh working directory, on free loopback ports,
with TLS from a CA that is made here with openssl.  Used by the mount tests
(tests/integration, through tests/harness.py's PrivateServers), the demo
(tests/demo.py) and the benchmarks (bench/).  It must never leave a process
behind: stop() ends Dovecot by its own pid (TERM, a bounded wait, then KILL
of its process group).

This module is the launcher only (configuration, start/stop/restart, the
CA, the ports, and the server log, whose in=/out= fields are Dovecot's).
The client side is server-neutral: the imaplib helpers (create_folder,
append, list_folders, messages, ...) come from tests/imap_helpers.py's
ImapHelpers, the poplib ones are in tests/pop_helpers.py.

    with Dovecot(tmpdir) as dc:
        dc.create_folder("alice", "Entwürfe")
        dc.append("alice", "INBOX", raw_bytes, flags="\\Seen")
        imap = dc.imap("alice")          # imaplib.IMAP4_SSL, logged in
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time

from imap_helpers import (ImapError, ImapHelpers, imap_quote, parse_internaldate,
                          utf7_decode, utf7_encode)
from sysutil import HOST, free_ports, pid_alive, port_accepts, read_text, stop_pid

# The client helpers and the process helpers stay importable from here
# (bench/ uses dovecot.imap_quote, dovecot.utf7_encode, dovecot.stop_pid).
__all__ = ["DOVECOT_BIN", "Dovecot", "HOST", "ImapError", "free_ports", "imap_quote",
           "make_ca", "parse_internaldate", "port_accepts", "stop_pid", "utf7_decode",
           "utf7_encode"]
_pid_alive = pid_alive   # the old private name

DOVECOT_BIN = "/usr/sbin/dovecot"


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


class Dovecot(ImapHelpers):
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
        return self.pid is not None and pid_alive(self.pid)

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
        return read_text(os.path.join(self.workdir, name))

    def log_text(self, since=0):
        return read_text(self.log_path, since=since)

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

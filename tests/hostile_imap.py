"""A hostile IMAP server on loopback: it speaks just enough IMAP for a
mount (CAPABILITY, LOGIN, LIST, SELECT/EXAMINE, UID FETCH of flags,
headers and bodies, ranges included, NOOP, LOGOUT), then misbehaves on
cue when asked for a body.

    with HostileImap(messages) as server:
        ... mount imap://alice@127.0.0.1:<server.port>/ with -o tls=none ...
        server.cue("trickle")      # the next body FETCHes misbehave
        server.behave()            # and from now on they don't

The misbehaviours (MODES), each on a body FETCH (UID FETCH ... BODY[]):

- big_literal: a BODY[] literal announced at 2 GB, then nothing;
- over_size: a BODY[] literal far larger than the RFC822.SIZE, sent fast;
- endless_line: a line that never ends (no CRLF), sent fast;
- trickle: the right answer, one byte every two seconds;
- keepalive: an untagged "* OK" every two seconds, never the answer;
- million_literals: a FETCH response made of a million tiny literals;
- foreign_uids: bodies of UIDs never asked for, then OK;
- endless_ranges: every range answered in full, past the message's end.

Plain text, LOGIN with the one password; one folder, INBOX, read-only
(STORE, APPEND, COPY and the like get NO).  The junk a misbehaviour sends
is capped (JUNK_CAP) so that a client without bounds cannot take the test
machine down with it.  host, imap_port (= port) are there for code that
takes a server object.
"""

import re
import socket
import socketserver
import threading
import time

HOST = "127.0.0.1"
MODES = ("big_literal", "over_size", "endless_line", "trickle", "keepalive",
         "million_literals", "foreign_uids", "endless_ranges")
JUNK_CAP = 160 * 1024 * 1024      # the most junk one misbehaviour sends
TRICKLE_SECONDS = 2.0
KEEPALIVE_SECONDS = 2.0
UIDVALIDITY = 4242
INTERNALDATE = "05-Jan-2024 10:22:00 +0000"

_FETCH = re.compile(r"^UID FETCH (\S+) \((.*)\)$", re.I)
_RANGE = re.compile(r"BODY(?:\.PEEK)?\[\]<(\d+)\.(\d+)>", re.I)


def _words(text):
    """IMAP arguments: atoms and quoted strings (no literals needed here)."""
    return [a or b.replace('\\"', '"').replace("\\\\", "\\")
            for a, b in re.findall(r'([^\s"]+)|"((?:[^"\\]|\\.)*)"', text)]


def _uid_set(spec, uids):
    out = []
    top = max(uids) if uids else 0
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        lo = top if lo == "*" else int(lo)
        hi = lo if not hi else (top if hi == "*" else int(hi))
        lo, hi = min(lo, hi), max(lo, hi)
        out += [u for u in uids if lo <= u <= hi]
    if not out and spec.endswith(":*") and uids:
        out = [top]          # "n:*" always names the highest message
    return sorted(set(out))


class _Closed(Exception):
    pass


class HostileImap:
    """The server (see the module's docstring).  messages: raw bytes,
    INBOX's UIDs 1..n.  folders: more folder names for LIST (never
    selectable: a name may hold control characters)."""

    def __init__(self, messages, password="secret", folders=()):
        self.messages = [m if m.endswith(b"\r\n") else m + b"\r\n" for m in messages]
        self.password = password
        self.folders = list(folders)
        self.mode = None
        self.range_junk = 0          # bytes endless_ranges sent past the end
        self.misbehaved = 0          # body FETCHes answered with a misbehaviour
        self.commands = []           # every command line received (LOGIN redacted)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = []
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with server._lock:
                    server._socks.append(self.request)
                try:
                    server._serve(self.request)
                except (_Closed, OSError):
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.host = HOST
        self.port = self.imap_port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- control ---------------------------------------------------------------

    def cue(self, mode):
        assert mode in MODES, mode
        with self._lock:
            self.mode = mode
            self.range_junk = 0

    def behave(self):
        """Back to normal; connections stuck in a misbehaviour are closed."""
        with self._lock:
            self.mode = None
        self.drop_connections()

    def drop_connections(self):
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.drop_connections()
        self.server.shutdown()
        self.server.server_close()
        return False

    # --- the protocol --------------------------------------------------------------

    def _serve(self, sock):
        sock.settimeout(1.0)
        buf = bytearray()

        def send(data):
            if self._stop.is_set():
                raise _Closed()
            sock.sendall(data)

        def readline():
            while b"\n" not in buf:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    if self._stop.is_set():
                        raise _Closed()
                    continue
                if not chunk:
                    raise _Closed()
                buf.extend(chunk)
            i = buf.index(b"\n")
            line = bytes(buf[:i + 1])
            del buf[:i + 1]
            return line.decode("latin-1").rstrip("\r\n")

        send(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hostile IMAP ready\r\n")
        authed = False
        selected = False
        while True:
            line = readline()
            tag, _, rest = line.partition(" ")
            cmd, _, args = rest.partition(" ")
            cmd = cmd.upper()
            with self._lock:
                self.commands.append("%s LOGIN ***" % tag if cmd == "LOGIN" else line)
            if cmd == "CAPABILITY":
                send(b"* CAPABILITY IMAP4rev1 LITERAL+\r\n%s OK done\r\n" % tag.encode())
            elif cmd == "LOGIN":
                w = _words(args)
                authed = len(w) == 2 and w[1] == self.password
                send(b"%s %s\r\n" % (tag.encode(), b"OK logged in" if authed
                                     else b"NO [AUTHENTICATIONFAILED] wrong password"))
            elif cmd == "LOGOUT":
                send(b"* BYE bye\r\n%s OK done\r\n" % tag.encode())
                return
            elif cmd == "NOOP":
                send(b"%s OK done\r\n" % tag.encode())
            elif not authed:
                send(b"%s NO log in first\r\n" % tag.encode())
            elif cmd == "LIST":
                out = b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
                for f in self.folders:
                    raw = f.encode("utf-8")
                    out += b'* LIST (\\Noselect) "/" {%d+}\r\n%s\r\n' % (len(raw), raw)
                send(out + b"%s OK done\r\n" % tag.encode())
            elif cmd in ("SELECT", "EXAMINE"):
                if _words(args)[:1] != ["INBOX"]:
                    send(b"%s NO [NONEXISTENT] no such folder\r\n" % tag.encode())
                    continue
                selected = True
                n = len(self.messages)
                send(b"* %d EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Answered \\Flagged "
                     b"\\Deleted \\Draft)\r\n* OK [UIDVALIDITY %d] ok\r\n* OK [UIDNEXT %d] ok\r\n"
                     b"%s OK [READ-ONLY] done\r\n" % (n, UIDVALIDITY, n + 1, tag.encode()))
            elif cmd == "UID" and selected and _FETCH.match("UID " + args):
                m = _FETCH.match("UID " + args)
                self._fetch(send, tag.encode(), m.group(1), m.group(2))
            else:
                send(b"%s NO not here\r\n" % tag.encode())

    def _fetch(self, send, tag, spec, items):
        uids = list(range(1, len(self.messages) + 1))
        wanted = _uid_set(spec, uids)
        upper = items.upper()
        body = "BODY[]" in upper or "BODY.PEEK[]" in upper
        with self._lock:
            mode = self.mode if body else None
            if mode:
                self.misbehaved += 1
        if mode:
            return getattr(self, "_" + mode)(send, tag, wanted, items)
        out = bytearray()
        for uid in wanted:
            out += self._fetch_one(uid, items)
        send(bytes(out) + b"%s OK done\r\n" % tag)

    def _fetch_one(self, uid, items):
        raw = self.messages[uid - 1]
        upper = items.upper()
        parts = [b"UID %d" % uid]
        if "FLAGS" in upper:
            parts.append(b"FLAGS ()")
        if "RFC822.SIZE" in upper:
            parts.append(b"RFC822.SIZE %d" % len(raw))
        if "INTERNALDATE" in upper:
            parts.append(b'INTERNALDATE "%s"' % INTERNALDATE.encode())
        if "HEADER.FIELDS" in upper:
            end = raw.find(b"\r\n\r\n")
            head = raw[:end + 4] if end >= 0 else raw
            parts.append(b"BODY[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)] {%d}\r\n%s"
                         % (len(head), head))
        else:
            r = _RANGE.search(items)
            if r:
                off, n = int(r.group(1)), int(r.group(2))
                chunk = raw[off:off + n]
                parts.append(b"BODY[]<%d> {%d}\r\n%s" % (off, len(chunk), chunk))
            elif "BODY[]" in upper or "BODY.PEEK[]" in upper:
                parts.append(b"BODY[] {%d}\r\n%s" % (len(raw), raw))
        return b"* %d FETCH (%s)\r\n" % (uid, b" ".join(parts))

    # --- the misbehaviours ---------------------------------------------------------

    def _wait_closed(self, send):
        """Say nothing more until the client or the test ends it."""
        while not self._stop.wait(0.5):
            if self.mode is None:
                raise _Closed()

    def _junk(self, send, chunk):
        sent = 0
        while sent < JUNK_CAP:
            send(chunk)
            sent += len(chunk)
        self._wait_closed(send)

    def _big_literal(self, send, tag, uids, items):
        send(b"* %d FETCH (UID %d BODY[] {2147483648}\r\n" % (uids[0], uids[0]))
        self._wait_closed(send)

    def _over_size(self, send, tag, uids, items):
        send(b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (uids[0], uids[0], JUNK_CAP))
        self._junk(send, b"From: junk\r\n" * 5000)

    def _endless_line(self, send, tag, uids, items):
        send(b'* %d FETCH (UID %d BODY[] "' % (uids[0], uids[0]))
        self._junk(send, b"x" * 65536)

    def _trickle(self, send, tag, uids, items):
        data = b"".join(self._fetch_one(u, items) for u in uids) + b"%s OK done\r\n" % tag
        for i in range(len(data)):
            send(data[i:i + 1])
            if self._stop.wait(TRICKLE_SECONDS) or self.mode is None:
                raise _Closed()

    def _keepalive(self, send, tag, uids, items):
        while True:
            send(b"* OK still working on it\r\n")
            if self._stop.wait(KEEPALIVE_SECONDS) or self.mode is None:
                raise _Closed()

    def _million_literals(self, send, tag, uids, items):
        send(b"* %d FETCH (UID %d X-JUNK (" % (uids[0], uids[0]))
        piece = b"{1}\r\na " * 10000
        for _ in range(100):
            send(piece)
        raw = self.messages[uids[0] - 1]
        send(b") BODY[] {%d}\r\n%s)\r\n%s OK done\r\n" % (len(raw), raw, tag))
        self._wait_closed(send)

    def _foreign_uids(self, send, tag, uids, items):
        junk = b"Subject: not yours\r\n\r\n" + b"y" * (1024 * 1024)
        for k in range(1, 101):
            other = 1000 + k
            send(b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (other, other, len(junk), junk))
        send(b"%s OK done\r\n" % tag)

    def _endless_ranges(self, send, tag, uids, items):
        r = _RANGE.search(items)
        if not r:
            return self._over_size(send, tag, uids, items)
        off, n = int(r.group(1)), int(r.group(2))
        raw = self.messages[uids[0] - 1]
        chunk = raw[off:off + n]
        with self._lock:
            if self.range_junk < JUNK_CAP:
                self.range_junk += n - len(chunk)
                chunk = (chunk + b"z" * n)[:n]
        send(b"* %d FETCH (UID %d BODY[]<%d> {%d}\r\n%s)\r\n%s OK done\r\n"
             % (uids[0], uids[0], off, n, chunk, tag))

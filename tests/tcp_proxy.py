"""A small fault-injecting TCP proxy for the IMAP fault tests.

It listens on a free loopback port and forwards every connection to a
target (Dovecot's plain IMAP port: behind TLS the proxy would see only
ciphertext).  It follows the client->server byte stream command by command
(skipping literals, so that message data never matches) and, on the Nth
command matching a regular expression, cuts the connection:

    before   the command is not forwarded; both sockets are closed.
    after    the command is forwarded; the proxy waits for the server's
             tagged answer to it (bounded), withholds that answer from the
             client, and closes both sockets.  So the server has done the
             command and the client never hears so.
    sent     the command is forwarded and both sockets are closed at once
             (the server may or may not get to run it).
    hold     the command is forwarded, and so is everything the server
             sends up to its tagged answer; the answer (and what follows)
             waits until release() (or answer_timeout), then flows on.  So
             the client has every reply of the command but not its end.

Connections opened after the cut are forwarded untouched (a trigger fires
once).  Every command line seen is recorded (credentials redacted).

    with FaultProxy(("127.0.0.1", dc.imap_port), r"UID COPY", "after") as px:
        ... mount imap://alice@127.0.0.1:<px.port>/ with -o tls=none ...
        assert px.fired.is_set()
"""

import queue
import re
import socket
import threading
import time

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n$")
_TAGGED = re.compile(rb"^(\S+) (OK|NO|BAD)\b", re.IGNORECASE)


class _LineStream:
    """Splits an IMAP byte stream into lines, passing literal data through as
    opaque chunks.  feed() returns [(kind, bytes)], kind "line" or "data"."""

    def __init__(self):
        self.buf = b""
        self.literal = 0

    def feed(self, data):
        self.buf += data
        out = []
        while self.buf:
            if self.literal:
                chunk = self.buf[:self.literal]
                self.buf = self.buf[len(chunk):]
                self.literal -= len(chunk)
                out.append(("data", chunk))
                continue
            i = self.buf.find(b"\n")
            if i < 0:
                break
            line = self.buf[:i + 1]
            self.buf = self.buf[i + 1:]
            m = _LITERAL.search(line)
            if m:
                self.literal = int(m.group(1))
            out.append(("line", line))
        return out

    def rest(self):
        data, self.buf = self.buf, b""
        return data


def _redact(line):
    m = re.match(rb"^(\S+ (?:LOGIN|AUTHENTICATE))\b", line, re.IGNORECASE)
    if m:
        return m.group(1) + b" <redacted>"
    if re.match(rb"^[A-Za-z0-9+/=]+\r?\n$", line) and len(line) > 8:
        return b"<redacted continuation>"
    return line.rstrip(b"\r\n")


def _listen(host):
    """A listening socket on a free port of host."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(16)
    s.settimeout(0.2)
    return s


def _accepted(listener, target, stopping):
    """Yields (client, server) for each connection accepted, with one to
    target opened for it, until stopping() or the listener is closed."""
    while not stopping():
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        try:
            server = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()
            continue
        yield client, server


class FaultProxy:
    """See the module docstring.  pattern: a regex (str) matched against each
    command line the client sends (tag included, CRLF stripped); nth: which
    match fires (1 = the first); mode: "before", "after" or "sent"; None
    pattern: a plain forwarder.  rewrite: None, or a function given each
    line the server sends (bytes, CRLF included, never literal data) that
    returns the line to pass on: a server that says something else."""

    def __init__(self, target, pattern=None, mode="after", nth=1, answer_timeout=10.0,
                 host="127.0.0.1", rewrite=None):
        if mode not in ("before", "after", "sent", "hold"):
            raise ValueError("mode must be before, after, sent or hold")
        self.target = target
        self.regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern,
                                re.IGNORECASE) if pattern else None
        self.mode = mode
        self.rewrite = rewrite
        self.nth = nth
        self.answer_timeout = answer_timeout
        self.host = host
        self.port = None
        self.lock = threading.Lock()
        self.matches = 0
        self.fired = threading.Event()
        self.holding = threading.Event()    # "hold": the answer is held back
        self._released = threading.Event()
        self.fired_line = None
        self.answer = None          # the withheld tagged answer ("after")
        self.commands = []          # (connection number, command line)
        self.connections = 0
        self._listener = None
        self._threads = []
        self._conns = []
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------

    def start(self):
        self._listener = _listen(self.host)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self):
        self._stopping = True
        self._released.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            c.cut()
        for t in self._threads:
            t.join(timeout=5)

    def release(self):
        """Lets a held answer go on (mode "hold")."""
        self._released.set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _accept_loop(self):
        for client, server in _accepted(self._listener, self.target, lambda: self._stopping):
            with self.lock:
                self.connections += 1
                conn = _Connection(self, self.connections, client, server)
                self._conns.append(conn)
            if self._stopping:       # stop() ran meanwhile: not forwarded
                conn.cut()
                return
            self._spawn(conn.pump_client)
            self._spawn(conn.pump_server)

    # --- what happened ---------------------------------------------------------

    def command_lines(self):
        with self.lock:
            return [line.decode("utf-8", "replace") for _, line in self.commands]

    def transcript(self):
        with self.lock:
            return "\n".join("#%d C: %s" % (n, line.decode("utf-8", "replace"))
                             for n, line in self.commands)

    def _check(self, number, line):
        """Called for each client line (on connection number): None, or the
        mode to apply to it."""
        with self.lock:
            self.commands.append((number, _redact(line)))
            if self.regex is None or self.fired.is_set():
                return None
            if not self.regex.search(line.rstrip(b"\r\n")):
                return None
            self.matches += 1
            if self.matches < self.nth:
                return None
            self.fired_line = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.fired.set()
            return self.mode


class _Connection:
    def __init__(self, proxy, number, client, server):
        self.proxy = proxy
        self.number = number
        self.client = client
        self.server = server
        self.closed = False
        self.withhold_tag = None     # "after", "hold": the tag whose answer ends it
        self.hold = False
        self.deadline = None
        for s in (client, server):
            s.settimeout(0.2)

    def cut(self):
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _recv(self, sock):
        while not self.closed:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.cut()     # the server never answered: cut anyway
                return b""
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""
            return data
        return b""

    def _send(self, sock, data):
        try:
            sock.sendall(data)
            return True
        except OSError:
            return False

    def pump_client(self):
        stream = _LineStream()
        while not self.closed:
            data = self._recv(self.client)
            if not data:
                break
            for kind, chunk in stream.feed(data):
                if kind == "line":
                    mode = self.proxy._check(self.number, chunk)
                    if mode == "before":
                        self.cut()
                        return
                    if mode in ("after", "hold"):
                        self.hold = mode == "hold"
                        self.withhold_tag = chunk.split(b" ", 1)[0]
                        self.deadline = time.monotonic() + self.proxy.answer_timeout
                    if not self._send(self.server, chunk):
                        self.cut()
                        return
                    if mode == "sent":
                        self.cut()
                        return
                else:
                    if not self._send(self.server, chunk):
                        self.cut()
                        return
        self.cut()

    def pump_server(self):
        stream = _LineStream()
        while not self.closed:
            data = self._recv(self.server)
            if not data:
                break
            out = []
            for kind, chunk in stream.feed(data):
                if kind == "line" and self.withhold_tag is not None:
                    m = _TAGGED.match(chunk)
                    if m and m.group(1) == self.withhold_tag and self.hold:
                        # Forward what came before the answer, hold it.
                        if out and not self._send(self.client, b"".join(out)):
                            self.cut()
                            return
                        out = []
                        self.deadline = None
                        self.withhold_tag = None
                        self.proxy.holding.set()
                        self.proxy._released.wait(self.proxy.answer_timeout)
                    elif m and m.group(1) == self.withhold_tag:
                        # Forward what came before the answer, then cut.
                        self._send(self.client, b"".join(out))
                        with self.proxy.lock:
                            self.proxy.answer = chunk.rstrip(b"\r\n").decode("utf-8",
                                                                             "replace")
                        self.cut()
                        return
                if kind == "line" and self.proxy.rewrite is not None:
                    chunk = self.proxy.rewrite(chunk)
                out.append(chunk)
            # A partial line stays buffered in stream until it completes, so
            # a tagged answer is never forwarded in pieces.
            if out and not self._send(self.client, b"".join(out)):
                break
        self.cut()


class DelayProxy:
    """A loopback TCP forwarder that holds every chunk for half of rtt
    (seconds) in each direction: a far server, without netem.  Bandwidth is
    not limited.  Use as a context manager; port is where it listens."""

    def __init__(self, target, rtt, host="127.0.0.1"):
        self.target = target
        self.half = rtt / 2.0
        self.host = host
        self.port = None
        self._listener = None
        self._stopping = threading.Event()
        self._threads = []
        self._socks = []
        self._lock = threading.Lock()

    def __enter__(self):
        self._listener = _listen(self.host)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc):
        self._stopping.set()
        with self._lock:
            socks = list(self._socks)
        for s in [self._listener] + socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=5)
        return False

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self):
        for client, server in _accepted(self._listener, self.target, self._stopping.is_set):
            with self._lock:
                self._socks += [client, server]
            for src, dst in ((client, server), (server, client)):
                q = queue.Queue()
                self._spawn(self._read, src, q)
                self._spawn(self._write, dst, q)

    def _read(self, src, q):
        while True:
            try:
                data = src.recv(1 << 18)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.half, data))
            if not data:
                return

    def _write(self, dst, q):
        while True:
            due, data = q.get()
            wait = due - time.monotonic()
            if wait > 0 and self._stopping.wait(wait):
                return
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

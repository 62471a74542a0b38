"""A small fake POP3 server on loopback, for servers a real one cannot
stand in for: without UIDL, TOP, PIPELINING or STLS (Dovecot cannot be
told to hide them).

    with FakePop3(messages, capa=("USER", "TOP"), password="secret") as fake:
        ... mount pop3://alice@127.0.0.1:<fake.port>/ with -o tls=none ...
        fake.drop_sessions()          # as a server does to idle sessions
        fake.commands                 # [(session number, command line)]

Plain text, USER/PASS (any user, the one password); UIDL, TOP and
PIPELINING only when listed in capa.  Messages are served dot-stuffed; DELE
is acknowledged and changes nothing.
"""

import socket
import socketserver
import threading

HOST = "127.0.0.1"


def _stuff(raw):
    out = []
    for line in raw.split(b"\r\n")[:-1] if raw.endswith(b"\r\n") else raw.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out) + b"\r\n.\r\n"


class FakePop3:
    """A plain-text POP3 server on loopback (USER/PASS), with a chosen CAPA
    list; UIDL, TOP and PIPELINING only when listed.  Records the commands
    of every session (PASS redacted).  drop_sessions() closes the open
    connections, as a server does to idle sessions.  host and pop3_port (=
    port) are there for code that takes a server object."""

    def __init__(self, messages, capa=("USER", "TOP"), password="secret"):
        self.messages = [m if m.endswith(b"\r\n") else m + b"\r\n" for m in messages]
        self.capa = [c.upper() for c in capa]
        self.password = password
        self.commands = []         # (session number, command line)
        self.logged_in = False
        self.sessions = 0
        self._socks = []
        self._lock = threading.Lock()
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with fake._lock:
                    fake.sessions += 1
                    n = fake.sessions
                    fake._socks.append(self.request)
                fake._serve(n, self.rfile, self.wfile)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.host = HOST
        self.port = self.pop3_port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.drop_sessions()
        self.server.shutdown()
        self.server.server_close()
        return False

    def misbehave(self, cmd, words, send):
        """A subclass's chance to answer a logged-in command its own way
        (tests/hostile_pop3.py): True when it did."""
        return False

    def drop_sessions(self):
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self, n, rfile, wfile):
        def send(data):
            wfile.write(data)
            wfile.flush()

        def msg(arg):
            try:
                i = int(arg)
            except ValueError:
                return None
            return self.messages[i - 1] if 1 <= i <= len(self.messages) else None

        try:
            send(b"+OK fake POP3 ready\r\n")
            authed = False
            while True:
                line = rfile.readline()
                if not line:
                    return
                text = line.decode("latin-1").rstrip("\r\n")
                words = text.split()
                cmd = words[0].upper() if words else ""
                with self._lock:
                    self.commands.append((n, "PASS ***" if cmd == "PASS" else text))
                if cmd == "CAPA":
                    send(b"+OK\r\n" + b"".join(c.encode() + b"\r\n" for c in self.capa) + b".\r\n")
                elif cmd == "USER":
                    send(b"+OK\r\n")
                elif cmd == "PASS":
                    authed = len(words) > 1 and words[1] == self.password
                    self.logged_in = self.logged_in or authed
                    send(b"+OK logged in\r\n" if authed else b"-ERR [AUTH] wrong password\r\n")
                elif cmd == "QUIT":
                    send(b"+OK bye\r\n")
                    return
                elif not authed:
                    send(b"-ERR log in first\r\n")
                elif self.misbehave(cmd, words, send):
                    pass
                elif cmd == "STAT":
                    send(b"+OK %d %d\r\n" % (len(self.messages), sum(map(len, self.messages))))
                elif cmd == "LIST" and len(words) == 1:
                    send(b"+OK\r\n" + b"".join(b"%d %d\r\n" % (i, len(m)) for i, m in
                                               enumerate(self.messages, 1)) + b".\r\n")
                elif cmd == "UIDL" and "UIDL" in self.capa:
                    send(b"+OK\r\n" + b"".join(b"%d fake-%d\r\n" % (i, i) for i in
                                               range(1, len(self.messages) + 1)) + b".\r\n")
                elif cmd == "TOP" and "TOP" in self.capa and len(words) == 3 and msg(words[1]):
                    raw = msg(words[1])
                    end = raw.find(b"\r\n\r\n")
                    head = raw[:end + 4] if end >= 0 else raw
                    send(b"+OK\r\n" + _stuff(head))
                elif cmd == "RETR" and len(words) == 2 and msg(words[1]):
                    send(b"+OK %d octets\r\n" % len(msg(words[1])) + _stuff(msg(words[1])))
                elif cmd in ("RSET", "NOOP"):
                    send(b"+OK\r\n")
                elif cmd == "DELE":
                    send(b"+OK marked\r\n")
                else:
                    send(b"-ERR unknown command\r\n")
        except OSError:
            return

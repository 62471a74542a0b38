#!/usr/bin/python3
"""The second yardstick of bench/ls-bench.sh: a raw IMAP client on an ssl socket
that sends LOGIN, EXAMINE, one UID FETCH 1:* of the listing and LOGOUT, and waits
for each tagged reply (reading literals by their length). Only the standard
library's socket and ssl, so that its start-up time stays small.

    raw_imap.py HOST PORT CAFILE USER PASSWORD FOLDER [EXPECTED_COUNT]
"""

import re
import socket
import ssl
import sys

LISTING = (b"UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE "
           b"BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)])")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class Reader:
    """Buffered reads from a socket: CRLF lines and literals."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.received = 0

    def _fill(self):
        data = self.sock.recv(1 << 18)
        if not data:
            raise EOFError("server closed the connection")
        self.received += len(data)
        self.buf += data

    def line(self):
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                out = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                return out
            start = max(0, len(self.buf) - 1)
            self._fill()

    def exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def command(sock, rd, tag, text):
    """Send one command and read to its tagged reply; returns the number of
    untagged FETCH responses."""
    sock.sendall(tag + b" " + text + b"\r\n")
    fetches = 0
    while True:
        line = rd.line()
        if line.startswith(b"* ") and b" FETCH " in line[:24]:
            fetches += 1
        m = _LITERAL.search(line)
        while m:                       # the response goes on after the literal
            rd.exactly(int(m.group(1)))
            line = rd.line()
            m = _LITERAL.search(line)
        if line.startswith(tag + b" "):
            if not line.startswith(tag + b" OK"):
                raise RuntimeError("%r failed: %r" % (text.split(b" ")[0], line))
            return fetches


def listing(host, port, cafile, user, password, folder, timeout=60):
    """Returns (FETCH responses, bytes received)."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as sock:
            rd = Reader(sock)
            greeting = rd.line()
            if not greeting.startswith(b"* OK"):
                raise RuntimeError("greeting: %r" % greeting)
            command(sock, rd, b"a", b"LOGIN %s %s" % (user.encode(), password.encode()))
            command(sock, rd, b"b", b"EXAMINE " + folder.encode())
            n = command(sock, rd, b"c", LISTING)
            command(sock, rd, b"d", b"LOGOUT")
            return n, rd.received


def main(argv):
    if len(argv) not in (7, 8):
        print(__doc__, file=sys.stderr)
        return 2
    n, _ = listing(*argv[1:7])
    if len(argv) == 8 and n != int(argv[7]):
        print("raw_imap: %d FETCH responses, expected %s" % (n, argv[7]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Seeds for the IMAP and POP3 fuzz targets taken from real transcripts:
a private Dovecot (tests/dovecot.py) with the sample messages, spoken to
over plain IMAP and POP3 on loopback the way mailfs speaks, every byte the
server sent recorded and cut at response boundaries into files of at most
64 KiB (tests/fuzz/seeds/<target>/transcript-*).

    /usr/bin/python3 tests/fuzz/make_seeds.py     # as root (Dovecot)
"""

import os
import socket
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)

import harness  # noqa: E402
import sample_mail  # noqa: E402

SEED_MAX = 64 * 1024


class Recorder:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.data = bytearray()
        self.cuts = [0]     # offsets where a response (IMAP) or reply (POP3) ends

    def read_until(self, marker):
        while marker not in self.data[self.cuts[-1]:]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            self.data += chunk
        end = self.data.index(marker, self.cuts[-1]) + len(marker)
        self.cuts.append(end)

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def seeds(self):
        """The recording cut into pieces of whole responses, each <= SEED_MAX."""
        out, start = [], 0
        for a, b in zip(self.cuts, self.cuts[1:]):
            if b - start > SEED_MAX and a > start:
                out.append(bytes(self.data[start:a]))
                start = a
        out.append(bytes(self.data[start:self.cuts[-1]]))
        return [s[:SEED_MAX] for s in out if s]


def imap_transcript(port, n_messages):
    r = Recorder(port)
    r.read_until(b"\r\n")
    tag = 0

    def cmd(text):
        nonlocal tag
        tag += 1
        r.send("S%d %s" % (tag, text))
        r.read_until(b"S%d " % tag)
        r.read_until(b"\r\n")

    cmd("CAPABILITY")
    cmd("LOGIN %s %s" % (harness.USER, harness.PASSWORD))
    cmd("CAPABILITY")
    cmd('LIST "" "*"')
    cmd("EXAMINE INBOX (CONDSTORE)")
    cmd("UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE "
        "BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)])")
    cmd("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 1)")
    for uid in range(1, n_messages + 1):
        cmd("UID FETCH %d (UID BODY.PEEK[])" % uid)
    cmd("UID FETCH 1 (UID BODY.PEEK[]<0.1000>)")
    cmd("UID FETCH 1,2,3 (UID BODY.PEEK[])")
    cmd("UID SEARCH UID 1:*")
    cmd('STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)')
    cmd("NOOP")
    cmd("LOGOUT")
    return r.seeds()


def pop3_transcript(port, n_messages):
    r = Recorder(port)
    r.read_until(b"\r\n")

    def cmd(text, multi):
        r.send(text)
        r.read_until(b"\r\n")
        if multi and r.data[r.cuts[-2]:r.cuts[-2] + 3] == b"+OK":
            r.read_until(b"\r\n.\r\n")

    cmd("CAPA", True)
    cmd("USER %s" % harness.USER, False)
    cmd("PASS %s" % harness.PASSWORD, False)
    cmd("UIDL", True)
    cmd("LIST", True)
    for n in range(1, n_messages + 1):
        cmd("TOP %d 0" % n, True)
    for n in range(1, n_messages + 1):
        cmd("RETR %d" % n, True)
    cmd("RSET", False)
    cmd("QUIT", False)
    return r.seeds()


def main():
    with harness.PrivateServers(prefix="mailfs-seeds-") as servers:
        dc = servers.get()
        msgs = sample_mail.sample_messages(40, 5, tricky=True)
        harness.append_samples(dc, "INBOX", msgs, 5)
        for target, seeds in (("fuzz_imap_response", imap_transcript(dc.imap_port, len(msgs))),
                              ("fuzz_pop3_reply", pop3_transcript(dc.pop3_port, len(msgs)))):
            d = os.path.join(HERE, "seeds", target)
            os.makedirs(d, exist_ok=True)
            for i, s in enumerate(seeds):
                with open(os.path.join(d, "transcript-%02d" % i), "wb") as f:
                    f.write(s)
            print("%s: %d seeds, %d bytes" % (target, len(seeds), sum(map(len, seeds))))


if __name__ == "__main__":
    main()

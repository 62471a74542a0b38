"""A hostile POP3 server: tests/fakepop3.py's FakePop3 (CAPA with TOP,
UIDL and USER) that misbehaves on cue.

    with HostilePop3(messages, password="secret") as server:
        server.cue("trickle")   # open sessions are dropped; new ones misbehave
        server.behave()

The misbehaviours (POP3_MODES):

- endless_line: RETR answered "+OK" then a line that never ends;
- trickle: RETR answered right, one byte every two seconds;
- huge_answer: UIDL answered with listing lines without end.

The junk is capped (JUNK_CAP), as in tests/hostile_imap.py.
"""

import threading

from fakepop3 import FakePop3
from hostile_imap import JUNK_CAP, TRICKLE_SECONDS

POP3_MODES = ("endless_line", "trickle", "huge_answer")


class HostilePop3(FakePop3):
    def __init__(self, messages, password="secret"):
        super().__init__(messages, capa=("USER", "TOP", "UIDL"), password=password)
        self.mode = None
        self.misbehaved = 0
        self._stopping = threading.Event()

    def cue(self, mode):
        assert mode in POP3_MODES, mode
        self.mode = mode
        self.drop_sessions()   # the next operation starts a session that misbehaves

    def behave(self):
        self.mode = None
        self.drop_sessions()

    def __exit__(self, *exc):
        self._stopping.set()
        return super().__exit__(*exc)

    def _junk(self, send, chunk):
        sent = 0
        while sent < JUNK_CAP and self.mode and not self._stopping.is_set():
            send(chunk)
            sent += len(chunk)
        while self.mode and not self._stopping.wait(0.5):
            pass
        raise OSError("misbehaviour over")

    def misbehave(self, cmd, words, send):
        mode = self.mode
        if mode in ("endless_line", "trickle") and cmd == "RETR":
            self.misbehaved += 1
            if mode == "endless_line":
                send(b"+OK here it comes\r\n")
                self._junk(send, b"x" * 65536)
            raw = self.messages[int(words[1]) - 1]
            data = b"+OK %d octets\r\n" % len(raw) + raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"
            for i in range(len(data)):
                send(data[i:i + 1])
                if self._stopping.wait(TRICKLE_SECONDS) or not self.mode:
                    raise OSError("misbehaviour over")
        if mode == "huge_answer" and cmd == "UIDL" and len(words) == 1:
            self.misbehaved += 1
            send(b"+OK\r\n")
            self._junk(send, b"".join(b"%d junk-%08d\r\n" % (i, i) for i in range(1, 5000)))
        return False

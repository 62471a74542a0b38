"""An independent IMAP client for the tests (Python's imaplib), with nothing
of any one server in it: modified UTF-7, quoting, INTERNALDATE and FETCH
parsing, and ImapHelpers, the APPEND / LIST / FETCH / STORE / EXPUNGE
helpers mixed into a server class.

ImapHelpers needs four attributes of the object it is mixed into: host,
imaps_port, ca_file (the CA that signed the server's certificate) and users
({user: password}).  tests/dovecot.py's Dovecot is one such class; a second
kind of server gets the same helpers by setting the four.

    dc.create_folder("alice", "Entwürfe")
    dc.append("alice", "INBOX", raw_bytes, flags="\\Seen")
    with dc.session("alice") as c:       # imaplib.IMAP4_SSL, logged in
        c.getquotaroot("INBOX")
"""

import base64
import contextlib
import datetime
import imaplib
import re
import ssl


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


def q(folder):
    """A folder name (str, UTF-8) as an IMAP mailbox argument: modified
    UTF-7, quoted."""
    return imap_quote(utf7_encode(folder))


# --- parsing answers ---------------------------------------------------------

_FETCH_META = re.compile(
    rb"UID (?P<uid>\d+)|FLAGS \((?P<flags>[^)]*)\)|RFC822\.SIZE (?P<size>\d+)"
    rb"|INTERNALDATE \"(?P<date>[^\"]+)\"")

_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')


def parse_internaldate(s):
    """'17-Jul-1996 02:44:25 -0700' -> aware datetime."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    return datetime.datetime.strptime(s.strip(), "%d-%b-%Y %H:%M:%S %z")


def fetch_meta(line):
    """The uid, flags (set), size and internaldate (aware datetime) a FETCH
    response line holds, as a dict of those it holds."""
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
    return rec


def _unquote(b):
    if b.startswith(b'"') and b.endswith(b'"'):
        return re.sub(rb'\\(.)', rb'\1', b[1:-1])
    return b


def parse_list(data):
    """imaplib's LIST answer -> [(name_utf8, flags_set, delimiter)]."""
    result = []
    for item in data:
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


class ImapError(RuntimeError):
    pass


def _ok(result, what):
    typ, data = result
    if typ != "OK":
        raise ImapError("%s: %s %r" % (what, typ, data))
    return data


# --- the helpers, for a server object -------------------------------------------

class ImapHelpers:
    """imaplib helpers over IMAPS; see the module docstring for what the
    class they are mixed into provides (host, imaps_port, ca_file, users)."""

    def ssl_context(self):
        return ssl.create_default_context(cafile=self.ca_file)

    def imap(self, user="alice"):
        """An imaplib.IMAP4_SSL logged in as user, verifying with the test CA."""
        c = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.ssl_context(),
                              timeout=30)
        c.login(user, self.users[user])
        return c

    @contextlib.contextmanager
    def session(self, user="alice"):
        """with server.session(user) as c: an imap(user) that is logged out
        at the end (a failing LOGOUT ignored)."""
        c = self.imap(user)
        try:
            yield c
        finally:
            try:
                c.logout()
            except Exception:
                pass

    def create_folder(self, user, name_utf8):
        with self.session(user) as c:
            _ok(c.create(q(name_utf8)), "CREATE " + name_utf8)

    def delete_folder(self, user, name_utf8):
        with self.session(user) as c:
            _ok(c.delete(q(name_utf8)), "DELETE " + name_utf8)

    def append(self, user, folder_utf8, raw_bytes, flags="", date_time=None):
        """APPEND one message.  flags: '\\Seen \\Flagged' (no parentheses needed);
        date_time: a datetime (aware), a Unix time, or None for now."""
        return self.append_many(user, folder_utf8, [(raw_bytes, flags, date_time)])[0]

    def append_many(self, user, folder_utf8, items):
        """APPEND several (raw_bytes, flags, date_time) over one connection.

        Returns the UID of each (from APPENDUID), None where the server refused."""
        uids = []
        with self.session(user) as c:
            box = q(folder_utf8)
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
        with self.session(user) as c:
            data = _ok(c.list('""', '"*"'), "LIST")
        return parse_list(data)

    def fetch_all(self, user, folder_utf8, items):
        """UID FETCH 1:* items of a folder opened with EXAMINE (so nothing
        changes): imaplib's answer without its None entries (bytes lines, and
        (head, literal) tuples); [] for an empty folder, None when the folder
        cannot be examined (it does not exist)."""
        with self.session(user) as c:
            typ, data = c.select(q(folder_utf8), readonly=True)
            if typ != "OK":
                return None
            if int(data[0]) == 0:
                return []
            data = _ok(c.uid("FETCH", "1:*", items), "UID FETCH")
        return [d for d in data if d is not None]

    def messages(self, user, folder_utf8):
        """[{uid, flags (set), size, internaldate (aware datetime)}] in UID order."""
        data = self.fetch_all(user, folder_utf8, "(UID FLAGS RFC822.SIZE INTERNALDATE)")
        if data is None:
            raise ImapError("EXAMINE %s failed" % folder_utf8)
        result = []
        for line in data:
            rec = fetch_meta(line[0] if isinstance(line, tuple) else line)
            if "uid" in rec:
                rec.setdefault("flags", set())
                result.append(rec)
        result.sort(key=lambda r: r["uid"])
        return result

    def fetch_bodies(self, user, folder_utf8, uids=None):
        """{uid: BODY[] bytes} fetched with BODY.PEEK[] (sets no flag)."""
        bodies = {}
        with self.session(user) as c:
            typ, data = c.select(q(folder_utf8), readonly=True)
            _ok((typ, data), "EXAMINE " + folder_utf8)
            if uids is None:
                if int(data[0]) == 0:
                    return {}
                data = _ok(c.uid("SEARCH", "ALL"), "UID SEARCH")
                uids = [int(u) for u in data[0].split()]
            for uid in uids:
                data = _ok(c.uid("FETCH", str(uid), "(UID BODY.PEEK[])"),
                           "UID FETCH %d BODY.PEEK[]" % uid)
                for item in data:
                    if isinstance(item, tuple) and b"BODY[]" in item[0]:
                        bodies[uid] = item[1]
        return bodies

    def store_flags(self, user, folder_utf8, uid, how, flags):
        """UID STORE uid how (flags); how is 'FLAGS', '+FLAGS' or '-FLAGS'."""
        with self.session(user) as c:
            _ok(c.select(q(folder_utf8)), "SELECT " + folder_utf8)
            _ok(c.uid("STORE", str(uid), how, "(%s)" % flags), "UID STORE")

    def expunge_uids(self, user, folder_utf8, uids):
        """Flag the UIDs \\Deleted and expunge them (UID EXPUNGE)."""
        with self.session(user) as c:
            _ok(c.select(q(folder_utf8)), "SELECT " + folder_utf8)
            s = ",".join(str(u) for u in uids)
            _ok(c.uid("STORE", s, "+FLAGS.SILENT", "(\\Deleted)"), "UID STORE")
            _ok(c.uid("EXPUNGE", s), "UID EXPUNGE")

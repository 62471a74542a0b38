"""Deterministic sample messages, and an independent implementation of the
file-name rule of DESIGN.md ("File names") to check mailfs against.

    sample_messages(n, seed)      -> [raw RFC 5322 bytes with CRLF]
    sample_internaldate(i, seed)  -> an aware datetime to APPEND message i with
    expected_name(raw, internaldate)  -> 'YYYYMMDD-HHMM_<slug>_<h8>.eml'
    apply_collisions([(uid, name)])   -> {uid: name with ~2, ~3 ... added}

The first messages of sample_messages(n, seed) (with tricky=True) are the
hard cases: RFC 2047 subjects (UTF-8 and ISO-8859-1, B and Q), German and
Japanese subjects, no Message-ID, no Date, no Subject, name collisions, a
body line that looks like a tagged IMAP reply, dot lines, a message over
1.5 MiB, dates in several time zones.  The rest are ordinary messages, some
of which mention an invoice.

expected_name() uses Python's email package, not GMime: it is meant for
well-formed messages like these.  For malformed messages (the corpus) only
the form of a name can be checked: NAME_RE.
"""

import base64
import datetime
import email.header
import email.parser
import email.policy
import email.utils
import hashlib
import random
import re
import zlib

NAME_RE = re.compile(r"^(\d{8}-\d{4})_([^\s/_]+)_([0-9a-f]{8})(~\d+)?\.eml$")

CRLF = b"\r\n"


# --- building messages -----------------------------------------------------

def _hdr(name, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return name.encode("ascii") + b": " + value


def build(headers, body):
    """headers: [(name, value)]; body: str or bytes, lines joined with CRLF."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = body.replace(b"\r\n", b"\n").replace(b"\n", CRLF)
    head = CRLF.join(_hdr(n, v) for n, v in headers if v is not None)
    return head + CRLF + CRLF + body


def b_word(text, charset="UTF-8"):
    return "=?%s?B?%s?=" % (charset, base64.b64encode(text.encode(charset)).decode("ascii"))


def q_word(text, charset="UTF-8"):
    out = []
    for byte in text.encode(charset):
        c = chr(byte)
        if c == " ":
            out.append("_")
        elif c.isalnum() and byte < 128:
            out.append(c)
        else:
            out.append("=%02X" % byte)
    return "=?%s?Q?%s?=" % (charset, "".join(out))


def _wrap_b64(data):
    enc = base64.b64encode(data).decode("ascii")
    return "\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))


def _multipart(headers, text, attachments, boundary):
    """attachments: [(filename, content_type, bytes)]"""
    parts = ["This is a multi-part message in MIME format.", ""]
    parts += ["--" + boundary,
              "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit", "", text, ""]
    for filename, ctype, data in attachments:
        parts += ["--" + boundary,
                  "Content-Type: %s; name=\"%s\"" % (ctype, filename),
                  "Content-Transfer-Encoding: base64",
                  "Content-Disposition: attachment; filename=\"%s\"" % filename, "",
                  _wrap_b64(data), ""]
    parts += ["--" + boundary + "--", ""]
    headers = list(headers) + [
        ("MIME-Version", "1.0"),
        ("Content-Type", "multipart/mixed; boundary=\"%s\"" % boundary)]
    return build(headers, "\n".join(parts))


def _plain(headers, text):
    headers = list(headers) + [
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit")]
    return build(headers, text)


WORDS = ("the report budget meeting project server backup release draft review "
         "quarterly update notes agenda schedule travel plans results "
         "payment reminder question about your order delivery status team lunch "
         "friday monday migration database kernel patch build failure fixed "
         "proposal contract renewal holiday photos conference slides").split()

PEOPLE = [("Alice Example", "alice@example.org"), ("Bob Builder", "bob@example.net"),
          ("Carla Díaz", "carla@example.com"), ("Dieter Müller", "dieter@example.de"),
          ("山田 太郎", "yamada@example.jp"), ("Eve", "eve@example.org"),
          ("Frank O'Neill", "frank@example.ie"), ("Billing", "billing@acme.example")]

ZONES = ["+0000", "+0100", "+0200", "-0500", "-0800", "+0530", "+0900", "+1245", "-0330"]


def _fmt_addr(name, addr):
    if all(ord(c) < 128 for c in name):
        if re.search(r"[^\w ]", name):
            name = '"%s"' % name
        return "%s <%s>" % (name, addr)
    return "%s <%s>" % (b_word(name), addr)


def _date(dt):
    return email.utils.format_datetime(dt)


def _dt(y, mo, d, h, mi, zone="+0000", s=0):
    sign = -1 if zone[0] == "-" else 1
    off = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
    return datetime.datetime(y, mo, d, h, mi, s, tzinfo=datetime.timezone(off))


def _tricky(seed):
    """The hard cases, in a fixed order."""
    rng = random.Random("tricky-%s" % seed)
    dom = "sample%s.mailfs.test" % seed
    frm = _fmt_addr(*PEOPLE[0])
    to = _fmt_addr(*PEOPLE[1])
    msgs = []

    def mid(tag):
        return "<%s.%s@%s>" % (tag, seed, dom)

    def std(subject, date, tag, extra=()):
        return [("From", frm), ("To", to), ("Subject", subject), ("Date", date),
                ("Message-ID", mid(tag))] + list(extra)

    # 1 plain text
    msgs.append(_plain(std("Re: Meeting tomorrow", "Fri, 05 Jan 2024 10:22:00 +0000", "plain"),
                       "Hi Bob,\n\nsee you at ten.\n\n-- \nAlice\n"))
    # 2 multipart with an attachment
    pdf = b"%PDF-1.4\n" + bytes(rng.getrandbits(8) for _ in range(3000)) + b"\n%%EOF\n"
    msgs.append(_multipart(std("Invoice 2024-017 attached", "Mon, 08 Jan 2024 09:15:30 +0100",
                               "invoice"),
                           "Dear customer,\n\nplease find invoice 2024-017 attached.\n",
                           [("invoice-2024-017.pdf", "application/pdf", pdf)], "=_b1_%s" % seed))
    # 3-4 RFC 2047 UTF-8, B and Q
    msgs.append(_plain(std(b_word("Grüße aus München"), "Tue, 09 Jan 2024 18:00:00 +0100",
                           "utf8b"), "Servus!\n"))
    msgs.append(_plain(std(q_word("Café crème brûlée"), "Wed, 10 Jan 2024 07:45:00 -0500",
                           "utf8q"), "Dessert.\n"))
    # 5-6 ISO-8859-1, Q and B
    msgs.append(_plain(std(q_word("Björk ändert die Größe", "ISO-8859-1"),
                           "Thu, 11 Jan 2024 23:59:59 +0000", "latin1q"), "Hej.\n"))
    msgs.append(_plain(std(b_word("Déjà vu à Genève", "ISO-8859-1"),
                           "Fri, 12 Jan 2024 00:30:00 +0200", "latin1b"), "Salut.\n"))
    # 7 Japanese, long: the slug is cut at 60 bytes on a character boundary
    msgs.append(_plain(std(b_word("東京オフィスの年次報告書と来期の予算計画に関するお知らせ"),
                           "Sat, 13 Jan 2024 09:00:00 +0900", "japanese"),
                       "各位\n\n資料を添付します。\n"))
    # 8 German, long, unencoded 8-bit UTF-8 in the header (RFC 6532 style)
    msgs.append(_plain(std("Änderungen an der Übersichtsseite für Größenangaben und Maßeinheiten",
                           "Sun, 14 Jan 2024 12:00:00 +0100", "german8bit"), "Bitte prüfen.\n"))
    # 9 no Message-ID (h8 from Date, From, Subject)
    msgs.append(_plain([("From", frm), ("To", to), ("Subject", "No message id here"),
                        ("Date", "Mon, 15 Jan 2024 08:00:00 +0000")], "Nothing.\n"))
    # 10 no Date (the date comes from INTERNALDATE)
    msgs.append(_plain([("From", frm), ("To", to), ("Subject", "Undated message"),
                        ("Message-ID", mid("nodate"))], "When was this?\n"))
    # 11 no Subject
    msgs.append(_plain([("From", frm), ("To", to), ("Date", "Tue, 16 Jan 2024 14:14:14 +0000"),
                        ("Message-ID", mid("nosubject"))], "Subjectless.\n"))
    # 12-13 same Date, Subject and Message-ID: the second gets ~2
    for body in ("First copy.\n", "Second copy, different body.\n"):
        msgs.append(_plain(std("Weekly report", "Wed, 17 Jan 2024 17:00:00 +0000", "dup"), body))
    # 14-15 same Date, From and Subject, no Message-ID: the same h8, so ~2
    for body in ("Ping one.\n", "Ping two.\n"):
        msgs.append(_plain([("From", frm), ("To", to), ("Subject", "Ping"),
                            ("Date", "Thu, 18 Jan 2024 06:06:00 +0000")], body))
    # 16 body lines that look like IMAP responses
    msgs.append(_plain(std("Protocol lookalikes", "Fri, 19 Jan 2024 11:11:00 +0000", "lookalike"),
                       "A1 OK FETCH completed\n* 3 FETCH (FLAGS (\\Seen))\nA2 BAD nonsense\n"
                       ")\n{12}\n* BYE going away\nA1 OK FETCH completed.\n"))
    # 17 dot lines (POP3 byte-stuffing)
    msgs.append(_plain(std("Dots", "Sat, 20 Jan 2024 20:20:00 +0000", "dots"),
                       "Lines with dots:\n.\n..\n.hidden\n. \n...\nend\n.\n"))
    # 18 over 1.5 MiB
    blob = rng.randbytes(1200 * 1024)
    msgs.append(_multipart(std("Large attachment", "Sun, 21 Jan 2024 13:37:00 +0000", "large"),
                           "A big file.\n", [("big.bin", "application/octet-stream", blob)],
                           "=_b2_%s" % seed))
    # 19-23 time zones: the name's date is UTC
    for i, (d, tag) in enumerate([
            ("Mon, 22 Jan 2024 23:30:00 -0500", "tzminus5"),     # next day in UTC
            ("Tue, 23 Jan 2024 02:15:00 +0530", "tzplus530"),    # previous day in UTC
            ("Wed, 24 Jan 2024 00:10:00 +1245", "tzplus1245"),
            ("Thu, 25 Jan 2024 12:00:00 GMT", "tzgmt"),
            ("Fri, 26 Jan 2024 09:09:09 -0000", "tzminus0")]):
        msgs.append(_plain(std("Time zone %d" % (i + 1), d, tag), "Tick.\n"))
    # 24 only punctuation -> no-subject
    msgs.append(_plain(std("!!! ??? ...", "Sat, 27 Jan 2024 10:00:00 +0000", "punct"), "?\n"))
    # 25 underscores, slashes, dashes
    msgs.append(_plain(std("path/to/file_name.txt -- résumé_v2 (final)",
                           "Sun, 28 Jan 2024 10:00:00 +0000", "underscore"), "Files.\n"))
    # 26 folded Subject
    msgs.append(_plain(std("A rather long subject line that has been folded\r\n across two lines",
                           "Mon, 29 Jan 2024 10:00:00 +0000", "folded"), "Folded.\n"))
    # 27 emoji and mixed encoded/plain words
    msgs.append(_plain(std("Party " + b_word("🎉") + " tonight", "Tue, 30 Jan 2024 19:00:00 +0100",
                           "emoji"), "Bring snacks.\n"))
    msgs.append(_plain(std("Re: " + q_word("Frühstück") + " morgen",
                           "Wed, 31 Jan 2024 06:30:00 +0100", "mixed"), "Um sieben.\n"))
    # 29 Message-ID with white space around it
    msgs.append(_plain([("From", frm), ("To", to), ("Subject", "Spaced id"),
                        ("Date", "Thu, 01 Feb 2024 10:00:00 +0000"),
                        ("Message-ID", "  <spaced.%s@%s>  " % (seed, dom))], "Space.\n"))
    # 30 HTML alternative
    html = ("This is a multi-part message in MIME format.\n\n--alt%s\n"
            "Content-Type: text/plain; charset=utf-8\n\nHello in plain text.\n\n--alt%s\n"
            "Content-Type: text/html; charset=utf-8\n\n<html><body><p>Hello in "
            "<b>HTML</b>.</p></body></html>\n\n--alt%s--\n") % (seed, seed, seed)
    msgs.append(build(std("HTML newsletter", "Fri, 02 Feb 2024 08:00:00 +0000", "html",
                          [("MIME-Version", "1.0"),
                           ("Content-Type", "multipart/alternative; boundary=\"alt%s\"" % seed)]),
                      html))
    return msgs


def _filler(i, seed, rng):
    name, addr = PEOPLE[rng.randrange(len(PEOPLE))]
    to_name, to_addr = PEOPLE[rng.randrange(len(PEOPLE))]
    zone = ZONES[rng.randrange(len(ZONES))]
    base = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    when = base + datetime.timedelta(minutes=rng.randrange(5 * 365 * 24 * 60))
    sign = -1 if zone[0] == "-" else 1
    off = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]),
                                                      minutes=int(zone[3:5])))
    when = when.astimezone(off)
    kind = rng.randrange(10)
    if kind == 0:
        subject = "Invoice %d from ACME Corp" % rng.randrange(1000, 9999)
    else:
        subject = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 7))).capitalize()
        if kind == 1:
            subject = "Re: " + subject
        elif kind == 2:
            subject = "[debian-devel] " + subject
    if kind == 3:
        subject = q_word(subject + " – Übersicht")
    paras = []
    for _ in range(rng.randrange(1, 6)):
        paras.append(" ".join(rng.choice(WORDS) for _ in range(rng.randrange(8, 60))))
    text = "Hello %s,\n\n%s\n\nRegards,\n%s\n" % (to_name.split()[0], "\n\n".join(paras), name)
    if kind == 0:
        text = "The invoice is due in 30 days.\n\n" + text
    headers = [("From", _fmt_addr(name, addr)), ("To", _fmt_addr(to_name, to_addr)),
               ("Subject", subject), ("Date", _date(when)),
               ("Message-ID", "<fill.%d.%s.%08x@sample.mailfs.test>" % (i, seed, rng.getrandbits(32)))]
    if kind in (4, 5):
        data = rng.randbytes(rng.randrange(500, 20000))
        return _multipart(headers, text, [("data-%d.bin" % i, "application/octet-stream", data)],
                          "=_f%d_%s" % (i, seed))
    return _plain(headers, text)


def sample_messages(n, seed=0, tricky=True):
    """n raw messages (bytes, CRLF), the same for the same (n, seed, tricky)."""
    msgs = _tricky(seed)[:n] if tricky else []
    rng = random.Random("fill-%s" % seed)
    i = len(msgs)
    while len(msgs) < n:
        msgs.append(_filler(i, seed, rng))
        i += 1
    return msgs


def sample_internaldate(i, seed=0):
    """A deterministic INTERNALDATE for message i: minutes apart, in several zones,
    and never equal to the message's own Date (so that a fallback shows)."""
    zones = ["+0000", "+0100", "-0700", "+0900"]
    base = datetime.datetime(2024, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    shift = zlib.crc32(str(seed).encode()) % 7
    when = base + datetime.timedelta(minutes=97 * i + 13 * shift, seconds=i % 60)
    zone = zones[i % len(zones)]
    sign = -1 if zone[0] == "-" else 1
    off = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
    return when.astimezone(off)


# --- the naming rule (DESIGN.md "File names") --------------------------------

def raw_headers(raw):
    """[(name_lower, raw_value_bytes_unfolded_trimmed)] of the header block."""
    m = re.search(rb"\r?\n\r?\n", raw)
    head = raw[:m.start()] if m else raw
    lines = re.split(rb"\r?\n", head)
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1] += line          # unfold: drop the line break, keep the blank
        elif b":" in line:
            name, value = line.split(b":", 1)
            fields.append([name.strip().lower(), value])
    return [(n.decode("ascii", "replace"), v.strip(b" \t")) for n, v in fields]


def _first(fields, name):
    for n, v in fields:
        if n == name:
            return v
    return None


def decoded_subject(raw):
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
    subj = msg["Subject"]
    if subj is None:
        return None
    return str(subj)


def message_id(raw):
    """The addr-spec of the Message-ID, without <> and white space; None if none."""
    v = _first(raw_headers(raw), "message-id")
    if v is None:
        return None
    v = v.decode("utf-8", "replace")
    m = re.search(r"<([^>]*)>", v)
    v = m.group(1) if m else v
    v = re.sub(r"\s+", "", v)
    return v or None


def header_date(raw):
    """The Date header as an aware UTC datetime, None if absent or unparseable."""
    v = _first(raw_headers(raw), "date")
    if v is None:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(v.decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:            # "-0000": UTC, local zone unknown
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


def slug(subject):
    if not subject:
        return "no-subject"
    s = re.sub(r"[\W_]+", "-", subject).strip("-")
    b = s.encode("utf-8")
    if len(b) > 60:
        s = b[:60].decode("utf-8", "ignore").rstrip("-")
    return s or "no-subject"


def h8(raw):
    mid = message_id(raw)
    if mid is not None:
        data = mid.encode("utf-8")
    else:
        fields = raw_headers(raw)
        parts = [_first(fields, n) or b"" for n in ("date", "from", "subject")]
        data = b"\n".join(parts)
    return hashlib.sha256(data).hexdigest()[:8]


def _as_datetime(t):
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t.astimezone(datetime.timezone.utc)
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


def expected_name(raw, internaldate):
    """The name DESIGN.md derives for a well-formed message (before collisions).

    internaldate: an aware datetime or a Unix time."""
    dt = header_date(raw) or _as_datetime(internaldate)
    return "%s_%s_%s.eml" % (dt.strftime("%Y%m%d-%H%M"), slug(decoded_subject(raw)), h8(raw))


def apply_collisions(pairs):
    """[(uid, name)] -> {uid: final name}: the lower UID keeps a name, the next
    one gets ~2 before .eml, then ~3 ..."""
    seen = {}
    result = {}
    for uid, name in sorted(pairs):
        n = seen.get(name, 0) + 1
        seen[name] = n
        result[uid] = name if n == 1 else name[:-len(".eml")] + "~%d.eml" % n
    return result


if __name__ == "__main__":
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    for i, m in enumerate(sample_messages(n, 0)):
        print("%3d %8d %s" % (i, len(m), expected_name(m, sample_internaldate(i))))

"""Writing like a local disk: every shell idiom that makes a file in a
folder lands exactly one message holding exactly the written bytes (line
ends as the server stores them), whatever the writer does with its
descriptors (dup2, fork, several closes); junk and empty files fail at
close and leave nothing; big messages stream; a folder rename keeps the
names given below it; one mount per cache; the fsname.

Checked on the server with imaplib only.  A private Dovecot of this module
("plain": Dovecot's own capabilities), a folder of its own per test.
"""

import errno
import os
import re
import subprocess

import pytest

import sample_mail
from harness import (SEQ, USER, listing, new_folder, run, server_messages, server_url,
                     wait_for)


@pytest.fixture
def dc(servers):
    return servers.get()


def mounted(mount, dc, options=()):
    return mount(server=dc, options=["debug"] + list(options))


def message(tag, crlf=True, body_lines=3):
    """A small well-formed message with a unique Message-ID."""
    eol = "\r\n" if crlf else "\n"
    head = ["From: Ann <ann@example.org>", "To: bob@example.org",
            "Subject: shell idiom %s" % tag, "Message-ID: <%s.%d@example.org>" % (tag, next(SEQ)),
            "Date: Mon, 07 Jun 2021 08:09:10 +0000"]
    body = ["line %d of %s" % (i, tag) for i in range(body_lines)]
    return (eol.join(head) + eol + eol + eol.join(body) + eol).encode()


def as_server_stores(raw):
    """RFC 5322 line ends: a bare LF becomes CRLF (as Dovecot's BODY[] does)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def bodies(dc, folder):
    srv = server_messages(dc, folder) or []
    got = dc.fetch_bodies(USER, folder, [r["uid"] for r in srv]) if srv else {}
    return [got[r["uid"]] for r in srv]


def assert_one_message(dc, folder, want, m, what):
    got = bodies(dc, folder)
    assert len(got) == 1, "%s: the server holds %d messages, want exactly 1\n%s" % (
        what, len(got), m.log_tail())
    assert got[0] == as_server_stores(want), "%s: the server holds other bytes\n%s" % (
        what, m.log_tail())


def sh(script, **kw):
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=60, **kw)


# name -> a bash script writing $MSG (a local file) to $F/NAME; $HEAD and
# $BODY split it in two at its blank line.
IDIOMS = {
    "redirect": 'cat "$MSG" > "$F/a.eml"',
    "append-new": 'cat "$MSG" >> "$F/b.eml"',
    "printf": 'printf "%s" "$(cat "$MSG"; echo x)" | head -c -1 > "$F/c.eml"',
    "printf-builtin": 'printf "From: a@b.c\\r\\nSubject: x\\r\\nMessage-ID: <$TAG@b.c>\\r\\n\\r\\nhi\\r\\n" > "$F/c2.eml"',
    "group": '{ cat "$HEAD"; cat "$BODY"; } > "$F/d.eml"',
    "subshell": '( cat "$HEAD"; cat "$BODY" ) > "$F/e.eml"',
    "heredoc": 'cat > "$F/h1.eml" <<EOF\n$(cat "$MSG")\nEOF',
    "tee": 'tee "$F/f.eml" < "$MSG" > /dev/null',
    "dd": 'dd if="$MSG" of="$F/g.eml" bs=1k status=none',
    "install": 'install -m 644 "$MSG" "$F/h.eml"',
    "mv-across": 'cp "$MSG" "$LOCAL/moved.eml" && mv "$LOCAL/moved.eml" "$F/"',
    "python": ('python3 -c \'import sys\nf = open(sys.argv[1] + "/p.eml", "wb")\n'
               'data = open(sys.argv[2], "rb").read()\n'
               'for i in range(0, len(data), 7): f.write(data[i:i + 7]); f.flush()\n'
               'f.close()\' "$F" "$MSG"'),
}


@pytest.mark.parametrize("idiom", sorted(IDIOMS))
def test_shell_idiom_lands_one_message(mount, dc, tmp_path, idiom):
    folder = new_folder(dc, "Sh")
    m = mounted(mount, dc)
    crlf = idiom not in ("heredoc", "redirect")  # bare LF for two of them
    raw = message(idiom, crlf=crlf)
    if idiom == "printf-builtin":
        tag = "pb%d" % next(SEQ)
        raw = ("From: a@b.c\r\nSubject: x\r\nMessage-ID: <%s@b.c>\r\n\r\nhi\r\n" % tag).encode()
    else:
        tag = ""
    if idiom == "heredoc":
        raw = raw.rstrip(b"\n") + b"\n"   # what a here-document gives
    src = tmp_path / "m.eml"
    src.write_bytes(raw)
    head, sep, body = raw.partition(b"\r\n\r\n" if crlf else b"\n\n")
    (tmp_path / "head").write_bytes(head + sep)
    (tmp_path / "body").write_bytes(body)
    local = tmp_path / "local"
    local.mkdir()
    env = dict(os.environ, F=m.p(folder), MSG=str(src), HEAD=str(tmp_path / "head"),
               BODY=str(tmp_path / "body"), LOCAL=str(local), TAG=tag)
    r = sh(IDIOMS[idiom], env=env)
    assert r.returncode == 0, "%s: exit %d: %s\n%s" % (idiom, r.returncode,
                                                        r.stderr.decode(errors="replace"),
                                                        m.log_tail())
    assert_one_message(dc, folder, raw, m, idiom)
    # The file is there under the name given, and reads as the server's bytes.
    names = listing(m.p(folder))
    assert len(names) == 1, names
    want_name = "moved.eml" if idiom == "mv-across" else None
    if want_name:
        assert names == [want_name]
    with open(m.p(folder, names[0]), "rb") as f:
        assert f.read() == as_server_stores(raw), "%s: the mount shows other bytes" % idiom
    assert os.stat(m.p(folder, names[0])).st_size == len(as_server_stores(raw))
    if idiom == "mv-across":
        assert not (local / "moved.eml").exists()


def test_cache_holds_the_servers_bytes_after_a_remount(mount, dc, tmp_path):
    """A bare-LF file: the mount that wrote it and a fresh cache show the
    same bytes, the server's."""
    folder = new_folder(dc, "Lf")
    m = mounted(mount, dc)
    raw = message("lf", crlf=False)
    (tmp_path / "lf.eml").write_bytes(raw)
    run(["cp", str(tmp_path / "lf.eml"), m.p(folder, "lf.eml")])
    with open(m.p(folder, "lf.eml"), "rb") as f:
        first = f.read()
    m.unmount()
    m2 = mounted(mount, dc)   # a new cache: the name given is the old cache's
    names = listing(m2.p(folder))
    assert len(names) == 1, names
    with open(m2.p(folder, names[0]), "rb") as f:
        assert f.read() == first == as_server_stores(raw)


def close_errno(path, data):
    """Writes data to a new file at path; the errno its close reports, 0 for none."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if data:
            os.write(fd, data)
    except OSError:
        os.close(fd)
        raise
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


def test_empty_and_junk_fail_at_close_and_leave_nothing(mount, dc, tmp_path):
    folder = new_folder(dc, "Junk")
    m = mounted(mount, dc)
    assert close_errno(m.p(folder, "empty.eml"), b"") == errno.EINVAL
    assert close_errno(m.p(folder, "junk.eml"), b"junk\n") == errno.EINVAL
    for script in (': > "$F/empty2.eml"', 'echo junk > "$F/junk2.eml"',
                   '{ echo junk; echo more; } > "$F/junk3.eml"'):
        sh(script, env=dict(os.environ, F=m.p(folder)))
    assert server_messages(dc, folder) == [], m.log_tail()
    wait_for(lambda: listing(m.p(folder)) == [], 5, what="the junk files gone from the listing")


def test_forking_writer_leaves_one_message_with_the_final_content(mount, dc, tmp_path):
    """Each part written by a child of its own is a valid message by itself:
    each close appends, each append replaces the one before."""
    folder = new_folder(dc, "Fork")
    m = mounted(mount, dc)
    part1 = message("fork1")
    part2 = b"a second part, written by another child\r\n"
    part3 = b"and a third\r\n"
    for i, p in enumerate((part1, part2, part3)):
        (tmp_path / ("p%d" % i)).write_bytes(p)
    r = sh('{ cat p0; cat p1; (cat p2); } > "$F/x.eml"', cwd=tmp_path,
           env=dict(os.environ, F=m.p(folder)))
    assert r.returncode == 0, r.stderr
    assert_one_message(dc, folder, part1 + part2 + part3, m, "a forking writer")
    assert listing(m.p(folder)) == ["x.eml"]
    # A close that reported success meant the content was there: each part
    # was appended and the one before it expunged, never moved to a trash.
    log = m.log_text()
    assert log.count("appended x.eml") == 3, m.log_tail()


def test_write_after_a_close_replaces_the_version(mount, dc, tmp_path):
    """open, write, close, and the same file opened again by a descriptor
    that was dup'ed before: what the server holds follows each close."""
    folder = new_folder(dc, "Dup")
    m = mounted(mount, dc)
    a = message("dup-a")
    b = b"one more line\r\n"
    fd = os.open(m.p(folder, "y.eml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fd2 = os.dup(fd)
    os.write(fd, a)
    os.close(fd)                  # a close after which the other descriptor writes
    assert_one_message(dc, folder, a, m, "after the first close")
    os.write(fd2, b)
    os.close(fd2)
    assert_one_message(dc, folder, a + b, m, "after the last close")
    # An intermediate version that turns into junk: the last close fails,
    # and nothing is left on the server.
    fd = os.open(m.p(folder, "z.eml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fd2 = os.dup(fd)
    os.write(fd, message("dup-z"))
    os.close(fd)
    os.ftruncate(fd2, 0)
    os.lseek(fd2, 0, os.SEEK_SET)
    os.write(fd2, b"junk\n")
    with pytest.raises(OSError) as e:
        os.close(fd2)
    assert e.value.errno == errno.EINVAL
    wait_for(lambda: len(server_messages(dc, folder)) == 1, 10,
             what="the junk version's earlier content removed")
    assert_one_message(dc, folder, a + b, m, "after z.eml turned into junk")


def test_a_redirect_onto_a_file_still_open_truncates_it(mount, dc, tmp_path):
    """cat msg > F/x.eml while another descriptor of x.eml, still being
    written, holds longer content: the > truncates first (O_TRUNC), so the
    server ends with msg alone, not msg followed by the rest of the
    longer content."""
    folder = new_folder(dc, "Trunc")
    m = mounted(mount, dc)
    want = message("trunc-short")
    src = tmp_path / "m.eml"
    src.write_bytes(want)
    fd = os.open(m.p(folder, "x.eml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, message("trunc-long", body_lines=40))
    r = sh('cat "$MSG" > "$F/x.eml"', env=dict(os.environ, F=m.p(folder), MSG=str(src)))
    assert r.returncode == 0, r.stderr
    os.close(fd)
    assert_one_message(dc, folder, want, m, "after the redirect and the last close")


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def test_big_message_streams(mount, dc, tmp_path):
    """A 200 MB message goes through without the daemon holding it."""
    folder = new_folder(dc, "Big")
    m = mounted(mount, dc)
    src = tmp_path / "big.eml"
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    with open(src, "wb") as f:
        f.write(message("big")[:-2])
        for _ in range(200 * 1024 * 1024 // len(line)):
            f.write(line)
    size = src.stat().st_size
    run(["cp", str(src), m.p(folder, "big.eml")], timeout=600)
    srv = server_messages(dc, folder)
    assert len(srv) == 1 and srv[0]["size"] == size, (srv, m.log_tail())
    run(["cmp", str(src), m.p(folder, "big.eml")], timeout=600)
    if "asan" not in m.args[0]:   # ASan's shadow memory is not mailfs's
        hwm = vm_hwm_kib(m.proc.pid)
        assert hwm is not None and hwm < 64 * 1024, \
            "mailfs peaked at %d KiB of RSS copying a %d-byte message" % (hwm, size)


def test_appendlimit_refuses_before_sending(mount, servers, tmp_path):
    dc = servers.get(capability="IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE "
                                "UIDPLUS MOVE APPENDLIMIT=600")
    folder = new_folder(dc, "Limit")
    m = mounted(mount, dc)
    small, big = message("small"), message("big", body_lines=40)
    assert len(small) < 600 < len(big)
    (tmp_path / "s.eml").write_bytes(small)
    (tmp_path / "b.eml").write_bytes(big)
    run(["cp", str(tmp_path / "s.eml"), m.p(folder, "s.eml")])
    r = run(["cp", str(tmp_path / "b.eml"), m.p(folder, "b.eml")], check=False)
    assert r.returncode != 0 and b"File too large" in r.stderr, r.stderr
    assert len(server_messages(dc, folder)) == 1
    assert "APPEND" not in "".join(l for l in m.log_text().splitlines()
                                   if "b.eml" in l and "C:" in l)


def test_folder_rename_keeps_the_names_given_below_it(mount, dc, tmp_path):
    m = mounted(mount, dc)
    top = "Projects%d" % next(SEQ)
    os.makedirs(m.p(top, "2024", "Q1"))
    for rel, tag in (((top, "2024", "Q1", "hello.eml"), "hello"), ((top, "top note.eml"), "top")):
        (tmp_path / "m.eml").write_bytes(message(tag))
        run(["cp", str(tmp_path / "m.eml"), m.p(*rel)])
    new = "Work%d" % next(SEQ)
    run(["mv", m.p(top), m.p(new)])
    assert listing(m.p(new, "2024", "Q1")) == ["hello.eml"]
    assert listing(m.p(new)) == ["2024", "top note.eml"]
    assert not os.path.exists(m.p(top))


def test_second_mount_of_the_same_cache_is_refused(mount, dc, tmp_path):
    folder = new_folder(dc, "Lock", [message("lock")])
    m = mounted(mount, dc)
    assert len(listing(m.p(folder))) == 1
    mnt2 = tmp_path / "second"
    mnt2.mkdir()
    r = subprocess.run([m.args[0], "-f", "-o", "cafile=%s,cache_dir=%s" % (dc.ca_file, m.cache_dir),
                        server_url(dc), str(mnt2)], capture_output=True, timeout=30,
                       env=dict(os.environ, MAILFS_PASSWORD=dc.users[USER]))
    err = r.stderr.decode(errors="replace").strip()
    assert r.returncode != 0 and len(err.splitlines()) == 1, err
    assert "in use" in err and str(m.proc.pid) in err, err
    # The first mount goes on, its staging area untouched.
    (tmp_path / "m.eml").write_bytes(message("after"))
    run(["cp", str(tmp_path / "m.eml"), m.p(folder, "after.eml")])
    assert len(server_messages(dc, folder)) == 2


def mount_source(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(path):
                return fields[fields.index("-") + 2]
    return None


def test_fsname(mount, dc):
    m = mounted(mount, dc)
    want = "%s@%s:%d" % (USER, dc.host, dc.imaps_port)
    assert mount_source(m.path) == want
    m.unmount()
    m2 = mounted(mount, dc, ["fsname=work-mail"])
    assert mount_source(m2.path) == "work-mail"


@pytest.mark.parametrize("where", ["same folder", "other folder"])
def test_rename_after_a_close_while_still_open(mount, dc, where):
    """rsync's way (write a temporary file, close, rename) with the last
    descriptor still open: the version on the server follows the name."""
    folder = new_folder(dc, "Ren")
    other = new_folder(dc, "RenTo") if where == "other folder" else folder
    m = mounted(mount, dc)
    raw = message("ren")
    fd = os.open(m.p(folder, ".tmp.eml.XYZ"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fd2 = os.dup(fd)
    os.write(fd, raw)
    os.close(fd)                       # appended under the temporary name
    assert_one_message(dc, folder, raw, m, "after the first close")
    os.rename(m.p(folder, ".tmp.eml.XYZ"), m.p(other, "final.eml"))
    os.close(fd2)                      # the last descriptor: the version follows
    wait_for(lambda: listing(m.p(other)) == ["final.eml"], 10, what="final.eml listed")
    assert_one_message(dc, other, raw, m, "after the rename")
    if other != folder:
        assert server_messages(dc, folder) == []
        assert listing(m.p(folder)) == []

#!/usr/bin/python3
"""Helpers for bench/ls-bench.sh: a private Dovecot holding one big folder,
a local Maildir with the same messages, a raw IMAP client (the yardstick),
and the byte counts from Dovecot's log.

    benchlib.py setup WORKDIR N SEED   start Dovecot, fill folder "Big" with N
                                       messages (Maildir files written directly,
                                       not N APPENDs), write the same messages to
                                       WORKDIR/maildir/Big, warm Dovecot's index;
                                       prints shell assignments (eval them)
    benchlib.py stop WORKDIR           stop that Dovecot (by its pid)
    benchlib.py log-offset WORKDIR     the Dovecot log's size now
    benchlib.py out-bytes WORKDIR OFF  the out= bytes of the sessions that ended
                                       after log offset OFF, and their count
    benchlib.py yardstick WORKDIR [N]  bench/raw_imap.py against that server
    benchlib.py summary JSONDIR        the table and ratios from hyperfine's JSON

Never modifies tests/dovecot.py or tests/sample_mail.py; imports them.
"""

import json
import os
import pwd
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import dovecot  # noqa: E402  (tests/dovecot.py)
import raw_imap  # noqa: E402  (bench/raw_imap.py)
import sample_mail  # noqa: E402  (tests/sample_mail.py)

USER = "alice"
PASSWORD = "secret"
FOLDER = "Big"


def _state_path(workdir):
    return os.path.join(workdir, "dovecot-state.json")


def _flags_for(i):
    """Maildir info flags, deterministic: most mail read, some flagged/answered."""
    f = ""
    if i % 10 == 3:
        f += "F"
    if i % 7 == 0:
        f += "R"
    if i % 5 != 1:
        f += "S"
    return "".join(sorted(f))


def _write_maildir(curdir, messages, seed, owner=None):
    """One file per message in curdir, named as Dovecot names its own
    (S= physical size, W= virtual size: the messages are CRLF already), with
    the INTERNALDATE as mtime.  Returns the total size."""
    os.makedirs(curdir, exist_ok=True)
    base = 1700000000
    total = 0
    for i, raw in enumerate(messages):
        name = "%d.M%dP%d.bench,S=%d,W=%d:2,%s" % (base + i, i, os.getpid(), len(raw), len(raw),
                                                    _flags_for(i))
        path = os.path.join(curdir, name)
        with open(path, "wb") as f:
            f.write(raw)
        when = sample_mail.sample_internaldate(i, seed).timestamp()
        os.utime(path, (when, when))
        if owner:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        total += len(raw)
    return total


def _chown_tree(top, owner):
    for dirpath, dirnames, filenames in os.walk(top):
        os.chown(dirpath, owner.pw_uid, owner.pw_gid)
        for n in filenames:
            os.chown(os.path.join(dirpath, n), owner.pw_uid, owner.pw_gid)


def cmd_setup(workdir, n, seed):
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.monotonic()
    dc = dovecot.Dovecot(os.path.join(workdir, "dovecot"), users={USER: PASSWORD})
    dc.start()
    with open(_state_path(workdir), "w") as f:
        json.dump(dc.state(), f)
    dc.create_folder(USER, FOLDER)
    # mail_location = maildir:~/Maildir:LAYOUT=fs with home = WORKDIR/home/<user>.
    maildir = os.path.join(dc.workdir, "home", USER, "Maildir", FOLDER)
    if not os.path.isdir(os.path.join(maildir, "cur")):
        raise SystemExit("benchlib: expected Dovecot's folder at %s" % maildir)
    messages = sample_mail.sample_messages(n, seed)
    owner = pwd.getpwnam("dovecot")
    size = _write_maildir(os.path.join(maildir, "cur"), messages, seed, owner)
    local = os.path.join(workdir, "maildir", FOLDER)
    _write_maildir(os.path.join(local, "cur"), messages, seed)
    for d in ("new", "tmp"):
        os.makedirs(os.path.join(local, d), exist_ok=True)
    _chown_tree(os.path.join(dc.workdir, "home", USER), owner)
    t_fill = time.monotonic() - t0
    # Warm Dovecot: the first listing builds its index and header cache; a
    # second one makes the cache decisions permanent.  Both sides are timed warm.
    for _ in range(3):
        got, _ = raw_imap.listing(dc.host, dc.imaps_port, dc.ca_file, USER, PASSWORD, FOLDER)
    meta = dc.messages(USER, FOLDER)
    if got != n or len(meta) != n:
        raise SystemExit("benchlib: the folder lists %d/%d messages, expected %d" % (got, len(meta), n))
    server_size = sum(m["size"] for m in meta)
    print("DC_PID=%d" % dc.pid)
    print("DC_HOST=%s" % dc.host)
    print("DC_IMAPS_PORT=%d" % dc.imaps_port)
    print("DC_CA=%s" % dc.ca_file)
    print("DC_LOG=%s" % dc.log_path)
    print("DC_USER=%s" % USER)
    print("DC_PASSWORD=%s" % PASSWORD)
    print("BENCH_FOLDER=%s" % FOLDER)
    print("LOCAL_MAILDIR=%s" % os.path.join(local, "cur"))
    print("MAILBOX_BYTES=%d" % server_size)
    print("MAILBOX_FILE_BYTES=%d" % size)
    print("FILL_SECONDS=%.1f" % t_fill)
    # Dovecot stays up (its own session); 'stop' ends it by pid.


def cmd_stop(workdir):
    try:
        with open(_state_path(workdir)) as f:
            st = json.load(f)
    except OSError:
        return
    if st.get("pid"):
        dovecot.stop_pid(st["pid"], timeout=10.0, group=True)
    if st.get("base_dir"):
        import shutil
        shutil.rmtree(os.path.dirname(st["base_dir"]), ignore_errors=True)
    os.unlink(_state_path(workdir))


def _dc_for(workdir):
    dc = dovecot.Dovecot(os.path.join(os.path.abspath(workdir), "dovecot"))
    return dc


def cmd_log_offset(workdir):
    print(_dc_for(workdir).log_offset())


def cmd_out_bytes(workdir, since, wait=5.0):
    dc = _dc_for(workdir)
    # The logout line is written when the session ends: give it a moment.
    deadline = time.monotonic() + wait
    sessions = dc.sessions(USER, since=since)
    while not sessions and time.monotonic() < deadline:
        time.sleep(0.1)
        sessions = dc.sessions(USER, since=since)
    print("%d %d" % (sum(s["out"] for s in sessions), len(sessions)))


def cmd_yardstick(workdir, expect=None):
    with open(_state_path(workdir)) as f:
        st = json.load(f)
    fetches, _ = raw_imap.listing(st["host"], st["imaps_port"], st["ca_file"], USER, PASSWORD, FOLDER)
    if expect is not None and fetches != expect:
        raise SystemExit("yardstick: %d FETCH responses, expected %d" % (fetches, expect))


def cmd_summary(jsondir):
    """Print mean ± stddev of each hyperfine result and the ratios."""
    res = {}
    for name in sorted(os.listdir(jsondir)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(jsondir, name)) as f:
            r = json.load(f)["results"][0]
        res[name[:-5]] = r
    labels = {
        "yardstick-openssl": "yardstick: openssl s_client, LOGIN+EXAMINE+UID FETCH 1:*+LOGOUT",
        "yardstick-python": "yardstick: Python ssl socket, same 4 commands, each awaited",
        "mailfs-cold": "mailfs cold ls -l (new cache, mounted just before)",
        "mailfs-cold-mount": "mailfs mount + cold ls -l (new cache), as a whole",
        "mailfs-warm": "mailfs warm ls -l (folder already listed)",
        "local-maildir": "ls -l of a local Maildir/cur with the same messages",
    }
    print("%-70s %10s %9s %5s" % ("measurement", "mean", "stddev", "runs"))
    for key in ("yardstick-openssl", "yardstick-python", "mailfs-cold", "mailfs-cold-mount",
                "mailfs-warm", "local-maildir"):
        if key in res:
            r = res[key]
            print("%-70s %8.1fms %7.1fms %5d" % (labels[key], r["mean"] * 1000,
                                                (r.get("stddev") or 0) * 1000, len(r["times"])))
    def ratio(a, b, what, target):
        if a in res and b in res:
            x = res[a]["mean"] / res[b]["mean"]
            verdict = "meets" if x <= target else "MISSES"
            print("ratio %-48s %6.2fx  (target <= %.1fx: %s)" % (what, x, target, verdict))
    print()
    ratio("mailfs-cold", "yardstick-openssl", "cold ls -l / openssl yardstick", 1.5)
    ratio("mailfs-cold-mount", "yardstick-openssl", "(mount + cold ls -l) / openssl yardstick", 1.5)
    ratio("mailfs-warm", "local-maildir", "warm ls -l / local Maildir ls -l", 2.0)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "setup":
        cmd_setup(args[0], int(args[1]), int(args[2]))
    elif cmd == "stop":
        cmd_stop(args[0])
    elif cmd == "log-offset":
        cmd_log_offset(args[0])
    elif cmd == "out-bytes":
        cmd_out_bytes(args[0], int(args[1]))
    elif cmd == "yardstick":
        cmd_yardstick(args[0], int(args[1]) if len(args) > 1 else None)
    elif cmd == "summary":
        cmd_summary(args[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

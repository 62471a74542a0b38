#!/usr/bin/env python3
"""make demo / make demo-stop: a private Dovecot with sample mail, mounted
with mailfs at ./demo/mnt, and a short tour.

    python3 tests/demo.py start    # (MAILFS_BIN=build/mailfs) start and tour
    python3 tests/demo.py stop     # unmount, stop Dovecot; ./demo may then be removed

Everything lives in ./demo (relative to the repository): server/ (Dovecot's
configuration, TLS files, mail), cache/, password (mode 0600), mailfs.log,
dovecot.pid and state.json.  Dovecot keeps running after this script ends;
`stop` ends it by the pid recorded here.  Run as root (Dovecot is started
the way tests/dovecot.py starts it).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import dovecot as dovecot_mod  # noqa: E402
import sample_mail  # noqa: E402
from sysutil import is_mounted, pid_alive, pids_with_cmdline, stop_pid  # noqa: E402

DEMO = os.path.join(REPO, "demo")
MNT = os.path.join(DEMO, "mnt")
STATE = os.path.join(DEMO, "state.json")
PIDFILE = os.path.join(DEMO, "dovecot.pid")
USER = "alice"
PASSWORD = "demo-password"

FOLDERS = [  # (folder, count, seed, tricky)
    ("INBOX", 150, 101, True),
    ("Archive", 60, 102, False),
    ("Archive/2023", 40, 103, False),
    ("Lists/debian", 100, 104, False),
    ("Entwürfe", 8, 105, False),
]


def say(msg=""):
    print(msg, flush=True)


def mailfs_bin():
    return os.path.abspath(os.environ.get("MAILFS_BIN") or os.path.join(REPO, "build", "mailfs"))


def corpus_dir():
    for c in [os.environ.get("CORPUS_DIR"), os.path.join(REPO, "..", "shared", "corpus")]:
        if c:
            for d in (os.path.join(c, "messages"), c):
                if os.path.isdir(d) and any(n.endswith(".eml") for n in os.listdir(d)):
                    return d
    return None


def read_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def stop():
    state = read_state()
    stopped = False
    if is_mounted(MNT):
        daemons = pids_with_cmdline(state.get("mailfs_args", [])) if state.get("mailfs_args") else []
        r = subprocess.run(["fusermount3", "-u", MNT], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-uz", MNT], capture_output=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (is_mounted(MNT) or any(
                pid_alive(p) for p in daemons)):
            time.sleep(0.05)
        say("unmounted %s" % os.path.relpath(MNT))
        stopped = True
    pid = None
    try:
        with open(PIDFILE) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pass
    if pid:
        conf = state.get("dovecot_conf", os.path.join(DEMO, "server", "dovecot.conf"))
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            cmd = b""
        if b"dovecot" in cmd and conf.encode() in cmd:   # our Dovecot, not a reused pid
            stop_pid(pid)
            say("stopped Dovecot (pid %d)" % pid)
            stopped = True
        os.unlink(PIDFILE)
    if state.get("base_dir"):
        shutil.rmtree(os.path.dirname(state["base_dir"]), ignore_errors=True)
    if not stopped:
        say("no demo was running")
    else:
        say("the demo is stopped; `rm -rf demo` removes what it left")


def run_shown(cmd):
    """Print a shell command and its real output (from the repository)."""
    say("$ " + cmd)
    r = subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, timeout=120)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    if out:
        say(out.rstrip("\n"))
    say()
    return r


def start():
    binary = mailfs_bin()
    if not os.access(binary, os.X_OK):
        sys.exit("demo: %s is missing: run make first" % binary)
    if os.geteuid() != 0:
        sys.exit("demo: run as root (the private Dovecot needs it)")
    if os.path.exists(PIDFILE) or is_mounted(MNT):
        say("a demo is running: stopping it first")
        stop()
    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(MNT)

    say("Starting a private Dovecot in demo/server ...")
    dc = dovecot_mod.Dovecot(os.path.join(DEMO, "server"), users={USER: PASSWORD})
    dc.start()
    with open(PIDFILE, "w") as f:
        f.write("%d\n" % dc.pid)
    ok = False
    try:
        total = 0
        for folder, count, seed, tricky in FOLDERS:
            if folder != "INBOX":
                dc.create_folder(USER, folder)
            items = [(raw, "\\Seen" if i % 3 == 0 else "",
                      sample_mail.sample_internaldate(i, seed))
                     for i, raw in enumerate(sample_mail.sample_messages(count, seed, tricky=tricky))]
            dc.append_many(USER, folder, items)
            total += count
        cdir = corpus_dir()
        if cdir:
            dc.create_folder(USER, "Corpus")
            names = sorted(n for n in os.listdir(cdir) if n.endswith(".eml"))
            items = []
            for i, n in enumerate(names):
                with open(os.path.join(cdir, n), "rb") as f:
                    items.append((f.read(), "", sample_mail.sample_internaldate(i, "corpus")))
            total += sum(1 for u in dc.append_many(USER, "Corpus", items) if u is not None)
        say("%d messages in %d folders; IMAPS on 127.0.0.1:%d, IMAP (STARTTLS) on :%d" % (
            total, len(FOLDERS) + (1 if cdir else 0), dc.imaps_port, dc.imap_port))

        pwfile = os.path.join(DEMO, "password")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(PASSWORD + "\n")
        url = "imaps://%s@%s:%d/" % (USER, dc.host, dc.imaps_port)
        args = [binary, "-o", ",".join([
            "password_file=" + pwfile, "cafile=" + dc.ca_file,
            "cache_dir=" + os.path.join(DEMO, "cache"),
            "logfile=" + os.path.join(DEMO, "mailfs.log")]), url, MNT]
        state = dc.state()
        state.update({"dovecot_conf": dc.conf_path, "mailfs_args": args, "url": url})
        with open(STATE, "w") as f:
            json.dump(state, f, indent=2)

        shown = " ".join(shlex.quote(os.path.relpath(a, REPO) if a.startswith(REPO) else a)
                         for a in args[1:])
        say("Mounting: mailfs %s" % shown)
        r = subprocess.run(args, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode != 0 or not is_mounted(MNT):
            say((r.stdout + r.stderr).decode("utf-8", "replace").strip())
            raise SystemExit("demo: mailfs did not mount (exit %d); see demo/mailfs.log" %
                             r.returncode)
        ok = True
    finally:
        if not ok:
            stop()

    say()
    say("--- a short tour " + "-" * 50)
    say()
    run_shown("ls demo/mnt")
    run_shown("ls demo/mnt/INBOX | head")
    run_shown("ls -l demo/mnt/Archive | head -5")
    run_shown("grep -l -i invoice demo/mnt/INBOX/* | head")
    first = sorted(os.listdir(os.path.join(MNT, "INBOX")))
    if first:
        path = shlex.quote("demo/mnt/INBOX/" + first[0])
        run_shown("getfattr -d -e text %s" % path)
        run_shown("getfattr -n user.mail.subject --only-values %s; echo" % path)
    run_shown("getfattr -n user.mailfs.stats demo/mnt")
    # The end of the tour: the whole account made available offline.
    prog = os.path.relpath(binary, REPO) if binary.startswith(REPO + os.sep) else binary
    run_shown("%s prefetch demo/mnt" % shlex.quote(prog))
    run_shown("getfattr -n user.mailfs.cache demo/mnt/Archive")
    say("-" * 67)
    say("The mount stays up: try `ls -lR demo/mnt | less`, `du -sh demo/mnt`, `cat ...`.")
    say("Log: demo/mailfs.log.  To unmount and stop the server: make demo-stop")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    if cmd == "start":
        start()
    elif cmd == "stop":
        stop()
    else:
        sys.exit("usage: demo.py start|stop")


if __name__ == "__main__":
    main()

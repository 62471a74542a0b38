#!/bin/bash
# pop3-bench.sh: how long reading a whole POP3 inbox through mailfs takes,
# against mpop downloading the same inbox without deleting anything.
#
# In one run, on a private Dovecot on loopback (tests/dovecot.py) whose INBOX
# holds N sample messages (tests/sample_mail.py, written into the Maildir
# directly), hyperfine measures over POP3S:
#   (a) mailfs: tar cf - MOUNT/INBOX | cat >/dev/null on a fresh mount with a
#       new cache (mounted just before each run, outside the timing); the
#       listing (UIDL, LIST, TOP) and every RETR happen inside the timing.
#       (GNU tar reads no file data when it writes to /dev/null: hence cat.)
#   (a2) the same with the mount itself inside the timing
#   (b) mpop --keep: all N messages into a new Maildir (its UIDL file removed
#       before each run, so that it downloads everything; keep: no DELE)
# and checks that both really got all N messages, and how many bytes each
# pulled from the server (Dovecot's out= per session).
#
# Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (2000),
# BENCH_RUNS (5), BENCH_SEED (1), BENCH_DIR (default: a new /tmp/mailfs-pop3-bench.*),
# BENCH_KEEP=1 (keep BENCH_DIR). Runs as root (the private Dovecot runs as the
# dovecot user). Needs hyperfine and mpop (installed with apt-get when missing).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# ---------------------------------------------------------------- internal subcommands
# hyperfine's --prepare and commands call back into this script with the state in $WORK.
# shellcheck source=bench/mountlib.sh
. "$HERE/mountlib.sh"

do_mount() { mailfs_mount pop3-bench "pop3s://$DC_USER@$DC_HOST:$DC_POP3S_PORT/" "cafile=$DC_CA,cache_dir=$CACHE,refresh=3600,cache_size=4G"; }

wipe_cache() { rm -rf "$CACHE"; }

mpop_prepare() { # a new, empty Maildir and no memory of earlier downloads
  rm -rf "$MPOP_MAILDIR" "$MPOP_UIDLS"
  mkdir -p "$MPOP_MAILDIR/new" "$MPOP_MAILDIR/cur" "$MPOP_MAILDIR/tmp"
}

mailfs_tar() { tar cf - -C "$MNT" INBOX | cat >/dev/null; }

case ${1:-} in
  __cold-prepare) load_env "$2"; do_unmount; wipe_cache; do_mount; exit ;;
  __unmount-wipe) load_env "$2"; do_unmount; wipe_cache; exit ;;
  __mount-tar) load_env "$2"; do_mount; mailfs_tar; exit ;;
  __tar) load_env "$2"; mailfs_tar; exit ;;
  __mpop-prepare) load_env "$2"; mpop_prepare; exit ;;
esac

# ---------------------------------------------------------------- the run
N=${BENCH_MESSAGES:-2000}
RUNS=${BENCH_RUNS:-5}
SEED=${BENCH_SEED:-1}
need_pkg hyperfine hyperfine
need_pkg mpop mpop
for tool in fusermount3 mountpoint getfattr tar; do
  command -v "$tool" >/dev/null || { echo "pop3-bench: $tool is missing (run packaging/deps.sh)" >&2; exit 1; }
done
bench_start pop3-bench
JSON=$WORK/results
mkdir -p "$JSON"

# The server side, in Python: tests/dovecot.py and tests/sample_mail.py.
cat >"$WORK/pop3bench.py" <<'EOF'
"""pop3-bench.sh's helper: setup WORK N SEED | stop WORK | log-offset WORK |
out-bytes WORK OFFSET (POP3 sessions ended since OFFSET: out= bytes, count)."""
import json, os, poplib, pwd, ssl, sys, time
sys.path.insert(0, os.environ["MAILFS_TESTS"])
import dovecot, sample_mail

USER, PASSWORD = "alice", "secret"

def state_path(work):
    return os.path.join(work, "dovecot-state.json")

def dc_for(work):
    return dovecot.Dovecot(os.path.join(work, "dovecot"))

def setup(work, n, seed):
    t0 = time.monotonic()
    dc = dovecot.Dovecot(os.path.join(work, "dovecot"), users={USER: PASSWORD})
    dc.start()
    with open(state_path(work), "w") as f:
        json.dump(dc.state(), f)
    dc.messages(USER, "INBOX")      # Dovecot creates the INBOX Maildir
    home = os.path.join(dc.workdir, "home", USER, "Maildir")
    cur = os.path.join(home, "cur")
    if not os.path.isdir(cur):
        raise SystemExit("pop3bench: no Maildir at %s" % home)
    owner = pwd.getpwnam("dovecot")
    total = 0
    for i, raw in enumerate(sample_mail.sample_messages(n, seed)):
        # Named as Dovecot names its own files (S= and W= sizes: CRLF already).
        name = "%d.M%dP%d.bench,S=%d,W=%d:2," % (1700000000 + i, i, os.getpid(), len(raw), len(raw))
        path = os.path.join(cur, name)
        with open(path, "wb") as f:
            f.write(raw)
        when = sample_mail.sample_internaldate(i, seed).timestamp()
        os.utime(path, (when, when))
        os.chown(path, owner.pw_uid, owner.pw_gid)
        total += len(raw)
    fill = time.monotonic() - t0
    # Let Dovecot index the maildrop once (UIDs, sizes), and check it.
    ctx = ssl.create_default_context(cafile=dc.ca_file)
    p = poplib.POP3_SSL(dc.host, dc.pop3s_port, context=ctx, timeout=120)
    p.user(USER)
    p.pass_(PASSWORD)
    count, size = p.stat()
    uidls = p.uidl()[1]
    p.quit()
    if count != n or len(uidls) != n:
        raise SystemExit("pop3bench: STAT says %d messages, UIDL lists %d, expected %d"
                         % (count, len(uidls), n))
    print("DC_PID=%d" % dc.pid)
    print("DC_HOST=%s" % dc.host)
    print("DC_POP3S_PORT=%d" % dc.pop3s_port)
    print("DC_CA=%s" % dc.ca_file)
    print("DC_USER=%s" % USER)
    print("DC_PASSWORD=%s" % PASSWORD)
    print("MAILBOX_BYTES=%d" % size)
    print("MAILBOX_FILE_BYTES=%d" % total)
    print("FILL_SECONDS=%.1f" % fill)

def stop(work):
    try:
        with open(state_path(work)) as f:
            st = json.load(f)
    except OSError:
        return
    if st.get("pid"):
        dovecot.stop_pid(st["pid"], timeout=10.0, group=True)
    if st.get("base_dir"):
        import shutil
        shutil.rmtree(os.path.dirname(st["base_dir"]), ignore_errors=True)
    os.unlink(state_path(work))

def out_bytes(work, since):
    dc = dc_for(work)
    deadline = time.monotonic() + 5
    while True:
        s = [x for x in dc.sessions(USER, since=since) if x["proto"] == "pop3"]
        if s or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    print("%d %d %d" % (sum(x["out"] for x in s), len(s), sum(x.get("retr", 0) for x in s)))

cmd, work = sys.argv[1], os.path.abspath(sys.argv[2])
if cmd == "setup":
    setup(work, int(sys.argv[3]), sys.argv[4])
elif cmd == "stop":
    stop(work)
elif cmd == "log-offset":
    print(dc_for(work).log_offset())
elif cmd == "out-bytes":
    out_bytes(work, int(sys.argv[3]))
else:
    raise SystemExit("pop3bench: unknown command " + cmd)
EOF
export MAILFS_TESTS=$ROOT/tests
bench_helper() { "$PY" "$WORK/pop3bench.py" "$@"; }

bench_cleanup_on_exit pop3-bench

section() { printf '\n== %s\n' "$*"; }

section "setup: Dovecot with $N messages in INBOX (seed $SEED)"
bench_helper setup "$WORK" "$N" "$SEED" >"$WORK/env.server"
MPOP_MAILDIR=$WORK/mpop-maildir
MPOP_UIDLS=$WORK/mpop-uidls
MPOP_RC=$WORK/mpoprc
bench_env "MPOP_MAILDIR=$MPOP_MAILDIR" "MPOP_UIDLS=$MPOP_UIDLS" "MPOP_RC=$MPOP_RC"
echo "mailbox: $N messages, $MAILBOX_BYTES bytes (STAT); filled in ${FILL_SECONDS}s"
echo "Dovecot $(dovecot --version | cut -d' ' -f1) on $DC_HOST:$DC_POP3S_PORT (POP3S), work dir $WORK"
echo "machine: $(nproc) cores, $(uname -r), $(hyperfine --version), $(mpop --version | head -1)"

# mpop: implicit TLS with the test CA, keep everything, no Received: header
# added, and no memory of earlier runs (the UIDL file is removed before each).
cat >"$MPOP_RC" <<EOF
defaults
tls on
tls_starttls off
tls_trust_file $DC_CA
auth plain
keep on
received_header off
pipelining auto

account bench
host $DC_HOST
port $DC_POP3S_PORT
user $DC_USER
passwordeval echo $DC_PASSWORD
delivery maildir $MPOP_MAILDIR
uidls_file $MPOP_UIDLS
EOF
chmod 600 "$MPOP_RC"
MPOP=(mpop --keep -C "$MPOP_RC" bench)

SELF=$HERE/pop3-bench.sh
HF=(hyperfine --style basic --runs "$RUNS")

section "check: mpop downloads all $N messages and deletes none"
mpop_prepare
off=$(bench_helper log-offset "$WORK")
"${MPOP[@]}" >"$WORK/mpop.out" 2>&1 || { cat "$WORK/mpop.out" >&2; exit 1; }
tail -2 "$WORK/mpop.out"
read -r mp_out mp_sessions mp_retr < <(bench_helper out-bytes "$WORK" "$off")
got=$(find "$MPOP_MAILDIR/new" "$MPOP_MAILDIR/cur" -type f | wc -l)
echo "mpop delivered $got messages; Dovecot: $mp_sessions session(s), retr=$mp_retr, out=$mp_out bytes"
[ "$got" = "$N" ] || { echo "pop3-bench: mpop delivered $got messages, expected $N" >&2; exit 1; }

section "check: mailfs lists and reads all $N messages"
wipe_cache
off=$(bench_helper log-offset "$WORK")
do_mount
count=$(find "$MNT/INBOX" -maxdepth 1 -type f | wc -l)
mailfs_tar
stats=$(getfattr -n user.mailfs.stats --only-values "$MNT" 2>/dev/null || echo '{}')
do_unmount
read -r mf_out mf_sessions mf_retr < <(bench_helper out-bytes "$WORK" "$off")
echo "mailfs lists $count files; stats: $stats"
echo "mailfs: Dovecot $mf_sessions session(s), retr=$mf_retr, out=$mf_out bytes (mpop: $mp_out)"
[ "$count" = "$N" ] || { echo "pop3-bench: mailfs lists $count files, expected $N" >&2; exit 1; }
fetched=$(printf '%s' "$stats" | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("bodies_fetched", -1))')
[ "$fetched" = "$N" ] || { echo "pop3-bench: mailfs fetched $fetched bodies, expected $N" >&2; exit 1; }
if grep -E 'pop3\(alice\).*del=[1-9]' "$WORK/dovecot/dovecot.log"; then
  echo "pop3-bench: a session deleted messages" >&2; exit 1
fi

section "(b) mpop --keep: all $N messages into a new Maildir"
"${HF[@]}" -N --warmup 1 --export-json "$JSON/mpop.json" \
  --prepare "$SELF __mpop-prepare $WORK" -n mpop "${MPOP[*]}"

section "(a) mailfs: tar cf - MOUNT/INBOX | cat >/dev/null on a fresh mount, new cache"
"${HF[@]}" --warmup 1 --export-json "$JSON/mailfs-tar.json" \
  --prepare "$SELF __cold-prepare $WORK" -n mailfs-tar "$SELF __tar $WORK"

section "(a2) mailfs: mount + tar, as a whole, new cache"
"${HF[@]}" --export-json "$JSON/mailfs-mount-tar.json" \
  --prepare "$SELF __unmount-wipe $WORK" -n mailfs-mount-tar "$SELF __mount-tar $WORK"
do_unmount

section "summary ($N messages, $MAILBOX_BYTES bytes)"
"$PY" - "$JSON" "$N" <<'EOF'
import json, os, sys
res = {}
for name in os.listdir(sys.argv[1]):
    if name.endswith(".json"):
        with open(os.path.join(sys.argv[1], name)) as f:
            res[name[:-5]] = json.load(f)["results"][0]
labels = [("mpop", "mpop --keep, all messages into a new Maildir"),
          ("mailfs-tar", "mailfs: tar | cat of INBOX, fresh mount, new cache"),
          ("mailfs-mount-tar", "mailfs: mount + tar | cat, new cache")]
print("%-55s %10s %9s %5s" % ("measurement", "mean", "stddev", "runs"))
for key, label in labels:
    if key in res:
        r = res[key]
        print("%-55s %8.0fms %7.0fms %5d" % (label, r["mean"] * 1000, (r.get("stddev") or 0) * 1000,
                                             len(r["times"])))
for key in ("mailfs-tar", "mailfs-mount-tar"):
    if key in res and "mpop" in res:
        print("ratio %-20s / mpop: %.2fx" % (key, res[key]["mean"] / res["mpop"]["mean"]))
EOF

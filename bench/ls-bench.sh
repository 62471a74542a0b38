#!/bin/bash
# ls-bench.sh: how fast mailfs lists a 10,000-message folder, against yardsticks.
#
# In one run, on a private Dovecot on loopback (tests/dovecot.py) holding folder
# "Big" with N sample messages (tests/sample_mail.py), hyperfine measures:
#   (a) mailfs cold: ls -l MOUNT/Big on a new cache (mounted just before each run),
#       and mount + cold ls -l as a whole
#   (b) mailfs warm: ls -l MOUNT/Big again, the folder already listed
#   (c) the yardstick: a raw client, openssl s_client sending LOGIN, EXAMINE, one
#       UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS
#       (DATE FROM SUBJECT MESSAGE-ID)]) and LOGOUT; and the same from a Python
#       ssl socket that awaits each tagged reply
#   (d) ls -l of a local Maildir holding the same messages (warm)
# and the bytes a cold listing pulled from the server (the stats xattr's
# bytes_received and Dovecot's out=) against the mailbox size.
#
# Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (10000),
# BENCH_RUNS (10), BENCH_SEED (1), BENCH_DIR (default: a new /tmp/mailfs-ls-bench.*),
# BENCH_KEEP=1 (keep BENCH_DIR), BENCH_SKIP_MAILFS=1 (only the server side).
# Runs as root (the private Dovecot runs as the dovecot user). Needs hyperfine.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# ---------------------------------------------------------------- internal subcommands
# hyperfine's --prepare and commands call back into this script with the state in $WORK.
# shellcheck source=bench/mountlib.sh
. "$HERE/mountlib.sh"

do_mount() { mailfs_mount ls-bench "imaps://$DC_USER@$DC_HOST:$DC_IMAPS_PORT/" "cafile=$DC_CA,cache_dir=$CACHE,refresh=3600"; }

wipe_cache() { rm -rf "$CACHE"; }

yardstick_openssl() {   # the raw client: commands pipelined; s_client -quiet ignores
  # stdin's EOF and ends when the server closes after LOGOUT, i.e. after every reply.
  local out=$WORK/yardstick.out
  printf 'a LOGIN %s %s\r\nb EXAMINE %s\r\nc UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)])\r\nd LOGOUT\r\n' \
    "$DC_USER" "$DC_PASSWORD" "$BENCH_FOLDER" |
    openssl s_client -quiet -verify_return_error -CAfile "$DC_CA" \
      -connect "$DC_HOST:$DC_IMAPS_PORT" >"$out" 2>/dev/null
  if ! grep -q '^c OK' "$out" || ! grep -q '^d OK' "$out"; then
    echo "ls-bench: the yardstick did not get its tagged replies" >&2; return 1
  fi
}

case ${1:-} in
  __cold-prepare) load_env "$2"; do_unmount; wipe_cache; do_mount; exit ;;
  __unmount-wipe) load_env "$2"; do_unmount; wipe_cache; exit ;;
  __mount) load_env "$2"; do_mount; exit ;;
  __yardstick-openssl) load_env "$2"; yardstick_openssl; exit ;;
esac

# ---------------------------------------------------------------- the run
N=${BENCH_MESSAGES:-10000}
RUNS=${BENCH_RUNS:-10}
SEED=${BENCH_SEED:-1}
need_pkg hyperfine hyperfine
for tool in openssl fusermount3 mountpoint getfattr; do
  command -v "$tool" >/dev/null || { echo "ls-bench: $tool is missing (run packaging/deps.sh)" >&2; exit 1; }
done
bench_start ls-bench
JSON=$WORK/results
mkdir -p "$JSON"

bench_cleanup_on_exit ls-bench

section() { printf '\n== %s\n' "$*"; }

section "setup: Dovecot with $N messages in folder Big (seed $SEED)"
bench_helper setup "$WORK" "$N" "$SEED" >"$WORK/env.server"
bench_env
echo "mailbox: $N messages, $MAILBOX_BYTES bytes (sum of RFC822.SIZE); filled in ${FILL_SECONDS}s"
echo "Dovecot $(dovecot --version | cut -d' ' -f1) on $DC_HOST:$DC_IMAPS_PORT (TLS), work dir $WORK"
echo "machine: $(nproc) cores, $(uname -r), $(hyperfine --version)"

SELF=$HERE/ls-bench.sh
# Commands that need no shell run with -N (no shell start-up to subtract); output goes to /dev/null.
HF=(hyperfine --style basic --runs "$RUNS")

section "(c) yardstick: openssl s_client, LOGIN + EXAMINE + UID FETCH 1:* + LOGOUT"
"${HF[@]}" --warmup 2 --export-json "$JSON/yardstick-openssl.json" \
  -n yardstick-openssl "$SELF __yardstick-openssl $WORK"
off=$("$PY" "$HERE/benchlib.py" log-offset "$WORK")
"$SELF" __yardstick-openssl "$WORK"
read -r y_out y_sessions < <("$PY" "$HERE/benchlib.py" out-bytes "$WORK" "$off")
echo "yardstick output: $(wc -c <"$WORK/yardstick.out") bytes of IMAP; Dovecot out=$y_out ($y_sessions session)"

section "(c2) yardstick: Python ssl socket, each command awaited"
"${HF[@]}" --warmup 2 --export-json "$JSON/yardstick-python.json" \
  -n yardstick-python "$PY $HERE/raw_imap.py $DC_HOST $DC_IMAPS_PORT $DC_CA $DC_USER $DC_PASSWORD $BENCH_FOLDER $N"

section "(d) ls -l of a local Maildir with the same $N messages (warm)"
"${HF[@]}" -N --warmup 3 --export-json "$JSON/local-maildir.json" \
  -n local-maildir "ls -l $LOCAL_MAILDIR"

mailfs_note=
if [ "${BENCH_SKIP_MAILFS:-}" = 1 ]; then
  mailfs_note="skipped (BENCH_SKIP_MAILFS=1)"
elif [ ! -x "$MAILFS_BIN" ]; then
  mailfs_note="skipped: no executable $MAILFS_BIN (make first)"
elif ! { do_mount && ls -l "$MNT/$BENCH_FOLDER" >/dev/null; }; then
  mailfs_note="skipped: $MAILFS_BIN did not mount or list (log: $WORK/mailfs.log)"
  do_unmount || true
fi

if [ -z "$mailfs_note" ]; then
  count=$(find "$MNT/$BENCH_FOLDER" -maxdepth 1 -type f | wc -l)
  echo "mailfs lists $count files in $BENCH_FOLDER"
  [ "$count" = "$N" ] || echo "ls-bench: WARNING: expected $N files"
  do_unmount

  section "bytes: one cold listing, new cache"
  wipe_cache
  off=$("$PY" "$HERE/benchlib.py" log-offset "$WORK")
  do_mount
  ls -l "$MNT/$BENCH_FOLDER" >/dev/null
  stats=$(getfattr -n user.mailfs.stats --only-values "$MNT" 2>/dev/null || echo '{}')
  do_unmount
  read -r m_out m_sessions < <("$PY" "$HERE/benchlib.py" out-bytes "$WORK" "$off")
  m_recv=$(printf '%s' "$stats" | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("bytes_received", "?"))' 2>/dev/null || echo '?')
  echo "user.mailfs.stats after the cold listing: $stats"
  echo "mailfs bytes_received: $m_recv; Dovecot out= for its $m_sessions session(s): $m_out"
  echo "yardstick Dovecot out=: $y_out; mailbox size: $MAILBOX_BYTES"
  "$PY" - "$m_out" "$y_out" "$MAILBOX_BYTES" <<'EOF'
import sys
m, y, size = (int(x) for x in sys.argv[1:4])
print("cold listing pulled %.2f%% of the mailbox size (yardstick: %.2f%%); %.2fx the yardstick's bytes"
      % (100.0 * m / size, 100.0 * y / size, m / y if y else float("nan")))
EOF

  section "(a) mailfs cold: ls -l on a new cache, mounted just before each run"
  "${HF[@]}" -N --export-json "$JSON/mailfs-cold.json" \
    --prepare "$SELF __cold-prepare $WORK" \
    -n mailfs-cold "ls -l $MNT/$BENCH_FOLDER"

  section "(a2) mailfs mount + cold ls -l, as a whole (new cache each run)"
  "${HF[@]}" --export-json "$JSON/mailfs-cold-mount.json" \
    --prepare "$SELF __unmount-wipe $WORK" \
    -n mailfs-cold-mount "$SELF __mount $WORK && ls -l $MNT/$BENCH_FOLDER >/dev/null"

  section "(b) mailfs warm: ls -l of the already-listed folder"
  mountpoint -q "$MNT" || do_mount
  ls -l "$MNT/$BENCH_FOLDER" >/dev/null
  "${HF[@]}" -N --warmup 3 --export-json "$JSON/mailfs-warm.json" \
    -n mailfs-warm "ls -l $MNT/$BENCH_FOLDER"
  do_unmount
fi

section "summary ($N messages, $MAILBOX_BYTES bytes)"
"$PY" "$HERE/benchlib.py" summary "$JSON"
[ -z "$mailfs_note" ] || echo "mailfs: $mailfs_note"

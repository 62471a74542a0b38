#!/bin/bash
# idle-bench.sh: what an idle mount that watches 5 folders (IMAP IDLE,
# -o watch=5) costs over a while: its connections to the server and its CPU.
#
# On a private Dovecot on loopback (tests/dovecot.py, through benchlib.py)
# with INBOX, "Big" (BENCH_MESSAGES sample messages) and W1..W3, mailfs is
# mounted with -o watch=5,connections=6,refresh=3600, the five folders are
# listed once (so that they are in use and watched), and once the five IDLE
# connections are up nothing touches the mount for --seconds (default 600,
# the issue's 10 minutes; folders stay watched for 10 minutes after their
# last use). Reported: the mount's TCP connections to the server (ss, every
# 5 s: least and most), its CPU time (utime+stime of /proc/PID/stat) over
# the window, the bytes it sent and received meanwhile (user.mailfs.stats),
# and its threads.
#
#   bench/idle-bench.sh [--seconds N]
#
# Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (50),
# BENCH_DIR (default: a new /tmp/mailfs-idle-bench.*), BENCH_KEEP=1 (keep it).
# Runs as root (the private Dovecot runs as the dovecot user).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
# shellcheck source=bench/mountlib.sh
. "$HERE/mountlib.sh"

SECONDS_IDLE=600
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECONDS_IDLE=$2; shift 2 ;;
    --seconds=*) SECONDS_IDLE=${1#--seconds=}; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "idle-bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $SECONDS_IDLE in ''|*[!0-9]*) echo "idle-bench: --seconds takes a number" >&2; exit 2 ;; esac

N=${BENCH_MESSAGES:-50}
for tool in ss fusermount3 mountpoint getfattr; do
  command -v "$tool" >/dev/null || { echo "idle-bench: $tool is missing" >&2; exit 1; }
done
bench_start idle-bench

bench_cleanup_on_exit idle-bench

bench_helper setup "$WORK" "$N" 1 >"$WORK/env.server"
bench_env
FOLDERS=(INBOX "$BENCH_FOLDER" W1 W2 W3)
"$PY" - "$DC_HOST" "$DC_IMAPS_PORT" "$DC_CA" "$DC_USER" "$DC_PASSWORD" <<'EOF'
import imaplib, ssl, sys
host, port, ca, user, password = sys.argv[1:]
c = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca))
c.login(user, password)
for name in ("W1", "W2", "W3"):
    c.create(name)
c.logout()
EOF

mailfs_mount idle-bench "imaps://$DC_USER@$DC_HOST:$DC_IMAPS_PORT/" \
  "cafile=$DC_CA,cache_dir=$CACHE,refresh=3600,connections=6,watch=5"
PID=$(mailfs_pid)
for f in "${FOLDERS[@]}"; do ls -l "$MNT/$f" >/dev/null; done

conns() {   # the mount's established TCP connections to the server
  ss -Htnp state established "( dport = :$DC_IMAPS_PORT )" 2>/dev/null | grep -c "pid=$PID," || true
}
cpu_ticks() {   # utime + stime of the mount, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$PID/stat"
}
stat_field() {   # one counter of user.mailfs.stats
  getfattr --only-values -n user.mailfs.stats "$MNT" 2>/dev/null |
    "$PY" -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

# The five watches: five IDLE connections, plus the one that listed.
for _ in $(seq 300); do [ "$(conns)" -ge 5 ] && break; sleep 0.1; done
sleep 2   # let the re-check that follows each new watch end
HZ=$(getconf CLK_TCK)
c0=$(cpu_ticks); rx0=$(stat_field bytes_received); tx0=$(stat_field bytes_sent)
least=$(conns); most=$least
echo "idle-bench: $N messages in $BENCH_FOLDER; watching ${FOLDERS[*]}; idle for ${SECONDS_IDLE}s"
end=$((SECONDS + SECONDS_IDLE))
while [ "$SECONDS" -lt "$end" ]; do
  left=$((end - SECONDS)); sleep $((left < 5 ? left : 5))
  n=$(conns)
  [ "$n" -lt "$least" ] && least=$n
  [ "$n" -gt "$most" ] && most=$n
done
c1=$(cpu_ticks); rx1=$(stat_field bytes_received); tx1=$(stat_field bytes_sent)
threads=$(awk '/^Threads:/ { print $2 }' "/proc/$PID/status")
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status")
"$PY" - "$SECONDS_IDLE" "$((c1 - c0))" "$HZ" "$least" "$most" "$((rx1 - rx0))" "$((tx1 - tx0))" "$threads" "$rss" <<'EOF'
import sys
secs, ticks, hz, least, most, rx, tx, threads, rss = map(int, sys.argv[1:])
cpu = ticks / hz
print("idle %d s, 5 folders watched:" % secs)
print("  connections to the server: %d to %d (5 IDLE + the pool's spare)" % (least, most))
print("  CPU (utime+stime): %.2f s = %.3f%% of one core" % (cpu, 100.0 * cpu / max(secs, 1)))
print("  bytes received %d, sent %d (%.1f B/s)" % (rx, tx, (rx + tx) / max(secs, 1)))
print("  threads %d, RSS %d KiB" % (threads, rss))
EOF

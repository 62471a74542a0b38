#!/bin/bash
# wakeup-bench.sh: where a warm read of many small messages spends its time.
#
# Once every body is cached, a tar through mailfs costs one waited FUSE
# round trip per file (OPEN; RELEASE goes in the background), and a round
# trip is two wake-ups: the kernel wakes a mailfs thread with the request,
# and the reply wakes tar. This bench times a warm tar of one folder of
# small messages (same mount, bodies fetched first with `mailfs prefetch`)
#   - with mailfs and tar free to run on any CPU, as users run them;
#   - with both pinned to the same CPU (every wake-up stays on that CPU);
#   - with mailfs on one CPU and tar on another (every wake-up crosses);
#   - through floorfs (bench/floorfs.c, built here), the least a FUSE file
#     system can do for a read: names and attributes from memory, an open
#     answered at once with the body put in the page cache; free, and
#     pinned to one CPU with tar: what any file system that sees its opens
#     pays on this kernel, whatever its code;
# against tar of the same messages in a local Maildir, in alternating
# rounds, and reports medians, ratios to the local tar, and mailfs's CPU
# time per file (user and system, from /proc/PID/stat).
#
#   bench/wakeup-bench.sh [--runs N]
#
# Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (20000), CC (cc),
# BENCH_DIR (default: a new /tmp/mailfs-wakeup-bench.*), BENCH_KEEP=1.
# Runs as root (the private Dovecot runs as the dovecot user). Needs two
# CPUs at least, and taskset (util-linux).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
# shellcheck source=bench/mountlib.sh
. "$HERE/mountlib.sh"

RUNS=5
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#--runs=}; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "wakeup-bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $RUNS in ''|*[!0-9]*|0) echo "wakeup-bench: --runs takes a number above 0" >&2; exit 2 ;; esac
N=${BENCH_MESSAGES:-20000}
for tool in taskset tar fusermount3 mountpoint "${CC:-cc}" pkg-config; do
  command -v "$tool" >/dev/null || { echo "wakeup-bench: $tool is missing" >&2; exit 1; }
done
CPUS=$(nproc)
[ "$CPUS" -ge 2 ] || { echo "wakeup-bench: needs two CPUs at least (this machine has $CPUS)" >&2; exit 1; }
bench_start wakeup-bench

bench_cleanup_on_exit wakeup-bench
FLOOR_PID=
floor_down() {
  if [ -n "$FLOOR_PID" ]; then
    fusermount3 -u "$WORK/floor" 2>/dev/null || true
    wait "$FLOOR_PID" 2>/dev/null || true
    FLOOR_PID=
  fi
}
trap 'rc=$?; floor_down; (exit $rc); bench_cleanup' EXIT

bench_helper setup "$WORK" "$N" 7 >"$WORK/env.server"
bench_env
LOCAL_PARENT=$(dirname "$LOCAL_MAILDIR")   # .../maildir/FOLDER/cur -> .../maildir/FOLDER
LOCAL_PARENT=$(dirname "$LOCAL_PARENT")

mailfs_mount wakeup-bench "imaps://$DC_USER@$DC_HOST:$DC_IMAPS_PORT/" \
  "cafile=$DC_CA,cache_dir=$CACHE,refresh=3600"
PID=$(mailfs_pid)
"$MAILFS_BIN" prefetch "$MNT/$BENCH_FOLDER" >/dev/null
ALL_CPUS=0-$((CPUS - 1))

# floorfs, over the local Maildir's copy of the same messages (cur/).
# shellcheck disable=SC2046
"${CC:-cc}" -O2 $(pkg-config --cflags fuse3) -o "$WORK/floorfs" "$HERE/floorfs.c" $(pkg-config --libs fuse3)
mkdir -p "$WORK/floor"
"$WORK/floorfs" "$LOCAL_MAILDIR" "$WORK/floor" &
FLOOR_PID=$!
for _ in $(seq 100); do mountpoint -q "$WORK/floor" && break; sleep 0.1; done
mountpoint -q "$WORK/floor" || { echo "wakeup-bench: floorfs did not mount" >&2; exit 1; }
[ "$(ls "$WORK/floor/cur" | wc -l)" -eq "$N" ] || { echo "wakeup-bench: floorfs shows no $N files" >&2; exit 1; }

tar_of() {   # tar_of DIR [taskset CPU]: a tar of DIR/BENCH_FOLDER (floorfs: DIR/cur), to nowhere
  local dir=$1 what=$BENCH_FOLDER
  shift
  [ "$dir" = "$WORK/floor" ] && what=cur
  "$@" tar cf - -C "$dir" "$what" | cat >/dev/null
}
ticks() { awk '{ print $14, $15 }' "/proc/$PID/stat"; }

# Warm everything once: the local Maildir's pages and the mount's.
for _ in 1 2; do tar_of "$LOCAL_PARENT"; tar_of "$MNT"; tar_of "$WORK/floor"; done

OUT=$WORK/times
: >"$OUT"
for r in $(seq "$RUNS"); do
  for mode in local free same cross floor floor_same; do
    case $mode in
      free) taskset -a -p -c "$ALL_CPUS" "$PID" >/dev/null; pin=() ;;
      same) taskset -a -p -c 0 "$PID" >/dev/null; pin=(taskset -c 0) ;;
      cross) taskset -a -p -c 0 "$PID" >/dev/null; pin=(taskset -c 1) ;;
      floor) taskset -a -p -c "$ALL_CPUS" "$FLOOR_PID" >/dev/null; pin=() ;;
      floor_same) taskset -a -p -c 0 "$FLOOR_PID" >/dev/null; pin=(taskset -c 0) ;;
      local) pin=() ;;
    esac
    dir=$MNT
    [ "$mode" = local ] && dir=$LOCAL_PARENT
    case $mode in floor*) dir=$WORK/floor ;; esac
    read -r u0 s0 < <(ticks)
    t0=$(date +%s.%N)
    tar_of "$dir" "${pin[@]}"
    t1=$(date +%s.%N)
    read -r u1 s1 < <(ticks)
    echo "$mode $r $t0 $t1 $((u1 - u0)) $((s1 - s0))" >>"$OUT"
  done
done
taskset -a -p -c "$ALL_CPUS" "$PID" >/dev/null
floor_down

"$PY" - "$OUT" "$N" "$(getconf CLK_TCK)" "$RUNS" <<'EOF'
import statistics, sys
path, n, hz, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = {}
for line in open(path):
    mode, r, t0, t1, du, ds = line.split()
    rows.setdefault(mode, []).append((float(t1) - float(t0), int(du) / hz, int(ds) / hz))
local = statistics.median(t for t, _, _ in rows["local"])
print("wakeup-bench: warm tar of %d small messages, medians of %d alternating rounds" % (n, runs))
labels = {"local": "local Maildir", "free": "mailfs, mailfs and tar free (as users run them)",
          "same": "mailfs, both pinned to CPU 0", "cross": "mailfs on CPU 0, tar on CPU 1",
          "floor": "floorfs, floorfs and tar free", "floor_same": "floorfs, both pinned to CPU 0"}
modes = ("local", "free", "same", "cross", "floor", "floor_same")
for mode in modes:
    t = statistics.median(x[0] for x in rows[mode])
    line = "%-52s %6.2f s  %5.2fx local" % (labels[mode], t, t / local)
    if mode in ("free", "same", "cross"):
        u = statistics.median(x[1] for x in rows[mode]) / n * 1e6
        s = statistics.median(x[2] for x in rows[mode]) / n * 1e6
        line += "   mailfs CPU per file: user %.0f us, system %.0f us" % (u, s)
    print(line)
print("per round (s): " + "; ".join("%s %s" % (m, " ".join("%.2f" % x[0] for x in rows[m]))
                                    for m in modes))
EOF

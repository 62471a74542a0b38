# mountlib.sh: mounting and unmounting mailfs for the benchmarks, and
# installing the tools they compare with, sourced by bench/*-bench.sh. Uses WORK (state directory with env, mailfs.pid,
# mailfs.log), MNT, CACHE, MAILFS_BIN and the DC_* variables of WORK/env.

load_env() { WORK=$1; # shellcheck disable=SC1091
  . "$WORK/env"; }

mailfs_pid() { cat "$WORK/mailfs.pid" 2>/dev/null || true; }

do_unmount() {   # unmount, wait (bounded) for the mailfs we started to exit
  local pid
  if mountpoint -q "$MNT" 2>/dev/null; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
  fi
  pid=$(mailfs_pid)
  if [ -n "$pid" ]; then
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; fi
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$WORK/mailfs.pid"
  fi
}

# mailfs_mount NAME URL OPTIONS: mount in the foreground mode (-f),
# detached, and wait (at most 10 s) until it is up.
mailfs_mount() {
  local name=$1 url=$2 opts=$3 pid
  mkdir -p "$MNT" "$CACHE"
  MAILFS_PASSWORD=$DC_PASSWORD setsid "$MAILFS_BIN" -f -o "$opts" "$url" "$MNT" \
    </dev/null >>"$WORK/mailfs.log" 2>&1 &
  pid=$!
  echo "$pid" >"$WORK/mailfs.pid"
  for _ in $(seq 1000); do
    if mountpoint -q "$MNT"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name: mailfs exited before mounting; its log:" >&2
      tail -20 "$WORK/mailfs.log" >&2
      rm -f "$WORK/mailfs.pid"
      return 1
    fi
    sleep 0.01
  done
  echo "$name: mailfs did not mount within 10 s" >&2
  return 1
}

# bench_start NAME: checks that we run as root with an executable MAILFS_BIN
# (default build/mailfs under ROOT, made absolute), then makes the work
# directory WORK (BENCH_DIR, or a new /tmp/mailfs-NAME.*) and names MNT and
# CACHE in it.
bench_start() {
  MAILFS_BIN=${MAILFS_BIN:-$ROOT/build/mailfs}
  case $MAILFS_BIN in /*) ;; *) MAILFS_BIN=$ROOT/$MAILFS_BIN ;; esac
  [ "$(id -u)" = 0 ] || { echo "$1: run as root (the private Dovecot runs as the dovecot user)" >&2; exit 1; }
  [ -x "$MAILFS_BIN" ] || { echo "$1: no executable $MAILFS_BIN (run make first)" >&2; exit 1; }
  WORK=${BENCH_DIR:-$(mktemp -d "/tmp/mailfs-$1.XXXXXX")}
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
  chmod 755 "$WORK"
  MNT=$WORK/mnt
  CACHE=$WORK/cache
}

# bench_helper ARGS: the script that starts (setup WORK N SEED, printing its
# variables) and stops (stop WORK) the private Dovecot; a bench may define its own.
bench_helper() { "$PY" "$HERE/benchlib.py" "$@"; }

# bench_cleanup_on_exit NAME: at exit (and on ^C, TERM, HUP) unmount, stop
# the private Dovecot, and remove WORK unless BENCH_KEEP=1.
bench_cleanup_on_exit() {
  BENCH_NAME=$1
  trap bench_cleanup EXIT
  trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP
}
bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -f "$WORK/env" ]; then do_unmount || true; fi
  bench_helper stop "$WORK" || true
  if [ "${BENCH_KEEP:-}" = 1 ]; then echo "$BENCH_NAME: kept $WORK"; else rm -rf --one-file-system "$WORK"; fi
  exit "$rc"
}

# bench_env [NAME=VALUE...]: WORK/env from the helper's setup output
# (WORK/env.server), MNT, CACHE, MAILFS_BIN and the pairs given; then loads it.
bench_env() {
  local kv
  {
    cat "$WORK/env.server"
    printf 'MNT=%q\nCACHE=%q\nMAILFS_BIN=%q\n' "$MNT" "$CACHE" "$MAILFS_BIN"
    for kv in "$@"; do printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"; done
  } >"$WORK/env"
  load_env "$WORK"
}

# need_pkg COMMAND PACKAGE: install PACKAGE with apt-get when COMMAND is
# missing (an apt-get update only if the first try fails); else say so and exit.
need_pkg() {
  local me=${0##*/}
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "$me: $1 is missing; installing $2 (apt-get install $2)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2"; } ||
    { echo "$me: please install $2" >&2; exit 1; }
}

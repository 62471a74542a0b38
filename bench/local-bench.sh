#!/bin/bash
# local-bench.sh: once bodies are cached, does a mount read like a local disk?
#
# In one run, on a private Dovecot on loopback (tests/dovecot.py), bench/local_bench.py
# measures a warm tar of a folder (same mount, and after a remount), the same for a
# folder of many small messages, restic backup twice and after a remount, each against
# the same messages in a local Maildir; mailfs's peak RSS; and the FUSE requests per
# file of a warm tar (libfuse's -d trace). It prints the ratios mailfs / local.
#
# Environment: MAILFS_BIN (default build/mailfs), MAILFS_BEFORE (an older build, measured
# the same way in the same run), BENCH_MESSAGES (10000, every 20th
# with a 100 KB - 2 MB attachment), BENCH_MANY (50000 small ones), BENCH_TRACE (500),
# BENCH_RUNS (3), BENCH_DIR (default: a new /tmp/mailfs-lbench.*), BENCH_KEEP=1.
# Runs as root (a private Dovecot, FUSE mounts). Needs restic (Debian: restic).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
command -v restic >/dev/null || { echo "local-bench: needs restic (apt-get install restic)" >&2; exit 2; }
export MAILFS_BIN=${MAILFS_BIN:-$ROOT/build/mailfs}
exec "$PY" "$HERE/local_bench.py" "$@"

#!/bin/bash
# resync-bench.sh: what a re-check of a 50,000-message folder costs.
#
# In one run, on a private Dovecot on loopback (tests/dovecot.py) holding folder
# "Big" (BENCH_MESSAGES sample messages, Maildir files written directly),
# bench/resync_bench.py measures, for Dovecot's own capabilities (QRESYNC and
# CONDSTORE), a list with CONDSTORE only and one with neither:
#   - the no-change re-check: `stat MOUNT/Big` once refresh has expired (the
#     EXAMINE to its tagged answer and what follows, plus the store's work)
#     minus a cached `stat`, and the bytes it moved (user.mailfs.stats);
#   - the bytes of the re-check after another client (imaplib) set flags on
#     10 messages and expunged 5;
# and mbsync's no-change run of the same folder (isync, FSync no, pull only).
# It prints the figures and the ratios against the targets of issue 14.
#
# Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (50000),
# BENCH_RUNS (5), BENCH_REFRESH (2), BENCH_DIR (default: a new
# /tmp/mailfs-rbench.*, removed after), BENCH_KEEP=1 (keep it).
# Runs as root (a private Dovecot, FUSE mounts). Needs mbsync (Debian: isync).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
[ "$(id -u)" = 0 ] || { echo "resync-bench: run as root (the private Dovecot runs as the dovecot user)" >&2; exit 1; }
command -v mbsync >/dev/null || { echo "resync-bench: needs mbsync (apt-get install isync)" >&2; exit 2; }
command -v getfattr >/dev/null || { echo "resync-bench: needs getfattr (apt-get install attr)" >&2; exit 2; }
export MAILFS_BIN=${MAILFS_BIN:-$ROOT/build/mailfs}
case $MAILFS_BIN in /*) ;; *) MAILFS_BIN=$ROOT/$MAILFS_BIN ;; esac
exec "$PY" "$HERE/resync_bench.py" "$@"

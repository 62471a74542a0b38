#!/bin/bash
# million-bench.sh: can a folder of a million messages be listed, and at what cost?
#
# In one run, on a private Dovecot on loopback (tests/dovecot.py) holding folder "Big"
# with BENCH_MESSAGES small messages, bench/million_bench.py times a raw client's one
# UID FETCH 1:* of the listing (the yardstick), mailfs's cold listing (mount included,
# a new cache), ls -l again and after a remount, and reads mailfs's peak RSS and the
# cache's size. It prints the ratios mailfs / yardstick.
#
# Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (1000000),
# BENCH_SEED (1), BENCH_OPTIONS (more -o options for mailfs, comma-separated), BENCH_DIR (default: a new /tmp/mailfs-mbench.*), BENCH_KEEP=1.
# Runs as root (a private Dovecot, FUSE mounts). Needs about 5 GB of disk for
# a million messages (the server's Maildir and index, and the cache).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export MAILFS_BIN=${MAILFS_BIN:-$ROOT/build/mailfs}
exec "$PY" "$HERE/million_bench.py" "$@"

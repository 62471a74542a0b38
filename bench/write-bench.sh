#!/bin/bash
# write-bench.sh: time per message of writing through mailfs, against a raw client.
#
# In one run, on a private Dovecot on loopback (tests/dovecot.py) with sample
# messages (tests/sample_mail.py), bench/write_bench.py measures:
#   - mailfs: `mv MOUNT/MvA/* MOUNT/MvB/` of N messages (one shell command),
#     and `cp SRC/*.eml MOUNT/CpDst/` of N local files;
#   - the yardstick, a raw IMAP client on a Python ssl socket: one
#     `UID MOVE 1:N` and N pipelined APPENDs with LITERAL+;
# and prints the time per message and the ratios (medians over the rounds).
#
# Environment: MAILFS_BIN (default build/mailfs), BENCH_MESSAGES (1000),
# BENCH_ROUNDS (3), BENCH_SEED (1), BENCH_DIR (default: a new /tmp/mailfs-wbench.*),
# BENCH_KEEP=1 (keep BENCH_DIR), BENCH_OPTIONS (extra mailfs -o options),
# BENCH_FSYNC=never (Dovecot's mail_fsync; default Dovecot's own, an fsync per
# APPEND, which then dominates both sides), BENCH_JSON=FILE (the raw figures). Runs as root (a private Dovecot, a FUSE mount).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export MAILFS_BIN=${MAILFS_BIN:-$ROOT/build/mailfs}
exec "$PY" "$HERE/write_bench.py" "$@"

#!/bin/bash
# backup-bench.sh: reading a whole folder through mailfs (tar, cold cache, mount
# included) against mbsync + tar of the Maildir it made, one streamed
# UID FETCH 1:* BODY.PEEK[] (the floor), tar of the server's own Maildir, the
# same at a 20 ms round trip (--rtt MS), a 50,000-message folder, and POP3 against
# mpop --keep; each IMAP case also with -o ro (as a backup would mount: no
# open reaches mailfs there); mailfs's peak RSS. Issue 10; bench/backup_bench.py does the work
# (see its docstring, or --help).
#
#   bench/backup-bench.sh                  # 10k / 509 MB, 50k, POP3 2k; 3 runs each
#   bench/backup-bench.sh --scale 0.1      # a tenth of every count: about a minute
#   bench/backup-bench.sh --runs 5 --cases imap,pop3 --tls
#   bench/backup-bench.sh --cases delay --rtt 100   # a far server
#
# Environment: MAILFS_BIN (default build/mailfs), MAILFS_BEFORE (an older build, timed in
# the same rounds: the "before" figures), BENCH_SCALE, BENCH_RUNS,
# BENCH_DIR, BENCH_KEEP=1, BENCH_PREFETCH=0 (as --no-prefetch: no `mailfs prefetch` and
# cached-mount rows), DELAYPROXY (default ../shared/tools/delayproxy.py).
# Runs as root (the private Dovecot runs as the dovecot user; FUSE mounts).
# Needs mbsync (Debian: isync) and mpop, installed with apt-get when missing.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

[ "$(id -u)" = 0 ] || { echo "backup-bench: run as root (a private Dovecot, FUSE mounts)" >&2; exit 1; }
# shellcheck source=bench/mountlib.sh
. "$HERE/mountlib.sh"
need_pkg mbsync isync
need_pkg mpop mpop
for tool in dovecot fusermount3 tar openssl; do
  command -v "$tool" >/dev/null || { echo "backup-bench: $tool is missing (run packaging/deps.sh)" >&2; exit 1; }
done
export MAILFS_BIN=${MAILFS_BIN:-$ROOT/build/mailfs}
exec "$PY" "$HERE/backup_bench.py" "$@"

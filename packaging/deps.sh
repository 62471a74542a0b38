#!/bin/bash
# deps.sh: install what mailfs needs to build and test on Debian 12 (bookworm),
# and only what is missing. When everything is there it changes nothing, runs
# no apt-get update and no sudo, and takes well under a second.
#
#   packaging/deps.sh            install the missing packages
#   packaging/deps.sh --check    list what is missing and exit 1 if anything is
#   packaging/deps.sh --verify   also try each tool: pkg-config for the four
#                                libraries and cmocka, clang -fsanitize=fuzzer,
#                                pytest, dovecot, fusermount3
#
# Run it as root, or as a user who may use sudo.
set -euo pipefail

# What each package is for:
#   make, gcc, libc6-dev, build-essential   the build
#   pkg-config + the four -dev packages     fuse3, libcurl, gmime-3.0, sqlite3
#   fuse3                                   fusermount3 and /sbin/mount.fuse3
#   libcmocka-dev                           C unit tests
#   clang + libclang-rt-N-dev               libFuzzer (-fsanitize=fuzzer) and the
#                                           ASan/UBSan runtimes for clang; on bookworm
#                                           clang only *recommends* libclang-rt-14-dev,
#                                           and we install without recommends
#   dovecot-imapd, dovecot-pop3d            the private test server
#   python3, python3-pytest                 mount tests, demo, bench helpers
#   openssl, ca-certificates                the test CA; the system CAs
#   attr                                    getfattr/setfattr in tests and the demo
#   rsync, tar, procps (ps), mount (umount) shell tools the mount tests drive
#   mandoc                                  mandoc -Tlint on the man page (test_packaging.py)
#   notmuch                                 notmuch new on the mount (test_resync.py)
PACKAGES=(
  make gcc libc6-dev build-essential pkg-config
  libfuse3-dev fuse3 libcurl4-openssl-dev libgmime-3.0-dev libsqlite3-dev
  libcmocka-dev clang
  dovecot-imapd dovecot-pop3d
  python3 python3-pytest
  openssl ca-certificates attr rsync tar procps mount mandoc notmuch
)

log() { printf 'deps.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mode=install
case ${1:-} in
  '') ;;
  --check) mode=check ;;
  --verify) mode=verify ;;
  -h | --help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac

command -v dpkg-query >/dev/null 2>&1 || die "this script is for Debian and its derivatives (no dpkg-query found)"

# The libFuzzer/sanitizer runtime package that goes with the default clang:
# libclang-rt-14-dev on bookworm. Taken from the installed clang when there is
# one, else from apt's idea of the clang package (after an update), else 14.
clang_runtime_package() {
  local major=
  if command -v clang >/dev/null 2>&1; then
    major=$(clang -dumpversion 2>/dev/null | cut -d. -f1)
  elif command -v apt-cache >/dev/null 2>&1; then
    major=$(apt-cache depends clang 2>/dev/null | sed -n 's/^ *Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -n1)
  fi
  case $major in '' | *[!0-9]*) major=14 ;; esac
  echo "libclang-rt-$major-dev"
}

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

missing_packages() {
  local p
  for p in "${PACKAGES[@]}" "$(clang_runtime_package)"; do
    installed "$p" || printf '%s\n' "$p"
  done
}

verify() {
  local bad=0 tmp
  check() {   # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then printf '  ok    %s\n' "$what"; else printf '  FAIL  %s\n' "$what"; bad=1; fi
  }
  echo "deps.sh: verifying the toolchain"
  check "make" make --version
  check "cc" cc --version
  for lib in fuse3 libcurl gmime-3.0 sqlite3 cmocka; do
    check "pkg-config $lib ($(pkg-config --modversion "$lib" 2>/dev/null || echo missing))" pkg-config --exists "$lib"
  done
  tmp=$(mktemp -d)
  printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return n > 0 && d[0] == 1; }\n' >"$tmp/f.c"
  check "clang -fsanitize=fuzzer,address,undefined" clang -fsanitize=fuzzer,address,undefined -o "$tmp/f" "$tmp/f.c"
  check "libFuzzer binary runs" "$tmp/f" -runs=10
  printf 'int main(void) { return 0; }\n' >"$tmp/a.c"
  check "cc -fsanitize=address,undefined" cc -fsanitize=address,undefined -o "$tmp/a" "$tmp/a.c"
  rm -rf "$tmp"
  # Debian's python3, not whatever python3 comes first in PATH (pyenv, a venv).
  check "/usr/bin/python3 -m pytest" /usr/bin/python3 -m pytest --version
  check "dovecot ($(dovecot --version 2>/dev/null || echo missing))" dovecot --version
  check "dovecot imap and pop3 binaries" test -x /usr/lib/dovecot/imap -a -x /usr/lib/dovecot/pop3
  check "fusermount3" fusermount3 --version
  check "openssl" openssl version
  check "getfattr/setfattr" sh -c 'command -v getfattr && command -v setfattr'
  check "rsync, tar, ps, umount" sh -c 'command -v rsync && command -v tar && command -v ps && command -v umount'
  check "notmuch" notmuch --version
  if [ -e /dev/fuse ]; then printf '  ok    /dev/fuse\n'; else printf '  WARN  no /dev/fuse (mount tests cannot run here)\n'; fi
  return $bad
}

fuse_warning() {
  if [ ! -e /dev/fuse ]; then
    log "warning: /dev/fuse does not exist: mailfs builds, but mounting (make demo, the mount tests) needs it."
    log "         Load the module (modprobe fuse) or, in a container, pass the device (--device /dev/fuse --cap-add SYS_ADMIN)."
  fi
}

mapfile -t missing < <(missing_packages)

if [ "$mode" = check ]; then
  if [ ${#missing[@]} -eq 0 ]; then log "nothing missing"; exit 0; fi
  log "missing: ${missing[*]}"; exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    die "missing packages (${missing[*]}), and this is neither root nor a user with sudo: run this script as root"
  fi
  apt_get() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y "$@"; }
  log "installing: ${missing[*]}"
  apt_get update
  # Now that apt knows the archive, ask again which clang runtime goes with which clang.
  mapfile -t missing < <(missing_packages)
  # Dovecot's postinst would start a system server on 143/993/110/995 on a machine
  # with systemd; the tests run their own on other ports, so that does no harm.
  apt_get install --no-install-recommends "${missing[@]}"
  mapfile -t still < <(missing_packages)
  [ ${#still[@]} -eq 0 ] || die "still missing after apt-get install: ${still[*]}"
  log "all build and test dependencies are installed"
  fuse_warning
  verify || die "a tool does not work although its package is installed (see FAIL above)"
else
  fuse_warning
fi

if [ "$mode" = verify ]; then verify; fi

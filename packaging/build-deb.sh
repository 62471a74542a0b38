#!/bin/bash
# build-deb.sh: build mailfs's Debian source and binary packages from this
# checkout with dpkg-buildpackage (packaging/debian/ is the debian/ directory),
# then check them with lintian, failing on any error or warning.
#
#   packaging/build-deb.sh [OUTDIR]      default OUTDIR: build-deb/
#
# OUTDIR gets mailfs_VERSION.dsc, mailfs_VERSION.tar.xz, mailfs_VERSION_ARCH.deb
# (and its -dbgsym), .buildinfo, .changes and lintian.txt. The build runs in a
# copy of the tree, since dpkg-buildpackage writes next to the source directory.
# What it needs (dpkg-dev, debhelper, lintian, the Build-Depends of
# packaging/debian/control) is installed with apt-get when missing, as root or
# through sudo; when all is there it changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'build-deb.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

out=$(realpath -m "${1:-build-deb}")
command -v dpkg-query >/dev/null 2>&1 || die "this script is for Debian and its derivatives (no dpkg-query)"

# One version: the Makefile's; the changelogs and the man page must name it.
version=$(packaging/version.sh --check) || die "the versions disagree (see above)"

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
apt_get() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y "$@"; }

# The tools, then the Build-Depends, which apt reads from the control file itself.
tools=(dpkg-dev debhelper lintian)
missing=()
for p in "${tools[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] || ! dpkg-checkbuilddeps packaging/debian/control >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
		die "build dependencies are missing and this is neither root nor a user with sudo"
	fi
	log "installing the build dependencies"
	apt_get update
	apt_get install --no-install-recommends "${tools[@]}"
	# apt-get build-dep wants a directory holding debian/control.
	deps=$(mktemp -d)
	mkdir "$deps/debian"
	cp packaging/debian/control "$deps/debian/control"
	apt_get build-dep --no-install-recommends "$deps"
	rm -rf "$deps"
	dpkg-checkbuilddeps packaging/debian/control || die "build dependencies still missing"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
src=$stage/mailfs-$version
mkdir "$src"
# The source package holds what git tracks (without git: everything but the
# build outputs), with packaging/debian as debian/.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z | xargs -0 cp --parents -t "$src"
else
	tar -C . --exclude=./build --exclude='./build-*' --exclude=./demo --exclude=./.git -cf - . |
		tar -C "$src" -xf -
fi
cp -r packaging/debian "$src/debian"

(cd "$src" && dpkg-buildpackage -us -uc)

mkdir -p "$out"
rm -f "$out"/mailfs_* "$out"/mailfs-dbgsym_* "$out"/lintian.txt
changes=$(ls "$stage"/mailfs_"$version"_*.changes)
# The .changes lists every file the build made (source and binary).
cp "$changes" "$out/"
sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]\{32\} [0-9]* [^ ]* [^ ]* //p' "$changes" |
	while read -r f; do cp "$stage/$f" "$out/"; done
log "built in $out:"
ls -l "$out" >&2

# Errors and warnings fail the build; info tags (-I) are shown.
log "lintian -I --fail-on error,warning $(basename "$changes")"
status=0
lintian -I --fail-on error,warning "$out/$(basename "$changes")" >"$out/lintian.txt" 2>&1 || status=$?
cat "$out/lintian.txt"
[ $status = 0 ] || die "lintian found errors or warnings (exit $status)"
log "lintian: no errors, no warnings; $(grep -c '^I: ' "$out/lintian.txt" || true) info tags"

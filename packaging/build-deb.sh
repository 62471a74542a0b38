#!/bin/bash
# build-deb.sh: build a binary Debian package of mailfs with dpkg-deb, from this
# checkout, without debhelper:  packaging/build-deb.sh [OUTDIR]  (default: build/)
# Installs to /usr; the systemd user unit goes to /usr/lib/systemd/user.
# Needs the build dependencies (packaging/deps.sh) and dpkg-dev for dpkg-shlibdeps.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-build}")
version=$(sed -n 's/^VERSION *:= *//p' Makefile)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "build-deb.sh: no VERSION in Makefile" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
pkg=$root
mkdir -p "$out" "$root/DEBIAN"

make -j"$(nproc)"
make install DESTDIR="$root" PREFIX=/usr
gzip -9n "$root/usr/share/man/man1/mailfs.1"
install -D -m 0644 packaging/mailfs@.service "$root/usr/lib/systemd/user/mailfs@.service"
install -D -m 0644 README.md "$root/usr/share/doc/mailfs/README.md"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: mailfs"
  echo
  echo "Files: *"
  echo "Copyright: 2026 the mailfs authors"
  echo "License: MIT"
  sed 's/^/ /; s/^ $/ ./' LICENSE
} >"$root/usr/share/doc/mailfs/copyright"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/mailfs"

# Shared-library dependencies, as dpkg-shlibdeps finds them (it wants a debian/control).
depends=
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  mkdir -p "$stage/src/debian"
  printf 'Source: mailfs\n\nPackage: mailfs\nArchitecture: any\n' >"$stage/src/debian/control"
  depends=$(cd "$stage/src" && dpkg-shlibdeps -O "$root/usr/bin/mailfs" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
fi
[ -n "$depends" ] || depends="libfuse3-3, libcurl4, libgmime-3.0-0, libsqlite3-0, libglib2.0-0"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: mailfs
Version: $version-1
Architecture: $arch
Maintainer: the mailfs authors <mailfs@example.org>
Installed-Size: $installed_size
Depends: $depends, fuse3
Section: utils
Priority: optional
Description: mount an IMAP or POP3 mail account as a directory tree
 mailfs is a FUSE filesystem that shows a mail account as files: each IMAP
 folder is a directory and each message a file holding the message as the
 server sends it. Listing a folder fetches only sizes, dates, flags and a
 few headers; bodies are downloaded when first read, and an SQLite cache
 keeps what was learned, so that a second listing does not touch the network.
CONTROL

deb=$out/mailfs_${version}-1_$arch.deb
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "built $deb"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\):/  \1:/p'

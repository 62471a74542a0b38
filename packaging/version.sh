#!/bin/sh
# version.sh: print mailfs's version, which is written in one place only: the
# Makefile's VERSION line. build-deb.sh and the RPM spec take it from here.
#
#   packaging/version.sh            print it
#   packaging/version.sh --check    also check that the newest entries of
#                                   packaging/debian/changelog and of the RPM
#                                   spec's %changelog, and the man page's .TH
#                                   line, name it; print what disagrees, exit 1
set -eu
cd "$(dirname "$0")/.."

version=$(sed -n 's/^VERSION *:= *//p' Makefile)
[ -n "$version" ] || { echo "version.sh: no VERSION := line in the Makefile" >&2; exit 1; }

if [ "${1:-}" = --check ]; then
	bad=0
	# The first line of a Debian changelog: "mailfs (0.1.0) unstable; urgency=medium"
	# (a native package: no Debian revision).
	deb=$(sed -n '1s/^mailfs (\([^)]*\)).*/\1/p' packaging/debian/changelog)
	# The first entry of %changelog: "* Thu Jan 01 2026 Name <mail> - 0.1.0-1"
	rpm=$(sed -n '/^%changelog/,$s/^\* .* - \([^ -]*\)-[^ -]*$/\1/p' packaging/mailfs.spec | head -n 1)
	# .TH MAILFS 1 DATE "mailfs 0.1.0" ...
	man=$(sed -n 's/^\.TH .*"mailfs \([^"]*\)".*/\1/p' man/mailfs.1)
	for what in "packaging/debian/changelog:$deb" "packaging/mailfs.spec %changelog:$rpm" "man/mailfs.1 .TH:$man"; do
		if [ "${what##*:}" != "$version" ]; then
			echo "version.sh: ${what%:*} names '${what##*:}', the Makefile $version" >&2
			bad=1
		fi
	done
	[ $bad = 0 ] || exit 1
fi
echo "$version"

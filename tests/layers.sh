#!/bin/sh
# tests/layers.sh — checks the layer rules of README's "Inside mailfs" on
# what each source file really includes (the preprocessor's list, headers
# included by headers too), so that a rule broken by an #include fails
# `make check`:
#
#   fs        (fs*.c)      no driver, wire format or SQL: no mailbox.h,
#                          imap*.h, pop3*.h, net.h, sqlite3.h
#   sync      (sync*.c)    never tests which protocol is in use
#   store     (store*.c)   no driver, FUSE or sync
#   drivers   (imap*.c, pop3*.c, net.c)   no store, FUSE or sync
#   leaves    (mime.c, utf7.c, *_parse.c) only their own header and civil.h
#   prefetch  (prefetch.c) a client of a running mount, beside main.c: no
#                          store, sync, fs, driver or FUSE
#   every src/*.c and src/*.h file stays under 1,000 lines
#
# Prints one line per broken rule and exits 1, or one summary line.
set -u
cd "$(dirname "$0")/.."
CC=${CC:-cc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
cflags="-Iinclude -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE $($PKG_CONFIG --cflags fuse3 libcurl gmime-3.0 sqlite3)"
fail=0
checked=0

# The headers a file includes, one base name a line.
includes() {
	# shellcheck disable=SC2086
	$CC -MM $cflags "$1" | tr ' \\' '\n\n' | grep '\.h$' | sed 's|.*/||' | sort -u
}

broken() {
	echo "layers: $*"
	fail=1
}

forbid() {  # file, a regex of header names it must not include, the rule
	bad=$(includes "$1" | grep -E "$2" | tr '\n' ' ')
	[ -z "$bad" ] || broken "$1 includes $bad($3)"
	checked=$((checked + 1))
}

for f in src/fs*.c; do
	forbid "$f" '^(mailbox|imap.*|pop3.*|net|sqlite3|curl)\.h$' 'fs sees no driver, wire format or SQL'
done
for f in src/store*.c; do
	forbid "$f" '^(mailbox|imap.*|pop3.*|net|fuse.*|sync.*|fs.*)\.h$' 'the store knows no driver, FUSE or sync'
done
for f in src/imap*.c src/pop3*.c src/net.c; do
	forbid "$f" '^(store.*|sqlite3|fuse.*|sync.*|fs.*)\.h$' 'drivers see no store, FUSE or sync'
done
forbid src/prefetch.c '^(store.*|sync.*|fs.*|mailbox|imap.*|pop3.*|net|sqlite3|curl|fuse.*)\.h$' \
	'prefetch is a plain client of the mount'
for f in src/mime.c src/utf7.c src/imap_parse.c src/pop3_parse.c; do
	own=$(basename "$f" .c)
	checked=$((checked + 1))
	includes "$f" | grep -E '^[a-z0-9_]+\.h$' | while read -r h; do
		[ -f "include/$h" ] || continue
		case $h in "$own.h" | civil.h | status.h) ;; *) echo "layers: $f includes $h (a leaf uses its own header and civil.h only)" ;; esac
	done | grep . && fail=1
done
for f in src/sync*.c src/sync*.h src/store*.c src/store*.h; do
	[ -f "$f" ] || continue
	if grep -nE 'MF_PROTO_|->protocol\b' "$f"; then
		broken "$f tests which protocol is in use (ask the driver's caps)"
	fi
done
for f in src/*.c src/*.h; do
	n=$(wc -l <"$f")
	[ "$n" -le 1000 ] || broken "$f has $n lines (a room of its own past 1,000)"
done

[ "$fail" -eq 0 ] || exit 1
echo "layers: $checked files' includes follow the layer rules; no src file over 1,000 lines"

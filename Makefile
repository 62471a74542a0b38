# mailfs — a FUSE filesystem that mounts a mail account.
#
#   make                 build/mailfs
#   make check           unit + mount tests, fuzzing, then both again under ASan/UBSan
#   make fuzz-long       10 million runs of the IMAP and POP3 parsers (not in check)
#   make demo            a private Dovecot with sample mail, mounted at ./demo/mnt
#   make install         PREFIX=/usr/local DESTDIR=: the binary, the man page, the
#                        systemd user unit (USERUNITDIR)
#
# BUILD selects the output directory: build/ (normal) or build-asan/.

# The one place the version is written: packaging/build-deb.sh, the RPM spec
# and packaging/version.sh read it from here; the Debian and RPM changelogs
# must name it (packaging/version.sh --check).
VERSION    := 0.1.0
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
# systemd's user units: /usr/lib/systemd/user, /usr/local/lib/systemd/user
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
BUILD      ?= build
CC         ?= cc
PKG_CONFIG ?= pkg-config
PYTHON     ?= /usr/bin/python3
# Seconds of fuzzing: the IMAP response parser, and every other target.
FUZZ_SECONDS ?= 60
FUZZ_OTHER_SECONDS ?= 30

PKGS       := fuse3 libcurl gmime-3.0 sqlite3
# A library pkg-config cannot find stops the build here, with its name,
# not with a compiler error about a missing header. (Not for clean and
# the targets that install the libraries' packages.)
ifneq ($(filter-out clean demo-stop uninstall,$(or $(MAKECMDGOALS),all)),)
PKG_MISSING := $(strip $(foreach p,$(PKGS),$(if $(shell $(PKG_CONFIG) --exists $(p) 2>/dev/null && echo y),,$(p))))
ifneq ($(PKG_MISSING),)
$(error $(PKG_CONFIG) cannot find: $(PKG_MISSING) (packaging/deps.sh installs them))
endif
endif
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wshadow -Wformat=2
ALL_CFLAGS := -std=gnu11 $(WARN) -Iinclude -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE \
              -DMAILFS_VERSION='"$(VERSION)"' $(PKG_CFLAGS) $(CFLAGS)
# Each object and test records the headers it includes (build/**/*.d).
DEPFLAGS   := -MMD -MP
LIBS       := $(PKG_LIBS) -lpthread

SRCS       := $(wildcard src/*.c)
LIB_SRCS   := $(filter-out src/main.c,$(SRCS))
LIB_OBJS   := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRCS))
HEADERS    := $(wildcard include/*.h)
# The fuzz targets: each links the parser it drives and nothing else.
FUZZ_LINK_fuzz_imap_response := src/imap_parse.c
FUZZ_LINK_fuzz_pop3_reply    := src/pop3_parse.c
FUZZ_LINK_fuzz_mime_headers  := src/mime.c
FUZZ_LINK_fuzz_utf7          := src/utf7.c
# Lower limits in the fuzz build, so that inputs of 64 KiB reach what
# lies past them (a line too long, a literal too big).
FUZZ_DEFS_fuzz_imap_response := -DIMAP_MAX_LINE=4096 -DIMAP_MAX_LITERAL=16384
FUZZ_DEFS_fuzz_pop3_reply    := -DPOP3_MAX_STATUS_LINE=1024 -DPOP3_MAX_BODY_LINE=8192
# make fuzz-long: executions per target (IMAP and POP3; the others), inputs
# up to FUZZ_LONG_MAX_LEN bytes, seeds from real transcripts
# (tests/fuzz/make_seeds.py).
FUZZ_LONG_RUNS ?= 10000000
FUZZ_LONG_OTHER_RUNS ?= 1000000
FUZZ_LONG_MAX_LEN ?= 65536

CORPUS_DIR ?= $(abspath ../shared/corpus)
export CORPUS_DIR

.PHONY: all check layers unit integration fuzz fuzz-long asan demo demo-stop install uninstall clean bench

all: $(BUILD)/mailfs

# CPPFLAGS and LDFLAGS as a packager gives them (dpkg-buildflags: fortify, relro, now).
$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(BUILD)/obj $(BUILD)/tests build-fuzz:
	mkdir -p $@

$(BUILD)/libmailfs.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/mailfs: $(BUILD)/obj/main.o $(BUILD)/libmailfs.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmailfs.a | $(BUILD)/tests
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(DEPFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmailfs.a $(LIBS) -lcmocka

# Unit tests (cmocka). Each binary prints cmocka's summary.
unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; ./$$t; done

# Mount tests: a private Dovecot on loopback, the real binary, shell tools.
integration: $(BUILD)/mailfs
	MAILFS_BIN=$(abspath $(BUILD)/mailfs) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# libFuzzer targets, each run for FUZZ_SECONDS.
.SECONDEXPANSION:
build-fuzz/%: tests/fuzz/%.c $$(FUZZ_LINK_$$*) $(HEADERS) | build-fuzz
	clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
	  -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE -DMAILFS_VERSION='"$(VERSION)"' $(FUZZ_DEFS_$*) \
	  $(PKG_CFLAGS) -o $@ $< $(FUZZ_LINK_$*) $(PKG_LIBS)

fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
	  name=$$(basename $$f); mkdir -p build-fuzz/corpus-$$name; \
	  seeds=; [ -d tests/fuzz/seeds/$$name ] && seeds=tests/fuzz/seeds/$$name; \
	  secs=$(FUZZ_SECONDS); [ $$name = fuzz_imap_response ] || secs=$(FUZZ_OTHER_SECONDS); \
	  extra=; [ $$name = fuzz_mime_headers ] && [ -d "$(CORPUS_DIR)/messages" ] && \
	    { seeds="$$seeds $(CORPUS_DIR)/messages"; extra=-max_len=65536; }; \
	  echo "== $$f for $${secs}s"; \
	  $$f -max_total_time=$$secs -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 $$extra \
	      build-fuzz/corpus-$$name $$seeds 2>build-fuzz/$$name.log || { tail -50 build-fuzz/$$name.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|Done' build-fuzz/$$name.log | tail -2; \
	done

# Long fuzzing (not part of check): every target for FUZZ_LONG_RUNS
# executions (the IMAP and POP3 parsers) or FUZZ_LONG_OTHER_RUNS, inputs up
# to FUZZ_LONG_MAX_LEN, the corpus kept in build-fuzz/corpus-long-<target>;
# libFuzzer's final stats end each log (build-fuzz/<target>.long.log).
fuzz-long: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
	  name=$$(basename $$f); corpus=build-fuzz/corpus-long-$$name; mkdir -p $$corpus; \
	  seeds=; [ -d tests/fuzz/seeds/$$name ] && seeds=tests/fuzz/seeds/$$name; \
	  [ $$name = fuzz_mime_headers ] && [ -d "$(CORPUS_DIR)/messages" ] && seeds="$$seeds $(CORPUS_DIR)/messages"; \
	  runs=$(FUZZ_LONG_OTHER_RUNS); \
	  case $$name in fuzz_imap_response|fuzz_pop3_reply) runs=$(FUZZ_LONG_RUNS);; esac; \
	  echo "== $$f: $$runs runs, inputs up to $(FUZZ_LONG_MAX_LEN) bytes"; \
	  $$f -runs=$$runs -max_len=$(FUZZ_LONG_MAX_LEN) -len_control=0 -print_final_stats=1 \
	      -timeout=30 -rss_limit_mb=2048 $$corpus $$seeds >build-fuzz/$$name.long.log 2>&1 || \
	    { tail -50 build-fuzz/$$name.long.log; exit 1; }; \
	  grep -E '^(Done|stat::)' build-fuzz/$$name.long.log; \
	done

# The unit and mount tests again, built with AddressSanitizer and UBSan.
asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" unit integration

# The layer rules (README, "Inside mailfs"), checked on the includes.
layers:
	@tests/layers.sh

check: all layers unit integration fuzz asan

demo: $(BUILD)/mailfs
	MAILFS_BIN=$(abspath $(BUILD)/mailfs) $(PYTHON) tests/demo.py start

demo-stop:
	$(PYTHON) tests/demo.py stop

bench: $(BUILD)/mailfs
	MAILFS_BIN=$(abspath $(BUILD)/mailfs) bench/ls-bench.sh

# The unit runs the binary where it is installed (@BINDIR@ in the template).
install: $(BUILD)/mailfs
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(USERUNITDIR)
	install -m 0755 $(BUILD)/mailfs $(DESTDIR)$(BINDIR)/mailfs
	install -m 0644 man/mailfs.1 $(DESTDIR)$(MANDIR)/man1/mailfs.1
	sed 's|@BINDIR@|$(BINDIR)|g' packaging/mailfs@.service.in >$(DESTDIR)$(USERUNITDIR)/mailfs@.service.tmp
	chmod 0644 $(DESTDIR)$(USERUNITDIR)/mailfs@.service.tmp
	mv $(DESTDIR)$(USERUNITDIR)/mailfs@.service.tmp $(DESTDIR)$(USERUNITDIR)/mailfs@.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/mailfs $(DESTDIR)$(MANDIR)/man1/mailfs.1 \
	      $(DESTDIR)$(USERUNITDIR)/mailfs@.service

clean:
	rm -rf build build-asan build-fuzz

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/tests/*.d)

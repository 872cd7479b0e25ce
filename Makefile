# luasmtpd — see README.md.  `make` builds build/luasmtpd.

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
LUADIR    ?= $(PREFIX)/share/lua/5.4
MANDIR    ?= $(PREFIX)/share/man
DOCDIR    ?= $(PREFIX)/share/doc/luasmtpd
UNITDIR   ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
CC        ?= cc
# -Werror where warnings must fail the build (CI sets CI=true).
WERROR    ?= $(if $(CI),-Werror,)
CFLAGS    ?= -O2 -g
# core/ sees only core/ (no Lua, no lua/ header but the bridge.h that
# main.c names by its path); lua/ sees both and Lua's headers.
CPPFLAGS  += -D_GNU_SOURCE -DLUASMTPD_VERSION='"$(VERSION)"' -Icore
# -MMD -MP: each object depends on the headers it includes (build/obj and build/san, *.d)
WFLAGS    := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(WERROR)
DEPFLAGS  := -MMD -MP
# The core needs libev and OpenSSL; the actions of lua/ add libcurl,
# libmosquitto and SQLite (the state database); the server itself
# libsystemd, for sd_notify (Type=notify).
CORE_LIBS := -lev -pthread $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
LDLIBS    += $(CORE_LIBS) \
             $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl) \
             $(shell pkg-config --libs libmosquitto 2>/dev/null || echo -lmosquitto) \
             $(shell pkg-config --libs sqlite3 2>/dev/null || echo -lsqlite3) \
             $(shell pkg-config --libs libsystemd 2>/dev/null || echo -lsystemd) \
             $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
# mimalloc takes malloc's place in the server (not in the ASan build, which
# needs its own): the Lua state allocates and frees some seventy small
# blocks per message, and with glibc's malloc they cost a tenth of a 1 KB
# message's instructions (docs/performance.md).  MALLOC_LIBS= builds
# without it.
MALLOC_LIBS ?= -Wl,--push-state,--no-as-needed -lmimalloc -Wl,--pop-state
LUA_CFLAGS ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS  ?= $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)

CORE_SRC  := core/addr.c core/auth.c core/base64.c core/buf.c core/charset.c core/config.c core/log.c \
             core/clients.c core/proxy.c \
             core/net.c core/mime.c core/server.c core/session.c core/smtp.c core/smtp_parse.c \
             core/console.c core/json.c core/trace.c core/metrics.c core/tls.c core/transcript.c
LUA_SRC   := lua/budget.c lua/call.c lua/exec.c lua/forward.c lua/host.c lua/lsession.c lua/mail.c lua/http.c lua/module.c lua/mqtt.c lua/queue.c lua/save.c lua/store.c lua/timer.c lua/writer.c
MAIN_SRC  := core/admin.c core/main.c core/replay.c core/watchdog.c core/workers.c
UNIT_SRC  := $(wildcard tests/unit/test_*.c)

B         := build
CORE_OBJ  := $(patsubst %.c,$(B)/obj/%.o,$(CORE_SRC))
# Lua sources compiled into the binary as C strings (lua_<name>).
EMBED     := default luasmtpd prelude
OBJ       := $(CORE_OBJ) $(patsubst %.c,$(B)/obj/%.o,$(LUA_SRC) $(MAIN_SRC)) \
             $(patsubst %,$(B)/obj/embed_%.o,$(EMBED) console)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(B)/%,$(UNIT_SRC))

# The same sources built with AddressSanitizer and UndefinedBehaviorSanitizer.
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_CORE  := $(patsubst %.c,$(B)/san/%.o,$(CORE_SRC))
SAN_OBJ   := $(SAN_CORE) $(patsubst %.c,$(B)/san/%.o,$(LUA_SRC) $(MAIN_SRC)) \
             $(patsubst %,$(B)/san/embed_%.o,$(EMBED) console)
SAN_UNIT  := $(patsubst tests/unit/%.c,$(B)/san/%,$(UNIT_SRC))

.SECONDARY:
.PHONY: all deps run test test-unit test-integration asan fuzz bench install uninstall clean

all: $(B)/luasmtpd

HEADERS   := $(wildcard core/*.h lua/*.h tests/unit/*.h)

# Only lua/ sees Lua's headers; LUADIR is where its package.path looks.
$(B)/obj/lua/%.o $(B)/san/lua/%.o: CPPFLAGS += -Ilua $(LUA_CFLAGS) -DLUASMTPD_LUADIR='"$(LUADIR)"'

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/san/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(SAN_FLAGS) $(WFLAGS) $(DEPFLAGS) -c -o $@ $<

-include $(shell find $(B)/obj $(B)/san -name '*.d' -type f 2>/dev/null)

# A text file ($<) as the C string $(1).
embed_text = @mkdir -p $(dir $@); { echo 'const char $(1)[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } > $@

# The embedded Lua sources: the default script and the luasmtpd module's
# Lua half.
$(B)/gen/embed_%.c: lua/%.lua
	$(call embed_text,lua_$*)

# The console's page (core/admin.c serves it at /).
$(B)/gen/embed_console.c: core/console.html
	$(call embed_text,console_html)

$(B)/obj/embed_%.o: $(B)/gen/embed_%.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/san/embed_%.o: $(B)/gen/embed_%.c
	@mkdir -p $(dir $@)
	$(CC) $(SAN_FLAGS) -c -o $@ $<

# Test tables leave trailing fields to their zero default.
$(B)/obj/tests/%.o $(B)/san/tests/%.o: WFLAGS += -Wno-missing-field-initializers

$(B)/luasmtpd: $(OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -rdynamic -o $@ $(MALLOC_LIBS) $^ $(LUA_LIBS) $(LDLIBS) -lm

$(B)/san/luasmtpd: $(SAN_OBJ)
	$(CC) $(SAN_FLAGS) $(LDFLAGS) -rdynamic -o $@ $^ $(LUA_LIBS) $(LDLIBS) -lm

# Unit tests of the core: no Lua, libcurl or libmosquitto in them.
$(B)/test_%: $(B)/obj/tests/unit/test_%.o $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CORE_LIBS)

# test_oom fails the core's allocations one by one: it takes its calls over.
$(B)/test_oom $(B)/san/test_oom: LDFLAGS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup

$(B)/san/test_%: $(B)/san/tests/unit/test_%.o $(SAN_CORE)
	$(CC) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(CORE_LIBS)

asan: $(B)/san/luasmtpd

# libFuzzer targets (clang), with ASan+UBSan, seeded from tests/data and
# tests/fuzz/NAME (fuzz_NAME's own seeds), with tests/fuzz/NAME.dict as the
# dictionary where there is one; fuzz_mime also from the external corpus
# (../shared/external_corpus, read in place).  `make test` runs each
# briefly; `make fuzz FUZZ_SECONDS=600` as long as asked.
FUZZ_CC   ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SRC  := core/addr.c core/auth.c core/base64.c core/buf.c core/charset.c core/mime.c core/proxy.c core/smtp_parse.c \
             core/transcript.c
FUZZ_BIN  := $(B)/fuzz/fuzz_addr $(B)/fuzz/fuzz_http $(B)/fuzz/fuzz_mime $(B)/fuzz/fuzz_protocol $(B)/fuzz/fuzz_proxy \
             $(B)/fuzz/fuzz_session $(B)/fuzz/fuzz_transcript
FUZZ_FLAGS = $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(WFLAGS)

$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_SRC) $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC)

# the whole session: the core's every file, with its libraries
$(B)/fuzz/fuzz_session: tests/fuzz/fuzz_session.c $(CORE_SRC) $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRC) $(CORE_LIBS)

# the console's HTTP side: the listener with its library, on loopback
$(B)/fuzz/fuzz_http: tests/fuzz/fuzz_http.c $(CORE_SRC) core/admin.c $(B)/gen/embed_console.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRC) core/admin.c $(B)/gen/embed_console.c $(CORE_LIBS) \
	    $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)

# luasmtpd beside smtp-sink (docs/performance.md); BENCH_ARGS="--quick" for a short run
bench: deps all $(B)/bench_mime $(B)/tls_load
	@scripts/bench.sh $(BENCH_ARGS)

# the MIME extractor alone (scripts/bench_mime.c)
$(B)/bench_mime: $(B)/obj/scripts/bench_mime.o $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CORE_LIBS)

# W6's TLS load generator (scripts/tls_load.c), libev and OpenSSL only;
# the TLS tests run it too
$(B)/tls_load: $(B)/obj/scripts/tls_load.o
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CORE_LIBS)

fuzz: $(FUZZ_BIN)
	@FUZZ_BRIEF=$(FUZZ_SECONDS) sh tests/run.sh $(B) fuzz

deps:
	@sh scripts/deps.sh

run: deps all
	./$(B)/luasmtpd $(ARGS)

# Unit tests and the integration suite, each against the normal build and
# the ASan+UBSan build; the last line sums them up.
test: deps all asan $(UNIT_BIN) $(SAN_UNIT) $(FUZZ_BIN) $(B)/tls_load
	@sh tests/run.sh $(B)

test-unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do ./$$t || exit 1; done

test-integration: all
	@$(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3) tests/integration/run.py --binary $(B)/luasmtpd

# luasmtpd(8): its OPTIONS made from --help (one option table for both)
$(B)/luasmtpd.8: docs/luasmtpd.8.in scripts/man-options.awk $(B)/luasmtpd
	./$(B)/luasmtpd --help | awk -f scripts/man-options.awk > $@.options
	sed -e 's|@VERSION@|$(VERSION)|' -e "s|@DATE@|$$(date -u -r docs/luasmtpd.8.in +%Y-%m-%d)|" \
	    -e 's|@DOCDIR@|$(DOCDIR)|' -e '/^@OPTIONS@$$/{r $@.options' -e 'd;}' docs/luasmtpd.8.in > $@
	rm -f $@.options

$(B)/luasmtpd.service: scripts/luasmtpd.service
	sed 's|@BINDIR@|$(BINDIR)|g' scripts/luasmtpd.service > $@

MAN_PAGES := $(B)/luasmtpd.8 docs/luasmtpd-lua.7
EXAMPLES  := $(wildcard examples/*.lua)

# The binary, the man pages, the docs and examples, the unit, and the
# rules of the service (kept when they exist: they are the user's).
install: all $(MAN_PAGES) $(B)/luasmtpd.service
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man7 \
	    $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/luasmtpd
	install -m 755 $(B)/luasmtpd $(DESTDIR)$(BINDIR)/luasmtpd
	install -m 644 $(B)/luasmtpd.8 $(DESTDIR)$(MANDIR)/man8/luasmtpd.8
	install -m 644 docs/luasmtpd-lua.7 $(DESTDIR)$(MANDIR)/man7/luasmtpd-lua.7
	install -m 644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 644 $(wildcard docs/*.md) $(DESTDIR)$(DOCDIR)/docs
	install -m 644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples
	install -m 755 scripts/keepalived-notify $(DESTDIR)$(DOCDIR)/examples/keepalived-notify
	install -m 644 $(B)/luasmtpd.service $(DESTDIR)$(UNITDIR)/luasmtpd.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/luasmtpd/rules.lua ] || \
	    install -m 644 lua/default.lua $(DESTDIR)$(SYSCONFDIR)/luasmtpd/rules.lua

# What install put there; the rules only while they are as installed.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/luasmtpd $(DESTDIR)$(MANDIR)/man8/luasmtpd.8 \
	    $(DESTDIR)$(MANDIR)/man7/luasmtpd-lua.7 $(DESTDIR)$(UNITDIR)/luasmtpd.service
	rm -rf $(DESTDIR)$(DOCDIR)
	if cmp -s lua/default.lua $(DESTDIR)$(SYSCONFDIR)/luasmtpd/rules.lua; then \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/luasmtpd/rules.lua; \
	    rmdir $(DESTDIR)$(SYSCONFDIR)/luasmtpd 2>/dev/null || true; fi

clean:
	rm -rf $(B)

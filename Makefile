# luasmtpd — see README.md.  `make` builds build/luasmtpd.

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
LUADIR    ?= $(PREFIX)/share/lua/5.4
CC        ?= cc
# -Werror where warnings must fail the build (CI sets CI=true).
WERROR    ?= $(if $(CI),-Werror,)
CFLAGS    ?= -O2 -g
CPPFLAGS  += -D_GNU_SOURCE -DLUASMTPD_VERSION='"$(VERSION)"' -Icore
WFLAGS    := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(WERROR)
LDLIBS    += -lev

CORE_SRC  := core/buf.c core/config.c core/hook_default.c core/log.c core/net.c \
             core/server.c core/session.c core/smtp.c core/smtp_parse.c
MAIN_SRC  := core/main.c
UNIT_SRC  := $(wildcard tests/unit/test_*.c)

B         := build
OBJ       := $(patsubst %.c,$(B)/obj/%.o,$(CORE_SRC) $(MAIN_SRC))
UNIT_BIN  := $(patsubst tests/unit/%.c,$(B)/%,$(UNIT_SRC))

# The same sources built with AddressSanitizer and UndefinedBehaviorSanitizer.
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_OBJ   := $(patsubst %.c,$(B)/san/%.o,$(CORE_SRC) $(MAIN_SRC))
SAN_UNIT  := $(patsubst tests/unit/%.c,$(B)/san/%,$(UNIT_SRC))

.SECONDARY:
.PHONY: all deps run test test-unit test-integration asan install uninstall clean

all: $(B)/luasmtpd

$(B)/obj/%.o: %.c $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WFLAGS) -c -o $@ $<

$(B)/san/%.o: %.c $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(SAN_FLAGS) $(WFLAGS) -c -o $@ $<

# Test tables leave trailing fields to their zero default.
$(B)/obj/tests/%.o $(B)/san/tests/%.o: WFLAGS += -Wno-missing-field-initializers

$(B)/luasmtpd: $(OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/san/luasmtpd: $(SAN_OBJ)
	$(CC) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/test_%: $(B)/obj/tests/unit/test_%.o $(filter-out $(B)/obj/core/main.o,$(OBJ))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/san/test_%: $(B)/san/tests/unit/test_%.o $(filter-out $(B)/san/core/main.o,$(SAN_OBJ))
	$(CC) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

asan: $(B)/san/luasmtpd

deps:
	@sh scripts/deps.sh

run: deps all
	./$(B)/luasmtpd $(ARGS)

# Unit tests and the integration suite, each against the normal build and
# the ASan+UBSan build; the last line sums them up.
test: deps all asan $(UNIT_BIN) $(SAN_UNIT)
	@sh tests/run.sh $(B)

test-unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do ./$$t || exit 1; done

test-integration: all
	@python3 tests/integration/run.py --binary $(B)/luasmtpd

install: all
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 $(B)/luasmtpd $(DESTDIR)$(BINDIR)/luasmtpd

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/luasmtpd

clean:
	rm -rf $(B)

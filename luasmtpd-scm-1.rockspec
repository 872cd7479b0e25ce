rockspec_format = "3.0"
package = "luasmtpd"
version = "scm-1"

source = {
   url = "git+https://github.com/luasmtpd/luasmtpd.git",
}

description = {
   summary = "A small, fast SMTP server in C whose every decision is a Lua 5.4 hook",
   detailed = [[
luasmtpd receives mail from machines (cameras, PLCs, NAS boxes, printers,
CI jobs) and hands every stage of each SMTP session to a Lua script, which
accepts, rejects or turns the message into an event.
]],
   homepage = "https://github.com/luasmtpd/luasmtpd",
   license = "MIT",
}

dependencies = {
   "lua >= 5.4, < 5.5",
}

external_dependencies = {
   LIBEV = { header = "ev.h", library = "ev" },
   MIMALLOC = { header = "mimalloc.h", library = "mimalloc" },
   OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
   -- Debian keeps curl.h under the multiarch include directory, which
   -- LuaRocks does not search: check the library only.
   CURL = { library = "curl" },
   MOSQUITTO = { header = "mosquitto.h", library = "mosquitto" },
   SQLITE = { header = "sqlite3.h", library = "sqlite3" },
   SYSTEMD = { header = "systemd/sd-daemon.h", library = "systemd" },
}

build = {
   type = "make",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
   },
   install_variables = {
      PREFIX = "$(PREFIX)",
      BINDIR = "$(BINDIR)",
      LUADIR = "$(LUADIR)",
      -- the service's rules stay inside the tree, as everything else
      SYSCONFDIR = "$(PREFIX)/etc",
   },
}

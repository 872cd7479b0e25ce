#!/bin/sh
# Install the Debian packages luasmtpd needs to build, run and test.
# Does nothing when every package is already present; otherwise needs root
# (or sudo) and a Debian-family system with apt-get.
set -eu

PKGS="build-essential pkg-config libev-dev libmimalloc-dev liblua5.4-dev lua5.4 lua-cjson libssl-dev openssl
      libcurl4-openssl-dev libmosquitto-dev mosquitto mosquitto-clients libsqlite3-dev sqlite3
      libsystemd-dev systemd libmicrohttpd-dev groff-base man-db
      python3-aiosmtpd python3-prometheus-client chromium chromium-driver python3-selenium
      firefox-esr python3-websocket
      python3 swaks libnet-ssleay-perl libio-socket-ssl-perl curl postfix clang libclang-rt-dev haproxy
      luarocks"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: need root to install:$missing" >&2; exit 1
    fi
else
    SUDO=""
fi

# postfix is only wanted for smtp-source/smtp-sink: keep it unconfigured so
# nothing is started and no mail system is set up.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null

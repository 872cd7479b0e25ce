#!/bin/sh
# The peers make bench runs beside luasmtpd that Debian does not package:
# nodemailer's smtp-server (with mailparser to parse what it takes) and
# Haraka, from the npm registry into build/peers; nothing is installed
# system-wide.  aiosmtpd is Debian's python3-aiosmtpd (scripts/deps.sh).
# Does nothing when they are there already.
set -eu
cd "$(dirname "$0")/../.."
dir=build/peers
have() { [ -d "$dir/node_modules/$1" ]; }
have smtp-server && have mailparser && have Haraka && exit 0
if ! command -v npm >/dev/null; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "peers: npm not found (apt-get install nodejs npm)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    smtp-server@3 mailparser@3 Haraka@3

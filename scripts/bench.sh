#!/bin/sh
# make bench: luasmtpd beside Postfix's smtp-sink, both driven by
# smtp-source on loopback, then as a relay beside Postfix's own
# (scripts/bench.py; docs/performance.md).
#   scripts/bench.sh [--rounds N] [--quick] [--only sink|relay]
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/bench.py "$@"

#!/bin/sh
# make bench: the MIME extractor alone, then luasmtpd beside Postfix's
# smtp-sink, both driven by smtp-source on loopback, then as a relay beside
# Postfix's own (scripts/bench.py; docs/performance.md).
#   scripts/bench.sh [--rounds N] [--quick] [--only mime|sink|relay]
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/bench.py "$@"

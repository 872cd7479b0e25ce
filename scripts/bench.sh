#!/bin/sh
# make bench: the MIME extractor alone, then luasmtpd beside Postfix's
# smtp-sink and the peers, driven by smtp-source on loopback; W6 (STARTTLS)
# from build/tls_load; the memory budget; then as a relay beside Postfix's
# own (scripts/bench.py; docs/performance.md).
#   scripts/bench.sh [--rounds N] [--quick] [--only mime|sink|tls|budget|relay]
#                    [--workers-list 1,2,4,8]
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/bench.py "$@"

#!/bin/sh
# Run every suite: C unit tests, the fuzz targets briefly, and the
# integration suite, each against the normal build and the ASan+UBSan
# build; with `fuzz`, the fuzz targets only (make fuzz).  The last line sums
# them up as "N passed, N failed"; the exit status is 1 when anything failed.
#   tests/run.sh [BUILD_DIR] [fuzz]
set -u
B=${1:-build}
only=${2:-}
# real mail from other parsers' test suites, read in place (never copied)
CORPUS=${LUASMTPD_CORPUS:-../shared/external_corpus}
log=$(mktemp)
one=$(mktemp)
trap 'rm -f "$log" "$one"' EXIT
status=0

# Debian's python3, which has the packages of scripts/deps.sh (aiosmtpd),
# even where another python3 comes first in PATH
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Run one suite: show its failures (a sanitizer's report with its stack)
# and its closing line, keep the latter.
suite() {
    echo "== $*"
    "$@" >"$one" 2>&1 || status=1
    grep -E '^(FAIL|ERROR)|^[A-Za-z.]*(Error|Exception)\b|runtime error|AddressSanitizer|^    #[0-9]+ ' "$one" |
        head -n 40
    tail -n 1 "$one" | tee -a "$log"
}

if [ "$only" != fuzz ]; then
    for t in "$B"/test_* "$B"/san/test_*; do
        [ -x "$t" ] && suite "$t"
    done
fi
# Fuzz targets, briefly: a crash or a sanitizer report fails the run.  New
# inputs go to the first directory, under the build; the seeds stay as they
# are.
fuzz() {
    f=$1
    name=$(basename "$f" | sed 's/^fuzz_//')
    corpus="$B/fuzz/corpus-$(basename "$f")"
    seeds="tests/data"
    [ -d "tests/fuzz/$name" ] && seeds="$seeds tests/fuzz/$name"
    [ "$name" = mime ] && [ -d "$CORPUS" ] && seeds="$seeds $CORPUS"
    dict=""
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    mkdir -p "$corpus"
    # shellcheck disable=SC2086
    if "$f" -max_total_time="${FUZZ_BRIEF:-20}" -max_len=65536 $dict "$corpus" $seeds >"$one" 2>&1; then
        line="$(basename "$f"): 1 passed, 0 failed ($(grep -o 'Done [0-9]* runs' "$one"))"
    else
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$one" | head -n 20
        line="$(basename "$f"): 0 passed, 1 failed"
        status=1
    fi
    echo "$line" | tee -a "$log"
}
for f in "$B"/fuzz/fuzz_*; do
    [ -x "$f" ] && { echo "== $f"; fuzz "$f"; }
done

if [ "$only" != fuzz ]; then
    for bin in "$B/luasmtpd" "$B/san/luasmtpd"; do
        [ -x "$bin" ] && suite "$PYTHON" tests/integration/run.py --binary "$bin"
    done
fi

# Sum the per-suite "N passed, N failed" lines.
awk '
    match($0, /[0-9]+ passed, [0-9]+ failed/) {
        split(substr($0, RSTART, RLENGTH), f, /[ ,]+/)
        p += f[1]; fl += f[3]; n++
    }
    END {
        if (n == 0) { print "no test suite ran"; exit 1 }
        printf "total: %d passed, %d failed\n", p, fl
        exit fl > 0
    }' "$log" || status=1
exit $status

#!/usr/bin/env python3
"""Run the integration suite against one build of luasmtpd.

    python3 tests/integration/run.py --binary build/luasmtpd [-k PATTERN] [-v]

Ends with the line "integration: N passed, N failed"; exit status 1 on any
failure.
"""
import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/luasmtpd")
    ap.add_argument("--label", default="integration")
    ap.add_argument("-k", dest="pattern", action="append", help="only tests matching")
    ap.add_argument("-v", dest="verbose", action="store_true")
    opts = ap.parse_args()

    os.environ["LUASMTPD_BIN"] = os.path.abspath(opts.binary)
    sys.path.insert(0, HERE)
    loader = unittest.TestLoader()
    if opts.pattern:
        loader.testNamePatterns = ["*%s*" % p for p in opts.pattern]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    start = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2 if opts.verbose else 1, stream=sys.stdout).run(suite)
    # a test can both fail and error (in tearDown): count it once; an error
    # outside any test (setUpClass) counts as a failure of its own
    bad = [t for t, _ in result.failures + result.errors] + list(result.unexpectedSuccesses)
    failed = len({t.id() for t in bad})
    skipped = len(result.skipped)
    passed = result.testsRun - len({t.id() for t in bad if isinstance(t, unittest.TestCase)}) - skipped
    print("%s (%s, %.0fs): %d passed, %d failed, %d skipped"
          % (opts.label, os.path.relpath(opts.binary), time.monotonic() - start, passed, failed, skipped))
    sys.exit(1 if failed or result.testsRun == 0 else 0)


if __name__ == "__main__":
    main()

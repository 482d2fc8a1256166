#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, and runs every test suite
# (unit, parsers, conformance, parity), then the file parsers again under ASan+UBSan, then every
# libFuzzer target briefly on its seed corpus (a target that cannot start or crashes fails).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
jobs=$(nproc)
# Real DICOM/NIfTI test files shipped in Debian packages (downloaded, not installed); the tests
# that need them skip if this cannot reach the mirror.
./scripts/fetch-test-data.sh build/testdata || echo "test: could not fetch Debian test data; those tests will skip"
export HG_TESTDATA="$PWD/build/testdata"

# PyPI packages of the client-compatibility tests (the openai SDK) in a venv; without PyPI those skip.
if py=$(./scripts/test-python.sh); then export HG_TEST_PYTHON="$py"
else echo "test: could not set up build/py-test from PyPI; the openai client test will skip"; fi

echo "== test suites (build/) =="
ctest --test-dir build -j "$jobs" --output-on-failure --timeout 900

echo "== parsers under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) =="
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHG_SANITIZE=ON -DHG_PARSERS_ONLY=ON \
      -DHG_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -j "$jobs" --output-on-failure --timeout 900 -L parsers
echo "== the thread pool under ThreadSanitizer (build-tsan/) =="
./scripts/tsan.sh
echo "== every fuzz target, 10 s each on its seeds (clang + ASan/UBSan, build-fuzz/) =="
./scripts/fuzz-ci.sh 10
echo "== all tests passed =="

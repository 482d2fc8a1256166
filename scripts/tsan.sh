#!/usr/bin/env bash
# The thread pool (core/thread_pool.cpp: every parallel op of the engine runs on it) and its stress
# tests under ThreadSanitizer: data races in the job hand-off fail the run. Compiled directly (a few
# files) rather than a whole TSan build of the project. About a minute on 2 cores.
#
#   scripts/tsan.sh --server   instead: the HTTP server's request handling under TSan (chat, SSE,
#                              429/504, prefix cache, images, sharing, the live plugin swap under 20
#                              streaming clients). It needs a TSan build of the whole project in
#                              build-tsan-server/ (~20 min on 2 cores from nothing, ~3.5 min of tests),
#                              so scripts/test.sh does not run it. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--server" ]]; then
  out=build-tsan-server
  cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHG_BUILD_BENCH=OFF \
    "-DCMAKE_CXX_FLAGS=-fsanitize=thread -g" "-DCMAKE_C_FLAGS=-fsanitize=thread -g" \
    -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread >/dev/null
  cmake --build "$out" -j "$(nproc)" --target test_unit
  # The hostile-DICOM tests decode in a child process that runs out of its memory limit on
  # purpose; TSan's allocator reports that in the child, which the parent already expects to fail.
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$out/bin/test_unit" \
    --gtest_filter='ServerHttp.*:ServerSse.*:PrefixCache.*:ServerImages.*:ServerShare.*:ServerWeb.*:UpdateSwapStream.*'
  exit
fi
out=build-tsan
mkdir -p "$out"
g++ -std=c++20 -O1 -g -fsanitize=thread -Isrc src/core/thread_pool.cpp src/core/cpu_features.cpp \
  tests/unit/thread_pool_test.cpp -lgtest -lgtest_main -pthread -o "$out/thread_pool_tsan"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$out/thread_pool_tsan"

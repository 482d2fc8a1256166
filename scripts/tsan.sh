#!/usr/bin/env bash
# The thread pool (core/thread_pool.cpp: every parallel op of the engine runs on it) and its stress
# tests under ThreadSanitizer: data races in the job hand-off fail the run. Compiled directly (a few
# files) rather than a whole TSan build of the project. About a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build-tsan
mkdir -p "$out"
g++ -std=c++20 -O1 -g -fsanitize=thread -Isrc src/core/thread_pool.cpp src/core/cpu_features.cpp \
  tests/unit/thread_pool_test.cpp -lgtest -lgtest_main -pthread -o "$out/thread_pool_tsan"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$out/thread_pool_tsan"

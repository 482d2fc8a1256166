#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.cpp) with clang + ASan/UBSan and runs each for a
# bounded time, seeded from the committed fixtures. Not part of CI.
#   scripts/fuzz.sh [seconds per target, default 60] [target names...]
# Corpora grow in fuzz/corpus-<name>/; crashes land in fuzz/corpus-crashes-<name>/ (both git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHG_FUZZ=ON \
  -DHG_PARSERS_ONLY=ON -DHG_BUILD_TESTS=OFF -DHG_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)"

fx=tests/fixtures/formats
seed() {  # seed <target> <files...>
  local dir="fuzz/corpus-$1"; shift
  mkdir -p "$dir"
  for f in "$@"; do [ -f "$f" ] && cp -n "$f" "$dir/$(echo "$f" | tr '/' '_')" || true; done
}
seed gguf $fx/gguf/*.gguf
seed safetensors $fx/safetensors/*.safetensors $fx/safetensors/hf_sharded/*.safetensors $fx/safetensors/hostile/*
seed zip $fx/torch/*.pt $fx/torch/*.bin $fx/torch/lightning.ckpt $fx/torch/hostile/*.pt
seed pickle $fx/pickle/*.pkl $fx/torch/tensors_legacy.pt $fx/torch/lightning_legacy.ckpt $fx/torch/hostile/os_system_legacy.pt

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls build-fuzz/bin/ | sed -n 's/^fuzz_//p'))
for t in "${targets[@]}"; do
  echo "== fuzz_$t for ${secs}s =="
  mkdir -p "fuzz/corpus-crashes-$t"
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-fuzz/bin/fuzz_$t" "fuzz/corpus-$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/corpus-crashes-$t/" -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" || true
done

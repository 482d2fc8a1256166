#!/usr/bin/env bash
# Every kernel level side by side, in one run on one machine (docs/PERFORMANCE.md, "Kernel levels"):
#
#   scripts/bench-levels.sh [-t 2] [--levels avx2,avx512] [--model FILE ...] [--quick]
#
# 1. healthgpt bench --kernels --isa LEVELS: every weight type, decode (M=1) and prefill (M=512),
#    the levels interleaved case by case, with the speed-up.
# 2. The vision tower (bench --tests img) with F16 and with Q8_0 matrices, per level.
# 3. For each --model (a text GGUF, e.g. bench-models/phi3-mini-q4_k.gguf from
#    `healthgpt bench --write-model`): pp512, tg64 and ttft-image per level, levels alternating.
# Levels are chosen with HEALTHGPT_ISA (a level this CPU cannot run is refused, not faked).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 levels=avx2,avx512 quick=0
models=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -t) threads=$2; shift 2 ;;
    --levels) levels=$2; shift 2 ;;
    --model) models+=("$2"); shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
hg=${HEALTHGPT_BIN:-build/bin/healthgpt}
[[ -x $hg ]] || { echo "build first: ./scripts/build.sh" >&2; exit 1; }
IFS=, read -ra level_list <<< "$levels"
supported=$("$hg" info | sed -n 's/^isa supported: *//p')
for l in "${level_list[@]}"; do
  if ! HEALTHGPT_ISA=$l "$hg" info | grep -q "^level $l .*runs on this CPU"; then
    echo "level $l does not run on this CPU (best: $supported); choose from: $("$hg" info | sed -n 's/^level \([a-z0-9]*\) .*runs on this CPU/\1/p' | tr '\n' ' ')" >&2
    exit 1
  fi
done
"$hg" info
echo
min_time=0.5
[[ $quick == 1 ]] && min_time=0.2
"$hg" bench --kernels --isa "$levels" -t "$threads" --min-time "$min_time"
echo
reps=3
[[ $quick == 1 ]] && reps=1
for img_type in f16 q8_0; do
  for l in "${level_list[@]}"; do
    echo "### vision tower, $img_type matrices, level $l"
    HEALTHGPT_ISA=$l "$hg" bench --tests img -r "$reps" -t "$threads" --img-type "$img_type"
    echo
  done
done
for m in "${models[@]}"; do
  for l in "${level_list[@]}"; do
    echo "### $m, level $l"
    HEALTHGPT_ISA=$l "$hg" bench -m "$m" --tests pp,tg -p 512 -n 64 -r "$reps" -t "$threads"
    HEALTHGPT_ISA=$l "$hg" bench -m "$m" --tests ttft-image -r "$reps" -t "$threads"
    echo
  done
done

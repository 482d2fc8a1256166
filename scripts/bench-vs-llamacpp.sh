#!/usr/bin/env bash
# Side-by-side benchmark: healthgpt vs llama.cpp on the same GGUF files, same threads, same
# prompt/generation lengths, interleaved in one run so both see the same machine conditions.
#
#   scripts/bench-vs-llamacpp.sh [--shape phi3-mini|1b] [--types f16,q8_0,q4_k] [-t 2]
#                                [-p 512] [-n 128] [-r 3] [--rounds 2] [--dir DIR] [--fa 0|1]
#                                [--levels avx2,avx512]
#
# 1. Writes the benchmark models if missing (healthgpt bench --write-model: Phi-3-shaped, random
#    weights, the real Phi-3 vocabulary from $HEALTHGPT_SHARED_DATA/tokenizers/phi3).
# 2. llama.cpp comes from PyPI: llama-cpp-python (version pinned in tests/reference/requirements.txt)
#    built from its sdist on this machine with GGML_NATIVE=ON, into $LLAMA_VENV
#    (default .venv-llamacpp; an existing venv that imports llama_cpp is reused). No llama.cpp code
#    is part of this repository.
# 3. For each round and each type: healthgpt bench (pp, tg; the first round also measures the read
#    bandwidth), then tools/bench/llamacpp_bench.py (llama-bench's pp/tg method) on the same file.
#    --levels: healthgpt once per kernel level (HEALTHGPT_ISA), each its own row ("healthgpt-avx2").
# 4. tools/bench/compare.py prints the table with the ratios; raw JSON lines are kept in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

shape=phi3-mini types=f16,q8_0,q4_k threads=2 n_prompt=512 n_gen=128 reps=3 rounds=2 dir=bench-models fa=0 levels=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --shape) shape=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    -p) n_prompt=$2; shift 2 ;;
    -n) n_gen=$2; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --fa) fa=$2; shift 2 ;;
    --levels) levels=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

export HEALTHGPT_SHARED_DATA=${HEALTHGPT_SHARED_DATA:-../shared/data}
hg=${HEALTHGPT_BIN:-build/bin/healthgpt}
if [[ ! -x $hg ]]; then
  cmake -S . -B build -G Ninja >/dev/null && ninja -C build -j"$threads" healthgpt_cli
fi

venv=${LLAMA_VENV:-.venv-llamacpp}
py=$venv/bin/python
if ! "$py" -c 'import llama_cpp' 2>/dev/null; then
  pin=$(grep -E '^llama-cpp-python==' tests/reference/requirements.txt)
  echo "building $pin from its sdist with GGML_NATIVE=ON into $venv (takes a while)..." >&2
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=$threads \
    "$venv/bin/pip" install --no-binary llama-cpp-python "$pin"
fi
echo "llama.cpp: $("$py" -c 'import llama_cpp; print(llama_cpp.__version__, llama_cpp.llama_print_system_info().decode().strip())')" >&2

mkdir -p "$dir"
IFS=, read -ra type_list <<< "$types"
for t in "${type_list[@]}"; do
  f=$dir/$shape-$t.gguf
  [[ -f $f ]] || "$hg" bench --write-model "$f" --shape "$shape" --type "$t" -t "$threads"
done

out=$dir/results-$shape-$(date +%Y%m%d-%H%M%S).jsonl
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((round = 1; round <= rounds; round++)); do
  for t in "${type_list[@]}"; do
    f=$dir/$shape-$t.gguf
    roof=(); [[ $round == 1 ]] && roof=(--roof)
    if [[ -z $levels ]]; then
      echo "round $round/$rounds, $t: healthgpt" >&2
      "$hg" bench -m "$f" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" "${roof[@]}" -o json >> "$out"
    else
      IFS=, read -ra level_list <<< "$levels"
      for l in "${level_list[@]}"; do
        echo "round $round/$rounds, $t: healthgpt, level $l" >&2
        HEALTHGPT_ISA=$l "$hg" bench -m "$f" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" "${roof[@]}" -o json |
          sed "s/\"engine\": \"healthgpt\"/\"engine\": \"healthgpt-$l\"/" >> "$out"
        roof=()
      done
    fi
    echo "round $round/$rounds, $t: llama.cpp" >&2
    "$py" tools/bench/llamacpp_bench.py -m "$f" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" -fa "$fa" >> "$out"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "raw results: $out" >&2
python3 tools/bench/compare.py "$out"

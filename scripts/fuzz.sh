#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.cpp) with clang + ASan/UBSan, seeds every target from
# the committed fixtures, the shared real files ($HEALTHGPT_SHARED_DATA, default ../shared/data) and
# the Debian test data of scripts/fetch-test-data.sh ($HG_TESTDATA, build/testdata or
# build-fuzz/testdata, when present), and runs the targets one after another, each for a bounded
# time, at nice 19. Fails loudly when a target cannot be built, has no seeds, cannot start or
# crashes. Prints per target: inputs run, coverage (cov/ft of libFuzzer's last stats line), peak
# RSS, crashes; and writes the table to build-fuzz/fuzz-report.tsv.
#   scripts/fuzz.sh [seconds per target, default 60] [target names...]     (3600 = the hour each)
# Environment: FUZZ_CI=1: fresh empty corpus per run (the seeds are only read), for CI;
#              FUZZ_BUILD=dir (default build-fuzz).
# Corpora grow in fuzz/corpus-<name>/ (git-ignored); crashes land in fuzz/corpus-crashes-<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
build="${FUZZ_BUILD:-build-fuzz}"

# clang with libFuzzer (Debian 12: clang-14 + libclang-rt-14-dev provide libclang_rt.fuzzer).
if ! command -v clang++ >/dev/null || ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long){return 0;}' |
     clang++ -x c++ -fsanitize=fuzzer - -o /tmp/hg-fuzz-probe.$$ 2>/dev/null; then
  echo "fuzz: clang with libFuzzer missing; installing clang libclang-rt-14-dev" >&2
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
  echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long){return 0;}' |
    clang++ -x c++ -fsanitize=fuzzer - -o /tmp/hg-fuzz-probe.$$ || { echo "fuzz: FAILED: clang cannot link libFuzzer" >&2; exit 1; }
fi
rm -f /tmp/hg-fuzz-probe.$$

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHG_FUZZ=ON \
  -DHG_PARSERS_ONLY=ON -DHG_BUILD_TESTS=OFF -DHG_BUILD_BENCH=OFF >/dev/null
nice -n 19 cmake --build "$build" -j "$(nproc)" >"$build/fuzz-build.log" 2>&1 ||
  { tail -40 "$build/fuzz-build.log"; echo "fuzz: FAILED: build of the fuzz targets" >&2; exit 1; }

# ---- seed corpora: $build/seeds/<target>/ (rebuilt each run, read-only to libFuzzer) ----
shared="${HEALTHGPT_SHARED_DATA:-../shared/data}"
td=""
for d in "${HG_TESTDATA:-}" build/testdata "$build/testdata"; do [ -n "$d" ] && [ -d "$d" ] && { td="$d"; break; }; done
fx=tests/fixtures
seeds="$build/seeds"
rm -rf "$seeds"
seed() {  # seed <target> <max bytes> <files...>: copies the files of at most max bytes
  local dir="$seeds/$1" max="$2"; shift 2
  mkdir -p "$dir"
  for f in "$@"; do
    [ -f "$f" ] || continue
    [ "$(stat -c %s "$f")" -le "$max" ] || continue
    cp "$f" "$dir/$(echo "$f" | tr '/ ' '__' | sed 's/^[._]*//' | tail -c 200)"
    chmod u+w "$dir"/*
  done
}
seed_find() {  # seed_find <target> <max bytes> <dir> <find args...>
  local t="$1" max="$2" d="$3"; shift 3
  [ -d "$d" ] || return 0
  local files=()
  while IFS= read -r f; do files+=("$f"); done < <(find "$d" -type f "$@" 2>/dev/null | sort)
  [ ${#files[@]} -gt 0 ] && seed "$t" "$max" "${files[@]}"
  return 0
}
K=1024
seed gguf $((512*K)) $fx/formats/gguf/*.gguf $fx/decoder/*/model-q4_0.gguf $fx/decoder/phi3_swa/model-bf16.gguf
seed gguf_tokenizer $((1024*K)) $fx/formats/gguf/*.gguf $fx/generation/model/text.gguf $fx/pipeline/model/text.gguf \
  "$shared/tokenizers/phi3/ggml-vocab-phi-3.gguf"
seed safetensors $((512*K)) $fx/formats/safetensors/*.safetensors $fx/formats/safetensors/hf_single/*.safetensors \
  $fx/formats/safetensors/hf_sharded/*.safetensors $fx/formats/safetensors/hostile/*
seed zip $((512*K)) $fx/formats/torch/*.pt $fx/formats/torch/*.bin $fx/formats/torch/*.ckpt $fx/formats/torch/hostile/*.pt
seed pickle $((512*K)) $fx/formats/pickle/*.pkl $fx/formats/torch/tensors_legacy.pt $fx/formats/torch/lightning_legacy.ckpt \
  $fx/formats/torch/hostile/os_system_legacy.pt
seed yaml $((64*K)) $fx/convert/vqgan/*.yaml
seed_find yaml $((64*K)) "$td" -name '*.yaml' -o -name '*.yml'
seed tokenizer_json $((1024*K)) $fx/convert/*/tokenizer.json $fx/convert/*/tokenizer_config.json \
  $fx/tokenizers/*/tokenizer_config*.json "$shared/tokenizers/qwen2/tokenizer_config.json"
seed tokenizer_model $((512*K)) $fx/convert/phi3/tokenizer.model "$shared/tokenizers/phi3/tokenizer.model"
mkdir -p "$seeds/tokenizer_tiktoken"
[ -f "$shared/tokenizers/cl100k/cl100k_base.tiktoken" ] &&  # the first 2000 ranks: a small real file
  head -n 2000 "$shared/tokenizers/cl100k/cl100k_base.tiktoken" >"$seeds/tokenizer_tiktoken/cl100k_head2000.tiktoken"
printf 'IQ== 0\nIg== 1\nIw== 2\naGVsbG8= 3\n' >"$seeds/tokenizer_tiktoken/tiny.tiktoken"
seed image $((256*K)) $fx/imaging/raster_* $fx/vqgan/metrics/*.png "$shared"/medical/xray/*
seed_find image $((64*K)) "$shared/vqa-rad/images" -name '*.jpg'
seed_find image $((256*K)) "$td" \( -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' -o -name '*.tif' -o -name '*.tiff' -o -name '*.bmp' -o -name '*.gif' \)
seed nifti $((320*K)) "$shared"/medical/nifti/*
seed_find nifti $((256*K)) "$td" \( -name '*.nii' -o -name '*.nii.gz' \)
# fuzz_gdcm_fallback_oom.dcm makes GDCM allocate 3 GB (an earlier finding, handled by the child's
# memory limit; tests/parsers/dicom_isolation_test.cpp): a seed of the isolated target only.
seed dicom $((256*K)) $(ls $fx/imaging/*.dcm | grep -v fuzz_gdcm_fallback_oom) "$shared"/medical/dicom/*.dcm
seed_find dicom $((256*K)) "$td/python3-pydicom" -path '*test_files*' \( -name '*.dcm' -o -name 'IM*' -o -name '[0-9]*' \)
seed_find dicom $((256*K)) "$td/dicom3tools" -name '*.dcm'
seed dicom_isolated $((256*K)) "$seeds"/dicom/* $fx/imaging/fuzz_gdcm_fallback_oom.dcm
seed multipart $((64*K)) fuzz/seeds-multipart/*
seed server_request $((64*K)) fuzz/seeds-server_request/*

# ---- run ----
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls "$build/bin/" | sed -n 's/^fuzz_//p'))
report="$build/fuzz-report.tsv"
printf 'target\tseconds\tseeds\tinputs_run\tcov\tft\tcorpus\tpeak_rss_mb\tcrashes\tstatus\n' >"$report"
failed=()
for t in "${targets[@]}"; do
  bin="$build/bin/fuzz_$t"
  nseeds=$(ls "$seeds/$t" 2>/dev/null | wc -l)
  if [ ! -x "$bin" ]; then echo "fuzz: FAILED: no target fuzz_$t" >&2; failed+=("$t"); continue; fi
  if [ "$nseeds" = 0 ]; then echo "fuzz: FAILED: fuzz_$t has no seed files" >&2; failed+=("$t"); continue; fi
  if [ "${FUZZ_CI:-0}" = 1 ]; then corpus="$(mktemp -d)"; else corpus="fuzz/corpus-$t"; fi
  crashes="fuzz/corpus-crashes-$t"
  mkdir -p "$corpus" "$crashes"
  log="$build/fuzz-$t.log"
  max_len=65536
  limits="-rss_limit_mb=2048"
  case "$t" in
    dicom*|image) max_len=$((256*K)) ;;
    nifti) max_len=$((320*K)) ;;
    tokenizer_model) max_len=$((512*K)) ;;
    tokenizer_json|gguf_tokenizer) max_len=$((1024*K)) ;;
  esac
  # In-process, GDCM allocates what a 32-bit length field declares (up to 4 GB; the product's child
  # ends that under RLIMIT_AS): allowed here so that the run goes on past it.
  [ "$t" = dicom ] && limits="-rss_limit_mb=6144 -malloc_limit_mb=4608"
  echo "== fuzz_$t for ${secs}s ($nseeds seeds, max_len $max_len) =="
  before=$(ls "$crashes" | grep -vc '^slow-unit-' || true)
  rc=0
  LSAN_OPTIONS=suppressions=fuzz/lsan.supp ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    nice -n 19 "$bin" "$corpus" "$seeds/$t" -max_total_time="$secs" -max_len=$max_len $limits \
    -timeout=30 -artifact_prefix="$crashes/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  [ "${FUZZ_CI:-0}" = 1 ] && rm -rf "$corpus"
  # The isolated target's children are forks of this fuzzer: a child that dies (GDCM's assert,
  # out of memory under RLIMIT_AS) runs libFuzzer's death callback and writes a crash- file,
  # although the parent turned that death into an hg::Error. Only the parent's exit status counts
  # there; a sanitizer report in a child makes the parent abort (isolated_decode.h).
  child_deaths=0
  if [ "$t" = dicom_isolated ] && [ "$rc" = 0 ]; then
    mkdir -p "fuzz/corpus-child-deaths-$t"
    for f in $(ls -t "$crashes" | head -n $(( $(ls "$crashes" | wc -l) - before ))); do
      mv "$crashes/$f" "fuzz/corpus-child-deaths-$t/" && child_deaths=$((child_deaths + 1))
    done
  fi
  # Slow units (an input over libFuzzer's 10 s report threshold, below the 30 s -timeout) are a
  # speed finding, not a crash: moved to fuzz/corpus-slow-<target>/ and counted in the report. In
  # the in-process dicom target they are GDCM's fallback parse zero-filling a value of the length
  # a corrupt file declares (up to 4 GB; docs/RELIABILITY.md), which the product's child stops at
  # its memory limit in milliseconds.
  slow=0
  for f in "$crashes"/slow-unit-*; do
    [ -e "$f" ] || continue
    mkdir -p "fuzz/corpus-slow-$t" && mv "$f" "fuzz/corpus-slow-$t/" && slow=$((slow + 1))
  done
  after=$(ls "$crashes" | grep -vc '^slow-unit-' || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
  status=ok
  if [ "$rc" != 0 ] || [ "$after" != "$before" ]; then status="CRASH(rc=$rc)"; fi
  if ! grep -q 'INITED' "$log"; then status="NOT-STARTED(rc=$rc)"; fi
  if [ -z "$runs" ] || [ "$runs" = 0 ]; then [ "$status" = ok ] && status="NO-INPUTS-RUN"; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$secs" "$nseeds" "${runs:-0}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "${rss:-?}" "$((after - before))" "$status" >>"$report"
  echo "   inputs run ${runs:-0}, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, peak RSS ${rss:-?} MB, new crashes $((after - before)), slow units $slow$([ "$t" = dicom_isolated ] && echo ", child deaths handled $child_deaths"): $status"
  if [ "$status" != ok ]; then
    grep -E '==[0-9]+==ERROR|SUMMARY|^ERROR|Test unit written|runtime error|INFO: (seed|0 files)|No such file' "$log" | head -20 >&2 || true
    echo "fuzz: FAILED: fuzz_$t ($status); full log: $log" >&2
    failed+=("$t")
  fi
done
echo "== report ($report) =="
column -t -s $'\t' "$report" 2>/dev/null || cat "$report"
if [ ${#failed[@]} -gt 0 ]; then echo "fuzz: FAILED targets: ${failed[*]}" >&2; exit 1; fi
echo "fuzz: all ${#targets[@]} targets ran without a crash"

#!/usr/bin/env bash
# Reproduces healthgpt-nano from zero (models/healthgpt-nano/README.md): a HealthGPT-architecture
# model (CLIP-style ViT, mlp2x_gelu projector, phi3 decoder, a comprehension H-LoRA plugin) created
# by `healthgpt init-model` with a vocabulary learned from VQA-RAD's training questions, trained from
# scratch by `healthgpt train` on VQA-RAD's training split (1,798 pairs, CC0), quantized, and
# evaluated on the test split (450 questions) by `healthgpt eval`, with the --blind ablation.
# Seeded, and the training kernels are bit-identical for any thread count, so the same inputs should
# give the same files (not yet verified by a second full run). About 35-50 minutes on 2 cores.
#   scripts/train-nano.sh [OUT_DIR]     (default build/nano; the shipped files: models/healthgpt-nano)
# Environment: HEALTHGPT_SHARED_DATA (default ../shared/data) must hold vqa-rad/;
#              NANO_EPOCHS (default below) to try other lengths.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/nano}"
data="${HEALTHGPT_SHARED_DATA:-../shared/data}/vqa-rad"
[ -f "$data/trainset.json" ] || { echo "train-nano: $data/trainset.json not found (set HEALTHGPT_SHARED_DATA)" >&2; exit 1; }
./scripts/build.sh >/dev/null
hg=./build/bin/healthgpt
epochs="${NANO_EPOCHS:-14}"

rm -rf "$out"
mkdir -p "$out"
# --- the architecture (sizes chosen by measurement: docs/EVALUATION.md, models/healthgpt-nano/README.md)
"$hg" init-model "$out/init" --data "$data/trainset.json" --name healthgpt-nano --seed 1 \
  --embd 256 --ff 512 --layers 4 --heads 4 --ctx 2048 \
  --image 128 --patch 16 --vis-hidden 192 --vis-ff 384 --vis-layers 4 --vis-heads 4 \
  --rank 16 --alpha 32 --experts 4 --vision-layer -1
# --- training from scratch: every tensor (decoder, tower, plugin's H-LoRA and projector)
time "$hg" train -m "$out/init" --data "$data/trainset.json" --lowercase-answers --full --unfreeze-vision \
  --lr 1e-3 --vision-lr 1e-3 --projector-lr 1e-3 --weight-decay 0.1 \
  --batch 16 --epochs "$epochs" --schedule cosine --warmup-ratio 0.03 --max-seq 512 --seed 42 \
  --out-type f32 -o "$out/f32" 2>&1 | tr '\r' '\n' | grep -E "^train:|^step [0-9]*00/" || true
[ -f "$out/f32/text.gguf" ] || { echo "train-nano: training failed" >&2; exit 1; }
# --- the shipped type (Q8_0) and Q4_K, for the quantization table
for q in q8_0 q4_k; do
  mkdir -p "$out/$q/plugins"
  "$hg" quantize -t "$q" "$out/f32/text.gguf" "$out/$q/text.gguf" >/dev/null
  "$hg" quantize -t "$q" "$out/f32/vision.gguf" "$out/$q/vision.gguf" >/dev/null
  "$hg" quantize -t "$q" "$out/f32/plugins/com.gguf" "$out/$q/plugins/com.gguf" >/dev/null
done
# --- evaluation on VQA-RAD's test split
for v in f32 q8_0 q4_k; do
  "$hg" eval -m "$out/$v" --bench vqa-rad --data "$data" --split test -o "$out/eval-$v.json" >/dev/null
done
"$hg" eval -m "$out/q8_0" --bench vqa-rad --data "$data" --split test --blind -o "$out/eval-q8_0-blind.json" >/dev/null
for v in f32 q8_0 q4_k q8_0-blind; do
  echo "== VQA-RAD test, healthgpt-nano $v =="
  cat "$out/eval-$v.md"
done

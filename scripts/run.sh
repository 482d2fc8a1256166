#!/usr/bin/env bash
# The README's main-job command: builds healthgpt.cpp and runs `healthgpt ask` (and `generate`) end to end.
#
# Model: $HEALTHGPT_MODEL, else models/healthgpt-m3 (a folder `healthgpt convert` writes, see
# docs/MODELS.md), else the project's own tiny demo model, written into build/demo-model: random
# weights in the real layout, so its answers are random text, not medical.
# Image: a chest X-ray from the shared data ($HEALTHGPT_SHARED_DATA, default ../shared/data) if
# present, else the demo model's synthetic radiograph.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
hg=./build/bin/healthgpt
"$hg" info

model=""
for m in "${HEALTHGPT_MODEL:-}" models/healthgpt-m3; do
  if [ -n "$m" ] && [ -f "$m/text.gguf" ]; then model="$m"; break; fi
done
demo=0
if [ -z "$model" ]; then
  demo=1
  model=build/demo-model
  "$hg" make-demo-model "$model" >/dev/null
fi

data="${HEALTHGPT_SHARED_DATA:-../shared/data}"
image=""
for f in "$data/medical/xray/nih_cxr14_00000001_000.png" "$data"/medical/xray/*.png "$data"/medical/xray/*.jpg; do
  if [ -f "$f" ]; then image="$f"; break; fi
done
[ -n "$image" ] || image="$model/example.png"  # the demo model writes one
if [ ! -f "$image" ]; then "$hg" make-demo-model build/demo-model >/dev/null; image=build/demo-model/example.png; fi

question="What does this chest X-ray show?"
echo
echo "== healthgpt ask -m $model --image $image \"$question\""
if [ "$demo" = 1 ]; then
  echo "NOTE: no converted HealthGPT model was found (models/healthgpt-m3, or set HEALTHGPT_MODEL; docs/MODELS.md)."
  echo "      This runs the project's tiny DEMO model: random weights in HealthGPT's real layout (CLIP tower,"
  echo "      projector, H-LoRA plugin, Phi-3-family decoder). Its answer is RANDOM TEXT, NOT MEDICAL."
  "$hg" ask -m "$model" --image "$image" -n 48 "$question"
else
  "$hg" ask -m "$model" --image "$image" -n 256 "$question"
fi

# Image generation (issue #7) where the model has a VQGAN and a generation plugin (the demo model
# has both; a converted M3 has them when gen_hlora_weights.bin and last.ckpt were given).
if [ -f "$model/vqgan.gguf" ] && [ -f "$model/plugins/gen.gguf" ]; then
  out=build/generated-mri.png
  echo
  echo "== healthgpt generate -m $model --task ct2mri --image $image -o $out"
  [ "$demo" = 1 ] && echo "NOTE: the DEMO model's generated image is a RANDOM PATTERN, NOT MEDICAL."
  "$hg" generate -m "$model" --task ct2mri --image "$image" -o "$out"
fi

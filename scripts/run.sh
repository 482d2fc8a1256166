#!/usr/bin/env bash
# The README's main-job command: builds healthgpt.cpp and runs `healthgpt ask` (and `generate`) end to end.
#
# Model: $HEALTHGPT_MODEL, else models/healthgpt-m3 (a folder `healthgpt convert` writes, see
# docs/MODELS.md), else healthgpt-nano (models/healthgpt-nano, trained from scratch on VQA-RAD; it
# answers a VQA-RAD test question and the ground truth is printed beside), else the project's own
# tiny demo model, written into build/demo-model: random weights in the real layout, so its answers
# are random text, not medical.
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
data="${HEALTHGPT_SHARED_DATA:-../shared/data}"
vqarad="$data/vqa-rad"
# healthgpt-nano (models/healthgpt-nano: trained from scratch on VQA-RAD by scripts/train-nano.sh)
# answers a real VQA-RAD test question; its ground truth is printed beside the answer.
if [ -z "$model" ] && [ -f models/healthgpt-nano/text.gguf ] && [ -f "$vqarad/testset.json" ]; then
  model=models/healthgpt-nano
  qid=${NANO_QID:-844}
  item=$(python3 - "$vqarad/testset.json" "$qid" <<'PY'
import json, sys
for x in json.load(open(sys.argv[1])):
    if str(x["qid"]) == sys.argv[2]:
        print(x["image_name"]); print(x["question"]); print(x["answer"]); print(x["answer_type"].strip()); break
PY
)
  image="$vqarad/images/$(sed -n 1p <<<"$item")"
  question="$(sed -n 2p <<<"$item")"
  truth="$(sed -n 3p <<<"$item")"
  echo
  echo "== healthgpt ask -m $model --image $image \"$question\""
  echo "NOTE: healthgpt-nano is a small demonstration model trained on under two thousand VQA-RAD questions"
  echo "      (models/healthgpt-nano/README.md: its measured accuracy and limits). Not a medical device."
  "$hg" ask -m "$model" --image "$image" -n 32 "$question"
  echo "ground truth (VQA-RAD testset.json, qid $qid, $(sed -n 4p <<<"$item")): $truth"
  echo
  echo "Evaluate it on all 450 test questions:  $hg eval -m $model --bench vqa-rad --data $vqarad"
  echo "Serve it over HTTP (docs/SERVER.md):     $hg serve -m $model --data-dir build/serve-data"
  exit 0
fi
demo=0
if [ -z "$model" ]; then
  demo=1
  model=build/demo-model
  "$hg" make-demo-model "$model" >/dev/null
fi

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
  echo "NOTE: no converted HealthGPT model was found (models/healthgpt-m3, or set HEALTHGPT_MODEL; docs/MODELS.md),"
  echo "      and healthgpt-nano needs VQA-RAD in $data. This runs the project's tiny DEMO model: random weights"
  echo "      in HealthGPT's real layout (CLIP tower, projector, H-LoRA plugin, Phi-3-family decoder)."
  echo "      Its answer is RANDOM TEXT, NOT MEDICAL."
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

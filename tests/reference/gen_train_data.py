#!/usr/bin/env python3
"""Oracle for the training data layer (tests/unit/train_dataset_test.cpp, src/train/dataset.h).

Writes tests/fixtures/train_data/:
  data.json      a small LLaVA conversation file: single-turn with an image, multi-turn, text-only,
                 two images, an "<image>" tag in the middle of the question, a leading gpt turn
  expected.json  per record and max_seq: input_ids and labels as the reference builds them
  a.png, b.png   two tiny images the records refer to
  expected_bos.json  the same at max_seq 2048 with add_bos_token true (tokenizer_config.add_bos.json)
  permutations.json  the data order (dataset.h permutation) from a Python mt19937_64 written out

The expected ids use the real Phi-3 slow tokenizer (HealthGPT: AutoTokenizer(use_fast=False) ->
LlamaTokenizer, legacy=False) from the shared tokenizer.model and the pinned
tests/fixtures/tokenizers/phi3/tokenizer_config.json, i.e. exactly what src/text implements for phi3.
The preprocessing is LLaVA's, re-written here:
  * preprocess_multimodal: "<image>" removed from a human value, the rest .strip()'d, "<image>\n" in
    front (one per removed tag; LLaVA only ever has one);
  * the first turn dropped when it is not from "human" (source[1:]);
  * conversation.py get_prompt (MPT style for phi3_instruct) with every turn answered;
  * mm_utils.tokenizer_image_token on the whole prompt;
  * targets: the token spans of each answer and its closing "<|end|>", found by tokenising the
    prompt's prefixes up to each boundary (preprocess_mpt's round-by-round length counting, without
    its instruction_len - 1 / round_len-without-sep off-by-ones; dataset.h says why), -100 elsewhere;
  * truncation to max_seq rows (an image slot = 576 rows; a slot that does not fit is removed with
    everything after it).
For each record we also record what LLaVA's own preprocess_mpt (v1.5 text, has_image=True) would give
("llava_mpt_labels"), to document the off-by-ones: the test does not use it.
Deterministic; no randomness.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoTokenizer

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "train_data"
SHARED = Path(os.environ.get("HEALTHGPT_SHARED_DATA", HERE.parents[2] / "shared" / "data"))
IMAGE_TOKEN_INDEX, IGNORE_INDEX, IMAGE_ROWS = -200, -100, 576
SYSTEM, ROLES, SEP = "<|system|>\nYou are a helpful AI assistant.", ("\n<|user|>\n", "\n<|assistant|>\n"), "<|end|>"

RECORDS = [
    {"id": "single", "image": "a.png", "modality": "X-ray",
     "conversations": [{"from": "human", "value": "<image>\nWhat is the modality of this image?"},
                       {"from": "gpt", "value": "This is a chest X-ray."}]},
    {"id": "multi", "image": "a.png",
     "conversations": [{"from": "human", "value": "<image>\nDescribe the findings."},
                       {"from": "gpt", "value": "The lungs are clear. No effusion."},
                       {"from": "human", "value": "Is there a fracture?"},
                       {"from": "gpt", "value": "No"},
                       {"from": "human", "value": "Any cardiomegaly?"},
                       {"from": "gpt", "value": "Yes, mild."}]},
    {"id": "text_only",
     "conversations": [{"from": "human", "value": "What does CT stand for?"},
                       {"from": "gpt", "value": "Computed tomography."}]},
    {"id": "two_images", "image": ["a.png", "b.png"],
     "conversations": [{"from": "human", "value": "<image>\n<image>\nCompare these two images."},
                       {"from": "gpt", "value": "The second shows a new opacity in the right lower lobe."}]},
    {"id": 7, "image": "b.png",
     "conversations": [{"from": "human", "value": "  Is this   <image> normal?  "},
                       {"from": "gpt", "value": "yes"}]},
    {"id": "leading_gpt", "image": "b.png",
     "conversations": [{"from": "gpt", "value": "Hello, I am dropped."},
                       {"from": "human", "value": "<image>\nWhich organ?"},
                       {"from": "gpt", "value": "Brain"}]},
]
MAX_SEQS = [2048, 600, 640]  # 600: multi keeps 2 answer tokens, single is too long; 640: two_images too long


def tokenizer_image_token(prompt, tok):
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for k, c in enumerate(chunks):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)  # the separator [-200] * (offset + 1), minus the stripped first element
        ids.extend(c[offset:])
    return ids


def turns_of(rec):
    conv = rec["conversations"]
    if conv[0]["from"] != "human":
        conv = conv[1:]
    out = []
    for j, t in enumerate(conv):
        v = t["value"]
        if j % 2 == 0 and "<image>" in v:
            n = v.count("<image>")
            v = "<image>\n" * n + v.replace("<image>", "").strip()
        out.append(v)
    return out


def example(rec, tok, max_seq):
    msgs = turns_of(rec)
    prompt = SYSTEM + SEP
    spans = []
    for j, m in enumerate(msgs):
        prompt += ROLES[j % 2]
        b = len(prompt)
        prompt += m + SEP
        if j % 2 == 1:
            spans.append((b, len(prompt)))
    ids = tokenizer_image_token(prompt, tok)
    labels = [IGNORE_INDEX] * len(ids)
    for cb, ce in spans:
        pb, pe = tokenizer_image_token(prompt[:cb], tok), tokenizer_image_token(prompt[:ce], tok)
        assert pb == ids[:len(pb)] and pe == ids[:len(pe)], "prefix not stable"
        labels[len(pb):len(pe)] = ids[len(pb):len(pe)]
    rows, keep = 0, 0
    for t in ids:
        r = IMAGE_ROWS if t == IMAGE_TOKEN_INDEX else 1
        if rows + r > max_seq:
            break
        rows, keep = rows + r, keep + 1
    return prompt, ids[:keep], labels[:keep], rows, keep < len(ids)


def llava_mpt_labels(prompt, tok):
    """llava/train/train.py preprocess_mpt (v1.5), has_image=True branch, for documentation."""
    target = tokenizer_image_token(prompt, tok)
    total_len = len(target)
    sep = SEP + ROLES[1]
    rounds = prompt.split(SEP)
    re_rounds = [SEP.join(rounds[:3])]
    for i in range(3, len(rounds), 2):
        re_rounds.append(SEP.join(rounds[i:i + 2]))
    cur_len = 0
    for rou in re_rounds:
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(rou, tok))
        instruction_len = len(tokenizer_image_token(parts[0], tok)) - 1
        target[cur_len:cur_len + instruction_len] = [IGNORE_INDEX] * max(0, min(instruction_len, total_len - cur_len))
        cur_len += round_len
    target[cur_len:] = [IGNORE_INDEX] * max(0, total_len - cur_len)
    mismatch = cur_len != total_len
    if mismatch:
        target = [IGNORE_INDEX] * total_len
    return target, mismatch


class MT19937_64:
    """std::mt19937_64 (the C++ standard's parameters), written out: the data order's oracle."""
    M64 = (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [seed & self.M64]
        for i in range(1, 312):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.M64)
        self.i = 312

    def __call__(self):
        if self.i >= 312:
            for k in range(312):
                y = (self.mt[k] & 0xFFFFFFFF80000000) | (self.mt[(k + 1) % 312] & 0x7FFFFFFF)
                v = self.mt[(k + 156) % 312] ^ (y >> 1)
                if y & 1:
                    v ^= 0xB5026F5AA96619E9
                self.mt[k] = v
            self.i = 0
        x = self.mt[self.i]
        self.i += 1
        x ^= (x >> 29) & 0x5555555555555555
        x ^= (x << 17) & 0x71D67FFFEDA60000
        x ^= (x << 37) & 0xFFF7EEE000000000
        x ^= x >> 43
        return x & self.M64


def permutation(n, seed, epoch):
    """dataset.h permutation(): Fisher-Yates from the top, rejection-sampled bounded draw."""
    rng = MT19937_64(seed ^ ((epoch * 0x9E3779B97F4A7C15) & MT19937_64.M64))
    p = list(range(n))
    for i in range(n, 1, -1):
        limit = MT19937_64.M64 - MT19937_64.M64 % i
        while True:
            x = rng()
            if x < limit:
                break
        j = x % i
        p[i - 1], p[j] = p[j], p[i - 1]
    return p


def load_phi3(config):
    tmp = tempfile.mkdtemp()
    try:
        shutil.copy(SHARED / "tokenizers" / "phi3" / "tokenizer.model", tmp)
        shutil.copy(HERE.parent / "fixtures" / "tokenizers" / "phi3" / config, Path(tmp) / "tokenizer_config.json")
        tok = AutoTokenizer.from_pretrained(tmp, padding_side="right", use_fast=False)
    finally:
        shutil.rmtree(tmp)
    assert type(tok).__name__ == "LlamaTokenizer" and len(tok) == 32011
    return tok


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok, tok_bos = load_phi3("tokenizer_config.json"), load_phi3("tokenizer_config.add_bos.json")

    # two tiny deterministic images (gradient and checkerboard)
    y, x = np.mgrid[0:24, 0:32]
    Image.fromarray(np.stack([x * 8, y * 10, (x + y) * 4], -1).astype(np.uint8)).save(OUT / "a.png")
    Image.fromarray((((x // 4 + y // 4) % 2) * 255).astype(np.uint8)).save(OUT / "b.png")
    json.dump(RECORDS, open(OUT / "data.json", "w"), indent=1)

    cases = []
    for max_seq in MAX_SEQS:
        for i, rec in enumerate(RECORDS):
            prompt, ids, labels, rows, truncated = example(rec, tok, max_seq)
            case = {"index": i, "id": str(rec["id"]), "max_seq": max_seq, "prompt": prompt, "input_ids": ids,
                    "labels": labels, "n_rows": rows, "truncated": truncated,
                    "n_images": sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)}
            if max_seq == MAX_SEQS[0]:
                ll, mismatch = llava_mpt_labels(prompt, tok)
                case["llava_mpt_labels"], case["llava_mpt_mismatch"] = ll, mismatch
            if any(l != IGNORE_INDEX for l in labels):
                cases.append(case)
            else:
                cases.append({"index": i, "id": str(rec["id"]), "max_seq": max_seq, "too_long": True})
    # mt19937_64 self-check: the standard requires the 10000th output for the default seed 5489
    r = MT19937_64(5489)
    for _ in range(9999):
        r()
    assert r() == 9981545732273789042
    perms = [{"n": n, "seed": seed, "epoch": epoch, "order": permutation(n, seed, epoch)}
             for n, seed, epoch in [(10, 42, 0), (10, 42, 1), (1, 7, 0), (37, 123456789, 3), (1000, 2**63 + 5, 2)]]
    json.dump({"permutations": perms}, open(OUT / "permutations.json", "w"), separators=(",", ":"))
    # the BOS branch of tokenizer_image_token (tokenizer_config.add_bos.json: add_bos_token true)
    bos_cases = []
    for i, rec in enumerate(RECORDS):
        prompt, ids, labels, rows, truncated = example(rec, tok_bos, 2048)
        assert ids[0] == tok_bos.bos_token_id
        bos_cases.append({"index": i, "id": str(rec["id"]), "input_ids": ids, "labels": labels})
    json.dump({"bos_cases": bos_cases}, open(OUT / "expected_bos.json", "w"), separators=(",", ":"))
    json.dump({"tokenizer": "phi3 slow (tokenizer.model + fixtures/tokenizers/phi3/tokenizer_config.json)",
               "template": "phi3_instruct", "image_rows": IMAGE_ROWS, "cases": cases},
              open(OUT / "expected.json", "w"), indent=None, separators=(",", ":"))
    for c in cases:
        if "labels" in c:
            print(c["id"], c["max_seq"], len(c["input_ids"]), "targets", sum(l != IGNORE_INDEX for l in c["labels"]),
                  "llava mismatch" if c.get("llava_mpt_mismatch") else "")
        else:
            print(c["id"], c["max_seq"], "too long")


if __name__ == "__main__":
    main()

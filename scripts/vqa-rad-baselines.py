#!/usr/bin/env python3
"""Model-free baselines on VQA-RAD's test split (closed questions), for scale beside a model's score.

  majority "no"        answer every closed question "no"
  nearest question     answer with the training answer of the most similar training question (word
                       Jaccard over lower-cased alphanumeric words), any image: a blind language prior
  nearest, same image  the same, among the training questions about the same image (every test image
                       is also in the training split)

Scoring: lower-cased, stripped string equality, the closed rule of docs/EVALUATION.md for yes/no.
Standard library only.   python3 scripts/vqa-rad-baselines.py [VQA_RAD_DIR]
"""
import collections
import json
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/vqa-rad"
train = json.load(open(f"{root}/trainset.json"))
test = json.load(open(f"{root}/testset.json"))


def words(s):
    return set(re.findall(r"[a-z0-9]+", s.lower()))


def norm(a):
    return str(a).lower().strip()


def closed(x):
    return x["answer_type"].strip().upper() == "CLOSED"


def nearest(q, pool):
    w = words(q)
    return max(pool, key=lambda y: len(words(y["question"]) & w) / max(1, len(words(y["question"]) | w)))


train_closed = [x for x in train if closed(x)]
by_image = collections.defaultdict(list)
for x in train:
    by_image[x["image_name"]].append(x)
items = [x for x in test if closed(x)]
scores = {"majority \"no\"": 0, "nearest question (blind)": 0, "nearest question, same image": 0}
for x in items:
    truth = norm(x["answer"])
    scores["majority \"no\""] += truth == "no"
    scores["nearest question (blind)"] += norm(nearest(x["question"], train_closed)["answer"]) == truth
    scores["nearest question, same image"] += norm(nearest(x["question"], by_image[x["image_name"]])["answer"]) == truth
print(f"VQA-RAD test, {len(items)} closed questions")
print("| baseline | closed acc |\n|---|---:|")
for k, v in scores.items():
    print(f"| {k} | {100.0 * v / len(items):.1f} % |")

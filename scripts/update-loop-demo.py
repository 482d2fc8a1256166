#!/usr/bin/python3
"""The update loop end to end on a real model in a running `healthgpt serve` (docs/UPDATES.md).

A script, not a CI test: loopback only, stdlib only, bounded in time (--time-limit). It starts
`healthgpt serve` on 127.0.0.1 over a fresh data directory (keys made with `healthgpt keys add`),
then plays the people of the loop through the HTTP API:

  patients   upload a VQA-RAD training image each, share the consultation with the physicians,
             ask its question; the items whose served answer is wrong are kept (--cases of them)
  physicians file a correction on each kept answer (author rotates over 3 physicians) and a
             different physician approves it from the review queue
  admin      starts an update job (POST /v1/admin/updates, the server's --vqa-rad test guard with
             a small vqa_rad_limit), polls it, prints the gate report, promotes if it passed
  patients   ask the same cases again: how many served answers are now the corrected ones

--wrong files deliberately wrong corrections (each item gets another item's answer) and shows
the gate refusing the candidate with its reasons; promotion is then tried and must be refused.

    nice -n 10 /usr/bin/python3 scripts/update-loop-demo.py --healthgpt build/bin/healthgpt \\
        -m models/healthgpt-nano --vqa-rad /work/shared/data/vqa-rad

Exit 0 when the run did what it claims (for --wrong: the gate refused), 1 otherwise, 77 when
the VQA-RAD folder is absent.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time


def norm(s):
    return " ".join(s.lower().split()).rstrip(".?!")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--healthgpt", default="build/bin/healthgpt")
    ap.add_argument("-m", "--model", default="models/healthgpt-nano")
    ap.add_argument("--vqa-rad", default="/work/shared/data/vqa-rad")
    ap.add_argument("--cases", type=int, default=60, help="wrong answers to correct (one image and patient each)")
    ap.add_argument("--scan", type=int, default=200, help="training items asked at most to find them")
    ap.add_argument("--steps", type=int, default=150, help="update job: optimiser steps")
    ap.add_argument("--lr", type=float, default=1e-4, help="update job: H-LoRA learning rate")
    ap.add_argument("--replay-ratio", type=float, default=3.0, help="server: replayed VQA-RAD training examples per new one")
    ap.add_argument("--vqa-limit", type=int, default=60, help="update job: VQA-RAD test questions of the guard")
    ap.add_argument("--wrong", action="store_true", help="file deliberately wrong corrections: the gate must refuse")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--time-limit", type=float, default=1500, help="seconds for the whole run")
    ap.add_argument("--workdir", default="", help="data directory parent (default: a fresh temp dir, removed)")
    a = ap.parse_args()
    t_start = time.time()
    deadline = t_start + a.time_limit

    train_path = os.path.join(a.vqa_rad, "trainset.json")
    if not os.path.exists(train_path) or not os.path.isdir(os.path.join(a.vqa_rad, "images")):
        print(f"SKIP: no VQA-RAD at {a.vqa_rad} (trainset.json, images/)")
        return 77
    if not os.path.exists(a.healthgpt):
        sys.exit(f"update-loop-demo: no binary at {a.healthgpt} (build healthgpt_cli)")
    items = json.load(open(train_path))
    # One question per image, so every case is its own patient and image: the job's split by
    # patient and image can then hold out whole cases.
    rng = random.Random(a.seed)
    rng.shuffle(items)
    seen, pool = set(), []
    for it in items:
        if it["image_name"] in seen:
            continue
        seen.add(it["image_name"])
        pool.append(it)
    pool = pool[: a.scan]

    work = a.workdir or tempfile.mkdtemp(prefix="hg-update-demo-")
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)

    def key(role, name):
        out = subprocess.run([a.healthgpt, "keys", "add", "--data-dir", data, "--role", role, "--name", name],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    admin = key("admin", "demo-admin")
    doctors = [key("physician", f"dr-{n}") for n in ("ames", "berg", "chen")]
    doctor_names = ["dr-ames", "dr-berg", "dr-chen"]
    patients = [key("patient", f"pat-{i}") for i in range(len(pool))]

    log_path = os.path.join(work, "serve.log")
    log = open(log_path, "w")
    srv = subprocess.Popen([a.healthgpt, "serve", "-m", a.model, "--data-dir", data, "--port", "0", "--parallel", "2",
                            "--queue", "16", "--vqa-rad", a.vqa_rad, "--replay-data", train_path,
                            "--replay-ratio", str(a.replay_ratio),
                            "--update-steps", str(a.steps), "--quiet"], stdout=log, stderr=subprocess.STDOUT)
    port = None
    while port is None and time.time() - t_start < 60:
        if srv.poll() is not None:
            sys.exit(f"update-loop-demo: the server exited ({srv.returncode}); see {log_path}")
        with open(log_path) as f:
            for line in f:
                if "serve: http://127.0.0.1:" in line:
                    port = int(line.split("127.0.0.1:")[1].split()[0])
        time.sleep(0.1)
    if port is None:
        srv.kill()
        sys.exit("update-loop-demo: the server did not start within 60 s")

    def call(method, path, k, body=None, raw=None, ctype="application/json", want=None):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        c.request(method, path, body=payload, headers={"Authorization": "Bearer " + k, "Content-Type": ctype})
        r = c.getresponse()
        txt = r.read().decode()
        c.close()
        if want is not None and r.status != want:
            raise RuntimeError(f"{method} {path}: {r.status} {txt[:300]}")
        return r.status, (json.loads(txt) if txt else None)

    def ask(c):
        body = {"max_tokens": 16, "consultation_id": c["cid"],
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": c["item"]["question"]},
                    {"type": "image_url", "image_url": {"url": "upload:" + str(c["upload"])}}]}]}
        _, r = call("POST", "/v1/chat/completions", c["patient"], body, want=200)
        # Patients' answers end with the server's not-a-diagnosis reminder, after a blank line.
        text = r["choices"][0]["message"]["content"].split("\n\nReminder:")[0].strip()
        return text, r["answer_id"], r.get("plugin")

    rc = 1
    try:
        doctor_ids = [call("GET", "/v1/me", d, want=200)[1]["id"] for d in doctors]
        # 1. Patients upload, share and ask; keep the wrong answers.
        cases, asked = [], 0
        for i, it in enumerate(pool):
            if len(cases) >= a.cases or time.time() > deadline:
                break
            img = open(os.path.join(a.vqa_rad, "images", it["image_name"]), "rb").read()
            _, up = call("POST", "/v1/uploads?filename=" + it["image_name"], patients[i], raw=img, ctype="image/jpeg",
                         want=201)
            c = {"item": it, "patient": patients[i], "cid": up["consultation_id"], "upload": up["id"]}
            for name in doctor_names:
                call("POST", f"/v1/consultations/{c['cid']}/shares", patients[i], {"physician": name}, want=200)
            c["before"], c["answer_id"], plugin_before = ask(c)
            asked += 1
            if norm(c["before"]) != norm(it["answer"]):
                cases.append(c)
        print(f"asked {asked} VQA-RAD training items (one per image and patient); {len(cases)} answered wrong "
              f"by the serving plugin ({plugin_before})")
        if len(cases) < a.cases:
            print(f"note: fewer than --cases {a.cases} wrong answers found")
        # 2. Corrections: right answers (lower-cased like the nano model's training), or with --wrong
        # another case's answer (a rotation, so no case gets its own).
        answers = [norm(c["item"]["answer"]) for c in cases]
        for j, c in enumerate(cases):
            c["target"] = answers[(j + 1) % len(cases)] if a.wrong else answers[j]
            if a.wrong and c["target"] == answers[j]:
                c["target"] = "no" if answers[j] == "yes" else "yes"
            c["author"] = j % 3
            call("POST", "/v1/feedback", doctors[c["author"]], {"answer_id": c["answer_id"], "correction": c["target"]},
                 want=201)
        # 3. A different physician approves each (the author's own approval is refused: checked once).
        _, queue = call("GET", "/v1/review/candidates?status=candidate", doctors[1], want=200)
        by_answer = {c["answer_id"]: c for c in cases}
        refused = False
        approved = 0
        for cand in queue["data"]:
            c = by_answer.get(cand["answer_id"])
            if c is None:
                continue
            if not refused:
                st, _ = call("POST", f"/v1/review/candidates/{cand['id']}/approve", doctors[doctor_ids.index(cand['author_id'])])
                print(f"author's own approval: HTTP {st} (expected 403)")
                refused = st == 403
            c["candidate"] = cand["id"]
            reviewer = doctors[(doctor_ids.index(cand["author_id"]) + 1) % 3]
            _, r = call("POST", f"/v1/review/candidates/{cand['id']}/approve", reviewer, {}, want=200)
            approved += r["status"] == "approved"
        print(f"{len(cases)} corrections filed by 3 physicians; {approved} approved by a second physician")
        # 4. The update job.
        t_job = time.time()
        _, job = call("POST", "/v1/admin/updates", admin,
                      {"max_steps": a.steps, "vqa_rad_limit": a.vqa_limit, "lr": a.lr}, want=202)
        st, last = None, ""
        while time.time() < deadline:
            _, st = call("GET", f"/v1/admin/updates/{job['id']}", admin, want=200)
            line = f"  job {st['status']}: step {st['step']}/{st['total_steps']} loss {st['loss']:.3f}"
            if line != last and (st["step"] % 10 == 0 or st["status"] != "training"):
                print(line, flush=True)
                last = line
            if st["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(2)
        if st["status"] != "done":
            print(f"update job did not finish: {st['status']} {st.get('error', '')}")
            print("\n".join(st.get("log", [])[-15:]))
            return 1
        print(f"update job done in {time.time() - t_job:.0f} s ({a.steps} steps, lr {a.lr})")
        rep = st["report"]
        print("gate report:")
        print(f"  passed: {rep['passed']}")
        for r in rep.get("reasons", []):
            print(f"  reason: {r}")
        for k in ("held_out_items", "held_out_accuracy", "vqa_rad_items", "vqa_rad_closed_accuracy", "vqa_rad_open_recall"):
            if k in rep.get("current", {}) or k in rep.get("candidate", {}):
                print(f"  {k}: serving {rep['current'].get(k)} -> candidate {rep['candidate'].get(k)}")
        if "checks" in rep:
            print("  checks: " + json.dumps(rep["checks"]))
        vid = st["version_id"]
        if not rep["passed"]:
            code, body = call("POST", f"/v1/admin/plugins/{vid}/promote", admin, {})
            print(f"promotion of the refused candidate: HTTP {code} {json.dumps(body)[:200]}")
            rc = 0 if (a.wrong and code == 400) else 1
            return rc
        if a.wrong:
            print("the gate PASSED a candidate trained on wrong corrections")
            return 1
        _, pr = call("POST", f"/v1/admin/plugins/{vid}/promote", admin, {}, want=200)
        print(f"promoted {pr['plugin']}@v{pr['id']}")
        # 5. The same cases again.
        _, ver = call("GET", f"/v1/admin/plugins", admin, want=200)
        v = next(x for x in ver["data"] if x["id"] == vid)
        held = {r["id"] for r in v["dataset"].get("held_out", [])}
        # Trained-on cases and held-out ones (never trained on: other patients, other images) apart.
        count = {"trained": [0, 0, 0], "held out": [0, 0, 0]}  # cases, changed, now the corrected answer
        plugins_after = set()
        for c in cases:
            c["after"], _, plugin_after = ask(c)
            plugins_after.add(plugin_after)
            k = "held out" if c.get("candidate") in held else "trained"
            count[k][0] += 1
            count[k][1] += norm(c["after"]) != norm(c["before"])
            count[k][2] += norm(c["after"]) == c["target"]
        print(f"re-asked the {len(cases)} corrected cases, served by {sorted(plugins_after)} (before: all wrong):")
        for k, (n, ch, ok) in count.items():
            print(f"  {k}: {n} cases, {ch} answers changed, {ok} now the corrected answer")
        rc = 0
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
        print(f"total {time.time() - t_start:.0f} s; server log {log_path}")
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

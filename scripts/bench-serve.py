#!/usr/bin/python3
"""Load benchmark of `healthgpt serve` (a script, not a CI test; loopback only, bounded in time).

Starts `healthgpt serve` on 127.0.0.1 (port 0) over a fresh data directory, makes one patient key
per client and one physician key, and runs N concurrent clients for T seconds. Each client owns a
consultation (its first upload) and mixes:
    image questions   streamed chat about upload:<id> (time to first token measured)
    follow-ups        the conversation so far plus a new question (non-streamed)
    uploads           another image into its consultation
    feedback          the physician rates/corrects the client's latest answer
Afterwards the server is stopped and the database checked: every acknowledged feedback row (HTTP
201) is present and PRAGMA integrity_check is ok. Prints a table: requests, 5xx, 429, p50/p95/p99
latency per kind, time to first token, peak RSS of the server (VmHWM), feedback rows present.

    /usr/bin/python3 scripts/bench-serve.py --healthgpt build/bin/healthgpt -m models/healthgpt-demo \\
        --clients 16 --seconds 60 [--parallel 1] [--queue 64] [--max-tokens 16] [--images DIR] [--workdir DIR]

Standard library only (threads + http.client + sqlite3). Sharing a consultation with a physician
has no HTTP route yet, so the setup step shares each client's consultation through the database
(an operator action, as `healthgpt` would do it), before the timed run.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def proc_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Stats:
    def __init__(self):
        self.mu = threading.Lock()
        self.rows = []          # (kind, status, seconds)
        self.ttft = []          # seconds, streamed image questions
        self.feedback = {}      # id -> comment, for every 201
        self.conn_errors = 0
        self.prompt_tokens = 0  # of streamed image questions (usage)
        self.cached_tokens = 0  # of which reused from a KV cache (usage.prompt_tokens_details)

    def add(self, kind, status, secs):
        with self.mu:
            self.rows.append((kind, status, secs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--healthgpt", default="build/bin/healthgpt")
    ap.add_argument("-m", "--model", default="models/healthgpt-demo")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--queue", type=int, default=0, help="server --queue (0: clients, so that nothing is refused)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--images", default="", help="a folder of PNG/JPEG images to upload (default: the model's example.png)")
    ap.add_argument("--workdir", default="build/bench-serve")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prefix-probe", type=int, default=0,
                    help="before the load: for this many images, time to first token of a first question (no "
                         "cached KV) and of a second question on the same image (prefix-cache hit)")
    a = ap.parse_args()

    if not os.path.exists(a.healthgpt):
        sys.exit(f"bench-serve: no binary at {a.healthgpt} (build healthgpt_cli)")
    images = []
    if a.images:
        for n in sorted(os.listdir(a.images)):
            if n.lower().endswith((".png", ".jpg", ".jpeg")):
                images.append(os.path.join(a.images, n))
        images = images[:64]
    if not images:
        images = [os.path.join(a.model, "example.png")]
    blobs = [(os.path.basename(p), open(p, "rb").read()) for p in images]

    shutil.rmtree(a.workdir, ignore_errors=True)
    data = os.path.join(a.workdir, "data")
    os.makedirs(a.workdir)

    def key(role, name):
        out = subprocess.run([a.healthgpt, "keys", "add", "--data-dir", data, "--role", role, "--name", name],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    patients = [key("patient", f"bench-p{i}") for i in range(a.clients)]
    doctor = key("physician", "bench-doc")

    log_path = os.path.join(a.workdir, "serve.log")
    log = open(log_path, "w")
    queue = a.queue if a.queue > 0 else a.clients
    srv = subprocess.Popen([a.healthgpt, "serve", "-m", a.model, "--data-dir", data, "--port", "0",
                            "--parallel", str(a.parallel), "--queue", str(queue), "-q"], stderr=log)
    port = None
    t0 = time.time()
    while port is None and time.time() - t0 < 60:
        if srv.poll() is not None:
            sys.exit(f"bench-serve: the server exited ({srv.returncode}); see {log_path}")
        with open(log_path) as f:
            for line in f:
                if "serve: http://127.0.0.1:" in line:
                    port = int(line.split("127.0.0.1:")[1].split()[0])
        time.sleep(0.05)
    if port is None:
        srv.kill()
        sys.exit("bench-serve: the server did not start within 60 s")

    peak_sampled = [0]
    stop_sampling = threading.Event()

    def sample_rss():
        while not stop_sampling.is_set():
            peak_sampled[0] = max(peak_sampled[0], proc_kib(srv.pid, "VmRSS"))
            stop_sampling.wait(0.25)

    threading.Thread(target=sample_rss, daemon=True).start()

    def request(conn, method, path, body, headers):
        t = time.time()
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        payload = r.read()
        return r.status, payload, time.time() - t

    # --- setup: each client's consultation (its first upload), shared with the physician ---
    doc_id = None
    uploads = []
    for i in range(a.clients):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        name, blob = blobs[i % len(blobs)]
        ctype = "image/png" if name.lower().endswith(".png") else "image/jpeg"
        st, body, _ = request(c, "POST", f"/v1/uploads?filename={name}", blob,
                              {"Authorization": "Bearer " + patients[i], "Content-Type": ctype})
        if st != 201:
            srv.kill()
            sys.exit(f"bench-serve: setup upload answered {st}: {body[:200]!r}")
        u = json.loads(body)
        uploads.append((u["consultation_id"], u["id"]))
        c.close()
    db = sqlite3.connect(os.path.join(data, "healthgpt.db"), timeout=30)
    doc_id = db.execute("SELECT id FROM users WHERE name = 'bench-doc'").fetchone()[0]
    now_ms = int(time.time() * 1000)
    with db:
        for cid, _ in uploads:
            db.execute("INSERT INTO consultation_shares (consultation_id, physician_id, shared_by, shared_at) "
                       "VALUES (?, ?, NULL, ?)", (cid, doc_id, now_ms))
    db.close()

    def streamed_ttft(conn, headers, cid, upload_id, question):
        """One streamed image question alone: (time to first token in s, usage.cached_tokens)."""
        body = json.dumps({"max_tokens": a.max_tokens, "stream": True, "consultation_id": cid,
                           "stream_options": {"include_usage": True},
                           "messages": [{"role": "user", "content": [
                               {"type": "text", "text": question},
                               {"type": "image_url", "image_url": {"url": f"upload:{upload_id}"}}]}]})
        t = time.time()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        r = conn.getresponse()
        first, cached = None, None
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("choices") and (ev["choices"][0]["delta"].get("content") or "") and first is None:
                first = time.time() - t
            if ev.get("usage"):
                cached = ev["usage"].get("prompt_tokens_details", {}).get("cached_tokens")
        return first, cached

    probe = []  # (ttft without, cached, ttft with, cached)
    for k in range(min(a.prefix_probe, a.clients, len(blobs))):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        h = {"Authorization": "Bearer " + patients[k], "Content-Type": "application/json"}
        cid, upload_id = uploads[k]
        cold = streamed_ttft(conn, h, cid, upload_id, "What does this image show?")
        warm = streamed_ttft(conn, h, cid, upload_id, "Is there an abnormality?")
        probe.append(cold + warm)
        conn.close()

    stats = Stats()
    deadline = time.time() + a.seconds
    questions = ["What does this image show?", "Is there an abnormality?", "Which organ is this?",
                 "Is this a CT or an MRI?", "Is the finding on the left or the right?"]

    def client(i):
        rnd = random.Random(a.seed * 1000 + i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        pat = {"Authorization": "Bearer " + patients[i], "Content-Type": "application/json"}
        doc = {"Authorization": "Bearer " + doctor, "Content-Type": "application/json"}
        cid, upload_id = uploads[i]
        history = []          # [(question, answer)] of this client's conversation
        last_answer = None
        n = 0
        while time.time() < deadline:
            n += 1
            x = rnd.random()
            kind = ("image_question" if x < 0.40 or last_answer is None else
                    "follow_up" if x < 0.60 else "upload" if x < 0.75 else "feedback")
            try:
                if kind == "image_question":
                    q = rnd.choice(questions)
                    body = json.dumps({"max_tokens": a.max_tokens, "stream": True, "consultation_id": cid,
                                       "stream_options": {"include_usage": True},
                                       "messages": [{"role": "user", "content": [
                                           {"type": "text", "text": q},
                                           {"type": "image_url", "image_url": {"url": f"upload:{upload_id}"}}]}]})
                    t = time.time()
                    conn.request("POST", "/v1/chat/completions", body=body, headers=pat)
                    r = conn.getresponse()
                    text, first, aid = "", None, None
                    if r.status == 200:
                        while True:
                            line = r.readline()
                            if not line:
                                break
                            line = line.strip()
                            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                                continue
                            ev = json.loads(line[6:])
                            if "error" in ev:
                                r.status = ev["error"].get("code", 500)
                                continue
                            if ev.get("usage"):
                                with stats.mu:
                                    stats.prompt_tokens += ev["usage"]["prompt_tokens"]
                                    stats.cached_tokens += ev["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)
                            if ev.get("choices"):
                                d = ev["choices"][0]["delta"].get("content") or ""
                                if d and first is None:
                                    first = time.time() - t
                                text += d
                                if ev["choices"][0].get("finish_reason"):
                                    aid = ev.get("answer_id")
                        r.read()
                    else:
                        r.read()
                    secs = time.time() - t
                    stats.add(kind, r.status, secs)
                    if first is not None:
                        with stats.mu:
                            stats.ttft.append(first)
                    if r.status == 200:
                        history = [(q, text)]
                        if aid:
                            last_answer = aid
                elif kind == "follow_up":
                    msgs = []
                    for k, (q, ans) in enumerate(history[-3:]):
                        content = [{"type": "text", "text": q}]
                        if k == 0:
                            content.append({"type": "image_url", "image_url": {"url": f"upload:{upload_id}"}})
                        msgs += [{"role": "user", "content": content}, {"role": "assistant", "content": ans}]
                    q = rnd.choice(questions)
                    if not msgs:
                        msgs = [{"role": "user", "content": [{"type": "text", "text": q},
                                {"type": "image_url", "image_url": {"url": f"upload:{upload_id}"}}]}]
                    else:
                        msgs.append({"role": "user", "content": q})
                    st, body, secs = request(conn, "POST", "/v1/chat/completions",
                                             json.dumps({"max_tokens": a.max_tokens, "consultation_id": cid,
                                                         "messages": msgs}), pat)
                    stats.add(kind, st, secs)
                    if st == 200:
                        j = json.loads(body)
                        history.append((q, j["choices"][0]["message"]["content"]))
                        if j.get("answer_id"):
                            last_answer = j["answer_id"]
                elif kind == "upload":
                    name, blob = blobs[rnd.randrange(len(blobs))]
                    ctype = "image/png" if name.lower().endswith(".png") else "image/jpeg"
                    st, body, secs = request(conn, "POST", f"/v1/uploads?filename={name}&consultation_id={cid}", blob,
                                             {"Authorization": "Bearer " + patients[i], "Content-Type": ctype})
                    stats.add(kind, st, secs)
                else:
                    comment = f"bench client {i} #{n}"
                    st, body, secs = request(conn, "POST", "/v1/feedback",
                                             json.dumps({"answer_id": last_answer, "rating": 1 + n % 5,
                                                         "correction": "Corrected by the bench.", "comment": comment}),
                                             doc)
                    stats.add(kind, st, secs)
                    if st == 201:
                        with stats.mu:
                            stats.feedback[json.loads(body)["id"]] = comment
                if stats.rows and stats.rows[-1][1] == 429:
                    time.sleep(0.2)
            except (OSError, http.client.HTTPException, ValueError):
                with stats.mu:
                    stats.conn_errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                time.sleep(0.1)
        conn.close()

    t_run = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t_run
    alive = srv.poll() is None
    peak_hwm = proc_kib(srv.pid, "VmHWM")
    stop_sampling.set()
    srv.send_signal(signal.SIGTERM)
    try:
        srv.wait(timeout=60)
    except subprocess.TimeoutExpired:
        srv.kill()
    log.close()

    db = sqlite3.connect(os.path.join(data, "healthgpt.db"), timeout=30)
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    present = 0
    for fid, comment in stats.feedback.items():
        row = db.execute("SELECT comment FROM feedback WHERE id = ?", (fid,)).fetchone()
        present += row is not None and row[0] == comment
    db.close()

    print(f"healthgpt serve load benchmark: {a.clients} clients x {a.seconds:.0f} s (ran {wall:.1f} s), "
          f"model {a.model}, --parallel {a.parallel}, --queue {queue}, max_tokens {a.max_tokens}, "
          f"{len(blobs)} image(s)")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print()
    print(f"{'kind':<16}{'requests':>9}{'2xx':>7}{'4xx':>6}{'429':>6}{'5xx':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    kinds = ["image_question", "follow_up", "upload", "feedback"]
    total5 = 0
    for k in kinds + ["all"]:
        rows = [r for r in stats.rows if k == "all" or r[0] == k]
        lat = [r[2] * 1000 for r in rows if 200 <= r[1] < 300]
        n5 = sum(1 for r in rows if r[1] >= 500)
        if k == "all":
            total5 = n5
        print(f"{k:<16}{len(rows):>9}{sum(1 for r in rows if 200 <= r[1] < 300):>7}"
              f"{sum(1 for r in rows if 400 <= r[1] < 500 and r[1] != 429):>6}{sum(1 for r in rows if r[1] == 429):>6}"
              f"{n5:>6}{percentile(lat, 50):>9.1f}{percentile(lat, 95):>9.1f}{percentile(lat, 99):>9.1f}")
    tt = [x * 1000 for x in stats.ttft]
    print()
    print(f"time to first token (streamed image questions, {len(tt)}): p50 {percentile(tt, 50):.1f} ms, "
          f"p95 {percentile(tt, 95):.1f} ms, p99 {percentile(tt, 99):.1f} ms")
    if probe:
        cold = [p[0] * 1000 for p in probe if p[0] is not None]
        warm = [p[2] * 1000 for p in probe if p[2] is not None]
        print(f"prefix-cache probe ({len(probe)} images, one request at a time, before the load): time to first "
              f"token of a first question p50 {percentile(cold, 50):.1f} ms (cached positions "
              f"{[p[1] for p in probe]}), of a second question on the same image p50 {percentile(warm, 50):.1f} ms "
              f"(cached positions {[p[3] for p in probe]})")
    print(f"throughput: {len(stats.rows) / wall:.1f} requests/s; connection errors {stats.conn_errors}")
    print(f"prompt positions of image questions: {stats.prompt_tokens}, of which reused from a KV cache "
          f"{stats.cached_tokens} ({100.0 * stats.cached_tokens / max(1, stats.prompt_tokens):.1f} %)")
    print(f"server: {'alive until stopped' if alive else 'DIED during the run'}; peak RSS {peak_hwm / 1024:.1f} MiB "
          f"(VmHWM; sampled max {peak_sampled[0] / 1024:.1f} MiB)")
    print(f"feedback: {len(stats.feedback)} acknowledged, {present} present afterwards; integrity_check {integrity}")
    ok = alive and total5 == 0 and present == len(stats.feedback) and integrity == "ok" and stats.conn_errors == 0
    print("result:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The `openai` Python client against `healthgpt serve` on the demo model (loopback only, bounded).

    python3 tests/server/openai_client_test.py --healthgpt build/bin/healthgpt [--workdir DIR]

Makes a demo model and a patient key in a temporary folder, starts the server on 127.0.0.1 with
port 0 (it prints the port it got), and checks: a plain and a streamed chat completion with an
image give the same text, usage is reported, an unknown plugin and a wrong key are refused with
the SDK's typed errors, /v1/models lists the plugins. Exits 77 (ctest: skipped) with a message when
the `openai` package is not installed; it is never installed by this script.
"""
import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile
import time

SKIP = 77


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--healthgpt", required=True)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    try:
        import openai  # noqa: F401
    except ImportError:
        print("SKIP: the `openai` Python package is not installed (pip install openai to run this test)")
        return SKIP
    from openai import OpenAI

    work = args.workdir or tempfile.mkdtemp(prefix="hg-openai-")
    os.makedirs(work, exist_ok=True)
    model, data = os.path.join(work, "demo"), os.path.join(work, "data")
    run = lambda *a: subprocess.run([args.healthgpt, *a], check=True, capture_output=True, text=True, timeout=60)
    run("make-demo-model", model)
    key = run("keys", "add", "--data-dir", data, "--role", "patient", "--name", "py-patient").stdout.strip()

    srv = subprocess.Popen([args.healthgpt, "serve", "-m", model, "--data-dir", data, "--host", "127.0.0.1",
                            "--port", "0", "--timeout-s", "30"], stderr=subprocess.PIPE, text=True)
    try:
        port, t0 = None, time.time()
        while port is None and time.time() - t0 < 30:
            line = srv.stderr.readline()
            if not line:
                break
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        assert port, "the server did not report its port"
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=30, max_retries=0)
        with open(os.path.join(model, "example.png"), "rb") as f:
            url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
        messages = [{"role": "user", "content": [{"type": "text", "text": "What does this X-ray show?"},
                                                 {"type": "image_url", "image_url": {"url": url}}]}]

        r = client.chat.completions.create(model="demo", messages=messages, max_tokens=16)
        text = r.choices[0].message.content
        assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 576, r.usage
        assert "not a diagnosis" in text, "a patient's answer carries the reminder"

        streamed = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model="demo", messages=messages, max_tokens=16, stream=True)
                           if c.choices)
        assert streamed == text, (streamed, text)

        try:
            client.chat.completions.create(model="demo", messages=messages, max_tokens=4, extra_body={"plugin": "nope"})
            raise AssertionError("unknown plugin accepted")
        except openai.BadRequestError as e:
            assert "unknown plugin" in str(e), e
        try:
            OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="hgk_wrong", max_retries=0).models.list()
            raise AssertionError("wrong key accepted")
        except openai.AuthenticationError:
            pass
        models = client.models.list()
        assert [m.id for m in models.data] == ["demo"], models
        print(f"ok: openai {openai.__version__} against 127.0.0.1:{port}")
        return 0
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""llama.cpp's pp/tg benchmark, driven through llama-cpp-python's low-level bindings.

Measures exactly what llama-bench measures (tools/llama-bench/llama-bench.cpp, test_prompt and
test_gen), on one GGUF, so that `healthgpt bench -m FILE` can be compared with it in one run:

  ppN  clear the KV cache, decode N random tokens (BOS first when the vocabulary adds one) in
       batches of n_batch (micro-batches of n_ubatch), synchronize; tokens/s = N / seconds.
  tgN  clear the KV cache, decode N single tokens one after another from position 0 (the first
       one BOS, then random ids), synchronize after each; tokens/s = N / seconds.

Each repetition also records the process CPU time (all threads): on a machine shared with other
work, tokens per CPU-second per thread (-t 1 best) compares per-core efficiency where wall time
cannot. Each test runs once untimed (warm-up, as llama-bench does), then `reps` timed repetitions.
Prints one JSON object (tests -> list of seconds per repetition, plus the configuration).
No code of llama.cpp is part of this repository: the library comes from PyPI's
llama-cpp-python (see scripts/bench-vs-llamacpp.sh, which builds it with GGML_NATIVE=ON).
"""
import argparse
import ctypes
import json
import os
import random
import resource
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--tests", default="pp,tg", help="comma-separated: pp, tg")
    ap.add_argument("-b", "--batch", type=int, default=2048, help="n_batch (llama-bench default 2048)")
    ap.add_argument("-ub", "--ubatch", type=int, default=512, help="n_ubatch (llama-bench default 512)")
    ap.add_argument("-fa", "--flash-attn", type=int, default=0, help="flash attention 0/1 (llama-bench default 0)")
    ap.add_argument("--no-repack", action="store_true", help="disable the CPU weight repacking (use_extra_bufts)")
    args = ap.parse_args()

    import llama_cpp as L  # imported late so --help works without the package

    # Quiet: llama.cpp logs every tensor otherwise.
    @L.llama_log_callback
    def _quiet(level, text, user_data):  # noqa: ARG001
        pass

    L.llama_log_set(_quiet, ctypes.c_void_p())
    L.llama_backend_init()

    mp = L.llama_model_default_params()
    mp.use_mmap = True
    if args.no_repack:
        mp.use_extra_bufts = False
    model = L.llama_model_load_from_file(args.model.encode(), mp)
    if not model:
        print(f"llama.cpp could not load {args.model}", file=sys.stderr)
        return 1
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    add_bos = bool(L.llama_vocab_get_add_bos(vocab))
    bos = L.llama_vocab_bos(vocab)

    cp = L.llama_context_default_params()
    cp.n_ctx = args.n_prompt + args.n_gen
    cp.n_batch = args.batch
    cp.n_ubatch = args.ubatch
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    cp.flash_attn = bool(args.flash_attn)
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        print("llama.cpp could not create a context", file=sys.stderr)
        return 1
    mem = L.llama_get_memory(ctx)
    rng = random.Random(1234)

    def decode(tokens):
        arr = (L.llama_token * len(tokens))(*tokens)
        rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def test_prompt(n):
        L.llama_memory_clear(mem, False)
        toks = [rng.randrange(n_vocab) for _ in range(n)]
        if add_bos:
            toks[0] = bos
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, n, args.batch):
            decode(toks[i:i + args.batch])
        L.llama_synchronize(ctx)
        return time.perf_counter() - t0, time.process_time() - c0

    def test_gen(n):
        L.llama_memory_clear(mem, False)
        tok = bos if add_bos else rng.randrange(n_vocab)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            decode([tok])
            L.llama_synchronize(ctx)
            tok = rng.randrange(n_vocab)
        return time.perf_counter() - t0, time.process_time() - c0

    out = {
        "engine": "llama.cpp",
        "llama_cpp_python": L.__version__,
        "system_info": L.llama_print_system_info().decode().strip(),
        "model": os.path.abspath(args.model),
        "model_bytes": int(L.llama_model_size(model)),
        "n_params": int(L.llama_model_n_params(model)),
        "threads": args.threads,
        "n_batch": args.batch,
        "n_ubatch": args.ubatch,
        "flash_attn": args.flash_attn,
        "repack": not args.no_repack,
        "tests": {},
    }
    for t in args.tests.split(","):
        t = t.strip()
        if t == "pp":
            name, fn, n = f"pp{args.n_prompt}", test_prompt, args.n_prompt
        elif t == "tg":
            name, fn, n = f"tg{args.n_gen}", test_gen, args.n_gen
        else:
            print(f"unknown test {t}", file=sys.stderr)
            return 2
        fn(n if t == "pp" else 1)  # warm-up, as llama-bench (tg: one token)
        runs = [fn(n) for _ in range(args.reps)]
        secs = [w for w, _ in runs]
        cpu = [c for _, c in runs]  # process CPU seconds, all threads
        out["tests"][name] = {"n_tokens": n, "seconds": secs, "tokens_per_second": [n / s for s in secs],
                              "cpu_seconds": cpu,
                              "tokens_per_cpu_second_per_thread": [n * args.threads / c for c in cpu]}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

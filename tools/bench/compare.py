#!/usr/bin/env python3
"""Side-by-side table of healthgpt vs llama.cpp from the JSON lines that
scripts/bench-vs-llamacpp.sh collects (one object per engine run, as printed by
`healthgpt bench -o json` and tools/bench/llamacpp_bench.py).

Repetitions of all rounds are pooled per (engine, model, test); the table shows mean ± sample
standard deviation of tokens/s and the ratio of the means (healthgpt / llama.cpp). For tg it also
shows the share of the bandwidth roof: weight bytes read per token x tokens/s / the read
bandwidth that `healthgpt bench --roof` measured in the same run: the mean of all its
measurements (one per model and round). A single measurement swings by +-15 % on a shared
virtual machine, so one model's own would make its share a coin toss.
Standard library only.
"""
import collections
import json
import os
import statistics
import sys


def mean_sd(v):
    return (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    runs = []
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    runs.append(json.loads(line))
    tps = collections.defaultdict(list)        # (model, test, engine) -> t/s per repetition
    info = {}                                  # model -> (type, weight bytes per token)
    gbps = collections.defaultdict(list)       # model -> measured read bandwidth
    loads = []
    for r in runs:
        model = os.path.basename(r["model"])
        eng = r["engine"]
        for name, t in r["tests"].items():
            if "tokens_per_second" in t:
                tps[(model, name, eng)].extend(t["tokens_per_second"])
        if eng.startswith("healthgpt"):
            info[model] = (r.get("model_type", "?"), r.get("weight_bytes_per_token", 0))
            if r.get("read_gbps", 0) > 0:
                gbps[model].append(r["read_gbps"])
            loads += [r.get("load_start", -1), r.get("load_end", -1)]
    models = sorted({k[0] for k in tps}, key=lambda m: (m.split("-")[0], m))
    ours_engines = sorted({k[2] for k in tps if k[2].startswith("healthgpt")})  # one per kernel level
    print("| model | weights | test | healthgpt t/s | llama.cpp t/s | ratio | healthgpt % of roof | llama.cpp % of roof |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for model in models:
        typ, wbytes = info.get(model, ("?", 0))
        all_bw = [b for v in gbps.values() for b in v]
        bw = statistics.fmean(all_bw) if all_bw else 0
        tests = sorted({k[1] for k in tps if k[0] == model}, key=lambda t: (t[:2] != "pp", t))
        for test, eng in ((t, e) for t in tests for e in ours_engines):
            ours, theirs = tps.get((model, test, eng), []), tps.get((model, test, "llama.cpp"), [])
            if not ours:
                continue
            cells = []
            for v in (ours, theirs):
                cells.append("%.2f ± %.2f (%d)" % (*mean_sd(v), len(v)) if v else "-")
            ratio = "%.2f" % (statistics.fmean(ours) / statistics.fmean(theirs)) if ours and theirs else "-"
            roof = ["", ""]
            if test.startswith("tg") and bw > 0 and wbytes > 0:
                for i, v in enumerate((ours, theirs)):
                    if v:
                        roof[i] = "%.0f %%" % (100.0 * statistics.fmean(v) * wbytes / (bw * 1e9))
            label = test if eng == "healthgpt" else f"{test} ({eng[len('healthgpt-'):]})"
            print(f"| {model} | {typ} | {label} | {cells[0]} | {cells[1]} | {ratio} | {roof[0]} | {roof[1]} |")
    bws = [b for v in gbps.values() for b in v]
    if bws:
        print("\nread bandwidth measured in the run: %.1f ± %.1f GB/s (%d measurements)" % (*mean_sd(bws), len(bws)))
    loads = [x for x in loads if x >= 0]
    if loads:
        print("load average (1 min) during the run: %.2f .. %.2f" % (min(loads), max(loads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

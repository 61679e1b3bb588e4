"""Aggregates of call2/bench.json (and the torch ratios of call1/call2 torch.json): per set, layout,
phase and dtype, the spread of frac_of_copy, how many cases reach DESIGN.md's target (0.85 for
training forward and backward, 0.95 for inference), and the geometric means of the ratios to cuDNN
and to torch eager (time of the other / time of normkit: above 1, normkit is faster).

    python3 bench/results/2026-12-04-gpu-h200/aggregate.py > bench/results/2026-12-04-gpu-h200/aggregate.md
"""
import collections
import json
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
import summarize  # noqa: E402  bench/summarize.py reads a JSON file that may be cut short


def load_bench(path):
    with open(path, encoding="utf-8") as f:
        data, _ = summarize.load_results(f.read())
    return {b["name"].split("/iterations:")[0]: b for b in data["benchmarks"]
            if not b["name"].startswith("copy/")}


def load_torch(*paths):
    eager = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for name, row in json.load(f).items():
                if row.get("eager"):
                    eager[name] = row["eager"]
    return eager


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def main():
    bench = load_bench(os.path.join(HERE, "call2", "bench.json"))
    eager = load_torch(os.path.join(HERE, "call1", "torch.json"),
                       os.path.join(HERE, "call2", "torch.json"))
    groups = collections.OrderedDict()
    for name, b in bench.items():
        parts = name.split("/")
        set_name, layout, dtype, phase = parts[0], parts[-3], parts[-2], parts[-1]
        groups.setdefault((set_name, layout, phase, dtype), []).append((name, b))
    print("| set | layout | phase | dtype | cases | frac of copy min / median / max | "
          "at target | vs cuDNN (geomean, min) | vs torch eager (geomean, cases) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (set_name, layout, phase, dtype), rows in groups.items():
        fracs = [b["frac_of_copy"] for _, b in rows]
        target = 0.95 if phase == "infer_fwd" else 0.85
        cudnn = [b.get("vs_cudnn") for _, b in rows if b.get("vs_cudnn")]
        torch = [eager[n] for n, _ in rows if n in eager]
        print(f"| {set_name} | {layout} | {phase} | {dtype} | {len(rows)} | "
              f"{min(fracs):.3f} / {statistics.median(fracs):.3f} / {max(fracs):.3f} | "
              f"{sum(f >= target for f in fracs)} of {len(rows)} (>= {target}) | "
              f"{fmt(geomean(cudnn))}, {fmt(min(cudnn) if cudnn else None)} | "
              f"{fmt(geomean(torch))}, {len(torch)} |")
    all_fracs = [b["frac_of_copy"] for b in bench.values()]
    all_cudnn = [b["vs_cudnn"] for b in bench.values() if b.get("vs_cudnn")]
    print()
    print(f"All {len(bench)} cases: frac of copy median {statistics.median(all_fracs):.3f}; "
          f"vs cuDNN geomean {fmt(geomean(all_cudnn))} over {len(all_cudnn)} cases, "
          f"{sum(v < 1 for v in all_cudnn)} of them slower than cuDNN; "
          f"vs torch eager geomean {fmt(geomean(list(eager.values())))} over {len(eager)} cases.")


if __name__ == "__main__":
    main()

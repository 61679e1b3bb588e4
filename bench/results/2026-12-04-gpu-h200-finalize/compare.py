"""normkit's time per case before and after this folder's commits: the first H200 run
(../2026-12-04-gpu-h200/call2/bench.json, commit 2b485c7) against call1/bench.json (commit
b698fee) and call2/bench.json (commit a2253ea) here, on the cases both measured. Per set, layout,
phase and dtype: the geometric mean and the range of the speedup (time before / time after), and
the medians of frac of copy and of the ratio to cuDNN before and after; the whole-set aggregates
before and after (as ../2026-12-04-gpu-h200/aggregate.py counts them); the cases more than 5 %
slower.

    python3 bench/results/2026-12-04-gpu-h200-finalize/compare.py > bench/results/2026-12-04-gpu-h200-finalize/compare.md
"""
import collections
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "2026-12-04-gpu-h200"))
from aggregate import fmt, geomean, load_bench as load  # noqa: E402  the first run's readers


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    before = load(os.path.join(HERE, "..", "2026-12-04-gpu-h200", "call2", "bench.json"))
    for call, commit in (("call2", "a2253ea"), ("call1", "b698fee")):
        print(f"## {call} (commit {commit}) against the first run (commit 2b485c7)\n")
        compare(before, load(os.path.join(HERE, call, "bench.json")))
        print()


def compare(before, after):
    common = [n for n in after if n in before]
    groups = collections.OrderedDict()
    for name in common:
        parts = name.split("/")
        groups.setdefault((parts[0], parts[-3], parts[-1], parts[-2]), []).append(name)
    print(f"{len(common)} cases measured in both runs.\n")
    print("| set | layout | phase | dtype | cases | speedup geomean (min, max) | "
          "frac of copy median before → after | vs cuDNN median before → after |")
    print("|---|---|---|---|---|---|---|---|")
    for (set_name, layout, phase, dtype), names in groups.items():
        speed = [before[n]["real_time"] / after[n]["real_time"] for n in names]
        print(f"| {set_name} | {layout} | {phase} | {dtype} | {len(names)} | "
              f"{fmt(geomean(speed))} ({min(speed):.2f}, {max(speed):.2f}) | "
              f"{fmt(median([before[n]['frac_of_copy'] for n in names]), 3)} → "
              f"{fmt(median([after[n]['frac_of_copy'] for n in names]), 3)} | "
              f"{fmt(median([before[n].get('vs_cudnn') for n in names]))} → "
              f"{fmt(median([after[n].get('vs_cudnn') for n in names]))} |")
    speed = [before[n]["real_time"] / after[n]["real_time"] for n in common]
    print(f"\nAll {len(common)}: speedup geomean {fmt(geomean(speed))}, "
          f"{sum(s > 1.05 for s in speed)} faster by more than 5 %, "
          f"{sum(s < 0.95 for s in speed)} slower by more than 5 %.")
    for label, names in (("before", before), ("after", after)):
        rows = [names[n] for n in common]
        fracs = [b["frac_of_copy"] for b in rows]
        cudnn = [b["vs_cudnn"] for b in rows if b.get("vs_cudnn")]
        target = sum(b["frac_of_copy"] >= (0.95 if n.endswith("infer_fwd") else 0.85)
                     for n, b in zip(common, rows))
        print(f"- {label}: frac of copy median {statistics.median(fracs):.3f}, at DESIGN.md's "
              f"target {target} of {len(rows)}; vs cuDNN geomean {fmt(geomean(cudnn))} over "
              f"{len(cudnn)} cases, {sum(v < 1 for v in cudnn)} slower than cuDNN")
    slower = sorted((before[n]["real_time"] / after[n]["real_time"], n) for n in common)
    slower = [(s, n) for s, n in slower if s < 0.95]
    if slower:
        print("\nMore than 5 % slower (time before → after, µs):\n")
        for s, n in slower:
            print(f"- `{n}`: {s:.3f} ({before[n]['real_time']:.1f} → {after[n]['real_time']:.1f})")


if __name__ == "__main__":
    main()

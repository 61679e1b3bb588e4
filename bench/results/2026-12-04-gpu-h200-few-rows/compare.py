"""normkit's time per case before and after this folder's commits: the last H200 session's call 2
(../2026-12-04-gpu-h200-finalize/call2/bench.json, commit a2253ea) against each call here, on the
cases both measured, with that folder's compare() (per set, layout, phase and dtype: speedup
geomean and range, medians of frac of copy and of the ratio to cuDNN; the whole-set aggregates;
the cases more than 5 % slower), then the 20 largest speedups.

    python3 bench/results/2026-12-04-gpu-h200-few-rows/compare.py > bench/results/2026-12-04-gpu-h200-few-rows/compare.md
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PREVIOUS = os.path.join(HERE, "..", "2026-12-04-gpu-h200-finalize")
sys.path.insert(0, os.path.join(HERE, "..", "2026-12-04-gpu-h200"))
from aggregate import load_bench as load  # noqa: E402  the first run's reader

spec = importlib.util.spec_from_file_location("previous_compare",
                                              os.path.join(PREVIOUS, "compare.py"))
previous = importlib.util.module_from_spec(spec)
spec.loader.exec_module(previous)

CALLS = (("call1", "424337b"), ("call2", "6d9ebec"), ("call3", "4e6518c"))


def report(title, before, after):
    """One call's section: the title, compare(), then the 20 largest speedups."""
    print(f"## {title}\n")
    previous.compare(before, after)
    common = [n for n in after if n in before]
    faster = sorted(((before[n]["real_time"] / after[n]["real_time"], n) for n in common),
                    reverse=True)[:20]
    print("\nThe 20 largest speedups (time before → after, µs):\n")
    for s, n in faster:
        print(f"- `{n}`: {s:.2f} ({before[n]['real_time']:.1f} → {after[n]['real_time']:.1f})")
    print()


def main():
    before = load(os.path.join(PREVIOUS, "call2", "bench.json"))
    for call, commit in CALLS:
        path = os.path.join(HERE, call, "bench.json")
        if not os.path.exists(path):
            continue
        report(f"{call} (commit {commit}) against the last session's call 2 (commit a2253ea)",
               before, load(path))


if __name__ == "__main__":
    main()

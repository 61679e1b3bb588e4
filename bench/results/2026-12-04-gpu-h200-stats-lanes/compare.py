"""normkit's time per case before and after this folder's commits. Before: main at e03d5ee, whose
kernels the last folder measured (../2026-12-04-gpu-h200-few-rows: its call 3, tree 4e6518c, where
it has the case, else its call 2, tree 6d9ebec, which differs only in batch norm's finalize
blocks); after: each call here, on the cases both measured, with the first folder's compare()
(per set, layout, phase and dtype: speedup geomean and range, medians of frac of copy and of the
ratio to cuDNN; the whole-set aggregates; the cases more than 5 % slower), then the 20 largest
speedups, through the last folder's report().

    python3 bench/results/2026-12-04-gpu-h200-stats-lanes/compare.py > bench/results/2026-12-04-gpu-h200-stats-lanes/compare.md
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LAST = os.path.join(HERE, "..", "2026-12-04-gpu-h200-few-rows")
sys.path.insert(0, os.path.join(HERE, "..", "2026-12-04-gpu-h200"))
from aggregate import load_bench as load  # noqa: E402  the first run's reader

spec = importlib.util.spec_from_file_location("last_compare", os.path.join(LAST, "compare.py"))
last = importlib.util.module_from_spec(spec)
spec.loader.exec_module(last)

CALLS = (("call1", "tree 88326b7"),)


def main():
    before = load(os.path.join(LAST, "call2", "bench.json"))
    before.update(load(os.path.join(LAST, "call3", "bench.json")))
    for call, tree in CALLS:
        path = os.path.join(HERE, call, "bench.json")
        if os.path.exists(path):
            last.report(f"{call} ({tree}) against main e03d5ee (the last folder's calls 3 and 2)",
                        before, load(path))


if __name__ == "__main__":
    main()

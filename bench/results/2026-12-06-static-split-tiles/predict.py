#!/usr/bin/env python3
"""Predicted times of the split tiles' benchmark cases (no GPU ran them), against the walk's times
measured on the H200 on 2026-12-04 (tree 88326b7, ../2026-12-04-gpu-h200-stats-lanes/call1).

Model: T = 4 us + bytes / (0.9 * copy * f), where
  bytes = 2 X (forward: x read once, y written) or 3 X (backward: x and dy read once, dx written),
  copy  = that run's copy bandwidth (cudaMemcpyAsync, 4285.4 GB/s),
  f     = min(1, blocks / 132): the share of the H200's SMs that have a block (one a part),
  4 us  = a launch and the cluster's two barriers (the small cases of that run took 5 to 6 us
          for one elementwise launch).
Prints markdown: the case, X, blocks, measured walk us, predicted us, predicted fraction of copy
(DESIGN 5's count: one read), predicted ratio to the walk and to cuDNN (cuDNN's time from that
run's vs_cudnn).

  python3 predict.py > predicted.md
"""
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE.parent / "2026-12-04-gpu-h200-stats-lanes" / "call1" / "bench.json"
COPY = 4285.4e9
SMS = 132


def main():
    bench = {}
    for b in json.loads(RUN.read_text())["benchmarks"]:
        bench[b["name"].split("/iterations")[0]] = b
    rows = []
    for line in (HERE / "split_cases.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", line)
        if not m:
            continue
        name, blocks = m.group(1), int(m.group(5))
        shape = dict(re.findall(r"(N|C|HW)(\d+)", name))
        n, c, hw = int(shape["N"]), int(shape["C"]), int(shape["HW"])
        elem = 4 if "/fp32/" in name else 2
        x = n * c * hw * hw * elem
        moved = (3 if name.endswith("/bwd") else 2) * x
        f = min(1.0, blocks / SMS)
        t = 4e-6 + moved / (0.9 * COPY * f)
        b = bench.get(name)
        walk = b["real_time"] * 1e-6 if b else None
        cudnn = walk * b["vs_cudnn"] if b and b.get("vs_cudnn") else None
        rows.append((name, x / 2**20, blocks, walk, t, moved / t / COPY,
                     walk / t if walk else None, cudnn / t if cudnn else None))
    print("| case | x MiB | blocks | walk us (measured) | split us (predicted) | frac of copy "
          "(predicted) | vs walk | vs cuDNN |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"
        print(f"| `{r[0]}` | {r[1]:.1f} | {r[2]} | {fmt(r[3] and r[3] * 1e6, '.1f')} | "
              f"{r[4] * 1e6:.1f} | {r[5]:.2f} | {fmt(r[6], '.2f')} | {fmt(r[7], '.2f')} |")
    fr = sorted(r[5] for r in rows)
    print(f"\n{len(rows)} cases; predicted fraction of copy: median {fr[len(fr) // 2]:.2f}, "
          f"{sum(v >= 0.85 for v in fr)} at 0.85 or more; predicted faster than the walk: "
          f"{sum(1 for r in rows if r[6] and r[6] > 1)} of {sum(1 for r in rows if r[6])}; "
          f"than cuDNN: {sum(1 for r in rows if r[7] and r[7] > 1)} of "
          f"{sum(1 for r in rows if r[7])}.")


if __name__ == "__main__":
    main()

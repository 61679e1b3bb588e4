#!/usr/bin/env python3
"""Predicted times of the instance and group norm NCHW training forwards and backwards that now
take their rows in parts (no GPU ran them), against the walk's times measured on the H200 on
2026-12-04 (tree 88326b7, ../2026-12-04-gpu-h200-stats-lanes/call1) and cuDNN's from that run
(instance norm; the run has no cuDNN group norm).

Model (as ../2026-12-06-static-batch-split-nchw/predict.py): x read once and y written, B = 2 X
(backward: x and dy read once, dx written, B = 3 X); T = 4 us + B / (0.9 * copy *
min(1, blocks / 132)), copy 4285.4 GB/s (that run), a block an SM (the split steps take one
block of 512 an SM). No case here takes 16 parts.

  python3 predict.py > predicted.md
"""
import json
import math
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE.parent / "2026-12-04-gpu-h200-stats-lanes" / "call1" / "bench.json"
COPY = 4285.4e9
SMS = 132


def main():
    bench = {b["name"].split("/iterations")[0]: b
             for b in json.loads(RUN.read_text())["benchmarks"]}
    rows = []
    for line in (HERE / "split_row_cases.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \| \d+ \| [\d.]+ \| (\d+) \| \d+ \| [\d.]+ \| (\d+) \|", line)
        if not m or m.group(1).startswith("check/"):
            continue
        name, parts, blocks = m.group(1), int(m.group(2)), int(m.group(3))
        shape = dict(re.findall(r"(N|C|HW)(\d+)", name))
        n, c, hw = int(shape["N"]), int(shape["C"]), int(shape["HW"])
        elem = 4 if "/fp32/" in name else 2
        x = n * c * hw * hw * elem
        moved = (3 if name.endswith("/bwd") else 2) * x
        t = 4e-6 + moved / (0.9 * COPY * min(1.0, blocks / SMS))
        b = bench[name]
        walk = b["real_time"] * 1e-6
        cudnn = walk * b["vs_cudnn"] if b.get("vs_cudnn") else None
        rows.append((name, x / 2**20, parts, blocks, walk, cudnn, t, moved))
    print("| case | x MiB | parts | blocks | walk us (measured 12-04) | walk frac of copy "
          "(measured) | cuDNN us (measured 12-04) | parts us (predicted) | frac of copy "
          "(predicted) | vs walk (predicted) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, mib, parts, blocks, walk, cudnn, t, moved in rows:
        cu = f"{cudnn * 1e6:.1f}" if cudnn else "n/a"
        print(f"| `{name}` | {mib:.1f} | {parts} | {blocks} | {walk * 1e6:.1f} | "
              f"{moved / walk / COPY:.2f} | {cu} | {t * 1e6:.1f} | {moved / t / COPY:.2f} | "
              f"{walk / t:.2f} |")
    gm = math.exp(sum(math.log(r[4] / r[6]) for r in rows) / len(rows))
    fr = sorted(r[7] / r[6] / COPY for r in rows)
    wf = sorted(r[7] / r[4] / COPY for r in rows)
    print(f"\n{len(rows)} cases: predicted speedup over the walk geomean {gm:.2f}; fraction of "
          f"copy (minimal bytes) median {wf[len(wf) // 2]:.2f} measured (walk) -> "
          f"{fr[len(fr) // 2]:.2f} predicted, lowest {wf[0]:.2f} -> {fr[0]:.2f}.")


if __name__ == "__main__":
    main()

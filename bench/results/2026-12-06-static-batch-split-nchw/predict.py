#!/usr/bin/env python3
"""Predicted times of the batch norm NCHW training forwards and backwards that now take a
channel's runs in parts (no GPU ran them), against the walk's times measured on the H200 on
2026-12-04 (tree 88326b7, ../2026-12-04-gpu-h200-stats-lanes/call1) and cuDNN's from that run.

Model (as ../2026-12-06-static-split-tiles/predict.py): x read once and y written, B = 2 X
(backward: x and dy read once, dx written, B = 3 X); T = 4 us + B / (0.9 * copy *
min(1, blocks / 132)), copy 4285.4 GB/s (that run), a block an SM
(the split steps take one block of 512 an SM). Channels in 16 parts run as clusters of 16 (as
../2026-12-06-static-sixteen-parts/predict.py): A clusters resident at once (8 or 7; not
measured), ceil(C / A) waves, each cluster at 16 SMs' share: T = 4 us + ceil(C / A) * (B / C) /
(0.9 * copy * 16 / 132); both A are given.

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


def predicted(moved, channels, parts, blocks, resident):
    if parts < 16:
        return 4e-6 + moved / (0.9 * COPY * min(1.0, blocks / SMS))
    return 4e-6 + math.ceil(channels / resident) * (moved / channels) / (0.9 * COPY * 16 / SMS)


def main():
    bench = {b["name"].split("/iterations")[0]: b
             for b in json.loads(RUN.read_text())["benchmarks"]}
    rows = []
    for line in (HERE / "batch_split_cases.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \| \d+ \| (\d+) \| \d+ \| (\d+) \|", line)
        if not m or m.group(1).startswith("check/"):
            continue
        name, parts, blocks = m.group(1), int(m.group(2)), int(m.group(3))
        shape = dict(re.findall(r"(N|C|HW)(\d+)", name))
        n, c, hw = int(shape["N"]), int(shape["C"]), int(shape["HW"])
        elem = 4 if "/fp32/" in name else 2
        x = n * c * hw * hw * elem
        moved = (3 if name.endswith("/bwd") else 2) * x
        t8 = predicted(moved, c, parts, blocks, 8)
        t7 = predicted(moved, c, parts, blocks, 7)
        b = bench[name]
        walk = b["real_time"] * 1e-6
        cudnn = walk * b["vs_cudnn"] if b.get("vs_cudnn") else None
        rows.append((name, x / 2**20, parts, blocks, walk, cudnn, t8, t7, moved))
    print("| case | x MiB | parts | blocks | walk us (measured 12-04) | cuDNN us (measured 12-04) | "
          "parts us (predicted; 16 parts: A = 8 / 7) | frac of copy (predicted) | "
          "vs walk (predicted) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mib, parts, blocks, walk, cudnn, t8, t7, moved in rows:
        cu = f"{cudnn * 1e6:.1f}" if cudnn else "n/a"
        t = f"{t8 * 1e6:.1f}" if parts < 16 else f"{t8 * 1e6:.1f} / {t7 * 1e6:.1f}"
        fr = (f"{moved / t8 / COPY:.2f}" if parts < 16
              else f"{moved / t8 / COPY:.2f} / {moved / t7 / COPY:.2f}")
        vs = f"{walk / t8:.2f}" if parts < 16 else f"{walk / t8:.2f} / {walk / t7:.2f}"
        print(f"| `{name}` | {mib:.1f} | {parts} | {blocks} | {walk * 1e6:.1f} | {cu} | {t} | "
              f"{fr} | {vs} |")
    for label, k in (("A = 8", 6), ("A = 7", 7)):
        gm = math.exp(sum(math.log(r[4] / r[k]) for r in rows) / len(rows))
        fr = sorted(r[8] / r[k] / COPY for r in rows)
        print(f"\n{label} (16 parts only): {len(rows)} cases, predicted speedup over the walk "
              f"geomean {gm:.2f}; predicted fraction of copy median {fr[len(fr) // 2]:.2f}.")


if __name__ == "__main__":
    main()

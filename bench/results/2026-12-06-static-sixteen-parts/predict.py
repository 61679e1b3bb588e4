#!/usr/bin/env python3
"""Predicted times of the cases that now take 16 parts a tile (no GPU ran them), against the walk's
times measured on the H200 on 2026-12-04 (tree 88326b7, ../2026-12-04-gpu-h200-stats-lanes/call1)
and cuDNN's from that run.

Model: a cluster of 16 blocks, one an SM (a part stages 196 KiB), runs in one GPC; A clusters of
16 are resident at once (the H200's 132 SMs are 8 GPCs: A = 8 where each has 16 SMs free, 7 where
one has fewer; not measured, so both are given). The tiles run in w = ceil(tiles / A) waves, each
cluster moving its tile's bytes (2 X / tiles forward: x read once, y written; 3 X / tiles
backward: x and dy read once, dx written) at 16 SMs' share of 0.9 of copy (4285.4 GB/s in that
run): T = 4 us + w * b_tile / (0.9 * copy * 16 / 132). A cluster alone in a last wave is given
only its share, so partial waves are costed in full (pessimistic where one SM can draw more).

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


def predicted(tiles, tile_bytes, resident):
    waves = math.ceil(tiles / resident)
    return 4e-6 + waves * tile_bytes / (0.9 * COPY * 16 / SMS)


def main():
    bench = {b["name"].split("/iterations")[0]: b
             for b in json.loads(RUN.read_text())["benchmarks"]}
    rows = []
    for line in (HERE / "sixteen_part_cases.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \| \d+ \| (\d+) \| 16 \|", line)
        if not m:
            continue
        name, tiles = m.group(1), int(m.group(2))
        shape = dict(re.findall(r"(N|C|HW)(\d+)", name))
        n, c, hw = int(shape["N"]), int(shape["C"]), int(shape["HW"])
        elem = 4 if "/fp32/" in name else 2
        x = n * c * hw * hw * elem
        moved = (3 if name.endswith("/bwd") else 2) * x
        t8 = predicted(tiles, moved / tiles, 8)
        t7 = predicted(tiles, moved / tiles, 7)
        b = bench[name]
        walk = b["real_time"] * 1e-6
        cudnn = walk * b["vs_cudnn"] if b.get("vs_cudnn") else None
        rows.append((name, x / 2**20, tiles, walk, cudnn, t8, t7, moved))
    print("| case | x MiB | tiles | walk us (measured 12-04) | cuDNN us (measured 12-04) | "
          "16 parts us, A = 8 (predicted) | A = 7 (predicted) | frac of copy, A = 8 / 7 "
          "(predicted) | vs walk, A = 8 / 7 (predicted) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mib, tiles, walk, cudnn, t8, t7, moved in rows:
        cu = f"{cudnn * 1e6:.1f}" if cudnn else "n/a"
        print(f"| `{name}` | {mib:.1f} | {tiles} | {walk * 1e6:.1f} | {cu} | {t8 * 1e6:.1f} | "
              f"{t7 * 1e6:.1f} | {moved / t8 / COPY:.2f} / {moved / t7 / COPY:.2f} | "
              f"{walk / t8:.2f} / {walk / t7:.2f} |")
    for label, k in (("A = 8", 5), ("A = 7", 6)):
        gm = math.exp(sum(math.log(r[3] / r[k]) for r in rows) / len(rows))
        faster = sum(1 for r in rows if r[4] and r[k] < r[4])
        print(f"\n{label}: {len(rows)} cases, predicted speedup over the walk geomean {gm:.2f}; "
              f"predicted faster than cuDNN's measured time in {faster} of "
              f"{sum(1 for r in rows if r[4])}.")


if __name__ == "__main__":
    main()

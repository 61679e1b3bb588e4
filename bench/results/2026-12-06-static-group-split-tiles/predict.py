#!/usr/bin/env python3
"""Predicted times of the group norm cases that now take the split tiles (no GPU ran them),
against the walk's times measured on the H200 on 2026-12-04 (tree 88326b7,
../2026-12-04-gpu-h200-stats-lanes/call1), and the same shape in NCHW from that run (resident
rows: x read once, a block a (n, g) row), as a sanity anchor for what one read costs there.

Model (as ../2026-12-06-static-split-tiles/predict.py): T = 4 us + B / (0.9 * copy * f), B = 2 X
forward (x read once, y written) or 3 X backward (x and dy read once, dx written), X the bytes of
x, copy that run's 4285.4 GB/s, f = min(1, blocks / 132) (group_split_cases.md).

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
    bench = {b["name"].split("/iterations")[0]: b
             for b in json.loads(RUN.read_text())["benchmarks"]}
    rows = []
    for line in (HERE / "group_split_cases.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \|(?: [\d.]+ \|){5} (\d+) \|", line)
        if not m or m.group(1).startswith("check/"):
            continue
        name, blocks = m.group(1), int(m.group(2))
        shape = dict(re.findall(r"(N|C|HW)(\d+)", name))
        n, c, hw = int(shape["N"]), int(shape["C"]), int(shape["HW"])
        elem = 4 if "/fp32/" in name else 2
        x = n * c * hw * hw * elem
        moved = (3 if name.endswith("/bwd") else 2) * x
        t = 4e-6 + moved / (0.9 * COPY * min(1.0, blocks / SMS))
        walk = bench[name]["real_time"] * 1e-6
        nchw = bench[name.replace("/NHWC/", "/NCHW/")]["real_time"] * 1e-6
        rows.append((name, x / 2**20, blocks, walk, nchw, t, moved / t / COPY))
    print("| case | x MiB | blocks | NHWC walk us (measured) | NCHW us (measured) | "
          "split us (predicted) | frac of copy (predicted) | vs walk (predicted) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mib, blocks, walk, nchw, t, frac in rows:
        print(f"| `{name}` | {mib:.1f} | {blocks} | {walk * 1e6:.1f} | {nchw * 1e6:.1f} | "
              f"{t * 1e6:.1f} | {frac:.2f} | {walk / t:.2f} |")
    fr = sorted(r[6] for r in rows)
    gm = 1.0
    for r in rows:
        gm *= r[3] / r[5]
    print(f"\n{len(rows)} cases; predicted fraction of copy: median {fr[len(fr) // 2]:.2f}, "
          f"{sum(v >= 0.85 for v in fr)} at 0.85 or more; predicted speedup over the walk: "
          f"geomean {gm ** (1 / len(rows)):.2f}.")


if __name__ == "__main__":
    main()

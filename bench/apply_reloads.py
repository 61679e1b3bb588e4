#!/usr/bin/env python3
"""Coefficient reloads per turn, and the issue-bound fraction of copy bandwidth they leave, of
instance and group norm's training forward apply walk in NHWC (apply_channels with per-sample
coefficients, kernels/channel_norm_apply.cuh) at the NHWC shapes of the benchmark sets
instance_norm and group_norm and at a few shapes with C % 8 != 0, from one object's SASS.

    bench/apply_reloads.py OBJECT --walk grid|block [--sms 132] [--cuobjdump PATH]

A turn of the walk loads kApplyPacks = 4 packs a thread (in the walks of 2026-12-02 that this
models: a7678fd's spans replaced both, and bdc4233 made a turn 8 packs). A thread reloads its pack's
coefficients where a pack's sample differs from the one it holds. Where the starts of the
intervals fall at random against the sample boundaries, an interval of d walked rows crosses one
with probability min(1, d / s), s the walked rows per sample:
  - grid (the walk before): a thread's packs a grid height H = blocks * h apart (h: the rows a
    block holds), r = 4 * min(1, H / s) reloads a turn;
  - block (the walk after): a thread's packs h apart, the turn's first one 4 * H - 3 * h past the
    last one of the turn before, r = min(1, (4 * H - 3 * h) / s) + 3 * min(1, h / s).
A turn then issues I warp instructions, interpolated between the turns with the whole numbers
of reloads around r (bench/sass_turn.py with 0 to 4 reloads, on the branch path of a ReLU
forward that stores its mask), and moves B bytes a lane (the tensors' 16-byte accesses and the
mask's bytes). Model as in bench/results: an H200 SM moves about 16 B per clock at copy speed
and issues 4 warp instructions per clock, so the predicted fraction is min(1, 8 * B / I); the
table prints 8 * B / I. Blocks: the occupancy of the kernel's registers (sm_90
limits, bench/row_occupancy.py) times the SMs, capped by the work, as launch_apply_walk sizes
them. A prediction from static counts, not a measurement.
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_table  # noqa: E402
import sass_turn  # noqa: E402
from row_occupancy import res_usage, resident  # noqa: E402

PACKS, BLOCK = 4, 256
ACTS = {0: "identity", 1: "ReLU", 2: "SiLU"}
# (set, N, C, H = W): the benchmark sets' NHWC shapes (bench/shape_sets.cpp), then C % 8 != 0.
SHAPES = ([("instance_norm", 8, c, hw) for c in (64, 128, 256) for hw in (256, 128, 75)]
          + [("group_norm", n, c, hw) for n in (2, 8) for c in (320, 640, 1280)
             for hw in (64, 32, 16, 8)]
          + [("C % 8 != 0", 8, 3, 256), ("C % 8 != 0", 8, 3, 64), ("C % 8 != 0", 4, 100, 32),
             ("C % 8 != 0", 2, 250, 16)])


def geometry(c, hw, elem):
    """(channel packs of a walked row, tiles, rows per block, walked rows per sample, period)."""
    e = 16 // elem
    period = c if c % e == 0 else c * e // math.gcd(c, e)
    packs = period // e
    if packs <= BLOCK:
        tiles, lanes, rows = 1, packs, BLOCK // packs
    else:
        tiles = -(-packs // BLOCK)
        lanes, rows = -(-(-(-packs // tiles)) // 32) * 32, 1
    s = hw * hw * c // period
    return lanes, tiles, rows, s, period != c


def reloads(walk, blocks, rows, s):
    grid = blocks * rows
    if walk == "grid":
        return PACKS * min(1.0, grid / s)
    return min(1.0, (PACKS * grid - (PACKS - 1) * rows) / s) + (PACKS - 1) * min(1.0, rows / s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("object")
    ap.add_argument("--walk", choices=("grid", "block"), required=True)
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--cuobjdump", default="/opt/cuda-tools/nvidia/cu13/bin/cuobjdump")
    ap.add_argument("--arch", default="sm_90")
    args = ap.parse_args()
    funcs, names = sass_table.read_object(args)
    with tempfile.NamedTemporaryFile("w+", suffix=".txt") as f:
        subprocess.run([args.cuobjdump, "-res-usage", "-arch", args.arch, args.object],
                       stdout=f, check=True)
        usage = res_usage(f.name)

    def kernel(t, e, act, period):
        key = (f"apply_channels<nk::cuda::(anonymous namespace)::ForwardApply<{t}, false, {act}, "
               f"false>, {e}, true, {'true' if period else 'false'}>")
        mangled = [m for m, name in names.items() if key in name]
        regs = [u for name, u in usage.items() if key in name]
        instrs = funcs[mangled[0]]
        start, end, _ = sass_table.hot_loop(instrs, None)
        turns = []
        for r in range(PACKS + 1):
            path, _ = sass_turn.turn(instrs, start, end, r, set())
            turns.append(len(path))
        tensor = sass_turn.tensor_bytes(instrs, path)  # the same with or without a reload
        return regs[0][0], turns, tensor

    print(f"walk: {args.walk}; {args.sms} SMs\n")
    print("| dtype | set | N | C | HW | rows/block | walked rows/sample | "
          + " | ".join(f"{a}: blocks, r, I, 8B/I" for a in ACTS.values()) + " |")
    print("|---" * (7 + len(ACTS)) + "|")
    for t, elem in (("__nv_bfloat16", 2), ("float", 4)):
        for name, n, c, hw in SHAPES:
            lanes, tiles, rows, s, period = geometry(c, hw, elem)
            cells = []
            for act in ACTS:
                regs, turns, tensor = kernel(t, 16 // elem, act, period)
                blocks = resident(regs, 0, 0, lanes * rows)[0] * args.sms // tiles
                blocks = min(blocks, -(-(n * s) // (rows * PACKS)))
                r = reloads(args.walk, blocks, rows, s)
                whole = min(int(r), PACKS - 1)
                issued = turns[whole] + (r - whole) * (turns[whole + 1] - turns[whole])
                cells.append(f"{blocks}, {r:.2f}, {issued:.0f}, {8 * tensor / issued:.2f}")
            print(f"| {'bf16' if elem == 2 else 'fp32'} | {name} | {n} | {c} | {hw} | {rows} | "
                  f"{s} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

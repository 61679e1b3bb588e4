#!/usr/bin/env python3
"""The instructions one warp executes in one turn of a kernel's hot loop (a channel-norm apply
walk, with a given number of coefficient reloads, or the row-norm backward's row loop), from the
SASS of a built object.

    bench/sass_turn.py OBJECT PATTERN [--reloads K] [--take I ...] [--list]
                       [--cuobjdump PATH] [--arch sm_90]

bench/sass_table.py finds the hot loop and bench/sass_steady.py its reload blocks (a forward
branch over 4-byte global loads only). The walk starts at the loop's first instruction and ends
at its back branch. The first K reload blocks it meets run, later ones are skipped (their branch
taken); every other conditional branch falls through unless its index is given to --take, and
unconditional branches are followed. Where the compiler made two versions of the loop body (a
nullable output stored or not), falling through takes the first. Checked on the forward's walks
(ForwardApply), whose coefficients are 4-byte loads; in the backward's dx walks, which load
16-byte coefficients, the heuristic finds smaller blocks inside a reload, so there K does not
count reloads. The row loop of backward_in_registers has no reload block; there --take alone
chooses the path (row shape, dh_extra, the outputs stored). --list prints each conditional branch
the walk meets and what it did, to check the path. Prints, per kernel that matches: the
instructions of the turn, the bytes of its 1-, 8- and 16-byte global accesses (the tensors and
the mask, not the 4-byte coefficient loads), and its global loads and stores by opcode. Static
evidence: which branches a warp takes is the reader's reasoning, written next to the figure.
"""
import argparse
import os
import re
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_steady  # noqa: E402
import sass_table  # noqa: E402


def turn(instrs, start, end, reloads, take):
    """(executed indices, [(branch index, taken)]) for one turn from start to the back branch."""
    index = {addr: i for i, (addr, _, _) in enumerate(instrs)}
    guards = {first - 1 for first, _ in sass_steady.skipped_blocks(instrs, start, end)}
    i, executed, branches, met = start, [], [], 0
    while start <= i <= end and len(executed) < 100000:
        addr, op, text = instrs[i]
        executed.append(i)
        if i == end:
            break
        if op.startswith("BRA"):
            conditional = text.startswith("@")
            taken = not conditional or i in take
            if conditional and i in guards:
                taken = met >= reloads
                met += 1
            if conditional:
                branches.append((i, taken))
            m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
            if taken and m and int(m.group(1), 16) in index:
                i = index[int(m.group(1), 16)]
                continue
        i += 1
    return executed, branches


def tensor_bytes(instrs, path):
    """Bytes of the path's 1-, 8- and 16-byte global accesses: the tensors and the mask."""
    widths = [sass_table.access_width(instrs[i][1]) for i in path
              if instrs[i][1].startswith(("LDG", "STG"))]
    return sum(w for w in widths if w in (1, 8, 16))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sass_table.add_object_arguments(ap)
    ap.add_argument("--reloads", type=int, default=1)
    ap.add_argument("--take", type=int, nargs="*", default=[])
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    funcs, names = sass_table.read_object(args)
    for mangled, name in sorted(names.items(), key=lambda item: item[1]):
        if not re.search(args.pattern, name):
            continue
        instrs = funcs[mangled]
        loop = sass_table.hot_loop(instrs, None)
        if loop is None:
            continue
        start, end, _ = loop
        path, branches = turn(instrs, start, end, args.reloads, set(args.take))
        ops = Counter(instrs[i][1] for i in path)

        def by(prefix):
            return " ".join(f"{n}x{op}" for op, n in sorted(ops.items())
                            if op.startswith(prefix)) or "-"

        short = sass_table.strip_arguments(name).replace("(anonymous namespace)::", "")
        print(f"| `{short}` | {len(path)} | {tensor_bytes(instrs, path)} | {by('LDG')} |"
              f" {by('STG')} |")
        if args.list:
            for i, taken in branches:
                print(f"    {i:5d} {'taken' if taken else 'falls through'}: {instrs[i][2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The instructions one warp executes on one path through a kernel without a loop on that path
(the split row kernels: a slice a block, its packs unrolled), from the SASS of a built object.

    bench/sass_path.py OBJECT PATTERN [--take I ...] [--list] [--cuobjdump PATH] [--arch sm_90]

--list prints the kernel's branches, exits, barriers, calls and global accesses with their
instruction index, so that a path can be chosen: each index given to --take is a conditional
branch the warp takes (every other conditional branch falls through; unconditional ones are
followed). The walk starts at instruction 0 and stops at the first EXIT it executes, and prints
the instructions executed, global loads and stores by opcode, and barriers. A CALL counts as one
instruction (the subroutine is not followed). Static evidence: which branches a warp takes is the
reader's reasoning, written next to the figure.
"""
import argparse
import os
import re
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_table  # noqa: E402

MARKED = ("BRA", "EXIT", "BAR", "CALL", "RET", "LDG", "STG", "BSSY", "BSYNC")


def walk(instrs, take):
    index = {addr: i for i, (addr, _, _) in enumerate(instrs)}
    i, executed = 0, []
    while i < len(instrs) and len(executed) < 100000:
        addr, op, text = instrs[i]
        executed.append(i)
        conditional = text.startswith("@")
        if op == "EXIT" and not conditional:
            break
        if op == "EXIT" and i in take:
            break
        if op.startswith("BRA") and (not conditional or i in take):
            m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
            if m and int(m.group(1), 16) in index:
                i = index[int(m.group(1), 16)]
                continue
        i += 1
    return executed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sass_table.add_object_arguments(ap)
    ap.add_argument("--take", type=int, nargs="*", default=[])
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    funcs, names = sass_table.read_object(args)
    found = [m for m, n in names.items() if args.pattern in n]
    if len(found) != 1:
        print(f"sass_path.py: {len(found)} kernels match '{args.pattern}'", file=sys.stderr)
        return 2
    instrs = funcs[found[0]]
    if args.list:
        for i, (addr, op, text) in enumerate(instrs):
            if op.startswith(MARKED):
                print(f"{i:5d} {addr:06x} {text}")
        return 0
    path = walk(instrs, set(args.take))
    ops = Counter(instrs[i][1] for i in path)

    def by(prefix):
        return " ".join(f"{n}x{op}" for op, n in sorted(ops.items()) if op.startswith(prefix)) or "-"

    bars = sum(n for op, n in ops.items() if op.startswith("BAR"))
    print(f"{len(path)} instructions | global loads {by('LDG')} | global stores {by('STG')} |"
          f" barriers {bars} | last index {path[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

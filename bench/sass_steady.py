#!/usr/bin/env python3
"""The hot loop of each kernel without the blocks its steady state skips, from the SASS of a
built object or library (bench/sass_table.py finds the loop and counts every path of it).

A block skipped is the span of a forward conditional branch inside the loop that holds 4-byte
global loads and neither wider loads nor global stores: in the channel-norm apply walks, the
reload of a pack's coefficients when its sample changes, which batch norm runs once per thread.
Prints, per kernel: the loop's instructions, those of the skipped blocks, and the difference.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_table  # noqa: E402


def skipped_blocks(instrs, start, end):
    """(first, last) indices of the outermost coefficient-only blocks a forward branch skips."""
    index = {addr: i for i, (addr, _, _) in enumerate(instrs)}
    blocks = []
    for i in range(start, end + 1):
        addr, op, text = instrs[i]
        if not op.startswith("BRA") or not text.startswith("@"):
            continue
        m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
        if not m:
            continue
        target = int(m.group(1), 16)
        j = index.get(target)
        if j is None or target <= addr or j > end + 1:
            continue
        body = instrs[i + 1:j]
        loads = [o for _, o, _ in body if o.startswith("LDG")]
        if (loads and all(sass_table.access_width(o) == 4 for o in loads)
                and not any(o.startswith("STG") for _, o, _ in body)):
            blocks.append((i + 1, j - 1))
    outer = [b for b in blocks
             if not any(o != b and o[0] <= b[0] and b[1] <= o[1] for o in blocks)]
    return outer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sass_table.add_object_arguments(ap)
    a = ap.parse_args()
    funcs, names = sass_table.read_object(a)
    print("| kernel | hot loop instr | skipped blocks | their instr | steady instr |")
    print("|---|---|---|---|---|")
    for mangled, instrs in sorted(funcs.items(), key=lambda kv: names[kv[0]]):
        name = names[mangled]
        if not re.search(a.pattern, name):
            continue
        loop = sass_table.hot_loop(instrs, None)
        if loop is None:
            continue
        start, end, body = loop
        blocks = skipped_blocks(instrs, start, end)
        skipped = sum(last - first + 1 for first, last in blocks)
        short = sass_table.strip_arguments(name)
        print(f"| `{short}` | {len(body)} | {len(blocks)} | {skipped} | {len(body) - skipped} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Every loop of the kernels whose demangled name contains a pattern, from the SASS of a built
object or library: where bench/sass_table.py reports one hot loop per kernel, this lists them all
(a staged row kernel has a copy loop, statistics loops over shared memory and an output loop).

    bench/sass_loops.py OBJECT PATTERN [--cuobjdump PATH] [--arch sm_90]

One line per loop (a backward branch and its target; outer loops contain their inner ones): its
first and last instruction index, its instruction count, and its global loads, global stores and
shared-memory accesses by opcode, and the barriers in it. Static counts: one pass through the
body, both sides of every branch. With --at PREFIX (repeatable, e.g. --at LDG --at CCTL), also
where in each loop the instructions whose opcode starts with PREFIX sit (their offsets from the
loop's first instruction): whether a tile's loads are issued together or one after another's use.
With --skipped-loads, also the loop's regions that a predicated forward branch jumps over and that
hold at least 4 global loads and no store (a reload of a pack's coefficients, taken only when they
change; a pack's own loads are fewer, or predicated): how many, their instructions, and the loop's
length without them, the path when every such branch is taken.
"""
import argparse
import os
import re
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_table  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sass_table.add_object_arguments(ap)
    ap.add_argument("--at", action="append", default=[], metavar="PREFIX",
                    help="print the offsets in each loop of the opcodes starting with PREFIX")
    ap.add_argument("--skipped-loads", action="store_true",
                    help="count the loop's branched-over regions that hold 4+ global loads, no store")
    args = ap.parse_args()
    funcs, names = sass_table.read_object(args)
    for mangled, name in sorted(names.items(), key=lambda item: item[1]):
        if args.pattern not in name:
            continue
        short = sass_table.strip_arguments(name).replace("(anonymous namespace)::", "")
        print(f"{short.replace('nk::cuda::', '')}: {len(funcs[mangled])} instructions")
        instrs = funcs[mangled]
        for start, end in sass_table.loops(instrs):
            body = instrs[start:end + 1]

            def ops(prefixes):
                c = Counter(op for _, op, _ in body if op.startswith(prefixes))
                return " ".join(f"{n}x{op}" for op, n in sorted(c.items())) or "-"

            bars = sum(1 for _, op, _ in body if op.startswith("BAR"))
            print(f"  loop {start}-{end}: {len(body)} instr | global loads {ops('LDG')} |"
                  f" global stores {ops('STG')} | shared {ops(('LDS', 'STS'))} | barriers {bars}")
            if args.skipped_loads:
                regions = skipped_load_regions(body)
                inside = sum(b - a for a, b in regions)
                print(f"    skipped-loads regions {len(regions)}: {inside} instr; loop without them"
                      f" {len(body) - inside} instr")
            for prefix in args.at:
                at = [i for i, (_, op, _) in enumerate(body) if op.startswith(prefix)]
                print(f"    {prefix} at {' '.join(map(str, at)) or '-'}")


def skipped_load_regions(body):
    """[first, end) index ranges of body that a predicated forward branch inside it jumps over
    (to an instruction inside it), holding 4 or more global loads and no store: the outermost
    such ones."""
    index = {addr: i for i, (addr, _, _) in enumerate(body)}
    found = []
    for i, (_, op, text) in enumerate(body):
        m = re.match(r"@!?U?P\w+\s+BRA\s+0x([0-9a-f]+)", text)
        if not op.startswith("BRA") or not m or int(m.group(1), 16) not in index:
            continue
        end = index[int(m.group(1), 16)]
        ops = [o for _, o, _ in body[i + 1:end]]
        loads = sum(1 for o in ops if o.startswith("LDG"))
        if end > i and loads >= 4 and not any(o.startswith("STG") for o in ops):
            found.append((i + 1, end))
    return [r for r in found if not any(o != r and o[0] <= r[0] and r[1] <= o[1] for o in found)]


if __name__ == "__main__":
    sys.exit(main())

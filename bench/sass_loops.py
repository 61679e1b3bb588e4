#!/usr/bin/env python3
"""Every loop of the kernels whose demangled name contains a pattern, from the SASS of a built
object or library: where bench/sass_table.py reports one hot loop per kernel, this lists them all
(a staged row kernel has a copy loop, statistics loops over shared memory and an output loop).

    bench/sass_loops.py OBJECT PATTERN [--cuobjdump PATH] [--arch sm_90]

One line per loop (a backward branch and its target; outer loops contain their inner ones): its
first and last instruction index, its instruction count, and its global loads, global stores and
shared-memory accesses by opcode, and the barriers in it. Static counts: one pass through the
body, both sides of every branch.
"""
import argparse
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_table  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sass_table.add_object_arguments(ap)
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


if __name__ == "__main__":
    sys.exit(main())

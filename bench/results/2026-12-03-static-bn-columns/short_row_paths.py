#!/usr/bin/env python3
"""One row of partials_short_rows with no whole pack in it (S < pack), from the SASS of a built
object: the instructions of the row loop when the row runs its head, its tail or both (the two
masked single-element tiles, push_row_end), the pack loop's section skipped.
    short_row_paths.py OBJECT PATTERN LO HI PLO PHI [--cuobjdump PATH] [--arch sm_90]
LO..HI: the row loop and PLO..PHI: the pack loop inside it (instruction indices, from
bench/sass_loops.py). The end blocks are the outermost BSSY..BSYNC spans of the row loop that hold
single-element global loads and not the pack loop. Static, both sides of each branch inside a
block counted: an estimate of one path, not a profile.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import sass_table  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    sass_table.add_object_arguments(ap)
    for name in ("lo", "hi", "plo", "phi"):
        ap.add_argument(name, type=int)
    a = ap.parse_args()
    funcs, names = sass_table.read_object(a)
    keys = [k for k in funcs if a.pattern in names.get(k, k)]
    if len(keys) != 1:
        sys.exit(f"{len(keys)} kernels match")
    ins = funcs[keys[0]]
    at = {addr: i for i, (addr, _, _) in enumerate(ins)}

    def span(i):  # a BSSY at i and the index of its BSYNC target
        return at[int(ins[i][2].split(",")[-1].strip().rstrip(";"), 16)]

    bssy = [i for i in range(a.lo, a.hi + 1) if ins[i][1].startswith("BSSY")]
    ends = []
    for i in bssy:
        j = span(i)
        small = any(op.startswith("LDG") and ".128" not in op for _, op, _ in ins[i:j])
        if small and not (i <= a.plo <= j) and j <= a.hi:
            ends.append((i, j))
    ends = [b for b in ends if not any(o != b and o[0] <= b[0] and b[1] <= o[1] for o in ends)]
    packs = min((span(i) - i + 1 for i in bssy if i <= a.plo and a.phi <= span(i)),
                default=a.phi - a.plo + 1)
    sizes = [j - i + 1 for i, j in ends]
    rest = a.hi - a.lo + 1 - packs - sum(sizes)
    print(f"row loop {a.hi - a.lo + 1}, end blocks {ends} of {sizes}, pack section {packs}")
    print(f"a row: head only {rest + sizes[0]}, tail only {rest + sizes[1]}, "
          f"both {rest + sum(sizes)} (plus the skipped pack section's test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Two builds of the same kernels, compared loop by loop from their sm_90 SASS.

    compare_loops.py BEFORE.o AFTER.o REGEX [--cuobjdump PATH]

Kernel instances are paired by demangled name without the argument list (the argument types
are what changed). First line: how many paired instances have the same SASS (addresses masked).
Then, for every instance matching REGEX, registers and each innermost loop that holds a global
load: its instructions, then the instructions of its whole-pack path, with the path's global
loads (g) and constant loads (c). The path runs from the loop's head to its back branch; a
conditional branch is taken where the instructions it skips hold a global load narrower than
8 bytes and no floating-point add (the element-by-element fallback of a pack not wholly in the
row, not the whole pack's work), else it falls through; predicated instructions count, since they issue. Last, per kernel family, the sums of
the first such loop's path and of all of them.
"""
import argparse
import collections
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import sass_table as st  # noqa: E402


def load(obj, cuobjdump):
    funcs = st.parse_sass(st.run([cuobjdump, "-sass", "-arch", "sm_90", obj]))
    res = st.run([cuobjdump, "-res-usage", "-arch", "sm_90", obj])
    regs = {m.group(1): int(m.group(2))
            for m in re.finditer(r"Function (\S+):\s*\n?\s*REG:(\d+)", res)}
    names = st.demangle(sorted(funcs))
    return {st.short_name(names.get(m, m)): (regs.get(m), ins) for m, ins in funcs.items()}


def branch_target(text):
    m = re.search(r"BRA\s+(?:`\(\S+\)\s*)?(0x[0-9a-f]+)", text)
    return int(m.group(1), 16) if m else None


def narrow_load(op):
    return op.startswith("LDG") and ".128" not in op and ".64" not in op


def load_loops(ins):
    """[(instructions, path instructions, path LDG, path LDC)] of the innermost load loops."""
    at = {a: i for i, (a, _, _) in enumerate(ins)}
    loops = st.loops(ins)
    inner = sorted(l for l in loops
                   if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in loops))
    out = []
    for s, e in inner:
        if not any(op.startswith("LDG") for _, op, _ in ins[s:e + 1]):
            continue
        i, n, g, c, steps = s, 0, 0, 0, 0
        while s <= i <= e and steps < 10000:
            _, op, text = ins[i]
            steps += 1
            n += 1
            g += op.startswith("LDG")
            c += op.startswith("LDC")
            if op.startswith("BRA") and i != e:
                j = at.get(branch_target(text))
                conditional = "@" in text.split("BRA")[0]
                skipped = ins[i + 1:j] if j is not None and j > i else []
                take = not conditional or (
                    any(narrow_load(o) for _, o, _ in skipped)
                    and not any(o.startswith(("FFMA", "FADD")) for _, o, _ in skipped))
                if take:
                    if j is None or not s <= j <= e:
                        break
                    i = j
                    continue
            i += 1
        out.append((e - s + 1, n, g, c))
    return out


def masked(ins):
    return [(op, re.sub(r"0x[0-9a-f]+", "A", text.split("/*")[0])) for _, op, text in ins]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("regex")
    ap.add_argument("--cuobjdump", default="cuobjdump")
    a = ap.parse_args()
    before, after = load(a.before, a.cuobjdump), load(a.after, a.cuobjdump)
    paired = sorted(set(before) & set(after))
    same = [n for n in paired if masked(before[n][1]) == masked(after[n][1])]
    families = sorted({n.split("<")[0] for n in paired if n not in same})
    print(f"{len(paired)} instances paired ({len(set(before) ^ set(after))} unpaired), "
          f"{len(same)} with the same SASS; the others: {', '.join(families) or 'none'}\n")
    print("| kernel | registers | load loops before: instructions -> path | after |")
    print("|---|---|---|---|")
    fam = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    fmt = lambda ls: " ".join(f"{t}->{n}:{g}g{c}c" for t, n, g, c in ls)
    for name in paired:
        if not re.search(a.regex, name):
            continue
        (rb, ib), (ra, ia) = before[name], after[name]
        lb, la = load_loops(ib), load_loops(ia)
        print(f"| {name} | {rb} -> {ra} | {fmt(lb)} | {fmt(la)} |")
        f = fam[name.split("<")[0]]
        f[0] += 1
        f[1] += lb[0][1] if lb else 0
        f[2] += la[0][1] if la else 0
        f[3] += sum(l[1] for l in lb)
        f[4] += sum(l[1] for l in la)
    print("\n| family | instances | first load loop's path, summed | all load loops' paths, summed |")
    print("|---|---|---|---|")
    pct = lambda x, y: f"{100 * (y - x) / max(x, 1):+.1f} %"
    for name, f in sorted(fam.items()):
        print(f"| {name} | {f[0]} | {f[1]} -> {f[2]} ({pct(f[1], f[2])}) | "
              f"{f[3]} -> {f[4]} ({pct(f[3], f[4])}) |")


if __name__ == "__main__":
    main()

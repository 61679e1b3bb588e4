#!/usr/bin/env python3
"""Instructions of a whole thread of the short-rows kernels (rows in registers, no loop), from the
SASS of a built object: the path that takes 16-byte loads and stores. Run from the repository root:

    python3 bench/results/2026-12-03-static-rows-in-registers/whole_thread_paths.py OBJ REGEX
        [--cuobjdump PATH] [--arch sm_90]

bench/sass_path.py's walk (every conditional branch or exit falls through unless taken) over each
subset (up to four) of the guards of the tail thread's code: the conditional branches and exits
that skip single-element accesses of a tensor (2-byte accesses; in fp32, 4-byte accesses through a
register that a 16-byte access of the kernel also addresses: registers are reused, so check the
fp32 rows' 4-byte counts by hand). The subset whose walk has the most 16-byte accesses (LDG.E.128,
STG.E.128), then the fewest single-element ones, then the most instructions. Everything else falls
through: every row's statistics stores, the weight and bias loads and every possible channel change
of group norm run, an upper bound for instance norm. Prints, per kernel, the instructions and
accesses of that walk.
"""
import itertools
import re
import sys
from collections import Counter

sys.path.insert(0, "bench")
import sass_path  # noqa: E402
import sass_table  # noqa: E402


def base(text):
    m = re.search(r"\[(R\d+)\.64", text)
    return m.group(1) if m else None


def score(instrs, path, single):
    ops = Counter(instrs[i][1] for i in path)
    vector = ops["LDG.E.128"] + ops["STG.E.128"]
    return (vector, -sum(1 for i in path if single(i)), len(path))


def main():
    import argparse
    ap = argparse.ArgumentParser()
    sass_table.add_object_arguments(ap)
    args = ap.parse_args()
    funcs, names = sass_table.read_object(args)
    for mangled, name in sorted(names.items(), key=lambda kv: kv[1]):
        if not re.search(args.pattern, name):
            continue
        instrs = funcs[mangled]
        # Registers that address a tensor: those of the 16-byte accesses; single-element
        # accesses through them are the tail thread's.
        tensor_bases = {base(t) for _, op, t in instrs if op in ("LDG.E.128", "STG.E.128")}
        fp32 = "<float," in name
        addr = {a: i for i, (a, _, _) in enumerate(instrs)}

        def single(i):
            op, text = instrs[i][1], instrs[i][2]
            if fp32:  # 4-byte accesses: those of the weight, bias and statistics too
                return op in ("LDG.E", "STG.E") and base(text) in tensor_bases
            return op in ("LDG.E.U16", "STG.E.U16")

        # The guards of the tail thread's code: conditional branches and exits that skip
        # single-element accesses of a tensor (up to the branch's target; for an exit, the
        # kernel's next exit).
        branches = []
        for i, (_, op, text) in enumerate(instrs):
            if not text.startswith("@"):
                continue
            if op.startswith("BRA"):
                m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
                end = addr.get(int(m.group(1), 16), i) if m else i
            elif op == "EXIT":
                end = next((j for j in range(i + 1, len(instrs)) if instrs[j][1] == "EXIT"),
                           len(instrs))
            else:
                continue
            if any(single(j) for j in range(i + 1, end)):
                branches.append(i)
        best = None
        for k in range(0, min(4, len(branches)) + 1):
            for take in itertools.combinations(branches, k):
                path = sass_path.walk(instrs, set(take))
                s = score(instrs, path, single)
                if best is None or s > best[0]:
                    best = (s, take, path)
        _, take, path = best
        ops = Counter(instrs[i][1] for i in path)
        acc = " ".join(f"{n}x{op}" for op, n in sorted(ops.items())
                       if op.startswith(("LDG", "STG", "RED", "ATOM")))
        print(f"{name} | {len(path)} | {acc} | takes {list(take)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""passes.md from loops.txt: per 16-byte pack of x, the loops of forward_group_tile's three passes
(pass 1: the copy, STS.128; passes 2 and 3: the head's loop over shared memory and the tail's over
memory, told apart by LDS.128 and LDG.E.128; pass 3 stores y, STG.E.128). A loop unrolled over k
packs is divided by k. Aligned instances only (misaligned ones load single elements)."""
import re
import sys

loops, cur = {}, None
for line in open(sys.argv[1] if len(sys.argv) > 1 else "loops.txt"):
    if not line.startswith("  "):
        cur = line.split(":")[0].replace("void ", "")
        loops[cur] = []
        continue
    m = re.match(r"\s+loop \d+-\d+: (\d+) instr \| global loads (.*?) \| global stores (.*?) \| "
                 r"shared (.*?) \| barriers (\d+)", line)
    if m and m.group(5) == "0":
        loops[cur].append((int(m.group(1)), m.group(2), m.group(3), m.group(4)))


def count(text, op):
    m = re.search(r"(\d+)x" + re.escape(op) + r"(\s|$)", text)
    return int(m.group(1)) if m else 0


def per_pack(found, op_field, op):
    return max(n / count(loop[op_field], op) for loop in found for n in [loop[0]])


print("| `forward_group_tile<T, E, act, residual>` | pass 1 | pass 2 head / tail "
      "| pass 3 head / tail | I (head) | B | 8B/I |")
print("|---|---|---|---|---|---|---|")
for name, body in loops.items():
    args = [a.strip() for a in name[name.index("<") + 1:name.rindex(">")].split(",")]
    if args[1] == "1":
        continue
    p1 = [l for l in body if count(l[3], "STS.128")]
    stores = [l for l in body if count(l[2], "STG.E.128")]
    sums = [l for l in body if not count(l[2], "STG.E.128") and not count(l[3], "STS.128")]
    p2h = [l for l in sums if count(l[3], "LDS.128")]
    p2t = [l for l in sums if count(l[1], "LDG.E.128") and not count(l[3], "LDS.128")]
    p3h = [l for l in stores if count(l[3], "LDS.128")]
    p3t = [l for l in stores if not count(l[3], "LDS.128")]
    a = per_pack(p1, 3, "STS.128")
    b, bt = per_pack(p2h, 3, "LDS.128"), per_pack(p2t, 1, "LDG.E.128")
    c = per_pack(p3h, 3, "LDS.128")
    # the tail's pass 3 loads x (and z): per pack of x, its stores of y
    ct = per_pack(p3t, 2, "STG.E.128")
    nbytes = 48 if args[3] == "true" else 32
    total = a + b + c
    print(f"| `<{', '.join(args)}>` | {a:.0f} | {b:.0f} / {bt:.0f} | {c:.0f} / {ct:.0f} "
          f"| {total:.0f} | {nbytes} | {8 * nbytes / total:.2f} |")

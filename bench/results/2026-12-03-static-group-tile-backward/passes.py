#!/usr/bin/env python3
"""passes.md from loops.txt: per 16-byte pack of x, the loops of backward_group_tile's two passes
(pass 1: the copy of x and dy with the sums, two STS.128 a pack; pass 2: dx and dz from the staged
head, two LDS.128 a pack, and from memory for the tail, no LDS.128; both store two STG.E.128 a
pack, dx and dz). Loops with a barrier (the reductions) are left out. Aligned instances only
(misaligned ones load single elements)."""
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


def per_pack(found, field, op, per):
    return max(loop[0] / (count(loop[field], op) / per) for loop in found)


SOURCES = {"0": "none", "1": "ReLU mask", "2": "ReLU from y", "3": "SiLU"}
print("| `backward_group_tile<T, E, source, z>` | act' | pass 1 | pass 2 head / tail "
      "| I (head) | B | 8B/I |")
print("|---|---|---|---|---|---|---|")
for name, body in loops.items():
    args = [a.strip() for a in name[name.index("<") + 1:name.rindex(">")].split(",")]
    if args[1] == "1":
        continue
    p1 = [l for l in body if count(l[3], "STS.128")]
    p2h = [l for l in body if count(l[3], "LDS.128") and count(l[2], "STG.E.128")]
    p2t = [l for l in body if count(l[2], "STG.E.128") and not count(l[3], "LDS.128")]
    a = per_pack(p1, 3, "STS.128", 2)
    b = per_pack(p2h, 3, "LDS.128", 2)
    bt = per_pack(p2t, 2, "STG.E.128", 2)
    # DRAM bytes a lane moves per pack: x, dy read and dx written; y (ReLU from y) or z (SiLU with
    # a residual) read once more (its second read, of the tile just read, predicted from L2); dz
    # written with a residual.
    aux = args[2] == "2" or (args[2] == "3" and args[3] == "true")
    nbytes = 48 + (16 if aux else 0) + (16 if args[3] == "true" else 0)
    total = a + b
    label = SOURCES[args[2]] + (" + z" if args[3] == "true" else "")
    print(f"| `<{', '.join(args)}>` | {label} | {a:.0f} | {b:.0f} / {bt:.0f} "
          f"| {total:.0f} | {nbytes} | {8 * nbytes / total:.2f} |")

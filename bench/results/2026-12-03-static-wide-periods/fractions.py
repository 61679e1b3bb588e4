#!/usr/bin/env python3
"""Before/after rows for the channel walks of NHWC periods wider than a block (16-bit types).

    fractions.py partials.md apply.md

Reads bench/sass_table.py's tables of the sm_90 objects and pairs, for each op, the instance such
a shape took before (single elements: partials_channels<Op, T, 1, (ChannelWalk)0>,
apply_channels<Op, 1, kPerSample, false>) with the one it takes now with 16-byte aligned pointers
(partials_channels<Op, T, 8, (ChannelWalk)2>, apply_channels<Op, 8, kPerSample, true>). For each
it prints I (the hot loop's instructions, every path), B (bytes of tensor loads and stores a lane
moves in one pass: accesses of the activation width, 2 bytes before and 16 after; coefficient
and mask-word loads of 4 bytes are left out) and the predicted fraction of copy bandwidth
min(1, 8 B / I) (an H200 SM moves about 16 B per clock at copy speed and issues 4 warp
instructions per clock), with 8 B / I in brackets where it exceeds 1.
"""
import re
import sys


def rows(path):
    out = {}
    for line in open(path):
        m = re.match(r"\| `([^`]+)` \| (\d+) \| (\S+) \| (\d+) \| ([^|]*) \| ([^|]*) \|", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(4)), m.group(5), m.group(6))
    return out


def moved(accesses, width):
    total = 0
    for count, w in re.findall(r"(\d+)x(\d+)B", accesses):
        if int(w) == width:
            total += int(count) * width
    return total


def row(label, table, before, after):
    cells = [label]
    for name, width in ((before, 2), (after, 16)):
        if name not in table:
            cells += ["(missing)", "", ""]
            continue
        regs, instr, loads, stores = table[name]
        b = moved(loads, width) + moved(stores, width)
        f = 8 * b / instr
        cells += [f"{instr}, {b}", f"{min(1, f):.2f}" + (f" ({f:.2f})" if f > 1 else ""),
                  str(regs)]
    print("| " + " | ".join(cells) + " |")


def main():
    partials, apply = rows(sys.argv[1]), rows(sys.argv[2])
    print("| pass (bf16) | before: I, B | before | regs | after: I, B | after | regs |")
    print("|---|---|---|---|---|---|---|")
    t = "__nv_bfloat16"
    for label, op in (("statistics", f"StatsOp<{t}>"),
                      ("statistics accumulator", f"AccumulateOp<{t}>"),
                      ("gradient sums", f"GradOp<{t}, 0, false>"),
                      ("gradient sums, SiLU", f"GradOp<{t}, 3, false>")):
        row(label, partials, f"partials_channels<{op}, {t}, 1, (ChannelWalk)0>",
            f"partials_channels<{op}, {t}, 8, (ChannelWalk)2>")
    # ForwardApply<T, kFold (inference: folded running statistics), kAct, kResidual>,
    # DxApply<T, kTraining, kSource, kResidual>.
    for label, op, per_sample in (
            ("batch norm training y", f"ForwardApply<{t}, false, 0, false>", "false"),
            ("batch norm inference y", f"ForwardApply<{t}, true, 0, false>", "false"),
            ("batch norm training dx", f"DxApply<{t}, true, 0, false>", "false"),
            ("batch norm inference dx", f"DxApply<{t}, false, 0, false>", "false"),
            ("instance/group norm training y", f"ForwardApply<{t}, false, 0, false>", "true"),
            ("instance/group norm training dx", f"DxApply<{t}, true, 0, false>", "true")):
        row(label, apply, f"apply_channels<{op}, 1, {per_sample}, false>",
            f"apply_channels<{op}, 8, {per_sample}, true>")


main()

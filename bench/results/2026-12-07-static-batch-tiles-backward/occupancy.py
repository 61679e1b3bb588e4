#!/usr/bin/env python3
"""Blocks an SM and pass 1's bytes in flight an SM of the batch tiles' training backward, for each
benchmark case (batch_tile_backward_cases.tsv) with the registers of two builds.

    occupancy.py CASES.tsv BEFORE.o AFTER.o [--cuobjdump PATH]

The instance: backward_batch_tile<T, E, 0, false, step> (no fusion, aligned pointers), step kWhole
(0) where the tile is one block, kCluster (1) where it is in parts. Blocks an SM: the least of 32,
2048 threads, 64 K registers (a warp's registers rounded up to 256) and 228 KiB of shared memory
(the staged packs of x and dy, 32 bytes a pack, the scratch, and 1 KiB the runtime keeps a
block): a whole tile stages its plan's head; a part its runs, up to the opt-in 227 KiB less the
scratch (part_head_packs). Bytes in flight: blocks x threads x the 16-byte loads a thread issues before it
waits on them in pass 1 (before: 2, a pack of x and of dy; after: 4). Little's law: an SM needs
copy bandwidth / SMs x latency in flight (H200, 2026-12-04: 4285.4 GB/s, 132 SMs, 32.5 B/ns;
latency 500 to 800 ns: 16.2 to 26.0 KB).
"""
import argparse
import re
import subprocess

SCRATCH = {0: 2 * 32 * 4, 1: 2 * 32 * 4 + 16 + 16}  # kWhole block_sum's; kCluster SplitSumsScratch


def registers(obj, cuobjdump):
    res = subprocess.run([cuobjdump, "-res-usage", "-arch", "sm_90", obj], check=True,
                         capture_output=True, text=True).stdout
    out = {}
    for m in re.finditer(r"Function (\S+):\s*\n?\s*REG:(\d+)", res):
        name = subprocess.run(["c++filt", m.group(1)], capture_output=True, text=True).stdout
        out[name.strip().replace("nk::cuda::", "")] = int(m.group(2))
    return out


def blocks_per_sm(threads, regs, smem):
    warps = (threads + 31) // 32
    per_warp = (regs * 32 + 255) // 256 * 256
    by_regs = (65536 // per_warp) // warps
    by_smem = (228 * 1024) // (smem + 1024)
    return min(32, 2048 // threads, by_regs, by_smem)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cases")
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--cuobjdump", default="cuobjdump")
    a = ap.parse_args()
    before, after = registers(a.before, a.cuobjdump), registers(a.after, a.cuobjdump)
    tname = {2: None, 4: "float"}
    print("| case | threads | parts | registers | blocks an SM | KB in flight an SM |")
    print("|---|---|---|---|---|---|")
    for line in open(a.cases).read().splitlines()[1:]:
        case, eb, q, parts, part_runs, blocks, threads, head = line.split("\t")
        eb, parts, threads, head = int(eb), int(parts), int(threads), int(head)
        if parts > 1:  # part_head_packs: the part's packs, within the opt-in
            granted = (227 * 1024 - SCRATCH[1]) // 2 // 16
            head = min(int(part_runs) * int(q), granted)
        t = "float" if eb == 4 else ("__half" if "/fp16/" in case else "__nv_bfloat16")
        e = 16 // eb
        step = 0 if parts == 1 else 1
        name = f"void backward_batch_tile<{t}, {e}, 0, false, (SplitStep){step}>"
        rb = next(v for k, v in before.items() if k.startswith(name))
        ra = next(v for k, v in after.items() if k.startswith(name))
        smem = SCRATCH[step] + 32 * head
        bb, ba = blocks_per_sm(threads, rb, smem), blocks_per_sm(threads, ra, smem)
        fb, fa = bb * threads * 2 * 16 / 1000, ba * threads * 4 * 16 / 1000
        print(f"| `{case}` | {threads} | {parts} | {rb} -> {ra} | {bb} -> {ba} | "
              f"{fb:.1f} -> {fa:.1f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Resident threads per SM of the row-norm kernels at typical widths, from the static evidence of a
build: the tiling each width takes (a tiling dump, `width fwd PATH P=.. tpr=.. block=.. | bwd ...`
lines, bf16 and fp32 with 16-byte packs and the 99 KB staging limit) and each kernel's registers
and shared memory (cuobjdump -res-usage). sm_90 limits: 65536 registers (allocated per warp in
units of 256), 2048 threads, 32 blocks, 228 KB of shared memory per SM (227 KB a block) and 1 KB
reserved per block. No GPU: this is the occupancy the numbers imply, not a measurement.

    bench/row_occupancy.py TREE RES_USAGE

TREE is a source tree whose kernels/row_norm_tiling.cpp gives the tiling (bench/row_tiling_dump.cpp
is built against it with the host compiler), RES_USAGE the res_usage.txt that bench/sass_rows.sh
wrote for the same tree. Prints a markdown table: width, path, block threads, registers, blocks and
resident threads per SM (and their fraction of 2048) for the forward and the backward (unfused,
weights in the activation dtype).
"""
import argparse
import os
import re
import subprocess
import tempfile

SM_REGS, SM_THREADS, SM_BLOCKS, SM_SHARED, BLOCK_RESERVE = 65536, 2048, 32, 233472, 1024


def res_usage(path):
    """{demangled name: (registers, static shared bytes)}"""
    names, usage = [], []
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*Function (\S+):", line)
        if m and i + 1 < len(lines):
            r = re.search(r"REG:(\d+).*SHARED:(\d+)", lines[i + 1])
            names.append(m.group(1))
            usage.append((int(r.group(1)), int(r.group(2))))
    demangled = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                               text=True, check=True).stdout.splitlines()
    return dict(zip(demangled, usage))


def resident(regs, static_shared, dynamic_shared, block):
    warps = (block + 31) // 32
    per_warp = (regs * 32 + 255) // 256 * 256
    by_regs = SM_REGS // (per_warp * warps)
    by_shared = SM_SHARED // (static_shared + dynamic_shared + BLOCK_RESERVE)
    blocks = min(SM_BLOCKS, SM_THREADS // block, by_regs, by_shared)
    return blocks, blocks * block


def kernel_usage(usage, direction, dtype, path, p, tpr, block):
    """(registers, static shared) of the unfused kernel a tiling launches."""
    t = "__nv_bfloat16" if dtype == "bf16" else "float"
    e = 8 if dtype == "bf16" else 4
    if direction == "fwd":
        head = {"staged": f"forward_staged<{t}, {t}, {e}, false>",
                "generic": f"forward_generic<{t}, {t}, {e}, false>"}.get(
                    path, f"forward_in_registers<{t}, {t}, {e}, {p}, false")
    else:
        head = {"staged": f"backward_staged<{t}, {t}, {e},",
                "generic": f"backward_generic<{t}, {t}, {e}>"}.get(
                    path, f"backward_in_registers<{t}, {t}, {e}, {p}>")
    hits = [(n, u) for n, u in usage.items() if head in n]
    # Builds with staged backward blocks of 512 and 1024 threads name the block last.
    blocked = [(n, u) for n, u in hits if direction == "bwd" and path == "staged"
               and n.endswith(f", {block}>")]
    if blocked:
        hits = blocked
    # Builds that split lane-group and block rows name the row shape (RowThreads 0 or 1) last.
    shaped = [(n, u) for n, u in hits if "RowThreads" in n]
    if shaped:
        want = "RowThreads)1>" if tpr > 32 else "RowThreads)0>"
        hits = [(n, u) for n, u in shaped if want in n]
    return hits[0][1]


def run_dump(tree, dump, source):
    """Builds bench/DUMP against TREE's kernels/SOURCE with the host compiler; its output."""
    here = os.path.dirname(os.path.abspath(__file__))
    includes = []
    for folder in ("kernels", "src", "include"):
        includes += ["-I", os.path.join(tree, folder)]
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "dump")
        subprocess.run(["g++", "-std=c++17", "-O1", *includes, os.path.join(here, dump),
                        os.path.join(tree, "kernels", source), "-o", exe], check=True)
        return subprocess.run([exe], check=True, capture_output=True, text=True).stdout


def tiling_dump(tree):
    return run_dump(tree, "row_tiling_dump.cpp", "row_norm_tiling.cpp")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree")
    ap.add_argument("res_usage")
    args = ap.parse_args()
    usage = res_usage(args.res_usage)
    print("| dtype | D | direction | path | P | block | regs | blocks/SM | threads/SM |")
    print("|---|---|---|---|---|---|---|---|---|")
    for line in tiling_dump(args.tree).splitlines():
        m = re.match(r"(\w+) (\d+) fwd (\w+) P=(\d+) tpr=(\d+) block=(\d+) \| "
                     r"bwd (\w+) P=(\d+) tpr=(\d+) block=(\d+)", line)
        dtype, d = m.group(1), int(m.group(2))
        elem = 2 if dtype == "bf16" else 4
        for direction, base in (("fwd", 3), ("bwd", 7)):
            path, p, tpr, block = (m.group(base), int(m.group(base + 1)), int(m.group(base + 2)),
                                   int(m.group(base + 3)))
            regs, static_shared = kernel_usage(usage, direction, dtype, path, p, tpr, block)
            dynamic = 0
            if path == "staged":
                dynamic = 256 + d * elem * (1 if direction == "fwd" else 2)
            elif direction == "bwd" and path == "regs":
                # register_backward_shared_bytes: the scratch, each thread's dweight and dbias sums
                # (8 bytes an element, 512 threads at a time), the partial rows of several rows.
                acc_threads = (block + 511) // 512 * 512
                dynamic = 256 + acc_threads * p * (16 // elem) * 8
                if block // tpr > 1:
                    dynamic += (block // tpr) * d * 4
            blocks, threads = resident(regs, static_shared, dynamic, block)
            print(f"| {dtype} | {d} | {direction} | {path} | {p} | {block} | {regs} | {blocks} | "
                  f"{threads} ({threads / SM_THREADS:.0%}) |")


if __name__ == "__main__":
    main()

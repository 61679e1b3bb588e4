#!/usr/bin/env python3
"""Bytes in flight per SM of batch norm's statistics pass in NHWC at the bn_resnet50 shapes, from
the static evidence of a build: the split each shape takes (bench/channel_plan_dump.cpp built
against a tree's kernels/channel_norm_plan.cpp) and the registers and shared memory of the
partials kernel (cuobjdump -res-usage of kernels/channel_norm_forward.cu's object).

A block of partials_channels has 256 threads, each with 4 loads of 16 bytes in flight (its tile),
so 16 KiB. Resident blocks per SM: the occupancy its registers and shared memory allow (sm_90
limits, bench/row_occupancy.py), at most blocks / SMs on average. Little's law gives the bytes a
SM must keep in flight to move its share of the bandwidth: bandwidth / SMs * latency. The
fraction printed is min(1, in flight / needed): a ceiling from latency alone, not a measurement.
Defaults: 132 SMs and 4.8 TB/s (the H200's data sheet), 0.8 us of memory latency (an assumption
of this model, not a measured or published figure).

    bench/channel_blocks.py TREE RES_USAGE [--sms 132] [--bandwidth 4.8e12] [--latency 0.8e-6]
"""
import argparse
import os
import re
import subprocess
import tempfile

from row_occupancy import res_usage, resident

BLOCK, LOADS, PACK = 256, 4, 16


def plan_dump(tree):
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "dump")
        subprocess.run(["g++", "-std=c++17", "-O1", "-I", os.path.join(tree, "kernels"), "-I",
                        os.path.join(tree, "src"), "-I", os.path.join(tree, "include"),
                        os.path.join(here, "channel_plan_dump.cpp"),
                        os.path.join(tree, "kernels", "channel_norm_plan.cpp"), "-o", exe],
                       check=True)
        return subprocess.run([exe], check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree")
    ap.add_argument("res_usage")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--bandwidth", type=float, default=4.8e12)
    ap.add_argument("--latency", type=float, default=0.8e-6)
    args = ap.parse_args()
    usage = res_usage(args.res_usage)
    needed = args.bandwidth / args.sms * args.latency
    print(f"bytes needed in flight per SM: {needed / 1024:.1f} KiB "
          f"({args.bandwidth / 1e12:.1f} TB/s, {args.sms} SMs, {args.latency * 1e6:.2f} us)\n")
    print("| dtype | N | C | HW | lanes | tiles | chunks | blocks | partials | regs | "
          "occupancy | resident/SM | KiB in flight/SM | ceiling |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for line in plan_dump(args.tree).splitlines():
        f = dict(kv.split("=") for kv in line.split()[1:])
        dtype = line.split()[0]
        t, e = ("__nv_bfloat16", 8) if dtype == "bf16" else ("float", 4)
        key = (f"nk::cuda::partials_channels<nk::cuda::(anonymous namespace)::StatsOp<{t}>, {t}, "
               f"{e}, false>")
        hits = [u for name, u in usage.items() if name.startswith("void " + key)]
        regs, shared = hits[0]
        occupancy, _ = resident(regs, shared, 0, BLOCK)
        blocks = int(f["blocks"])
        per_sm = min(occupancy, blocks / args.sms)
        flight = per_sm * BLOCK * LOADS * PACK
        print(f"| {dtype} | {f['n']} | {f['c']} | {f['hw']} | {f['lanes']} | {f['tiles']} | "
              f"{f['chunks']} | {blocks} | {f['partials']} | {regs} | {occupancy} | "
              f"{per_sm:.2f} | {flight / 1024:.1f} | {min(1.0, flight / needed):.2f} |")


if __name__ == "__main__":
    main()

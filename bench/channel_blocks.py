#!/usr/bin/env python3
"""Bytes in flight per SM of the channel norms' partial reductions in NHWC at the shapes of the
benchmark sets bn_resnet50, instance_norm and group_norm: the forward's statistics or the
backward's gradient sums (unfused), from the static evidence of a build: the split each shape
takes (bench/channel_plan_dump.cpp built against a tree's kernels/channel_norm_plan.cpp) and the
registers and shared memory of the partials kernel (cuobjdump -res-usage of
kernels/channel_norm_forward.cu's or channel_norm_backward.cu's object).

A block of partials_channels has 256 threads; each that has a channel pack (the dump's `active`,
averaged over the tiles of packs: a narrower last tile leaves lanes idle) keeps 4 loads of 16
bytes in flight per tensor (its tile: x, and dy in the backward), so up to 16 or 32 KiB a block.
Resident blocks per SM: the occupancy its registers and shared memory allow (sm_90 limits,
bench/row_occupancy.py), at most blocks / SMs on average. Group norm shapes that the one-read
group tiles take (the dump's group_tiles_fwd or _bwd) do not run the walk: their row says so.
Little's law gives the bytes a SM must keep in flight to move its share of the bandwidth:
bandwidth / SMs * latency. The fraction printed is min(1, in flight / needed): a
ceiling from latency alone, not a measurement. A copy of a tensor smaller than all SMs' needed
bytes is bounded the same way (at most the whole tensor in flight): the last column divides the
ceiling by that of such a copy, min(1, tensor bytes / (SMs * needed)). Defaults: 132 SMs and
4.8 TB/s (the H200's data sheet), 0.8 us of memory latency (an assumption of this model, not a
measured or published figure).

    bench/channel_blocks.py TREE RES_USAGE [--pass forward|backward] [--sms 132]
                            [--bandwidth 4.8e12] [--latency 0.8e-6]
"""
import argparse

from row_occupancy import res_usage, resident, run_dump

BLOCK, LOADS, PACK = 256, 4, 16


def plan_dump(tree):
    return run_dump(tree, "channel_plan_dump.cpp", "channel_norm_plan.cpp")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree")
    ap.add_argument("res_usage")
    ap.add_argument("--pass", dest="direction", choices=("forward", "backward"),
                    default="forward")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--bandwidth", type=float, default=4.8e12)
    ap.add_argument("--latency", type=float, default=0.8e-6)
    args = ap.parse_args()
    usage = res_usage(args.res_usage)
    needed = args.bandwidth / args.sms * args.latency
    print(f"bytes needed in flight per SM: {needed / 1024:.1f} KiB "
          f"({args.bandwidth / 1e12:.1f} TB/s, {args.sms} SMs, {args.latency * 1e6:.2f} us)\n")
    print("| dtype | set | N | C | HW | lanes x rows | tiles | active | chunks | blocks | "
          "partials | regs | occupancy | resident/SM | KiB in flight/SM | ceiling | vs copy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for line in plan_dump(args.tree).splitlines():
        f = dict(kv.split("=") for kv in line.split()[1:])
        dtype = line.split()[0]
        head = (f"| {dtype} | {f['set']} | {f['n']} | {f['c']} | {f['hw']} | "
                f"{f['lanes']} x {f['rows']} | {f['tiles']} | {f['active']} | {f['chunks']} | ")
        if f["group_tiles_" + ("fwd" if args.direction == "forward" else "bwd")] == "1":
            print(head + "group tiles, no walk | | | | | | | |")
            continue
        t = "__nv_bfloat16" if dtype == "bf16" else "float"
        op = f"StatsOp<{t}>" if args.direction == "forward" else f"GradOp<{t}, 0, false>"
        key = (f"nk::cuda::partials_channels<nk::cuda::(anonymous namespace)::{op}, {t}, "
               f"{f['pack']}, (nk::cuda::ChannelWalk){f['walk']}>")
        hits = [u for name, u in usage.items() if name.startswith("void " + key)]
        regs, shared = hits[0]
        occupancy, _ = resident(regs, shared, 0, BLOCK)
        blocks = int(f["blocks"])
        per_sm = min(occupancy, blocks / args.sms)
        tensors = 1 if args.direction == "forward" else 2
        tensor = int(f["n"]) * int(f["c"]) * int(f["hw"]) ** 2 * (2 if dtype == "bf16" else 4)
        # Never more in flight than the SM's share of the data.
        flight = min(per_sm * float(f["active"]) * LOADS * PACK, tensor / args.sms) * tensors
        ceiling = min(1.0, flight / needed)
        copy = min(1.0, tensor * tensors / (args.sms * needed))
        print(head + f"{blocks} | {f['partials']} | {regs} | {occupancy} | {per_sm:.2f} | "
              f"{flight / 1024:.1f} | {ceiling:.2f} | {ceiling / copy:.2f} |")


if __name__ == "__main__":
    main()

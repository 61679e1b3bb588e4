#!/usr/bin/env python3
"""Per call of sim_instructions.cpp under the simulator (its filtered output,
sim-instructions-raw.txt): the simulated thread instructions of the resident-row kernels (the
simulator prints its running total after each kernel), per thread (rows x the plan's threads), and
8 * B / I, with B the bytes a thread moves (forward: x and y; backward: x, dy and dx).

    sim_instructions.py sim-instructions-raw.txt
"""
import re
import sys

DONE = re.compile(r"Done functional simulation \((\d+) instructions simulated\)")


def main():
    total, calls, call, phase = 0, [], None, None
    for line in open(sys.argv[1]).read().splitlines():
        if line.startswith("MARK forward"):
            words = line.split()
            call = dict(kv.split("=") for kv in words[3:])
            call.update(kind=words[2], fwd=[], bwd=[])
            calls.append(call)
            phase = "fwd"
        elif line.startswith("MARK backward"):
            phase = "bwd"
        elif line.startswith("MARK end"):
            phase = None
        elif DONE.search(line):
            n = int(DONE.search(line).group(1))
            if call is not None and phase and n != total:
                call[phase].append(n - total)
            total = n
    print("| norm | dtype | S | L | whole packs | threads a row | forward I/thread | forward 8B/I "
          "| backward I/thread | backward 8B/I | finalize (all threads) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in calls:
        eb, length, rows = int(c["eb"]), int(c["len"]), int(c["blocks"])
        elements = int(c["numel"])
        fwd_threads, bwd_threads = rows * int(c["threads"]), rows * int(c["backward_threads"])
        fwd, bwd = c["fwd"][0] / fwd_threads, c["bwd"][0] / bwd_threads
        fwd_ratio = 8 * elements * 2 * eb / fwd_threads / fwd
        bwd_ratio = 8 * elements * 3 * eb / bwd_threads / bwd
        finalize = c["bwd"][1] if len(c["bwd"]) > 1 else "-"
        dtype = "bf16" if eb == 2 else "fp32"
        whole = "yes" if length * eb % 16 == 0 else "no"
        print(f"| {c['kind']} | {dtype} | {c['s']} | {length} | {whole} | {c['threads']} | "
              f"{fwd:.0f} | {fwd_ratio:.2f} | {bwd:.0f} | {bwd_ratio:.2f} | {finalize} |")


if __name__ == "__main__":
    main()

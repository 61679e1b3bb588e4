#!/usr/bin/env python3
"""Simulated instructions per call from in_place_instructions' output under GPGPU-Sim.

    in_place_instructions.py OUTPUT > in_place_instructions.md

The simulator prints, after each kernel, the instructions simulated so far ("Done functional
simulation (N instructions simulated)"); a call's count is the difference across its "CALL" line.
"""
import re
import sys

CALL = re.compile(r"^CALL (\S+) S=(\d+) (\S+)")
DONE = re.compile(r"Done functional simulation \((\d+) instructions simulated\)")

calls, total, current = {}, 0, None
with open(sys.argv[1]) as f:
    for line in f:
        m = CALL.match(line)
        if m:
            current = (m.group(1), int(m.group(2)), m.group(3))
            continue
        m = DONE.search(line)
        if m and current:
            n = int(m.group(1))
            calls[current] = calls.get(current, 0) + n - total
            total = n
print("| op | S | out of place | in place | in place / out of place |")
print("|---|---|---|---|---|")
for op in ("forward", "backward"):
    for s in sorted({k[1] for k in calls}):
        a, b = calls[(op, s, "out-of-place")], calls[(op, s, "in-place")]
        print(f"| {op} | {s} | {a} | {b} | {b / a:.3f} |")

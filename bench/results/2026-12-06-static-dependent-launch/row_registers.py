"""Registers, stack, shared and local memory of every kernel of the row norms' objects, before and
after (cuobjdump -res-usage), matched by name with the anonymous namespace's hash removed.

    python3 row_registers.py CUOBJDUMP BEFORE_DIR AFTER_DIR row_norm_forward row_norm_backward ...
"""
import collections
import re
import subprocess
import sys

USAGE = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def usage(cuobjdump, obj):
    out = subprocess.run([cuobjdump, "-res-usage", obj], capture_output=True, text=True,
                         check=True).stdout
    return {re.sub(r"_GLOBAL__N__[0-9a-f]+_", "_GLOBAL__N__", m.group(1)):
            (tuple(int(x) for x in m.groups()[1:]), m.group(1)) for m in USAGE.finditer(out)}


def main():
    cuobjdump, before_dir, after_dir, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    deltas, changed = collections.Counter(), []
    print("| object | kernels | same registers, stack, shared and local |\n|---|---|---|")
    for name in names:
        before = usage(cuobjdump, f"{before_dir}/{name}.cu.o")
        after = usage(cuobjdump, f"{after_dir}/{name}.cu.o")
        assert set(before) == set(after), f"{name}: different kernels"
        same = sum(1 for k in after if after[k][0] == before[k][0])
        print(f"| `{name}.cu.o` | {len(after)} | {same} |")
        for k in after:
            deltas[after[k][0][0] - before[k][0][0]] += 1
            if after[k][0] != before[k][0]:
                changed.append((name, after[k][1], before[k][0], after[k][0]))
    print("\nRegisters after - before: " +
          ", ".join(f"{d:+d}: {n} kernels" for d, n in sorted(deltas.items())))
    for name, k, b, a in changed:
        pretty = subprocess.run(["c++filt", k], capture_output=True, text=True).stdout.strip()
        print(f"- `{pretty}`: (REG, STACK, SHARED, LOCAL) {b} -> {a}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Every loop of one kernel's SASS, for kernels whose cost is spread over several loops (a row
staged in shared memory, then passes over it), where bench/sass_table.py reports only the loop
with the most global-load bytes.

    bench/sass_loops.py LIBRARY REGEX [--cuobjdump PATH]

For each kernel whose demangled name matches REGEX, one markdown table: each loop (a backward
branch and its target, in address order; nested loops are listed apart), its instruction count
(one pass through the body as laid out, including branches not taken) and its memory accesses by
opcode. The numbers are static, not a profile.
"""
import argparse
import re
import subprocess
from collections import Counter

MEMORY = ("LDG", "STG", "LDS", "STS", "ATOM", "RED")


def functions(sass):
    """{mangled name: [(address, instruction)]}."""
    out, name = {}, None
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            name = m.group(1)
            out[name] = []
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m and name:
            out[name].append((int(m.group(1), 16), m.group(2)))
    return out


def opcode(instruction):
    parts = instruction.split()
    return parts[1] if parts[0].startswith("@") else parts[0]


def loops(code):
    index = {address: i for i, (address, _) in enumerate(code)}
    found = []
    for i, (address, text) in enumerate(code):
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= address and int(m.group(1), 16) in index:
            found.append((index[int(m.group(1), 16)], i))
    return sorted(found)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library")
    parser.add_argument("regex")
    parser.add_argument("--cuobjdump", default="cuobjdump")
    args = parser.parse_args()
    sass = subprocess.run([args.cuobjdump, "-sass", args.library], check=True,
                          capture_output=True, text=True).stdout
    code = functions(sass)
    names = sorted(code)
    demangled = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                               text=True, check=True).stdout.splitlines()
    for mangled, name in zip(names, demangled):
        if not re.search(args.regex, name):
            continue
        body = code[mangled]
        print(f"\n`{name}`: {len(body)} instructions\n")
        print("| loop | instructions | memory accesses |")
        print("|---|---|---|")
        for first, last in loops(body):
            ops = Counter(opcode(t) for _, t in body[first:last + 1])
            memory = ", ".join(f"{n}x {op}" for op, n in sorted(ops.items())
                               if op.startswith(MEMORY))
            print(f"| {body[first][0]:#06x}-{body[last][0]:#06x} | {last - first + 1} | "
                  f"{memory or '-'} |")


if __name__ == "__main__":
    main()

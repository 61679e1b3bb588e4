#!/usr/bin/env python3
"""Static evidence for programmatic dependent launch (kernels/common/dependent_launch.cuh).

For each kernel of the given objects' sm_90 SASS: whether it waits on the grids before it
(griddepcontrol.wait, SASS ACQBULK), whether it lets the next grid launch (launch_dependents,
PREEXIT), and whether any memory access, barrier or exit comes before the wait (constant loads of
the parameters may). Prints a markdown table per object and the kernels without the wait.

  python3 bench/sass_chain.py OBJECT... [--cuobjdump PATH]
"""
import argparse
import re
import subprocess
import sys

# Instructions that touch memory other than the constant bank, synchronize, or end the thread.
FORBIDDEN = re.compile(
    r"\b(LDG|STG|LD|ST|LDS|STS|LDSM|LDGSTS|ATOM|ATOMG|ATOMS|RED|REDG|CCTL|BAR|EXIT|RET)\b")
INSTRUCTION = re.compile(r"/\*[0-9a-f]{4}\*/\s+(.*?);")


def functions(sass):
    """(mangled name, [instruction text]) for each function of cuobjdump -sass output."""
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
        name, _, body = part.partition("\n")
        yield name.strip(), [m.group(1) for m in INSTRUCTION.finditer(body)]


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return out.stdout.split("\n")[: len(names)] if out.returncode == 0 else list(names)


def check(instructions):
    """(waits, releases, index of the wait, first forbidden instruction before the wait or None)."""
    wait = next((i for i, t in enumerate(instructions) if t.startswith("ACQBULK")), None)
    release = any(t.startswith("PREEXIT") for t in instructions)
    before = None
    if wait is not None:
        for t in instructions[:wait]:
            opcode = re.sub(r"^@!?U?P\w+\s+", "", t)  # drop a predicate guard
            if FORBIDDEN.match(opcode):
                before = t
                break
    return wait is not None, release, wait, before


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("objects", nargs="+")
    parser.add_argument("--cuobjdump", default="cuobjdump")
    args = parser.parse_args()
    failed = False
    print("| object | kernels | wait (ACQBULK) | release (PREEXIT) | wait is the first "
          "memory, barrier or exit instruction | largest index of the wait |")
    print("|---|---|---|---|---|---|")
    without = {}
    for obj in args.objects:
        sass = subprocess.run([args.cuobjdump, "-sass", "-arch", "sm_90", obj],
                              capture_output=True, text=True, check=True).stdout
        rows = [(name, check(ins)) for name, ins in functions(sass)]
        waits = sum(1 for _, r in rows if r[0])
        releases = sum(1 for _, r in rows if r[1])
        first = sum(1 for _, r in rows if r[0] and r[3] is None)
        latest = max((r[2] for _, r in rows if r[0]), default="-")
        print(f"| `{obj.split('/')[-1]}` | {len(rows)} | {waits} | {releases} | {first} | "
              f"{latest} |")
        bad = [(n, r[3]) for n, r in rows if r[0] and r[3] is not None]
        for n, t in bad:
            print(f"  {n}: {t} before the wait", file=sys.stderr)
            failed = True
        without[obj] = [n for n, r in rows if not r[0]]
    for obj, names in without.items():
        if not names:
            continue
        print(f"\nKernels of `{obj.split('/')[-1]}` without the wait (launched plainly):\n")
        for n in sorted(set(re.sub(r"<.*", "", d) for d in demangle(names))):
            print(f"- `{n}`")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

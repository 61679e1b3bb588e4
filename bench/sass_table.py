#!/usr/bin/env python3
"""Static evidence for kernel speed without a GPU: registers, spills and the hot loop of each
kernel, read from the SASS of a built library.

    bench/sass_table.py LIBRARY [LIBRARY...] [--filter REGEX] [--cuobjdump PATH] [--arch sm_90]

LIBRARY is anything cuobjdump reads (a library, an executable, an object file); several are read
into one table. For every kernel whose demangled name matches --filter it prints one markdown row:
  - registers, stack and local memory (cuobjdump -res-usage; spills show up as local memory or
    stack, and the build already fails on them);
  - the hot loop: among the loops (a backward branch and its target) that contain a global load,
    the innermost ones; the one with the most load bytes is reported. Its instruction count, its
    global loads and stores by width, shared-memory accesses, and
  - instructions per 16-byte pack: loop instructions divided by the activation bytes the loop
    loads per thread per iteration, over 16. Activation loads are the global loads whose width
    equals the kernel's pack (sizeof(T) * E, read from the template arguments of the demangled
    name: T is the first of float/__half/__nv_bfloat16 named, E the first integer argument after
    it - after the whole first argument when that is an op template with integers of its own -
    1 when there is none). A kernel whose parameter loads have the same width (fp32 with
    E == 1) is marked "~" because parameters then count as activation loads.

The numbers are static: the instructions of one pass through the loop body, not a profile.
"""
import argparse
import re
import subprocess
import sys
from collections import Counter

WIDTH_BYTES = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def demangle(names):
    if not names:
        return {}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return dict(zip(names, out))


def access_width(op):
    """Bytes of an LDG/STG/LDS/STS opcode such as LDG.E.128.CONSTANT or STG.E.U16."""
    for part in op.split(".")[1:]:
        if part in WIDTH_BYTES:
            return WIDTH_BYTES[part]
    return 4


def parse_sass(text):
    """{mangled name: [(address, opcode, full text)]} for every function of one architecture."""
    funcs, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
            funcs[current] = []
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m and current is not None:
            body = m.group(2).strip()
            op_text = re.sub(r"^@!?U?P\w+\s+", "", body)
            opcode = op_text.split()[0] if op_text else ""
            funcs[current].append((int(m.group(1), 16), opcode, body))
    return funcs


def loops(instrs):
    """(start index, end index) of each loop: a branch back to an earlier address."""
    index = {addr: i for i, (addr, _, _) in enumerate(instrs)}
    out = []
    for i, (addr, op, text) in enumerate(instrs):
        if not op.startswith("BRA"):
            continue
        m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
        if not m:
            continue
        target = int(m.group(1), 16)
        if target <= addr and target in index:
            out.append((index[target], i))
    return out


def pack_bytes(demangled):
    m = re.search(r"<(.*)>", demangled)
    args = m.group(1) if m else ""
    t = re.search(r"\b(float|__half|__nv_bfloat16)\b", args)
    if not t:
        return None
    size = 4 if t.group(1) == "float" else 2
    rest = args[t.end():]
    # An op template as the first argument (apply_rows<ForwardApply<T, ...>, E>) carries its own
    # integers: E is then the first integer after that argument.
    depth = 0
    for i, ch in enumerate(args):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            if "<" in args[:i]:
                rest = args[i + 1:]
            break
    e = re.search(r"(?<![\w.])(\d+)(?![\w.])", rest)
    return size * (int(e.group(1)) if e else 1), size


def hot_loop(instrs, pack):
    candidates = []
    for start, end in loops(instrs):
        body = instrs[start:end + 1]
        loads = [op for _, op, _ in body if op.startswith("LDG")]
        if loads:
            candidates.append((start, end, body))
    if not candidates:
        return None
    inner = [c for c in candidates
             if not any(o is not c and c[0] <= o[0] and o[1] <= c[1] and
                        (o[0], o[1]) != (c[0], c[1]) for o in candidates)]

    def load_bytes(c):
        return sum(access_width(op) for _, op, _ in c[2] if op.startswith("LDG"))

    return max(inner, key=lambda c: (load_bytes(c), -(c[1] - c[0])))


def strip_arguments(name):
    """The name without its trailing (parameter list), parentheses inside it balanced."""
    if not name.endswith(")"):
        return name
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            return name[:i]
    return name


def short_name(name):
    """A demangled kernel name as the tables and the lanes' kernels.md write it: no parameter
    list, no namespaces, no return type."""
    short = strip_arguments(name).replace("(anonymous namespace)::", "")
    return re.sub(r"^void ", "", short.replace("nk::cuda::", "").replace("nk::dev::", ""))


def describe(counter):
    return ", ".join(f"{n}x{w}B" for w, n in sorted(counter.items(), reverse=True)) or "-"


def add_object_arguments(ap):
    """The arguments of the one-object SASS tools (sass_loops, sass_path, sass_steady,
    sass_turn)."""
    ap.add_argument("object")
    ap.add_argument("pattern")
    ap.add_argument("--cuobjdump", default="/opt/cuda-tools/nvidia/cu13/bin/cuobjdump")
    ap.add_argument("--arch", default="sm_90")


def read_object(args):
    """(SASS per mangled kernel, demangled name per mangled kernel) of args.object."""
    funcs = parse_sass(run([args.cuobjdump, "-sass", "-arch", args.arch, args.object]))
    return funcs, demangle(sorted(funcs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("library", nargs="+")
    ap.add_argument("--filter", default=r"partials_|finalize_|apply_|channel_|dx_|stats_")
    ap.add_argument("--cuobjdump", default="/opt/cuda-tools/nvidia/cu13/bin/cuobjdump")
    ap.add_argument("--arch", default="sm_90")
    args = ap.parse_args()

    res = "".join(run([args.cuobjdump, "-res-usage", "-arch", args.arch, lib])
                  for lib in args.library)
    usage = {}
    for m in re.finditer(r"Function (\S+):\s*\n?\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)",
                         res):
        usage[m.group(1)] = tuple(int(m.group(i)) for i in range(2, 6))
    funcs = {}
    for lib in args.library:
        funcs.update(parse_sass(run([args.cuobjdump, "-sass", "-arch", args.arch, lib])))
    names = demangle(sorted(funcs))
    pattern = re.compile(args.filter)

    print("| kernel | regs | stack/local | hot loop instr | global loads | global stores | shared |"
          " instr per 16-B pack |")
    print("|---|---|---|---|---|---|---|---|")
    for mangled in sorted(funcs, key=lambda n: names.get(n, n)):
        name = names.get(mangled, mangled)
        if not pattern.search(name):
            continue
        short = short_name(name)
        reg, stack, _, local = usage.get(mangled, (0, 0, 0, 0))
        pb = pack_bytes(short)
        loop = hot_loop(funcs[mangled], pb[0] if pb else None)
        if loop is None:
            print(f"| `{short}` | {reg} | {stack}/{local} | no loop with global loads | | | | |")
            continue
        body = loop[2]
        ldg = Counter(access_width(op) for _, op, _ in body if op.startswith("LDG"))
        stg = Counter(access_width(op) for _, op, _ in body if op.startswith("STG"))
        shared = sum(1 for _, op, _ in body if op.startswith(("LDS", "STS")))
        count = len(body)
        per_pack = "?"
        if pb:
            act = ldg.get(pb[0], 0) * pb[0]
            ambiguous = pb[0] == 4 and pb[1] == 4
            if act:
                per_pack = f"{'~' if ambiguous else ''}{count * 16 / act:.0f}"
        print(f"| `{short}` | {reg} | {stack}/{local} | {count} | {describe(ldg)} |"
              f" {describe(stg)} | {shared} | {per_pack} |")


if __name__ == "__main__":
    sys.exit(main())

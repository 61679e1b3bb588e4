#!/usr/bin/env python3
"""forward_row_groups' SASS before and after its warp barrier, and whether any other kernel of the
same object changed. Usage: sass_row_groups.py BEFORE.cubin AFTER.cubin [--cuobjdump PATH]
(cubins from `cuobjdump -xelf all libnormkit.so`, the image that holds forward_row_groups)."""
import argparse
import re
import subprocess

ap = argparse.ArgumentParser()
ap.add_argument("before")
ap.add_argument("after")
ap.add_argument("--cuobjdump", default="cuobjdump")
a = ap.parse_args()


def sass(cubin):
    out = subprocess.run([a.cuobjdump, "-sass", cubin], capture_output=True, text=True).stdout
    funcs, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"\s+Function : (\S+)", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if m and cur is not None:
            cur.append(m.group(1))
    return funcs


def usage(cubin):
    out = subprocess.run([a.cuobjdump, "-res-usage", cubin], capture_output=True, text=True).stdout
    regs, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"REG:(\d+) STACK:(\d+)", line)
        if m and cur:
            regs[cur] = (int(m.group(1)), int(m.group(2)))
    return regs


fb, fa = sass(a.before), sass(a.after)
rb, ra = usage(a.before), usage(a.after)
not_nop = lambda body: sum(1 for x in body if not x.strip().startswith("NOP"))
count = lambda body, pat: sum(1 for x in body if re.search(pat, x))
plain = lambda body: [re.sub(r"0x[0-9a-f]+", "", x) for x in body]
BAR = r"\bBAR\b"
print("| instance | registers before -> after | stack after | instructions (not NOP) before -> after"
      " | WARPSYNC before -> after | BAR before -> after |")
print("|---|---|---|---|---|---|")
for n in sorted(x for x in fa if "forward_row_groups" in x):
    b, f = fb[n], fa[n]
    name = subprocess.run(["c++filt", n], capture_output=True, text=True).stdout.strip()
    name = re.sub(r"nk::cuda::|\(nk::cuda::RowGroupsParams\)|void ", "", name)
    print(f"| `{name}` | {rb[n][0]} -> {ra[n][0]} | {ra[n][1]} | {not_nop(b)} -> {not_nop(f)} | "
          f"{count(b, 'WARPSYNC')} -> {count(f, 'WARPSYNC')} | "
          f"{count(b, BAR)} -> {count(f, BAR)} |")
other = [n for n in fa if n in fb and "forward_row_groups" not in n]
changed = [n for n in other if plain(fb[n]) != plain(fa[n])]
print(f"\nThe other {len(other)} kernels of this object: SASS changed in {len(changed)}.")

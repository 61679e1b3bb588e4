"""What widening bf16 packs from their 32-bit words did to the channel norms' sm_90 kernels, from
two sass_table.py tables of channel_norm_forward.cu.o, channel_norm_backward.cu.o and
statistics.cu.o (before: c618c19, after: ed29c25).

1. Per kernel template: instances whose registers went down, stayed, went up, and whose
   instructions per 16-byte pack of the hot loop (a static count of one pass through the loop,
   both sides of every branch) went down, stayed, went up.
2. The elementwise walks (apply_channels, apply_rows inside rows): registers -> resident blocks
   of 256 threads an SM -> KiB of loads in flight an SM, with the same packs a turn before and
   after (kApplyPacks: 8 / inputs for one or two inputs, 4 / inputs for three), grouped as
   ../2026-12-05-static-apply-packs/inflight.py groups them (its table, inputs and occupancy
   arithmetic are reused).
3. The statistics and gradient-sum passes whose registers changed: resident blocks of 256
   threads before and after, with each kernel's static shared memory from
   res_usage_partials_after.txt (`cuobjdump -res-usage -arch sm_90` of the after objects, the
   partials' entries; their SHARED values equal the before objects').

  python3 widening.py sass_table_before.md sass_table_after.md res_usage_partials_after.txt"""
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                '2026-12-05-static-apply-packs'))
from inflight import blocks, inputs, kind, packs, table  # noqa: E402
from row_occupancy import resident  # noqa: E402  (inflight.py put bench/ on the path)
from sass_table import pack_bytes  # noqa: E402


def rows(path):
    """{kernel: (registers, local bytes, instructions per pack or None)}"""
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.split('|')]
        if len(cells) < 9 or not cells[1].startswith('`'):
            continue
        per_pack = float(cells[8]) if re.fullmatch(r'[\d.]+', cells[8]) else None
        local = sum(int(x) for x in cells[3].split('/'))
        out[cells[1].strip('`')] = (int(cells[2]), local, per_pack)
    return out


def sign(a, b):
    return 0 if b < a else 1 if b == a else 2


def families(before, after):
    print('| kernel | instances | registers fewer / same / more | instructions a pack fewer / '
          'same / more | local memory after |')
    print('|---|---|---|---|---|')
    fam = defaultdict(lambda: [0, [0, 0, 0], [0, 0, 0], 0])
    for name, b in before.items():
        a = after[name]
        f = fam[name.split('<')[0]]
        f[0] += 1
        f[1][sign(b[0], a[0])] += 1
        if b[2] is not None and a[2] is not None:
            f[2][sign(b[2], a[2])] += 1
        f[3] += a[1]
    for name, (n, r, p, local) in sorted(fam.items()):
        if r[0] + r[2] + p[0] + p[2] == 0:
            continue
        print(f'| {name} | {n} | {r[0]} / {r[1]} / {r[2]} | {p[0]} / {p[1]} / {p[2]} | '
              f'{local} |')


def walks(before_path, after_path):
    before, after = table(before_path), table(after_path)
    groups = defaultdict(list)
    for name in sorted(before):
        if not (name.startswith('apply_channels') or 'RowPacks)0' in name):
            continue
        n_in = inputs(name)
        kib = 256 * packs(name, n_in, True) * n_in * pack_bytes(name)[0] / 1024
        rb, ra = before[name][0], after[name][0]
        groups[kind(name) + (n_in,)].append((rb, ra, blocks(rb), blocks(ra), blocks(rb) * kib,
                                             blocks(ra) * kib))
    print('| walk | op | coefficients | dtype | inputs | instances | registers, median (range) | '
          'blocks an SM, median | KiB in flight an SM, median (range) | more / same / less |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for key in sorted(groups):
        g = groups[key]
        if all(x[0] == x[1] for x in g):
            continue

        def med(i):
            return statistics.median(x[i] for x in g)

        def rng(i):
            return f'{min(x[i] for x in g):.0f}-{max(x[i] for x in g):.0f}'

        more = sum(x[5] > x[4] for x in g)
        same = sum(x[5] == x[4] for x in g)
        less = sum(x[5] < x[4] for x in g)
        print(f'| {" | ".join(str(k) for k in key)} | {len(g)} | '
              f'{med(0):.0f} ({rng(0)}) -> {med(1):.0f} ({rng(1)}) | {med(2):.0f} -> {med(3):.0f} | '
              f'{med(4):.0f} ({rng(4)}) -> {med(5):.0f} ({rng(5)}) | {more} / {same} / {less} |')


def shared_bytes(path):
    """{short kernel name as sass_table.py prints it: static shared bytes}"""
    text = open(path).read()
    found = re.findall(r'Function (\S+):\s*\n\s*REG:\d+ STACK:\d+ SHARED:(\d+)', text)
    names = subprocess.run(['c++filt'], input='\n'.join(m for m, _ in found), text=True,
                           capture_output=True, check=True).stdout.splitlines()
    out = {}
    for name, (_, shared) in zip(names, found):
        short = re.sub(r'^void ', '', name.replace('nk::cuda::', '')
                       .replace('(anonymous namespace)::', ''))
        out[short.split('>(')[0] + '>'] = int(shared)
    return out


def passes(before, after, shared):
    print('| kernel | registers | blocks of 256 an SM | instructions a pack |')
    print('|---|---|---|---|')
    for name, b in sorted(before.items()):
        a = after[name]
        if not name.startswith('partials_') or a[0] == b[0]:
            continue
        nb = resident(b[0], shared[name], 0, 256)[0]
        na = resident(a[0], shared[name], 0, 256)[0]
        print(f'| `{name}` | {b[0]} -> {a[0]} | {nb} -> {na} | {b[2]} -> {a[2]} |')


def main():
    before, after = rows(sys.argv[1]), rows(sys.argv[2])
    print('## Kernels whose registers or instructions a pack changed\n')
    families(before, after)
    print('\n## Elementwise walks: loads in flight an SM (groups with a register change)\n')
    walks(sys.argv[1], sys.argv[2])
    print('\n## Statistics and gradient-sum passes whose registers changed\n')
    passes(before, after, shared_bytes(sys.argv[3]))


if __name__ == '__main__':
    main()

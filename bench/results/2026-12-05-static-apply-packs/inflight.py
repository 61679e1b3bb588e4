"""Loads in flight per SM of the elementwise walks, before and after, from two sass_table.py
tables (sm_90): registers -> resident blocks of 256 threads an SM (bench/row_occupancy.py's
arithmetic) -> 16-byte loads each thread issues before its
first use (packs a turn times the op's input tensors; a pack is E elements, 16 bytes or fewer)
-> KiB in flight an SM.

  python3 inflight.py sass_table_before.md sass_table_after.md [--all]

Packs a turn, as kernels/channel_norm_apply.cuh's kApplyPacks: 4 / inputs before; after, 8 /
inputs in apply_channels and apply_rows inside rows with one or two inputs, 4 / inputs otherwise.
Inputs per op: ForwardApply<T, fold, act, residual>: 1, or 2 with the residual; DxApply<T,
training, source, residual>: dy, plus x (training, or SiLU: source 3), plus y (source 2) or z
(SiLU with the residual)."""
import os
import re
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
from row_occupancy import resident  # noqa: E402  (bench/: sm_90's occupancy arithmetic)
from sass_table import pack_bytes  # noqa: E402  (bench/: a kernel's pack from its name)


def table(path):
    rows = {}
    for line in open(path):
        m = re.match(r'\| `([^`]+)` \| (\d+) \| (\d+)/(\d+) \|', line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), int(m.group(3)) + int(m.group(4)))
    return rows


def inputs(name):
    m = re.search(r'ForwardApply<[^,]+, (\w+), (\d+), (\w+)>', name)
    if m:
        return 2 if m.group(3) == 'true' else 1
    m = re.search(r'DxApply<[^,]+, (\w+), (\d+), (\w+)>', name)
    training, source, residual = m.group(1) == 'true', int(m.group(2)), m.group(3) == 'true'
    return 1 + (training or source == 3) + (source == 2 or (source == 3 and residual))


def packs(name, n_in, after):
    simple = name.startswith('apply_channels') or 'RowPacks)0' in name
    return (8 if after and simple and n_in < 3 else 4) // n_in


def blocks(regs):
    return resident(regs, 0, 0, 256)[0]  # the walks use no shared memory


def kind(name):
    op = 'ForwardApply' if 'ForwardApply' in name else 'DxApply'
    dtype = re.search(r'Apply<(\w+)', name).group(1).replace('__nv_', '').replace('__', '')
    walk = 'apply_rows, inside rows' if name.startswith('apply_rows') else 'apply_channels'
    m = re.search(r'>, (\d+), (\w+), (\w+)>$', name)
    if name.startswith('apply_channels'):
        per = 'per sample' if m.group(2) == 'true' else 'per channel'
        if m.group(1) == '1':
            walk += ', single elements'
    else:
        per = 'per channel or sample'
        e = re.search(r'>, (\d+), \(RowPacks\)0>$', name).group(1)
        if e != ('4' if dtype == 'float' else '8'):
            walk += ', narrow packs'
    return walk, op, per, dtype


def main():
    before, after = table(sys.argv[1]), table(sys.argv[2])
    groups = defaultdict(list)
    lines = []
    for name in sorted(before):
        if not (name.startswith('apply_channels') or 'RowPacks)0' in name):
            continue
        n_in = inputs(name)
        (rb, lb), (ra, la) = before[name], after[name]
        kb = blocks(rb) * 256 * packs(name, n_in, False) * n_in * pack_bytes(name)[0] / 1024
        ka = blocks(ra) * 256 * packs(name, n_in, True) * n_in * pack_bytes(name)[0] / 1024
        groups[kind(name) + (n_in,)].append((rb, ra, blocks(rb), blocks(ra), kb, ka, la))
        lines.append(f'| `{name}` | {n_in} | {rb} -> {ra} | {blocks(rb)} -> {blocks(ra)} | '
                     f'{kb:.0f} -> {ka:.0f} | {ka / kb:.2f} |')
    print('| walk | op | coefficients | dtype | inputs | instances | registers, median '
          '(range) | blocks an SM, median | KiB in flight an SM, median (range) | '
          'more / same / less |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for key in sorted(groups):
        g = groups[key]
        med = lambda i: statistics.median(x[i] for x in g)
        rng = lambda i: f'{min(x[i] for x in g):.0f}-{max(x[i] for x in g):.0f}'
        more = sum(x[5] > x[4] for x in g)
        same = sum(x[5] == x[4] for x in g)
        less = sum(x[5] < x[4] for x in g)
        print(f'| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {len(g)} | '
              f'{med(0):.0f} ({rng(0)}) -> {med(1):.0f} ({rng(1)}) | '
              f'{med(2):.0f} -> {med(3):.0f} | '
              f'{med(4):.0f} ({rng(4)}) -> {med(5):.0f} ({rng(5)}) | {more} / {same} / {less} |')
    print(f'\nInstances with local memory or stack after: '
          f'{sum(1 for g in groups.values() for x in g if x[6])}')
    if '--all' in sys.argv:
        print('\n| kernel | inputs | registers | blocks an SM | KiB in flight an SM | ratio |')
        print('|---|---|---|---|---|---|')
        print('\n'.join(lines))


if __name__ == '__main__':
    main()

"""The kernel instances of a build that no committed lane has launched.

  python3 never_launched.py OBJECT... --cuobjdump PATH > never_launched.md

Reads the sm_90 kernels of the objects (names as bench/sass_table.py writes them) and every
`kernels*.md` under bench/results/ (the instances a simulated-GPU lane launched, which the lane
writes since 2026-12-03; lanes before that kept no such list, so an instance listed here may
still have run in one of them). Prints, per kernel template, the compiled instances and those no
list names, then the latter."""
import argparse
import glob
import os
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
import sass_table  # noqa: E402
from coverage import ran  # noqa: E402  (this folder's: the instances a kernels.md lists)


def launched():
    names = set()
    for path in glob.glob(os.path.join(HERE, '..', '*', 'kernels*.md')):
        names |= ran(path)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('objects', nargs='+')
    ap.add_argument('--cuobjdump', required=True)
    ap.add_argument('--arch', default='sm_90')
    args = ap.parse_args()
    compiled = set()
    for obj in args.objects:
        funcs = sass_table.parse_sass(
            sass_table.run([args.cuobjdump, '-sass', '-arch', args.arch, obj]))
        compiled |= {sass_table.short_name(n) for n in sass_table.demangle(sorted(funcs)).values()}
    seen = launched()
    per = defaultdict(lambda: [0, 0])
    missing = sorted(n for n in compiled if n not in seen)
    for name in compiled:
        per[name.split('<')[0]][0] += 1
    for name in missing:
        per[name.split('<')[0]][1] += 1
    print('| kernel | compiled instances | launched by no committed lane |')
    print('|---|---|---|')
    for template, (n, miss) in sorted(per.items()):
        if miss:
            print(f'| `{template}` | {n} | {miss} |')
    print(f'| all | {len(compiled)} | {len(missing)} |')
    print('\nLaunched by no committed lane:\n')
    for name in missing:
        print(f'- `{name}`')


if __name__ == '__main__':
    main()

"""Which of the kernels that the bf16 widening changed have now run in the simulated-GPU lane.

  python3 coverage.py

../2026-12-06-static-pack-widening/changed_kernels.txt lists the 368 sm_90 kernels whose SASS
differs between c618c19 and 14b9f5d. ../2026-12-06-sim-pack-widening/ holds that change's two
lanes (kernels.md at ed29c25, where partials_unaligned_rows was not yet final; kernels_2.md at
14b9f5d). This folder's lanes ran at 3503d51 (kernels.md) and 623c5ed (kernels_2.md), whose
device code is 14b9f5d's: every instance they ran counts. Prints, per kernel template, the
changed instances, how many the earlier lanes ran, how many these ran, and how many any ran, then
the instances no lane ran."""
import importlib.util
import os
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.dirname(HERE)


def _load_earlier():
    """../2026-12-06-sim-pack-widening/coverage.py, whose ran() reads a lane's kernels.md."""
    path = os.path.join(RESULTS, '2026-12-06-sim-pack-widening', 'coverage.py')
    spec = importlib.util.spec_from_file_location('pack_widening_coverage', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The kernel instances that the kernels.md at an absolute path lists.
ran = _load_earlier().ran


def main():
    changed = [line.split(': ', 1)[1].strip() for line in
               open(os.path.join(RESULTS, '2026-12-06-static-pack-widening', 'changed_kernels.txt'))
               if not line.startswith('#')]
    earlier = os.path.join(RESULTS, '2026-12-06-sim-pack-widening')
    at_ed29c25, at_14b9f5d = ran(os.path.join(earlier, 'kernels.md')), ran(
        os.path.join(earlier, 'kernels_2.md'))
    here = ran(os.path.join(HERE, 'kernels.md')) | ran(os.path.join(HERE, 'kernels_2.md'))
    per = defaultdict(lambda: [0, 0, 0, 0])
    missing = []
    for name in changed:
        template = name.split('<')[0]
        before = name in at_14b9f5d or (template != 'partials_unaligned_rows' and name in at_ed29c25)
        now = name in here
        row = per[template]
        row[0] += 1
        row[1] += before
        row[2] += now
        row[3] += before or now
        if not (before or now):
            missing.append(name)
    print('| kernel | changed instances | run by the earlier lanes | run by these lanes | run by any |')
    print('|---|---|---|---|---|')
    for template, row in sorted(per.items()):
        print(f'| {template} | ' + ' | '.join(str(v) for v in row) + ' |')
    totals = [sum(row[i] for row in per.values()) for i in range(4)]
    print('| all | ' + ' | '.join(str(v) for v in totals) + ' |')
    print('\nRun by no lane:\n')
    for name in missing:
        print(f'- `{name}`')
    if not missing:
        print('(none)')


if __name__ == '__main__':
    main()

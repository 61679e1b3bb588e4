"""Which of the kernels this change touched the two lanes ran.

  python3 coverage.py

../2026-12-06-static-pack-widening/changed_kernels.txt lists the sm_90 kernels whose SASS differs
between c618c19 and 14b9f5d, all of them bf16 instances. kernels.md (lane 1, tree ed29c25) and
kernels_2.md (lane 2, tree 14b9f5d) list the kernels each lane's tests ran. Between ed29c25 and
14b9f5d only partials_unaligned_rows changed, so its instances count as run only where lane 2 ran
them. Prints, per kernel template, the changed instances and how many ran, then the ones that
did not."""
import os
import re
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))


def ran(path):
    names = set()
    for line in open(os.path.join(HERE, path)):
        m = re.match(r'\| `(.+?)` \|', line)
        if m:
            names.add(m.group(1))
    return names


def main():
    changed = [line.split(': ', 1)[1].strip() for line in
               open(os.path.join(HERE, '..', '2026-12-06-static-pack-widening',
                                 'changed_kernels.txt'))
               if not line.startswith('#')]
    lane1, lane2 = ran('kernels.md'), ran('kernels_2.md')
    per = defaultdict(lambda: [0, 0])
    missing = []
    for name in changed:
        template = name.split('<')[0]
        hit = name in lane2 or (template != 'partials_unaligned_rows' and name in lane1)
        per[template][0] += 1
        per[template][1] += hit
        if not hit:
            missing.append(name)
    print('| kernel | changed instances | run by a lane |')
    print('|---|---|---|')
    for template, (n, hit) in sorted(per.items()):
        print(f'| {template} | {n} | {hit} |')
    total = sum(n for n, _ in per.values())
    print(f'| all | {total} | {total - len(missing)} |')
    print('\nNot run by either lane:\n')
    for name in missing:
        print(f'- `{name}`')


if __name__ == '__main__':
    main()

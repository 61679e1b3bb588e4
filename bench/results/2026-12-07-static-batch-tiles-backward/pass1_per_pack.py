#!/usr/bin/env python3
"""Pass 1 of backward_batch_tile a pack of x and of dy, from compare_loops.py's table
(sass_backward.md): the first load loop's whole-pack path, before (a pack of each a turn) and
after (two of each a turn, halved), by dtype and access; the kApply steps (no pass 1) left out.

    pass1_per_pack.py sass_backward.md
"""
import re,collections,sys
rows=[l for l in open(sys.argv[1]) if l.startswith('| backward_batch_tile<')]
agg=collections.defaultdict(list)
for l in rows:
    cells=[c.strip() for c in l.strip().strip('|').split('|')]
    name,regs,before,after=cells
    if '(SplitStep)3' in name: continue
    m=re.match(r'backward_batch_tile<(\S+), (\d+), (\d), (\w+), \(SplitStep\)(\d)>',name)
    T,acc,src,z,step=m.groups()
    fb=before.split()[0]; fa=after.split()[0]
    pb=int(fb.split('->')[1].split(':')[0]); pa=int(fa.split('->')[1].split(':')[0])
    rb,ra=[int(x) for x in regs.split('->')]
    key=({'__half':'fp16','__nv_bfloat16':'bf16','float':'fp32'}[T], '16-byte' if acc!='1' else 'single elements')
    agg[key].append((pb, pa/2, rb, ra))
print('| dtype | access | instances | pass 1 path a pack of x and of dy: before (min-max, mean) | after | registers before | after |')
print('|---|---|---|---|---|---|---|')
for k,v in sorted(agg.items()):
    n=len(v); f=lambda i: '%g to %g, mean %.1f'%(min(x[i] for x in v),max(x[i] for x in v),sum(x[i] for x in v)/n)
    print(f'| {k[0]} | {k[1]} | {n} | {f(0)} | {f(1)} | {min(x[2] for x in v)} to {max(x[2] for x in v)} | {min(x[3] for x in v)} to {max(x[3] for x in v)} |')

#!/usr/bin/env python3
"""The unsplit group tiles (forward_group_tile with SplitStep::kWhole) against the same kernels
before the split was added: per instance, the SASS instruction count (sass_table.py's rows of
the same instances compare registers and hot loops).

    cuobjdump -sass OLD.o > old.sass; cuobjdump -sass NEW.o > new.sass
    python3 whole_tiles_unchanged.py old.sass new.sass > whole_tiles_unchanged.md

OLD.o: kernels/channel_norm_forward.cu of the commit before, compiled with the build's flags for
sm_90; NEW.o: build/CMakeFiles/normkit.dir/kernels/channel_norm_forward.cu.o of this commit.
"""
import re
import subprocess
import sys


def functions(path):
    out, cur = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.search(r"Function : (\S+)", line)
            if m:
                cur = m.group(1)
                out[cur] = []
                continue
            m = re.match(r"\s+/\*[0-9a-f]{4}\*/\s+(.*?)\s*;", line)
            if cur and m:
                out[cur].append(m.group(1))
    return out


def main():
    old, new = functions(sys.argv[1]), functions(sys.argv[2])
    names = [n for n in old if "forward_group_tile" in n]
    shown = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                           text=True).stdout.splitlines()
    print("| kernel | instructions before | after (kWhole) |")
    print("|---|---|---|")
    for name, pretty in zip(names, shown):
        after = new[name.replace("EEEvNS0_15GroupTileParamsE",
                                 "ELNS0_9SplitStepE0EEEvNS0_15GroupTileParamsE")]
        pretty = pretty.replace("void nk::cuda::", "").split("(nk::cuda::")[0]
        print(f"| `{pretty}` | {len(old[name])} | {len(after)} |")


if __name__ == "__main__":
    main()

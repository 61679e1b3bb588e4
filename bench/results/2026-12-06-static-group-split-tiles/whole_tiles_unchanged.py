#!/usr/bin/env python3
"""The unsplit group tiles (forward_group_tile with SplitStep::kWhole) against the same kernels
before the split was added: per instance, the SASS instruction count (sass_table.py's rows of
the same instances compare registers and hot loops).

    cuobjdump -sass OLD.o > old.sass; cuobjdump -sass NEW.o > new.sass
    python3 whole_tiles_unchanged.py old.sass new.sass > whole_tiles_unchanged.md

OLD.o: kernels/channel_norm_forward.cu of the commit before, compiled with the build's flags for
sm_90; NEW.o: build/CMakeFiles/normkit.dir/kernels/channel_norm_forward.cu.o of this commit.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sass_table import parse_sass  # noqa: E402  bench/sass_table.py's reader of cuobjdump -sass


def functions(path):
    with open(path, encoding="utf-8") as f:
        return parse_sass(f.read())


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

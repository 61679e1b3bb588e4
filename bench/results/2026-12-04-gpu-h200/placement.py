"""Where call 3's memcheck errors began: replays the sanitizer filter's tests in shard order and
counts the tests that would pass if each shard's first error were at the first test matching a
hypothesis (every later test of that shard failing or ending early: memcheck's default
--destroy-on-device-error context). Call 3 counted 360 passed.

    python3 bench/results/2026-12-04-gpu-h200/placement.py

sanitizer_tests.txt: `normkit_tests --gtest_list_tests --gtest_filter='*Gpu*:*CudaBackend*:-*Nccl*'`
with NORMKIT_GPU_TESTS=reduced (the bundle's binary at 2b485c7), one test a line; GoogleTest puts
test i (from 0) of that list in shard i mod 6. Whether a test runs in the reduced set: call 1's
memcheck log where its shards reached, else it skips if call 2 (the full set) skipped it or it is
one of the structural channel-norm tests without weight and bias (skip_in_reduced_set).
"""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
SHARDS = 6
REDUCED_AFFINE_ONLY = {"MisalignedPointersTakeTheScalarPath", "RepeatedCallsAreBitwiseIdentical",
                       "SameBitsOnAnyGrid", "InPlaceMatchesOutOfPlace",
                       "EachGradientOutputIsOptional", "ResidentLongRowsMatchCpu"}


def statuses():
    seen, full_skips = {}, set()
    memcheck = False
    with open(os.path.join(HERE, "call1", "sanitizers.log"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("==== "):
                memcheck = "--tool memcheck" in line
            m = re.match(r"^\[\s+(OK|SKIPPED)\s+\] (\S+)", line)
            if memcheck and m:
                seen[m.group(2)] = m.group(1) == "OK"
    with open(os.path.join(HERE, "call2", "tests.log"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^\[  SKIPPED \] (\S+) \(", line)
            if m:
                full_skips.add(m.group(1))
    return seen, full_skips


def main():
    with open(os.path.join(HERE, "sanitizer_tests.txt"), encoding="utf-8") as f:
        tests = [line.strip() for line in f if line.strip()]
    seen, full_skips = statuses()

    def runs(t):
        if t in seen:
            return seen[t]
        if t in full_skips:
            return False
        family = t.split(".")[1].split("/")[0] if "." in t else ""
        return not (t.startswith("All/GpuChannelNorm.") and family in REDUCED_AFFINE_ONLY
                    and t.endswith("_plain"))

    def passed_if_first_error(hit):
        passed, dead = 0, set()
        for i, t in enumerate(tests):
            shard = i % SHARDS
            if shard in dead or not runs(t):
                continue
            if hit(t):
                dead.add(shard)
                continue
            passed += 1
        return passed, len(dead)

    b = "All/GpuChannelNorm.BackwardMatchesCpu/"
    hypotheses = {
        "instance norm NHWC backward": lambda t: t.startswith(b + "instance_") and "_nhwc_" in t,
        "instance norm 16-bit backward":
            lambda t: t.startswith(b + "instance_f16") or t.startswith(b + "instance_bf16"),
        "instance norm backward (any)": lambda t: t.startswith(b + "instance_"),
        "instance norm NCHW backward": lambda t: t.startswith(b + "instance_") and "_nchw_" in t,
        "batch norm NHWC backward": lambda t: t.startswith(b + "batch_") and "_nhwc_" in t,
        "group norm backward": lambda t: t.startswith(b + "group_"),
        "SameBitsOnAnyGrid (channel norms)": lambda t: "GpuChannelNorm.SameBitsOnAnyGrid" in t,
    }
    print(f"{len(tests)} tests; before BackwardMatchesCpu "
          f"{sum(runs(t) for t in tests[:tests.index(b + 'batch_f32_nchw_plain')])} run")
    print("| first error of each shard at | passed | shards with an error |")
    print("|---|---|---|")
    for name, hit in hypotheses.items():
        passed, shards = passed_if_first_error(hit)
        print(f"| {name} | {passed} | {shards} |")
    print("call 3 counted: 360 passed, 214 failed, 6 shards with rc != 0")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Report of a simulated-GPU lane run (scripts/sim_check.sh): log.txt, summary.md and kernels.md
(every kernel the tests launched, with its launches and simulated thread instructions, so that a
run shows which kernel instances it executed).

Each batch folder holds the list of tests it was given, the test binary's output (GoogleTest lines
mixed with the simulator's own messages) and its exit status. A test's result comes from its
GoogleTest status line; a test with none did not finish (its process timed out or crashed), and
the test that was running then is named. Skip reasons and failure messages are the lines GoogleTest
prints under "<file>:<line>: Skipped" or "...: Failure", without the simulator's messages.
"""
import argparse
import collections
import datetime
import glob
import os
import re
import shutil
import subprocess

KERNEL = re.compile(r"pushing kernel '([^']+)'")
# The simulator prints the process's running total of thread instructions after each kernel.
SIMULATED = re.compile(r"Done functional simulation \((\d+) instructions simulated\)")
# "[  FAILED  ] Suite.Test/param, where GetParam() = 0 (6 ms)" for parameterized tests.
STATUS = re.compile(r"^\[ +(OK|FAILED|SKIPPED) +\] (\S+?),?(?: where .*)? \((\d+) ms\)$")
RUN = re.compile(r"^\[ RUN +\] (\S+)")
MESSAGE_START = re.compile(r"^\S+:\d+: (Failure|Skipped)$")
# What the simulator prints between GoogleTest's lines.
NOISE = re.compile(
    r"^(GPGPU-Sim|gpgpu_|Destroy streams|Calculate Maxium|Maximum size is|padded cta size|"
    r"Max CTA|self exe links|Extracting|Running md5sum|\s*$|-[a-z_]|\*\*\*|Kernel '|"
    r"event update|kernel_|Processing kernel|launching memcpy|L2_|Warning:)")


def family(test):
    """GpuRowNorm for All/GpuRowNorm.ForwardMatchesCpu/layer_f32_wf32_plain."""
    suite = test.split(".", 1)[0]
    return suite.split("/")[1] if "/" in suite else suite


def without_arguments(name):
    """A demangled kernel name without its argument list: the first '(' outside the template
    arguments, so that casts among them, such as (ChannelWalk)2, stay."""
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return name[:i]
    return name


def kernel_costs(output_files):
    """Simulated thread instructions and launches per kernel, over every process."""
    cost, launches = collections.Counter(), collections.Counter()
    for path in output_files:
        kernel, total = None, 0
        for line in open(path, errors="replace"):
            m = KERNEL.search(line)
            if m:
                kernel = m.group(1)
                continue
            m = SIMULATED.search(line)
            if m and kernel:
                now = int(m.group(1))
                cost[kernel] += now - total
                launches[kernel] += 1
                total = now
    names = list(cost)
    readable = dict(zip(names, names))
    if names and shutil.which("c++filt"):
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
        lines = out.stdout.split("\n")
        for name, line in zip(names, lines):
            readable[name] = re.sub(r"\(anonymous namespace\)::|nk::cuda::|nk::", "", line)
    return cost, launches, readable


def parse_batch(list_file):
    run_dir = list_file + ".run"
    tests = [t.strip() for t in open(list_file) if t.strip()]
    rc = open(os.path.join(run_dir, "rc")).read().strip() if os.path.exists(
        os.path.join(run_dir, "rc")) else "?"
    results, messages, running = {}, collections.defaultdict(list), None
    capturing = False
    output = os.path.join(run_dir, "output.txt")
    lines = open(output, errors="replace").read().splitlines() if os.path.exists(output) else []
    for line in lines:
        m = RUN.match(line)
        if m:
            running, capturing = m.group(1), False
            continue
        m = STATUS.match(line)
        if m:
            results[m.group(2)] = (m.group(1), int(m.group(3)))
            running, capturing = None, False
            continue
        if MESSAGE_START.match(line):
            capturing = True
        if capturing and running and not NOISE.match(line):
            messages[running].append(line)
    for t in tests:
        if t not in results:
            why = "timed out" if rc in ("124", "137") else f"process ended with status {rc}"
            what = "while it ran" if t == running else "before it started"
            results[t] = ("NOT FINISHED", 0)
            messages[t].append(f"batch {os.path.basename(list_file)} {why} {what}")
    return tests, results, messages


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--wall", type=int, required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--simulator", required=True)
    ap.add_argument("--filter", required=True)
    ap.add_argument("--set", default="reduced", help="NORMKIT_GPU_TESTS of the run")
    ap.add_argument("--probes", help="the simulator probes' result lines")
    a = ap.parse_args()

    order, results, messages = [], {}, {}
    for list_file in sorted(glob.glob(os.path.join(a.work, "batch.[0-9]*"))):
        if list_file.endswith(".run"):
            continue
        tests, r, m = parse_batch(list_file)
        order += tests
        results.update(r)
        messages.update(m)

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "log.txt"), "w") as log:
        for t in order:
            status, ms = results[t]
            log.write(f"{status:12} {t} ({ms} ms)\n")
            if status != "OK":
                for line in messages.get(t, []):
                    log.write(f"    {line}\n")

    per_family = collections.OrderedDict()
    skip_reasons = collections.Counter()
    for t in order:
        status, ms = results[t]
        f = per_family.setdefault(family(t), collections.Counter())
        f[status] += 1
        f["ms"] += ms
        if status == "SKIPPED":
            reason = next((l for l in messages.get(t, []) if not MESSAGE_START.match(l)), "?")
            skip_reasons[(family(t), reason.strip())] += 1

    total = collections.Counter()
    for f in per_family.values():
        total.update(f)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(os.path.join(a.out, "summary.md"), "w") as s:
        s.write("# Simulated-GPU lane\n\n")
        s.write(f"- date: {date}\n- commit: {a.commit}\n- simulator: {a.simulator}\n")
        s.write(f"- tests: `{a.filter}`, NORMKIT_GPU_TESTS={a.set}\n")
        s.write(f"- wall time: {a.wall} s ({a.wall / 60:.1f} min)\n\n")
        if a.probes and os.path.exists(a.probes):
            s.write("Simulator probes (tests/sim/simulator_probes.cu), run first:\n\n")
            for line in open(a.probes):
                s.write(f"    {line.rstrip()}\n")
            s.write("\n")
        s.write("| family | run | passed | failed | skipped | not finished | test time (s) |\n")
        s.write("|---|---|---|---|---|---|---|\n")
        for name, f in list(per_family.items()) + [("**all**", total)]:
            run = sum(f[k] for k in ("OK", "FAILED", "SKIPPED", "NOT FINISHED"))
            s.write(f"| {name} | {run} | {f['OK']} | {f['FAILED']} | {f['SKIPPED']} | "
                    f"{f['NOT FINISHED']} | {f['ms'] / 1000:.0f} |\n")
        if skip_reasons:
            s.write("\nSkipped, with the reasons the tests give:\n\n")
            for (fam, reason), n in sorted(skip_reasons.items()):
                s.write(f"- {fam} ({n}): {reason}\n")
        slowest = sorted(order, key=lambda t: -results[t][1])[:10]
        s.write("\nSlowest tests (the lane's budget is 30 minutes on 2 cores):\n\n")
        for t in slowest:
            s.write(f"- {results[t][1] / 1000:.1f} s `{t}`\n")
        outputs = glob.glob(os.path.join(a.work, "batch.*.run", "output.txt"))
        cost, launches, readable = kernel_costs(outputs)
        if cost:
            total_cost = sum(cost.values())
            s.write(f"\nSimulated thread instructions: {total_cost:.3g} in all; the kernels that "
                    "cost most:\n\n| share | instructions | launches | kernel |\n|---|---|---|---|\n")
            for k, v in cost.most_common(10):
                name = readable[k] if len(readable[k]) <= 140 else readable[k][:137] + "..."
                s.write(f"| {100 * v / total_cost:.1f} % | {v:.3g} | {launches[k]} | `{name}` |\n")
        if cost:
            with open(os.path.join(a.out, "kernels.md"), "w") as k_out:
                k_out.write(f"# Kernels launched by the lane at {a.commit}\n\n"
                            "| kernel | launches | thread instructions |\n|---|---|---|\n")
                for k in sorted(cost, key=lambda k: readable[k]):
                    name = without_arguments(re.sub(r"^void ", "", readable[k]))
                    k_out.write(f"| `{name}` | {launches[k]} | {cost[k]:.3g} |\n")
        bad = [t for t in order if results[t][0] in ("FAILED", "NOT FINISHED")]
        if bad:
            s.write("\nFailed or not finished (messages in log.txt):\n\n")
            for t in bad:
                s.write(f"- {results[t][0].lower()}: `{t}`\n")
    print(open(os.path.join(a.out, "summary.md")).read())
    return 1 if total["FAILED"] or total["NOT FINISHED"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Markdown table of an Nsight Compute CSV report (ncu --csv --print-units base, details page).

    bench/ncu_table.py NCU.csv [MORE.txt ...]

One row per profiled kernel, in launch order: its ID, name (the function, without parameters),
grid and block, duration, DRAM throughput and issue-slot use as percentages of peak, and SM
throughput and active warps where they were collected. Lines that are not CSV (ncu's own
"==PROF==" messages, the application's output) are skipped; values keep ncu's units (base units:
ns, %). Several files are read as one (ncu's log and the application's output, wherever the
CSV went). Used by scripts/gpu_check.sh for the ncu phase; exits 1 with a message when the files
hold no kernel.
"""
import csv
import sys

# (metric, column title); the first two are what the GPU check is for.
COLUMNS = (
    ("gpu__time_duration.sum", "time µs"),
    ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "DRAM % of peak"),
    ("sm__inst_issued.avg.pct_of_peak_sustained_active", "issue slots busy %"),
    ("sm__throughput.avg.pct_of_peak_sustained_elapsed", "SM % of peak"),
    ("sm__warps_active.avg.pct_of_peak_sustained_active", "warps active %"),
)


def number(text):
    """ncu's value as a float (it may group thousands with commas), or None."""
    try:
        return float(text.replace(",", ""))
    except (AttributeError, ValueError):
        return None


def short_name(name):
    """The kernel's function name: no parameter list, no 'void', templates cut at 60 chars."""
    name = name.split("(")[0].strip()
    if name.startswith("void "):
        name = name[5:]
    return name if len(name) <= 60 else name[:57] + "..."


def read_kernels(lines):
    """{ID: {"name", "grid", "block", metric: (value, unit)}} in first-seen order."""
    rows = [line for line in lines if line.startswith('"')]
    kernels = {}
    for row in csv.DictReader(rows):
        kid = row.get("ID")
        if kid is None or not kid.strip().isdigit():
            continue
        k = kernels.setdefault(kid, {"name": row.get("Kernel Name", "?"),
                                     "grid": row.get("Grid Size", ""),
                                     "block": row.get("Block Size", "")})
        metric = row.get("Metric Name")
        if metric:
            k[metric] = (number(row.get("Metric Value")), row.get("Metric Unit", ""))
    return kernels


def cell(kernel, metric):
    value, unit = kernel.get(metric, (None, ""))
    if value is None:
        return "n/a"
    if metric == "gpu__time_duration.sum":
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3,
                 "msecond": 1e3, "s": 1e6, "second": 1e6}.get(unit.strip(), None)
        return f"{value * scale:.1f}" if scale is not None else f"{value:g} {unit}"
    return f"{value:.1f}"


def table(kernels):
    present = [(m, title) for m, title in COLUMNS if any(m in k for k in kernels.values())]
    head = ["ID", "kernel", "grid", "block"] + [title for _, title in present]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kid, k in kernels.items():
        row = [kid, f"`{short_name(k['name'])}`", k["grid"], k["block"]]
        row += [cell(k, m) for m, _ in present]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv):
    if not argv:
        print("usage: " + __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    lines = []
    for path in argv:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines += f.read().splitlines()
        except OSError as e:
            print(f"ncu_table.py: {e}", file=sys.stderr)
    kernels = read_kernels(lines)
    if not kernels:
        print(f"ncu_table.py: no kernel in {' '.join(argv)}", file=sys.stderr)
        return 1
    print(table(kernels))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Markdown summary of a normkit_bench run (Google Benchmark JSON).

    bench/summarize.py RESULTS.json [--torch TORCH.json] [--out SUMMARY.md]

One table per op family (bn_resnet50, bn_in_place, bn_features, bn_mobilenet_v2, rows/layer_norm,
rows/rms_norm, fused_rows/..., fused_channels/..., instance_norm, group_norm, small/..., check/...)
with shape, dtype, layout, phase, normkit's GB/s, its fraction of the copy bandwidth measured in the
same run and its ratio to cuDNN (cuDNN time / normkit time: above 1, normkit is faster; n/a where
cuDNN did not run the case). Runs that report frac_of_copy_s5 (DESIGN.md section 5's byte count:
batch, instance and group norm inputs counted twice where they fit neither the L2 nor, a statistic's
share, one block's shared memory) show it as a column too, and under the tables of batch, instance
and group norm how many cases reach section 5's target with it (0.95 of copy for inference, 0.85 for
the training forward and the backward; launch-bound cases left out). Below each table: the geometric
mean of the ratios; then, where both ran, each bn_in_place case's time over its out-of-place twin's
(bn_resnet50, same shape; the bytes counted are the same); at the end, the five worst cases by
frac_of_copy and by vs_cudnn, and any errors.

--torch merges a PyTorch comparison made separately: a JSON object
{"<benchmark name>": {"eager": ratio, "compile": ratio}}, each ratio being PyTorch's time over
normkit's for that case (same convention as vs_cudnn). Either key may be missing. The JSON
torch_compare.py writes has these keys among others.

A results file cut short (a run stopped at a time limit while Google Benchmark was writing it)
is read up to its last complete benchmark, and the summary says so.

Benchmark names follow normkit_bench's scheme: <set>/[<op>/]<shape parts>/[<layout>/]<dtype>/
[w_<weight dtype>/][<fusion>/]<phase>, with <op> present in the "rows", "long_rows",
"fused_rows", "fused_channels", "small" and "check" sets only and <fusion> (e.g. residual_zc, bn_add_relu) in
"fused_rows" and "fused_channels" only, shown in the shape column;
Google Benchmark appends "/iterations:1/manual_time", which is ignored here (and in --torch keys).
"""
import argparse
import json
import math
import statistics
import sys

DTYPES = {"fp32", "fp16", "bf16"}
LAYOUTS = {"NCHW", "NHWC"}
SET_OP = {"bn_resnet50": "batch_norm", "bn_in_place": "batch_norm", "bn_features": "batch_norm",
          "bn_mobilenet_v2": "batch_norm", "instance_norm": "instance_norm",
          "group_norm": "group_norm"}
IN_PLACE_TWINS = ("bn_in_place/", "bn_resnet50/")  # an in-place case, and its out-of-place twin
MULTI_OP_SETS = ("rows", "long_rows", "fused_rows", "fused_channels", "small", "check")  # names carry the op
COUNTERS = ("GB_per_s", "frac_of_copy", "frac_of_copy_s5", "vs_cudnn", "us_per_call",
            "cudnn_us_per_call", "spread")
CHANNEL_OPS = ("batch_norm", "instance_norm", "group_norm")


def base_name(name):
    """The case name without the parts Google Benchmark appends ("/iterations:1/manual_time")."""
    parts = [p for p in name.split("/")
             if not p.startswith(("iterations:", "repeats:", "threads:"))
             and p not in ("manual_time", "real_time", "process_time")]
    return "/".join(parts)


def parse_name(name):
    """Splits a benchmark name into family, shape, dtype, layout and phase (None if not a case)."""
    parts = base_name(name).split("/")
    if len(parts) < 3 or parts[0] == "copy":
        return None
    if parts[0] in MULTI_OP_SETS:
        family, rest = parts[0] + "/" + parts[1], parts[2:]
    elif parts[0] in SET_OP:
        family, rest = parts[0], parts[1:]
    else:
        return None
    case = {"family": family, "phase": rest[-1], "dtype": "", "layout": "", "shape": []}
    for part in rest[:-1]:
        if part in DTYPES:
            case["dtype"] = part
        elif part in LAYOUTS:
            case["layout"] = part
        elif part.startswith("w_"):
            case["dtype"] += " (w " + part[2:] + ")"
        else:
            case["shape"].append(part)
    case["shape"] = " ".join(case["shape"])
    return case


def collect(benchmarks):
    """One entry per benchmark: the "median" aggregate when repetitions were aggregated, else
    the median of each counter over the iteration entries."""
    by_name = {}
    for b in benchmarks:
        by_name.setdefault(b.get("run_name", b["name"]), []).append(b)
    result = {}
    for run_name, entries in by_name.items():
        name = base_name(run_name)
        medians = [e for e in entries if e.get("aggregate_name") == "median"]
        runs = medians or [e for e in entries if e.get("run_type", "iteration") == "iteration"]
        if not runs:
            continue
        errors = [e for e in runs if e.get("error_occurred")]
        if errors:
            result[name] = {"error": errors[0].get("error_message", "error")}
            continue
        merged = {"label": runs[0].get("label", "")}
        for key in COUNTERS:
            values = [e[key] for e in runs if isinstance(e.get(key), (int, float))]
            if values:
                merged[key] = statistics.median(values)
        result[name] = merged
    return result


def load_results(text):
    """The JSON of a normkit_bench run, and whether it had to be repaired: a file cut short is
    read up to its last complete benchmark entry (Google Benchmark writes one object per run,
    indented by four spaces, inside "benchmarks": [...])."""
    try:
        return json.loads(text), False
    except json.JSONDecodeError:
        pass
    start = text.find('"benchmarks": [')
    if start < 0:
        raise ValueError("no \"benchmarks\" list: not normkit_bench JSON, or cut before any")
    end = text.rfind("\n    }", start)
    candidates = ([text[:end + 6] + "\n  ]\n}\n"] if end >= 0 else []) + \
        [text[:start + len('"benchmarks": [')] + "]}"]
    for candidate in candidates:
        try:
            return json.loads(candidate), True
        except json.JSONDecodeError:
            continue
    raise ValueError("the file is cut short and cannot be repaired")


def geomean(values):
    values = [v for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fmt(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def header(context):
    def get(key):
        return context.get(key, "n/a")

    lines = [
        f"# normkit benchmarks on {get('gpu_name')}",
        "",
        f"- date: {get('date')}; normkit commit: {get('normkit_commit')}",
        f"- GPU: {get('gpu_name')}, {get('gpu_sm_count')} SMs, L2 {get('gpu_l2_bytes')} bytes; "
        f"SM clock {get('gpu_sm_clock_current_mhz')} MHz (max {get('gpu_sm_clock_max_mhz')}), "
        f"memory clock {get('gpu_mem_clock_current_mhz')} MHz "
        f"(max {get('gpu_mem_clock_max_mhz')})",
        f"- driver: {get('nvidia_driver')} (CUDA {get('cuda_driver_version')}), CUDA runtime "
        f"{get('cuda_runtime_version')}, cuDNN {get('cudnn_version')}",
        f"- copy bandwidth (read + write): 16-byte kernel {get('copy_kernel_GB_per_s')} GB/s, "
        f"cudaMemcpyAsync {get('copy_memcpy_GB_per_s')} GB/s; "
        f"reference {get('copy_reference_GB_per_s')} GB/s",
        f"- timing: {get('timing')}",
        f"- clusters of 204 KiB blocks held at once: {get('gpu_clusters_of_8_at_204kib')} of 8, "
        f"{get('gpu_clusters_of_16_at_204kib')} of 16 (the split tiles')",
        "",
    ]
    return lines


def launch_bound(name, r):
    """Timed per call (the small set, the check set's launch-bound cases): us_per_call."""
    return name.startswith("small/") or "us_per_call" in r


def section5_target(phase):
    """DESIGN.md section 5's target for batch, instance and group norm, as a fraction of copy."""
    return 0.95 if phase == "infer_fwd" else 0.85


def family_table(family, cases, torch):
    small = any(launch_bound(name, r) for name, _, r in cases)
    s5 = any("frac_of_copy_s5" in r for _, _, r in cases)
    columns = ["shape", "dtype", "layout", "phase", "normkit GB/s", "frac of copy"]
    columns += ["frac of copy (§5 bytes)"] if s5 else []
    columns += ["vs cuDNN"]
    if torch:
        columns += ["vs torch eager", "vs torch.compile"]
    if small:
        columns += ["normkit µs/call", "cuDNN µs/call"]
    lines = [f"## {family}", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    ratios = {"vs_cudnn": [], "eager": [], "compile": []}
    notes = {}
    for name, case, r in cases:
        t = torch.get(base_name(name), {}) if torch else {}
        row = [case["shape"], case["dtype"], case["layout"] or "-", case["phase"]]
        if "error" in r:
            row += ["error"] + [""] * (len(columns) - len(row) - 1)
            lines.append("| " + " | ".join(row) + " |")
            continue
        row += [fmt(r.get("GB_per_s"), 0), fmt(r.get("frac_of_copy"), 3)]
        row += [fmt(r.get("frac_of_copy_s5"), 3)] if s5 else []
        row += [fmt(r.get("vs_cudnn"), 2)]
        ratios["vs_cudnn"].append(r.get("vs_cudnn"))
        if torch:
            row += [fmt(t.get("eager"), 2), fmt(t.get("compile"), 2)]
            ratios["eager"].append(t.get("eager"))
            ratios["compile"].append(t.get("compile"))
        if small:
            row += [fmt(r.get("us_per_call"), 2), fmt(r.get("cudnn_us_per_call"), 2)]
        lines.append("| " + " | ".join(row) + " |")
        if r.get("vs_cudnn") is None and r.get("label"):
            notes[r["label"]] = notes.get(r["label"], 0) + 1
    lines.append("")
    summary = [f"geometric mean vs cuDNN: {fmt(geomean(ratios['vs_cudnn']), 2)} "
               f"({sum(1 for v in ratios['vs_cudnn'] if v is not None)} cases)"]
    if torch:
        summary.append(f"vs torch eager: {fmt(geomean(ratios['eager']), 2)}")
        summary.append(f"vs torch.compile: {fmt(geomean(ratios['compile']), 2)}")
    lines.append("; ".join(summary))
    at_target = [r["frac_of_copy_s5"] >= section5_target(case["phase"])
                 for name, case, r in cases if "frac_of_copy_s5" in r and not launch_bound(name, r)]
    if SET_OP.get(family, family.split("/")[-1]) in CHANNEL_OPS and at_target:
        lines.append(f"at DESIGN.md section 5's target (§5 bytes): {sum(at_target)} of "
                     f"{len(at_target)} cases")
    for note, count in sorted(notes.items()):
        lines.append(f"- {count} case(s) without a cuDNN ratio: {note}")
    lines.append("")
    return lines


def in_place_table(cases):
    """Each in-place case beside its out-of-place twin: the time ratio, from their GB/s (the same
    bytes are counted for both). Empty where no pair ran."""
    prefix, twin_prefix = IN_PLACE_TWINS
    rows, ratios = [], []
    for name, r in cases.items():
        twin = cases.get(twin_prefix + name[len(prefix):]) if name.startswith(prefix) else None
        if twin is None or "error" in r or "error" in twin:
            continue
        inside, outside = r.get("GB_per_s"), twin.get("GB_per_s")
        if not inside or not outside:
            continue
        case = parse_name(name)
        ratios.append(outside / inside)
        rows.append([case["shape"], case["dtype"], case["layout"], case["phase"], fmt(inside, 0),
                     fmt(outside, 0), fmt(ratios[-1], 3)])
    if not rows:
        return []
    lines = ["## In place against out of place (bn_in_place over bn_resnet50)", "",
             "| shape | dtype | layout | phase | in place GB/s | out of place GB/s | "
             "time in place / out of place |", "|" + "---|" * 7]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"geometric mean of the time ratios: {fmt(geomean(ratios), 3)} "
              f"({len(ratios)} cases)", ""]
    return lines


def worst(rows, key, title, limit=5):
    ranked = sorted((r[key], name) for name, r in rows if isinstance(r.get(key), (int, float)))
    lines = [f"## Worst {limit} by {title}", ""]
    if not ranked:
        return lines + ["none measured", ""]
    lines += [f"{i + 1}. `{name}`: {value:.3f}" for i, (value, name) in enumerate(ranked[:limit])]
    return lines + [""]


def summarize(results, torch=None, partial=False):
    if torch:
        torch = {base_name(name): ratios for name, ratios in torch.items()}
    cases = collect(results.get("benchmarks", []))
    families = {}
    for name, r in cases.items():
        case = parse_name(name)
        if case is not None:
            families.setdefault(case["family"], []).append((name, case, r))
    lines = header(results.get("context", {}))
    if partial:
        done = len(results.get("benchmarks", []))
        lines += [f"**Partial run**: the results file was cut short; the {done} benchmarks it "
                  "completed (the copy references included) are summarized.", ""]
    for family in families:
        lines += family_table(family, families[family], torch)
    lines += in_place_table(cases)
    measured = [(n, r) for n, r in cases.items() if parse_name(n) and "error" not in r]
    # Launch-bound cases are timed per call and are not meant to approach the copy bandwidth.
    lines += worst([(n, r) for n, r in measured if not launch_bound(n, r)], "frac_of_copy",
                   "frac_of_copy (launch-bound cases excluded)")
    lines += worst(measured, "vs_cudnn", "vs_cudnn")
    errors = [(n, r["error"]) for n, r in cases.items() if "error" in r]
    if errors:
        lines += ["## Errors", ""] + [f"- `{n}`: {message}" for n, message in errors] + [""]
    return "\n".join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="Google Benchmark JSON written by normkit_bench")
    parser.add_argument("--torch", help="JSON of {name: {eager: ratio, compile: ratio}}")
    parser.add_argument("--out", help="write the markdown here instead of stdout")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        try:
            results, partial = load_results(f.read())
        except ValueError as e:
            print(f"summarize.py: {args.results}: {e}", file=sys.stderr)
            return 1
    torch = None
    if args.torch:
        with open(args.torch, encoding="utf-8") as f:
            torch = json.load(f)
    text = summarize(results, torch, partial)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""normkit against PyTorch on the GPU: torch.nn.functional eager and torch.compile, same tensors.

For every case it times normkit (python/normkit.py over the C API, on the CUDA tensors' data
pointers, enqueued on torch's current stream), the torch.nn.functional call (eager) and the same
function through torch.compile (default mode, fullgraph, static shapes), and prints
torch_time / normkit_time for eager and compile: above 1 means normkit is faster.

What is timed
  - Forward of a training step (bn train_fwd; instance, group, layer, RMS fwd): torch is called
    with x, weight and bias requiring grad, as in training (autograd records its graph and keeps
    what the backward needs: mean and invstd/rstd); normkit writes y and the saved statistics
    that its backward takes. Batch norm training updates the running statistics in both
    (F.batch_norm with running buffers, momentum 0.1; normkit with running buffers and no
    num_batches_tracked, which F.batch_norm does not touch either).
  - bn infer_fwd: torch under torch.no_grad() with training=False; normkit NK_INFERENCE. Both
    read the same running statistics.
  - Backward (train_bwd, bwd): both produce the same set, dx, dweight and dbias (RMS norm: dx and
    dweight), from the batch statistics of a training forward that ran once before the timing.
    torch: y = fn(x, w, b) once, then each timed iteration is
    torch.autograd.grad(y, (x, w, b), dy, retain_graph=True) with the same fixed dy, so only the
    backward runs (for torch.compile the backward graph AOTAutograd compiled for fn, with
    whatever it chose to save in the forward). normkit: its backward op on the statistics saved
    by its forward.
  - Instance norm is InstanceNorm2d(affine=True) without running statistics (PyTorch's
    default): F.instance_norm(use_input_stats=True) against normkit NK_TRAINING, no running
    buffers. Group norm: G = 32.
  - torch is timed as it is used: whatever kernels it picks (cuDNN included), the memory format it
    returns (a note says when a channels-last input gives a contiguous output), its own
    allocations through the caching allocator.
  - Weight dtypes. Batch/instance/group norm parameters are fp32 in normkit, and torch is given
    the same fp32 tensors (batch norm under AMP runs that way). Should a torch path refuse fp32
    parameters with a fp16/bf16 x (any failure of that first call), it is timed with weight and
    bias in x's dtype and a note gives torch's message. Layer/RMS norm (rows, small): w_f32 and w_<x
    dtype> are separate cases; a torch path that refuses fp32 weights with a bf16 x gets no time
    (n/a) and a note with torch's message, since the w_bf16 case is the one it can express.
  - Fused layer/RMS norm (set fused_rows): normkit's nk_row_norm_fused_forward/_backward against
    the unfused composition in torch, eager and compiled (fused_fn): h = x + residual + bias_in,
    then F.layer_norm / F.rms_norm with weight + 1 for a zero-centred weight ("zc"); an fp8 output
    is (y.float() * scale).clamp(-448, 448).to(torch.float8_e4m3fn) with amax = y.abs().amax().
    With the residual add the forward returns h as well (normkit writes it), and the backward
    differentiates (y, h) with grad outputs (dy, dh_extra) with respect to x, residual, bias_in,
    weight and bias: autograd adds dh_extra to the norm's dh and hands that one tensor to both x
    and residual, where normkit writes dx and dresidual (normkit_bench counts both). normkit's
    backward reads the h its forward wrote, before the timing.
  - Fused channel norms (set fused_channels): normkit's nk_channel_norm_fused_forward/_backward
    against the unfused composition in torch, eager and compiled (fused_channel_fn):
    F.batch_norm (training with running statistics, or inference) or F.group_norm (G = 32), then
    + z for bn_add_relu, then F.relu or F.silu. normkit's training forward with ReLU also writes
    its bit mask (torch keeps what autograd saves); its inference forward writes no mask. The
    backward differentiates y with respect to x, z (bn_add_relu), weight and bias with grad
    output dy: normkit's backward reads its forward's mask (ReLU) or recomputes u (SiLU) and
    writes dx, dz, dweight and dbias. The check compares y (forward) or every gradient; the mask
    itself is not compared (a u within rounding of 0 may take either side in fp32 and in the
    reference, and y already shows where it is 0).
  - Warnings torch raises on the first call (e.g. "cannot dispatch to fused implementation") are
    kept in the notes; torch gives some only once per process, so only the first case meets them.

Method (CUDA)
  - CUDA events around each call on the current stream; median of --iters (default 50) iterations
    after --warmup (default 10). torch.compile compiles once per case shape (the first call, not
    timed; its seconds are reported as compile_s) and is then warmed up like the others.
  - Before every timed iteration, outside the events: a >= 256 MiB buffer is zeroed (evicts the
    50 MB L2 of an H100/H200, so every call starts from DRAM), then the stream spins for
    --spin-us (default 500 us, torch.cuda._sleep) so that the host has enqueued the whole call
    before the GPU reaches the start event: the figures are GPU time, not Python, ctypes or
    autograd dispatch time. If the GPU reached the start event before the call returned on the
    host, the host's launch time may be inside the figure: the case gets a note
    ("host visible in k/N iterations"; raise --spin-us).
  - normkit gets a workspace of the size its *_workspace_size queries ask for, set on the context
    before timing, so it never allocates inside the timed region.
  - Before timing, one normkit call is checked against PyTorch in fp32 on the same values (every
    output of the phase, error relative to the largest reference value): "ok" or "MISMATCH".
  - One dedicated CUDA stream is made torch's current stream for the whole run and given to
    normkit with nk_context_set_stream; autograd and compiled kernels run on it too.
  - Tensors, compiled functions (torch._dynamo.reset()) and the cache are freed between cases.

Case names: normkit_bench's scheme (bench/bench_case.cpp), written here in case_name() alone, so
bench/summarize.py --torch joins this script's JSON with the C++ suite's:

    <set>/[<op>/]<shape fields>/[<layout>/]<dtype>/[w_<weight dtype>/]<phase>

  set           bn_resnet50 | bn_features | bn_mobilenet_v2 | rows | long_rows | fused_rows |
                fused_channels | instance_norm | group_norm | small | check
  op            only in the sets that mix ops (rows, long_rows, fused_rows, fused_channels, small,
                check):
                layer_norm |
                rms_norm | batch_norm | instance_norm | group_norm
  shape fields  channel norms: N<n>/C<c>/HW<side> (H = W = side), group norm adds /G<groups>;
                row norms: D<cols>/M<rows>
  layout        channel norms only: NCHW (torch contiguous) | NHWC (torch channels_last)
  dtype         of x, y, dy, dx: bf16 | fp16 | fp32
  w_<dtype>     row norms only: dtype of weight, bias and their gradients (w_fp32 or w_<dtype>)
  fusion        fused_rows: the fused parts joined by "_", in this order: residual (the
                residual add, bias_in, h written), zc (zero-centred weight), fp8 (E4M3 output);
                fused_channels: bn_relu, bn_add_relu (batch norm, + z, ReLU), gn_silu
  phase         batch and instance norm: train_fwd | infer_fwd | bwd (this script times no
                instance-norm inference); group, layer, RMS norm: fwd | bwd
  e.g.  bn_resnet50/N256/C64/HW112/NHWC/bf16/train_fwd
        rows/layer_norm/D1024/M131072/bf16/w_fp32/fwd
        small/batch_norm/N8/C256/HW14/NCHW/fp16/infer_fwd
        group_norm/N2/C320/HW64/G32/NHWC/bf16/bwd
        fused_rows/layer_norm/D4096/M8192/bf16/w_bf16/residual_zc/bwd
        fused_channels/batch_norm/N256/C64/HW56/NHWC/fp16/bn_add_relu/train_fwd

Sets (--list prints every case name)
  bn_resnet50    ResNet-50's batch-norm layers, C x side: 64x112, 64x56, 256x56, 128x28, 512x28,
                 256x14, 1024x14, 512x7, 2048x7; N 256 and 32; NCHW, NHWC; bf16, f16, f32.
  bn_features    batch norm of N x C features (S = 1, side 1: BatchNorm1d after a linear layer,
                 given to torch as an [N, C, 1, 1] tensor), N x C 65536x512, 16384x2048,
                 4096x8192, 4096x1024; NCHW, NHWC (the same memory); bf16, f32.
  bn_mobilenet_v2 MobileNetV2's narrow batch-norm layers, C x side 32x112, 16x112, 24x56,
                 32x28; N 128; NCHW, NHWC; bf16, f32.
  rows           layer and RMS norm, D in 128 ... 65536, M = ceil(256 MiB / (D * sizeof(x)))
                 so that x holds >= 256 MiB; bf16 with w_bf16 and w_f32, f32 with w_f32.
  long_rows      layer and RMS norm, few long rows: M 8, 64 and D 32768, 262144 (row dtypes as
                 in rows).
  fused_rows     fused layer and RMS norm, bf16 with w_bf16, M x D 16384 x 1024, 8192 x 4096,
                 4096 x 8192; forward: residual, zc, fp8, residual_zc_fp8; backward: residual,
                 zc, residual_zc (normkit_bench's fused_rows set, bench/shape_sets.cpp).
  fused_channels batch norm + ReLU (train_fwd, infer_fwd, bwd) and + add + ReLU (train_fwd,
                 bwd) at N256 C64 56, N256 C128 28, N32 C512 7 (NHWC fp16 each; NHWC bf16,
                 NCHW bf16, NCHW f32 once); group norm + SiLU (fwd, bwd) at N2 C320 64,
                 N8 C640 32, N8 C1280 16 (NHWC bf16) and N8 C640 32 (NCHW f16): normkit_bench's
                 fused_channels set, 38 cases.
  instance_norm  N 8; C 64, 128, 256; side 256, 128, 75; NCHW, NHWC; bf16, f16, f32.
  group_norm     N 2, 8; C 320, 640, 1280; side 64, 32, 16, 8; G 32; NCHW, NHWC; bf16, f16, f32.
  small          microseconds per call: layer and RMS norm, M 1, 4, 16, 64 and D 1024, 4096 (row
                 dtypes as in rows); batch norm N 1, 2, 8, C 256, side 14, both layouts, 3 dtypes.
  check          the GPU check's 40 cases (scripts/gpu_check.sh), every op class: normkit_bench's
                 `check` set, same names (CHECK_* below). Not in the default --sets.
  The whole list is about a thousand cases, and each case shape is compiled afresh (compile_s
  says how long that took), so on a machine with a time limit run it per set or with --filter,
  each with its own --out (the JSON file is rewritten after every case, so an interrupted run
  keeps what it measured).

Usage, on the GPU machine from the repository root:
    NORMKIT_LIB=$PWD/.gpu-bundle/libnormkit.so.0 python3 bench/torch_compare.py \\
        --sets bn_resnet50 --out $OUT/torch_compare_bn_resnet50.json
  --filter REGEX (re.search on the case name), --sets a,b, --iters N, --warmup N, --no-compile,
  --compile-limit N and --compile-filter REGEX (torch.compile only on the first N shapes, or
  on the cases matching REGEX, in a second pass after the eager pass over every case, so that
  a run cut short by a time limit keeps every eager ratio; --list marks them "[compile]"),
  --list (print the selected names and exit; needs neither torch nor a GPU), --out FILE.json:
    {case: {"normkit_ms", "eager_ms", "compile_ms": medians in ms,
            "eager", "compile": torch_ms / normkit_ms (> 1: normkit faster),
            "compile_s": seconds of the first compiled call (compilation, not timed),
            "check": "ok (<max relative error>)" or "MISMATCH ...",
            "notes": [what differs from the plain case: a refused dtype, a layout, host time],
            "device": the GPU's name}}
    null where an implementation could not run the case (the notes say why).
  Without a CUDA device it says so and exits 0 (without PyTorch it says so and exits 1).

  --device cpu is a SMOKE TEST of this script: normkit's CPU reference backend against torch on
  the CPU, wall-clock timing, cases above --max-mib (default 4 on the CPU) skipped. It checks that
  every path runs and agrees; its times are not performance figures and are never to be reported.
"""

import argparse
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import normkit as nk  # noqa: E402  (needs no torch at import time)

EPS = 1e-5       # batch, instance, group and layer norm (PyTorch's default)
RMS_EPS = 1e-6   # RMS norm: PyTorch has no fixed default; a common choice
SUITE_SETS = ("bn_resnet50", "bn_features", "bn_mobilenet_v2", "rows", "long_rows", "fused_rows",
              "fused_channels", "instance_norm", "group_norm", "small")  # the default
SETS = SUITE_SETS + ("check",)
MULTI_OP_SETS = ("rows", "long_rows", "fused_rows", "fused_channels", "small", "check")
CHANNEL_DTYPES = ("bf16", "f16", "f32")
ROW_VARIANTS = (("bf16", "bf16"), ("bf16", "f32"), ("f32", "f32"))  # (x dtype, weight dtype)
ITEMSIZE = {"bf16": 2, "f16": 2, "f32": 4}
NK_DTYPE = {"bf16": nk.BF16, "f16": nk.F16, "f32": nk.F32}
# max |err| / max |reference|. fp8 (e4m3): one step of the top binade (2^-3 of its bottom), since
# y rounded from bf16 (torch) and from fp32 (normkit) may round to neighbouring fp8 values.
CHECK_TOL = {"bf16": 2e-2, "f16": 5e-3, "f32": 1e-3, "fp8": 2.0 ** -3}
RESNET50_BN = ((64, 112), (64, 56), (256, 56), (128, 28), (512, 28), (256, 14), (1024, 14),
               (512, 7), (2048, 7))
# bn_features (normkit_bench's add_bn_features): N x C, S = 1; bn_mobilenet_v2: C x side, N 128.
BN_FEATURES = ((65536, 512), (16384, 2048), (4096, 8192), (4096, 1024))
MOBILENET_V2_BN = ((32, 112), (16, 112), (24, 56), (32, 28))
ROW_D = (128, 256, 512, 768, 1024, 2048, 4096, 8192, 12288, 16384, 32768, 65536)
# fused_rows (normkit_bench's add_fused_rows): (M, D), and the fusions per direction.
FUSED_SHAPES = ((16384, 1024), (8192, 4096), (4096, 8192))
FUSED_FORWARD = ("residual", "zc", "fp8", "residual_zc_fp8")
FUSED_BACKWARD = ("residual", "zc", "residual_zc")
# fused_channels (normkit_bench's add_fused_channels): (op, N, C, side, G or None, layout, dtype),
# and the fusions with their phases per op.
FUSED_CHANNELS = (("bn", 256, 64, 56, None, "NHWC", "f16"),
                  ("bn", 256, 128, 28, None, "NHWC", "f16"),
                  ("bn", 32, 512, 7, None, "NHWC", "f16"),
                  ("bn", 256, 64, 56, None, "NHWC", "bf16"),
                  ("bn", 256, 128, 28, None, "NCHW", "bf16"),
                  ("bn", 32, 512, 7, None, "NCHW", "f32"),
                  ("group", 2, 320, 64, 32, "NHWC", "bf16"),
                  ("group", 8, 640, 32, 32, "NHWC", "bf16"),
                  ("group", 8, 1280, 16, 32, "NHWC", "bf16"),
                  ("group", 8, 640, 32, 32, "NCHW", "f16"))
FUSED_CHANNEL_FORMS = {"bn": (("bn_relu", ("train_fwd", "infer_fwd", "train_bwd")),
                              ("bn_add_relu", ("train_fwd", "train_bwd"))),
                       "group": (("gn_silu", ("fwd", "bwd")),)}
FP8_SCALE = 64.0   # normkit_bench's kFp8Scale
E4M3_MAX = 448.0


# ------------------------------------------------------------------------------------------------
# Cases and their names
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    set: str
    op: str          # bn, instance, group, layer, rms
    shape: tuple     # ((field, value), ...) in name order
    layout: str      # NCHW or NHWC; None for row norms
    dtype: str       # bf16, f16, f32
    wdtype: str      # row norms: dtype of the parameters; None for channel norms
    phase: str
    fusion: str = None  # fused_rows: "residual", "zc", "fp8" joined by "_"; None elsewhere

    def fused(self, part):
        return self.fusion is not None and part in self.fusion.split("_")

    @property
    def name(self):
        return case_name(self)

    @property
    def shape_key(self):
        """The name without the phase: cases sharing it share their compiled functions."""
        return case_name(self).rsplit("/", 1)[0]

    def dim(self, field):
        return dict(self.shape)[field]

    def x_bytes(self):
        if self.op in ("layer", "rms"):
            count = self.dim("M") * self.dim("D")
        else:
            count = self.dim("N") * self.dim("C") * self.dim("HW") ** 2
        return count * ITEMSIZE[self.dtype]


# Case names are normkit_bench's (bench/bench_case.cpp), so bench/summarize.py joins the two runs:
# <set>/[<op>/]<shape fields>/[<layout>/]<dtype>/[w_<weight dtype>/]<phase>, e.g.
# bn_resnet50/N256/C64/HW112/NHWC/bf16/train_fwd, rows/layer_norm/D1024/M131072/bf16/w_fp32/fwd.
BENCH_OP = {"layer": "layer_norm", "rms": "rms_norm", "bn": "batch_norm",
            "instance": "instance_norm", "group": "group_norm"}
BENCH_DTYPE = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def bench_phase(case):
    if case.phase == "train_bwd":
        return "bwd"
    if case.op == "instance" and case.phase == "fwd":
        return "train_fwd"  # normkit_bench names instance norm's phases as batch norm's
    return case.phase


def case_name(case):
    """The normkit_bench name of a case (see above)."""
    parts = [case.set]
    if case.set in MULTI_OP_SETS:
        parts.append(BENCH_OP[case.op])
    shape = list(case.shape)
    if case.op in ("layer", "rms"):
        shape.sort(key=lambda field: field[0] != "D")  # D before M
    parts += [f"{field}{value}" for field, value in shape]
    if case.layout:
        parts.append(case.layout)
    parts.append(BENCH_DTYPE[case.dtype])
    if case.wdtype:
        parts.append("w_" + BENCH_DTYPE[case.wdtype])
    if case.fusion:
        parts.append(case.fusion)
    parts.append(bench_phase(case))
    return "/".join(parts)


PHASES = {"bn": ("train_fwd", "infer_fwd", "train_bwd"), "instance": ("fwd", "bwd"),
          "group": ("fwd", "bwd"), "layer": ("fwd", "bwd"), "rms": ("fwd", "bwd")}


def channel_cases(set_name, op, shapes, dtypes=CHANNEL_DTYPES):
    for shape in shapes:
        for layout in ("NCHW", "NHWC"):
            for dtype in dtypes:
                for phase in PHASES[op]:
                    yield Case(set_name, op, shape, layout, dtype, None, phase)


def row_cases(set_name, shapes_of):
    for op in ("layer", "rms"):
        for dtype, wdtype in ROW_VARIANTS:
            for shape in shapes_of(dtype):
                for phase in PHASES[op]:
                    yield Case(set_name, op, shape, None, dtype, wdtype, phase)


def rows_for_256mib(d, dtype):
    return -(-(256 << 20) // (d * ITEMSIZE[dtype]))


def all_cases(sets):
    out = []
    if "bn_resnet50" in sets:
        out += channel_cases("bn_resnet50", "bn", [(("N", n), ("C", c), ("HW", hw))
                                                   for n in (256, 32) for c, hw in RESNET50_BN])
    if "bn_features" in sets:
        out += channel_cases("bn_features", "bn", [(("N", n), ("C", c), ("HW", 1))
                                                   for n, c in BN_FEATURES], ("bf16", "f32"))
    if "bn_mobilenet_v2" in sets:
        out += channel_cases("bn_mobilenet_v2", "bn", [(("N", 128), ("C", c), ("HW", hw))
                                                       for c, hw in MOBILENET_V2_BN],
                             ("bf16", "f32"))
    if "rows" in sets:
        out += row_cases("rows", lambda dt: [(("M", rows_for_256mib(d, dt)), ("D", d))
                                             for d in ROW_D])
    if "long_rows" in sets:
        out += row_cases("long_rows", lambda dt: [(("M", m), ("D", d)) for d in (32768, 262144)
                                                  for m in (8, 64)])
    if "fused_rows" in sets:
        out += fused_row_cases()
    if "fused_channels" in sets:
        out += fused_channel_cases()
    if "instance_norm" in sets:
        out += channel_cases("instance_norm", "instance",
                             [(("N", 8), ("C", c), ("HW", hw)) for c in (64, 128, 256)
                              for hw in (256, 128, 75)])
    if "group_norm" in sets:
        out += channel_cases("group_norm", "group",
                             [(("N", n), ("C", c), ("HW", hw), ("G", 32)) for n in (2, 8)
                              for c in (320, 640, 1280) for hw in (64, 32, 16, 8)])
    if "small" in sets:
        out += row_cases("small", lambda dt: [(("M", m), ("D", d)) for d in (1024, 4096)
                                              for m in (1, 4, 16, 64)])
        out += channel_cases("small", "bn", [(("N", n), ("C", 256), ("HW", 14))
                                             for n in (1, 2, 8)])
    if "check" in sets:
        out += check_cases()
    return out


def fused_row_cases():
    """normkit_bench's fused_rows set, in its order."""
    return [Case("fused_rows", op, (("M", m), ("D", d)), None, "bf16", "bf16", phase, fusion)
            for op in ("layer", "rms") for m, d in FUSED_SHAPES
            for phase, fusions in (("fwd", FUSED_FORWARD), ("bwd", FUSED_BACKWARD))
            for fusion in fusions]


def fused_channel_cases():
    """normkit_bench's fused_channels set, in its order."""
    out = []
    for op, n, c, side, groups, layout, dtype in FUSED_CHANNELS:
        shape = (("N", n), ("C", c), ("HW", side)) + ((("G", groups),) if groups else ())
        out += [Case("fused_channels", op, shape, layout, dtype, None, phase, fusion)
                for fusion, phases in FUSED_CHANNEL_FORMS[op] for phase in phases]
    return out


# The GPU check's subset (normkit_bench's `check` set, bench/shape_sets.cpp add_check): rows
# (op, D, x dtype, weight dtype, M or None for 256 MiB of x), then channel norms
# (op, N, C, side, G or None, layout, dtype, phases), then the launch-bound representatives.
CHECK_ROWS = (("layer", 128, "bf16", "f32", None), ("layer", 1024, "bf16", "f32", None),
              ("layer", 8192, "bf16", "bf16", None), ("layer", 65536, "f32", "f32", None),
              ("rms", 256, "bf16", "bf16", None), ("rms", 4096, "bf16", "bf16", None),
              ("rms", 16384, "f32", "f32", None))
BN_ALL = ("train_fwd", "infer_fwd", "train_bwd")
BN_TRAIN = ("train_fwd", "train_bwd")
CHECK_CHANNELS = (("bn", 256, 64, 56, None, "NCHW", "bf16", BN_ALL),
                  ("bn", 256, 64, 56, None, "NHWC", "bf16", BN_ALL),
                  ("bn", 256, 1024, 14, None, "NHWC", "f16", BN_TRAIN),
                  ("bn", 256, 2048, 7, None, "NCHW", "f32", BN_TRAIN),
                  ("instance", 8, 128, 128, None, "NCHW", "bf16", ("fwd", "bwd")),
                  ("instance", 8, 128, 128, None, "NHWC", "bf16", ("fwd", "bwd")),
                  ("group", 2, 320, 64, 32, "NCHW", "bf16", ("fwd", "bwd")),
                  ("group", 2, 320, 64, 32, "NHWC", "bf16", ("fwd", "bwd")),
                  ("group", 8, 640, 64, 32, "NHWC", "bf16", ("fwd", "bwd")),
                  ("group", 8, 1280, 16, 32, "NCHW", "f32", ("fwd", "bwd")))
CHECK_LAUNCH_BOUND = (("layer", 4096, "bf16", "bf16", 16, ("fwd", "bwd")),
                      ("rms", 1024, "bf16", "bf16", 1, ("fwd",)))
CHECK_LAUNCH_BOUND_BN = ("bn", 8, 256, 14, None, "NHWC", "bf16", ("train_fwd",))


def check_cases():
    out = []

    def rows(op, d, dtype, wdtype, m, phases):
        m = m or rows_for_256mib(d, dtype)
        out.extend(Case("check", op, (("M", m), ("D", d)), None, dtype, wdtype, phase)
                   for phase in phases)

    def channel(op, n, c, side, groups, layout, dtype, phases):
        shape = (("N", n), ("C", c), ("HW", side)) + ((("G", groups),) if groups else ())
        out.extend(Case("check", op, shape, layout, dtype, None, phase) for phase in phases)

    for op, d, dtype, wdtype, m in CHECK_ROWS:
        rows(op, d, dtype, wdtype, m, PHASES[op])
    for entry in CHECK_CHANNELS:
        channel(*entry)
    for entry in CHECK_LAUNCH_BOUND:
        rows(*entry)
    channel(*CHECK_LAUNCH_BOUND_BN)
    return out


# ------------------------------------------------------------------------------------------------
# The PyTorch side: module-level functions, so that torch.compile sees one code object per op
# ------------------------------------------------------------------------------------------------

def bn_train(x, w, b, running_mean, running_var):
    return F.batch_norm(x, running_mean, running_var, w, b, training=True, momentum=0.1, eps=EPS)


def bn_infer(x, w, b, running_mean, running_var):
    return F.batch_norm(x, running_mean, running_var, w, b, training=False, eps=EPS)


def instance_fn(x, w, b):
    return F.instance_norm(x, None, None, w, b, use_input_stats=True, eps=EPS)


def group_fn(x, w, b, groups):
    return F.group_norm(x, groups, w, b, eps=EPS)


def layer_fn(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=EPS)


def rms_fn(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, eps=RMS_EPS)


_FUSED_FNS = {}


def fused_fn(op, fusion):
    """The unfused torch composition of a fused_rows case, one function object per (op, fusion)
    so that torch.compile reuses it across phases: fn(x, residual, bias_in, w, b, scale), the
    arguments a fusion does not use being None. Returns y (fp8 y and amax with the fp8 output),
    and h after y with the residual add."""
    key = (op, fusion)
    if key in _FUSED_FNS:
        return _FUSED_FNS[key]
    parts = fusion.split("_")
    residual, zc, fp8 = "residual" in parts, "zc" in parts, "fp8" in parts

    def fn(x, res, bias_in, w, b, scale):
        h = x + res + bias_in if residual else x
        gamma = w + 1 if zc else w
        if op == "layer":
            y = F.layer_norm(h, (h.shape[-1],), gamma, b, eps=EPS)
        else:
            y = F.rms_norm(h, (h.shape[-1],), gamma, eps=RMS_EPS)
        if not fp8:
            return (y, h) if residual else y
        y8 = (y.float() * scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        amax = y.abs().amax().float()
        return (y8, h, amax) if residual else (y8, amax)

    _FUSED_FNS[key] = fn
    return fn


_FUSED_CHANNEL_FNS = {}


def fused_channel_fn(fusion, training):
    """The unfused torch composition of a fused_channels case, one function object per (fusion,
    phase) so that torch.compile reuses it across the cases of a shape: fn(x, z, w, b,
    running_mean, running_var, groups), the arguments a fusion does not use being None. Returns y.
    """
    key = (fusion, training)
    if key in _FUSED_CHANNEL_FNS:
        return _FUSED_CHANNEL_FNS[key]
    parts = fusion.split("_")
    add, silu = "add" in parts, "silu" in parts

    def pre_activation(x, z, w, b, running_mean, running_var, groups):
        if parts[0] == "gn":
            u = F.group_norm(x, groups, w, b, eps=EPS)
        else:
            u = F.batch_norm(x, running_mean, running_var, w, b, training=training, momentum=0.1,
                             eps=EPS)
        return u + z if add else u

    def fn(*a):
        u = pre_activation(*a)
        return F.silu(u) if silu else F.relu(u)

    fn.__wrapped_u__ = pre_activation  # u alone, for the check of ReLU's backward
    _FUSED_CHANNEL_FNS[key] = fn
    return fn


@dataclass
class Work:
    """One case made concrete: tensors, the normkit call, the torch function and its arguments."""
    normkit: object       # () -> None, the timed normkit call
    workspace: int        # bytes normkit's size query asked for
    fn: object            # the torch function (eager, and what torch.compile compiles)
    args: tuple           # its arguments: the same tensors normkit reads (ints stay ints)
    grad_idx: tuple       # positions of x, weight, bias: require grad in training, differentiated
    grad_mode: bool       # False only for inference
    backward: bool
    dy: object            # fixed grad_output of the backward cases
    outputs: dict         # name -> the normkit output tensor checked against the reference
    fallback_args: tuple  # channel norms: parameters in x's dtype, if torch refuses fp32 ones
    forward_names: tuple = ("y",)  # the outputs of fn, in order (a tuple of tensors or one)
    grad_names: tuple = ("dx", "dweight", "dbias")  # the gradients at grad_idx, in order
    tol: dict = None      # output name -> tolerance, where not CHECK_TOL of its dtype
    reference_fn: object = None  # the check's composition, where it is not fn


def randn(shape, dtype, device, mean=0.0, std=1.0, memory_format=None):
    t = torch.empty(shape, dtype=dtype, device=device,
                    memory_format=memory_format or torch.contiguous_format)
    return t.normal_(mean, std)


def make_work(case, lib, device):
    dtype = DTYPES[case.dtype]
    backward = case.phase.endswith("bwd")
    if case.fusion and case.op in ("layer", "rms"):
        return fused_row_work(case, lib, device, dtype, backward)
    if case.fusion:
        return fused_channel_work(case, lib, device, dtype, backward)
    if case.op in ("layer", "rms"):
        return row_work(case, lib, device, dtype, backward)
    return channel_work(case, lib, device, dtype, backward)


def channel_work(case, lib, device, dtype, backward):
    n, c, side = case.dim("N"), case.dim("C"), case.dim("HW")
    fmt = torch.channels_last if case.layout == "NHWC" else torch.contiguous_format
    x = randn((n, c, side, side), dtype, device, 0.5, 2.0, fmt)
    dy = randn((n, c, side, side), dtype, device, memory_format=fmt) if backward else None
    w = torch.rand(c, device=device) + 0.5
    b = torch.randn(c, device=device) * 0.1
    desc = lib.act_torch(x, nk.NHWC if case.layout == "NHWC" else nk.NCHW)
    train = lib.params(nk.TRAINING, EPS, 0.1)
    y, dx = torch.empty_like(x), torch.empty_like(x)  # empty_like keeps the memory format
    dw, db = torch.empty(c, device=device), torch.empty(c, device=device)
    stat_count = {"bn": c, "instance": n * c, "group": n * dict(case.shape).get("G", 1)}[case.op]
    save_mean = torch.empty(stat_count, device=device)
    save_invstd = torch.empty(stat_count, device=device)

    if case.op == "bn":
        rm_nk, rv_nk = torch.randn(c, device=device) * 0.1, torch.rand(c, device=device) + 0.5
        rest = (rm_nk.clone(), rv_nk.clone())  # torch's own running statistics, same values
        if case.phase == "infer_fwd":
            fn, params, saved = bn_infer, lib.params(nk.INFERENCE, EPS), (None, None)
        else:
            fn, params, saved = bn_train, train, (save_mean, save_invstd)

        def forward():
            lib.batch_norm_forward(desc, params, x, w, b, rm_nk, rv_nk, None, y, *saved)

        def backward_call():
            lib.batch_norm_backward(desc, train, x, dy, w, None, None, save_mean, save_invstd,
                                    dx, dw, db)
        sizes = (lambda: lib.batch_norm_forward_workspace_size(desc, params),
                 lambda: lib.batch_norm_backward_workspace_size(desc, train))
    elif case.op == "instance":
        fn, rest = instance_fn, ()

        def forward():
            lib.instance_norm_forward(desc, train, x, w, b, None, None, None, y, save_mean,
                                      save_invstd)

        def backward_call():
            lib.instance_norm_backward(desc, train, x, dy, w, None, None, save_mean, save_invstd,
                                       dx, dw, db)
        sizes = (lambda: lib.instance_norm_forward_workspace_size(desc, train),
                 lambda: lib.instance_norm_backward_workspace_size(desc, train))
    else:
        groups = case.dim("G")
        fn, rest = group_fn, (groups,)

        def forward():
            lib.group_norm_forward(desc, groups, EPS, x, w, b, y, save_mean, save_invstd)

        def backward_call():
            lib.group_norm_backward(desc, groups, x, dy, w, save_mean, save_invstd, dx, dw, db)
        sizes = (lambda: lib.group_norm_forward_workspace_size(desc, groups),
                 lambda: lib.group_norm_backward_workspace_size(desc, groups))
    fallback = (x, w.to(dtype), b.to(dtype), *rest) if dtype != torch.float32 else None
    return finish(backward, forward, backward_call, sizes, fn, (x, w, b, *rest), (0, 1, 2),
                  case.phase != "infer_fwd", dy, {"dx": dx, "dweight": dw, "dbias": db},
                  {"y": y}, fallback)


def row_work(case, lib, device, dtype, backward):
    m, d = case.dim("M"), case.dim("D")
    wdtype = DTYPES[case.wdtype]
    x = randn((m, d), dtype, device, 0.5, 2.0)
    dy = randn((m, d), dtype, device) if backward else None
    w = (torch.rand(d, device=device) + 0.5).to(wdtype)
    b = (torch.randn(d, device=device) * 0.1).to(wdtype)
    desc = lib.rows(x, w)
    y, dx = torch.empty_like(x), torch.empty_like(x)
    dw, db = torch.empty_like(w), torch.empty_like(b)
    mean, rstd = torch.empty(m, device=device), torch.empty(m, device=device)
    if case.op == "layer":
        fn, args, grads = layer_fn, (x, w, b), {"dx": dx, "dweight": dw, "dbias": db}

        def forward():
            lib.layer_norm_forward(desc, EPS, x, w, b, y, mean, rstd)

        def backward_call():
            lib.layer_norm_backward(desc, x, dy, w, mean, rstd, dx, dw, db)
        sizes = (lambda: lib.layer_norm_forward_workspace_size(desc),
                 lambda: lib.layer_norm_backward_workspace_size(desc))
    else:
        fn, args, grads = rms_fn, (x, w), {"dx": dx, "dweight": dw}

        def forward():
            lib.rms_norm_forward(desc, RMS_EPS, x, w, y, rstd)

        def backward_call():
            lib.rms_norm_backward(desc, x, dy, w, rstd, dx, dw)
        sizes = (lambda: lib.rms_norm_forward_workspace_size(desc),
                 lambda: lib.rms_norm_backward_workspace_size(desc))
    return finish(backward, forward, backward_call, sizes, fn, args, tuple(range(len(args))), True,
                  dy, grads, {"y": y}, None)


def fused_row_work(case, lib, device, dtype, backward):
    """A fused_rows case: normkit's fused call with every buffer of its fusion, and fused_fn."""
    m, d = case.dim("M"), case.dim("D")
    wdtype = DTYPES[case.wdtype]
    layer, residual = case.op == "layer", case.fused("residual")
    zc, fp8 = case.fused("zc"), case.fused("fp8")
    x = randn((m, d), dtype, device, 0.5, 2.0)
    res = randn((m, d), dtype, device) if residual else None
    bias_in = (torch.randn(d, device=device) * 0.1).to(wdtype) if residual else None
    # The same gamma in [0.5, 1.5) in both weight forms; zero-centred stores gamma - 1.
    w = (torch.rand(d, device=device) + (-0.5 if zc else 0.5)).to(wdtype)
    b = (torch.randn(d, device=device) * 0.1).to(wdtype) if layer else None
    scale = torch.tensor([FP8_SCALE], device=device) if fp8 else None
    eps = EPS if layer else RMS_EPS
    desc = lib.rows(x, w)
    fusion = lib.fusion(rms=not layer, residual=residual, zero_centered=zc,
                        output=nk.OUTPUT_FP8_E4M3 if fp8 else nk.OUTPUT_DTYPE)
    y = torch.empty((m, d), dtype=torch.float8_e4m3fn if fp8 else dtype, device=device)
    h = torch.empty_like(x) if residual else None
    amax = torch.empty(1, device=device) if fp8 else None
    mean = torch.empty(m, device=device) if layer else None
    rstd = torch.empty(m, device=device)
    dy = randn((m, d), dtype, device) if backward else None
    dh_extra = randn((m, d), dtype, device) if backward and residual else None
    dx = torch.empty_like(x)
    dres = torch.empty_like(x) if residual else None
    dbias_in = torch.empty_like(bias_in) if residual else None
    dw, db = torch.empty_like(w), (torch.empty_like(b) if layer else None)

    def forward():
        lib.row_norm_fused_forward(desc, fusion, eps, x=x, residual=res, bias_in=bias_in, weight=w,
                                   bias=b, h=h, y=y, y_scale=scale, y_amax=amax, save_mean=mean,
                                   save_rstd=rstd)

    def backward_call():
        lib.row_norm_fused_backward(desc, fusion, x=h if residual else x, dy=dy,
                                    dh_extra=dh_extra, weight=w, save_mean=mean, save_rstd=rstd,
                                    dx=dx, dresidual=dres, dbias_in=dbias_in, dweight=dw, dbias=db)
    sizes = (lambda: lib.row_norm_fused_forward_workspace_size(desc, fusion),
             lambda: lib.row_norm_fused_backward_workspace_size(desc, fusion))
    args = (x, res, bias_in, w, b, scale)
    grad_idx = tuple(i for i in range(5) if args[i] is not None)
    names = ("dx", "dresidual", "dbias_in", "dweight", "dbias")
    grad_names = tuple(names[i] for i in grad_idx)
    grads = dict(zip(names, (dx, dres, dbias_in, dw, db)))
    forward_names = (("y",) + (("h",) if residual else ()) + (("y_amax",) if fp8 else ()))
    outputs = dict(zip(("y", "h", "y_amax"), (y, h, amax)))
    work = finish(backward, forward, backward_call, sizes, fused_fn(case.op, case.fusion), args,
                  grad_idx, True, (dy, dh_extra) if residual and backward else dy,
                  {k: v for k, v in grads.items() if v is not None},
                  {k: v for k, v in outputs.items() if v is not None}, None)
    work.forward_names, work.grad_names = forward_names, grad_names
    # The amax of y is fp32, but y comes from bf16 data (h rounded to bf16 by normkit, not by the
    # fp32 reference): the tolerance of x's dtype.
    work.tol = {"y_amax": CHECK_TOL[case.dtype]}
    return work


def fused_channel_work(case, lib, device, dtype, backward):
    """A fused_channels case: normkit's fused call with every buffer of its fusion and phase (the
    buffers normkit_bench passes, bench/channel_fused_ops.hpp), and fused_channel_fn."""
    n, c, side = case.dim("N"), case.dim("C"), case.dim("HW")
    bn, add = case.op == "bn", case.fused("add")
    relu, silu = case.fused("relu"), case.fused("silu")
    groups = dict(case.shape).get("G")
    inference = case.phase == "infer_fwd"
    fmt = torch.channels_last if case.layout == "NHWC" else torch.contiguous_format
    x = randn((n, c, side, side), dtype, device, 0.5, 2.0, fmt)
    z = randn((n, c, side, side), dtype, device, memory_format=fmt) if add else None
    dy = randn((n, c, side, side), dtype, device, memory_format=fmt) if backward else None
    w = torch.rand(c, device=device) + 0.5
    b = torch.randn(c, device=device) * 0.1
    desc = lib.act_torch(x, nk.NHWC if case.layout == "NHWC" else nk.NCHW)
    fusion = lib.channel_fusion(norm=nk.BATCH_NORM if bn else nk.GROUP_NORM, groups=groups or 0,
                                residual=add, activation=nk.ACT_RELU if relu else nk.ACT_SILU)
    train = lib.params(nk.TRAINING, EPS, 0.1)
    params = lib.params(nk.INFERENCE, EPS) if inference else train
    stat_count = c if bn else n * groups
    save_mean = torch.empty(stat_count, device=device)
    save_invstd = torch.empty(stat_count, device=device)
    # The mask: 4 * ceil(N*C*S / 32) bytes from the size query, as int32 words.
    mask = (torch.empty(lib.relu_mask_size(desc) // 4, dtype=torch.int32, device=device)
            if relu and not inference else None)
    y, dx = torch.empty_like(x), torch.empty_like(x)  # empty_like keeps the memory format
    dz = torch.empty_like(x) if backward and add else None
    dw, db = torch.empty(c, device=device), torch.empty(c, device=device)
    if bn:
        rm_nk, rv_nk = torch.randn(c, device=device) * 0.1, torch.rand(c, device=device) + 0.5
        running = (rm_nk.clone(), rv_nk.clone())  # torch's own running statistics, same values
    else:
        rm_nk = rv_nk = None
        running = (None, None)
    saved = (None, None) if inference else (save_mean, save_invstd)

    def forward():
        lib.channel_norm_fused_forward(desc, fusion, params, x=x, z=z, weight=w, bias=b,
                                       running_mean=rm_nk, running_var=rv_nk, y=y,
                                       save_mean=saved[0], save_invstd=saved[1], relu_mask=mask)

    def backward_call():
        lib.channel_norm_fused_backward(desc, fusion, train, x=x, dy=dy, relu_mask=mask,
                                        z=z if silu and add else None, weight=w,
                                        bias=b if silu else None, save_mean=save_mean,
                                        save_invstd=save_invstd, dx=dx, dz=dz, dweight=dw,
                                        dbias=db)
    sizes = (lambda: lib.channel_norm_fused_forward_workspace_size(desc, fusion, params),
             lambda: lib.channel_norm_fused_backward_workspace_size(desc, fusion, train))
    args = (x, z, w, b, *running, groups)
    grad_idx = tuple(i for i in range(4) if args[i] is not None)  # x, z, weight, bias
    grad_names = tuple(("dx", "dz", "dweight", "dbias")[i] for i in grad_idx)
    grads = {name: t for name, t in zip(("dx", "dz", "dweight", "dbias"), (dx, dz, dw, db))
             if t is not None}
    fallback = ((x, z, w.to(dtype), b.to(dtype), *running, groups)
                if dtype != torch.float32 else None)
    work = finish(backward, forward, backward_call, sizes,
                  fused_channel_fn(case.fusion, not inference), args, grad_idx, not inference, dy,
                  grads, {"y": y}, fallback)
    work.grad_names = grad_names
    if backward and relu:
        # ReLU's derivative flips where u is within rounding of 0, and the reference's fp32 u and
        # normkit's need not round alike there: each flip moves one dx, dz by |a * dy| or |dy|
        # and dweight, dbias by |dy|. The check's composition therefore takes the ReLU decisions
        # from normkit's mask (bit i of the words in x's memory order), so that it compares the
        # arithmetic; the timed composition keeps F.relu.
        bits = (mask.view(-1, 1) >> torch.arange(32, device=device, dtype=torch.int32)) & 1
        bits = bits.view(-1)[:x.numel()].float()
        keep = (bits.view(n, side, side, c).permute(0, 3, 1, 2) if case.layout == "NHWC"
                else bits.view(n, c, side, side))
        composition = fused_channel_fn(case.fusion, True)

        def with_normkit_relu(*a):
            u = composition.__wrapped_u__(*a)
            return u * keep

        work.reference_fn = with_normkit_relu
    return work


def finish(backward, forward, backward_call, sizes, fn, args, grad_idx, grad_mode, dy, grads,
           outputs, fallback):
    """The Work of a forward or a backward case; a backward case runs normkit's forward once here
    for the statistics its backward reads."""
    if not backward:
        return Work(forward, sizes[0](), fn, args, grad_idx, grad_mode, False, None, outputs,
                    fallback)
    forward()
    return Work(backward_call, sizes[1](), fn, args, grad_idx, grad_mode, True, dy, grads,
                fallback)


def torch_args(work, args):
    """The same storage as `args`, as fresh leaves; x, weight, bias require grad in training."""
    return tuple(a.detach().requires_grad_(work.grad_mode and i in work.grad_idx)
                 if isinstance(a, torch.Tensor) else a for i, a in enumerate(args))


def reference(work):
    """The phase's outputs computed by PyTorch in fp32 on the same values (running statistics
    copied, so the reference leaves them as they were)."""
    args = torch_args(work, tuple(a.detach().float().clone() if isinstance(a, torch.Tensor) else a
                                  for a in work.args))
    with torch.set_grad_enabled(work.grad_mode):
        y = (work.reference_fn or work.fn)(*args)
        if not work.backward:
            y = y if isinstance(y, tuple) else (y,)
            return {name: t.detach() for name, t in zip(work.forward_names, y)}
        dy = (tuple(t.float() for t in work.dy) if isinstance(work.dy, tuple)
              else work.dy.float())
        grads = torch.autograd.grad(y, [args[i] for i in work.grad_idx], dy)
    return dict(zip(work.grad_names, grads))


def check(work):
    ref = reference(work)
    worst, verdict = 0.0, "ok"
    for name, got in work.outputs.items():
        want = ref[name].float()  # fp8 tensors take part in no arithmetic
        err = ((got.float() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
        tol = CHECK_TOL[{torch.bfloat16: "bf16", torch.float16: "f16",
                         torch.float8_e4m3fn: "fp8"}.get(got.dtype, "f32")]
        tol = (work.tol or {}).get(name, tol)
        if not err <= tol:  # NaN fails too
            verdict = f"MISMATCH {name}: {err:.2e} > {tol:.0e}"
        worst = max(worst, err)
    return verdict if verdict != "ok" else f"ok ({worst:.1e})"


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------

class CudaTimer:
    """Median GPU time of a call: L2 flushed and the stream held by a spin before each iteration,
    CUDA events around the call (see the module docstring)."""

    def __init__(self, iters, warmup, flush_mib, spin_us):
        self.iters, self.warmup = iters, warmup
        self.flush = torch.empty(flush_mib << 20, dtype=torch.uint8, device="cuda")
        self.spin_cycles = int(spin_us * self._cycles_per_us()) if spin_us > 0 else 0

    @staticmethod
    def _cycles_per_us():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(100_000)
        start.record()
        torch.cuda._sleep(2_000_000)
        end.record()
        end.synchronize()
        return 2_000_000 / (start.elapsed_time(end) * 1e3)

    def __call__(self, call):
        """(median ms, iterations in which the GPU reached the start event before the call had
        been enqueued)."""
        for _ in range(self.warmup):
            call()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(self.iters)]
        exposed = 0
        for start, end in events:
            self.flush.zero_()
            if self.spin_cycles:
                torch.cuda._sleep(self.spin_cycles)
            start.record()
            call()
            exposed += start.query()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in events), exposed


class CpuTimer:
    """SMOKE TEST ONLY: wall-clock median of a CPU call, no cache flush."""

    def __init__(self, iters, warmup):
        self.iters, self.warmup = iters, warmup

    def __call__(self, call):
        for _ in range(self.warmup):
            call()
        times = []
        for _ in range(self.iters):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), 0


def aligned_workspace(nbytes, device):
    """A buffer of `nbytes` at a 256-byte aligned address (CPU tensors are only 64-byte
    aligned): (owner tensor, address)."""
    owner = torch.empty(nbytes + 256, dtype=torch.uint8, device=device)
    return owner, owner.data_ptr() + (-owner.data_ptr()) % 256


def layout_note(impl, out, case):
    notes = []
    expected = torch.float8_e4m3fn if case.fused("fp8") else DTYPES[case.dtype]
    if out.dtype != expected:
        notes.append(f"{impl} returns {out.dtype}")
    if case.layout == "NHWC" and not out.is_contiguous(memory_format=torch.channels_last):
        notes.append(f"{impl} returns a contiguous (NCHW) tensor for channels-last input")
    return notes


def time_torch(impl, fn, work, case, timer, notes):
    """Times `fn` (eager or compiled) on the case's tensors: (ms, seconds of the first call)."""
    args = work.args
    for attempt in ("fp32 parameters", "fallback"):
        targs = torch_args(work, args)
        try:
            with torch.set_grad_enabled(work.grad_mode):
                first = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:  # e.g. a slow-path notice
                    warnings.simplefilter("always")
                    y = fn(*targs)
                    if work.backward:
                        wrt = [targs[i] for i in work.grad_idx]
                        out = torch.autograd.grad(y, wrt, work.dy, retain_graph=True)[0]
                    else:
                        out = y[0] if isinstance(y, tuple) else y  # y first (fused_fn)
                    sync()
                first = time.perf_counter() - first
                for message in dict.fromkeys(str(w.message).split("(Triggered")[0].strip()
                                             for w in caught):
                    notes.append(f"{impl} warns: {message[:200]}")
                notes += layout_note(impl, out, case)
                del out
                if work.backward:
                    ms, exposed = timer(lambda: torch.autograd.grad(y, wrt, work.dy,
                                                                    retain_graph=True))
                else:
                    ms, exposed = timer(lambda: fn(*targs))
            if exposed:
                notes.append(f"{impl}: host visible in {exposed}/{timer.iters} iterations")
            return ms, first
        except Exception as e:  # noqa: BLE001  (torch raises many types; the message is kept)
            message = first_line(e)
            if attempt == "fallback" or work.fallback_args is None or is_oom(e):
                notes.append(f"{impl}: n/a ({message})")
                return None, None
            notes.append(f"{impl}: failed with fp32 weight/bias and {case.dtype} x ({message}); "
                         f"timed with {case.dtype} weight and bias")
            args = work.fallback_args


def first_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def is_oom(e):
    return "out of memory" in str(e).lower()


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class Runner:
    def __init__(self, args):
        self.args = args
        self.device_label = (torch.cuda.get_device_name() if DEVICE == "cuda"
                             else "cpu (smoke test, not a performance figure)")
        if DEVICE == "cuda":
            self.lib = nk.Normkit(nk.CUDA, torch.cuda.current_device(), args.lib)
            self.stream = torch.cuda.Stream()
            torch.cuda.set_stream(self.stream)
            self.lib.set_stream(torch.cuda.current_stream().cuda_stream)
            self.timer = CudaTimer(args.iters, args.warmup, args.flush_mib, args.spin_us)
        else:
            self.lib = nk.Normkit(nk.CPU, 0, args.lib)
            self.timer = CpuTimer(args.iters, args.warmup)
        self.compiled = {}
        self.compiled_key = None

    def compiled_fn(self, case, fn):
        """fn compiled for this case's shape: kept across the phases of one shape, dropped (and
        dynamo's caches reset) when the shape changes."""
        if case.shape_key != self.compiled_key:
            self.compiled.clear()
            torch._dynamo.reset()
            self.compiled_key = case.shape_key
        if fn not in self.compiled:
            self.compiled[fn] = torch.compile(fn, fullgraph=True, dynamic=False)
        return self.compiled[fn]

    def run(self, case, eager=True, compiled=True, result=None):
        """Times one case: the check, normkit and torch eager when `eager`, torch.compile when
        `compiled`. `result` is an earlier run's dict of this case to complete (the compile pass
        of --compile-limit reuses the eager pass's normkit time)."""
        if result is None:
            result = {"normkit_ms": None, "eager_ms": None, "compile_ms": None, "eager": None,
                      "compile": None, "compile_s": None, "check": None, "notes": [],
                      "device": self.device_label}
        notes = result["notes"]
        work = workspace = None
        try:
            work = make_work(case, self.lib, DEVICE)
            workspace = aligned_workspace(work.workspace, DEVICE)  # (owner, address)
            self.lib.set_workspace(workspace[1], work.workspace)
            if eager:
                work.normkit()
                sync()
                result["check"] = check(work)
                result["normkit_ms"], exposed = self.timer(work.normkit)
                if exposed:
                    notes.append(f"normkit: host visible in {exposed}/{self.timer.iters} "
                                 "iterations")
                result["eager_ms"], _ = time_torch("eager", work.fn, work, case, self.timer,
                                                   notes)
            if compiled:
                result["compile_ms"], result["compile_s"] = time_torch(
                    "compile", self.compiled_fn(case, work.fn), work, case, self.timer, notes)
        except nk.NormkitError as e:
            notes.append(f"normkit: {e}")
        except Exception as e:  # noqa: BLE001  (an OOM or a bug in one case: report, go on)
            notes.append(f"error: {first_line(e)}")
        finally:
            self.lib.set_workspace(None, 0)
            del work, workspace
            gc.collect()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
        for impl in ("eager", "compile"):
            if result["normkit_ms"] and result[f"{impl}_ms"]:
                result[impl] = result[f"{impl}_ms"] / result["normkit_ms"]
        return result


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------

def fmt_us(ms):
    return f"{ms * 1e3:10.1f}" if ms is not None else f"{'n/a':>10}"


def fmt_ratio(r):
    return f"{r:8.2f}" if r is not None else f"{'n/a':>8}"


def print_header(width):
    print(f"{'case':<{width}} {'normkit us':>10} {'eager us':>10} {'compile us':>10} "
          f"{'eager x':>8} {'compile x':>9}  check")


def print_row(name, r, width):
    print(f"{name:<{width}} {fmt_us(r['normkit_ms'])} {fmt_us(r['eager_ms'])} "
          f"{fmt_us(r['compile_ms'])} {fmt_ratio(r['eager'])} {fmt_ratio(r['compile']):>9}  "
          f"{r['check'] or '-'}")
    for note in r["notes"]:
        print(f"    note: {note}")
    sys.stdout.flush()


def compile_plan(cases, args):
    """The names of the cases to time through torch.compile in a pass after the eager one, or
    None to compile each case as it comes (neither --compile-limit nor --compile-filter given).
    The plan takes the cases matching --compile-filter, then those of their first
    --compile-limit shapes (a shape: a case name without its phase)."""
    if args.no_compile:
        return set()
    if args.compile_limit is None and args.compile_filter is None:
        return None
    eligible = [c for c in cases
                if args.compile_filter is None or re.search(args.compile_filter, c.name)]
    shapes = list(dict.fromkeys(c.shape_key for c in eligible))
    if args.compile_limit is not None:
        shapes = shapes[:args.compile_limit]
    return {c.name for c in eligible if c.shape_key in shapes}


def print_summary(results):
    """Geometric means of the ratios per set, op and phase, and the worst case of each."""
    groups = {}
    for name, r in results.items():
        parts = name.split("/")
        key = "/".join([parts[0]] + ([parts[1]] if parts[0] in MULTI_OP_SETS else []) +
                       ["*", parts[-1]])
        groups.setdefault(key, []).append((name, r))
    print("\nsummary: geometric mean of torch_time / normkit_time (> 1: normkit faster), "
          "cases below 1, worst case; over the cases whose check is ok")
    for key, rows in groups.items():
        line = f"  {key:<28} {len(rows):4d} cases"
        for impl in ("eager", "compile"):
            ratios = [(r[impl], name) for name, r in rows
                      if r[impl] and (r["check"] or "").startswith("ok")]
            if not ratios:
                line += f"  {impl}: n/a"
                continue
            geo = math.exp(sum(math.log(v) for v, _ in ratios) / len(ratios))
            slower = sum(v < 1 for v, _ in ratios)
            worst = min(ratios)
            line += f"  {impl}: {geo:5.2f} ({slower} below 1; min {worst[0]:.2f} {worst[1]})"
        print(line)
    bad = [n for n, r in results.items() if not (r["check"] or "").startswith("ok")]
    print(f"  checks: {len(results) - len(bad)} ok, {len(bad)} not ok"
          + (f" (first: {bad[0]})" if bad else ""))


def write_json(path, results):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)


def describe_environment(args):
    commit = ""
    bundle_commit = os.path.join(os.path.dirname(os.path.abspath(args.lib or nk._library_path())),
                                 "COMMIT")
    if os.path.exists(bundle_commit):
        commit = open(bundle_commit).readline().strip()
    else:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                                    text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}")
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
              f"{props.multi_processor_count} SMs")
    print(f"normkit library: {args.lib or nk._library_path()}, commit {commit or 'unknown'}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for the method and the names.")
    p.add_argument("--sets", default=",".join(SUITE_SETS),
                   help=f"comma-separated, of {', '.join(SETS)} (default: all but check)")
    p.add_argument("--filter", default=None, help="regular expression searched in case names")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations (default 50; 5 on cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls (default 10; 1 on cpu)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-limit", type=int, default=None, metavar="N",
                   help="torch.compile on the first N shapes only, after the eager pass over "
                        "every case")
    p.add_argument("--compile-filter", default=None, metavar="REGEX",
                   help="torch.compile only on the cases matching REGEX, after the eager pass")
    p.add_argument("--out", default=None, help="JSON file, rewritten after every case")
    p.add_argument("--list", action="store_true", help="print the selected case names and exit")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: smoke test of this script only, never a performance figure")
    p.add_argument("--lib", default=None, help="libnormkit.so (default: $NORMKIT_LIB, build/)")
    p.add_argument("--spin-us", type=float, default=500.0,
                   help="GPU spin before each timed call, hides host launch time (default 500)")
    p.add_argument("--flush-mib", type=int, default=256, help="L2 flush buffer (default 256 MiB)")
    p.add_argument("--max-mib", type=float, default=None,
                   help="skip cases whose x is larger (default: none; 4 on cpu)")
    args = p.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        p.error(f"unknown set {', '.join(unknown)}; the sets are {', '.join(SETS)}")
    args.sets = sets
    cpu = args.device == "cpu"
    args.iters = args.iters if args.iters is not None else (5 if cpu else 50)
    args.warmup = args.warmup if args.warmup is not None else (1 if cpu else 10)
    args.max_mib = args.max_mib if args.max_mib is not None else (4 if cpu else None)
    if args.iters < 1 or args.warmup < 0:
        p.error("--iters must be >= 1 and --warmup >= 0")
    if args.compile_limit is not None and args.compile_limit < 0:
        p.error("--compile-limit must be >= 0")
    if not cpu and args.flush_mib < 256:
        p.error("--flush-mib below 256 would leave inputs in the L2 of an H100/H200")
    return args


def main(argv=None):
    args = parse_args(argv)
    cases = [c for c in all_cases(args.sets)
             if args.filter is None or re.search(args.filter, c.name)]
    plan = compile_plan(cases, args)
    if args.list:
        for c in cases:
            print(c.name + ("  [compile]" if plan and c.name in plan else ""))
        return 0

    global torch, F, DEVICE, DTYPES
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("torch_compare: PyTorch is not installed for this python; nothing to compare.")
        return 1
    DEVICE = args.device
    DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print(f"torch_compare: no CUDA device (torch {torch.__version__}: "
              "torch.cuda.is_available() is False); nothing timed. The figures need a GPU; "
              "--device cpu runs the smoke test of this script.")
        return 0
    if DEVICE == "cpu":
        print("SMOKE TEST (--device cpu): normkit's CPU reference backend against torch on the "
              "CPU. These times are NOT performance figures; report only --device cuda runs.")
    if args.max_mib is not None:
        skipped = [c for c in cases if c.x_bytes() > args.max_mib * 2**20]
        cases = [c for c in cases if c.x_bytes() <= args.max_mib * 2**20]
        if skipped:
            print(f"skipping {len(skipped)} cases whose x exceeds {args.max_mib} MiB (--max-mib)")
    torch.manual_seed(0)
    describe_environment(args)
    try:
        runner = Runner(args)
    except nk.NormkitError as e:
        print(f"torch_compare: cannot create a normkit context: {e}")
        return 1
    print(f"{len(cases)} cases, {args.iters} timed iterations each after {args.warmup} warm-up"
          + ("" if DEVICE == "cpu" else f", L2 flush {args.flush_mib} MiB, spin {args.spin_us} us")
          + ("; torch.compile off" if args.no_compile else "")
          + (f"; torch.compile on {len(plan)} of them after the eager pass" if plan else ""))
    print("ratios are torch_time / normkit_time: > 1 means normkit is faster\n")
    width = max([len(c.name) for c in cases] + [10])
    print_header(width)
    results, started = {}, time.time()
    try:
        for case in cases:
            results[case.name] = runner.run(case, compiled=plan is None)
            print_row(case.name, results[case.name], width)
            if args.out:
                write_json(args.out, results)
        if plan:
            print(f"\ntorch.compile pass: {len(plan)} cases")
            print_header(width)
            for case in cases:
                if case.name in plan:
                    runner.run(case, eager=False, result=results[case.name])
                    print_row(case.name, results[case.name], width)
                    if args.out:
                        write_json(args.out, results)
    except KeyboardInterrupt:
        print("interrupted: results so far are kept")
    if results:
        print_summary(results)
    print(f"\n{len(results)} cases in {time.time() - started:.0f} s"
          + (f"; JSON in {args.out}" if args.out else ""))
    if DEVICE == "cpu":
        print("SMOKE TEST: the times above are not performance figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

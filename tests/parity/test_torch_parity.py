"""PyTorch parity: the same calls through normkit and torch.nn.functional on fresh random data.

Batch, instance and group norm (NCHW and NHWC), layer and RMS norm (fp32 or same-dtype weights):
outputs, every gradient, running statistics and num_batches_tracked over several training steps
(momentum, cumulative average, Keras' biased convention), then inference and its backward. The
fused forms: layer/RMS norm with a residual, a zero-centred weight or an fp8 output; batch,
instance and group norm followed by ReLU or SiLU with an optional residual.
PyTorch runs in fp32 on the values the normkit dtype holds; fp16/bf16 outputs are compared after
normkit's single rounding. Run with pytest; NORMKIT_LIB names the library (default build/), and
NORMKIT_PARITY_DEVICE=cuda runs normkit's CUDA backend on CUDA tensors.
"""

import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import normkit as nk  # noqa: E402

DEVICE = os.environ.get("NORMKIT_PARITY_DEVICE", "cpu")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
       torch.float16: dict(atol=3e-3, rtol=3e-3)}
GRAD_TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=5e-2, rtol=5e-2),
            torch.float16: dict(atol=1e-2, rtol=1e-2)}


@pytest.fixture(scope="module")
def lib():
    return nk.Normkit(nk.CUDA if DEVICE == "cuda" else nk.CPU)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def randn(*shape, mean=0.0, std=1.0, dtype=torch.float32):
    return (torch.randn(*shape, device=DEVICE) * std + mean).to(dtype)


def to_layout(t, layout):
    return t if layout == nk.NCHW else t.permute(0, *range(2, t.dim()), 1).contiguous()


def from_layout(t, layout):
    return t if layout == nk.NCHW else t.permute(0, t.dim() - 1, *range(1, t.dim() - 1)).contiguous()


def empty_like_layout(x, layout):
    return torch.full_like(to_layout(x, layout), float("nan"))


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = torch.seed()  # fresh every test; printed on failure by pytest's captured output
    print(f"seed {seed}")


@pytest.mark.parametrize("mode", ["momentum", "cumulative", "keras"])
@pytest.mark.parametrize("layout", [nk.NCHW, nk.NHWC])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_training_steps_then_inference(lib, dtype, layout, mode):
    n, c, h, w = 4, 3, 5, 6
    weight = randn(c, mean=1.0, std=0.5)
    bias = randn(c)
    rm_t, rv_t = torch.zeros(c, device=DEVICE), torch.ones(c, device=DEVICE)
    rm_n, rv_n = rm_t.clone(), rv_t.clone()
    tracked_t, tracked_n = 0, torch.zeros(1, dtype=torch.int64, device=DEVICE)
    params = lib.params(nk.TRAINING, 1e-5, 0.1 if mode != "keras" else 1 - 0.99,
                        nk.CUMULATIVE if mode == "cumulative" else nk.EXPONENTIAL,
                        nk.BIASED if mode == "keras" else nk.UNBIASED)
    for step in range(4):
        x = randn(n, c, h, w, mean=step - 1.5, std=2.0, dtype=dtype)
        dy = randn(n, c, h, w, dtype=dtype)
        # PyTorch: the module's order (counter first, then momentum = 1 / counter when cumulative).
        tracked_t += 1
        factor = 1.0 / tracked_t if mode == "cumulative" else params.momentum
        xt = x.float().requires_grad_()
        wt, bt = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        if mode == "keras":  # biased running variance: emulate with a fresh batch variance
            yt = F.batch_norm(xt, None, None, wt, bt, training=True, eps=1e-5)
            with torch.no_grad():
                mean = x.float().mean(dim=(0, 2, 3))
                var = x.float().var(dim=(0, 2, 3), unbiased=False)
                rm_t.mul_(1 - factor).add_(factor * mean)
                rv_t.mul_(1 - factor).add_(factor * var)
        else:
            yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=True, momentum=factor, eps=1e-5)
        yt.backward(dy.float())

        desc = lib.act(to_layout(x, layout), layout)
        xn, dyn = to_layout(x, layout), to_layout(dy, layout)
        y, dx = empty_like_layout(x, layout), empty_like_layout(x, layout)
        save_mean, save_invstd = torch.empty(c, device=DEVICE), torch.empty(c, device=DEVICE)
        dw, db = torch.empty(c, device=DEVICE), torch.empty(c, device=DEVICE)
        lib.batch_norm_forward(desc, params, xn, weight, bias, rm_n, rv_n, tracked_n, y, save_mean,
                               save_invstd)
        lib.batch_norm_backward(desc, params, xn, dyn, weight, None, None, save_mean, save_invstd,
                                dx, dw, db)
        sync()
        torch.testing.assert_close(from_layout(y, layout).float(), yt.detach().to(dtype).float(), **TOL[dtype])
        torch.testing.assert_close(rm_n, rm_t, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rv_n, rv_t, atol=1e-5, rtol=1e-5)
        assert tracked_n.item() == tracked_t
        torch.testing.assert_close(from_layout(dx, layout).float(), xt.grad.to(dtype).float(), **GRAD_TOL[dtype])
        torch.testing.assert_close(dw, wt.grad, **GRAD_TOL[torch.float32 if dtype == torch.float32 else dtype])
        torch.testing.assert_close(db, bt.grad, **GRAD_TOL[torch.float32 if dtype == torch.float32 else dtype])

    # Inference with the running statistics, and its backward (frozen statistics).
    x = randn(2, c, h, w, mean=0.5, std=2.0, dtype=dtype)
    dy = randn(2, c, h, w, dtype=dtype)
    xt = x.float().requires_grad_()
    wt, bt = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=False, eps=1e-5)
    yt.backward(dy.float())
    infer = lib.params(nk.INFERENCE, 1e-5)
    desc = lib.act(to_layout(x, layout), layout)
    xn, dyn = to_layout(x, layout), to_layout(dy, layout)
    y, dx = empty_like_layout(x, layout), empty_like_layout(x, layout)
    dw, db = torch.empty(c, device=DEVICE), torch.empty(c, device=DEVICE)
    lib.batch_norm_forward(desc, infer, xn, weight, bias, rm_n, rv_n, tracked_n, y, None, None)
    lib.batch_norm_backward(desc, infer, xn, dyn, weight, rm_n, rv_n, None, None, dx, dw, db)
    sync()
    assert tracked_n.item() == tracked_t, "inference does not count batches"
    torch.testing.assert_close(from_layout(y, layout).float(), yt.detach().to(dtype).float(), **TOL[dtype])
    torch.testing.assert_close(from_layout(dx, layout).float(), xt.grad.to(dtype).float(), **GRAD_TOL[dtype])
    torch.testing.assert_close(dw, wt.grad, **GRAD_TOL[torch.float32 if dtype == torch.float32 else dtype])
    torch.testing.assert_close(db, bt.grad, **GRAD_TOL[torch.float32 if dtype == torch.float32 else dtype])


@pytest.mark.parametrize("layout", [nk.NCHW, nk.NHWC])
@pytest.mark.parametrize("dtype", DTYPES)
def test_instance_norm(lib, dtype, layout):
    n, c, h, w = 3, 4, 5, 7
    weight, bias = randn(c, mean=1.0, std=0.5), randn(c)
    rm_t, rv_t = torch.zeros(c, device=DEVICE), torch.ones(c, device=DEVICE)
    rm_n, rv_n = rm_t.clone(), rv_t.clone()
    params = lib.params(nk.TRAINING, 1e-5, 0.1)
    for step in range(3):
        x = randn(n, c, h, w, mean=step, std=2.0, dtype=dtype)
        dy = randn(n, c, h, w, dtype=dtype)
        xt = x.float().requires_grad_()
        wt, bt = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        yt = F.instance_norm(xt, rm_t, rv_t, wt, bt, use_input_stats=True, momentum=0.1, eps=1e-5)
        yt.backward(dy.float())
        desc = lib.act(to_layout(x, layout), layout)
        xn, dyn = to_layout(x, layout), to_layout(dy, layout)
        y, dx = empty_like_layout(x, layout), empty_like_layout(x, layout)
        sm, si = torch.empty(n * c, device=DEVICE), torch.empty(n * c, device=DEVICE)
        dw, db = torch.empty(c, device=DEVICE), torch.empty(c, device=DEVICE)
        lib.instance_norm_forward(desc, params, xn, weight, bias, rm_n, rv_n, None, y, sm, si)
        lib.instance_norm_backward(desc, params, xn, dyn, weight, None, None, sm, si, dx, dw, db)
        sync()
        torch.testing.assert_close(from_layout(y, layout).float(), yt.detach().to(dtype).float(), **TOL[dtype])
        torch.testing.assert_close(rm_n, rm_t, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rv_n, rv_t, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(from_layout(dx, layout).float(), xt.grad.to(dtype).float(), **GRAD_TOL[dtype])
        torch.testing.assert_close(dw, wt.grad, **GRAD_TOL[dtype])
        torch.testing.assert_close(db, bt.grad, **GRAD_TOL[dtype])
    x = randn(2, c, h, w, dtype=dtype)
    yt = F.instance_norm(x.float(), rm_t, rv_t, weight, bias, use_input_stats=False, eps=1e-5)
    desc = lib.act(to_layout(x, layout), layout)
    y = empty_like_layout(x, layout)
    lib.instance_norm_forward(desc, lib.params(nk.INFERENCE), to_layout(x, layout), weight, bias,
                              rm_n, rv_n, None, y, None, None)
    sync()
    torch.testing.assert_close(from_layout(y, layout).float(), yt.to(dtype).float(), **TOL[dtype])


@pytest.mark.parametrize("layout", [nk.NCHW, nk.NHWC])
@pytest.mark.parametrize("dtype", DTYPES)
def test_group_norm(lib, dtype, layout):
    n, c, h, w, groups = 2, 12, 6, 5, 4
    weight, bias = randn(c, mean=1.0, std=0.5), randn(c)
    x = randn(n, c, h, w, mean=3.0, std=2.0, dtype=dtype)
    dy = randn(n, c, h, w, dtype=dtype)
    xt = x.float().requires_grad_()
    wt, bt = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    yt = F.group_norm(xt, groups, wt, bt, eps=1e-5)
    yt.backward(dy.float())
    desc = lib.act(to_layout(x, layout), layout)
    xn, dyn = to_layout(x, layout), to_layout(dy, layout)
    y, dx = empty_like_layout(x, layout), empty_like_layout(x, layout)
    sm, si = torch.empty(n * groups, device=DEVICE), torch.empty(n * groups, device=DEVICE)
    dw, db = torch.empty(c, device=DEVICE), torch.empty(c, device=DEVICE)
    lib.group_norm_forward(desc, groups, 1e-5, xn, weight, bias, y, sm, si)
    lib.group_norm_backward(desc, groups, xn, dyn, weight, sm, si, dx, dw, db)
    sync()
    torch.testing.assert_close(from_layout(y, layout).float(), yt.detach().to(dtype).float(), **TOL[dtype])
    torch.testing.assert_close(from_layout(dx, layout).float(), xt.grad.to(dtype).float(), **GRAD_TOL[dtype])
    torch.testing.assert_close(dw, wt.grad, **GRAD_TOL[dtype])
    torch.testing.assert_close(db, bt.grad, **GRAD_TOL[dtype])


@pytest.mark.parametrize("same_dtype_weights", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rms", [False, True])
def test_row_norms(lib, rms, dtype, same_dtype_weights):
    rows, cols = 9, 768
    wdtype = dtype if same_dtype_weights else torch.float32
    weight = randn(cols, mean=1.0, std=0.5, dtype=wdtype)
    bias = randn(cols, dtype=wdtype)
    x = randn(rows, cols, mean=2.0, std=3.0, dtype=dtype)
    dy = randn(rows, cols, dtype=dtype)
    xt = x.float().requires_grad_()
    wt = weight.float().requires_grad_()
    bt = bias.float().requires_grad_()
    yt = F.rms_norm(xt, (cols,), wt, eps=1e-6) if rms else F.layer_norm(xt, (cols,), wt, bt, eps=1e-5)
    yt.backward(dy.float())
    desc = lib.rows(x, weight)
    y, dx = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    dw, db = torch.full_like(weight, float("nan")), torch.full_like(bias, float("nan"))
    mean, rstd = torch.empty(rows, device=DEVICE), torch.empty(rows, device=DEVICE)
    if rms:
        lib.rms_norm_forward(desc, 1e-6, x, weight, y, rstd)
        lib.rms_norm_backward(desc, x, dy, weight, rstd, dx, dw)
    else:
        lib.layer_norm_forward(desc, 1e-5, x, weight, bias, y, mean, rstd)
        lib.layer_norm_backward(desc, x, dy, weight, mean, rstd, dx, dw, db)
    sync()
    torch.testing.assert_close(y.float(), yt.detach().to(dtype).float(), **TOL[dtype])
    torch.testing.assert_close(dx.float(), xt.grad.to(dtype).float(), **GRAD_TOL[dtype])
    # Column sums over 9 rows, stored in the weight dtype.
    torch.testing.assert_close(dw.float(), wt.grad.to(wdtype).float(), **GRAD_TOL[wdtype])
    if not rms:
        torch.testing.assert_close(db.float(), bt.grad.to(wdtype).float(), **GRAD_TOL[wdtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rms", [False, True])
def test_fused_residual_zero_centered_row_norms(lib, rms, dtype):
    """h = x + residual + bias_in, gamma = 1 + weight, against the unfused torch composition, and
    the backward with an extra gradient of h (pre-norm blocks): dx = dresidual = dh,
    dbias_in = column sums of dh."""
    rows, cols = 9, 768
    x, r = randn(rows, cols, dtype=dtype), randn(rows, cols, mean=1.0, std=2.0, dtype=dtype)
    bias_in, weight = randn(cols, std=0.5, dtype=dtype), randn(cols, std=0.3, dtype=dtype)
    bias = randn(cols, dtype=dtype)
    dy, dh_extra = randn(rows, cols, dtype=dtype), randn(rows, cols, dtype=dtype)
    # torch: h added in fp32 and rounded once to the dtype (as normkit stores it), then the norm.
    h_ref = (x.float() + r.float() + bias_in.float()).to(dtype)
    ht = h_ref.float().requires_grad_()
    wt = weight.float().requires_grad_()
    bt = bias.float().requires_grad_()
    gamma = wt + 1
    yt = F.rms_norm(ht, (cols,), gamma, eps=1e-6) if rms else F.layer_norm(ht, (cols,), gamma, bt,
                                                                          eps=1e-5)
    ((yt * dy.float()).sum() + (ht * dh_extra.float()).sum()).backward()

    desc, fusion = lib.rows(x, weight), lib.fusion(rms=rms, residual=True, zero_centered=True)
    eps = 1e-6 if rms else 1e-5
    nan = lambda t: torch.full_like(t, float("nan"))  # noqa: E731
    h, y = nan(x), nan(x)
    mean, rstd = torch.empty(rows, device=DEVICE), torch.empty(rows, device=DEVICE)
    lib.row_norm_fused_forward(desc, fusion, eps, x=x, residual=r, bias_in=bias_in, weight=weight,
                               bias=None if rms else bias, h=h, y=y,
                               save_mean=None if rms else mean, save_rstd=rstd)
    dx, dres, dbin, dw, db = nan(x), nan(x), nan(bias_in), nan(weight), nan(bias)
    lib.row_norm_fused_backward(desc, fusion, x=h, dy=dy, dh_extra=dh_extra, weight=weight,
                                save_mean=None if rms else mean, save_rstd=rstd, dx=dx,
                                dresidual=dres, dbias_in=dbin, dweight=dw,
                                dbias=None if rms else db)
    sync()
    torch.testing.assert_close(h.float(), h_ref.float(), **TOL[dtype])
    torch.testing.assert_close(y.float(), yt.detach().to(dtype).float(), **TOL[dtype])
    torch.testing.assert_close(dx.float(), ht.grad.to(dtype).float(), **GRAD_TOL[dtype])
    assert torch.equal(dx.float(), dres.float())
    torch.testing.assert_close(dbin.float(), ht.grad.sum(0).to(dtype).float(), **GRAD_TOL[dtype])
    torch.testing.assert_close(dw.float(), wt.grad.to(dtype).float(), **GRAD_TOL[dtype])
    if not rms:
        torch.testing.assert_close(db.float(), bt.grad.to(dtype).float(), **GRAD_TOL[dtype])


@pytest.mark.parametrize("fp8", ["e4m3", "e5m2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rms", [False, True])
def test_fused_fp8_output(lib, rms, dtype, fp8):
    """fp8(y * scale) against torch's cast of the clamped scaled y (round to nearest even), and the
    amax of the unscaled y."""
    rows, cols = 9, 768
    torch_fp8 = torch.float8_e4m3fn if fp8 == "e4m3" else torch.float8_e5m2
    largest = torch.finfo(torch_fp8).max
    scale = 150.0 if fp8 == "e4m3" else 20000.0  # some values saturate
    x = randn(rows, cols, mean=1.0, std=2.0, dtype=dtype)
    weight, bias = randn(cols, mean=1.0, std=0.5, dtype=dtype), randn(cols, dtype=dtype)
    eps = 1e-6 if rms else 1e-5
    yt = (F.rms_norm(x.float(), (cols,), weight.float(), eps=eps) if rms else
          F.layer_norm(x.float(), (cols,), weight.float(), bias.float(), eps=eps))
    y_ref = (yt * scale).clamp(-largest, largest).to(torch_fp8)
    desc = lib.rows(x, weight)
    fusion = lib.fusion(rms=rms, output=nk.OUTPUT_FP8_E4M3 if fp8 == "e4m3" else nk.OUTPUT_FP8_E5M2)
    y = torch.full((rows, cols), 0xFF, dtype=torch.uint8, device=DEVICE)
    scale_t = torch.tensor([scale], device=DEVICE)
    amax = torch.full((1,), float("nan"), device=DEVICE)
    lib.row_norm_fused_forward(desc, fusion, eps, x=x, weight=weight, bias=None if rms else bias,
                               y=y, y_scale=scale_t, y_amax=amax)
    sync()
    # torch's y is fp32, normkit's fp64 (CPU) or fp32 (CUDA): within one fp8 step of each other.
    got = y.view(torch_fp8).float()
    step = 2.0 ** -3 if fp8 == "e4m3" else 2.0 ** -2
    tiny = 2.0 ** -9 if fp8 == "e4m3" else 2.0 ** -16
    torch.testing.assert_close(got, y_ref.float(), atol=tiny, rtol=step)
    exact = (got == y_ref.float()).float().mean().item()
    assert exact > 0.98, f"only {exact:.3f} of the fp8 values equal torch's"
    torch.testing.assert_close(amax[0], yt.abs().max(), **TOL[torch.float32])


# ---- fused channel norms with an activation (nk_channel_norm_fused_*) ----------------------------
FUSED_FORMS = [(norm, phase) for norm in (nk.BATCH_NORM, nk.INSTANCE_NORM, nk.GROUP_NORM)
               for phase in (nk.TRAINING, nk.INFERENCE)
               if not (norm == nk.GROUP_NORM and phase == nk.INFERENCE)]


def torch_norm(norm, phase, xt, wt, bt, rm, rv, groups):
    """The plain norm in torch: batch norm, instance norm (running buffers updated in training),
    group norm."""
    training = phase == nk.TRAINING
    if norm == nk.BATCH_NORM:
        return F.batch_norm(xt, rm, rv, wt, bt, training=training, momentum=0.1, eps=1e-5)
    if norm == nk.INSTANCE_NORM:
        return F.instance_norm(xt, rm, rv, wt, bt, use_input_stats=training, momentum=0.1,
                               eps=1e-5)
    return F.group_norm(xt, groups, wt, bt, eps=1e-5)


@pytest.mark.parametrize("layout", [nk.NCHW, nk.NHWC], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "add"])
@pytest.mark.parametrize("act", [nk.ACT_RELU, nk.ACT_SILU], ids=["relu", "silu"])
@pytest.mark.parametrize("norm,phase", FUSED_FORMS,
                         ids=[f"{['batch', 'instance', 'group'][nm]}_{['training', 'inference'][ph]}"
                              for nm, ph in FUSED_FORMS])
def test_fused_channel_norm_activation(lib, norm, phase, act, residual, dtype, layout):
    """y = act(norm(x) [+ z]) and its backward against torch's composition (F.batch_norm,
    F.instance_norm or F.group_norm, + z, then F.relu or F.silu) and autograd: y, dx, dz, dweight,
    dbias, and over two training steps the running statistics and num_batches_tracked. ReLU's
    backward from the saved mask and from y."""
    n, c, h, w, groups = 3, 6, 5, 7, 3
    training = phase == nk.TRAINING
    weight, bias = randn(c, mean=1.0, std=0.5), randn(c, std=0.5)
    rm_t = randn(c, mean=1.5, std=0.3) if not training else torch.zeros(c, device=DEVICE)
    rv_t = (torch.rand(c, device=DEVICE) * 4 + 2) if not training else torch.ones(c, device=DEVICE)
    has_running = norm != nk.GROUP_NORM
    rm_n, rv_n = rm_t.clone(), rv_t.clone()
    tracked_n = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    fusion = lib.channel_fusion(norm, groups if norm == nk.GROUP_NORM else 0, residual, act)
    params = lib.params(phase, 1e-5, 0.1)
    torch_act = F.relu if act == nk.ACT_RELU else F.silu
    stats = {nk.BATCH_NORM: c, nk.INSTANCE_NORM: n * c, nk.GROUP_NORM: n * groups}[norm]
    for step in range(2 if training else 1):
        x = randn(n, c, h, w, mean=1.5 + step, std=2.0, dtype=dtype)
        z = randn(n, c, h, w, mean=-0.3, dtype=dtype) if residual else None
        dy = randn(n, c, h, w, dtype=dtype)
        xt = x.float().requires_grad_()
        zt = z.float().requires_grad_() if residual else None
        wt, bt = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        u = torch_norm(norm, phase, xt, wt, bt, rm_t if has_running else None,
                       rv_t if has_running else None, groups)
        yt = torch_act(u + zt if residual else u)
        yt.backward(dy.float())

        desc = lib.act(to_layout(x, layout), layout)
        xn, dyn = to_layout(x, layout), to_layout(dy, layout)
        zn = to_layout(z, layout) if residual else None
        y = empty_like_layout(x, layout)
        save_mean = torch.full((stats,), float("nan"), device=DEVICE) if training else None
        save_invstd = torch.full((stats,), float("nan"), device=DEVICE) if training else None
        mask = None
        if act == nk.ACT_RELU:
            mask = torch.full((lib.relu_mask_size(desc) // 4,), -1, dtype=torch.int32, device=DEVICE)
        lib.channel_norm_fused_forward(
            desc, fusion, params, x=xn, z=zn, weight=weight, bias=bias,
            running_mean=rm_n if has_running else None, running_var=rv_n if has_running else None,
            num_batches_tracked=tracked_n if norm == nk.BATCH_NORM else None, y=y,
            save_mean=save_mean, save_invstd=save_invstd, relu_mask=mask)
        sync()
        torch.testing.assert_close(from_layout(y, layout).float(), yt.detach().to(dtype).float(),
                                   **TOL[dtype])
        if has_running:
            torch.testing.assert_close(rm_n, rm_t, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(rv_n, rv_t, atol=1e-5, rtol=1e-5)
        if norm == nk.BATCH_NORM:
            assert tracked_n.item() == (step + 1 if training else 0)

        sources = ["mask", "y"] if act == nk.ACT_RELU else [None]
        for source in sources:
            dx = empty_like_layout(x, layout)
            dz = empty_like_layout(x, layout) if residual else None
            dw = torch.full((c,), float("nan"), device=DEVICE)
            db = torch.full((c,), float("nan"), device=DEVICE)
            lib.channel_norm_fused_backward(
                desc, fusion, params, x=xn, dy=dyn, y=y if source == "y" else None,
                relu_mask=mask if source == "mask" else None,
                z=zn if act == nk.ACT_SILU and residual else None, weight=weight,
                bias=bias if act == nk.ACT_SILU else None,
                running_mean=None if training else rm_n, running_var=None if training else rv_n,
                save_mean=save_mean, save_invstd=save_invstd, dx=dx, dz=dz, dweight=dw, dbias=db)
            sync()
            torch.testing.assert_close(from_layout(dx, layout).float(),
                                       xt.grad.to(dtype).float(), **GRAD_TOL[dtype])
            if residual:
                torch.testing.assert_close(from_layout(dz, layout).float(),
                                           zt.grad.to(dtype).float(), **GRAD_TOL[dtype])
            torch.testing.assert_close(dw, wt.grad, **GRAD_TOL[dtype])
            torch.testing.assert_close(db, bt.grad, **GRAD_TOL[dtype])


def test_errors_reach_python(lib):
    x = torch.ones(1, 3, device=DEVICE)
    with pytest.raises(nk.NormkitError, match="NK_ERROR_BAD_SHAPE.*more than one value"):
        lib.batch_norm_forward(lib.act(x, nk.NCHW), lib.params(), x, None, None, None, None, None,
                               torch.empty_like(x), None, None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_tensors_with_workspace_and_stream(dtype):
    """What bench/torch_compare.py relies on: a channels-last torch tensor described in place
    (act_torch), torch's current stream, and a workspace of the queried size set on the context,
    too small a one refused."""
    ctx = nk.Normkit(nk.CUDA if DEVICE == "cuda" else nk.CPU)
    if DEVICE == "cuda":
        ctx.set_stream(torch.cuda.current_stream().cuda_stream)
    n, c, h, w = 3, 8, 5, 4
    x = randn(n, c, h, w, mean=1.0, std=2.0, dtype=dtype).to(memory_format=torch.channels_last)
    dy = randn(n, c, h, w, dtype=dtype).to(memory_format=torch.channels_last)
    weight, bias = randn(c, mean=1.0, std=0.5), randn(c)
    with pytest.raises(ValueError, match="not NCHW"):
        ctx.act_torch(x, nk.NCHW)
    desc = ctx.act_torch(x, nk.NHWC)
    params = ctx.params()
    forward_size = ctx.batch_norm_forward_workspace_size(desc, params)
    size = max(forward_size, ctx.batch_norm_backward_workspace_size(desc, params))
    owner = torch.empty(size + 256, dtype=torch.uint8, device=DEVICE)
    address = owner.data_ptr() + (-owner.data_ptr()) % 256
    y, dx = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    sm, si = torch.empty(c, device=DEVICE), torch.empty(c, device=DEVICE)
    dw, db = torch.empty(c, device=DEVICE), torch.empty(c, device=DEVICE)
    if forward_size > 0:
        ctx.set_workspace(address, forward_size - 1)
        with pytest.raises(nk.NormkitError, match="NK_ERROR_WORKSPACE"):
            ctx.batch_norm_forward(desc, params, x, weight, bias, None, None, None, y, sm, si)
    ctx.set_workspace(address, size)
    ctx.batch_norm_forward(desc, params, x, weight, bias, None, None, None, y, sm, si)
    ctx.batch_norm_backward(desc, params, x, dy, weight, None, None, sm, si, dx, dw, db)
    sync()
    ctx.set_workspace(None, 0)
    xt = x.float().requires_grad_()
    wt, bt = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    yt = F.batch_norm(xt, None, None, wt, bt, training=True, eps=1e-5)
    yt.backward(dy.float())
    torch.testing.assert_close(y.float(), yt.detach().to(dtype).float(), **TOL[dtype])
    torch.testing.assert_close(dx.float(), xt.grad.to(dtype).float(), **GRAD_TOL[dtype])
    torch.testing.assert_close(dw, wt.grad, **GRAD_TOL[dtype])
    torch.testing.assert_close(db, bt.grad, **GRAD_TOL[dtype])

"""A small ctypes binding over normkit's C API for the PyTorch comparisons and parity tests.

Tensors are torch tensors: their data pointers go straight to the C API, so CPU tensors work with a
CPU context and CUDA tensors with a CUDA context (on the context's stream; call
torch.cuda.synchronize() before reading results on the host). Every failing call raises
NormkitError with normkit's status name and message.

Streams and scratch memory: set_stream(torch.cuda.current_stream().cuda_stream) enqueues the ops on
torch's stream; set_workspace(ptr, bytes) gives the context a caller-owned buffer (256-byte
aligned, at least the largest *_workspace_size of the ops it will run), after which no op
allocates. The caller keeps that buffer alive until set_workspace(None, 0) or the context's end.
"""

import ctypes
import os

F32, F16, BF16 = 0, 1, 2
NCHW, NHWC = 0, 1
TRAINING, INFERENCE = 0, 1
EXPONENTIAL, CUMULATIVE = 0, 1
UNBIASED, BIASED = 0, 1
CPU, CUDA = 0, 1
LAYER_NORM, RMS_NORM = 0, 1
OUTPUT_DTYPE, OUTPUT_FP8_E4M3, OUTPUT_FP8_E5M2 = 0, 1, 2
BATCH_NORM, INSTANCE_NORM, GROUP_NORM = 0, 1, 2
ACT_IDENTITY, ACT_RELU, ACT_SILU = 0, 1, 2


class ActDesc(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int64), ("c", ctypes.c_int64), ("spatial", ctypes.c_int64),
                ("layout", ctypes.c_int), ("dtype", ctypes.c_int)]


class RowDesc(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("dtype", ctypes.c_int),
                ("weight_dtype", ctypes.c_int)]


class RowFusion(ctypes.Structure):
    _fields_ = [("norm", ctypes.c_int), ("residual", ctypes.c_int), ("weight_form", ctypes.c_int),
                ("output", ctypes.c_int)]


class RowFusedForwardBuffers(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "x", "residual", "bias_in", "weight", "bias", "h", "y", "y_scale", "y_amax", "save_mean",
        "save_rstd")]


class RowFusedBackwardBuffers(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "x", "dy", "dh_extra", "weight", "save_mean", "save_rstd", "dx", "dresidual", "dbias_in",
        "dweight", "dbias")]


class ChannelFusion(ctypes.Structure):
    _fields_ = [("norm", ctypes.c_int), ("groups", ctypes.c_int64), ("residual", ctypes.c_int),
                ("activation", ctypes.c_int)]


class ChannelFusedForwardBuffers(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "x", "z", "weight", "bias", "running_mean", "running_var", "num_batches_tracked", "y",
        "save_mean", "save_invstd", "relu_mask")]


class ChannelFusedBackwardBuffers(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "x", "dy", "y", "relu_mask", "z", "weight", "bias", "running_mean", "running_var",
        "save_mean", "save_invstd", "dx", "dz", "dweight", "dbias")]


class NormParams(ctypes.Structure):
    _fields_ = [("phase", ctypes.c_int), ("eps", ctypes.c_double), ("momentum", ctypes.c_double),
                ("momentum_mode", ctypes.c_int), ("running_var", ctypes.c_int)]


class NormkitError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status


def _library_path():
    if "NORMKIT_LIB" in os.environ:
        return os.environ["NORMKIT_LIB"]
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "build", "libnormkit.so")


def _dtype_of(tensor):
    import torch
    return {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16}[tensor.dtype]


def _ptr(tensor):
    return None if tensor is None else ctypes.c_void_p(tensor.data_ptr())


class Normkit:
    """A normkit context on `backend` (CPU or CUDA) with the ops as methods."""

    def __init__(self, backend=CPU, device=0, library=None):
        self.lib = ctypes.CDLL(library or _library_path())
        self.lib.nk_last_error.restype = ctypes.c_char_p
        self.lib.nk_status_name.restype = ctypes.c_char_p
        self.ctx = ctypes.c_void_p()
        self._check(self.lib.nk_context_create(backend, device, ctypes.byref(self.ctx)))

    def __del__(self):
        if getattr(self, "ctx", None):
            self.lib.nk_context_destroy(self.ctx)

    def _check(self, status):
        if status != 0:
            raise NormkitError(self.lib.nk_status_name(status).decode(),
                               self.lib.nk_last_error().decode())

    def set_stream(self, cuda_stream):
        """Enqueue the ops on `cuda_stream`, a cudaStream_t as an int (a torch.cuda.Stream's
        cuda_stream; 0 or None: the legacy default stream). Unused on a CPU context."""
        self._check(self.lib.nk_context_set_stream(self.ctx, ctypes.c_void_p(cuda_stream or None)))

    def set_workspace(self, ptr, nbytes):
        """Scratch memory for every op of this context: `ptr` an int address aligned to 256 bytes
        (device memory on CUDA), `nbytes` its size; None and 0 remove it."""
        self._check(self.lib.nk_context_set_workspace(self.ctx, ctypes.c_void_p(ptr or None),
                                                      ctypes.c_size_t(nbytes)))

    def _size(self, function, *args):
        nbytes = ctypes.c_size_t()
        self._check(function(self.ctx, *args, ctypes.byref(nbytes)))
        return nbytes.value

    @staticmethod
    def params(phase=TRAINING, eps=1e-5, momentum=0.1, mode=EXPONENTIAL, running_var=UNBIASED):
        return NormParams(phase, eps, momentum, mode, running_var)

    @staticmethod
    def act(x, layout):
        """Descriptor of an N x C x spatial... tensor stored contiguous in `layout` (for NHWC, x is
        the channels-last tensor, shape N x spatial... x C)."""
        n = x.shape[0]
        c = x.shape[1] if layout == NCHW else x.shape[-1]
        return ActDesc(n, c, x.numel() // (n * c), layout, _dtype_of(x))

    @staticmethod
    def act_torch(x, layout):
        """Descriptor of a tensor in PyTorch's N x C x spatial... shape whose memory is `layout`:
        NCHW for a contiguous tensor, NHWC for a channels-last one (x.to(memory_format=
        torch.channels_last)). Raises ValueError when the strides are not that layout."""
        n, c = x.shape[0], x.shape[1]
        order = [0, 1, *range(2, x.dim())] if layout == NCHW else [0, *range(2, x.dim()), 1]
        stride = 1
        for d in reversed(order):  # dims of size 1 may have any stride, as in PyTorch
            if x.shape[d] != 1 and x.stride(d) != stride:
                raise ValueError(f"strides {tuple(x.stride())} of shape {tuple(x.shape)} are not "
                                 f"{'NCHW' if layout == NCHW else 'NHWC'}")
            stride *= x.shape[d]
        return ActDesc(n, c, x.numel() // (n * c), layout, _dtype_of(x))

    def batch_norm_forward_workspace_size(self, desc, params):
        return self._size(self.lib.nk_batch_norm_forward_workspace_size, ctypes.byref(desc),
                          ctypes.byref(params))

    def batch_norm_backward_workspace_size(self, desc, params):
        return self._size(self.lib.nk_batch_norm_backward_workspace_size, ctypes.byref(desc),
                          ctypes.byref(params))

    def batch_norm_forward(self, desc, params, x, weight, bias, running_mean, running_var,
                           num_batches_tracked, y, save_mean, save_invstd):
        self._check(self.lib.nk_batch_norm_forward(
            self.ctx, ctypes.byref(desc), ctypes.byref(params), _ptr(x), _ptr(weight), _ptr(bias),
            _ptr(running_mean), _ptr(running_var), _ptr(num_batches_tracked), _ptr(y),
            _ptr(save_mean), _ptr(save_invstd)))

    def batch_norm_backward(self, desc, params, x, dy, weight, running_mean, running_var,
                            save_mean, save_invstd, dx, dweight, dbias):
        self._check(self.lib.nk_batch_norm_backward(
            self.ctx, ctypes.byref(desc), ctypes.byref(params), _ptr(x), _ptr(dy), _ptr(weight),
            _ptr(running_mean), _ptr(running_var), _ptr(save_mean), _ptr(save_invstd), _ptr(dx),
            _ptr(dweight), _ptr(dbias)))

    def instance_norm_forward_workspace_size(self, desc, params):
        return self._size(self.lib.nk_instance_norm_forward_workspace_size, ctypes.byref(desc),
                          ctypes.byref(params))

    def instance_norm_backward_workspace_size(self, desc, params):
        return self._size(self.lib.nk_instance_norm_backward_workspace_size, ctypes.byref(desc),
                          ctypes.byref(params))

    def instance_norm_forward(self, desc, params, x, weight, bias, running_mean, running_var,
                              num_batches_tracked, y, save_mean, save_invstd):
        self._check(self.lib.nk_instance_norm_forward(
            self.ctx, ctypes.byref(desc), ctypes.byref(params), _ptr(x), _ptr(weight), _ptr(bias),
            _ptr(running_mean), _ptr(running_var), _ptr(num_batches_tracked), _ptr(y),
            _ptr(save_mean), _ptr(save_invstd)))

    def instance_norm_backward(self, desc, params, x, dy, weight, running_mean, running_var,
                               save_mean, save_invstd, dx, dweight, dbias):
        self._check(self.lib.nk_instance_norm_backward(
            self.ctx, ctypes.byref(desc), ctypes.byref(params), _ptr(x), _ptr(dy), _ptr(weight),
            _ptr(running_mean), _ptr(running_var), _ptr(save_mean), _ptr(save_invstd), _ptr(dx),
            _ptr(dweight), _ptr(dbias)))

    def group_norm_forward_workspace_size(self, desc, groups):
        return self._size(self.lib.nk_group_norm_forward_workspace_size, ctypes.byref(desc),
                          ctypes.c_int64(groups))

    def group_norm_backward_workspace_size(self, desc, groups):
        return self._size(self.lib.nk_group_norm_backward_workspace_size, ctypes.byref(desc),
                          ctypes.c_int64(groups))

    def group_norm_forward(self, desc, groups, eps, x, weight, bias, y, save_mean, save_invstd):
        self._check(self.lib.nk_group_norm_forward(
            self.ctx, ctypes.byref(desc), ctypes.c_int64(groups), ctypes.c_double(eps), _ptr(x),
            _ptr(weight), _ptr(bias), _ptr(y), _ptr(save_mean), _ptr(save_invstd)))

    def group_norm_backward(self, desc, groups, x, dy, weight, save_mean, save_invstd, dx, dweight,
                            dbias):
        self._check(self.lib.nk_group_norm_backward(
            self.ctx, ctypes.byref(desc), ctypes.c_int64(groups), _ptr(x), _ptr(dy), _ptr(weight),
            _ptr(save_mean), _ptr(save_invstd), _ptr(dx), _ptr(dweight), _ptr(dbias)))

    @staticmethod
    def rows(x, weight=None):
        cols = x.shape[-1]
        w = _dtype_of(weight) if weight is not None else F32
        return RowDesc(x.numel() // cols, cols, _dtype_of(x), w)

    def layer_norm_forward_workspace_size(self, desc):
        return self._size(self.lib.nk_layer_norm_forward_workspace_size, ctypes.byref(desc))

    def layer_norm_backward_workspace_size(self, desc):
        return self._size(self.lib.nk_layer_norm_backward_workspace_size, ctypes.byref(desc))

    def layer_norm_forward(self, desc, eps, x, weight, bias, y, save_mean, save_rstd):
        self._check(self.lib.nk_layer_norm_forward(
            self.ctx, ctypes.byref(desc), ctypes.c_double(eps), _ptr(x), _ptr(weight), _ptr(bias),
            _ptr(y), _ptr(save_mean), _ptr(save_rstd)))

    def layer_norm_backward(self, desc, x, dy, weight, save_mean, save_rstd, dx, dweight, dbias):
        self._check(self.lib.nk_layer_norm_backward(
            self.ctx, ctypes.byref(desc), _ptr(x), _ptr(dy), _ptr(weight), _ptr(save_mean),
            _ptr(save_rstd), _ptr(dx), _ptr(dweight), _ptr(dbias)))

    def rms_norm_forward_workspace_size(self, desc):
        return self._size(self.lib.nk_rms_norm_forward_workspace_size, ctypes.byref(desc))

    def rms_norm_backward_workspace_size(self, desc):
        return self._size(self.lib.nk_rms_norm_backward_workspace_size, ctypes.byref(desc))

    def rms_norm_forward(self, desc, eps, x, weight, y, save_rstd):
        self._check(self.lib.nk_rms_norm_forward(
            self.ctx, ctypes.byref(desc), ctypes.c_double(eps), _ptr(x), _ptr(weight), _ptr(y),
            _ptr(save_rstd)))

    def rms_norm_backward(self, desc, x, dy, weight, save_rstd, dx, dweight):
        self._check(self.lib.nk_rms_norm_backward(
            self.ctx, ctypes.byref(desc), _ptr(x), _ptr(dy), _ptr(weight), _ptr(save_rstd),
            _ptr(dx), _ptr(dweight)))

    @staticmethod
    def fusion(rms=False, residual=False, zero_centered=False, output=OUTPUT_DTYPE):
        return RowFusion(RMS_NORM if rms else LAYER_NORM, int(residual), int(zero_centered), output)

    @staticmethod
    def _buffers(struct, tensors):
        return struct(**{k: (None if t is None else t.data_ptr()) for k, t in tensors.items()})

    def row_norm_fused_forward_workspace_size(self, desc, fusion):
        return self._size(self.lib.nk_row_norm_fused_forward_workspace_size, ctypes.byref(desc),
                          ctypes.byref(fusion))

    def row_norm_fused_backward_workspace_size(self, desc, fusion):
        return self._size(self.lib.nk_row_norm_fused_backward_workspace_size, ctypes.byref(desc),
                          ctypes.byref(fusion))

    def row_norm_fused_forward(self, desc, fusion, eps, **tensors):
        """Buffers by name as in nk_row_fused_forward_buffers (missing ones are NULL)."""
        b = self._buffers(RowFusedForwardBuffers, tensors)
        self._check(self.lib.nk_row_norm_fused_forward(
            self.ctx, ctypes.byref(desc), ctypes.byref(fusion), ctypes.c_double(eps),
            ctypes.byref(b)))

    def row_norm_fused_backward(self, desc, fusion, **tensors):
        """Buffers by name as in nk_row_fused_backward_buffers (missing ones are NULL)."""
        b = self._buffers(RowFusedBackwardBuffers, tensors)
        self._check(self.lib.nk_row_norm_fused_backward(
            self.ctx, ctypes.byref(desc), ctypes.byref(fusion), ctypes.byref(b)))

    @staticmethod
    def channel_fusion(norm=BATCH_NORM, groups=0, residual=False, activation=ACT_IDENTITY):
        return ChannelFusion(norm, groups, int(residual), activation)

    def relu_mask_size(self, desc):
        """Bytes of the ReLU bit mask of desc: 4 * ceil(N*C*S / 32) (an int32 tensor of bytes / 4
        elements holds it)."""
        n = ctypes.c_size_t(0)
        self._check(self.lib.nk_channel_norm_relu_mask_size(ctypes.byref(desc), ctypes.byref(n)))
        return n.value

    def channel_norm_fused_forward_workspace_size(self, desc, fusion, params):
        return self._size(self.lib.nk_channel_norm_fused_forward_workspace_size,
                          ctypes.byref(desc), ctypes.byref(fusion), ctypes.byref(params))

    def channel_norm_fused_backward_workspace_size(self, desc, fusion, params):
        return self._size(self.lib.nk_channel_norm_fused_backward_workspace_size,
                          ctypes.byref(desc), ctypes.byref(fusion), ctypes.byref(params))

    def channel_norm_fused_forward(self, desc, fusion, params, **tensors):
        """Buffers by name as in nk_channel_fused_forward_buffers (missing ones are NULL)."""
        b = self._buffers(ChannelFusedForwardBuffers, tensors)
        self._check(self.lib.nk_channel_norm_fused_forward(
            self.ctx, ctypes.byref(desc), ctypes.byref(fusion), ctypes.byref(params),
            ctypes.byref(b)))

    def channel_norm_fused_backward(self, desc, fusion, params, **tensors):
        """Buffers by name as in nk_channel_fused_backward_buffers (missing ones are NULL)."""
        b = self._buffers(ChannelFusedBackwardBuffers, tensors)
        self._check(self.lib.nk_channel_norm_fused_backward(
            self.ctx, ctypes.byref(desc), ctypes.byref(fusion), ctypes.byref(params),
            ctypes.byref(b)))

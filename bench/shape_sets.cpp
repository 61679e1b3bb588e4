// The shape tables. Each set is one function; the loops nest from the coarsest choice (batch or
// row length) to the finest (phase), so that related cases are listed next to each other.
#include "shape_sets.hpp"

#include <initializer_list>

namespace nkb {
namespace {

constexpr std::initializer_list<nk_layout> kLayouts = {NK_NCHW, NK_NHWC};

// A channel-norm shape: what channel_case reads of a shape entry.
struct ChannelShape {
  Op op;
  int64_t n, c, hw, groups;
  nk_layout layout;
  nk_dtype dtype;
};

// A channel-norm case of `set` from a shape entry (op, n, c, hw, groups, layout, dtype).
template <class Shape>
Case channel_case(const char* set, const Shape& ch, Phase phase) {
  Case c;
  c.set = set;
  c.op = ch.op;
  c.phase = phase;
  c.dtype = ch.dtype;
  c.n = ch.n;
  c.c = ch.c;
  c.h = c.w = ch.hw;
  c.groups = ch.groups;
  c.layout = ch.layout;
  return c;
}

// Batch norm of one shape in `set`: both layouts, each of `dtypes`, train and inference forward
// and the training backward. Training passes running statistics (PyTorch's BatchNorm2d default),
// weight and bias.
void add_batch_norm(std::vector<Case>& out, const char* set, int64_t n, int64_t channels,
                    int64_t hw, std::initializer_list<nk_dtype> dtypes) {
  for (nk_layout layout : kLayouts) {
    for (nk_dtype dtype : dtypes) {
      const ChannelShape shape = {Op::batch_norm, n, channels, hw, 0, layout, dtype};
      for (Phase phase : {Phase::forward_training, Phase::forward_inference, Phase::backward}) {
        out.push_back(channel_case(set, shape, phase));
      }
    }
  }
}

// ResNet-50's batch-norm layers (C, H = W), at a large and a small batch; bf16, fp16, fp32.
void add_bn_resnet50(std::vector<Case>& out) {
  struct Layer {
    int64_t c, hw;
  };
  constexpr Layer kLayers[] = {{64, 112}, {64, 56},   {256, 56}, {128, 28}, {512, 28},
                               {256, 14}, {1024, 14}, {512, 7},  {2048, 7}};
  for (int64_t n : {256, 32}) {
    for (const Layer& layer : kLayers) {
      add_batch_norm(out, "bn_resnet50", n, layer.c, layer.hw, {NK_BF16, NK_F16, NK_F32});
    }
  }
}

// Batch norm of N x C features (S = 1: PyTorch's BatchNorm1d after a linear layer, as an
// [N, C, 1, 1] tensor, whose two layouts are the same memory): N x C of 65536 x 512, 16384 x 2048
// and 4096 x 8192 (x of 64 MiB in bf16, above an H100's 50 MiB and an H200's 60 MiB of L2) and
// 4096 x 1024 (8 MiB, within either); bf16, fp32.
void add_bn_features(std::vector<Case>& out) {
  struct Features {
    int64_t n, c;
  };
  constexpr Features kFeatures[] = {{65536, 512}, {16384, 2048}, {4096, 8192}, {4096, 1024}};
  for (const Features& f : kFeatures) {
    add_batch_norm(out, "bn_features", f.n, f.c, 1, {NK_BF16, NK_F32});
  }
}

// MobileNetV2's narrow batch-norm layers (C <= 32: in NHWC a position holds at most 64 bytes of
// channels in bf16, 128 in fp32, so a block's lanes spread over positions), C x H²: 32x112² (the
// stem), 16x112², 24x56², 32x28², at N = 128; bf16, fp32.
void add_bn_mobilenet_v2(std::vector<Case>& out) {
  struct Layer {
    int64_t c, hw;
  };
  constexpr Layer kLayers[] = {{32, 112}, {16, 112}, {24, 56}, {32, 28}};
  for (const Layer& layer : kLayers) {
    add_batch_norm(out, "bn_mobilenet_v2", 128, layer.c, layer.hw, {NK_BF16, NK_F32});
  }
}

// Layer and RMS norm over rows of D values, with enough rows that x holds at least 256 MiB (far
// beyond L2). bf16 x with fp32 or bf16 parameters, and fp32 x (whose parameters are fp32 either
// way). The forward saves mean and rstd, as a training step does.
void add_rows(std::vector<Case>& out) {
  constexpr int64_t kMinBytes = int64_t{256} << 20;
  struct Types {
    nk_dtype x, weight;
  };
  constexpr Types kTypes[] = {{NK_BF16, NK_F32}, {NK_BF16, NK_BF16}, {NK_F32, NK_F32}};
  for (Op op : {Op::layer_norm, Op::rms_norm}) {
    for (int64_t d : {128, 256, 512, 768, 1024, 2048, 4096, 8192, 12288, 16384, 32768, 65536}) {
      for (const Types& types : kTypes) {
        const int64_t row_bytes = d * static_cast<int64_t>(dtype_size(types.x));
        for (Phase phase : {Phase::forward_training, Phase::backward}) {
          Case c;
          c.set = "rows";
          c.op = op;
          c.phase = phase;
          c.dtype = types.x;
          c.weight_dtype = types.weight;
          c.cols = d;
          c.rows = (kMinBytes + row_bytes - 1) / row_bytes;
          out.push_back(c);
        }
      }
    }
  }
}

// Few long rows: layer and RMS norm of 8 and 64 rows (fewer than the SMs of an H100) of 32768 and
// 262144 columns (x of 0.5 to 32 MiB), every row dtype pair of `rows`; forward (whose rows are
// split across blocks) and backward. Timed as `rows` (L2 flushed before each call).
void add_long_rows(std::vector<Case>& out) {
  struct Types {
    nk_dtype x, weight;
  };
  constexpr Types kTypes[] = {{NK_BF16, NK_F32}, {NK_BF16, NK_BF16}, {NK_F32, NK_F32}};
  for (Op op : {Op::layer_norm, Op::rms_norm}) {
    for (const Types& types : kTypes) {
      for (int64_t d : {32768, 262144}) {
        for (int64_t m : {8, 64}) {
          for (Phase phase : {Phase::forward_training, Phase::backward}) {
            Case c;
            c.set = "long_rows";
            c.op = op;
            c.phase = phase;
            c.dtype = types.x;
            c.weight_dtype = types.weight;
            c.rows = m;
            c.cols = d;
            out.push_back(c);
          }
        }
      }
    }
  }
}

// The fused forms transformer blocks call (issue 13), bf16 activations and parameters, at a few
// transformer shapes (tokens x hidden: 16384 x 1024, 8192 x 4096, 4096 x 8192; x of 32 or 64
// MiB). Forward: the pre-norm residual add (+ bias_in, h written), the zero-centred weight, the
// fp8 E4M3 output (y_scale, y_amax), and all three at once as a Hopper fp8 block calls it.
// Backward: the residual add (dh_extra in, dx, dresidual and dbias_in out), the zero-centred
// weight, and both; an fp8 output does not change the backward, so it has no backward case.
void add_fused_rows(std::vector<Case>& out) {
  struct Shape {
    int64_t rows, cols;
  };
  constexpr Shape kShapes[] = {{16384, 1024}, {8192, 4096}, {4096, 8192}};
  // residual, zero_centered, fp8_output
  constexpr RowFusion kForward[] = {
      {true, false, false}, {false, true, false}, {false, false, true}, {true, true, true}};
  constexpr RowFusion kBackward[] = {
      {true, false, false}, {false, true, false}, {true, true, false}};
  for (Op op : {Op::layer_norm, Op::rms_norm}) {
    for (const Shape& shape : kShapes) {
      const auto add = [&](Phase phase, const RowFusion& fusion) {
        Case c;
        c.set = "fused_rows";
        c.op = op;
        c.phase = phase;
        c.dtype = c.weight_dtype = NK_BF16;
        c.rows = shape.rows;
        c.cols = shape.cols;
        c.fusion = fusion;
        out.push_back(c);
      };
      for (const RowFusion& fusion : kForward) add(Phase::forward_training, fusion);
      for (const RowFusion& fusion : kBackward) add(Phase::backward, fusion);
    }
  }
}

// The fused channel norms convolutional networks call (issue 14), a handful of shapes per form.
// Batch norm as in a ResNet: stage 1 (N256 C64 56 x 56), stage 2 (N256 C128 28 x 28) and stage 4
// at a small batch (N32 C512 7 x 7); bn_relu in every phase (training forward writing the ReLU
// mask, inference forward, backward from the mask) and bn_add_relu in training (the residual
// block's last norm: z read forward, dz written backward). NHWC fp16 (cuDNN's fused modes) at
// every shape; NHWC bf16, NCHW bf16 and NCHW fp32 once each. Training passes running statistics
// (updated), weight and bias, as PyTorch's BatchNorm2d does.
// Group norm + SiLU as in a diffusion U-Net: 32 groups at 64 x 64 (N2 C320), 32 x 32 (N8 C640)
// and 16 x 16 (N8 C1280), NHWC bf16, and one NCHW fp16; forward and backward (SiLU's derivative
// recomputed from x and the statistics).
// 38 cases: 6 batch-norm shapes x 5 (bn_relu train_fwd, infer_fwd, bwd; bn_add_relu train_fwd,
// bwd) and 4 group-norm shapes x 2 (gn_silu fwd, bwd). Bytes counted: bench_case.hpp.
void add_fused_channels(std::vector<Case>& out) {
  struct Channel {
    Op op;
    int64_t n, c, hw, groups;
    nk_layout layout;
    nk_dtype dtype;
  };
  constexpr Channel kChannels[] = {
      {Op::batch_norm, 256, 64, 56, 0, NK_NHWC, NK_F16},
      {Op::batch_norm, 256, 128, 28, 0, NK_NHWC, NK_F16},
      {Op::batch_norm, 32, 512, 7, 0, NK_NHWC, NK_F16},
      {Op::batch_norm, 256, 64, 56, 0, NK_NHWC, NK_BF16},
      {Op::batch_norm, 256, 128, 28, 0, NK_NCHW, NK_BF16},
      {Op::batch_norm, 32, 512, 7, 0, NK_NCHW, NK_F32},
      {Op::group_norm, 2, 320, 64, 32, NK_NHWC, NK_BF16},
      {Op::group_norm, 8, 640, 32, 32, NK_NHWC, NK_BF16},
      {Op::group_norm, 8, 1280, 16, 32, NK_NHWC, NK_BF16},
      {Op::group_norm, 8, 640, 32, 32, NK_NCHW, NK_F16},
  };
  // residual, activation
  constexpr ChannelFusion kReLU = {false, NK_ACTIVATION_RELU};
  constexpr ChannelFusion kAddReLU = {true, NK_ACTIVATION_RELU};
  constexpr ChannelFusion kSiLU = {false, NK_ACTIVATION_SILU};
  for (const Channel& ch : kChannels) {
    const auto add = [&](const ChannelFusion& fusion, Phase phase) {
      Case c = channel_case("fused_channels", ch, phase);
      c.channel_fusion = fusion;
      out.push_back(c);
    };
    if (ch.op == Op::group_norm) {
      for (Phase phase : {Phase::forward_training, Phase::backward}) add(kSiLU, phase);
      continue;
    }
    for (Phase phase : {Phase::forward_training, Phase::forward_inference, Phase::backward}) {
      add(kReLU, phase);
    }
    for (Phase phase : {Phase::forward_training, Phase::backward}) add(kAddReLU, phase);
  }
}

// Instance norm on image-sized activations (style transfer, GAN generators): N = 8. Training
// without running statistics (PyTorch's InstanceNorm2d default); inference with them.
void add_instance_norm(std::vector<Case>& out) {
  for (int64_t channels : {64, 128, 256}) {
    for (int64_t hw : {256, 128, 75}) {  // 75 x 75: odd rows, read between their unaligned ends
      for (nk_layout layout : kLayouts) {
        for (nk_dtype dtype : {NK_BF16, NK_F32}) {
          const ChannelShape shape = {Op::instance_norm, 8, channels, hw, 0, layout, dtype};
          for (Phase phase : {Phase::forward_training, Phase::forward_inference, Phase::backward}) {
            out.push_back(channel_case("instance_norm", shape, phase));
          }
        }
      }
    }
  }
}

// Group norm as in diffusion U-Nets: 32 groups, C in {320, 640, 1280}, from 64 x 64 down to 8 x 8.
void add_group_norm(std::vector<Case>& out) {
  for (int64_t n : {2, 8}) {
    for (int64_t channels : {320, 640, 1280}) {
      for (int64_t hw : {64, 32, 16, 8}) {
        for (nk_layout layout : kLayouts) {
          for (nk_dtype dtype : {NK_BF16, NK_F32}) {
            const ChannelShape shape = {Op::group_norm, n, channels, hw, 32, layout, dtype};
            for (Phase phase : {Phase::forward_training, Phase::backward}) {
              out.push_back(channel_case("group_norm", shape, phase));
            }
          }
        }
      }
    }
  }
}

// Batch norm in place, y written over x (train_fwd, infer_fwd) and dx over dy (bwd): bn_resnet50's
// NCHW cases in bf16 and fp32 (N = 256 and 32, every phase) at the layers 64x56² and 128x28²
// (S % 8 = 0) and 256x14² and 512x7² (not), each the in-place twin of the case it copies. In place
// the NCHW batch tiles read the packs a channel shares with its neighbour element by element (the
// neighbour's block may be writing them).
void add_bn_in_place(std::vector<Case>& out) {
  std::vector<Case> resnet;
  add_bn_resnet50(resnet);
  const auto layer = [](const Case& c, int64_t channels, int64_t hw) {
    return c.c == channels && c.h == hw;
  };
  for (Case c : resnet) {
    if (c.layout != NK_NCHW || c.dtype == NK_F16) continue;
    if (!layer(c, 64, 56) && !layer(c, 128, 28) && !layer(c, 256, 14) && !layer(c, 512, 7)) {
      continue;
    }
    c.set = "bn_in_place";
    c.in_place = true;
    out.push_back(c);
  }
}

// Launch-bound calls: a few rows of layer/RMS norm (decoding one token at a time) and batch norm
// at tiny batches, bf16 (row-norm parameters bf16 too). Timed as back-to-back calls.
void add_small(std::vector<Case>& out) {
  for (Op op : {Op::layer_norm, Op::rms_norm}) {
    for (int64_t d : {1024, 4096}) {
      for (int64_t m : {1, 4, 16, 64}) {
        for (Phase phase : {Phase::forward_training, Phase::backward}) {
          Case c;
          c.set = "small";
          c.op = op;
          c.phase = phase;
          c.dtype = NK_BF16;
          c.weight_dtype = NK_BF16;
          c.rows = m;
          c.cols = d;
          c.launch_bound = true;
          out.push_back(c);
        }
      }
    }
  }
  for (int64_t n : {1, 2, 8}) {
    for (nk_layout layout : kLayouts) {
      for (Phase phase : {Phase::forward_training, Phase::forward_inference, Phase::backward}) {
        Case c;
        c.set = "small";
        c.op = Op::batch_norm;
        c.phase = phase;
        c.dtype = NK_BF16;
        c.n = n;
        c.c = 256;
        c.h = c.w = 14;
        c.layout = layout;
        c.launch_bound = true;
        out.push_back(c);
      }
    }
  }
}

// The GPU check's subset (scripts/gpu_check.sh): 40 cases, every op class in a few minutes of GPU
// time. Layer and RMS norm at small, medium and long rows (x >= 256 MiB as in `rows`), forward
// and backward, with both weight dtypes; batch norm at ResNet-50 shapes (a wide-spatial layer in
// both layouts and all three phases, a 14 x 14 NHWC and an odd 7 x 7 NCHW layer); instance norm
// in both layouts; group norm at diffusion U-Net shapes; and four launch-bound calls standing for
// the `small` set (timed as in that set). The set mixes ops, so its names carry the op:
// check/layer_norm/D1024/M131072/bf16/w_fp32/fwd. bench/torch_compare.py --sets check lists the
// same names.
void add_check(std::vector<Case>& out) {
  constexpr int64_t kMinBytes = int64_t{256} << 20;
  // Both directions of a row norm; m = 0: enough rows for 256 MiB of x, else m rows, launch-bound.
  const auto rows = [&out](Op op, int64_t d, nk_dtype x, nk_dtype weight, int64_t m = 0) {
    for (Phase phase : {Phase::forward_training, Phase::backward}) {
      Case c;
      c.set = "check";
      c.op = op;
      c.phase = phase;
      c.dtype = x;
      c.weight_dtype = weight;
      c.cols = d;
      const int64_t row_bytes = d * static_cast<int64_t>(dtype_size(x));
      c.rows = m > 0 ? m : (kMinBytes + row_bytes - 1) / row_bytes;
      c.launch_bound = m > 0;
      out.push_back(c);
    }
  };
  rows(Op::layer_norm, 128, NK_BF16, NK_F32);
  rows(Op::layer_norm, 1024, NK_BF16, NK_F32);
  rows(Op::layer_norm, 8192, NK_BF16, NK_BF16);
  rows(Op::layer_norm, 65536, NK_F32, NK_F32);
  rows(Op::rms_norm, 256, NK_BF16, NK_BF16);
  rows(Op::rms_norm, 4096, NK_BF16, NK_BF16);
  rows(Op::rms_norm, 16384, NK_F32, NK_F32);

  struct Channel {
    Op op;
    int64_t n, c, hw, groups;
    nk_layout layout;
    nk_dtype dtype;
    bool inference;  // batch norm: infer_fwd too (between train_fwd and bwd)
  };
  constexpr Channel kChannel[] = {
      {Op::batch_norm, 256, 64, 56, 0, NK_NCHW, NK_BF16, true},
      {Op::batch_norm, 256, 64, 56, 0, NK_NHWC, NK_BF16, true},
      {Op::batch_norm, 256, 1024, 14, 0, NK_NHWC, NK_F16, false},
      {Op::batch_norm, 256, 2048, 7, 0, NK_NCHW, NK_F32, false},
      {Op::instance_norm, 8, 128, 128, 0, NK_NCHW, NK_BF16, false},
      {Op::instance_norm, 8, 128, 128, 0, NK_NHWC, NK_BF16, false},
      {Op::group_norm, 2, 320, 64, 32, NK_NCHW, NK_BF16, false},
      {Op::group_norm, 2, 320, 64, 32, NK_NHWC, NK_BF16, false},
      {Op::group_norm, 8, 640, 64, 32, NK_NHWC, NK_BF16, false},
      {Op::group_norm, 8, 1280, 16, 32, NK_NCHW, NK_F32, false},
  };
  for (const Channel& ch : kChannel) {
    for (Phase phase : {Phase::forward_training, Phase::forward_inference, Phase::backward}) {
      if (phase == Phase::forward_inference && !ch.inference) continue;
      out.push_back(channel_case("check", ch, phase));
    }
  }

  // Launch-bound representatives of the `small` set: a decoding step's layer norm (forward and
  // backward), one row of RMS norm, batch norm at N = 8.
  rows(Op::layer_norm, 4096, NK_BF16, NK_BF16, 16);
  Case rms;
  rms.set = "check";
  rms.op = Op::rms_norm;
  rms.phase = Phase::forward_training;
  rms.dtype = rms.weight_dtype = NK_BF16;
  rms.rows = 1;
  rms.cols = 1024;
  rms.launch_bound = true;
  out.push_back(rms);
  Case bn;
  bn.set = "check";
  bn.op = Op::batch_norm;
  bn.phase = Phase::forward_training;
  bn.dtype = NK_BF16;
  bn.n = 8;
  bn.c = 256;
  bn.h = bn.w = 14;
  bn.layout = NK_NHWC;
  bn.launch_bound = true;
  out.push_back(bn);
}

}  // namespace

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  add_bn_resnet50(cases);
  add_bn_in_place(cases);
  add_bn_features(cases);
  add_bn_mobilenet_v2(cases);
  add_rows(cases);
  add_long_rows(cases);
  add_fused_rows(cases);
  add_fused_channels(cases);
  add_instance_norm(cases);
  add_group_norm(cases);
  add_small(cases);
  add_check(cases);
  return cases;
}

}  // namespace nkb

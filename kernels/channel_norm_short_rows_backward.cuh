// Instance and group norm training backward with one read of x and dy where a statistic's row is
// at most a 16-byte pack (plan_short_rows): a thread holds the same R rows (P packs) of x and
// of dy as the forward's thread, in registers, and per row takes, with the saved mean and invstd,
// each channel's sums of du and du * x-hat, then
//   dx = w_c * invstd * du - c1 - (x - mean) * c2,
//   c1 = invstd * sum_g / L,  c2 = invstd^2 * sum_gx / L,
//   sum_g = sum over the row's channels c of w_c * sum du,  sum_gx likewise with du * x-hat,
// the formulas of the split passes (channel_norm_backward.cu), and du (the fused backward's dz).
// The channels' sums go to the [N, C] array that the finalize adds over n into dweight and dbias,
// as the resident rows' do. A row's arithmetic sees its L values only, in a fixed order, so no bit
// depends on the pointers or the grid.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_short_rows.cuh"
#include "common/dependent_launch.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [rows]), then the rows' geometry.
struct ShortRowsBackwardParams : OneReadBackwardIo {
  int rows;                 // statistics: N * C (instance norm) or N * G
  int rows_per_sample;      // C (instance norm) or G
  int channels_per_row;     // 1 (instance norm) or C / G
  uint32_t channel_starts;  // bit j: element j > 0 of a row starts its next channel (S | j)
  bool vector_access;       // every pointer allows 16-byte accesses
};

template <class T, int L, int kSource, bool kZ>
__global__ void __launch_bounds__(kShortRowsBlock, 1)
    backward_short_rows(ShortRowsBackwardParams p) {
  dev::enter_chain();
  using Shape = ShortRowsShape<T, L>;  // the forward's rows
  constexpr int E = Shape::E, P = Shape::P, R = Shape::R;
  constexpr uint32_t kStarts = Shape::kStarts;
  constexpr bool kAux = kSource == kFromY || (kSource == kSiluOfU && kZ);
  using Raw = dev::Pack<T, E>;
  ShortRowsThread t;
  if (!locate_short_rows<L, R>(p.rows, p.vector_access, t)) return;
  const int row0 = t.row0, rows = t.rows, count = t.count;
  const int64_t first = t.first;
  const bool whole = t.whole;
  Raw x[P], dy[P], aux[kAux ? P : 1];
  load_short_rows<T, E, P>(static_cast<const T*>(p.x) + first, whole, count, x);
  load_short_rows<T, E, P>(static_cast<const T*>(p.dy) + first, whole, count, dy);
  if constexpr (kAux) {
    load_short_rows<T, E, P>(static_cast<const T*>(p.aux) + first, whole, count, aux);
  }
  uint32_t mask[kSource == kFromMask ? P : 1] = {};
  if constexpr (kSource == kFromMask) {
#pragma unroll
    for (int k = 0; k < P; ++k) {
      if (k * E < count) mask[k] = dev::load_mask<E>(p.mask, first + k * E);  // one word: E | 32
    }
  }
  // act' input of element i of the thread's span: the mask bit, y or z, else unused.
  auto aux_of = [&](int i) {
    if constexpr (kSource == kFromMask) {
      return static_cast<float>((mask[i / E] >> (i % E)) & 1u);
    } else if constexpr (kAux) {
      return dev::element(aux[i / E], i % E);
    } else {
      return 0.0f;
    }
  };
  // The outputs apart from the inputs, whose words stay as loaded (as the forward's y).
  Raw dx[P], dz[P];
  int row_in_sample = row0 % p.rows_per_sample;  // 32-bit remainder once, then steps
#pragma unroll
  for (int r = 0; r < R; ++r) {
    // A tail thread's missing rows (zeros) take the first row's statistics and are never stored.
    const int row = row0 + (r < rows ? r : 0);
    const float mean = p.save_mean[row], invstd = p.save_invstd[row];
    const int c0 = row_in_sample * p.channels_per_row;
    int jc = 0;  // the row's channel: c0 + jc
    float w = 0.0f, scale = 0.0f, bias = 0.0f;
    auto coef = [&]() {
      w = p.weight ? p.weight[c0 + jc] : 1.0f;
      scale = invstd * w;
      bias = kSource == kSiluOfU && p.bias ? p.bias[c0 + jc] : 0.0f;
    };
    coef();
    // Each channel's (sum du, sum du * x-hat), stored as it ends, and the row's weighted totals.
    float t0 = 0.0f, t1 = 0.0f, sum_g = 0.0f, sum_gx = 0.0f;
    auto end_channel = [&]() {
      t1 *= invstd;
      if (p.channel_sums && r < rows) {
        p.channel_sums[int64_t{row} * p.channels_per_row + jc] = make_float2(t0, t1);
      }
      sum_g = fmaf(w, t0, sum_g);
      sum_gx = fmaf(w, t1, sum_gx);
      t0 = t1 = 0.0f;
    };
    float du[L], scales[L];
#pragma unroll
    for (int j = 0; j < L; ++j) {
      const int i = r * L + j;
      if ((kStarts >> j & 1u) && (p.channel_starts >> j & 1u)) {
        end_channel();
        ++jc;
        coef();
      }
      const float xf = dev::element(x[i / E], i % E), xm = xf - mean;
      du[j] = du_of<kSource, kZ>(dev::element(dy[i / E], i % E), xf, aux_of(i), mean, scale, bias);
      scales[j] = scale;
      t0 += du[j];
      t1 = fmaf(du[j], xm, t1);
    }
    end_channel();
    const float c1 = invstd * sum_g * (1.0f / L), c2 = invstd * invstd * sum_gx * (1.0f / L);
#pragma unroll
    for (int j = 0; j < L; ++j) {
      const int i = r * L + j;
      const float xm = dev::element(x[i / E], i % E) - mean;
      dx[i / E].v[i % E] = dev::from_float<T>(fmaf(scales[j], du[j], fmaf(xm, -c2, -c1)));
      dz[i / E].v[i % E] = dev::from_float<T>(du[j]);
    }
    if (++row_in_sample == p.rows_per_sample) row_in_sample = 0;
  }
  if (p.dx != nullptr) store_short_rows<T, E, P>(static_cast<T*>(p.dx) + first, whole, count, dx);
  if (p.dz != nullptr) store_short_rows<T, E, P>(static_cast<T*>(p.dz) + first, whole, count, dz);
}

}  // namespace nk::cuda

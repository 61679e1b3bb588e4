// Instance norm training backward in NHWC with one read of x and dy (plan_instance_tiles with both
// staged), and batch norm's as one sample (instance_tile_shape): a block per tile of E consecutive
// channels of one sample, as the forward's (channel_norm_instance_tile.cuh), copies the tile of x
// and of dy into shared memory, sums du and du * (x - mean) per channel over its positions (with
// the saved statistics), and writes dx (and dz) from there:
//   dx = w_c * invstd * du - c1 - (x - mean) * c2,
//   c1 = invstd * w_c * sum du / S,  c2 = invstd^2 * w_c * sum du * x-hat / S,
// group norm's tile formulas (channel_norm_group_tile_backward.cuh) with each channel a group.
// x and dy are read once and dx written once, where the split passes read both twice in three
// launches. Thread t keeps the same pack of channels at every position it takes (t, t + R, ...),
// the block adds the E pairs of sums in a fixed order (dev::block_sum), and thread 0 leaves the
// channels' (sum du, sum du * x-hat) in channel_sums[n, c] for the finalize's dweight and dbias;
// with one sample (batch norm; instance norm with N = 1) those are the channels' whole sums, so
// it writes dbias and dweight itself, and the call is one launch.
// Tiles above the staged head read the rest from memory in both passes, and misaligned pointers
// load single elements into the same packs: no bit depends on the pointers or the head. y (ReLU
// without a mask) or z (SiLU with a residual) is read from memory in both passes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_group_tile.cuh"
#include "channel_norm_one_read_io.cuh"
#include "common/dependent_launch.cuh"
#include "common/reduce.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [N * C]), the tiles (C/G = 1, k = E, P = 1; x and dy:
// head_packs of each staged), 1 / S, and for one sample dweight and dbias themselves.
struct InstanceTileBackwardParams : OneReadBackwardIo, TileGeometry {
  float inv_count;
  float* dweight;  // [C], nullable; N = 1 only, where channel_sums is null
  float* dbias;    // [C], nullable; likewise
};

// One block per tile (blockIdx.x: n * C/E + the tile); kAccess: elements per global access (E, or
// 1 for misaligned pointers); kSource: where act' comes from (kZ: SiLU's u adds z). E means,
// invstds and pairs of sums a thread: one block of 512 an SM (128 registers).
template <class T, int kAccess, int kSource, bool kZ>
__global__ void __launch_bounds__(kResidentMaxThreads, 1)
    backward_instance_tile(InstanceTileBackwardParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kAux = kSource == kFromY || (kSource == kSiluOfU && kZ);
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  const int head = p.head_packs;
  Raw* xs = reinterpret_cast<Raw*>(shared_bytes + kGroupTileScratchBytes);
  Raw* dys = xs + head;
  const int threads = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  const int packs = p.s;  // a pack a position
  const TileThread w = tile_thread<E>(p);
  const int64_t first = w.first, at0 = w.at0, step = w.step, stat0 = w.n * p.c + w.c0;
  const T* x = static_cast<const T*>(p.x) + first;
  const T* dy = static_cast<const T*>(p.dy) + first;
  const T* aux = kAux ? static_cast<const T*>(p.aux) + first : nullptr;
  const float* weight = p.weight ? p.weight + w.c0 : nullptr;
  const float* bias = kSource == kSiluOfU && p.bias ? p.bias + w.c0 : nullptr;

  // Per channel: the statistics, scale = invstd * w_c (SiLU's u = (x - mean) * scale + b).
  float mean[E], invstd[E], scale[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    mean[e] = p.save_mean[stat0 + e];
    invstd[e] = p.save_invstd[stat0 + e];
    scale[e] = invstd[e] * (weight ? weight[e] : 1.0f);
  }
  auto load = [](const T* g, int64_t at) { return row_pack<T, E, kAccess>(g + at, 0); };
  // The E aux values of the pack at element offset o (a multiple of E: C and c0 are).
  auto load_aux = [&](int64_t o, float (&a)[E]) {
    load_act_inputs<T, E, kAccess, kSource, kAux>(p.mask, first + o, aux, o, a);
  };
  auto du_at = [&](const Raw& xv, const Raw& dv, const float (&a)[E], int e) {
    const float b = kSource == kSiluOfU && bias ? bias[e] : 0.0f;
    return du_of<kSource, kZ>(dev::element(dv, e), dev::element(xv, e), a[e], mean[e], scale[e],
                              b);
  };

  // Pass 1: the head of x and of dy into shared memory, the tail after it; per channel the sums of
  // du and du * (x - mean) as the packs arrive, in the order of pass 2.
  dev::Floats<2 * E> sums{};  // [e]: sum du, [E + e]: sum du * (x - mean)
  int64_t at = at0;
  for (int q = t; q < packs; q += threads, at += step) {
    const Raw xv = load(x, at), dv = load(dy, at);
    if (q < head) {
      xs[q] = xv;
      dys[q] = dv;
    }
    float a[E];
    load_aux(at, a);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float du = du_at(xv, dv, a, e);
      sums.v[e] += du;
      sums.v[E + e] = fmaf(du, dev::element(xv, e) - mean[e], sums.v[E + e]);
    }
  }
  // The block's sums; its barrier also orders pass 1's stores to the heads before pass 2.
  sums = dev::block_sum<2 * E>(sums, scratch);
  float c1[E], c2[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const float wt = weight ? weight[e] : 1.0f;
    c1[e] = invstd[e] * (wt * sums.v[e]) * p.inv_count;
    c2[e] = invstd[e] * invstd[e] * (wt * sums.v[E + e] * invstd[e]) * p.inv_count;
  }
  if (t == 0) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float dbias = sums.v[e], dweight = sums.v[E + e] * invstd[e];
      if (p.channel_sums != nullptr) p.channel_sums[stat0 + e] = make_float2(dbias, dweight);
      if (p.dbias != nullptr) p.dbias[w.c0 + e] = dbias;
      if (p.dweight != nullptr) p.dweight[w.c0 + e] = dweight;
    }
  }

  // Pass 2: dx = scale * du - c1 - (x - mean) * c2, and dz = du, over the thread's packs in the
  // order of pass 1: the head's from shared memory, then the tail's from memory.
  T* dx = static_cast<T*>(p.dx);
  T* dz = static_cast<T*>(p.dz);
  auto dx_pack = [&](const Raw& xv, const Raw& dv, int64_t o) {
    float a[E];
    load_aux(o, a);
    float r[E], du[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      du[e] = du_at(xv, dv, a, e);
      r[e] = fmaf(scale[e], du[e], fmaf(dev::element(xv, e) - mean[e], -c2[e], -c1[e]));
    }
    if (dx != nullptr) store_elems<T, E, kAccess>(dx + first + o, r);
    if (dz != nullptr) store_elems<T, E, kAccess>(dz + first + o, du);
  };
  int q = t;
  int64_t o = at0;
  for (; q < head; q += threads, o += step) {
    const Raw xv = xs[q], dv = dys[q];
    dx_pack(xv, dv, o);
  }
  for (; q < packs; q += threads, o += step) dx_pack(load(x, o), load(dy, o), o);
}

}  // namespace nk::cuda

// Instance and group norm training backward with one read of x and dy (plan_resident_rows with
// both staged): a block per statistic copies its row of L contiguous elements of x and of dy into
// shared memory, sums du and du * x-hat over the row (with the saved mean and invstd), and writes
// dx (and dz) from there:
//   dx = w_c * invstd * du - c1 - (x - mean) * c2,
//   c1 = invstd * sum_g / L,  c2 = invstd^2 * sum_gx / L,
//   sum_g = sum over the row's channels c of w_c * sum du,  sum_gx likewise with du * x-hat,
// the formulas of the split passes (channel_norm_backward.cu) with the statistic's sums taken in
// one block. x and dy are read once and dx written once, where the split passes read both twice.
// The row's per-channel sums (sum du, sum du * x-hat) go to a [N, C] array that a finalize adds
// over n in a fixed order into dbias and dweight.
//
// Instance norm sums the row over the block; group norm gives each warp whole channels (lanes
// strided over a channel's packs when S is a multiple of the pack, else over its S elements, then
// a butterfly), so every channel's sums come out whole and the row's totals add the warps' totals
// in warp order: the tree depends on L and S only.
// Rows above 48 KiB stage the first 48 KiB of x and of dy (the head) and read the rest (the tail)
// from memory in both passes, each thread taking its units in the same order from either place.
// Rows that are not whole packs stage the packs that lie wholly in them (RowEdges); the elements
// at their ends are read from memory, a thread (or, group norm's sums, a lane) each.
// Misaligned pointers load single elements into the same staged packs, and the sums read the
// staged row, so the bits depend neither on the pointers nor on where the head ends. y (ReLU
// without a mask) or z (SiLU with a residual) is read from global memory in both passes; the
// second read is of the row just read.
// Rows above a block are split into parts of consecutive elements (plan_resident_rows' parts:
// whole channels for group norm, so each channel's sums come from one block), a block each, whose
// row sums are added in rank order (SplitStep): one cluster a row, or two launches through the
// workspace, the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "channel_norm_act_grad.cuh"
#include "channel_norm_one_read_io.cuh"
#include "channel_norm_resident.cuh"
#include "channel_norm_split_step.cuh"
#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"

namespace nk::cuda {

// The tensors (save_mean and save_invstd: [rows]), then the rows' geometry.
struct ResidentBackwardParams : OneReadBackwardIo {
  int64_t len;           // L: elements of a row
  int head_packs;        // packs of a row of x and of dy staged (at most: a row of fewer whole
                         // packs stages them all); the rest are read from memory
  int s;                 // S: a channel's elements within the row
  int channels_per_row;  // 1 (instance norm) or C / G
  int rows_per_sample;   // C (instance norm) or G
  float inv_len;         // 1 / L
  int part_len;          // elements of a part (the last may have fewer): L where not split
  float* part_sums;      // [rows][parts][2]: each part's row sums; kParts, kApply
};
static_assert(sizeof(ResidentBackwardParams) <= kMaxKernelArgBytes,
              "a kernel argument within 128 bytes");

// Shared memory before the staged rows: block_sum<2>'s 64 floats, a multiple of 16 bytes.
constexpr size_t kResidentBackwardScratchBytes = 64 * sizeof(float);

// One block per statistic (blockIdx.x: the row n * rows_per_sample + c or g); kAccess: elements per
// global access (E, or 1 for misaligned pointers); kSource: where act' comes from (kZ: SiLU's u
// adds z).
// kStep: kWhole, a block a row. Else the row's parts of part_len elements, a block each
// (blockIdx.x = row * parts + rank), each its own RowEdges: each part's row sums (instance norm:
// sum du and sum du * x-hat; group norm: sum_g and sum_gx) are added in rank order (add_parts) in
// every block alike: kCluster, a cluster a row through distributed shared memory (x and dy read
// once); kParts then kApply, two launches through the workspace (part_sums; kApply reads x and dy
// again). Group norm's parts hold whole channels, whose sums each part stores; instance norm's
// row sums are stored by rank 0.
template <class T, int kAccess, int kSource, bool kZ, SplitStep kStep = SplitStep::kWhole>
__global__ void __launch_bounds__(kResidentMaxThreads, kStep == SplitStep::kWhole ? 2 : 1)
    backward_resident(ResidentBackwardParams p) {
  dev::enter_chain();
  constexpr int E = 16 / sizeof(T);
  constexpr bool kAux = kSource == kFromY || (kSource == kSiluOfU && kZ);
  constexpr bool kSplit = kStep != SplitStep::kWhole;
  using Raw = dev::Pack<T, E>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  float* scratch = reinterpret_cast<float*>(shared_bytes);
  auto& split_sh = *reinterpret_cast<SplitSumsScratch*>(shared_bytes);  // split forms only
  const RowPart<kSplit> part(p.len, p.part_len, p.channels_per_row, p.s);
  const unsigned parts = part.parts, row_index = part.row, rank = part.rank;
  const int64_t row = row_index, first = row * p.len + part.begin;
  // The block's whole packs from element lead on, and its edges (RowEdges: rows or parts that are
  // not whole packs): this thread's edge is `edge` (instance norm's sums and dx), group norm's
  // sums take each with its channel's other elements.
  const int len = part.len;  // the block's elements
  const RowEdges<E> ends(first, len);
  const int packs = ends.packs, lead = ends.lead;
  const int head = kStep == SplitStep::kApply ? 0 : min(packs, p.head_packs);  // kApply rereads
  const int edge = ends.at(threadIdx.x, len);
  Raw* xs = reinterpret_cast<Raw*>(
      shared_bytes + (kSplit ? sizeof(SplitSumsScratch) : kResidentBackwardScratchBytes));
  Raw* dys = xs + head;
  const T* x = static_cast<const T*>(p.x) + first;
  const T* dy = static_cast<const T*>(p.dy) + first;
  const T* aux = kAux ? static_cast<const T*>(p.aux) + first : nullptr;
  const T* xp = x + lead;  // the packs
  const T* dyp = dy + lead;
  if constexpr (kStep != SplitStep::kApply) {
    if constexpr (kAccess == E) {
      stage_units<2>({reinterpret_cast<const Raw*>(xp), reinterpret_cast<const Raw*>(dyp)},
                     {xs, dys}, head, [](const Raw&) {});
    } else {
      stage_units<2>({xp, dyp}, {reinterpret_cast<T*>(xs), reinterpret_cast<T*>(dys)}, head * E,
                     [](const T&) {});
    }
    __syncthreads();
  }
  // Pack q of x or dy from memory (the tail, past the staged head).
  auto tail_pack = [](const T* g, int q) { return row_pack<T, E, kAccess>(g, q); };

  const float mean = p.save_mean[row], invstd = p.save_invstd[row];
  // 32-bit: a 64-bit remainder is a call, whose saved registers spill on sm_80 (the plan caps
  // the rows below 2^31).
  const int64_t j0 = part.first_channel;  // the block's first channel of the row's
  const int64_t c0 =
      int64_t{row_index % static_cast<unsigned>(p.rows_per_sample)} * p.channels_per_row + j0;
  struct Coef {
    float w, scale, bias;  // weight, invstd * weight, and SiLU's bias
  };
  auto coef = [&](int64_t c) {
    Coef k;
    k.w = p.weight ? p.weight[c] : 1.0f;
    k.scale = invstd * k.w;
    k.bias = kSource == kSiluOfU && p.bias ? p.bias[c] : 0.0f;
    return k;
  };
  // The E aux values of the elements o .. o + E - 1 of the row (first + o a multiple of E).
  auto load_aux = [&](unsigned o, float(&a)[E]) {
    load_act_inputs<T, E, kAccess, kSource, kAux>(p.mask, first + o, aux, o, a);
  };

  // Adds du and du * (x - mean) of pack q (x and dy: xv, dv), with the coefficients k, to t.
  auto add_pack = [&](const Raw& xv, const Raw& dv, int q, const Coef& k, dev::Floats<2>& t) {
    float a[E];
    load_aux(lead + static_cast<unsigned>(q) * E, a);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float xf = dev::element(xv, e), xm = xf - mean;
      const float du = du_of<kSource, kZ>(dev::element(dv, e), xf, a[e], mean, k.scale, k.bias);
      t.v[0] += du;
      t.v[1] = fmaf(du, xm, t.v[1]);
    }
  };

  // The aux value of the single element o of the row.
  auto aux_element = [&](unsigned o) {
    float a = 0.0f;
    if constexpr (kSource == kFromMask) {
      // One bit in one word (dev::load_mask<1> also tests for a second word: 24 more
      // instructions per 4 elements here).
      const int64_t at = first + o;
      a = static_cast<float>((p.mask[at / 32] >> (at % 32)) & 1u);
    } else if constexpr (kAux) {
      a = dev::to_float(aux[o]);
    }
    return a;
  };
  // add_pack for the single element o of the row, x and dy staged (o in the packs) or (kTail)
  // from memory.
  auto add_element = [&](auto tail, unsigned o, const Coef& k, dev::Floats<2>& t) {
    constexpr bool kTail = decltype(tail)::value;
    const float a = aux_element(o);
    const float xf = dev::to_float(kTail ? x[o] : reinterpret_cast<const T*>(xs)[o - lead]);
    const float d = dev::to_float(kTail ? dy[o] : reinterpret_cast<const T*>(dys)[o - lead]);
    const float xm = xf - mean;
    const float du = du_of<kSource, kZ>(d, xf, a, mean, k.scale, k.bias);
    t.v[0] += du;
    t.v[1] = fmaf(du, xm, t.v[1]);
  };

  // The row's sums: (sum_g, sum_gx) with the weights, each channel's (sum du, sum du * x-hat)
  // stored for dweight and dbias. Split instance norm rows: each part's unweighted sums, whose
  // total rank 0 stores and weighs after the merge below.
  dev::Floats<2> row_sums{};
  if constexpr (kStep != SplitStep::kApply) {
    if (p.channels_per_row == 1) {
      const Coef k = coef(c0);
      dev::Floats<2> t{};
      int q = threadIdx.x;
      for (; q < head; q += blockDim.x) {
        const Raw xv = xs[q], dv = dys[q];
        add_pack(xv, dv, q, k, t);
      }
      for (; q < packs; q += blockDim.x) add_pack(tail_pack(xp, q), tail_pack(dyp, q), q, k, t);
      if (edge >= 0) add_element(std::true_type{}, static_cast<unsigned>(edge), k, t);
      t = dev::block_sum<2>(t, scratch);
      t.v[1] *= invstd;
      if constexpr (kSplit) {
        row_sums = t;
      } else {
        if (p.channel_sums && threadIdx.x == 0) p.channel_sums[row] = make_float2(t.v[0], t.v[1]);
        row_sums.v[0] = k.w * t.v[0];
        row_sums.v[1] = k.w * t.v[1];
      }
    } else {
      // A warp per channel, lanes strided over its S elements of the staged row: over its S / E
      // whole packs when S is a multiple of the pack (each pack then lies in one channel, and the
      // row is whole packs), else over single elements (the row's edges from memory).
      const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
      const bool channel_packs = p.s % E == 0;
      const int channel_len = channel_packs ? p.s / E : p.s;
      dev::Floats<2> warp_total{};
      const int channels = kSplit ? len / p.s : p.channels_per_row;  // the block's
      for (int j = warp; j < channels; j += warps) {
        const Coef k = coef(c0 + j);
        dev::Floats<2> t{};
        // The channel's units before the packs (the leading edge), in the staged head, then those
        // in the tail (and the trailing edge).
        const int start = j * channel_len, end = start + channel_len;
        const int staged = channel_packs ? head : lead + head * E;
        const int staged_end = end < staged ? end : staged;
        int i = start + lane;
        for (; i < lead && i < end; i += 32) {
          add_element(std::true_type{}, static_cast<unsigned>(i), k, t);
        }
        for (; i < staged_end; i += 32) {
          if (channel_packs) {
            const Raw xv = xs[i], dv = dys[i];
            add_pack(xv, dv, i, k, t);
          } else {
            add_element(std::false_type{}, static_cast<unsigned>(i), k, t);
          }
        }
#pragma unroll 1  // unrolled, it spilled 4 bytes (fp32, act' from y)
        for (; i < end; i += 32) {
          if (channel_packs) {
            add_pack(tail_pack(xp, i), tail_pack(dyp, i), i, k, t);
          } else {
            add_element(std::true_type{}, static_cast<unsigned>(i), k, t);
          }
        }
        t = dev::group_sum<2>(t, 32);
        t.v[1] *= invstd;
        if (p.channel_sums && lane == 0) {
          p.channel_sums[row * p.channels_per_row + j0 + j] = make_float2(t.v[0], t.v[1]);
        }
        warp_total.v[0] = fmaf(k.w, t.v[0], warp_total.v[0]);
        warp_total.v[1] = fmaf(k.w, t.v[1], warp_total.v[1]);
      }
      // Every lane holds its warp's total: lane 0 alone enters the block's sum.
      if (lane != 0) warp_total = dev::Floats<2>{};
      row_sums = dev::block_sum<2>(warp_total, scratch);
    }
    if constexpr (kSplit) {
      if (threadIdx.x < 2) {
        // Selected, not indexed by the thread: an index kept the sums in local memory.
        const float mine = threadIdx.x == 0 ? row_sums.v[0] : row_sums.v[1];
        if constexpr (kStep == SplitStep::kParts) {
          p.part_sums[(int64_t{row_index} * parts + rank) * 2 + threadIdx.x] = mine;
        } else {
          split_sh.part[threadIdx.x] = mine;
        }
      }
      if constexpr (kStep == SplitStep::kParts) return;
    }
  }
  if constexpr (kSplit) {  // the row's sums, the parts' added in rank order
    summed_parts<kStep>(split_sh, static_cast<int>(parts),
                        p.part_sums + int64_t{row_index} * parts * 2);
    row_sums.v[0] = split_sh.tile[0];
    row_sums.v[1] = split_sh.tile[1];
    if (p.channels_per_row == 1) {  // instance norm: the row's sums, then weighed
      if (p.channel_sums && threadIdx.x == 0 && rank == 0) {
        p.channel_sums[row] = make_float2(row_sums.v[0], row_sums.v[1]);
      }
      const float w = p.weight ? p.weight[c0] : 1.0f;
      row_sums.v[0] *= w;
      row_sums.v[1] *= w;
    }
  }
  const float c1 = invstd * row_sums.v[0] * p.inv_len;
  const float c2 = invstd * invstd * row_sums.v[1] * p.inv_len;

  T* dx = static_cast<T*>(p.dx);
  T* dz = static_cast<T*>(p.dz);
  const unsigned s = static_cast<unsigned>(p.s);
  // The thread's edge first, so that it holds no register across the loops below.
  if (edge >= 0) {
    const unsigned o = static_cast<unsigned>(edge);
    const Coef k = coef(c0 + o / s);
    const float xf = dev::to_float(x[o]);
    const float du =
        du_of<kSource, kZ>(dev::to_float(dy[o]), xf, aux_element(o), mean, k.scale, k.bias);
    const float r = fmaf(k.scale, du, fmaf(xf - mean, -c2, -c1));
    if (dx != nullptr) dx[first + o] = dev::from_float<T>(r);
    if (dz != nullptr) dz[first + o] = dev::from_float<T>(du);
  }
  // dx = scale_c * du - c1 - (x - mean) * c2 per element, scale_c = invstd * w_c, with the
  // coefficients of the row (instance norm), of each pack (group norm, S a multiple of the pack)
  // or of each run of a channel's elements (else).
  auto write_dx = [&](auto mode) {
    constexpr int kMode = decltype(mode)::value;
    const Coef row_coef = coef(c0);
    // dev::element, except where the coefficients change within a pack: there it made ptxas keep
    // one loop for present and absent weights (about 15 more instructions per bf16 pack with a
    // weight, 40 without), where the plain widening gets a loop for each.
    auto widen = [](const Raw& v, int e) {
      return kMode == 2 ? dev::to_float(v.v[e]) : dev::element(v, e);
    };
    PackChannel walk(lead + threadIdx.x * E, blockDim.x * E, s);
    auto dx_pack = [&](const Raw& xv, const Raw& dv, int q) {
      const unsigned o = lead + static_cast<unsigned>(q) * E;  // in the row
      float a[E];
      load_aux(o, a);
      Coef k = kMode == 0 ? row_coef : coef(c0 + walk.j);
      auto run = walk.elements();
      float r[E], du[E];
#pragma unroll
      for (int e = 0; e < E; ++e) {
        if constexpr (kMode == 2) run.step([&](unsigned j) { k = coef(c0 + j); });
        const float xf = widen(xv, e), xm = xf - mean;
        du[e] = du_of<kSource, kZ>(widen(dv, e), xf, a[e], mean, k.scale, k.bias);
        r[e] = fmaf(k.scale, du[e], fmaf(xm, -c2, -c1));
      }
      if (dx != nullptr) store_elems<T, E, kAccess>(dx + first + o, r);
      if (dz != nullptr) store_elems<T, E, kAccess>(dz + first + o, du);
      if constexpr (kMode != 0) walk.next();
    };
    int q = threadIdx.x;
    for (; q < head; q += blockDim.x) {
      const Raw xv = xs[q], dv = dys[q];
      dx_pack(xv, dv, q);
    }
    for (; q < packs; q += blockDim.x) dx_pack(tail_pack(xp, q), tail_pack(dyp, q), q);
  };
  if (p.channels_per_row == 1) {
    write_dx(std::integral_constant<int, 0>{});
  } else if (s % E == 0) {
    write_dx(std::integral_constant<int, 1>{});
  } else {
    write_dx(std::integral_constant<int, 2>{});
  }
  if constexpr (kStep == SplitStep::kCluster) dev::cluster_wait();
}

}  // namespace nk::cuda

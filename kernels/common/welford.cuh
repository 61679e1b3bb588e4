// The Welford collective, normkit's one way to compute a mean and a variance: a state (count,
// mean, m2 = sum of squared deviations), a push of one value, Chan's merge of two states, and its
// warp and block reductions (reduce.cuh's warp_merge and block_merge with WelfordMerge). Merges
// always combine the lower-indexed partial first, so every thread that ends up holding a result
// holds the same bits and repeated runs agree bit for bit (no floating-point atomics anywhere). The
// state functions are __host__ __device__ so that they are unit-tested on the CPU.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#include "reduce.cuh"
#define NK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NK_HOST_DEVICE inline
#endif

namespace nk::dev {

struct Welford {
  int64_t count;
  float mean;
  float m2;
};

NK_HOST_DEVICE Welford welford_empty() { return Welford{0, 0.0f, 0.0f}; }

NK_HOST_DEVICE Welford welford_push(Welford s, float x) {
  s.count += 1;
  const float delta = x - s.mean;
  s.mean += delta / static_cast<float>(s.count);
  s.m2 += delta * (x - s.mean);
  return s;
}

// Chan et al.'s parallel merge: exact in real arithmetic, and stable because it combines
// deviations (delta) rather than raw sums of squares. The between-partials term joins b.m2 before
// a.m2: in a long chain of merges a.m2 grows until its ulp exceeds that term, which added to a.m2
// directly would be rounded away each time.
NK_HOST_DEVICE Welford welford_merge(Welford a, Welford b) {
  if (b.count == 0) return a;
  if (a.count == 0) return b;
  const int64_t n = a.count + b.count;
  const float delta = b.mean - a.mean;
  const float b_share = static_cast<float>(b.count) / static_cast<float>(n);
  return Welford{n, a.mean + delta * b_share,
                 a.m2 + (b.m2 + delta * delta * static_cast<float>(a.count) * b_share)};
}

// welford_merge in about half its instructions, for the merges that run once per tile of a few
// values (the pushes below) and the channel norms' trees of partials:
//  - an empty a (the identity, all zero) takes b's share 1 by a select, which gives b exactly,
//    with no branch; an empty b returns a (in the pushes b is a tile, never empty, and that test
//    folds away);
//  - one int64 -> float conversion: a's count is the merged count's float less b's, exact while
//    the merged count is below 2^24; above, off by up to one ulp of the merged count (a 2^-23
//    share of it), which matters only where a is far smaller than b;
//  - on the device the reciprocal of the merged count is MUFU.RCP's approximation
//    (rcp.approx.ftz, within 1 ulp) in place of the full division, its check and its slow-path
//    call: b's share is then off by about 1e-7 of itself, less than one rounding of the mean.
// The same operands give the same bits run after run. Across GPU models that rests on MUFU.RCP
// answering alike, as the rsqrtf of every finalize already rests on MUFU.RSQ. Where registers are
// tight and the merge is rare (the split row kernels hold a slice in registers across it),
// welford_merge's division costs fewer registers.
// Its two steps, which a merge of states that share their counts (a walk's WelfordLanes) calls
// apart, once a pair and once a lane, for the same bits: b's share of the merged count (1 where a
// is empty), then the merged mean and m2 of one pair from that share and a's count.
NK_HOST_DEVICE float welford_share(float merged, float b_count, bool a_empty) {
#ifdef __CUDA_ARCH__
  float inverse;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(inverse) : "f"(merged));
  return a_empty ? 1.0f : b_count * inverse;
#else
  return a_empty ? 1.0f : b_count / merged;
#endif
}

NK_HOST_DEVICE void welford_combine(float& mean, float& m2, float b_mean, float b_m2, float a_count,
                                    float b_share) {
  const float delta = b_mean - mean;
  mean = mean + delta * b_share;
  m2 = m2 + (b_m2 + delta * delta * a_count * b_share);
}

NK_HOST_DEVICE Welford welford_merge_approx(Welford a, Welford b) {
  if (b.count == 0) return a;
  const int64_t n = a.count + b.count;
  const float merged = static_cast<float>(n);
  const float b_count = static_cast<float>(b.count);
  const float b_share = welford_share(merged, b_count, a.count == 0);
  Welford r{n, a.mean, a.m2};
  welford_combine(r.mean, r.m2, b.mean, b.m2, merged - b_count, b_share);
  return r;
}

// Adds K values at once: an exact two-pass over them (their mean, then their squared deviations
// from it), joined to s by one Chan merge. Per value that is an add, a subtract and an FMA; the
// division and the count's conversion happen once per K values, where welford_push pays them for
// each value. Large offsets stay accurate: the deviations are taken from the values' own mean.
template <int K>
NK_HOST_DEVICE Welford welford_push_values(Welford s, const float (&v)[K]) {
  float sum = 0.0f;
  for (int i = 0; i < K; ++i) sum += v[i];
  const float mean = sum * (1.0f / static_cast<float>(K));
  float m2 = 0.0f;
  for (int i = 0; i < K; ++i) m2 += (v[i] - mean) * (v[i] - mean);
  return welford_merge_approx(s, Welford{K, mean, m2});
}

// The Welford states of E statistics that see equally many values, the E channels of one
// thread's walk over positions: one count for all, kept as a float (exact below 2^24 values, far
// more than a thread walks), so that a push inverts it once for the E values instead of
// converting and dividing E times, and the states take 2E + 1 registers, not 4E.
template <int E>
struct WelfordLanes {
  float count;
  float mean[E];
  float m2[E];
};

template <int E>
NK_HOST_DEVICE WelfordLanes<E> welford_lanes_empty() {
  WelfordLanes<E> s;
  s.count = 0.0f;
  for (int e = 0; e < E; ++e) s.mean[e] = s.m2[e] = 0.0f;
  return s;
}

// Adds v[e] to lane e, for every lane: welford_push with its division by the count replaced by a
// product with the count's reciprocal, computed once (on the device MUFU.RCP's approximation,
// within 1 ulp: the mean's step is then off by about 1e-7 of itself, less than its rounding).
// Per value a subtract, an FMA, a subtract and an FMA, and no tile of values held in registers
// (ptxas then issues a tile's loads one by one, each after the previous pack's pushes: see
// bench/results/2026-12-04-static-stats-lanes).
template <int E>
NK_HOST_DEVICE void welford_lanes_push(WelfordLanes<E>& s, const float (&v)[E]) {
  s.count += 1.0f;
#ifdef __CUDA_ARCH__
  float inverse;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(inverse) : "f"(s.count));
#else
  const float inverse = 1.0f / s.count;
#endif
  for (int e = 0; e < E; ++e) {
    const float delta = v[e] - s.mean[e];
    s.mean[e] += delta * inverse;
    s.m2[e] += delta * (v[e] - s.mean[e]);
  }
}

template <int E>
NK_HOST_DEVICE Welford welford_lane(const WelfordLanes<E>& s, int e) {
  return Welford{static_cast<int64_t>(s.count), s.mean[e], s.m2[e]};
}

// welford_push_values for the values whose flag is set (the ends of a row that starts or stops
// inside a pack), in one merge; no flag set leaves s as it is.
template <int K>
NK_HOST_DEVICE Welford welford_push_some(Welford s, const float (&v)[K], const bool (&use)[K]) {
  int count = 0;
  float sum = 0.0f;
  for (int i = 0; i < K; ++i) {
    count += use[i] ? 1 : 0;
    sum += use[i] ? v[i] : 0.0f;
  }
  if (count == 0) return s;
    // Any mean of the flagged values makes m2 below exact up to count * (its error)^2, so the
    // fast division (2 ulp, no slow-path call that would cost the kernels registers) is enough.
#ifdef __CUDA_ARCH__
  const float mean = __fdividef(sum, static_cast<float>(count));
#else
  const float mean = sum / static_cast<float>(count);
#endif
  float m2 = 0.0f;
  for (int i = 0; i < K; ++i) m2 += use[i] ? (v[i] - mean) * (v[i] - mean) : 0.0f;
  return welford_merge_approx(s, Welford{count, mean, m2});
}

NK_HOST_DEVICE float welford_biased_var(Welford s) {
  return s.count > 0 ? s.m2 / static_cast<float>(s.count) : 0.0f;
}

#ifdef __CUDACC__

__device__ __forceinline__ Welford shfl_xor(Welford s, int mask, int width) {
  Welford o;
  o.count = __shfl_xor_sync(0xffffffffu, s.count, mask, width);
  o.mean = __shfl_xor_sync(0xffffffffu, s.mean, mask, width);
  o.m2 = __shfl_xor_sync(0xffffffffu, s.m2, mask, width);
  return o;
}

struct WelfordMerge {
  __device__ __forceinline__ Welford operator()(Welford a, Welford b) const {
    return welford_merge(a, b);
  }
};

// welford_merge_approx as a functor, for the finalize kernels' folds and trees of partials.
struct WelfordMergeApprox {
  __device__ __forceinline__ Welford operator()(Welford a, Welford b) const {
    return welford_merge_approx(a, b);
  }
};

// Reduces over the whole block (see block_merge in reduce.cuh); every thread gets the total.
// `scratch` holds 32 states in shared memory; it may be reused after the call returns.
__device__ __forceinline__ Welford block_reduce(Welford s, Welford* scratch) {
  return block_merge(s, scratch, welford_empty(), WelfordMerge{});
}

#endif  // __CUDACC__

}  // namespace nk::dev

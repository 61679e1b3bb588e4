// Element conversions and packs of E consecutive elements moved as one access: 16 bytes when the
// caller has checked alignment (E = 16 / sizeof(T)), one element (E = 1) on the path that takes
// any pointer and any size.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace nk::dev {

// Host check of a pointer for 16-byte packs (nullptr: an absent optional argument, fine).
inline bool aligned16(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <class T, int E>
struct alignas(sizeof(T) * E) Pack {
  T v[E];
};

// Element i (a constant after unrolling) of a pack, widened to float. A bf16 is the top half of
// its float, so a pair is split from its 32-bit word with one shift or one mask; converting an
// element extracted from the pack took a PRMT and a shift for the upper one.
template <class T, int E>
__device__ __forceinline__ float element(const Pack<T, E>& p, int i) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> && E % 2 == 0) {
    uint32_t word;
    memcpy(&word, &p.v[i & ~1], sizeof(word));
    return __uint_as_float(i % 2 == 1 ? word & 0xffff0000u : word << 16);
  } else {
    return to_float(p.v[i]);
  }
}

// E elements at p (aligned to sizeof(T) * E), widened to float.
template <class T, int E>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[E]) {
  const Pack<T, E> pack = *reinterpret_cast<const Pack<T, E>*>(p);
#pragma unroll
  for (int i = 0; i < E; ++i) out[i] = to_float(pack.v[i]);
}

// load_floats with element's widening (bf16 pairs split from their 32-bit words), for the channel
// norms: widening each 16-bit element kept a pack's halves live, up to 52 more registers in their
// elementwise walks of eight bf16 packs. (The row norms keep load_floats: there one kernel, bf16
// forward_split_apply, took 60 registers with this where it takes 50.)
template <class T, int E>
__device__ __forceinline__ void load_elements(const T* p, float (&out)[E]) {
  const Pack<T, E> pack = *reinterpret_cast<const Pack<T, E>*>(p);
#pragma unroll
  for (int i = 0; i < E; ++i) out[i] = element(pack, i);
}

// Asks L2 to fetch the line holding p (global memory) without waiting for it and without a
// register: a later load of it then waits on L2, not on DRAM.
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(__cvta_generic_to_global(p)));
}

// E floats rounded to T and stored at p (aligned to sizeof(T) * E).
template <class T, int E>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[E]) {
  Pack<T, E> pack;
#pragma unroll
  for (int i = 0; i < E; ++i) pack.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, E>*>(p) = pack;
}

// A pack stored to global memory with one access of its whole width: a 16-byte pack as one
// st.global.v4.b32. Where the compiler rebuilds a pack store from its elements it may emit E narrow
// stores instead (it did in the row norms' staged kernels, whose loops it could not prove aligned:
// 8 two-byte stores a bf16 pack, and 4 four-byte ones when stored as a uint4), which this cannot
// become. The "memory" clobber keeps the compiler from moving other memory accesses across it.
// Other pack sizes are stored as a Pack.
template <class T, int E>
__device__ __forceinline__ void store_pack_global(T* p, const Pack<T, E>& pack) {
  if constexpr (sizeof(Pack<T, E>) == 16) {
    unsigned w[4];
    __builtin_memcpy(w, &pack, 16);
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(__cvta_generic_to_global(p)),
                 "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
                 : "memory");
  } else {
    *reinterpret_cast<Pack<T, E>*>(p) = pack;
  }
}

// E floats rounded to T and stored at p in global memory (aligned to sizeof(T) * E) with
// store_pack_global.
template <class T, int E>
__device__ __forceinline__ void store_floats_global(T* p, const float (&in)[E]) {
  Pack<T, E> pack;
#pragma unroll
  for (int i = 0; i < E; ++i) pack.v[i] = from_float<T>(in[i]);
  store_pack_global<T, E>(p, pack);
}

// A float of global memory that is not written during the kernel, loaded where the call stands:
// the volatile asm keeps the compiler from hoisting it out of a loop, for values that are cheaper
// to reload from L1 at each use than to hold in registers across the loop (where they spilled).
__device__ __forceinline__ float load_float_each_time(const float* p) {
  float v;
  asm volatile("ld.global.nc.f32 %0, [%1];" : "=f"(v) : "l"(__cvta_generic_to_global(p)));
  return v;
}

// A parameter vector of E elements of W (float or the activation type) starting at p, or `absent`
// for each when p is null. W packs of E elements need sizeof(W) * E alignment, which the 16-byte
// check on the activation guarantees for E * sizeof(W) <= 32 when p is 16-byte aligned: larger
// float packs are read as two halves.
template <class W, int E>
__device__ __forceinline__ void load_param(const W* p, float (&out)[E], float absent) {
  if (p == nullptr) {
#pragma unroll
    for (int i = 0; i < E; ++i) out[i] = absent;
    return;
  }
  constexpr int kPerAccess = (16 / sizeof(W)) < E ? (16 / sizeof(W)) : E;
#pragma unroll
  for (int i = 0; i < E; i += kPerAccess) {
    float part[kPerAccess];
    load_floats<W, kPerAccess>(p + i, part);
#pragma unroll
    for (int j = 0; j < kPerAccess; ++j) out[i + j] = part[j];
  }
}

}  // namespace nk::dev

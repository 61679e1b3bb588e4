// Probes of a GPU simulator: small kernels whose results are known exactly, one per feature of the
// CUDA 13 toolchain that normkit's kernels and tests rely on and that GPGPU-Sim has been seen to
// get wrong or lack. scripts/sim_check.sh runs this program under the simulator before any test
// and refuses to report a lane whose simulator fails a probe: a wrong shuffle or conversion makes
// every later result meaningless. On a real GPU every probe passes too: scripts/gpu_check.sh runs
// this program first in its tests phase (from the GPU bundle), as a sanity check of the machine.
//
// Each probe prints "probe <what>: ok" or "probe <what>: FAIL" with the first mismatches; the exit
// status is the number of failing probes (capped at 100).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cub/device/device_segmented_sort.cuh>
#include <vector>

#include "common/cluster.cuh"
#include "common/dependent_launch.cuh"
#include "compiled_arch.hpp"

namespace {

int g_mismatches = 0;  // of the probe running now

void expect(bool ok, const char* what, double got, double want) {
  if (ok) return;
  if (++g_mismatches <= 5) std::printf("    %s: got %.17g, expected %.17g\n", what, got, want);
}

bool cuda_ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::printf("    %s: %s (%d)\n", what, cudaGetErrorString(e), static_cast<int>(e));
  ++g_mismatches;
  return false;
}

// Device copies of host vectors, freed at exit of the probe.
template <class T>
struct Device {
  T* ptr = nullptr;
  size_t n = 0;
  explicit Device(size_t count) : n(count) { cudaMalloc(&ptr, count * sizeof(T)); }
  explicit Device(const std::vector<T>& host) : Device(host.size()) {
    cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~Device() { cudaFree(ptr); }
  std::vector<T> get() const {
    std::vector<T> host(n);
    cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }
};

// ---- kernels --------------------------------------------------------------------------------

__global__ void int64_to_float(const long long* s, const unsigned long long* u, float* out) {
  out[2 * threadIdx.x] = static_cast<float>(s[threadIdx.x]);
  out[2 * threadIdx.x + 1] = static_cast<float>(u[threadIdx.x]);
}

// A butterfly sum through the predicate-destination form of shfl.sync (d|p), whose predicate is
// "source lane in range".
__global__ void shuffle_with_predicate(const int* in, int* sum, int* all_valid) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = in[i], valid = 1;
  for (int offset = 16; offset > 0; offset >>= 1) {
    int r, p;
    asm volatile(
        "{ .reg .pred q; shfl.sync.bfly.b32 %0|q, %2, %3, 0x1f, 0xffffffff; selp.s32 %1, 1, 0, q; }"
        : "=r"(r), "=r"(p)
        : "r"(v), "r"(offset));
    valid &= p;
    v += r;
  }
  sum[i] = v;
  all_valid[i] = valid;
}

// Every warp of several blocks reduces its own lanes, and reads a rotated lane.
__global__ void shuffle_every_warp(const float* in, float* sum, float* rotated) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = in[i];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  sum[i] = v;
  rotated[i] = __shfl_sync(0xffffffffu, in[i], (threadIdx.x + 3) & 31);
}

// Only the odd lanes shuffle: the mask has holes.
__global__ void shuffle_sparse_mask(const int* in, int* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x & 31;
  out[i] = -1;
  if (lane & 1) out[i] = __shfl_sync(0xAAAAAAAAu, in[i], (lane + 2) & 31);
}

__global__ void bf16_round_trip(const float* in, unsigned short* bits, float* back) {
  const __nv_bfloat16 h = __float2bfloat16(in[threadIdx.x]);  // cvt.rn.bf16.f32
  bits[threadIdx.x] = __bfloat16_as_ushort(h);
  back[threadIdx.x] = __bfloat162float(h);  // mov.b32 %f, {0, %rs}
}

__global__ void fp16_rounding(const float* f, const double* d, unsigned short* out) {
  out[2 * threadIdx.x] = __half_as_ushort(__float2half_rn(f[threadIdx.x]));  // cvt.rn.f16.f32
  out[2 * threadIdx.x + 1] = __half_as_ushort(__double2half(d[threadIdx.x]));  // cvt.rn.f16.f64
}

__global__ void bit_mask_and_sleep(unsigned* out) {
  const unsigned pos = threadIdx.x & 31, len = (threadIdx.x >> 2) & 31;
  unsigned r;
  asm volatile("bmsk.clamp.b32 %0, %1, %2;" : "=r"(r) : "r"(pos), "r"(len));
  __nanosleep(10);
  out[threadIdx.x] = r;
}

__global__ void int64_literals(const long long* in, long long* out, double* inf) {
  const long long v = in[0];
  out[0] = v + 9218868437227405312LL;  // above INT_MAX
  out[1] = v + 0xFFFFFFFFLL;           // a 32-bit unsigned value in 64-bit arithmetic
  out[2] = v - 5000000000LL;           // below INT_MIN
  out[3] = v < INT64_MAX ? 1 : 0;
  inf[0] = v > 0 ? INFINITY : 1.0;  // the double's bits as a 64-bit integer move
  inf[1] = v > 0 ? -INFINITY : 1.0;
}

__global__ void touch(float* p) { p[threadIdx.x] += 1.0f; }

__global__ void halves(float* p) { p[threadIdx.x] = static_cast<float>(threadIdx.x) + 0.5f; }

// The architecture its code was compiled for (__CUDA_ARCH__: 800, 900, ...), as the device runs it.
__global__ void running_arch(int* out) {
#ifdef __CUDA_ARCH__
  *out = __CUDA_ARCH__;
#endif
}

// A chained kernel (common/dependent_launch.cuh: griddepcontrol.wait and .launch_dependents from
// sm_90) launched with programmatic stream serialization reads what the kernel before it wrote.
__global__ void chained_double(const float* x, float* y) {
  nk::dev::enter_chain();
  y[threadIdx.x] = 2.0f * x[threadIdx.x];
}

// Clusters of K CTAs (common/cluster.cuh): each publishes (v, -v) a thread in its shared memory,
// rank r only after r * spin idle instructions, so that a barrier.cluster.wait that does not wait
// reads slots not yet written; then every thread adds its slot of the K CTAs through mapa and
// ld.shared::cluster, and the second arrive and last wait keep each CTA until the others read it.
template <unsigned K>
__global__ void cluster_sums(float* out, int spin) {
  __shared__ float2 slot[64];
  const unsigned t = threadIdx.x, rank = blockIdx.x % K;
  for (int i = 0; i < spin * static_cast<int>(rank); ++i) asm volatile("nanosleep.u32 1;");
  const float v = static_cast<float>(blockIdx.x) * 1000.0f + static_cast<float>(t);
  slot[t] = make_float2(v, -v);
  nk::dev::cluster_arrive();
  nk::dev::cluster_wait();
  float2 sum = make_float2(0.0f, 0.0f);
  for (unsigned r = 0; r < K; ++r) {
    const float2 u = nk::dev::load_cluster_float2(nk::dev::cluster_address(&slot[t], r));
    sum.x += u.x;
    sum.y += u.y;
  }
  nk::dev::cluster_arrive();
  out[2 * (blockIdx.x * blockDim.x + t)] = sum.x;
  out[2 * (blockIdx.x * blockDim.x + t) + 1] = sum.y;
  nk::dev::cluster_wait();
}

// The statistics pass prefetches its next tile into L2 (prefetch.global.L2: an address, no type).
__global__ void prefetch_then_double(const float* x, float* y) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(x + blockDim.x + threadIdx.x));
  y[threadIdx.x] = 2.0f * x[threadIdx.x];
}

// The lane mask registers (CUB's three-way partition, which the quantiles' segmented sort runs,
// reads %lanemask_ge; a simulator without them aborts the process).
__global__ void lane_masks(unsigned* out) {
  unsigned eq, le, lt, ge, gt;
  asm volatile("mov.u32 %0, %%lanemask_eq;" : "=r"(eq));
  asm volatile("mov.u32 %0, %%lanemask_le;" : "=r"(le));
  asm volatile("mov.u32 %0, %%lanemask_lt;" : "=r"(lt));
  asm volatile("mov.u32 %0, %%lanemask_ge;" : "=r"(ge));
  asm volatile("mov.u32 %0, %%lanemask_gt;" : "=r"(gt));
  unsigned* o = out + 5 * threadIdx.x;
  o[0] = eq;
  o[1] = le;
  o[2] = lt;
  o[3] = ge;
  o[4] = gt;
}

// ---- probes ---------------------------------------------------------------------------------

void probe_int64_to_float() {
  std::vector<long long> s(32);
  std::vector<unsigned long long> u(32);
  for (int i = 0; i < 32; ++i) {
    s[i] = (i - 16) * 123456789012LL + i;
    u[i] = i * 987654321098ULL + 7;
  }
  Device<long long> ds(s);
  Device<unsigned long long> du(u);
  Device<float> out(64);
  int64_to_float<<<1, 32>>>(ds.ptr, du.ptr, out.ptr);
  const std::vector<float> o = out.get();
  for (int i = 0; i < 32; ++i) {
    expect(o[2 * i] == static_cast<float>(s[i]), "s64", o[2 * i], static_cast<float>(s[i]));
    expect(o[2 * i + 1] == static_cast<float>(u[i]), "u64", o[2 * i + 1],
           static_cast<float>(u[i]));
  }
}

void probe_shuffle_predicate() {
  const int n = 3 * 128;
  std::vector<int> in(n);
  for (int i = 0; i < n; ++i) in[i] = 7 * i + 1;
  Device<int> din(in), sum(n), valid(n);
  shuffle_with_predicate<<<3, 128>>>(din.ptr, sum.ptr, valid.ptr);
  const std::vector<int> s = sum.get(), v = valid.get();
  for (int i = 0; i < n; ++i) {
    int want = 0;
    for (int l = 0; l < 32; ++l) want += in[i / 32 * 32 + l];
    expect(s[i] == want, "warp sum", s[i], want);
    expect(v[i] == 1, "predicate", v[i], 1);
  }
}

void probe_shuffle_every_warp() {
  const int n = 3 * 128;
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[i] = 0.5f * static_cast<float>(i % 97);
  Device<float> din(in), sum(n), rotated(n);
  shuffle_every_warp<<<3, 128>>>(din.ptr, sum.ptr, rotated.ptr);
  const std::vector<float> s = sum.get(), r = rotated.get();
  for (int i = 0; i < n; ++i) {
    const int base = i / 32 * 32;
    float want = 0;  // exact: small halves
    for (int l = 0; l < 32; ++l) want += in[base + l];
    expect(s[i] == want, "xor sum", s[i], want);
    expect(r[i] == in[base + ((i % 32 + 3) & 31)], "rotated lane", r[i],
           in[base + ((i % 32 + 3) & 31)]);
  }
}

void probe_shuffle_sparse_mask() {
  const int n = 2 * 64;
  std::vector<int> in(n);
  for (int i = 0; i < n; ++i) in[i] = 1000 + i;
  Device<int> din(in), out(n);
  shuffle_sparse_mask<<<2, 64>>>(din.ptr, out.ptr);
  const std::vector<int> o = out.get();
  for (int i = 0; i < n; ++i) {
    const int lane = i % 32;
    const int want = (lane & 1) ? in[i / 32 * 32 + ((lane + 2) & 31)] : -1;
    expect(o[i] == want, "odd lanes", o[i], want);
  }
}

uint16_t bf16_bits(float f) {  // round to nearest even, NaN kept quiet
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void probe_bf16() {
  std::vector<float> in = {1.0f, -2.5f, 3.14159265f, 1e-40f, 65504.f, 1.00390625f,
                           1.01171875f, 3.0e38f, -0.0f, 1.0f / 3.0f};
  for (int i = static_cast<int>(in.size()); i < 32; ++i)
    in.push_back(static_cast<float>(i * 1.37 - 20.11) * (i % 3 ? 1e-3f : 7.7f));
  Device<float> din(in), back(32);
  Device<unsigned short> bits(32);
  bf16_round_trip<<<1, 32>>>(din.ptr, bits.ptr, back.ptr);
  const std::vector<unsigned short> b = bits.get();
  const std::vector<float> r = back.get();
  for (int i = 0; i < 32; ++i) {
    const uint16_t want = bf16_bits(in[i]);
    const uint32_t wide = static_cast<uint32_t>(want) << 16;
    float want_back;
    std::memcpy(&want_back, &wide, 4);
    expect(b[i] == want, "bits", b[i], want);
    expect(std::memcmp(&r[i], &want_back, 4) == 0, "back to fp32", r[i], want_back);
  }
}

void probe_fp16_rounding() {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 (even: 1); 1 + 3 * 2^-11 halfway between
  // 1 + 2^-10 and 1 + 2^-9 (even: the latter). From fp64: just above a tie rounds up, an exact
  // tie to even, 65520 (halfway to 65536) overflows to infinity. Zeros keep their sign (a
  // conversion that scales by the exponent has no exponent for them).
  const std::vector<float> f = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -(1.0f + 0x1p-11f), 0.0f,
                                -0.0f};
  const std::vector<double> d = {1.0 + 0x1p-11 + 0x1p-40, 1.0 + 0x1p-11, 65520.0, -0.0, 0.0};
  const unsigned short want[10] = {0x3C00, 0x3C01, 0x3C02, 0x3C00, 0xBC00,
                                   0x7C00, 0x0000, 0x8000, 0x8000, 0x0000};
  Device<float> df(f);
  Device<double> dd(d);
  Device<unsigned short> out(10);
  fp16_rounding<<<1, 5>>>(df.ptr, dd.ptr, out.ptr);
  const std::vector<unsigned short> o = out.get();
  for (int i = 0; i < 10; ++i) {
    expect(o[i] == want[i], i % 2 ? "from fp64" : "from fp32", o[i], want[i]);
  }
}

void probe_bmsk_nanosleep() {
  Device<unsigned> out(64);
  bit_mask_and_sleep<<<1, 64>>>(out.ptr);
  const std::vector<unsigned> o = out.get();
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned pos = t & 31, len = (t >> 2) & 31;
    const unsigned want = static_cast<unsigned>((((1ull << len) - 1) << pos) & 0xffffffffull);
    expect(o[t] == want, "bmsk", o[t], want);
  }
}

void probe_int64_literals() {
  Device<long long> in(std::vector<long long>{3}), out(4);
  Device<double> inf(2);
  int64_literals<<<1, 1>>>(in.ptr, out.ptr, inf.ptr);
  const std::vector<long long> o = out.get();
  const std::vector<double> f = inf.get();
  expect(o[0] == 3 + 9218868437227405312LL, "above INT_MAX", o[0], 3 + 9218868437227405312LL);
  expect(o[1] == 3 + 0xFFFFFFFFLL, "a u32 in 64-bit arithmetic", o[1], 3 + 0xFFFFFFFFLL);
  expect(o[2] == 3 - 5000000000LL, "below INT_MIN", o[2], 3 - 5000000000LL);
  expect(o[3] == 1, "INT64_MAX", o[3], 1);
  expect(f[0] == INFINITY && f[1] == -INFINITY, "infinities", f[0], INFINITY);
}

// The source of a host-to-device cudaMemcpyAsync from pageable memory may be reused as soon as
// the call returns (the copy is staged), even while the stream is busy.
void probe_async_copy_source() {
  cudaStream_t stream;
  if (!cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream")) return;
  Device<float> busy(std::vector<float>(4096, 1.0f)), dst(64);
  for (int i = 0; i < 8; ++i) touch<<<16, 256, 0, stream>>>(busy.ptr);
  std::vector<float>* src = new std::vector<float>(64);
  for (int i = 0; i < 64; ++i) (*src)[i] = static_cast<float>(i);
  cuda_ok(cudaMemcpyAsync(dst.ptr, src->data(), 64 * sizeof(float), cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync");
  std::fill(src->begin(), src->end(), -1.0f);
  delete src;
  cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  const std::vector<float> o = dst.get();
  for (int i = 0; i < 64; ++i) expect(o[i] == static_cast<float>(i), "copied", o[i], i);
  cudaStreamDestroy(stream);
}

void probe_prefetch() {
  std::vector<float> in(64);
  for (int i = 0; i < 64; ++i) in[i] = 0.25f * static_cast<float>(i) - 3.0f;
  Device<float> din(in), out(32);
  prefetch_then_double<<<1, 32>>>(din.ptr, out.ptr);
  const std::vector<float> o = out.get();
  for (int i = 0; i < 32; ++i) expect(o[i] == 2.0f * in[i], "doubled", o[i], 2.0f * in[i]);
}

void probe_lane_masks() {
  Device<unsigned> out(5 * 64);
  lane_masks<<<1, 64>>>(out.ptr);
  const std::vector<unsigned> o = out.get();
  const char* names[] = {"%lanemask_eq", "%lanemask_le", "%lanemask_lt", "%lanemask_ge",
                         "%lanemask_gt"};
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned long long bit = 1ull << (t & 31), below = bit - 1;
    const unsigned want[5] = {static_cast<unsigned>(bit), static_cast<unsigned>(below | bit),
                              static_cast<unsigned>(below), ~static_cast<unsigned>(below),
                              ~static_cast<unsigned>(below | bit)};
    for (int k = 0; k < 5; ++k) expect(o[5 * t + k] == want[k], names[k], o[5 * t + k], want[k]);
  }
}

// compiled_arch.hpp: the PTX version that decides the clusters and dependent launches is the
// architecture of the code that runs (compiled_arch.cu's probe, this file's kernel: the same
// architectures), and the simulator's cudaFuncGetAttributes reports it (90 in the lane of
// compute_90, 80 in the lane of compute_80).
void probe_compiled_arch() {
  Device<int> out(std::vector<int>{-1});
  running_arch<<<1, 1>>>(out.ptr);
  cuda_ok(cudaGetLastError(), "running_arch");
  const int running = out.get()[0];
  const int compiled = nk::cuda::compiled_arch();
  expect(compiled * 10 == running, "compiled_arch() * 10 against __CUDA_ARCH__", compiled * 10,
         running);
  expect(nk::cuda::compiled_for_sm90() == (running >= 900), "compiled_for_sm90()",
         nk::cuda::compiled_for_sm90(), running >= 900);
}

void probe_dependent_launch() {
  Device<float> x(32), y(32);
  halves<<<1, 32>>>(x.ptr);
  nk::dev::launch_dependent(chained_double, 1, 32, 0, nullptr, x.ptr, y.ptr);
  cuda_ok(cudaGetLastError(), "launch_dependent");
  const std::vector<float> o = y.get();
  for (int i = 0; i < 32; ++i) expect(o[i] == 2.0f * i + 1.0f, "doubled", o[i], 2.0f * i + 1.0f);
}

// Two clusters of K CTAs of cluster_sums<K>, against the sums they must give.
template <unsigned K>
void check_cluster_sums() {
  constexpr int kBlocks = 2 * K;
  Device<float> out(2 * kBlocks * 64);
  const bool launched =
      nk::dev::launch_clusters(cluster_sums<K>, kBlocks, 64, 0, nullptr, K, true, out.ptr, 50);
  expect(launched, "launch_clusters (the size allowed, cudaOccupancyMaxActiveClusters >= 1)",
         launched, 1);
  cuda_ok(cudaGetLastError(), "cluster launch");
  const std::vector<float> o = out.get();
  for (int b = 0; b < kBlocks; ++b) {
    for (int t = 0; t < 64; ++t) {
      float want = 0.0f;
      for (int r = 0; r < static_cast<int>(K); ++r) {
        want += static_cast<float>(b / K * K + r) * 1000.0f + t;
      }
      const float* got = &o[2 * (b * 64 + t)];
      expect(got[0] == want, "the cluster's slots", got[0], want);
      expect(got[1] == -want, "the cluster's slots (second float)", got[1], -want);
    }
  }
}

// Clusters of 4, and of 16 (non-portable: the split tiles of 16 parts). Returns false (skipped)
// on a device without clusters or running code compiled before sm_90: the lane of sm_80 PTX.
bool probe_clusters() {
  if (!nk::dev::clusters_available()) return false;
  check_cluster_sums<4>();
  check_cluster_sums<16>();
  return true;
}

// CUB picks its tuning from cudaFuncGetAttributes' ptxVersion (the virtual architecture): a
// simulator that reports the PTX ISA version there makes every CUB call fail.
void probe_cub_dispatch() {
  cudaFuncAttributes attr{};
  if (cuda_ok(cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(touch)),
              "cudaFuncGetAttributes")) {
    expect(attr.ptxVersion >= 50 && attr.ptxVersion < 200, "ptxVersion", attr.ptxVersion, 80);
  }
  cub::DoubleBuffer<float> keys(nullptr, nullptr);
  size_t bytes = 0;
  const int* offsets = nullptr;
  cuda_ok(cub::DeviceSegmentedSort::SortKeys(nullptr, bytes, keys, 10, 2, offsets, offsets + 1),
          "cub::DeviceSegmentedSort::SortKeys size query");
}

}  // namespace

int main() {
  struct Probe {
    const char* what;
    void (*run)();
  };
  // Probes that may not apply to the device: run() returns false to skip.
  struct OptionalProbe {
    const char* what;
    bool (*run)();
  };
  const Probe probes[] = {
      {"cvt.rn.f32.s64/u64 (64-bit integer to float)", probe_int64_to_float},
      {"shfl.sync with a predicate destination (d|p)", probe_shuffle_predicate},
      {"shfl.sync in every warp of several blocks", probe_shuffle_every_warp},
      {"shfl.sync with holes in the member mask", probe_shuffle_sparse_mask},
      {"bf16: cvt.rn.bf16.f32 and the {0, %rs} unpack", probe_bf16},
      {"fp16: ties to even from fp32, one rounding from fp64, signed zeros", probe_fp16_rounding},
      {"bmsk and nanosleep", probe_bmsk_nanosleep},
      {"64-bit integer literals", probe_int64_literals},
      {"cudaMemcpyAsync source reusable on return", probe_async_copy_source},
      {"cudaFuncGetAttributes ptxVersion and CUB dispatch", probe_cub_dispatch},
      {"compiled_arch(): the architecture of the running code", probe_compiled_arch},
      {"prefetch.global.L2", probe_prefetch},
      {"%lanemask_eq/le/lt/ge/gt", probe_lane_masks},
      {"griddepcontrol: a dependent launch reads the kernel before it", probe_dependent_launch},
  };
  const OptionalProbe optional[] = {
      {"thread block clusters of 4 and 16: barrier.cluster, mapa, ld.shared::cluster",
       probe_clusters},
  };
  int failed = 0, ran = 0;
  for (const Probe& p : probes) {
    g_mismatches = 0;
    p.run();
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    std::printf("probe %s: %s\n", p.what, g_mismatches == 0 ? "ok" : "FAIL");
    failed += g_mismatches != 0;
    ++ran;
  }
  for (const OptionalProbe& p : optional) {
    g_mismatches = 0;
    const bool applies = p.run();
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    if (!applies) {
      std::printf("probe %s: skipped (none on the device or in the code it runs)\n", p.what);
      continue;
    }
    std::printf("probe %s: %s\n", p.what, g_mismatches == 0 ? "ok" : "FAIL");
    failed += g_mismatches != 0;
    ++ran;
  }
  std::printf("probes: %d of %d failed\n", failed, ran);
  return failed < 100 ? failed : 100;
}

// Synchronized batch norm on the CUDA backend: the device halves of the two-phase API, and the
// NCCL path that runs both phases and their exchanges in one call per direction. Every count and
// statistic stays in device memory and everything is enqueued on the context's stream, so with a
// workspace set the calls can be captured in a CUDA graph.
//
// The NCCL path exchanges one packed record per rank, gathered with ncclAllGather and merged by
// every rank in rank order (never an all-reduce, whose summation order NCCL does not fix), so
// every rank gets the same bits:   [int64 count][float first[C]][float second[C]]
// forward: (count, mean, m2) of the shard; backward: (count, sum dy, sum dy * x-hat).
#include "../backend.hpp"
#include "../error.hpp"

#if NORMKIT_WITH_CUDA
#include "channel_norm.hpp"
#include "scratch.hpp"
#include "sync_batch_norm.hpp"
#endif
#if NORMKIT_WITH_NCCL
#include "../nccl_library.hpp"
#endif

namespace nk::cuda {

#if NORMKIT_WITH_CUDA

namespace {

Launch launch_on(const nk_context_s& ctx, void* workspace) {
  return Launch{ctx.stream, ctx.sm_count, workspace};
}

}  // namespace

void sync_local_stats(const nk_context_s& ctx, const ChannelShape& s, const void* x, int64_t* count,
                      float* mean, float* m2) {
  DeviceGuard device(ctx.device);
  if (s.n == 0) {  // a rank without samples: count 0, and zeros nobody reads
    store_count(count, 0, ctx.stream);
    sync_zero_sums(ctx, s.c, mean, m2);
    return;
  }
  DeviceScratch scratch(ctx, batch_norm_local_stats_workspace_size(s));
  batch_norm_local_stats(s, x, count, mean, m2, launch_on(ctx, scratch.data()));
}

void sync_zero_sums(const nk_context_s& ctx, int64_t channels, float* first, float* second) {
  DeviceGuard device(ctx.device);
  auto stream = static_cast<cudaStream_t>(ctx.stream);
  const size_t bytes = static_cast<size_t>(channels) * sizeof(float);
  check(cudaMemsetAsync(first, 0, bytes, stream), "cudaMemsetAsync");
  check(cudaMemsetAsync(second, 0, bytes, stream), "cudaMemsetAsync");
}

void sync_merge_stats(const nk_context_s& ctx, int64_t ranks, int64_t channels,
                      const int64_t* counts, const float* means, const float* m2s,
                      int64_t* total_count, float* mean, float* m2) {
  DeviceGuard device(ctx.device);
  merge_rank_stats(RankPartials{counts, 1, means, m2s, channels, ranks, channels}, total_count,
                   mean, m2, ctx.stream);
}

void sync_forward_global(const nk_context_s& ctx, const ChannelForwardArgs& a, const int64_t* count,
                         const float* mean, const float* m2) {
  DeviceGuard device(ctx.device);
  DeviceScratch scratch(ctx, batch_norm_forward_global_workspace_size(a.shape));
  batch_norm_forward_global(a, GlobalStats{count, mean, m2}, launch_on(ctx, scratch.data()));
}

void sync_backward_global(const nk_context_s& ctx, const ChannelBackwardArgs& a,
                          const int64_t* count, const float* sum_dy, const float* sum_dy_xhat) {
  DeviceGuard device(ctx.device);
  DeviceScratch scratch(ctx, batch_norm_backward_global_workspace_size(a.shape));
  batch_norm_backward_global(a, count, sum_dy, sum_dy_xhat, launch_on(ctx, scratch.data()));
}

#else

[[noreturn]] void no_sync() {
  fail(NK_ERROR_NOT_SUPPORTED, "this build of normkit has no CUDA synchronized batch norm");
}
void sync_local_stats(const nk_context_s&, const ChannelShape&, const void*, int64_t*, float*,
                      float*) {
  no_sync();
}
void sync_merge_stats(const nk_context_s&, int64_t, int64_t, const int64_t*, const float*,
                      const float*, int64_t*, float*, float*) {
  no_sync();
}
void sync_zero_sums(const nk_context_s&, int64_t, float*, float*) { no_sync(); }
void sync_forward_global(const nk_context_s&, const ChannelForwardArgs&, const int64_t*,
                         const float*, const float*) {
  no_sync();
}
void sync_backward_global(const nk_context_s&, const ChannelBackwardArgs&, const int64_t*,
                          const float*, const float*) {
  no_sync();
}

#endif

#if NORMKIT_WITH_CUDA && NORMKIT_WITH_NCCL

namespace {

// One rank's packed record, and the scratch of a call, carved the same way when measuring.
struct Records {
  int64_t channels, ranks;
  size_t record_bytes() const { return 8 + 8 * static_cast<size_t>(channels); }
  int64_t record_int64s() const { return 1 + channels; }
  RankPartials partials(const void* gathered) const {
    const auto* counts = static_cast<const int64_t*>(gathered);
    const auto* floats = static_cast<const float*>(gathered);
    return RankPartials{
        counts, record_int64s(), floats + 2, floats + 2 + channels, 2 * record_int64s(),
        ranks,  channels};
  }
};

struct SyncScratch {
  void* local;              // the local reduction's scratch
  unsigned char* send;      // this rank's record
  unsigned char* gathered;  // every rank's record, in rank order
  int64_t* count;           // the global count
  float* first;             // [C] global mean, or sum dy
  float* second;            // [C] global m2, or sum dy * x-hat
  void* global;             // the global apply's scratch
};

SyncScratch carve(Carver& c, const Records& r, size_t local_bytes, size_t global_bytes) {
  SyncScratch s;
  s.local = c.take<unsigned char>(static_cast<int64_t>(local_bytes));
  s.send = c.take<unsigned char>(static_cast<int64_t>(r.record_bytes()));
  s.gathered = c.take<unsigned char>(static_cast<int64_t>(r.record_bytes()) * r.ranks);
  s.count = c.take<int64_t>(1);
  s.first = c.take<float>(r.channels);
  s.second = c.take<float>(r.channels);
  s.global = c.take<unsigned char>(static_cast<int64_t>(global_bytes));
  return s;
}

// The communicator's size, after checking that it lives on the context's device.
int64_t ranks_of(const nk_context_s& ctx, void* comm) {
  const NcclLibrary& nccl = nccl_library();
  auto* c = static_cast<ncclComm_t>(comm);
  int ranks = 0, device = -1;
  check_nccl(nccl.comm_count(c, &ranks), "ncclCommCount");
  check_nccl(nccl.comm_cu_device(c, &device), "ncclCommCuDevice");
  if (device != ctx.device) {
    fail(NK_ERROR_INVALID_VALUE, "the NCCL communicator is on CUDA device ", device,
         " but the context on device ", ctx.device);
  }
  return ranks;
}

size_t forward_local_bytes(const ChannelShape& s) {
  return s.n == 0 ? 0 : batch_norm_local_stats_workspace_size(s);
}

ChannelBackwardArgs local_sums_args(const ChannelBackwardArgs& a, float* sum_dy,
                                    float* sum_dy_xhat) {
  ChannelBackwardArgs sums = a;
  sums.phase = NK_TRAINING;
  sums.weight = nullptr;
  sums.dx = nullptr;
  sums.dbias = sum_dy;  // the per-channel sums are exactly what dbias and dweight hold
  sums.dweight = sum_dy_xhat;
  return sums;
}

size_t backward_local_bytes(const ChannelBackwardArgs& a) {
  return a.shape.n == 0 ? 0 : channel_norm_backward_workspace_size(a);
}

// One NCCL-path call: its scratch measured, found (the workspace, or an allocation) and carved, and
// this rank's record sent and gathered.
class SyncCall {
 public:
  SyncCall(const nk_context_s& ctx, void* comm, int64_t channels, size_t local, size_t global)
      : stream_(static_cast<cudaStream_t>(ctx.stream)),
        records_{channels, ranks_of(ctx, comm)},
        memory_(ctx, bytes(records_, local, global)) {
    Carver carver(memory_.data());
    scratch_ = carve(carver, records_, local, global);
  }
  static size_t bytes(const Records& r, size_t local, size_t global) {
    Carver measure;
    carve(measure, r, local, global);
    return measure.bytes();
  }
  const SyncScratch& scratch() const { return scratch_; }
  int64_t* send_count() const { return reinterpret_cast<int64_t*>(scratch_.send); }
  float* send_first() const { return reinterpret_cast<float*>(scratch_.send + 8); }
  float* send_second() const { return send_first() + records_.channels; }
  // A rank without samples sends count 0 (and zeros nobody reads).
  void send_nothing() const {
    check(cudaMemsetAsync(scratch_.send, 0, records_.record_bytes(), stream_), "cudaMemsetAsync");
  }
  void all_gather(void* comm) const {
    check_nccl(nccl_library().all_gather(scratch_.send, scratch_.gathered, records_.record_bytes(),
                                         ncclUint8, static_cast<ncclComm_t>(comm), stream_),
               "ncclAllGather");
  }
  RankPartials gathered() const { return records_.partials(scratch_.gathered); }

 private:
  cudaStream_t stream_;
  Records records_;
  DeviceScratch memory_;
  SyncScratch scratch_{};
};

}  // namespace

size_t nccl_forward_workspace_size(const nk_context_s& ctx, void* comm, const ChannelShape& s) {
  DeviceGuard device(ctx.device);
  return SyncCall::bytes(Records{s.c, ranks_of(ctx, comm)}, forward_local_bytes(s),
                         batch_norm_forward_global_workspace_size(s));
}

void nccl_forward(const nk_context_s& ctx, void* comm, const ChannelForwardArgs& a) {
  DeviceGuard device(ctx.device);
  const ChannelShape& s = a.shape;
  const SyncCall call(ctx, comm, s.c, forward_local_bytes(s),
                      batch_norm_forward_global_workspace_size(s));
  const SyncScratch& w = call.scratch();
  if (s.n == 0) {
    call.send_nothing();
  } else {
    batch_norm_local_stats(s, a.x, call.send_count(), call.send_first(), call.send_second(),
                           launch_on(ctx, w.local));
  }
  call.all_gather(comm);
  merge_rank_stats(call.gathered(), w.count, w.first, w.second, ctx.stream);
  batch_norm_forward_global(a, GlobalStats{w.count, w.first, w.second}, launch_on(ctx, w.global));
}

size_t nccl_backward_workspace_size(const nk_context_s& ctx, void* comm,
                                    const ChannelBackwardArgs& a) {
  DeviceGuard device(ctx.device);
  return SyncCall::bytes(Records{a.shape.c, ranks_of(ctx, comm)}, backward_local_bytes(a),
                         batch_norm_backward_global_workspace_size(a.shape));
}

void nccl_backward(const nk_context_s& ctx, void* comm, const ChannelBackwardArgs& a) {
  DeviceGuard device(ctx.device);
  const ChannelShape& s = a.shape;
  const SyncCall call(ctx, comm, s.c, backward_local_bytes(a),
                      batch_norm_backward_global_workspace_size(s));
  const SyncScratch& w = call.scratch();
  if (s.n == 0) {
    call.send_nothing();
  } else {
    channel_norm_backward(local_sums_args(a, call.send_first(), call.send_second()),
                          launch_on(ctx, w.local));
    store_count(call.send_count(), s.n * s.s, ctx.stream);
  }
  call.all_gather(comm);
  sum_rank_sums(call.gathered(), w.count, w.first, w.second, a.dbias, a.dweight, ctx.stream);
  if (a.dx != nullptr) {
    batch_norm_backward_global(a, w.count, w.first, w.second, launch_on(ctx, w.global));
  }
}

#else

[[noreturn]] void no_nccl() {
  fail(NK_ERROR_NOT_SUPPORTED,
       "this build of normkit has no NCCL path (NCCL's header was not found when it was built, or "
       "NORMKIT_ENABLE_NCCL was OFF)");
}
size_t nccl_forward_workspace_size(const nk_context_s&, void*, const ChannelShape&) { no_nccl(); }
void nccl_forward(const nk_context_s&, void*, const ChannelForwardArgs&) { no_nccl(); }
size_t nccl_backward_workspace_size(const nk_context_s&, void*, const ChannelBackwardArgs&) {
  no_nccl();
}
void nccl_backward(const nk_context_s&, void*, const ChannelBackwardArgs&) { no_nccl(); }

#endif

}  // namespace nk::cuda

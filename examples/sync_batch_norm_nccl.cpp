// Synchronized batch norm over NCCL: how a training engine wires nk_sync_batch_norm_* in.
//
// One rank per GPU, each driven by its own thread here (in a multi-node job: its own process, with
// the communicator made by ncclCommInitRank from an ncclUniqueId that rank 0 shares out of band).
// Each rank holds a shard of the global batch; the forward normalizes it with the statistics of
// the whole global batch and every rank's running statistics stay identical. The calls must not
// sit inside ncclGroupStart/ncclGroupEnd: normkit enqueues its own kernels after each all-gather.
//
// Runs on every visible GPU (one is enough); prints what each rank sees.
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <normkit/normkit.h>

#include <cstdio>
#include <random>
#include <thread>
#include <vector>

namespace {

#define CHECK_CUDA(call)                                                        \
  do {                                                                          \
    const cudaError_t err_ = (call);                                            \
    if (err_ != cudaSuccess) {                                                  \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(err_)); \
      return 1;                                                                 \
    }                                                                           \
  } while (0)
#define CHECK_NK(call)                                                 \
  do {                                                                 \
    if ((call) != NK_SUCCESS) {                                        \
      std::fprintf(stderr, "%s failed: %s\n", #call, nk_last_error()); \
      return 1;                                                        \
    }                                                                  \
  } while (0)

constexpr int64_t kChannels = 4, kSpatial = 64;

// One rank's training step: forward with global statistics, then backward of a simple loss.
int train_step(int rank, int device, ncclComm_t comm, int64_t shard_n, std::vector<float>& out) {
  CHECK_CUDA(cudaSetDevice(device));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  nk_context ctx = nullptr;
  CHECK_NK(nk_context_create(NK_BACKEND_CUDA, device, &ctx));
  CHECK_NK(nk_context_set_stream(ctx, stream));
  const nk_act_desc desc{shard_n, kChannels, kSpatial, NK_NCHW, NK_F32};
  const nk_norm_params params = nk_norm_params_default();
  // A workspace from the size query: no allocation inside the step, so it can be graph-captured.
  size_t fwd_bytes = 0, bwd_bytes = 0;
  CHECK_NK(nk_sync_batch_norm_forward_workspace_size(ctx, comm, &desc, &params, &fwd_bytes));
  CHECK_NK(nk_sync_batch_norm_backward_workspace_size(ctx, comm, &desc, &bwd_bytes));
  void* workspace = nullptr;
  CHECK_CUDA(cudaMalloc(&workspace, fwd_bytes > bwd_bytes ? fwd_bytes : bwd_bytes));
  CHECK_NK(nk_context_set_workspace(ctx, workspace, fwd_bytes > bwd_bytes ? fwd_bytes : bwd_bytes));

  const size_t elems = static_cast<size_t>(shard_n * kChannels * kSpatial);
  std::vector<float> host_x(elems);
  std::mt19937 rng(100 + rank);
  std::normal_distribution<float> normal(3.0f, 2.0f);  // every shard from the same distribution
  for (float& v : host_x) v = normal(rng);
  float *x, *y, *dy, *dx, *stats;  // stats: running mean, var, save mean, invstd, dweight, dbias
  int64_t* tracked;
  CHECK_CUDA(cudaMalloc(&x, elems * 4 + 4));
  CHECK_CUDA(cudaMalloc(&y, elems * 4 + 4));
  CHECK_CUDA(cudaMalloc(&dy, elems * 4 + 4));
  CHECK_CUDA(cudaMalloc(&dx, elems * 4 + 4));
  CHECK_CUDA(cudaMalloc(&stats, 6 * kChannels * 4));
  CHECK_CUDA(cudaMalloc(&tracked, 8));
  CHECK_CUDA(cudaMemcpy(x, host_x.data(), elems * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dy, host_x.data(), elems * 4, cudaMemcpyHostToDevice));  // loss x*y
  const std::vector<float> init = {0, 0, 0, 0, 1, 1, 1, 1};
  CHECK_CUDA(cudaMemcpy(stats, init.data(), 8 * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(tracked, 0, 8));
  float *running_mean = stats, *running_var = stats + kChannels;
  float *save_mean = stats + 2 * kChannels, *save_invstd = stats + 3 * kChannels;
  float *dweight = stats + 4 * kChannels, *dbias = stats + 5 * kChannels;

  CHECK_NK(nk_sync_batch_norm_forward(ctx, comm, &desc, &params, x, nullptr, nullptr, running_mean,
                                      running_var, tracked, y, save_mean, save_invstd));
  CHECK_NK(nk_sync_batch_norm_backward(ctx, comm, &desc, x, dy, nullptr, save_mean, save_invstd, dx,
                                       dweight, dbias));
  out.assign(6 * kChannels, 0.0f);
  CHECK_CUDA(cudaMemcpyAsync(out.data(), stats, out.size() * 4, cudaMemcpyDeviceToHost, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  for (void* p : {static_cast<void*>(x), static_cast<void*>(y), static_cast<void*>(dy),
                  static_cast<void*>(dx), static_cast<void*>(stats), static_cast<void*>(tracked),
                  workspace}) {
    cudaFree(p);
  }
  nk_context_destroy(ctx);
  cudaStreamDestroy(stream);
  return 0;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("No CUDA device: this example needs at least one GPU (and libnccl.so.2).\n");
    return 0;
  }
  std::vector<int> ids(devices);
  for (int i = 0; i < devices; ++i) ids[i] = i;
  std::vector<ncclComm_t> comms(devices);
  if (ncclCommInitAll(comms.data(), devices, ids.data()) != ncclSuccess) {
    std::fprintf(stderr, "ncclCommInitAll failed\n");
    return 1;
  }
  // Uneven shards: rank r holds r + 2 images.
  std::vector<std::vector<float>> results(devices);
  std::vector<int> rc(devices, 0);
  std::vector<std::thread> ranks;
  for (int r = 0; r < devices; ++r) {
    ranks.emplace_back([&, r] { rc[r] = train_step(r, ids[r], comms[r], r + 2, results[r]); });
  }
  for (std::thread& t : ranks) t.join();
  for (ncclComm_t c : comms) ncclCommDestroy(c);
  for (int r = 0; r < devices; ++r) {
    if (rc[r] != 0) return 1;
    const std::vector<float>& v = results[r];
    std::printf("rank %d: running_mean %.4f %.4f %.4f %.4f  save_invstd %.4f  dbias %.3f\n", r,
                v[0], v[1], v[2], v[3], v[3 * kChannels], v[5 * kChannels]);
  }
  std::printf("Every rank prints the same statistics: they are the global batch's.\n");
  return 0;
}

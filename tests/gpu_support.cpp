#include "gpu_support.hpp"

#include <cstdlib>
#include <cstring>
#include <utility>

#if NORMKIT_TEST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace nkt {

bool reduced_gpu_tests() {
  const char* v = std::getenv("NORMKIT_GPU_TESTS");
  return v != nullptr && std::strcmp(v, "reduced") == 0;
}

ScopedEnv::ScopedEnv(const char* name, const std::string& value) : name_(name) {
  if (const char* v = std::getenv(name)) {
    previous_ = v;
    had_previous_ = true;
  }
  setenv(name, value.c_str(), 1);
}

ScopedEnv::~ScopedEnv() {
  if (had_previous_) {
    setenv(name_.c_str(), previous_.c_str(), 1);
  } else {
    unsetenv(name_.c_str());
  }
}

#if NORMKIT_TEST_WITH_CUDA

nk_context context_with_sm_limit(int sms) {
  const std::string value = std::to_string(sms);
  setenv("NORMKIT_TEST_SM_LIMIT", value.c_str(), 1);
  nk_context ctx = nullptr;
  const nk_status st = nk_context_create(NK_BACKEND_CUDA, 0, &ctx);
  unsetenv("NORMKIT_TEST_SM_LIMIT");
  EXPECT_EQ(st, NK_SUCCESS) << nk_last_error();
  return st == NK_SUCCESS ? ctx : nullptr;
}

std::string graphs_unsupported_reason() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "";
  const std::string device = prop.name;
  if (device.rfind("GPGPU-Sim", 0) != 0) return "";
  return "CUDA graph capture is not simulated (device " + device + ")";
}

bool device_has_clusters() {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&value, cudaDevAttrClusterLaunch, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return value != 0;
}

namespace {
void expect_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) ADD_FAILURE() << what << ": " << cudaGetErrorString(err);
}
}  // namespace

DeviceBuffer::DeviceBuffer(nk_dtype dtype, int64_t count, int64_t offset_elems)
    : dtype_(dtype), count_(count) {
  const size_t bytes = static_cast<size_t>(count + offset_elems) * elem_size(dtype);
  expect_cuda(cudaMalloc(&base_, bytes > 0 ? bytes : 1), "cudaMalloc");
  data_ = static_cast<unsigned char*>(base_) + offset_elems * elem_size(dtype);
  poison();
}

DeviceBuffer::DeviceBuffer(const Buffer& host, int64_t offset_elems)
    : DeviceBuffer(host.dtype(), host.size(), offset_elems) {
  upload(host);
}

DeviceBuffer::~DeviceBuffer() {
  if (base_) cudaFree(base_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : dtype_(other.dtype_),
      count_(other.count_),
      base_(std::exchange(other.base_, nullptr)),
      data_(std::exchange(other.data_, nullptr)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (base_) cudaFree(base_);
    dtype_ = other.dtype_;
    count_ = other.count_;
    base_ = std::exchange(other.base_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
  }
  return *this;
}

// Setup is synchronous: kernels on a non-blocking stream must never race with it.
void DeviceBuffer::upload(const Buffer& host) {
  expect_cuda(cudaMemcpy(data_, host.data(), host.bytes().size(), cudaMemcpyHostToDevice),
              "cudaMemcpy to device");
  expect_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

Buffer DeviceBuffer::download() const {
  Buffer host(dtype_, count_);
  expect_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  expect_cuda(cudaMemcpy(host.data(), data_, host.bytes().size(), cudaMemcpyDeviceToHost),
              "cudaMemcpy to host");
  return host;
}

void DeviceBuffer::poison() {
  expect_cuda(cudaMemset(data_, 0xFF, static_cast<size_t>(count_) * elem_size(dtype_)),
              "cudaMemset");
  expect_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

void GpuTest::SetUp() {
  if (nk_context_create(NK_BACKEND_CUDA, 0, &gpu_) != NK_SUCCESS) {
    gpu_ = nullptr;
    no_device_ = nk_last_error();
    if (!paths_before_device_) GTEST_SKIP() << "no CUDA device: " << no_device_;
  }
}

void GpuTest::TearDown() {
  if (gpu_) {
    synchronize();
    nk_context_destroy(gpu_);
  }
}

void GpuTest::synchronize() { expect_cuda(cudaDeviceSynchronize(), "kernel execution"); }

#else  // built without the CUDA backend: every GPU test skips

DeviceBuffer::DeviceBuffer(nk_dtype, int64_t, int64_t) {}
DeviceBuffer::DeviceBuffer(const Buffer&, int64_t) {}
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer::DeviceBuffer(DeviceBuffer&&) noexcept = default;
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept = default;
void DeviceBuffer::upload(const Buffer&) {}
Buffer DeviceBuffer::download() const { return Buffer(); }
void DeviceBuffer::poison() {}
void GpuTest::SetUp() { GTEST_SKIP() << "normkit was built without its CUDA backend"; }
std::string graphs_unsupported_reason() { return ""; }
bool device_has_clusters() { return false; }
nk_context context_with_sm_limit(int) { return nullptr; }
void GpuTest::TearDown() {}
void GpuTest::synchronize() {}

#endif

}  // namespace nkt

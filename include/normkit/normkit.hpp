// normkit C++ API: header-only wrappers over the C API in normkit.h.
//
//  - nk::Context owns an nk_context (RAII, movable, not copyable).
//  - Every failing call throws nk::Error, which carries the nk_status and nk_last_error()'s
//    message. As in the C API, a failing call has written nothing.
//  - The typed overloads take the same arguments as the C functions, in the same order, with the
//    activation dtype deduced from the element type: float, nk::half or nk::bfloat16 (16-bit
//    storage types, layout-compatible with CUDA's __half and __nv_bfloat16; specialize
//    nk::dtype_of for other 16-bit types). Layer/RMS norm parameters are float or the activation
//    type, deduced likewise; with no weight, name the types (layer_norm_forward<T, float>(...))
//    since a bare nullptr deduces nothing. See normkit.h for the formulas, shapes and nullability
//    of each argument.
//
// Example:
//   nk::Context ctx = nk::Context::cpu();
//   nk_norm_params p = nk_norm_params_default();
//   nk::batch_norm_forward(ctx, nk::Shape{n, c, h * w, NK_NCHW}, p, x, weight, bias,
//                          running_mean, running_var, &num_batches_tracked, y, save_mean,
//                          save_invstd);
#ifndef NORMKIT_NORMKIT_HPP_
#define NORMKIT_NORMKIT_HPP_

#include <normkit/normkit.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace nk {

class Error : public std::runtime_error {
 public:
  Error(nk_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  nk_status status() const noexcept { return status_; }

 private:
  nk_status status_;
};

// Throws nk::Error for any status but NK_SUCCESS.
inline void check(nk_status status) {
  if (status != NK_SUCCESS) throw Error(status, nk_last_error());
}

inline int version() noexcept { return nk_version(); }

// 16-bit storage types (bit patterns); arithmetic on them is the user's business.
struct half {
  uint16_t bits;
};
struct bfloat16 {
  uint16_t bits;
};

template <class T>
struct dtype_of;  // nk_dtype of a storage type
template <>
struct dtype_of<float> {
  static constexpr nk_dtype value = NK_F32;
};
template <>
struct dtype_of<half> {
  static constexpr nk_dtype value = NK_F16;
};
template <>
struct dtype_of<bfloat16> {
  static constexpr nk_dtype value = NK_BF16;
};

class Context {
 public:
  explicit Context(nk_backend backend, int device = 0) {
    check(nk_context_create(backend, device, &ctx_));
  }
  static Context cpu() { return Context(NK_BACKEND_CPU); }
  static Context cuda(int device = 0) { return Context(NK_BACKEND_CUDA, device); }

  Context(Context&& other) noexcept : ctx_(std::exchange(other.ctx_, nullptr)) {}
  Context& operator=(Context&& other) noexcept {
    if (this != &other) {
      nk_context_destroy(ctx_);
      ctx_ = std::exchange(other.ctx_, nullptr);
    }
    return *this;
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() { nk_context_destroy(ctx_); }

  nk_context get() const noexcept { return ctx_; }
  operator nk_context() const noexcept { return ctx_; }  // NOLINT: passes straight to the C API

  nk_backend backend() const {
    nk_backend b;
    check(nk_context_get_backend(ctx_, &b));
    return b;
  }
  void set_stream(void* cuda_stream) { check(nk_context_set_stream(ctx_, cuda_stream)); }
  void set_workspace(void* ptr, size_t bytes) { check(nk_context_set_workspace(ctx_, ptr, bytes)); }

 private:
  nk_context ctx_ = nullptr;
};

// N x C x S activation shape (S: product of the spatial sizes) in a layout.
struct Shape {
  int64_t n, c, spatial;
  nk_layout layout = NK_NCHW;
};

template <class T>
nk_act_desc describe(const Shape& s) {
  return nk_act_desc{s.n, s.c, s.spatial, s.layout, dtype_of<T>::value};
}

template <class T, class W>
nk_row_desc describe_rows(int64_t rows, int64_t cols) {
  return nk_row_desc{rows, cols, dtype_of<T>::value, dtype_of<W>::value};
}

// ---- batch norm ------------------------------------------------------------------------------

template <class T>
size_t batch_norm_forward_workspace_size(const Context& ctx, const Shape& s,
                                         const nk_norm_params& p) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_batch_norm_forward_workspace_size(ctx, &d, &p, &bytes));
  return bytes;
}

template <class T>
void batch_norm_forward(const Context& ctx, const Shape& s, const nk_norm_params& p, const T* x,
                        const float* weight, const float* bias, float* running_mean,
                        float* running_var, int64_t* num_batches_tracked, T* y, float* save_mean,
                        float* save_invstd) {
  const nk_act_desc d = describe<T>(s);
  check(nk_batch_norm_forward(ctx, &d, &p, x, weight, bias, running_mean, running_var,
                              num_batches_tracked, y, save_mean, save_invstd));
}

template <class T>
size_t batch_norm_backward_workspace_size(const Context& ctx, const Shape& s,
                                          const nk_norm_params& p) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_batch_norm_backward_workspace_size(ctx, &d, &p, &bytes));
  return bytes;
}

template <class T>
void batch_norm_backward(const Context& ctx, const Shape& s, const nk_norm_params& p, const T* x,
                         const T* dy, const float* weight, const float* running_mean,
                         const float* running_var, const float* save_mean, const float* save_invstd,
                         T* dx, float* dweight, float* dbias) {
  const nk_act_desc d = describe<T>(s);
  check(nk_batch_norm_backward(ctx, &d, &p, x, dy, weight, running_mean, running_var, save_mean,
                               save_invstd, dx, dweight, dbias));
}

// ---- instance norm ---------------------------------------------------------------------------

template <class T>
size_t instance_norm_forward_workspace_size(const Context& ctx, const Shape& s,
                                            const nk_norm_params& p) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_instance_norm_forward_workspace_size(ctx, &d, &p, &bytes));
  return bytes;
}

template <class T>
void instance_norm_forward(const Context& ctx, const Shape& s, const nk_norm_params& p, const T* x,
                           const float* weight, const float* bias, float* running_mean,
                           float* running_var, int64_t* num_batches_tracked, T* y, float* save_mean,
                           float* save_invstd) {
  const nk_act_desc d = describe<T>(s);
  check(nk_instance_norm_forward(ctx, &d, &p, x, weight, bias, running_mean, running_var,
                                 num_batches_tracked, y, save_mean, save_invstd));
}

template <class T>
size_t instance_norm_backward_workspace_size(const Context& ctx, const Shape& s,
                                             const nk_norm_params& p) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_instance_norm_backward_workspace_size(ctx, &d, &p, &bytes));
  return bytes;
}

template <class T>
void instance_norm_backward(const Context& ctx, const Shape& s, const nk_norm_params& p, const T* x,
                            const T* dy, const float* weight, const float* running_mean,
                            const float* running_var, const float* save_mean,
                            const float* save_invstd, T* dx, float* dweight, float* dbias) {
  const nk_act_desc d = describe<T>(s);
  check(nk_instance_norm_backward(ctx, &d, &p, x, dy, weight, running_mean, running_var, save_mean,
                                  save_invstd, dx, dweight, dbias));
}

// ---- group norm ------------------------------------------------------------------------------

template <class T>
size_t group_norm_forward_workspace_size(const Context& ctx, const Shape& s, int64_t groups) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_group_norm_forward_workspace_size(ctx, &d, groups, &bytes));
  return bytes;
}

template <class T>
void group_norm_forward(const Context& ctx, const Shape& s, int64_t groups, double eps, const T* x,
                        const float* weight, const float* bias, T* y, float* save_mean,
                        float* save_invstd) {
  const nk_act_desc d = describe<T>(s);
  check(nk_group_norm_forward(ctx, &d, groups, eps, x, weight, bias, y, save_mean, save_invstd));
}

template <class T>
size_t group_norm_backward_workspace_size(const Context& ctx, const Shape& s, int64_t groups) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_group_norm_backward_workspace_size(ctx, &d, groups, &bytes));
  return bytes;
}

template <class T>
void group_norm_backward(const Context& ctx, const Shape& s, int64_t groups, const T* x,
                         const T* dy, const float* weight, const float* save_mean,
                         const float* save_invstd, T* dx, float* dweight, float* dbias) {
  const nk_act_desc d = describe<T>(s);
  check(nk_group_norm_backward(ctx, &d, groups, x, dy, weight, save_mean, save_invstd, dx, dweight,
                               dbias));
}

// ---- layer norm (W: float or T) --------------------------------------------------------------

template <class T, class W = T>
size_t layer_norm_forward_workspace_size(const Context& ctx, int64_t rows, int64_t cols) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  size_t bytes = 0;
  check(nk_layer_norm_forward_workspace_size(ctx, &d, &bytes));
  return bytes;
}

template <class T, class W = T>
size_t layer_norm_backward_workspace_size(const Context& ctx, int64_t rows, int64_t cols) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  size_t bytes = 0;
  check(nk_layer_norm_backward_workspace_size(ctx, &d, &bytes));
  return bytes;
}

template <class T, class W>
void layer_norm_forward(const Context& ctx, int64_t rows, int64_t cols, double eps, const T* x,
                        const W* weight, const W* bias, T* y, float* save_mean, float* save_rstd) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  check(nk_layer_norm_forward(ctx, &d, eps, x, weight, bias, y, save_mean, save_rstd));
}

template <class T, class W>
void layer_norm_backward(const Context& ctx, int64_t rows, int64_t cols, const T* x, const T* dy,
                         const W* weight, const float* save_mean, const float* save_rstd, T* dx,
                         W* dweight, W* dbias) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  check(nk_layer_norm_backward(ctx, &d, x, dy, weight, save_mean, save_rstd, dx, dweight, dbias));
}

// ---- RMS norm (W: float or T) ----------------------------------------------------------------

template <class T, class W = T>
size_t rms_norm_forward_workspace_size(const Context& ctx, int64_t rows, int64_t cols) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  size_t bytes = 0;
  check(nk_rms_norm_forward_workspace_size(ctx, &d, &bytes));
  return bytes;
}

template <class T, class W = T>
size_t rms_norm_backward_workspace_size(const Context& ctx, int64_t rows, int64_t cols) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  size_t bytes = 0;
  check(nk_rms_norm_backward_workspace_size(ctx, &d, &bytes));
  return bytes;
}

template <class T, class W>
void rms_norm_forward(const Context& ctx, int64_t rows, int64_t cols, double eps, const T* x,
                      const W* weight, T* y, float* save_rstd) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  check(nk_rms_norm_forward(ctx, &d, eps, x, weight, y, save_rstd));
}

template <class T, class W>
void rms_norm_backward(const Context& ctx, int64_t rows, int64_t cols, const T* x, const T* dy,
                       const W* weight, const float* save_rstd, T* dx, W* dweight) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  check(nk_rms_norm_backward(ctx, &d, x, dy, weight, save_rstd, dx, dweight));
}

// ---- fused layer and RMS norm (W: float or T) --------------------------------------------------
// The buffers are the C structs (untyped pointers: an fp8 output is bytes, not T), so name the
// types: row_norm_fused_forward<nk::bfloat16, float>(ctx, rows, cols, fusion, eps, buffers).

template <class T, class W = T>
size_t row_norm_fused_forward_workspace_size(const Context& ctx, int64_t rows, int64_t cols,
                                             const nk_row_fusion& fusion) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  size_t bytes = 0;
  check(nk_row_norm_fused_forward_workspace_size(ctx, &d, &fusion, &bytes));
  return bytes;
}

template <class T, class W = T>
size_t row_norm_fused_backward_workspace_size(const Context& ctx, int64_t rows, int64_t cols,
                                              const nk_row_fusion& fusion) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  size_t bytes = 0;
  check(nk_row_norm_fused_backward_workspace_size(ctx, &d, &fusion, &bytes));
  return bytes;
}

template <class T, class W = T>
void row_norm_fused_forward(const Context& ctx, int64_t rows, int64_t cols,
                            const nk_row_fusion& fusion, double eps,
                            const nk_row_fused_forward_buffers& buffers) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  check(nk_row_norm_fused_forward(ctx, &d, &fusion, eps, &buffers));
}

template <class T, class W = T>
void row_norm_fused_backward(const Context& ctx, int64_t rows, int64_t cols,
                             const nk_row_fusion& fusion,
                             const nk_row_fused_backward_buffers& buffers) {
  const nk_row_desc d = describe_rows<T, W>(rows, cols);
  check(nk_row_norm_fused_backward(ctx, &d, &fusion, &buffers));
}

// ---- fused batch, instance and group norm (activation, residual) --------------------------------
// The buffers are the C structs (the mask is 32-bit words, the rest as in normkit.h), so name the
// activation type: channel_norm_fused_forward<nk::half>(ctx, shape, fusion, params, buffers).

// Batch norm, nothing fused; set norm, groups, residual and activation from there.
inline nk_channel_fusion channel_fusion_default() noexcept { return nk_channel_fusion_default(); }

// Bytes of the ReLU mask of a shape: 4 * ceil(N*C*S / 32).
template <class T>
size_t channel_norm_relu_mask_size(const Shape& s) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_channel_norm_relu_mask_size(&d, &bytes));
  return bytes;
}

template <class T>
size_t channel_norm_fused_forward_workspace_size(const Context& ctx, const Shape& s,
                                                 const nk_channel_fusion& fusion,
                                                 const nk_norm_params& p) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_channel_norm_fused_forward_workspace_size(ctx, &d, &fusion, &p, &bytes));
  return bytes;
}

template <class T>
size_t channel_norm_fused_backward_workspace_size(const Context& ctx, const Shape& s,
                                                  const nk_channel_fusion& fusion,
                                                  const nk_norm_params& p) {
  const nk_act_desc d = describe<T>(s);
  size_t bytes = 0;
  check(nk_channel_norm_fused_backward_workspace_size(ctx, &d, &fusion, &p, &bytes));
  return bytes;
}

template <class T>
void channel_norm_fused_forward(const Context& ctx, const Shape& s, const nk_channel_fusion& fusion,
                                const nk_norm_params& p,
                                const nk_channel_fused_forward_buffers& buffers) {
  const nk_act_desc d = describe<T>(s);
  check(nk_channel_norm_fused_forward(ctx, &d, &fusion, &p, &buffers));
}

template <class T>
void channel_norm_fused_backward(const Context& ctx, const Shape& s,
                                 const nk_channel_fusion& fusion, const nk_norm_params& p,
                                 const nk_channel_fused_backward_buffers& buffers) {
  const nk_act_desc d = describe<T>(s);
  check(nk_channel_norm_fused_backward(ctx, &d, &fusion, &p, &buffers));
}

// ---- statistics accumulator ------------------------------------------------------------------

// Exact per-feature statistics over many batches (nk_stats_*), owned.
class Stats {
 public:
  Stats(const Context& ctx, int64_t features) { check(nk_stats_create(ctx, features, &stats_)); }
  Stats(Stats&& other) noexcept : stats_(std::exchange(other.stats_, nullptr)) {}
  Stats& operator=(Stats&& other) noexcept {
    if (this != &other) {
      nk_stats_destroy(stats_);
      stats_ = std::exchange(other.stats_, nullptr);
    }
    return *this;
  }
  Stats(const Stats&) = delete;
  Stats& operator=(const Stats&) = delete;
  ~Stats() { nk_stats_destroy(stats_); }

  nk_stats get() const noexcept { return stats_; }
  void reset() { check(nk_stats_reset(stats_)); }
  // One feature per channel of an N x C x S batch.
  template <class T>
  void add_channels(const Shape& s, const T* x) {
    const nk_act_desc d = describe<T>(s);
    check(nk_stats_add_channels(stats_, &d, x));
  }
  // One feature per column of a rows x cols batch.
  template <class T>
  void add_columns(int64_t rows, int64_t cols, const T* x) {
    const nk_row_desc d = describe_rows<T, T>(rows, cols);
    check(nk_stats_add_columns(stats_, &d, x));
  }
  void merge(const Stats& other) { check(nk_stats_merge(stats_, other.stats_)); }
  int64_t count() const {
    int64_t n = 0;
    check(nk_stats_count(stats_, &n));
    return n;
  }
  // Each output [features], nullable: mean, biased and unbiased variance.
  void finalize(float* mean, float* var, float* var_unbiased) const {
    check(nk_stats_finalize(stats_, mean, var, var_unbiased));
  }

 private:
  nk_stats stats_ = nullptr;
};

}  // namespace nk

#endif  // NORMKIT_NORMKIT_HPP_

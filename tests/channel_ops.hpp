// Calls the library's batch, instance or group norm through one signature, so that tests can be
// parameterized over the family. Group norm has no phase and no running statistics: those
// arguments must be NK_TRAINING and NULL for it.
#pragma once

#include <normkit/normkit.h>

#include "test_support.hpp"

namespace nkt {

inline nk_act_desc desc_of(const ChannelCase& k, nk_dtype dtype) {
  return nk_act_desc{k.n, k.c, k.s, k.layout, dtype};
}

inline const char* name(Family f) {
  return f == Family::kBatch ? "batch" : f == Family::kInstance ? "instance" : "group";
}

inline nk_status channel_forward(nk_context ctx, const ChannelCase& k, nk_dtype dtype,
                                 const nk_norm_params& p, const void* x, const float* weight,
                                 const float* bias, float* running_mean, float* running_var,
                                 int64_t* num_batches_tracked, void* y, float* save_mean,
                                 float* save_invstd) {
  const nk_act_desc d = desc_of(k, dtype);
  switch (k.family) {
    case Family::kBatch:
      return nk_batch_norm_forward(ctx, &d, &p, x, weight, bias, running_mean, running_var,
                                   num_batches_tracked, y, save_mean, save_invstd);
    case Family::kInstance:
      return nk_instance_norm_forward(ctx, &d, &p, x, weight, bias, running_mean, running_var,
                                      num_batches_tracked, y, save_mean, save_invstd);
    case Family::kGroup:
      break;
  }
  return nk_group_norm_forward(ctx, &d, k.groups, p.eps, x, weight, bias, y, save_mean,
                               save_invstd);
}

inline nk_status channel_backward(nk_context ctx, const ChannelCase& k, nk_dtype dtype,
                                  const nk_norm_params& p, const void* x, const void* dy,
                                  const float* weight, const float* running_mean,
                                  const float* running_var, const float* save_mean,
                                  const float* save_invstd, void* dx, float* dweight,
                                  float* dbias) {
  const nk_act_desc d = desc_of(k, dtype);
  switch (k.family) {
    case Family::kBatch:
      return nk_batch_norm_backward(ctx, &d, &p, x, dy, weight, running_mean, running_var,
                                    save_mean, save_invstd, dx, dweight, dbias);
    case Family::kInstance:
      return nk_instance_norm_backward(ctx, &d, &p, x, dy, weight, running_mean, running_var,
                                       save_mean, save_invstd, dx, dweight, dbias);
    case Family::kGroup:
      break;
  }
  return nk_group_norm_backward(ctx, &d, k.groups, x, dy, weight, save_mean, save_invstd, dx,
                                dweight, dbias);
}

}  // namespace nkt

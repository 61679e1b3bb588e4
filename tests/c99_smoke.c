/* Compiled as strict C99: the public header is valid C, and a C program can normalize with it. */
#include <math.h>
#include <normkit/normkit.h>
#include <stdio.h>

int main(void) {
  nk_context ctx = NULL;
  nk_row_desc desc = {1, 4, NK_F32, NK_F32};
  const float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  float y[4] = {0};
  float mean = 0, rstd = 0;
  int i;
  if (nk_version() != 10000 * NK_VERSION_MAJOR + 100 * NK_VERSION_MINOR + NK_VERSION_PATCH)
    return 1;
  if (nk_context_create(NK_BACKEND_CPU, 0, &ctx) != NK_SUCCESS) return 2;
  if (nk_layer_norm_forward(ctx, &desc, 0.0, x, NULL, NULL, y, &mean, &rstd) != NK_SUCCESS) {
    printf("%s\n", nk_last_error());
    return 3;
  }
  /* mean 2.5, variance 1.25: y = (x - 2.5) / sqrt(1.25) */
  for (i = 0; i < 4; ++i) {
    if (fabs(y[i] - (x[i] - 2.5) / sqrt(1.25)) > 1e-6) return 4;
  }
  if (fabs(mean - 2.5) > 1e-7 || fabs(rstd - 1.0 / sqrt(1.25)) > 1e-6) return 5;
  {
    /* The fused channel norms' types: batch norm + ReLU over N=1, C=1, S=4 (the x above). */
    nk_act_desc act = {1, 1, 4, NK_NCHW, NK_F32};
    nk_channel_fusion fusion = nk_channel_fusion_default();
    nk_norm_params params = nk_norm_params_default();
    nk_channel_fused_forward_buffers fb = {0};
    nk_channel_fused_backward_buffers bb = {0};
    uint32_t mask = 0xFFFFFFFFu;
    size_t mask_bytes = 0;
    if (nk_channel_norm_relu_mask_size(&act, &mask_bytes) != NK_SUCCESS || mask_bytes != 4)
      return 6;
    fusion.activation = NK_ACTIVATION_RELU;
    fb.x = x;
    fb.y = y;
    fb.relu_mask = &mask;
    if (nk_channel_norm_fused_forward(ctx, &act, &fusion, &params, &fb) != NK_SUCCESS) {
      printf("%s\n", nk_last_error());
      return 7;
    }
    /* u = (x - 2.5) / sqrt(1.25 + eps): the last two are positive, bits 2 and 3 of the mask. */
    if (mask != 0xCu || y[0] != 0.0f || y[1] != 0.0f || y[3] <= 0.0f) return 8;
    bb.x = x;
    bb.dy = x;
    bb.relu_mask = &mask;
    if (nk_channel_norm_fused_backward(ctx, &act, &fusion, &params, &bb) !=
        NK_ERROR_INVALID_VALUE) { /* save_mean and save_invstd missing in training */
      return 9;
    }
  }
  nk_context_destroy(ctx);
  printf("C99 smoke test passed\n");
  return 0;
}

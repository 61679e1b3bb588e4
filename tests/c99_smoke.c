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
  nk_context_destroy(ctx);
  printf("C99 smoke test passed\n");
  return 0;
}

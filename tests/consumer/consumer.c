/* A downstream C program built with `pkg-config --cflags --libs normkit`. */
#include <math.h>
#include <normkit/normkit.h>
#include <stdio.h>

int main(void) {
  nk_context ctx = NULL;
  nk_row_desc desc = {1, 2, NK_F32, NK_F32};
  const float x[2] = {3.0f, 4.0f};
  float y[2];
  if (nk_context_create(NK_BACKEND_CPU, 0, &ctx) != NK_SUCCESS) return 1;
  /* RMS of [3, 4] is sqrt(12.5). */
  if (nk_rms_norm_forward(ctx, &desc, 0.0, x, NULL, y, NULL) != NK_SUCCESS) return 2;
  if (fabs(y[1] - 4.0 / sqrt(12.5)) > 1e-6) return 3;
  nk_context_destroy(ctx);
  printf("normkit consumer (pkg-config) passed\n");
  return 0;
}

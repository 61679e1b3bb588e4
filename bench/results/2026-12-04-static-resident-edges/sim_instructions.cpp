// Runs instance and group norm training forward and backward on resident-row shapes, rows that are
// whole 16-byte packs and rows that are not (instance norm 75 x 75 = 5625 elements against 5624;
// group norm 3 channels of 683 in bf16 against 4 of 514), printing a marker before each call, so that the
// simulator's running instruction totals split per call.
#include <cuda_runtime.h>
#include <normkit/normkit.h>

#include <cstdio>
#include <vector>

#include "channel_norm_plan.hpp"
int main() {
  nk_context ctx;
  if (nk_context_create(NK_BACKEND_CUDA, 0, &ctx) != NK_SUCCESS) {
    std::printf("ctx\n");
    return 1;
  }
  struct Case {
    const char* kind;
    long n, c, s, g;
    nk_dtype dt;
  };
  const Case cases[] = {{"in", 2, 64, 5625, 1, NK_BF16}, {"in", 2, 64, 5624, 1, NK_BF16},
                        {"gn", 8, 48, 683, 16, NK_BF16}, {"gn", 8, 64, 514, 16, NK_BF16},
                        {"in", 2, 64, 5625, 1, NK_F32},  {"in", 2, 64, 5624, 1, NK_F32}};
  for (const Case& k : cases) {
    const long numel = k.n * k.c * k.s, stats = k.n * (k.kind[0] == 'g' ? k.g : k.c);
    const size_t eb = k.dt == NK_F32 ? 4 : 2;
    void *x, *y, *dy, *dx;
    float *w, *b, *sm, *si, *dw, *db;
    cudaMalloc(&x, numel * eb);
    cudaMalloc(&y, numel * eb);
    cudaMalloc(&dy, numel * eb);
    cudaMalloc(&dx, numel * eb);
    cudaMalloc(&w, k.c * 4);
    cudaMalloc(&b, k.c * 4);
    cudaMalloc(&sm, stats * 4);
    cudaMalloc(&si, stats * 4);
    cudaMalloc(&dw, k.c * 4);
    cudaMalloc(&db, k.c * 4);
    std::vector<unsigned char> h(numel * eb);
    for (size_t i = 0; i < h.size(); ++i)
      h[i] = static_cast<unsigned char>((i * 2654435761u) >> 24) & 0x3f;
    cudaMemcpy(x, h.data(), h.size(), cudaMemcpyHostToDevice);
    cudaMemcpy(dy, h.data(), h.size(), cudaMemcpyHostToDevice);
    std::vector<float> ones(k.c, 1.0f);
    cudaMemcpy(w, ones.data(), k.c * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(b, ones.data(), k.c * 4, cudaMemcpyHostToDevice);
    const nk_act_desc d{k.n, k.c, k.s, NK_NCHW, k.dt};
    nk_norm_params p = nk_norm_params_default();
    const nk::ChannelShape shape{
        k.kind[0] == 'i' ? nk::ChannelNorm::kInstance : nk::ChannelNorm::kGroup,
        k.n,
        k.c,
        k.s,
        NK_NCHW,
        k.dt,
        k.g};
    const nk::cuda::ResidentPlan r = nk::cuda::plan_resident_rows(shape, static_cast<int>(eb));
    const nk::cuda::ResidentPlan rb =
        nk::cuda::plan_resident_rows(shape, static_cast<int>(eb), 2);
    std::printf(
        "MARK forward %s eb=%d n=%ld c=%ld s=%ld g=%ld numel=%ld use=%d len=%ld threads=%d "
        "blocks=%ld backward_use=%d backward_threads=%d\n",
        k.kind, (int)eb, k.n, k.c, k.s, k.g, numel, r.use, (long)r.len, r.threads, (long)r.rows,
        rb.use, rb.threads);
    std::fflush(stdout);
    nk_status st = k.kind[0] == 'i' ? nk_instance_norm_forward(ctx, &d, &p, x, w, b, nullptr,
                                                               nullptr, nullptr, y, sm, si)
                                    : nk_group_norm_forward(ctx, &d, k.g, 1e-5, x, w, b, y, sm, si);
    cudaDeviceSynchronize();
    std::printf("MARK backward status %d\n", (int)st);
    std::fflush(stdout);
    st = k.kind[0] == 'i' ? nk_instance_norm_backward(ctx, &d, &p, x, dy, w, nullptr, nullptr, sm,
                                                      si, dx, dw, db)
                          : nk_group_norm_backward(ctx, &d, k.g, x, dy, w, sm, si, dx, dw, db);
    cudaDeviceSynchronize();
    std::printf("MARK end status %d\n", (int)st);
    std::fflush(stdout);
    cudaFree(x);
    cudaFree(y);
    cudaFree(dy);
    cudaFree(dx);
    cudaFree(w);
    cudaFree(b);
    cudaFree(sm);
    cudaFree(si);
    cudaFree(dw);
    cudaFree(db);
  }
  nk_context_destroy(ctx);
  return 0;
}

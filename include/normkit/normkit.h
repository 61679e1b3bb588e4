/*
 * normkit: fused normalization kernels behind a stable C API.
 *
 * Design notes for users of this header:
 *  - Every function returns an nk_status. A failing call writes nothing: no output, no running
 *    statistic, no counter. nk_last_error() then holds a message naming the function, the argument,
 *    its value and what was expected. A floating-point value is shown in its shortest decimal form
 *    that reads back (strtod) as exactly that value, so a value just outside a bound never shows
 *    as the bound itself.
 *  - Every field of every struct passed in is checked, whether the call reads it or not: an enum
 *    field holding an unknown value is an error everywhere (each struct's comment says which calls
 *    read which fields).
 *  - Phases are explicit. NK_TRAINING normalizes with the statistics of the batch at hand and
 *    (batch and instance norm) updates the running statistics; NK_INFERENCE normalizes with the
 *    frozen running statistics and never looks at the batch.
 *  - Activations are N x C x S, S the product of the spatial sizes (S = 1 for a 2-D N x C input),
 *    stored channels-first (NK_NCHW, element (n, c, s) at (n*C + c)*S + s) or channels-last
 *    (NK_NHWC, at (n*S + s)*C + c). Layer and RMS norm see rows x cols, row-major, and normalize
 *    each row.
 *  - x, y, dy, dx are fp32, fp16 or bf16 (nk_dtype). Statistics, running statistics and the
 *    per-channel parameters of batch, instance and group norm are fp32. Layer/RMS norm parameters
 *    are fp32 or the dtype of x. All accumulation is fp32 or wider (fp64 on the CPU backend).
 *  - Pointers are device pointers on a CUDA context and host pointers on a CPU context.
 *  - Every pointer must be aligned to its element size (NK_ERROR_INVALID_VALUE otherwise); any
 *    further alignment is optional (16-byte aligned buffers take the faster vector path on GPUs).
 *  - Aliasing: the forward ops may run in place (y == x exactly) and the backward ops may write dx
 *    over dy (dx == dy exactly). Any other overlap between a written buffer and any other buffer is
 *    rejected with NK_ERROR_INVALID_VALUE.
 *  - eps is a double; the CUDA backend adds it in fp32 (as PyTorch's kernels do).
 *  - A context is used by one thread at a time; different contexts are independent.
 *  - The running buffers (running_mean, running_var) and num_batches_tracked of one layer must not
 *    be updated by two calls that can run at the same time: two streams without an order between
 *    them, two contexts, two threads. The device updates them with plain reads and writes (the
 *    counter's increment is not atomic), so one update would be lost or the two mixed. Order such
 *    calls (the same stream, or an event between the streams) or give each its own buffers.
 *
 * Errors every op can return, in addition to those listed per function:
 *   NK_ERROR_INVALID_VALUE  ctx, a descriptor, a parameter block or a required pointer is NULL;
 *                           an enum (an argument or a field of any struct passed in, read or not)
 *                           holds an unknown value; eps is negative or not finite; a pointer is
 *                           not aligned to its element size.
 *   NK_ERROR_BAD_SHAPE      a dimension is < 1, or an element count is above 2^60 - 1
 *                           (INT64_MAX / 8): byte sizes are computed from element counts, for
 *                           elements of up to 8 bytes, and each must fit in int64.
 *   NK_ERROR_WORKSPACE      a workspace is set on ctx and is smaller than the op's size query.
 *   NK_ERROR_OUT_OF_MEMORY  no workspace is set and the op could not allocate its scratch memory.
 *   NK_ERROR_NOT_SUPPORTED  the context's backend has no implementation of this op yet.
 *   NK_ERROR_CUDA           a CUDA runtime call failed (the message carries CUDA's own text).
 */
#ifndef NORMKIT_NORMKIT_H_
#define NORMKIT_NORMKIT_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define NK_API
#else
#define NK_API __attribute__((visibility("default")))
#endif

/* Enums are int-sized in C. In C++ they get int as their fixed underlying type, so that any int a
 * caller passes (an unknown value included) is a valid value that normkit can reject, rather
 * than undefined behaviour. */
#ifdef __cplusplus
#define NK_ENUM(name) enum name : int
#else
#define NK_ENUM(name) enum name
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define NK_VERSION_MAJOR 0
#define NK_VERSION_MINOR 1
#define NK_VERSION_PATCH 0

/* ---------------------------------------------------------------------------------------------
 * Enumerations
 * ------------------------------------------------------------------------------------------- */

/* (clang-format does not know NK_ENUM: the enums keep their layout by hand.) */
/* clang-format off */
typedef NK_ENUM(nk_status) {
  NK_SUCCESS = 0,
  NK_ERROR_INVALID_VALUE = 1, /* a NULL, unknown, out-of-range or inconsistent argument */
  NK_ERROR_BAD_SHAPE = 2,     /* a dimension that is not allowed for this op */
  NK_ERROR_NOT_SUPPORTED = 3, /* valid request the backend does not implement */
  NK_ERROR_WORKSPACE = 4,     /* the context's workspace is too small */
  NK_ERROR_CUDA = 5,          /* a CUDA runtime error, or no CUDA device */
  NK_ERROR_OUT_OF_MEMORY = 6, /* an allocation failed */
  NK_ERROR_INTERNAL = 7,      /* a bug in normkit: please report the message */
  NK_ERROR_IO = 8,            /* a file could not be opened, read, written or renamed */
  NK_ERROR_FILE_FORMAT = 9    /* not a normkit statistics file, truncated, or corrupted */
} nk_status;

typedef NK_ENUM(nk_backend) { NK_BACKEND_CPU = 0, NK_BACKEND_CUDA = 1 } nk_backend;

typedef NK_ENUM(nk_dtype) { NK_F32 = 0, NK_F16 = 1, NK_BF16 = 2 } nk_dtype;

typedef NK_ENUM(nk_layout) { NK_NCHW = 0, NK_NHWC = 1 } nk_layout;

typedef NK_ENUM(nk_phase) {
  NK_TRAINING = 0,  /* statistics of this batch; running statistics updated when given */
  NK_INFERENCE = 1  /* frozen running statistics; the batch's own statistics are never used */
} nk_phase;

/* How the running statistics are averaged (batch and instance norm, training phase). */
typedef NK_ENUM(nk_momentum_mode) {
  /* running = (1 - momentum) * running + momentum * batch (PyTorch's momentum, default 0.1).
   * Keras' BatchNormalization(momentum=k) is momentum = 1 - k here. */
  NK_MOMENTUM_EXPONENTIAL = 0,
  /* Cumulative average, PyTorch's momentum=None: num_batches_tracked is incremented first, then
   * momentum = 1 / num_batches_tracked. Requires num_batches_tracked. */
  NK_MOMENTUM_CUMULATIVE = 1
} nk_momentum_mode;

/* Which batch variance enters the running variance. Normalization itself always uses the biased
 * variance. */
typedef NK_ENUM(nk_running_var) {
  NK_RUNNING_VAR_UNBIASED = 0, /* var * count / (count - 1): PyTorch */
  NK_RUNNING_VAR_BIASED = 1    /* var: Keras' moving_variance */
} nk_running_var;
/* clang-format on */

/* ---------------------------------------------------------------------------------------------
 * Descriptors
 * ------------------------------------------------------------------------------------------- */

/* Activation tensor of batch, instance and group norm: N x C x S in the given layout and dtype.
 * Every call that takes one reads every field (synchronized batch norm's calls allow n == 0). */
typedef struct nk_act_desc {
  int64_t n;       /* batch size, >= 1 */
  int64_t c;       /* channels, >= 1 */
  int64_t spatial; /* product of the spatial sizes, >= 1 (1 for a 2-D N x C input) */
  nk_layout layout;
  nk_dtype dtype; /* dtype of x, y, dy and dx */
} nk_act_desc;

/* Input of layer and RMS norm: rows x cols, row-major; each row is normalized. Layer and RMS norm
 * read every field. The preprocessing normalizers and nk_stats_add_columns read rows, cols and
 * dtype only: weight_dtype must still be a known nk_dtype there (any of them). */
typedef struct nk_row_desc {
  int64_t rows;          /* >= 1 */
  int64_t cols;          /* D, the normalized size, >= 1 */
  nk_dtype dtype;        /* dtype of x, y, dy and dx */
  nk_dtype weight_dtype; /* dtype of weight, bias, dweight, dbias: NK_F32 or dtype */
} nk_row_desc;

/* Options of batch and instance norm. Start from nk_norm_params_default().
 * Every call that takes a parameter block checks all of it, whether it reads a field or not (so a
 * block valid for one call is valid for every call): phase, momentum_mode and running_var known
 * values, eps finite and >= 0, momentum in [0, 1] under NK_MOMENTUM_EXPONENTIAL. What each reads:
 *   nk_batch_norm_forward, nk_instance_norm_forward
 *       training: phase, eps; with running buffers also momentum_mode, running_var and (under
 *       NK_MOMENTUM_EXPONENTIAL) momentum; momentum_mode also decides whether num_batches_tracked
 *       is required. Inference: phase, eps.
 *   nk_batch_norm_forward_global, nk_sync_batch_norm_forward
 *       as the forward in training (phase must be NK_TRAINING).
 *   nk_batch_norm_backward, nk_instance_norm_backward              phase, eps.
 *   nk_batch_norm_forward_frozen            phase (must be NK_INFERENCE), eps.
 *   the *_workspace_size queries of batch and instance norm        phase.
 *   nk_sync_batch_norm_forward_workspace_size                      none (checked all the same). */
typedef struct nk_norm_params {
  nk_phase phase;
  double eps;      /* added to the variance, finite and >= 0 (PyTorch: 1e-5) */
  double momentum; /* in [0, 1] for NK_MOMENTUM_EXPONENTIAL; not read otherwise */
  nk_momentum_mode momentum_mode;
  nk_running_var running_var;
} nk_norm_params;

/* An opaque context: backend, device, stream and workspace. */
typedef struct nk_context_s* nk_context;

/* ---------------------------------------------------------------------------------------------
 * Library
 * ------------------------------------------------------------------------------------------- */

/* 10000 * major + 100 * minor + patch of the linked library (compare with NK_VERSION_*). */
NK_API int nk_version(void);

/* A static string naming the status ("NK_ERROR_BAD_SHAPE"); "NK_UNKNOWN_STATUS" for others. */
NK_API const char* nk_status_name(nk_status status);

/* The message of the last failing nk_* call on the calling thread, or "" if none failed yet.
 * Successful calls leave it as it was. The pointer stays valid until the next failing call on
 * this thread. */
NK_API const char* nk_last_error(void);

/* PyTorch's defaults: NK_TRAINING, eps 1e-5, momentum 0.1, exponential, unbiased running var. */
NK_API nk_norm_params nk_norm_params_default(void);

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */

/* Creates a context on a backend.
 *   backend  NK_BACKEND_CPU (reference backend, runs on the calling thread; device is ignored)
 *            or NK_BACKEND_CUDA (device is the CUDA device ordinal, made current on this thread).
 *   out      receives the context; must not be NULL. Left unchanged on failure.
 * Errors: NK_ERROR_INVALID_VALUE (out NULL, unknown backend, device out of range),
 *         NK_ERROR_CUDA (no CUDA device is present, or the runtime failed),
 *         NK_ERROR_NOT_SUPPORTED (NK_BACKEND_CUDA in a build without CUDA),
 *         NK_ERROR_OUT_OF_MEMORY. */
NK_API nk_status nk_context_create(nk_backend backend, int device, nk_context* out);

/* Destroys a context. NULL is accepted and does nothing. Does not free the workspace (the caller
 * owns it). */
NK_API nk_status nk_context_destroy(nk_context ctx);

/* The backend of a context. Errors: NK_ERROR_INVALID_VALUE (ctx or out NULL). */
NK_API nk_status nk_context_get_backend(nk_context ctx, nk_backend* out);

/* Sets the cudaStream_t that ops of this context are enqueued on (NULL: the legacy default
 * stream). On a CPU context the stream is recorded and unused: CPU ops complete before returning.
 * Errors: NK_ERROR_INVALID_VALUE (ctx NULL). */
NK_API nk_status nk_context_set_stream(nk_context ctx, void* cuda_stream);

/* Gives the context a caller-owned scratch buffer (device memory on CUDA, host memory on CPU) of
 * `bytes` bytes, aligned to 256 bytes. While one is set, ops never allocate: an op whose
 * *_workspace_size is larger fails with NK_ERROR_WORKSPACE, and an op any of whose buffers
 * overlaps the workspace fails with NK_ERROR_INVALID_VALUE. ptr NULL with bytes 0 removes it, and
 * ops allocate their scratch memory themselves again. The calls without a size query are the
 * exceptions, each documented where it is declared: the preprocessing normalizers use the
 * workspace when it is large enough and allocate otherwise; on CUDA, nk_stats_add_* and
 * nk_batch_norm_forward_frozen always allocate their own (stream-ordered) scratch.
 * Errors: NK_ERROR_INVALID_VALUE (ctx NULL; ptr NULL with bytes > 0; ptr not 256-byte aligned). */
NK_API nk_status nk_context_set_workspace(nk_context ctx, void* ptr, size_t bytes);

/* ---------------------------------------------------------------------------------------------
 * Batch norm: statistics per channel over the N*S values of that channel.
 *
 * Training:  mean_c = sum(x) / (N*S),  var_c = sum((x - mean_c)^2) / (N*S)   (biased)
 *            invstd_c = 1 / sqrt(var_c + eps)
 *            y = (x - mean_c) * invstd_c * weight_c + bias_c
 *            running_mean = (1 - m) * running_mean + m * mean_c
 *            running_var  = (1 - m) * running_var  + m * var_c * (N*S) / (N*S - 1)  (unbiased)
 *                           (or + m * var_c with NK_RUNNING_VAR_BIASED)
 *            m = momentum, or 1 / num_batches_tracked after its increment (cumulative).
 * Inference: y = x * scale_c + shift_c,  scale_c = weight_c / sqrt(running_var_c + eps),
 *            shift_c = bias_c - running_mean_c * scale_c.
 * A NULL weight means 1, a NULL bias means 0.
 * ------------------------------------------------------------------------------------------- */

/* Bytes of workspace nk_batch_norm_forward needs for this shape and phase (written to *bytes).
 * CUDA: 0 in inference; in training at most 2060 * max(C, 1024) + 1024 bytes whatever N and S are
 * (up to 128 partial statistics of 16 bytes per channel, or up to 131072 in all where C is small
 * so that the reduction still spreads over every SM, and three per-channel coefficient arrays).
 * The size depends on the shape and dtype only, never on the device or its SM count; so does every
 * result bit, given whether every pointer allows 16-byte access (which decides the loads, and so
 * the order of some sums).
 * Reads x once (CUDA, training forward): in NHWC, or NCHW with S == 1 (the same memory), when C is
 * a multiple of 8 (fp16, bf16) or 4 (fp32) and N * S * 16 bytes are 4 to 176 KiB, a block per 16
 * bytes of channels keeps their N * S positions in shared memory (up to 88 KiB; the rest is read
 * again, usually from L2), writes y from there and updates the running statistics in the same
 * launch; it needs no workspace, and no bit depends on the pointers. Above 176 KiB, up to 16
 * times 219 KiB, the N * S positions are split into 2, 4, 8 or 16 parts (the fewest of at most
 * 219 KiB, up to 8 while the blocks are fewer than 128, each keeping a position; the shape alone
 * decides), a block each (as much of its part in shared memory as the GPU grants), whose exact
 * statistics merge in a fixed order: on GPUs with thread block clusters (compute capability 9.0
 * and later; 16 parts where the device holds a non-portable cluster of 16) a channel pack's parts
 * run as one cluster and x is read once; elsewhere two launches read it twice; both give the
 * same bits. Those need 8 * (parts + 1) * C bytes of workspace (at most 136 * C), rounded up to
 * 256. So in NCHW with S > 1 when a channel's N runs of S, each taken as the 16-byte packs that
 * cover it, are at most 192 KiB (the first 96 KiB kept in shared memory, the rest read again;
 * 48 KiB, kept whole, with fewer than 128 channels): a block per channel; above that, up to 16
 * times 219 KiB, the N runs are split into 2, 4, 8 or 16 parts of consecutive runs (the fewest
 * of at most 219 KiB, up to 8 while C * parts < 128, each keeping a run) merged as in NHWC (a
 * cluster a channel, or two launches; the same bits), with 8 * (parts + 1) * C bytes of
 * workspace (at most 136 * C), rounded up to 256. Other shapes read x twice (statistics, then
 * y). */
NK_API nk_status nk_batch_norm_forward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                      const nk_norm_params* params, size_t* bytes);

/* Batch norm forward.
 *   desc                 shape, layout and dtype of x and y.
 *   params               phase, eps, momentum, momentum mode, running-variance convention.
 *   x                    [N x C x S] desc->dtype, required.
 *   weight, bias         [C] fp32, nullable.
 *   running_mean/_var    [C] fp32. Training: both or neither, updated in place. Inference:
 *                        both required, read only.
 *   num_batches_tracked  [1] int64, nullable; incremented by 1 in training (not read in
 *                        inference); required for NK_MOMENTUM_CUMULATIVE when running statistics
 *                        are updated. In training it must be in [0, INT64_MAX - 1]: a negative
 *                        count has no cumulative momentum (1/0, or negative) and INT64_MAX cannot
 *                        be incremented. CPU context: checked before anything is written
 *                        (NK_ERROR_INVALID_VALUE naming the value). CUDA context: the counter is
 *                        device memory, never read by the host, and the device's rule is that a
 *                        counter outside that range stays as it is and so do running_mean and
 *                        running_var (y and the saved statistics are written as usual): no NaN
 *                        ever reaches the running statistics. Not atomic: see the concurrency note
 *                        at the top of this header.
 *   y                    [N x C x S] desc->dtype, required; may equal x.
 *   save_mean/_invstd    [C] fp32, nullable; training only (ignored in inference): the batch mean
 *                        and invstd that nk_batch_norm_backward takes.
 * Errors: NK_ERROR_BAD_SHAPE (training with N*S == 1: more than one value per channel is needed),
 *         NK_ERROR_INVALID_VALUE (momentum outside [0, 1]; only one of the running buffers;
 *         inference without running statistics; cumulative average without num_batches_tracked;
 *         CPU: *num_batches_tracked outside [0, INT64_MAX - 1] in training; overlapping
 *         buffers). */
NK_API nk_status nk_batch_norm_forward(nk_context ctx, const nk_act_desc* desc,
                                       const nk_norm_params* params, const void* x,
                                       const float* weight, const float* bias, float* running_mean,
                                       float* running_var, int64_t* num_batches_tracked, void* y,
                                       float* save_mean, float* save_invstd);

/* Bytes of workspace nk_batch_norm_backward needs (written to *bytes). CUDA: at most
 * 1040 * max(C, 1024) + 512 bytes whatever N and S are (up to 128 partial sums of 8 bytes per
 * channel, or up to 131072 in all where C is small, and four coefficients of 4 bytes per channel);
 * depends on the shape and dtype only. */
NK_API nk_status nk_batch_norm_backward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                       const nk_norm_params* params, size_t* bytes);

/* Batch norm backward. Reads params->phase and params->eps; the other fields are checked as the
 * forward checks them (an unknown momentum_mode or running_var is an error here too).
 * Training (statistics from save_mean/save_invstd, xhat = (x - mean) * invstd):
 *   dx = weight * invstd * (dy - mean_c(dy) - xhat * mean_c(dy * xhat))
 * Inference (frozen statistics, invstd = 1 / sqrt(running_var + eps), xhat likewise):
 *   dx = dy * weight * invstd
 * Both:  dweight_c = sum(dy * xhat),  dbias_c = sum(dy)  over the N*S values of channel c.
 *   x, dy                [N x C x S] desc->dtype, required.
 *   weight               [C] fp32, nullable (1).
 *   running_mean/_var    [C] fp32, required in inference, ignored in training.
 *   save_mean/_invstd    [C] fp32 from the training forward, required in training, ignored in
 *                        inference.
 *   dx                   [N x C x S] desc->dtype, nullable (not computed); may equal dy.
 *   dweight, dbias       [C] fp32, nullable (not computed); written, not accumulated.
 * Reads x and dy once (CUDA, training): in NHWC, or NCHW with S == 1, when C is a multiple of 8
 * (fp16, bf16) or 4 (fp32) and N * S * 16 bytes are 4 to 88 KiB (to 44 KiB with fewer than 128
 * packs of channels), a block per 16 bytes of channels keeps their N * S positions of x and of dy
 * in shared memory (up to 44 KiB of each; the rest is read again, usually from L2); up to 16
 * times 109 KiB in parts as the forward's (a cluster a pack of channels on compute capability 9.0
 * and later; elsewhere two launches that read both twice, with the same bits; 8 * parts * C bytes
 * of workspace); in NCHW with S > 1 when a channel's runs (as the forward's packs) are at most
 * 96 KiB of each of x and dy (the first 48 KiB of each kept; 24 KiB, kept whole, with fewer than
 * 128 channels), a block per channel, and above that, up to 16 times 109 KiB of each, in parts of
 * consecutive runs as the forward's (a cluster a channel, or two launches; 8 * parts * C bytes of
 * workspace, rounded up to 256); other shapes read both twice. dweight and dbias have the same
 * bits whether or not dx is asked for.
 * Errors: NK_ERROR_BAD_SHAPE (training with N*S == 1, as in the forward),
 *         NK_ERROR_INVALID_VALUE (training without save_mean/save_invstd; inference without
 *         running statistics; overlapping buffers). */
NK_API nk_status nk_batch_norm_backward(nk_context ctx, const nk_act_desc* desc,
                                        const nk_norm_params* params, const void* x, const void* dy,
                                        const float* weight, const float* running_mean,
                                        const float* running_var, const float* save_mean,
                                        const float* save_invstd, void* dx, float* dweight,
                                        float* dbias);

/* ---------------------------------------------------------------------------------------------
 * Instance norm: statistics per (n, c) over the S values of that instance and channel. The same
 * formulas and arguments as batch norm, except:
 *   save_mean, save_invstd   [N x C] fp32 (index n*C + c), per instance.
 *   running_mean/_var        [C] fp32, updated with the batch mean over n of the per-instance
 *                            mean and (unbiased: S/(S-1)) variance, as PyTorch does.
 *   Training, forward and backward, needs S >= 2 (NK_ERROR_BAD_SHAPE otherwise).
 *   Workspace (CUDA, training): at most 2060 * max(N*C, 1024) + 1024 bytes forward,
 *   1040 * max(N*C, 1024) + 512 backward (up to 128 partials per (n, c), or 131072 in all where
 *   N*C is small); depends on the shape and dtype only. A forward that reads x once (below)
 *   needs 8 * N*C bytes, rounded up to 256 (none in NHWC with N == 1), and with parts
 *   8 * (parts + 1) * N*C bytes more (at most 136 * N*C), rounded up to 256.
 *   Reads x once (CUDA, training forward): NCHW or C == 1 when each (n, c) row of S elements is
 *   4 to 192 KiB, however few the rows, a block per row keeps it in shared memory (up to 96 KiB
 *   of it; the rest is read again, usually from L2), and longer rows, up to 16 times 219 KiB, in
 *   2, 4, 8 or 16 parts of whole 16-byte packs, a block each (a cluster a row on compute
 *   capability 9.0 and later; elsewhere two launches that read x twice, with the same bits; the
 *   workspace of parts above); NHWC when C is
 *   a multiple of 8 (fp16, bf16) or 4 (fp32) and S * 16 bytes are 4 to 176 KiB, a block per
 *   sample's 16 bytes of channels keeps their S positions likewise (up to 88 KiB), and up to 16
 *   times 219 KiB in parts as batch norm's (a cluster each on compute capability 9.0 and later;
 *   elsewhere two launches that read x twice, with the same bits); NCHW or C == 1 rows shorter
 *   than 4 KiB likewise, several rows a block; other shapes read x twice (statistics, then y).
 * PyTorch's InstanceNorm without track_running_stats normalizes with per-instance statistics in
 * eval() too: call it with NK_TRAINING and no running buffers. PyTorch never increments
 * num_batches_tracked for instance norm: pass NULL for parity.
 * ------------------------------------------------------------------------------------------- */

NK_API nk_status nk_instance_norm_forward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                         const nk_norm_params* params,
                                                         size_t* bytes);

NK_API nk_status nk_instance_norm_forward(nk_context ctx, const nk_act_desc* desc,
                                          const nk_norm_params* params, const void* x,
                                          const float* weight, const float* bias,
                                          float* running_mean, float* running_var,
                                          int64_t* num_batches_tracked, void* y, float* save_mean,
                                          float* save_invstd);

NK_API nk_status nk_instance_norm_backward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                          const nk_norm_params* params,
                                                          size_t* bytes);

/* Training: dx = weight_c * invstd_nc * (dy - mean_nc(dy) - xhat * mean_nc(dy * xhat)) over the
 * S values of (n, c). Inference: dx = dy * weight_c / sqrt(running_var_c + eps). dweight_c and
 * dbias_c sum over n and s. Arguments as nk_batch_norm_backward, save_* being [N x C].
 * Reads x and dy once (CUDA, training, NCHW or C == 1): when each (n, c) row of S
 * elements is 4 to 96 KiB (to 48 KiB with fewer than 128 rows), a block per row keeps the rows
 * of x and dy in shared memory (up to 48 KiB of each; the rest is read again, usually from L2),
 * and longer rows, up to 16 times 109 KiB of each, in 2, 4, 8 or 16 parts of whole packs (a
 * cluster a row on compute capability 9.0 and later; elsewhere two launches that read both
 * twice, with the same bits; 8 * (N*C + parts * N*C) bytes of workspace, rounded up to 256
 * each). NHWC when C is a multiple of 8 (fp16, bf16) or 4 (fp32) and S * 16
 * bytes are 4 to 88 KiB (to 44 KiB with fewer than 128 tiles), a block per sample's 16 bytes of
 * channels keeps their S positions of x and dy likewise (up to 44 KiB of each), and up to 16 times
 * 109 KiB in parts as batch norm's (a cluster each on compute capability 9.0 and later; elsewhere
 * two launches that read both twice, with the same bits; 8 * (parts + 1) * N*C bytes of
 * workspace at most). Other shapes read both twice. dweight and dbias have the same bits whether
 * or not dx is asked for. */
NK_API nk_status nk_instance_norm_backward(nk_context ctx, const nk_act_desc* desc,
                                           const nk_norm_params* params, const void* x,
                                           const void* dy, const float* weight,
                                           const float* running_mean, const float* running_var,
                                           const float* save_mean, const float* save_invstd,
                                           void* dx, float* dweight, float* dbias);

/* ---------------------------------------------------------------------------------------------
 * Group norm: channels split into `groups` groups of C/groups consecutive channels; statistics
 * per (n, g) over the (C/groups)*S values of that group, always from the batch (no phase, no
 * running statistics).
 *   y = (x - mean_ng) * invstd_ng * weight_c + bias_c,  invstd_ng = 1 / sqrt(var_ng + eps)
 *   groups        >= 1 and divides C (NK_ERROR_BAD_SHAPE otherwise). Each group must hold more
 *                 than one value, (C/groups)*S >= 2 (NK_ERROR_BAD_SHAPE, forward and backward):
 *                 with one value the output would be the bias alone. (PyTorch only rejects
 *                 N*(C/groups)*S == 1.)
 *   eps           finite, >= 0.
 *   x, y          [N x C x S] desc->dtype; y may equal x.
 *   weight, bias  [C] fp32, nullable.
 *   save_mean, save_invstd  [N x groups] fp32 (index n*groups + g), nullable.
 *   Workspace (CUDA): at most 2060 * max(N*C, 1024) + 1024 bytes forward and
 *   1040 * max(N*C, 1024) + 512 backward (up to 128 partials per (n, c), or 131072 in all where
 *   N*C is small, and the coefficients of each (n, c): the weight is per channel);
 *   depends on the shape and dtype only. A forward that reads x once (below) needs none, but
 *   for rows or NHWC tiles in parts: 8 * (parts + 1) * N*groups bytes (at most 136 * N*groups),
 *   rounded up to 256.
 *   Reads x once (CUDA forward, NCHW or C == 1): when each (n, g) row of (C/groups)*S elements
 *   is 4 to 192 KiB, however few the rows, a block per row keeps it in shared memory (up to
 *   96 KiB of it; the rest is read again, usually from L2); longer rows, up to 16 times 219 KiB,
 *   in 2, 4, 8 or 16 parts of whole channels (S elements each), a block each (a cluster a row on
 *   compute capability 9.0 and later; elsewhere two launches that read x twice, with the same
 *   bits). In NHWC
 *   (C > 1): when a tile of k consecutive groups of a sample, the fewest whose k*(C/groups)
 *   channels are whole 16-byte packs, each pack meeting at most two groups, holds 4 to 176 KiB,
 *   a block per tile keeps it (up to 88 KiB) the same way; larger tiles, up to 16 times 219 KiB,
 *   are split into 2, 4, 8 or 16 parts of their S positions as batch norm's (a cluster a tile on
 *   compute capability 9.0 and later; elsewhere two launches that read x twice, with the same
 *   bits). NCHW or C == 1 rows shorter than
 *   4 KiB likewise, several rows a block, where S >= 2 and C/groups <= 256.
 *   Other shapes read x twice (statistics, then y).
 * ------------------------------------------------------------------------------------------- */

NK_API nk_status nk_group_norm_forward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                      int64_t groups, size_t* bytes);

NK_API nk_status nk_group_norm_forward(nk_context ctx, const nk_act_desc* desc, int64_t groups,
                                       double eps, const void* x, const float* weight,
                                       const float* bias, void* y, float* save_mean,
                                       float* save_invstd);

NK_API nk_status nk_group_norm_backward_workspace_size(nk_context ctx, const nk_act_desc* desc,
                                                       int64_t groups, size_t* bytes);

/* With g = dy * weight_c and xhat = (x - mean_ng) * invstd_ng:
 *   dx = invstd_ng * (g - mean_ng(g) - xhat * mean_ng(g * xhat))
 *   dweight_c = sum over n, s of dy * xhat,  dbias_c = sum over n, s of dy.
 *   save_mean, save_invstd  [N x groups] fp32 from the forward, required.
 *   dx [N x C x S] desc->dtype (may equal dy), dweight, dbias [C] fp32: each nullable.
 *   Reads x and dy once (CUDA, training, NCHW or C == 1): when each (n, g) row of
 *   (C/groups)*S elements is 4 to 96 KiB (to 48 KiB with fewer than 128 rows), a block per row
 *   keeps the rows of x and dy in shared memory (up to 48 KiB of each; the rest is read again,
 *   usually from L2); longer rows, up to 16 times 109 KiB of each, in 2, 4, 8 or 16 parts of
 *   whole channels as the forward's, with 8 * (N*C + parts * N*groups) bytes of workspace,
 *   rounded up to 256 each. In NHWC (C > 1): the forward's tiles of 4 to 88 KiB (to
 *   44 KiB with fewer than 128 tiles), up to 44 KiB of each of x and dy kept the same way; larger
 *   tiles, up to 16 times 219 KiB of both, in 2, 4, 8 or 16 parts of their S positions as the
 *   forward's (a cluster a tile on compute capability 9.0 and later; elsewhere two launches that
 *   read both twice, with the same bits), with 8 * parts * (N*C + N*groups) bytes of workspace,
 *   rounded up to 256 each (within the bound above). Other shapes read both twice. dweight and
 *   dbias have the same bits whether or not dx is asked for. */
NK_API nk_status nk_group_norm_backward(nk_context ctx, const nk_act_desc* desc, int64_t groups,
                                        const void* x, const void* dy, const float* weight,
                                        const float* save_mean, const float* save_invstd, void* dx,
                                        float* dweight, float* dbias);

/* ---------------------------------------------------------------------------------------------
 * Layer norm: per row of D = desc->cols values.
 *   mean = sum(x) / D,  var = sum((x - mean)^2) / D,  rstd = 1 / sqrt(var + eps)
 *   y = (x - mean) * rstd * weight_j + bias_j
 *   x, y          [rows x cols] desc->dtype; y may equal x.
 *   weight, bias  [cols] desc->weight_dtype, each nullable (1 and 0).
 *   save_mean, save_rstd  [rows] fp32, nullable.
 * ------------------------------------------------------------------------------------------- */

/* Bytes of workspace the forward needs (written to *bytes). CUDA: fewer than 128 rows of more than
 * 16384 columns are each split across blocks, and need 16 bytes per slice of 4096 elements (2048
 * in fp32) and 4 bytes per row: rows * (ceil(cols / 4096) * 16 + 4) bytes (2048 for fp32), about
 * 4 KiB per row of 2^20 16-bit elements; every other shape needs none. The slices are cut by the
 * shape alone and their statistics merged in a fixed order, so y has the same bits on every GPU.
 * CPU: 0. (Calls whose pointers do not allow 16-byte access are not split; the query cannot know
 * them.) */
NK_API nk_status nk_layer_norm_forward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                      size_t* bytes);

NK_API nk_status nk_layer_norm_forward(nk_context ctx, const nk_row_desc* desc, double eps,
                                       const void* x, const void* weight, const void* bias, void* y,
                                       float* save_mean, float* save_rstd);

/* Bytes of workspace the backward needs: on CUDA the dweight/dbias partial rows (and, for fewer
 * than 128 rows of more than 16384 columns, whose dx is split across blocks, 8 bytes per slice of
 * 4096 elements, 2048 in fp32, of every row), at most 2 * (256 * ceil(cols / 8) * 32 + 256) bytes
 * (256 partial rows of fp32, each padded to a multiple of 8, for dweight and dbias; about 2 KiB
 * per column), whatever the rows and the device; on the CPU its fp64 column sums, 16 bytes per
 * column. The partial rows and slices are cut by rows and cols alone (and whether every pointer
 * allows 16-byte access) and added in a fixed order, so dx, dweight and dbias have the same bits
 * on every GPU, whatever its SM count and the grid launched. */
NK_API nk_status nk_layer_norm_backward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                       size_t* bytes);

/* With g = dy * weight_j and xhat = (x - mean) * rstd, per row:
 *   dx = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat))
 *   dweight_j = sum over rows of dy * xhat,  dbias_j = sum over rows of dy.
 *   x, dy              [rows x cols] desc->dtype, required.
 *   weight             [cols] desc->weight_dtype, nullable.
 *   save_mean, save_rstd  [rows] fp32 from the forward, required.
 *   dx                 [rows x cols] desc->dtype, nullable; may equal dy.
 *   dweight, dbias     [cols] desc->weight_dtype, nullable. */
NK_API nk_status nk_layer_norm_backward(nk_context ctx, const nk_row_desc* desc, const void* x,
                                        const void* dy, const void* weight, const float* save_mean,
                                        const float* save_rstd, void* dx, void* dweight,
                                        void* dbias);

/* ---------------------------------------------------------------------------------------------
 * RMS norm: per row of D values, no centring.
 *   rstd = 1 / sqrt(sum(x^2) / D + eps),  y = x * rstd * weight_j
 * eps is always the caller's: normkit has no default for it.
 *   x, y       [rows x cols] desc->dtype; y may equal x.
 *   weight     [cols] desc->weight_dtype, nullable (1).
 *   save_rstd  [rows] fp32, nullable.
 * ------------------------------------------------------------------------------------------- */

/* As nk_layer_norm_forward_workspace_size (the same sizes, the same determinism). */
NK_API nk_status nk_rms_norm_forward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                    size_t* bytes);

NK_API nk_status nk_rms_norm_forward(nk_context ctx, const nk_row_desc* desc, double eps,
                                     const void* x, const void* weight, void* y, float* save_rstd);

/* As nk_layer_norm_backward_workspace_size (the same bound, the same determinism). */
NK_API nk_status nk_rms_norm_backward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                     size_t* bytes);

/* With g = dy * weight_j and xhat = x * rstd, per row:
 *   dx = rstd * (g - xhat * mean_row(g * xhat)),  dweight_j = sum over rows of dy * xhat.
 *   x, dy      [rows x cols] desc->dtype, required.
 *   weight     [cols] desc->weight_dtype, nullable.
 *   save_rstd  [rows] fp32 from the forward, required.
 *   dx         [rows x cols] desc->dtype, nullable; may equal dy.
 *   dweight    [cols] desc->weight_dtype, nullable. */
NK_API nk_status nk_rms_norm_backward(nk_context ctx, const nk_row_desc* desc, const void* x,
                                      const void* dy, const void* weight, const float* save_rstd,
                                      void* dx, void* dweight);

/* ---------------------------------------------------------------------------------------------
 * Fused layer and RMS norm: the forms transformer engines call. An nk_row_fusion describes the
 * call (no list of flags in the signatures); the buffers travel in one struct per direction.
 *
 * Forward, per row of D = desc->cols values:
 *   h = x + residual + bias_in            (NK_RESIDUAL_ADD, bias_in_j = 0 when NULL; h = x
 *                                          otherwise), added in fp32 (fp64 on the CPU) and rounded
 *                                          once to desc->dtype, as h is stored; that value is
 *                                          normalized
 *   layer norm: mean = sum(h) / D, var = sum((h - mean)^2) / D;  RMS norm: mean = 0,
 *               var = sum(h^2) / D;  rstd = 1 / sqrt(var + eps),  hhat = (h - mean) * rstd
 *   y = hhat * gamma_j + bias_j,  gamma_j = weight_j (NK_WEIGHT_DIRECT) or 1 + weight_j
 *                                (NK_WEIGHT_ZERO_CENTERED: the weight is stored as gamma - 1)
 *   output NK_OUTPUT_DTYPE: y stored in desc->dtype.
 *   output NK_OUTPUT_FP8_E4M3 / _E5M2: y_fp8 = fp8(y * scale), one byte an element (OCP 8-bit
 *     floating point), from y in fp32 on CUDA (fp64 on the CPU): rounded to nearest, ties to
 *     even, and saturated to the largest finite value (e4m3 +-448, e5m2 +-57344), infinities
 *     included; a NaN stores 0x7F (e4m3 has no infinity, so saturation is its only overflow;
 *     e5m2's infinities are never produced).
 *     *y_amax = max over every element of |y| before scaling (fp32); a NaN when some y is NaN
 *     (a NaN wins the maximum on both backends; its payload is not specified). A maximum is exact
 *     in any order: its bits do not depend on the GPU or the grid.
 * The backward takes the gradient of y (unscaled: an fp8 output is a cast for the next GEMM, its
 * gradient passes straight through), with g = dy * gamma_j and hhat from the saved statistics:
 *   dh = rstd * (g - mean_row(g) - hhat * mean_row(g * hhat))      (RMS norm: no mean_row(g))
 *      + dh_extra                 (NK_RESIDUAL_ADD: the gradient reaching h by another path, as
 *                                  in pre-norm blocks where h is also the residual stream)
 *   dx = dh, dresidual = dh       (the gradient of h reaches both inputs of the add), stored in
 *                                  desc->dtype
 *   dbias_in_j = sum over rows of dh as stored (the dx or dresidual values),
 *   dweight_j = sum over rows of dy * hhat (the same for both weight forms),
 *   dbias_j = sum over rows of dy.
 * Column sums are added in a fixed order that depends on rows and cols only (and, on CUDA, on
 * whether every pointer allows 16-byte access): the same bits on every GPU, whatever its SM count.
 * With no fusion (nk_row_fusion_default(), or NK_RMS_NORM and nothing else) the calls compute
 * what nk_layer_norm_* and nk_rms_norm_* compute.
 * ------------------------------------------------------------------------------------------- */

/* clang-format off */
typedef NK_ENUM(nk_row_norm) { NK_LAYER_NORM = 0, NK_RMS_NORM = 1 } nk_row_norm;

typedef NK_ENUM(nk_residual) {
  NK_RESIDUAL_NONE = 0, /* the input x is normalized */
  NK_RESIDUAL_ADD = 1   /* h = x + residual (+ bias_in) is normalized (and written to h when
                           given) */
} nk_residual;

typedef NK_ENUM(nk_weight_form) {
  NK_WEIGHT_DIRECT = 0,        /* gamma = weight (NULL weight: gamma = 1) */
  NK_WEIGHT_ZERO_CENTERED = 1  /* gamma = 1 + weight: weight required */
} nk_weight_form;

typedef NK_ENUM(nk_output_format) {
  NK_OUTPUT_DTYPE = 0,     /* y in desc->dtype */
  NK_OUTPUT_FP8_E4M3 = 1,  /* y * scale in OCP fp8 E4M3 (4 exponent bits, 3 mantissa bits) */
  NK_OUTPUT_FP8_E5M2 = 2   /* y * scale in OCP fp8 E5M2 (5 exponent bits, 2 mantissa bits) */
} nk_output_format;
/* clang-format on */

/* What a fused call computes. Every field is checked (a known value) by every call that takes
 * one; the forward reads all four, the backward reads norm, residual and weight_form (the output
 * format does not change the gradients). */
typedef struct nk_row_fusion {
  nk_row_norm norm;
  nk_residual residual;
  nk_weight_form weight_form;
  nk_output_format output;
} nk_row_fusion;

/* Layer norm, nothing fused: NK_LAYER_NORM, NK_RESIDUAL_NONE, NK_WEIGHT_DIRECT, NK_OUTPUT_DTYPE. */
NK_API nk_row_fusion nk_row_fusion_default(void);

/* Buffers of nk_row_norm_fused_forward. "act" is [rows x cols] in desc->dtype, "param" [cols] in
 * desc->weight_dtype. Unused buffers must be NULL: a pointer the fusion does not read or write is
 * an error (NK_ERROR_INVALID_VALUE), so that a mismatched descriptor never passes silently. */
typedef struct nk_row_fused_forward_buffers {
  const void* x;        /* act, required */
  const void* residual; /* act: required with NK_RESIDUAL_ADD, NULL otherwise */
  const void* bias_in;  /* param, nullable (0): NK_RESIDUAL_ADD only (NULL otherwise) */
  const void* weight;   /* param: nullable with NK_WEIGHT_DIRECT (gamma 1), required with
                           NK_WEIGHT_ZERO_CENTERED */
  const void* bias;     /* param, nullable (0); layer norm only (NULL for RMS norm) */
  void* h;              /* act, nullable: the normalized h (NK_RESIDUAL_ADD only, NULL otherwise);
                           the backward's input */
  void* y;              /* required: act with NK_OUTPUT_DTYPE (may equal x, nothing else), else
                           [rows x cols] bytes of fp8 */
  const float* y_scale; /* [1] fp32 (device memory on CUDA): required with an fp8 output, NULL
                           otherwise */
  float* y_amax;        /* [1] fp32 (device memory on CUDA), nullable; fp8 outputs only (NULL
                           otherwise) */
  float* save_mean;     /* [rows] fp32, nullable; layer norm only (NULL for RMS norm) */
  float* save_rstd;     /* [rows] fp32, nullable */
} nk_row_fused_forward_buffers;

/* Buffers of nk_row_norm_fused_backward, shapes as above. */
typedef struct nk_row_fused_backward_buffers {
  const void* x;          /* act, required: the normalized input (h with NK_RESIDUAL_ADD) */
  const void* dy;         /* act, required: gradient of y (unscaled) */
  const void* dh_extra;   /* act, nullable (0): NK_RESIDUAL_ADD only */
  const void* weight;     /* param: as in the forward (required with NK_WEIGHT_ZERO_CENTERED) */
  const float* save_mean; /* [rows] fp32: required for layer norm, NULL for RMS norm */
  const float* save_rstd; /* [rows] fp32, required */
  void* dx;               /* act, nullable; may equal dy */
  void* dresidual;        /* act, nullable; NK_RESIDUAL_ADD only */
  void* dbias_in;         /* param, nullable; NK_RESIDUAL_ADD only, and needs dx or dresidual
                             (it is the column sum of the dh they receive) */
  void* dweight;          /* param, nullable */
  void* dbias;            /* param, nullable; layer norm only */
} nk_row_fused_backward_buffers;

/* Bytes of workspace the fused forward needs: what the plain forward needs for this shape
 * (nk_layer_norm_forward_workspace_size: few long rows split across blocks on CUDA; 0 otherwise and
 * on the CPU). y_amax needs none: on CUDA it is zeroed on the stream, then each warp folds its
 * maximum into it with an integer atomicMax on the bits of |y|, which order like the values (a
 * NaN's bits are above infinity's). Errors: those of the call that do not concern the buffers. */
NK_API nk_status nk_row_norm_fused_forward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                          const nk_row_fusion* fusion,
                                                          size_t* bytes);

/* The fused forward (formulas above).
 * Errors: NK_ERROR_INVALID_VALUE (fusion or buffers NULL; an unknown enum in fusion; eps negative
 *         or not finite; x or y NULL; residual without NK_RESIDUAL_ADD or missing with it; h or
 *         bias_in without NK_RESIDUAL_ADD; weight NULL with NK_WEIGHT_ZERO_CENTERED; bias or
 *         save_mean with RMS norm; y_scale missing with an fp8 output or given without one; y_amax
 *         without an fp8 output; y == x with an fp8 output; overlapping buffers other than
 *         y == x; a misaligned buffer), and the shape errors of nk_layer_norm_forward. */
NK_API nk_status nk_row_norm_fused_forward(nk_context ctx, const nk_row_desc* desc,
                                           const nk_row_fusion* fusion, double eps,
                                           const nk_row_fused_forward_buffers* buffers);

/* Bytes of workspace the fused backward needs. CUDA: as nk_layer_norm_backward_workspace_size
 * (dbias_in reuses the partial rows once dweight and dbias are done). CPU: 16 bytes per column, 24
 * with NK_RESIDUAL_ADD (fp64 column sums of dy, dy * hhat and dh). */
NK_API nk_status nk_row_norm_fused_backward_workspace_size(nk_context ctx, const nk_row_desc* desc,
                                                           const nk_row_fusion* fusion,
                                                           size_t* bytes);

/* The fused backward (formulas above).
 * Errors: NK_ERROR_INVALID_VALUE (fusion or buffers NULL; an unknown enum in fusion; x, dy or
 *         save_rstd NULL; save_mean NULL for layer norm or given for RMS norm; dh_extra,
 *         dresidual or dbias_in without NK_RESIDUAL_ADD; dbias_in without dx and dresidual; weight
 *         NULL with NK_WEIGHT_ZERO_CENTERED; dbias with RMS norm; overlapping buffers other than
 *         dx == dy; a misaligned buffer), and the shape errors of nk_layer_norm_backward. */
NK_API nk_status nk_row_norm_fused_backward(nk_context ctx, const nk_row_desc* desc,
                                            const nk_row_fusion* fusion,
                                            const nk_row_fused_backward_buffers* buffers);

/* ---------------------------------------------------------------------------------------------
 * Fused batch, instance and group norm with an activation: the forms convolutional networks call
 * (batch norm + ReLU, batch norm + add + ReLU in residual blocks, group norm + SiLU in diffusion
 * U-Nets). One call computes, per element,
 *   u = xhat * weight_c + bias_c  (+ z)          (z with NK_RESIDUAL_ADD: a tensor of x's shape)
 *   y = act(u):  identity u,  ReLU max(u, 0),  SiLU u * sigmoid(u) = u / (1 + exp(-u))
 *   (ReLU of a NaN u is NaN, as PyTorch's relu; a NaN u counts as not positive: mask bit 0, du 0)
 * with xhat and every statistic, running update, phase rule and saved statistic exactly those of
 * nk_batch_norm_forward, nk_instance_norm_forward or nk_group_norm_forward (the statistics are of
 * x alone: z is added after the norm). u is kept in fp32 (fp64 on the CPU backend) and rounded
 * once, as y: an unfused composition rounds u to desc->dtype first, so its y can differ by that
 * rounding.
 * The backward takes dy, the gradient of y:
 *   du = dy * act'(u):  identity 1;  ReLU 1 where u > 0, else 0;
 *                       SiLU s * (1 + u * (1 - s)), s = sigmoid(u)
 *   dz = du (NK_RESIDUAL_ADD)
 *   dx, dweight, dbias: the norm's backward (nk_batch_norm_backward and its kin) with du in
 *   place of dy:  dweight_c = sum du * xhat,  dbias_c = sum du.
 * act'(u) comes from what the forward saved, never from a stored u:
 *   ReLU: the forward's bit mask (relu_mask: exact, one bit per element), or its y (u > 0 exactly
 *         where y > 0, except that a positive u below the smallest fp16/bf16 subnormal rounds to
 *         y = 0 and then counts as u <= 0, as PyTorch's relu backward from its output does);
 *   SiLU: recomputed from x, the statistics (saved in training, running in inference), weight,
 *         bias and z.
 * The ReLU mask: bit (i mod 32) of the 32-bit word i / 32 is 1 where u_i > 0, i the element's
 * index in x's layout ((n*C + c)*S + s in NK_NCHW, (n*S + s)*C + c in NK_NHWC); words are stored
 * in the machine's byte order (little-endian on every CUDA platform, so bit i mod 8 of byte i / 8)
 * and the bits after the last element are 0. Its size comes from nk_channel_norm_relu_mask_size:
 * 4 * ceil(N*C*S / 32) bytes, 4-byte aligned.
 * Identity with no residual computes exactly what the plain calls compute.
 * ------------------------------------------------------------------------------------------- */

/* clang-format off */
typedef NK_ENUM(nk_channel_norm) {
  NK_BATCH_NORM = 0,    /* statistics per channel */
  NK_INSTANCE_NORM = 1, /* statistics per (n, c) */
  NK_GROUP_NORM = 2     /* statistics per (n, group) */
} nk_channel_norm;

typedef NK_ENUM(nk_activation) {
  NK_ACTIVATION_IDENTITY = 0, /* y = u */
  NK_ACTIVATION_RELU = 1,     /* y = max(u, 0) */
  NK_ACTIVATION_SILU = 2      /* y = u * sigmoid(u) (PyTorch's silu, also called swish) */
} nk_activation;
/* clang-format on */

/* What a fused channel-norm call computes. Every call that takes one checks every field and reads
 * every field. */
typedef struct nk_channel_fusion {
  nk_channel_norm norm;
  int64_t groups;           /* NK_GROUP_NORM: >= 1 and divides C; must be 0 for the other norms */
  nk_residual residual;     /* NK_RESIDUAL_ADD: u = norm(x) + z */
  nk_activation activation; /* applied to u */
} nk_channel_fusion;

/* Batch norm, nothing fused: NK_BATCH_NORM, groups 0, NK_RESIDUAL_NONE, NK_ACTIVATION_IDENTITY. */
NK_API nk_channel_fusion nk_channel_fusion_default(void);

/* Buffers of nk_channel_norm_fused_forward. "act" is [N x C x S] in desc->dtype and layout; "stat"
 * is [C] (batch norm), [N x C] (instance norm) or [N x groups] (group norm) fp32. Unused buffers
 * must be NULL: a pointer the call would not read or write is an error (NK_ERROR_INVALID_VALUE),
 * so that a mismatched fusion never passes silently. */
typedef struct nk_channel_fused_forward_buffers {
  const void* x;               /* act, required */
  const void* z;               /* act: required with NK_RESIDUAL_ADD, NULL otherwise */
  const float* weight;         /* [C] fp32, nullable (1) */
  const float* bias;           /* [C] fp32, nullable (0) */
  float* running_mean;         /* [C] fp32: batch and instance norm as in their forward (training:
                                  both or neither, updated; inference: both required, read);
                                  NULL for group norm */
  float* running_var;          /* [C] fp32, as running_mean */
  int64_t* num_batches_tracked; /* [1] int64: as in nk_batch_norm_forward; NULL for group norm */
  void* y;                     /* act, required; may equal x or z (nothing else) */
  float* save_mean;            /* stat, nullable; training only (NULL in inference) */
  float* save_invstd;          /* stat, nullable; training only (NULL in inference) */
  void* relu_mask;             /* nullable: NK_ACTIVATION_RELU only; the bit mask (layout above),
                                  nk_channel_norm_relu_mask_size bytes, 4-byte aligned */
} nk_channel_fused_forward_buffers;

/* Buffers of nk_channel_norm_fused_backward, shapes as above. */
typedef struct nk_channel_fused_backward_buffers {
  const void* x;            /* act, required: the forward's x */
  const void* dy;           /* act, required: the gradient of y */
  const void* y;            /* act: NK_ACTIVATION_RELU without relu_mask (the forward's y);
                               NULL otherwise */
  const void* relu_mask;    /* NK_ACTIVATION_RELU: the forward's mask; exactly one of y and
                               relu_mask with ReLU, neither otherwise */
  const void* z;            /* act: required for NK_ACTIVATION_SILU with NK_RESIDUAL_ADD (u needs
                               it); NULL otherwise */
  const float* weight;      /* [C] fp32, nullable (1) */
  const float* bias;        /* [C] fp32, nullable (0): NK_ACTIVATION_SILU only (u needs it), NULL
                               otherwise */
  const float* running_mean; /* [C] fp32: batch and instance norm in inference, required; NULL
                                otherwise */
  const float* running_var;  /* [C] fp32, as running_mean */
  const float* save_mean;   /* stat: training, required (the forward's); NULL in inference */
  const float* save_invstd; /* stat: as save_mean */
  void* dx;                 /* act, nullable; may equal dy */
  void* dz;                 /* act, nullable: NK_RESIDUAL_ADD only; may equal dy (not with
                               dx == dy) */
  float* dweight;           /* [C] fp32, nullable; written, not accumulated */
  float* dbias;             /* [C] fp32, nullable */
} nk_channel_fused_backward_buffers;

/* Bytes of the ReLU mask of desc (written to *bytes): 4 * ceil(N*C*S / 32). Reads n, c, spatial
 * (layout and dtype are checked, not read). */
NK_API nk_status nk_channel_norm_relu_mask_size(const nk_act_desc* desc, size_t* bytes);

/* Bytes of workspace the fused forward needs: what the norm's plain forward needs for this shape
 * and phase (nk_batch_norm_forward_workspace_size and its kin, with fusion->groups for group
 * norm). Errors: those of the call that do not concern the buffers. */
NK_API nk_status nk_channel_norm_fused_forward_workspace_size(nk_context ctx,
                                                              const nk_act_desc* desc,
                                                              const nk_channel_fusion* fusion,
                                                              const nk_norm_params* params,
                                                              size_t* bytes);

/* The fused forward (formulas above).
 *   params  as the norm's plain forward reads it (nk_norm_params); group norm has no running
 *           statistics and no frozen phase: its phase must be NK_TRAINING and it reads eps only.
 * Errors: NK_ERROR_BAD_SHAPE (groups not dividing C; the shape errors of the norm's forward),
 *         NK_ERROR_INVALID_VALUE (fusion, params or buffers NULL; an unknown enum; groups not 0
 *         for batch or instance norm; group norm in NK_INFERENCE; x or y NULL; z missing with
 *         NK_RESIDUAL_ADD or given without it; relu_mask without ReLU or misaligned; running
 *         buffers for group norm, or the running-buffer errors of the norm's forward; save_mean
 *         or save_invstd in inference; overlapping buffers other than y == x or y == z; a
 *         misaligned buffer). */
NK_API nk_status nk_channel_norm_fused_forward(nk_context ctx, const nk_act_desc* desc,
                                               const nk_channel_fusion* fusion,
                                               const nk_norm_params* params,
                                               const nk_channel_fused_forward_buffers* buffers);

/* Bytes of workspace the fused backward needs: what the norm's plain backward needs for this
 * shape and phase (nk_batch_norm_backward_workspace_size and its kin). */
NK_API nk_status nk_channel_norm_fused_backward_workspace_size(nk_context ctx,
                                                               const nk_act_desc* desc,
                                                               const nk_channel_fusion* fusion,
                                                               const nk_norm_params* params,
                                                               size_t* bytes);

/* The fused backward (formulas above). params: phase and eps, as nk_batch_norm_backward reads
 * them (group norm: phase NK_TRAINING).
 * Errors: NK_ERROR_BAD_SHAPE and NK_ERROR_INVALID_VALUE as the forward, and: x or dy NULL; with
 *         ReLU neither or both of y and relu_mask; y or relu_mask without ReLU; z missing for SiLU
 *         with NK_RESIDUAL_ADD or given otherwise; bias without SiLU; dz without NK_RESIDUAL_ADD;
 *         the statistics the phase needs missing, or those it does not read given; overlapping
 *         buffers other than dx == dy or dz == dy. */
NK_API nk_status nk_channel_norm_fused_backward(nk_context ctx, const nk_act_desc* desc,
                                                const nk_channel_fusion* fusion,
                                                const nk_norm_params* params,
                                                const nk_channel_fused_backward_buffers* buffers);

/* ---------------------------------------------------------------------------------------------
 * Statistics accumulator: exact per-feature count, mean and variance over any number of batches
 * fed one by one (Welford within a batch, Chan's merge across batches and accumulators), in fp64.
 * Uses: precise batch-norm statistics after training (the variance of all the data, not a mean of
 * per-batch variances: finalize straight into running_mean and running_var), and dataset
 * standardization statistics (as Keras' Normalization.adapt).
 * Both backends: the accumulator lives on the backend of the context it is created with (its state
 * in device memory on CUDA, allocated by nk_stats_create), every batch and output pointer is in
 * that context's memory, and every call runs on the context's current stream and workspace. The
 * context must outlive the accumulator. On CUDA nothing waits for the GPU (the count is kept on the
 * host, which knows it from the shapes); each nk_stats_add_* allocates its scratch on the stream
 * (cudaMallocAsync) rather than using the context's workspace, and nk_stats_destroy frees the
 * device state with cudaFree.
 * ------------------------------------------------------------------------------------------- */

typedef struct nk_stats_s* nk_stats;

/* An empty accumulator of `features` (>= 1) features on ctx's backend.
 * Errors: NK_ERROR_INVALID_VALUE (ctx or out NULL), NK_ERROR_BAD_SHAPE (features < 1),
 *         NK_ERROR_OUT_OF_MEMORY, NK_ERROR_CUDA. */
NK_API nk_status nk_stats_create(nk_context ctx, int64_t features, nk_stats* out);

/* NULL is accepted and does nothing. */
NK_API nk_status nk_stats_destroy(nk_stats stats);

/* Back to no samples. */
NK_API nk_status nk_stats_reset(nk_stats stats);

/* Adds a batch, one feature per channel: x is N x C x S in desc's layout and dtype, and
 * desc->c must equal the accumulator's feature count (NK_ERROR_BAD_SHAPE otherwise). */
NK_API nk_status nk_stats_add_channels(nk_stats stats, const nk_act_desc* desc, const void* x);

/* Adds a batch, one feature per column: x is rows x cols (row-major) of desc->dtype, and
 * desc->cols must equal the feature count; desc->weight_dtype is not read (but must be a known
 * nk_dtype). */
NK_API nk_status nk_stats_add_columns(nk_stats stats, const nk_row_desc* desc, const void* x);

/* into += from: afterwards `into` holds the statistics of both sample sets. Both must have the
 * same feature count (NK_ERROR_BAD_SHAPE) and live on the same backend and device; into == from is
 * rejected (NK_ERROR_INVALID_VALUE). Runs on into's context's stream: when `from` was fed on
 * another stream, order that stream's work first (an event, or a synchronize). */
NK_API nk_status nk_stats_merge(nk_stats into, nk_stats from);

/* The number of samples each feature has seen (the same for every feature). */
NK_API nk_status nk_stats_count(nk_stats stats, int64_t* count);

/* Per feature, each output [features] fp32 and nullable: the mean, the biased variance (divided by
 * the count) and the unbiased variance (divided by count - 1).
 * Errors: NK_ERROR_INVALID_VALUE (no samples yet; var_unbiased with a single sample). */
NK_API nk_status nk_stats_finalize(nk_stats stats, float* mean, float* var, float* var_unbiased);

/* Per feature, each output [features] fp32 and nullable: the smallest and largest value seen (what
 * min-max scaling fits). Errors: NK_ERROR_INVALID_VALUE (no samples yet). */
NK_API nk_status nk_stats_min_max(nk_stats stats, float* min, float* max);

/* ---------------------------------------------------------------------------------------------
 * Frozen statistics: what inference normalizes with, as a first-class object that is saved,
 * loaded and checked against the layer it is applied to.
 *
 * File format, version 1, little-endian:
 *   offset  0  magic "NKSTATS" and a zero byte (8 bytes)
 *           8  u32 version (1)          12  u32 kind (nk_stats_kind)
 *          16  u32 dtype (nk_dtype)     20  u32 variance convention (nk_running_var)
 *          24  i64 features             32  i64 samples
 *          40  f64 eps
 *          48  f32 center[features], then f32 spread[features]
 *         end  u64 checksum: 64-bit FNV-1a of every preceding byte
 * ------------------------------------------------------------------------------------------- */

/* clang-format off */
typedef NK_ENUM(nk_stats_kind) {
  NK_STATS_BATCH_NORM = 1,    /* center: running mean, spread: running variance */
  NK_STATS_INSTANCE_NORM = 2, /* the same */
  NK_STATS_STANDARDIZE = 3,   /* center: mean, spread: variance (z-score preprocessing) */
  NK_STATS_MIN_MAX = 4,       /* center: minimum, spread: maximum - minimum */
  NK_STATS_ROBUST = 5         /* center: median, spread: interquartile range (q75 - q25) */
} nk_stats_kind;

/* What a preprocessing transform does with a feature whose spread is 0. */
typedef NK_ENUM(nk_zero_spread) {
  NK_ZERO_SPREAD_ERROR = 0, /* the call fails with NK_ERROR_INVALID_VALUE naming the feature */
  NK_ZERO_SPREAD_ZERO = 1   /* that feature's outputs are 0 (as divide_no_nan) */
} nk_zero_spread;
/* clang-format on */

/* Every call that takes an nk_frozen_stats checks every field (nk_frozen_stats_release, which only
 * frees, aside). Beyond that: nk_frozen_stats_save writes them all; nk_frozen_stats_check compares
 * kind, dtype, features and eps with the layer's; nk_batch_norm_forward_frozen does the same and
 * normalizes with center and spread; nk_scale_columns reads kind, dtype, features, center and
 * spread (samples, eps and running_var play no part there). */
typedef struct nk_frozen_stats {
  nk_stats_kind kind;
  nk_dtype dtype;             /* dtype of the activations the statistics are for */
  nk_running_var running_var; /* how `spread` was estimated: unbiased or biased variance */
  int64_t features;           /* >= 1 */
  int64_t samples;            /* values per feature the statistics come from, >= 1 */
  double eps;                 /* the eps the layer normalizes with, finite and >= 0 */
  float* center;              /* [features] */
  float* spread;              /* [features], each finite and >= 0 */
} nk_frozen_stats;

/* Writes stats to `path` atomically: a temporary file beside it is written, flushed to disk and
 * renamed over `path`, so a crash or a failure leaves either the old file or the new one. The new
 * file keeps the permissions of the file it replaces (else 0666 less the umask); a symbolic link
 * at `path` is replaced by the file, not followed.
 * Errors: NK_ERROR_INVALID_VALUE (NULL arguments; an invalid field, named), NK_ERROR_BAD_SHAPE
 *         (features < 1), NK_ERROR_IO (the file could not be written; `path` is left as it was). */
NK_API nk_status nk_frozen_stats_save(const char* path, const nk_frozen_stats* stats);

/* Reads and checks a file written by nk_frozen_stats_save. On success *stats owns newly allocated
 * center and spread arrays: release them with nk_frozen_stats_release. On failure *stats is left
 * untouched.
 * Errors: NK_ERROR_INVALID_VALUE (NULL arguments), NK_ERROR_IO (cannot open or read),
 *         NK_ERROR_FILE_FORMAT (not a normkit statistics file, truncated, trailing bytes, checksum
 *         mismatch, an invalid field), NK_ERROR_NOT_SUPPORTED (written by a newer normkit: a
 *         version above 1), NK_ERROR_OUT_OF_MEMORY. */
NK_API nk_status nk_frozen_stats_load(const char* path, nk_frozen_stats* stats);

/* Frees the arrays of a loaded nk_frozen_stats and sets them to NULL. NULL is accepted. */
NK_API void nk_frozen_stats_release(nk_frozen_stats* stats);

/* Checks frozen statistics against the layer they are about to be applied to: every field must be
 * valid, and kind, activation dtype, feature count and eps must match exactly. The message names
 * both values, e.g. "eps = 0.001 in the frozen statistics but 1e-05 in the layer". Errors:
 * NK_ERROR_INVALID_VALUE (a mismatch, an invalid field, or a NULL argument). */
NK_API nk_status nk_frozen_stats_check(const nk_frozen_stats* stats, nk_stats_kind kind,
                                       nk_dtype dtype, int64_t features, double eps);

/* Batch norm inference with frozen statistics: nk_frozen_stats_check(stats, NK_STATS_BATCH_NORM,
 * desc->dtype, desc->c, params->eps), then nk_batch_norm_forward in NK_INFERENCE with
 * stats->center and stats->spread as the running statistics. They are host arrays: a CUDA context
 * copies them to device scratch on its stream first (so this call is not for CUDA graph capture;
 * for that, upload them once and call nk_batch_norm_forward; the copies go to a stream-ordered
 * allocation, not the context's workspace). params->phase must be NK_INFERENCE
 * (NK_ERROR_INVALID_VALUE otherwise).
 * Errors: those of nk_frozen_stats_check and nk_batch_norm_forward. */
NK_API nk_status nk_batch_norm_forward_frozen(nk_context ctx, const nk_act_desc* desc,
                                              const nk_norm_params* params,
                                              const nk_frozen_stats* stats, const void* x,
                                              const float* weight, const float* bias, void* y);

/* ---------------------------------------------------------------------------------------------
 * Preprocessing normalizers with frozen parameters: fit once (nk_stats_* for the mean, variance,
 * minimum and maximum; nk_quantiles_columns for the median and quartiles), freeze the parameters in
 * an nk_frozen_stats (saved and checked like any other), then transform.
 * Both backends run them. x, y and out are device pointers on a CUDA context; q and the
 * nk_frozen_stats (with its center and spread arrays) are host memory on either backend. CPU
 * contexts allocate host scratch memory. CUDA contexts take device scratch from the context's
 * workspace when it is large enough (these ops have no size query) and otherwise allocate it on
 * the stream (cudaMallocAsync). nk_quantiles_columns and nk_scale_columns copy host arrays to the
 * device (which waits for the stream's earlier work): they cannot be captured in a CUDA graph.
 * nk_l2_normalize_rows neither allocates nor copies.
 * ------------------------------------------------------------------------------------------- */

/* Exact quantiles of every column of a rows x cols tensor x (desc->dtype; weight_dtype not read),
 * as numpy's default ('linear'): with the column sorted, h = q * (rows - 1) and
 * value = v[floor h] + (h - floor h) * (v[floor h + 1] - v[floor h]), computed in fp64 and rounded
 * once to fp32. A column holding a NaN gets NaN for every quantile. Both backends give the same
 * bits, NaN payloads aside (and where a column holds both -0 and +0, the sign of a zero result
 * may differ: their order in the sort is not specified).
 *   q    [nq] host doubles, each in [0, 1];  out  [nq x cols] fp32, out[i * cols + j].
 * CUDA: the columns are copied out and sorted in batches of whole columns (about 2^26 values, or
 * one column when it is longer); the device scratch is 8 bytes per value of a batch, CUB's
 * temporary storage and 16 bytes per q. A batch of more than a few hundred columns synchronizes
 * the stream (CUB reads segment counts back); a very long column is sorted by one block (slowly).
 * Errors: NK_ERROR_INVALID_VALUE (a q outside [0, 1] or NaN, nq < 1, NULL pointers),
 *         NK_ERROR_NOT_SUPPORTED (CUDA: rows >= 2^31; the CPU backend takes them). */
NK_API nk_status nk_quantiles_columns(nk_context ctx, const nk_row_desc* desc, const void* x,
                                      const double* q, int64_t nq, float* out);

/* Transforms a rows x cols tensor with frozen per-column parameters (stats->features == cols,
 * stats->dtype == desc->dtype; desc->weight_dtype not read):
 *   NK_STATS_STANDARDIZE  y = (x - mean) / sqrt(variance)
 *   NK_STATS_MIN_MAX      y = (x - min) / (max - min)
 *   NK_STATS_ROBUST       y = (x - median) / IQR
 * computed as (x - center) * (1 / scale) in fp64 and rounded once (both backends give the same
 * bits, NaN payloads aside). A column whose spread is 0 follows `zero_spread`; the check runs
 * before anything is written. x and y may be the same buffer. CUDA: the per-column center and
 * 1 / scale are copied to the device (16 bytes per column of scratch).
 * Errors: NK_ERROR_INVALID_VALUE (another kind; a dtype or feature mismatch, naming both values;
 *         a zero spread with NK_ZERO_SPREAD_ERROR, naming the feature; overlap other than y == x).
 */
NK_API nk_status nk_scale_columns(nk_context ctx, const nk_row_desc* desc,
                                  const nk_frozen_stats* stats, nk_zero_spread zero_spread,
                                  const void* x, void* y);

/* y = x / max(||x||_2, eps) for every row of a rows x cols tensor (a zero row gives zeros). eps
 * finite and > 0. x and y may be the same buffer. The sum of squares is accumulated in fp64 on
 * both backends, in another order on the GPU, whose outputs may differ from the CPU backend's by
 * one unit in the last place of the dtype. CUDA: no scratch, nothing copied from the host. */
NK_API nk_status nk_l2_normalize_rows(nk_context ctx, const nk_row_desc* desc, double eps,
                                      const void* x, void* y);

/* ---------------------------------------------------------------------------------------------
 * Synchronized batch norm: the statistics of a global batch whose shards live on several ranks
 * (GPUs, nodes). Two phases around an exchange the engine runs over its own transport:
 *   forward   1. nk_batch_norm_local_stats on each rank: count, mean and m2 of its shard;
 *             2. exchange: gather every rank's (count, mean, m2) (e.g. an all-gather);
 *             3. nk_batch_norm_merge_stats on each rank: merges them in rank order (every rank
 *                gets the same bits; ranks with no samples contribute count 0, never NaN);
 *             4. nk_batch_norm_forward_global on each rank: normalizes its shard with the global
 *                statistics, saves them, updates the running statistics.
 *   backward  1. nk_batch_norm_backward_local_sums: per channel sum(dy) and sum(dy * x-hat);
 *             2. exchange: sum them over ranks (an all-reduce, or an all-gather summed in rank
 *                order for bitwise-equal ranks);
 *             3. nk_batch_norm_backward_global: dx from the global sums, which are also dbias and
 *                dweight.
 * Or, over NCCL, nk_sync_batch_norm_forward / nk_sync_batch_norm_backward do all of it in one call
 * each (below).
 *
 * Every pointer, counts included, is in the context's memory: host memory on a CPU context, device
 * memory on a CUDA context. A CUDA context leaves counts on the device (nothing waits for the GPU,
 * and the calls can be captured in a CUDA graph once a workspace is set), so it cannot return an
 * error for an invalid count; the device instead follows these rules, where a CPU context returns
 * NK_ERROR_INVALID_VALUE:
 *   - merge: a negative count makes total_count -1 and the merged mean and m2 NaN; counts that are
 *     all 0 give total_count 0, mean 0 and m2 0;
 *   - forward_global: a global count below 2 leaves the running statistics and
 *     num_batches_tracked unchanged (one value has no unbiased variance); below 1 the statistics
 *     are taken as mean 0, variance 0; a num_batches_tracked outside [0, INT64_MAX - 1] leaves
 *     them unchanged too, as in nk_batch_norm_forward (a CPU context refuses it);
 *   - backward_global: a global count below 1 gives dx = weight * invstd * dy.
 * Workspace: nk_batch_norm_forward_global uses what nk_batch_norm_forward in NK_TRAINING does
 * (same size query), nk_batch_norm_backward_global what nk_batch_norm_backward in NK_TRAINING
 * does; local_stats, merge_stats and backward_local_sums fit in the same. The CPU backend
 * allocates host scratch memory for the local statistics and sums.
 *
 * A rank without samples passes desc->n = 0 to every call (its activation pointers may then be
 * NULL): its local statistics and sums are count 0 and zeros, and its global forward still updates
 * its running statistics, so every rank keeps the same copy.
 * Multi-node: run the exchanges over the engine's communicator, on the context's stream (for NCCL:
 * ncclAllGather of the packed counts, means and m2s; an all-reduce or all-gather of the sums), or
 * use the NCCL path. Every rank must call with the same C, dtype and params.
 * ------------------------------------------------------------------------------------------- */

/* This rank's shard, per channel: the number of values (N*S, the same for every channel), their
 * mean and m2 = sum((x - mean)^2).
 *   count [1] int64; mean, m2 [C] fp32. Errors: those of the shape and pointer checks. */
NK_API nk_status nk_batch_norm_local_stats(nk_context ctx, const nk_act_desc* desc, const void* x,
                                           int64_t* count, float* mean, float* m2);

/* Merges `ranks` partials in rank order (Chan's merge, fp64).
 *   counts [ranks] int64 (>= 0); means, m2s [ranks x channels] fp32 (index r * channels + c);
 *   total_count [1] int64; mean, m2 [channels] fp32.
 * Errors: NK_ERROR_INVALID_VALUE (NULL; CPU: every count 0, a negative count), NK_ERROR_BAD_SHAPE
 *         (ranks or channels < 1). */
NK_API nk_status nk_batch_norm_merge_stats(nk_context ctx, int64_t ranks, int64_t channels,
                                           const int64_t* counts, const float* means,
                                           const float* m2s, int64_t* total_count, float* mean,
                                           float* m2);

/* Training forward of this rank's shard with the global statistics (*global_count, mean, m2 from
 * nk_batch_norm_merge_stats): var = m2 / count, otherwise exactly nk_batch_norm_forward in
 * NK_TRAINING (same arguments, same running update with the global count). The shard itself may
 * hold a single value per channel.
 *   global_count [1] int64, >= 2 and >= this shard's N*S (CPU: checked; CUDA: see above).
 *   num_batches_tracked  as in nk_batch_norm_forward in NK_TRAINING: in [0, INT64_MAX - 1]
 *                (CPU: checked; CUDA: the device rule above).
 * Errors: those of nk_batch_norm_forward; NK_ERROR_INVALID_VALUE (params->phase not NK_TRAINING;
 *         CPU: *global_count or *num_batches_tracked out of range). */
NK_API nk_status nk_batch_norm_forward_global(
    nk_context ctx, const nk_act_desc* desc, const nk_norm_params* params,
    const int64_t* global_count, const float* global_mean, const float* global_m2, const void* x,
    const float* weight, const float* bias, float* running_mean, float* running_var,
    int64_t* num_batches_tracked, void* y, float* save_mean, float* save_invstd);

/* This rank's per-channel sum(dy) and sum(dy * x-hat), x-hat from save_mean/save_invstd.
 *   sum_dy, sum_dy_xhat [C] fp32, required. */
NK_API nk_status nk_batch_norm_backward_local_sums(nk_context ctx, const nk_act_desc* desc,
                                                   const void* x, const void* dy,
                                                   const float* save_mean, const float* save_invstd,
                                                   float* sum_dy, float* sum_dy_xhat);

/* dx of this rank's shard from the global sums (summed over ranks) and the global count:
 *   dx = weight * invstd * (dy - sum_dy / count - x-hat * sum_dy_xhat / count)
 * The global sums are dbias and dweight. dx may equal dy.
 *   global_count [1] int64, >= this shard's N*S (CPU: checked). */
NK_API nk_status nk_batch_norm_backward_global(nk_context ctx, const nk_act_desc* desc,
                                               const int64_t* global_count, const float* sum_dy,
                                               const float* sum_dy_xhat, const void* x,
                                               const void* dy, const float* weight,
                                               const float* save_mean, const float* save_invstd,
                                               void* dx);

/* ---------------------------------------------------------------------------------------------
 * Synchronized batch norm over NCCL, one call per direction, on CUDA contexts.
 * nccl_comm is the engine's ncclComm_t (passed as void* so this header needs no NCCL): one rank per
 * shard, on the context's device. Each call reduces the shard, exchanges one record per rank with
 * ncclAllGather on the context's stream, and merges the records in rank order on every rank, so
 * every rank gets bitwise the same statistics and sums; nothing waits for the host, so with a
 * workspace (size queries below) the calls can be captured in a CUDA graph. Every rank must call,
 * in the same order, with the same C, dtype and params: a rank without samples passes desc->n = 0
 * (x, y, dy, dx may then be NULL) and still takes part. Forward: as nk_batch_norm_forward in
 * NK_TRAINING over the global batch (the device rules above for a global count below 2 and for
 * num_batches_tracked); backward: dx, and dweight and dbias over the global batch (each
 * nullable).
 * NCCL itself is opened at run time (libnccl.so.2 through the loader's search path: the library
 * the engine has loaded), so libnormkit does not depend on it. Multi-node: the communicator spans
 * the nodes; nothing else changes. Drive each rank from its own thread or process and never call
 * these inside ncclGroupStart/ncclGroupEnd: normkit enqueues kernels after each all-gather, which a
 * group would defer. examples/sync_batch_norm_nccl.cpp shows the wiring.
 * Errors: those of nk_batch_norm_forward / nk_batch_norm_backward in NK_TRAINING (N may be 0);
 *         NK_ERROR_INVALID_VALUE (nccl_comm NULL, or on another device than ctx);
 *         NK_ERROR_NOT_SUPPORTED (a CPU context; a build without NCCL's header; libnccl.so.2
 *         cannot be loaded); NK_ERROR_CUDA (a CUDA or NCCL call failed, named).
 * ------------------------------------------------------------------------------------------- */

NK_API nk_status nk_sync_batch_norm_forward_workspace_size(nk_context ctx, void* nccl_comm,
                                                           const nk_act_desc* desc,
                                                           const nk_norm_params* params,
                                                           size_t* bytes);
NK_API nk_status nk_sync_batch_norm_forward(nk_context ctx, void* nccl_comm,
                                            const nk_act_desc* desc, const nk_norm_params* params,
                                            const void* x, const float* weight, const float* bias,
                                            float* running_mean, float* running_var,
                                            int64_t* num_batches_tracked, void* y, float* save_mean,
                                            float* save_invstd);
NK_API nk_status nk_sync_batch_norm_backward_workspace_size(nk_context ctx, void* nccl_comm,
                                                            const nk_act_desc* desc, size_t* bytes);
NK_API nk_status nk_sync_batch_norm_backward(nk_context ctx, void* nccl_comm,
                                             const nk_act_desc* desc, const void* x, const void* dy,
                                             const float* weight, const float* save_mean,
                                             const float* save_invstd, void* dx, float* dweight,
                                             float* dbias);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NORMKIT_NORMKIT_H_ */

// umt-nn's own CUDA kernels, compiled at run time with NVRTC (see src/cuda.rs): the fused
// training BatchNorm (+ residual + ReLU) of src/norm.rs and the fused optimizer steps of
// src/optim/host.rs. Every kernel exists for float (suffix _f32) and double (_f64).
//
// BatchNorm layout: x is a contiguous (N, C, plane) buffer; per-channel statistics are doubles
// `stats[0..C] = mean`, `stats[C..2C] = biased variance`. Reductions over (N, plane) run as a
// grid (C, splits) of partial sums (deterministic: no atomics), then one finalize thread per
// channel. The arithmetic follows the CPU kernels of src/norm.rs term by term.

#define WARPS 8
#define THREADS (WARPS * 32)

// Sum of `v` over the block (THREADS threads); the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double sh[WARPS];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = (threadIdx.x < WARPS) ? sh[threadIdx.x] : 0.0;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  __syncthreads();  // `sh` may be reused by the next call
  return v;
}

// −∞ (NVRTC has no math.h constants without includes).
#define UMT_NEG_INF (-__longlong_as_double(0x7ff0000000000000ULL))

// The rows [r0, r1) of a max-pool window along one axis: output o covers
// [o·s − p, o·s − p + k) clipped to [0, len) (as pool.rs's `Windows::fixed`).
__device__ __forceinline__ void span(unsigned o, unsigned k, unsigned s, unsigned p, unsigned len,
                                     unsigned* a, unsigned* b) {
  const long long start = (long long)o * s - p, end = start + k;
  *a = start < 0 ? 0u : (unsigned)start;
  *b = end > (long long)len ? len : (unsigned)end;
}

// End of split s's range [lo = s·per, end) of a channel's `count` values (empty past the end).
__device__ __forceinline__ unsigned split_end(unsigned lo, unsigned per, unsigned count) {
  return lo >= count ? lo : (count - lo < per ? count : lo + per);
}

// Block-reduces (a, b) and stores them as the partial pair of split s, channel ch (every thread
// of the block must call it).
__device__ void store_partials(double a, double b, double* part, unsigned s, unsigned c,
                               unsigned ch) {
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) {
    part[((unsigned long long)s * c + ch) * 2] = a;
    part[((unsigned long long)s * c + ch) * 2 + 1] = b;
  }
}

// Channel ch's partial pairs summed over the splits.
__device__ void sum_partials(const double* part, unsigned splits, unsigned c, unsigned ch,
                             double* a, double* b) {
  *a = 0.0;
  *b = 0.0;
  for (unsigned s = 0; s < splits; ++s) {
    *a += part[((unsigned long long)s * c + ch) * 2];
    *b += part[((unsigned long long)s * c + ch) * 2 + 1];
  }
}

// Element j (0 <= j < n·plane) of channel ch.
__device__ __forceinline__ unsigned long long at(unsigned j, unsigned ch, unsigned c,
                                                 unsigned plane) {
  const unsigned i = j / plane, q = j - i * plane;
  return ((unsigned long long)i * c + ch) * plane + q;
}

#define UMT_KERNELS(T, S)                                                                     \
  /* Partial shifted sums Σ(x−k), Σ(x−k)² (k = the channel's first element) per (split, ch). */ \
  extern "C" __global__ void bn_partial_fwd_##S(const T* x, double* part, unsigned n,         \
                                                unsigned c, unsigned plane, unsigned per) {   \
    const unsigned ch = blockIdx.x, s = blockIdx.y, count = n * plane;                        \
    const unsigned lo = s * per, hi = split_end(lo, per, count);                                  \
    const double k = (double)x[(unsigned long long)ch * plane];                               \
    double a = 0.0, b = 0.0;                                                                  \
    for (unsigned j = lo + threadIdx.x; j < hi; j += blockDim.x) {                            \
      const double v = (double)x[at(j, ch, c, plane)] - k;                                    \
      a += v;                                                                                 \
      b += v * v;                                                                             \
    }                                                                                         \
    store_partials(a, b, part, s, c, ch);                                                    \
  }                                                                                           \
  /* stats = [mean; biased variance] per channel from the partial sums. */                     \
  extern "C" __global__ void bn_finalize_fwd_##S(const double* part, const T* x,              \
                                                 double* stats, unsigned c, unsigned plane,   \
                                                 unsigned splits, double count) {             \
    const unsigned ch = blockIdx.x * blockDim.x + threadIdx.x;                                \
    if (ch >= c) return;                                                                      \
    double a, b;                                                                              \
    sum_partials(part, splits, c, ch, &a, &b);                                                \
    const double d = a / count;                                                               \
    const double var = b / count - d * d;                                                    \
    stats[ch] = (double)x[(unsigned long long)ch * plane] + d;                                \
    stats[c + ch] = var > 0.0 ? var : 0.0;                                                    \
  }                                                                                           \
  /* y = [relu](x·scale + shift [+ r]), scale = γ/σ, shift = β − μ·scale (as the CPU op). */   \
  extern "C" __global__ void bn_apply_##S(const T* x, const T* gamma, const T* beta,          \
                                          const double* stats, const T* res, T* y,            \
                                          unsigned total, unsigned c, unsigned plane,         \
                                          double eps, int relu, int has_res) {                \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;                       \
         i += gridDim.x * blockDim.x) {                                                       \
      const unsigned ch = (i / plane) % c;                                                    \
      const double sc = (double)gamma[ch] / sqrt(stats[c + ch] + eps);                        \
      const T scale = (T)sc, shift = (T)((double)beta[ch] - stats[ch] * sc);                  \
      T v = x[i] * scale + shift;                                                             \
      if (has_res) v = v + res[i];                                                            \
      y[i] = (relu && v < (T)0) ? (T)0 : v;                                                   \
    }                                                                                         \
  }                                                                                           \
  /* Partial Σg, Σg·(x−μ) per (split, ch), g = dy masked by y > 0 after a ReLU. */            \
  extern "C" __global__ void bn_partial_bwd_##S(const T* x, const T* y, const T* dy,          \
                                                const double* stats, double* part,            \
                                                unsigned n, unsigned c, unsigned plane,       \
                                                unsigned per, int relu) {                     \
    const unsigned ch = blockIdx.x, s = blockIdx.y, count = n * plane;                        \
    const unsigned lo = s * per, hi = split_end(lo, per, count);                                  \
    const double mean = stats[ch];                                                            \
    double a = 0.0, b = 0.0;                                                                  \
    for (unsigned j = lo + threadIdx.x; j < hi; j += blockDim.x) {                            \
      const unsigned long long e = at(j, ch, c, plane);                                       \
      const double g = (relu && y[e] <= (T)0) ? 0.0 : (double)dy[e];                          \
      a += g;                                                                                 \
      b += g * ((double)x[e] - mean);                                                         \
    }                                                                                         \
    store_partials(a, b, part, s, c, ch);                                                    \
  }                                                                                           \
  /* Per channel: coef = (a, b, k) of dx = a·g + b·(x − μ) + k; tail = [dγ (C); dβ (C)]. */    \
  extern "C" __global__ void bn_finalize_bwd_##S(const double* part, const double* stats,     \
                                                 const T* gamma, double* coef, T* out,        \
                                                 unsigned long long tail, unsigned c,         \
                                                 unsigned splits, double count, double eps) { \
    const unsigned ch = blockIdx.x * blockDim.x + threadIdx.x;                                \
    if (ch >= c) return;                                                                      \
    double s, sx;                                                                             \
    sum_partials(part, splits, c, ch, &s, &sx);                                               \
    const double inv = 1.0 / sqrt(stats[c + ch] + eps);                                      \
    sx *= inv;                                                                                \
    const double a = (double)gamma[ch] * inv;                                                 \
    coef[3 * ch] = a;                                                                         \
    coef[3 * ch + 1] = -a * inv * (sx / count);                                               \
    coef[3 * ch + 2] = -a * (s / count);                                                      \
    out[tail + ch] = (T)sx;                                                                   \
    out[tail + c + ch] = (T)s;                                                                \
  }                                                                                           \
  /* out[0..total] = dx; with a residual out[total..2·total] = g (the shortcut's gradient). */ \
  extern "C" __global__ void bn_dx_##S(const T* x, const T* y, const T* dy,                   \
                                       const double* stats, const double* coef, T* out,       \
                                       unsigned total, unsigned c, unsigned plane, int relu,  \
                                       int has_res) {                                         \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;                       \
         i += gridDim.x * blockDim.x) {                                                       \
      const unsigned ch = (i / plane) % c;                                                    \
      const T g = (relu && y[i] <= (T)0) ? (T)0 : dy[i];                                      \
      const T a = (T)coef[3 * ch], b = (T)coef[3 * ch + 1], k = (T)coef[3 * ch + 2];          \
      out[i] = a * g + b * (x[i] - (T)stats[ch]) + k;                                         \
      if (has_res) out[(unsigned long long)total + i] = g;                                    \
    }                                                                                         \
  }                                                                                           \
  /* run = run·(1 − m) + stats[which·C + ch]·(m·factor): a running statistic, in place. */    \
  extern "C" __global__ void bn_running_##S(T* run, const double* stats, unsigned c,          \
                                            unsigned which, double momentum, double factor) { \
    const unsigned ch = blockIdx.x * blockDim.x + threadIdx.x;                                \
    if (ch >= c) return;                                                                      \
    run[ch] = run[ch] * (T)(1.0 - momentum) + (T)stats[which * c + ch] * (T)(momentum * factor); \
  }                                                                                           \
  /* Index in its plane of the maximum of window (oh, ow): the first maximum in row-major */   \
  /* order, or the first NaN (as pool.rs's `window_argmax`). */                              \
  __device__ unsigned pool_argmax_##S(const T* plane, unsigned oh, unsigned ow, unsigned h,   \
                                      unsigned w, unsigned k, unsigned s, unsigned p) {       \
    unsigned r0, r1, c0, c1;                                                                  \
    span(oh, k, s, p, h, &r0, &r1);                                                           \
    span(ow, k, s, p, w, &c0, &c1);                                                           \
    unsigned best = r0 * w + c0;                                                              \
    T best_v = (T)UMT_NEG_INF;                                                                \
    for (unsigned r = r0; r < r1; ++r)                                                        \
      for (unsigned c = c0; c < c1; ++c) {                                                    \
        const T v = plane[r * w + c];                                                         \
        if (v > best_v) {                                                                     \
          best_v = v;                                                                         \
          best = r * w + c;                                                                   \
        } else if (v != v) {                                                                  \
          return r * w + c;                                                                   \
        }                                                                                     \
      }                                                                                       \
    return best;                                                                              \
  }                                                                                           \
  /* max_pool2d forward over `planes` planes h×w → ho×wo. */                                 \
  extern "C" __global__ void max_pool_fwd_##S(const T* x, T* y, unsigned total, unsigned h,   \
                                              unsigned w, unsigned ho, unsigned wo,           \
                                              unsigned k, unsigned s, unsigned p) {           \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;                       \
         i += gridDim.x * blockDim.x) {                                                       \
      const unsigned ow = i % wo, t = i / wo, oh = t % ho, pl = t / ho;                       \
      const T* plane = x + (unsigned long long)pl * h * w;                                    \
      y[i] = plane[pool_argmax_##S(plane, oh, ow, h, w, k, s, p)];                            \
    }                                                                                         \
  }                                                                                           \
  /* Each output's argmax (index in its plane), for the backward pass. */                     \
  extern "C" __global__ void max_pool_argmax_##S(const T* x, unsigned* idx, unsigned total,   \
                                                 unsigned h, unsigned w, unsigned ho,         \
                                                 unsigned wo, unsigned k, unsigned s,         \
                                                 unsigned p) {                                \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;                       \
         i += gridDim.x * blockDim.x) {                                                       \
      const unsigned ow = i % wo, t = i / wo, oh = t % ho, pl = t / ho;                       \
      idx[i] = pool_argmax_##S(x + (unsigned long long)pl * h * w, oh, ow, h, w, k, s, p);    \
    }                                                                                         \
  }                                                                                           \
  /* max_pool2d backward: each input pixel sums, in row-major output order, the gradients of  \
     the windows whose argmax it is (deterministic, as the CPU kernel's order). */            \
  extern "C" __global__ void max_pool_bwd_##S(const unsigned* idx, const T* g, T* gx,         \
                                              unsigned total, unsigned h, unsigned w,         \
                                              unsigned ho, unsigned wo, unsigned k,           \
                                              unsigned s, unsigned p) {                       \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;                       \
         i += gridDim.x * blockDim.x) {                                                       \
      const unsigned iw = i % w, t = i / w, ih = t % h, pl = t / h;                           \
      const unsigned me = ih * w + iw;                                                        \
      /* Outputs o with o·s − p <= i < o·s − p + k. */                                        \
      const long long nh = (long long)ih + p - k + 1, nw = (long long)iw + p - k + 1;        \
      const unsigned oh0 = nh <= 0 ? 0u : (unsigned)((nh + s - 1) / s);                       \
      const unsigned ow0 = nw <= 0 ? 0u : (unsigned)((nw + s - 1) / s);                       \
      const unsigned eh = (ih + p) / s + 1, ew = (iw + p) / s + 1;                            \
      const unsigned oh1 = eh < ho ? eh : ho, ow1 = ew < wo ? ew : wo;                        \
      const unsigned long long base = (unsigned long long)pl * ho * wo;                       \
      T acc = (T)0;                                                                           \
      for (unsigned oh = oh0; oh < oh1; ++oh)                                                 \
        for (unsigned ow = ow0; ow < ow1; ++ow)                                               \
          if (idx[base + oh * wo + ow] == me) acc = acc + g[base + oh * wo + ow];              \
      gx[i] = acc;                                                                            \
    }                                                                                         \
  }                                                                                           \
  /* torch.optim.Adam / AdamW step (same operations, same order as optim/host.rs). */         \
  extern "C" __global__ void adam_##S(T* p, const T* g, T* m, T* v, unsigned n, T b1, T c1,   \
                                      T b2, T c2, T wd, T shrink, T inv_bc2, T eps,           \
                                      T step_size, int has_wd, int decoupled) {               \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n;                           \
         i += gridDim.x * blockDim.x) {                                                       \
      T gi = g[i], pi = p[i];                                                                 \
      if (has_wd) {                                                                           \
        if (decoupled) pi = pi * shrink;                                                      \
        else gi = gi + p[i] * wd;                                                             \
      }                                                                                       \
      const T mi = m[i] * b1 + gi * c1;                                                       \
      const T vi = v[i] * b2 + gi * gi * c2;                                                  \
      m[i] = mi;                                                                              \
      v[i] = vi;                                                                              \
      const T denom = sqrt(vi) * inv_bc2 + eps;                                               \
      p[i] = pi - mi / denom * step_size;                                                     \
    }                                                                                         \
  }                                                                                           \
  /* torch.optim.SGD step; `buf` is the momentum buffer (unused without momentum). */         \
  extern "C" __global__ void sgd_##S(T* p, const T* g, T* buf, unsigned n, T lr, T wd, T mu,  \
                                     T keep, int has_wd, int has_mom, int nesterov,           \
                                     int first) {                                             \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n;                           \
         i += gridDim.x * blockDim.x) {                                                       \
      T d = g[i];                                                                             \
      if (has_wd) d = d + p[i] * wd;                                                          \
      if (has_mom) {                                                                          \
        const T b = first ? d : buf[i] * mu + d * keep;                                       \
        buf[i] = b;                                                                           \
        d = nesterov ? d + b * mu : b;                                                        \
      }                                                                                       \
      p[i] = p[i] - d * lr;                                                                   \
    }                                                                                         \
  }

UMT_KERNELS(float, f32)
UMT_KERNELS(double, f64)

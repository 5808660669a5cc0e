// Runs every kernel of crates/umt-nn/src/cuda/kernels.cu on the host (cuda_host.hpp emulates the
// CUDA features they use) with the launch configurations of crates/umt-nn/src/cuda.rs, and
// compares the results with straightforward references written from the CPU kernels' formulas
// (src/norm.rs, src/pool.rs, src/optim/host.rs). Checks index arithmetic, split reductions,
// masks, tie/NaN rules and the optimizer arithmetic without a GPU (it cannot check the
// launch-argument marshalling of cuda.rs: only the device-parity tests on a GPU do).
//
// Build and run (what `cargo xtask ci` does):
//   g++ -std=c++20 -O1 -pthread -ffp-contract=off -I crates/umt-nn/src/cuda \
//       data-prep/golden/cuda/check_kernels.cpp -o target/check_kernels && target/check_kernels
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include "cuda_host.hpp"
#include "kernels.cu"

static int failures = 0;

static void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

template <typename A, typename B>
static double max_rel(const std::vector<A>& a, const std::vector<B>& b) {
  double diff = 0.0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs((double)a[i] - (double)b[i]));
    scale = std::max(scale, std::fabs((double)b[i]));
  }
  return diff / scale;
}

// The launch configurations of src/cuda.rs.
static_assert(THREADS == 256, "src/cuda.rs launches blocks of 256 threads");
static dim3 elementwise(unsigned n) { return dim3{std::clamp((n + THREADS - 1) / THREADS, 1u, 1u << 16), 1, 1}; }
static dim3 per_channel(unsigned c) { return dim3{std::max((c + THREADS - 1) / THREADS, 1u), 1, 1}; }
static void splits(unsigned count, unsigned* per, unsigned* n) {
  unsigned wanted = std::clamp((count + 4095) / 4096, 1u, 64u);
  *per = (count + wanted - 1) / wanted;
  *n = (count + *per - 1) / *per;
}

static std::vector<float> randoms(size_t n, unsigned seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

static void batch_norm(unsigned n, unsigned c, unsigned plane, float offset, int relu, int has_res,
                       unsigned seed) {
  const unsigned count = n * plane, total = n * c * plane;
  const double eps = 1e-5;
  auto x = randoms(total, seed, -3.f, 3.f);
  for (auto& v : x) v += offset;
  auto gamma = randoms(c, seed + 1, 0.5f, 1.5f), beta = randoms(c, seed + 2, -1.f, 1.f);
  auto res = randoms(total, seed + 3, -1.f, 1.f), dy = randoms(total, seed + 4, -1.f, 1.f);
  std::string name = "batch norm N" + std::to_string(n) + " C" + std::to_string(c) + " plane " +
                     std::to_string(plane) + " offset " + std::to_string((int)offset) +
                     (relu ? " relu" : "") + (has_res ? " residual" : "");
  // Kernels, as bn_stats / bn_apply / bn_backward / bn_running launch them.
  unsigned per, ns;
  splits(count, &per, &ns);
  std::vector<double> part(2 * c * ns), stats(2 * c);
  launch({c, ns}, THREADS, [&] { bn_partial_fwd_f32(x.data(), part.data(), n, c, plane, per); });
  launch(per_channel(c), THREADS, [&] {
    bn_finalize_fwd_f32(part.data(), x.data(), stats.data(), c, plane, ns, (double)count);
  });
  std::vector<float> y(total);
  launch(elementwise(total), THREADS, [&] {
    bn_apply_f32(x.data(), gamma.data(), beta.data(), stats.data(), has_res ? res.data() : x.data(),
                 y.data(), total, c, plane, eps, relu, has_res);
  });
  const unsigned extra = has_res ? total : 0;
  std::vector<double> coef(3 * c);
  std::vector<float> out(total + extra + 2 * c);
  launch({c, ns}, THREADS, [&] {
    bn_partial_bwd_f32(x.data(), y.data(), dy.data(), stats.data(), part.data(), n, c, plane, per, relu);
  });
  launch(per_channel(c), THREADS, [&] {
    bn_finalize_bwd_f32(part.data(), stats.data(), gamma.data(), coef.data(), out.data(),
                        (unsigned long long)(total + extra), c, ns, (double)count, eps);
  });
  launch(elementwise(total), THREADS, [&] {
    bn_dx_f32(x.data(), y.data(), dy.data(), stats.data(), coef.data(), out.data(), total, c, plane,
              relu, has_res);
  });
  std::vector<float> run_mean(c, 0.25f), run_var(c, 2.0f);
  const double m = 0.1, unbias = (double)count / (count - 1.0);
  launch(per_channel(c), THREADS, [&] { bn_running_f32(run_mean.data(), stats.data(), c, 0, m, 1.0); });
  launch(per_channel(c), THREADS, [&] { bn_running_f32(run_var.data(), stats.data(), c, 1, m, unbias); });

  // References (two-pass statistics in double; the CPU kernels' formulas).
  std::vector<double> rstats(2 * c);
  std::vector<float> ry(total), rout(total + extra + 2 * c), rmean(c), rvar(c);
  for (unsigned ch = 0; ch < c; ++ch) {
    double s = 0, q = 0;
    for (unsigned i = 0; i < n; ++i)
      for (unsigned k = 0; k < plane; ++k) s += x[(i * c + ch) * plane + k];
    const double mean = s / count;
    for (unsigned i = 0; i < n; ++i)
      for (unsigned k = 0; k < plane; ++k) q += std::pow(x[(i * c + ch) * plane + k] - mean, 2);
    const double var = q / count, inv = 1.0 / std::sqrt(var + eps);
    rstats[ch] = mean;
    rstats[c + ch] = var;
    const double sc = gamma[ch] * inv;
    const float scale = (float)sc, shift = (float)(beta[ch] - mean * sc);
    double gs = 0, gx = 0;
    for (unsigned i = 0; i < n; ++i)
      for (unsigned k = 0; k < plane; ++k) {
        const unsigned e = (i * c + ch) * plane + k;
        float v = x[e] * scale + shift;
        if (has_res) v = v + res[e];
        ry[e] = (relu && v < 0) ? 0.f : v;
        const double g = (relu && ry[e] <= 0) ? 0.0 : dy[e];
        gs += g;
        gx += g * (x[e] - mean);
      }
    gx *= inv;
    const double a = gamma[ch] * inv, b = -a * inv * (gx / count), kk = -a * (gs / count);
    for (unsigned i = 0; i < n; ++i)
      for (unsigned k = 0; k < plane; ++k) {
        const unsigned e = (i * c + ch) * plane + k;
        const float g = (relu && ry[e] <= 0) ? 0.f : dy[e];
        rout[e] = (float)a * g + (float)b * (x[e] - (float)mean) + (float)kk;
        if (has_res) rout[total + e] = g;
      }
    rout[total + extra + ch] = (float)gx;
    rout[total + extra + c + ch] = (float)gs;
    rmean[ch] = 0.25f * (float)(1 - m) + (float)mean * (float)m;
    rvar[ch] = 2.0f * (float)(1 - m) + (float)var * (float)(m * unbias);
  }
  check(max_rel(stats, rstats) < 1e-9, name + ": statistics");
  check(max_rel(y, ry) < 1e-5, name + ": output");
  check(max_rel(out, rout) < 1e-4, name + ": dx, dresidual, dgamma, dbeta");
  check(max_rel(run_mean, rmean) < 1e-6 && max_rel(run_var, rvar) < 1e-6, name + ": running statistics");
}

// pool.rs's window argmax: first maximum in row-major order, or the first NaN.
static unsigned ref_argmax(const float* p, unsigned w, unsigned r0, unsigned r1, unsigned c0, unsigned c1) {
  unsigned best = r0 * w + c0;
  float bv = -std::numeric_limits<float>::infinity();
  for (unsigned r = r0; r < r1; ++r)
    for (unsigned cc = c0; cc < c1; ++cc) {
      const float v = p[r * w + cc];
      if (std::isnan(v)) return r * w + cc;
      if (v > bv) { bv = v; best = r * w + cc; }
    }
  return best;
}

static void max_pool(unsigned planes, unsigned h, unsigned w, unsigned k, unsigned s, unsigned p,
                     bool ties, bool nan, unsigned seed) {
  auto x = randoms(planes * h * w, seed, -1.f, 1.f);
  if (ties) for (auto& v : x) v = std::max(v, 0.f);
  if (nan) x[w + 1] = std::numeric_limits<float>::quiet_NaN();
  const unsigned ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
  const unsigned nout = planes * ho * wo, nin = planes * h * w;
  auto g = randoms(nout, seed + 1, -1.f, 1.f);
  std::vector<float> y(nout), gx(nin);
  std::vector<unsigned> idx(nout);
  launch(elementwise(nout), THREADS, [&] {
    max_pool_fwd_f32(x.data(), y.data(), nout, h, w, ho, wo, k, s, p);
  });
  launch(elementwise(nout), THREADS, [&] {
    max_pool_argmax_f32(x.data(), idx.data(), nout, h, w, ho, wo, k, s, p);
  });
  launch(elementwise(nin), THREADS, [&] {
    max_pool_bwd_f32(idx.data(), g.data(), gx.data(), nin, h, w, ho, wo, k, s, p);
  });
  std::vector<float> ry(nout), rgx(nin, 0.f);
  for (unsigned pl = 0; pl < planes; ++pl)
    for (unsigned oh = 0; oh < ho; ++oh)
      for (unsigned ow = 0; ow < wo; ++ow) {
        const long r0 = (long)oh * s - p, c0 = (long)ow * s - p;
        const unsigned a = ref_argmax(&x[pl * h * w], w, std::max(r0, 0L), std::min<long>(r0 + k, h),
                                      std::max(c0, 0L), std::min<long>(c0 + k, w));
        const unsigned o = (pl * ho + oh) * wo + ow;
        ry[o] = x[pl * h * w + a];
        rgx[pl * h * w + a] += g[o];  // row-major output order, as the CPU kernel
      }
  bool same_y = true;
  for (unsigned i = 0; i < nout; ++i)
    same_y &= (std::isnan(ry[i]) && std::isnan(y[i])) || ry[i] == y[i];
  char name[128];
  std::snprintf(name, sizeof name, "max pool %ux%u k%u s%u p%u%s%s", h, w, k, s, p, ties ? " ties" : "",
                nan ? " NaN" : "");
  check(same_y, std::string(name) + ": output (bitwise)");
  check(gx == rgx, std::string(name) + ": input gradient (bitwise, same summation order)");
}

static void optimizers() {
  const unsigned n = 1000;
  for (int decoupled = 0; decoupled < 2; ++decoupled) {
    auto p = randoms(n, 7, -1.f, 1.f), rp = p;
    std::vector<float> m(n, 0.f), v(n, 0.f), rm = m, rv = v;
    const double lr = 1e-2, wd = decoupled ? 0.05 : 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int step = 1; step <= 3; ++step) {
      auto g = randoms(n, 100 + step, -1.f, 1.f);
      const double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
      const float sc[9] = {(float)b1, (float)(1 - b1), (float)b2, (float)(1 - b2), (float)wd,
                           (float)(1 - lr * wd), (float)(1 / std::sqrt(bc2)), (float)eps, (float)(lr / bc1)};
      launch(elementwise(n), THREADS, [&] {
        adam_f32(p.data(), g.data(), m.data(), v.data(), n, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5],
                 sc[6], sc[7], sc[8], 1, decoupled);
      });
      for (unsigned i = 0; i < n; ++i) {  // optim/host.rs's adam_chunk
        float gi = g[i], pi = rp[i];
        if (decoupled) pi = pi * sc[5]; else gi = gi + rp[i] * sc[4];
        const float mi = rm[i] * sc[0] + gi * sc[1], vi = rv[i] * sc[2] + gi * gi * sc[3];
        rm[i] = mi;
        rv[i] = vi;
        rp[i] = pi - mi / (std::sqrt(vi) * sc[6] + sc[7]) * sc[8];
      }
    }
    check(p == rp && m == rm && v == rv, decoupled ? "AdamW, 3 steps (bitwise)" : "Adam + L2, 3 steps (bitwise)");
  }
  auto p = randoms(n, 9, -1.f, 1.f), rp = p;
  std::vector<float> buf(n, 0.f), rbuf = buf;
  const float lr = 0.1f, wd = 1e-4f, mu = 0.9f, keep = 1.0f;
  for (int step = 1; step <= 3; ++step) {
    auto g = randoms(n, 200 + step, -1.f, 1.f);
    const int first = step == 1;
    launch(elementwise(n), THREADS, [&] {
      sgd_f32(p.data(), g.data(), buf.data(), n, lr, wd, mu, keep, 1, 1, 1, first);
    });
    for (unsigned i = 0; i < n; ++i) {  // optim/host.rs's sgd_chunk
      float d = g[i] + rp[i] * wd;
      const float b = first ? d : rbuf[i] * mu + d * keep;
      rbuf[i] = b;
      d = d + b * mu;
      rp[i] = rp[i] - d * lr;
    }
  }
  check(p == rp && buf == rbuf, "SGD Nesterov + weight decay, 3 steps (bitwise)");
}

int main() {
  batch_norm(4, 6, 35, 0.f, 0, 0, 1);
  batch_norm(4, 6, 35, 0.f, 1, 0, 2);
  batch_norm(4, 6, 35, 0.f, 1, 1, 3);
  batch_norm(3, 5, 1, 0.f, 1, 1, 4);
  batch_norm(7, 3, 1300, 0.f, 1, 1, 5);  // 9,100 values a channel: 3 blocks, the last shorter
  batch_norm(4, 3, 72, 100.f, 0, 0, 6);  // mean 100: the shifted one-pass variance
  max_pool(3, 9, 10, 3, 2, 1, false, false, 11);
  max_pool(3, 9, 10, 3, 2, 1, true, false, 12);
  max_pool(2, 8, 7, 2, 2, 0, false, false, 13);
  max_pool(2, 7, 9, 3, 1, 1, true, false, 14);
  max_pool(2, 7, 9, 3, 2, 1, false, true, 15);
  optimizers();
  std::printf("%s\n", failures ? "FAILED" : "all kernel checks passed");
  return failures ? 1 : 0;
}

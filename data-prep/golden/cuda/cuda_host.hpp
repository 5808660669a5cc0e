// A host emulation of the CUDA features crates/umt-nn/src/cuda/kernels.cu uses, so that its
// kernels can run (slowly, exactly) on a machine without a GPU: every CUDA thread of a block is
// a std::thread; blocks run one after another (so `__shared__` arrays can be plain statics);
// `__syncthreads` is a block-wide barrier and `__shfl_down_sync` exchanges values through a
// per-block buffer with a barrier per warp (warps may diverge, as in block_sum's last step).
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

// CUDA's math API overloads sqrt for float; the C library's ::sqrt is double-only.
using std::sqrt;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<double> shfl;
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <typename T>
T __shfl_down_sync(unsigned, T v, int delta) {
  const unsigned t = threadIdx.x, lane = t & 31u;
  auto& warp = *emu::warp_barriers[t / 32];
  emu::shfl[t] = (double)v;
  warp.arrive_and_wait();
  const T r = (lane + delta < 32 && t + delta < blockDim.x) ? (T)emu::shfl[t + delta] : v;
  warp.arrive_and_wait();
  return r;
}

inline double __longlong_as_double(unsigned long long bits) {
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

// Runs `kernel` over a (grid.x, grid.y) grid of `block`-thread blocks (block: a multiple of 32).
inline void launch(dim3 grid, unsigned block, const std::function<void()>& kernel) {
  gridDim = grid;
  blockDim = dim3{block, 1, 1};
  emu::shfl.assign(block, 0.0);
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      emu::block_barrier = std::make_unique<std::barrier<>>(block);
      emu::warp_barriers.clear();
      for (unsigned w = 0; w < block / 32; ++w)
        emu::warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < block; ++t)
        threads.emplace_back([&, t] {
          threadIdx = dim3{t, 0, 0};
          blockIdx = dim3{bx, by, 0};
          kernel();
        });
      for (auto& th : threads) th.join();
    }
}

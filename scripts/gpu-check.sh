#!/usr/bin/env bash
# The one prepared GPU check (issue #9). Run on a GPU machine with the binaries that
# `cargo xtask build-cuda` left in target/cuda/dist/ (no Rust toolchain needed there):
#
#   scripts/gpu-check.sh [DIST] [RESULTS]        # defaults: target/cuda/dist gpu-check.txt
#
# It prints the GPU, runs the device-parity tests (CUDA against CPU), the smoke preset of
# Table 2 on the GPU, and the training-step benchmark on the GPU (ours and, where python3 can
# import torch, PyTorch on the same GPU in the same run, with the ratio). Everything goes to
# RESULTS as well as to the terminal. Each step has its own timeout; typically 4 to 5 minutes on
# an H100/H200.
#
# Runtime libraries: the binaries need the driver's libcuda.so.1 (system path) and the CUDA 13
# runtime libraries (cudart, cublas, cublasLt, curand, nvrtc, cudnn 9). Where they are not on
# the system path, they are taken from PyTorch's wheels: every site-packages/nvidia/*/lib folder
# of `python3` is added to LD_LIBRARY_PATH.
set -uo pipefail
DIST=${1:-target/cuda/dist}
RESULTS=${2:-gpu-check.txt}
PYTHON=${UMT_PYTHON:-python3}
: >"$RESULTS"
log() { echo "$@" | tee -a "$RESULTS"; }
step() { # step TITLE TIMEOUT_S CMD...
  local title=$1 limit=$2; shift 2
  log ""; log "## $title"; log "\$ $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$RESULTS"
  local rc=${PIPESTATUS[0]}
  log "-> exit $rc after $((SECONDS - t0)) s"
}

for exe in umt cuda-tests-umt-nn cuda-tests-umt; do
  [ -x "$DIST/$exe" ] || { echo "missing $DIST/$exe: run cargo xtask build-cuda first" >&2; exit 2; }
done
SITE=$("$PYTHON" -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || true)
if [ -n "$SITE" ] && [ -d "$SITE/nvidia" ]; then
  for d in "$SITE"/nvidia/*/lib; do LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
  export LD_LIBRARY_PATH
fi

log "# umt GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
log "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$RESULTS"
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
missing=$(ldd "$DIST/umt" | grep 'not found' || true)
[ -n "$missing" ] && log "unresolved libraries: $missing"

step "device parity: umt-nn ops (CUDA vs CPU)" 90 "$DIST/cuda-tests-umt-nn" --test-threads 1 --nocapture
step "device parity: ResNet training step (CUDA vs CPU)" 90 "$DIST/cuda-tests-umt" --test-threads 1 --nocapture
step "device parity: ResNet training step, umt-nn's CUDA kernels on" 90 \
  env UMT_CUDA_KERNELS=1 "$DIST/cuda-tests-umt" --test-threads 1 --nocapture
step "reproduce-table2 --preset smoke on the GPU" 180 \
  "$DIST/umt" reproduce-table2 --preset smoke --device cuda --out /tmp/umt-gpu-smoke --seeds 1
# Three modes: as before (candle's ops around cuDNN convolutions, cuDNN's heuristic), umt-nn's
# own CUDA kernels on (UMT_CUDA_KERNELS=1), and those plus cuDNN benchmark mode (PyTorch gets
# torch.backends.cudnn.benchmark = True in that mode).
for mode in "0" "1" "1 --cudnn-benchmark"; do
  kernels=${mode%% *}; flag=${mode#"$kernels"}
  for shape in "3x64x64 16 20" "1x513x313 4 20" "3x224x224 32 10"; do
    set -- $shape
    step "bench train-step, ResNet18 $1 batch $2, UMT_CUDA_KERNELS=$kernels$flag" 90 \
      env UMT_CUDA_KERNELS=$kernels "$DIST/umt" bench train-step --device cuda --shape "$1" \
      --batch "$2" --steps "$3" --warmup 3 $flag
  done
done
step "bench train-step, the CPU preset's shape 3x32x32 batch 64 width 8 small stem, kernels on" 60 \
  env UMT_CUDA_KERNELS=1 "$DIST/umt" bench train-step --device cuda --shape 3x32x32 --batch 64 --width 8 --stem small --steps 20 --warmup 3
step "bench conv layers 3x224x224 batch 32, cudnn benchmark mode" 120 \
  "$DIST/umt" bench train-step --device cuda --shape 3x224x224 --batch 32 --conv-layers --steps 5 --cudnn-benchmark
if command -v nsys >/dev/null 2>&1; then
  step "nsys kernel summary of our 3x224x224 batch 32 step" 120 \
    env UMT_CUDA_KERNELS=1 nsys profile -o /tmp/umt-nsys --force-overwrite true --stats=true \
    "$DIST/umt" bench train-step --device cuda --shape 3x224x224 --batch 32 --steps 5 --warmup 2 --no-torch
else
  log ""; log "(nsys not installed: no kernel-level profile)"
fi
log ""
log "results written to $RESULTS"

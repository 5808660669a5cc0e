#!/usr/bin/env python3
"""Compiles umt-nn's CUDA kernels (crates/umt-nn/src/cuda/kernels.cu) with NVRTC, as the library
does at run time (options: --fmad=false), on a machine without a GPU: NVRTC is a compiler
library and needs no device. Catches syntax and type errors in the kernels, which otherwise only
show on a lent GPU machine.

libnvrtc comes from NVIDIA's `nvidia-cuda-nvrtc` wheel (the same 13.0 release the CUDA build is
pinned to), e.g. `python3 -m pip install --target target/nvrtc nvidia-cuda-nvrtc==13.0.88`;
the script searches sys.path (add the --target folder to PYTHONPATH) and --lib.

Usage: check_nvrtc.py [--lib PATH/libnvrtc.so.13] KERNELS.cu
Exit status: 0 compiled; 1 compile error (the log is printed); 77 libnvrtc not found (skipped).
"""
import argparse
import ctypes
import glob
import os
import sys

SKIP = 77
OPTIONS = [b"--fmad=false"]  # src/cuda.rs compiles with exactly these options


def find_lib(explicit):
    if explicit:
        return explicit
    for base in sys.path:
        hits = sorted(glob.glob(os.path.join(base or ".", "nvidia", "*", "lib", "libnvrtc.so.*")))
        hits = [h for h in hits if ".alt." not in h]
        if hits:
            return hits[0]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib")
    ap.add_argument("source")
    args = ap.parse_args()
    path = find_lib(args.lib)
    if path is None:
        print("skipped: libnvrtc not found (pip install nvidia-cuda-nvrtc==13.0.88; see the docstring)")
        return SKIP
    # libnvrtc loads libnvrtc-builtins from its own folder: preload it so no LD_LIBRARY_PATH is needed.
    folder = os.path.dirname(path)
    for builtins in sorted(glob.glob(os.path.join(folder, "libnvrtc-builtins.so.*"))):
        if ".alt." not in builtins:
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(path)
    version = (ctypes.c_int(), ctypes.c_int())
    lib.nvrtcVersion(ctypes.byref(version[0]), ctypes.byref(version[1]))
    src = open(args.source, "rb").read()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"kernels.cu", 0, None, None)
    if rc != 0:
        print(f"nvrtcCreateProgram failed with status {rc}")
        return 1
    opts = (ctypes.c_char_p * len(OPTIONS))(*OPTIONS)
    rc = lib.nvrtcCompileProgram(prog, len(OPTIONS), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    where = f"NVRTC {version[0].value}.{version[1].value} ({path})"
    if rc != 0:
        print(f"{args.source}: compile error with {where}, status {rc}:\n{text}")
        return 1
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    entries = ptx.value.decode(errors="replace").count(".entry")
    print(f"{args.source}: compiled with {where}: {entries} kernels" + (f"\n{text}" if text else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

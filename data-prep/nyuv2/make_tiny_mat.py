#!/usr/bin/env python3
"""Test-only: write a tiny fake NYUv2 in the official file formats, to check
`prepare_nyuv2.py` (and `cargo xtask prepare-nyuv2`) end to end without the 2.8 GB file.

  make_tiny_mat.py OUT_DIR   ->  OUT_DIR/nyu_depth_v2_labeled.mat  (HDF5, MATLAB v7.3 layout)
                                 OUT_DIR/splits.mat                (MATLAB v5)
                                 OUT_DIR/classMapping40.mat        (MATLAB v5, mapClass 1x894)

Five 8x12 images (3 train, 2 test), seed 0. The arrays are stored transposed as MATLAB writes
them (h5py sees (N, 3, W, H) images and (N, W, H) maps). The mapping is c -> 1 + (c - 1) % 40,
so label 894 maps to 14. Expected values are printed for the check script.
"""

import os
import sys

import h5py
import numpy as np
from scipy.io import savemat


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tiny_nyuv2"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    n, h, w = 5, 8, 12
    images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.9, size=(n, h, w)).astype(np.float32)
    raw = depths.copy()
    raw[:, 0, :] = 0.0  # a row of missing raw depth
    labels = rng.integers(0, 895, size=(n, h, w)).astype(np.uint16)
    labels[:, 0, 0] = 0
    labels[:, 0, 1] = 894
    with h5py.File(os.path.join(out, "nyu_depth_v2_labeled.mat"), "w") as f:
        f["images"] = np.transpose(images, (0, 3, 2, 1))  # (N, 3, W, H)
        f["depths"] = np.transpose(depths, (0, 2, 1))  # (N, W, H)
        f["rawDepths"] = np.transpose(raw, (0, 2, 1))
        f["labels"] = np.transpose(labels, (0, 2, 1))
    savemat(os.path.join(out, "splits.mat"), {
        "trainNdxs": np.array([[1], [3], [5]], dtype=np.float64),
        "testNdxs": np.array([[2], [4]], dtype=np.float64),
    })
    savemat(os.path.join(out, "classMapping40.mat"), {
        "mapClass": (1 + (np.arange(1, 895) - 1) % 40).reshape(1, 894).astype(np.float64),
    })
    np.savez(os.path.join(out, "expected.npz"), images=images, depths=depths, raw=raw, labels=labels)
    print(f"wrote {out}: h5py {h5py.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Test-only: check the output of `prepare_nyuv2.py` on the fixture of `make_tiny_mat.py`.

  check_tiny.py FIXTURE_DIR PREPARED_DIR
"""

import os
import sys

import numpy as np
from PIL import Image


def main():
    fixture, prepared = sys.argv[1], sys.argv[2]
    exp = np.load(os.path.join(fixture, "expected.npz"))
    map40 = np.concatenate([[0], 1 + (np.arange(1, 895) - 1) % 40])
    for split, ids in [("train", [1, 3, 5]), ("test", [2, 4])]:
        listed = open(os.path.join(prepared, f"{split}.txt")).read().split()
        assert listed == [f"{i:04d}" for i in ids], listed
        for i in ids:
            name = f"{i:04d}.png"
            rgb = np.array(Image.open(os.path.join(prepared, split, "rgb", name)))
            assert rgb.dtype == np.uint8 and rgb.shape == (8, 12, 3)
            assert (rgb == exp["images"][i - 1]).all()
            d = np.array(Image.open(os.path.join(prepared, split, "depth", name)))
            assert d.dtype == np.uint16 or d.dtype == np.int32, d.dtype
            assert (d == (exp["depths"][i - 1] * 1e3).astype(np.uint16)).all()
            dr = np.array(Image.open(os.path.join(prepared, split, "depth_raw", name)))
            assert (dr[0] == 0).all() and (dr[1:] > 0).all()
            lab = np.array(Image.open(os.path.join(prepared, split, "labels_40", name)))
            assert lab.dtype == np.uint8
            assert (lab == map40[exp["labels"][i - 1]]).all()
            assert lab[0, 0] == 0 and lab[0, 1] == 14
    print("check_tiny: OK (5 images, rgb/depth/depth_raw/labels_40 as expected)")


if __name__ == "__main__":
    main()

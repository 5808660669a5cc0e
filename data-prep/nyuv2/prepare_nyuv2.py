#!/usr/bin/env python3
"""Write NYUv2 (40 classes) in the layout of ESANet's `src/datasets/nyuv2/prepare_dataset.py`
(github.com/TUI-NICR/ESANet), which `umt_data::rgbd::nyuv2::Nyuv2Dataset` reads.

Inputs (the official files; nothing is downloaded):
  --mat      nyu_depth_v2_labeled.mat  MATLAB v7.3 = HDF5: images (N,3,W,H) uint8,
             depths/rawDepths (N,W,H) float metres, labels (N,W,H) 894-class ids (0 = unlabelled)
             -- h5py sees MATLAB's column-major arrays transposed.
  --splits   splits.mat (MATLAB v5): trainNdxs (795) and testNdxs (654), 1-based.
  --mapping  classMapping40.mat (MATLAB v5): mapClass (1 x 894), class id -> 1..40; 0 is
             prepended so unlabelled stays void (as ESANet). ESANet and
             github.com/ankurhanda/nyuv2-meta-data ship this file.

Output (DIR):
  train.txt, test.txt                 one 4-digit 1-based index per line ("0003")
  class_names_1+40.txt                void + the 40 names
  {train,test}/rgb/ID.png             8-bit RGB
  {train,test}/depth/ID.png           uint16 mm of 'depths' (m * 1000, truncated as ESANet)
  {train,test}/depth_raw/ID.png       uint16 mm of 'rawDepths' (0 = missing)
  {train,test}/labels_40/ID.png       uint8, 0 = void, 1..40
  {train,test}/labels_40_colored/ID.png  palette PNG (VOC colours), for viewing

Needs numpy, scipy, h5py and Pillow. Called by `cargo xtask prepare-nyuv2` through UMT_PYTHON.
"""

import argparse
import os
import sys

CLASS_NAMES_40 = [
    "void", "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
]


def voc_palette(n=256):
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mat", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    try:
        import h5py
    except ImportError:
        sys.exit(
            "error: the Python module h5py is missing (needed to read the MATLAB v7.3 / HDF5 "
            f"file). Install it with: {sys.executable} -m pip install h5py "
            "(or point UMT_PYTHON at a Python that has it)"
        )
    try:
        import numpy as np
        from PIL import Image
        from scipy.io import loadmat
    except ImportError as e:
        sys.exit(f"error: {e}. Install with: {sys.executable} -m pip install numpy scipy pillow")

    for path, what in [(args.mat, "--mat"), (args.splits, "--splits"), (args.mapping, "--mapping")]:
        if not os.path.isfile(path):
            sys.exit(f"error: {what} {path}: no such file")

    splits = loadmat(args.splits)
    mapping = loadmat(args.mapping)
    if "mapClass" not in mapping:
        sys.exit(f"error: {args.mapping}: no variable 'mapClass' (found {sorted(k for k in mapping if not k.startswith('__'))})")
    map40 = np.concatenate([[0], np.asarray(mapping["mapClass"]).reshape(-1)]).astype(np.int64)
    if map40.min() < 0 or map40.max() > 40:
        sys.exit(f"error: {args.mapping}: mapClass values outside 1..40 (min {map40.min()}, max {map40.max()})")
    palette = voc_palette()

    with h5py.File(args.mat, "r") as f:
        for key in ["images", "depths", "rawDepths", "labels"]:
            if key not in f:
                sys.exit(f"error: {args.mat}: no dataset '{key}' (found {sorted(f.keys())})")
        images, depths, raw_depths, labels = f["images"], f["depths"], f["rawDepths"], f["labels"]
        n = images.shape[0]
        for split, key in [("train", "trainNdxs"), ("test", "testNdxs")]:
            if key not in splits:
                sys.exit(f"error: {args.splits}: no variable '{key}'")
            idxs = np.asarray(splits[key]).reshape(-1).astype(np.int64)  # 1-based
            if idxs.min() < 1 or idxs.max() > n:
                sys.exit(f"error: {args.splits}: {key} outside 1..{n}")
            for sub in ["rgb", "depth", "depth_raw", "labels_40", "labels_40_colored"]:
                os.makedirs(os.path.join(args.out, split, sub), exist_ok=True)
            ids = []
            for idx in idxs:
                i = int(idx) - 1
                name = f"{int(idx):04d}"
                ids.append(name)
                rgb = np.transpose(np.asarray(images[i]), (2, 1, 0))  # (3,W,H) -> (H,W,3)
                depth = (np.asarray(depths[i]).T * 1e3).astype(np.uint16)  # m -> mm, truncated
                depth_raw = (np.asarray(raw_depths[i]).T * 1e3).astype(np.uint16)
                lab = np.asarray(labels[i]).T.astype(np.int64)
                if lab.max() >= len(map40):
                    sys.exit(f"error: {args.mat}: label {lab.max()} of image {idx} has no 40-class mapping")
                lab40 = map40[lab].astype(np.uint8)
                out = lambda sub: os.path.join(args.out, split, sub, name + ".png")
                Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8)), "RGB").save(out("rgb"))
                Image.fromarray(np.ascontiguousarray(depth)).save(out("depth"))
                Image.fromarray(np.ascontiguousarray(depth_raw)).save(out("depth_raw"))
                Image.fromarray(np.ascontiguousarray(lab40), "L").save(out("labels_40"))
                col = Image.fromarray(np.ascontiguousarray(lab40), "P")
                col.putpalette(palette)
                col.save(out("labels_40_colored"))
            with open(os.path.join(args.out, f"{split}.txt"), "w") as fh:
                fh.write("\n".join(ids) + "\n")
            print(f"{split}: {len(ids)} images")
    with open(os.path.join(args.out, "class_names_1+40.txt"), "w") as fh:
        fh.write("\n".join(CLASS_NAMES_40) + "\n")


if __name__ == "__main__":
    main()

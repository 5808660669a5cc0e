#!/usr/bin/env python3
"""Probe which classes of the synthetic RGB-D generator (umt_data::rgbd::synthetic) each
modality can learn: the same small fully-convolutional net trained on RGB only, depth only
and RGB-D, per-class IoU on held-out scenes. Numbers go to docs/rgbd-data.md.

  probe_synthetic_modalities.py DIR   (DIR/{train,test}/synthetic_*_{rgb,depth,labels}.png,
                                       written by SyntheticRgbd::write_pngs)

torch (CPU), seed 0. Not the paper's model: a sanity check of the data design only.
"""
import glob
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

K = 10
EPOCHS = 8


def load(d, n):
    rgb, dep, lab = [], [], []
    for f in sorted(glob.glob(f"{d}/*_rgb.png"))[:n]:
        stem = f[: -len("_rgb.png")]
        rgb.append(np.array(Image.open(f)).transpose(2, 0, 1) / 255.0)
        dep.append(np.array(Image.open(stem + "_depth.png"))[None] / 1000.0)
        lab.append(np.array(Image.open(stem + "_labels.png")).astype(np.int64) - 1)
    rgb = (torch.tensor(np.stack(rgb), dtype=torch.float32) - 0.45) / 0.225
    dep = (torch.tensor(np.stack(dep), dtype=torch.float32) - 2.842) / 1.417
    return rgb, dep, torch.tensor(np.stack(lab))


class Net(nn.Module):
    def __init__(self, cin):
        super().__init__()
        c = 24
        self.enc = nn.ModuleList([nn.Conv2d(cin, c, 3, 1, 1), nn.Conv2d(c, c, 3, 2, 1),
                                  nn.Conv2d(c, 2 * c, 3, 2, 1), nn.Conv2d(2 * c, 2 * c, 3, 2, 1)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(n) for n in [c, c, 2 * c, 2 * c]])
        self.head = nn.Conv2d(c + c + 2 * c + 2 * c, K, 1)

    def forward(self, x):
        feats, h = [], x
        for conv, bn in zip(self.enc, self.bns):
            h = F.relu(bn(conv(h)))
            feats.append(F.interpolate(h, size=x.shape[2:], mode="bilinear", align_corners=False))
        return self.head(torch.cat(feats, 1))


def iou(pred, lab):
    out = []
    for c in range(K):
        m = lab >= 0
        tp = ((pred == c) & (lab == c) & m).sum().item()
        fp = ((pred == c) & (lab != c) & m).sum().item()
        fn = ((pred != c) & (lab == c)).sum().item()
        out.append(tp / max(tp + fp + fn, 1))
    return out


def main():
    d = sys.argv[1]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tr, te = load(f"{d}/train", 240), load(f"{d}/test", 100)
    names = ["wall", "floor", "ceiling", "window", "picture", "cabinet", "bed", "sofa", "table", "rug"]
    rows = {}
    for mode in ["rgb", "depth", "rgbd"]:
        pick = lambda s: {"rgb": s[0], "depth": s[1], "rgbd": torch.cat([s[0], s[1]], 1)}[mode]
        xtr, xte = pick(tr), pick(te)
        t0 = time.time()
        net = Net(xtr.shape[1])
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for epoch in range(EPOCHS):
            perm = torch.randperm(len(xtr))
            for i in range(0, len(xtr), 16):
                b = perm[i:i + 16]
                loss = F.cross_entropy(net(xtr[b]), tr[2][b], ignore_index=-1)
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(xte[i:i + 32]).argmax(1) for i in range(0, len(xte), 32)])
        rows[mode] = iou(pred, te[2])
        print(mode, "mIoU", round(100 * np.mean(rows[mode]), 1), f"{time.time() - t0:.0f} s", flush=True)
    print("| class | RGB | depth | RGB-D |\n|---|---|---|---|")
    for c, n in enumerate(names):
        print(f"| {n} | " + " | ".join(f"{100 * rows[m][c]:.1f}" for m in ["rgb", "depth", "rgbd"]) + " |")
    print("| **mIoU** | " + " | ".join(f"{100 * np.mean(rows[m]):.1f}" for m in ["rgb", "depth", "rgbd"]) + " |")
    print(f"torch {torch.__version__}, numpy {np.__version__}, seed 0, {EPOCHS} epochs on {len(xtr)} train scenes, {len(xte)} test scenes, Adam 3e-3, batch 16")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden fixtures for crates/umt-video: decoding, resizing and normalisation vs Pillow.

Run from the repository root (CI never runs this; the outputs are committed):

    /work/pyenv/bin/python data-prep/golden/video/make_golden.py

Writes, next to this script:
  frame_97x61.png      deterministic RGB test image (gradients + seeded noise), 97 wide, 61 high
  frame_97x61_q90.jpg  the same image as a JPEG at quality 90 (Pillow's default 4:2:0 subsampling)
  golden.json          Pillow's decoded JPEG pixels, Pillow's `Image.resize((W, H), Image.BILINEAR)`
                       of both inputs at several sizes (u8, HWC row-major) and the torchvision-style
                       normalisation `(x / 255 - mean) / std` of one resize in float32, CHW.

The reference transform is what torchvision's `Resize` does on a PIL image (antialiased
bilinear, Pillow's own convolution), followed by `ToTensor` and `Normalize`.
"""

import json
import os

import numpy as np
import PIL
from PIL import Image

SEED = 20240611
WIDTH, HEIGHT = 97, 61
# (width, height) targets: a downscale (antialias matters), an upscale, and a mixed one.
SIZES = [(32, 24), (128, 80), (48, 90)]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet, torchvision
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)  # ImageNet, torchvision
JPEG_QUALITY = 90

HERE = os.path.dirname(os.path.abspath(__file__))


def test_image() -> np.ndarray:
    """(H, W, 3) uint8: smooth gradients, a sharp-edged square and seeded noise."""
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    r = 255.0 * x / (WIDTH - 1)
    g = 255.0 * y / (HEIGHT - 1)
    b = 127.5 + 127.5 * np.sin(x / 5.0) * np.cos(y / 7.0)
    img = np.stack([r, g, b], axis=-1)
    img[20:40, 30:60, :] = [250.0, 10.0, 128.0]  # hard edges exercise the filter support
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def flat(a: np.ndarray) -> list:
    return [int(v) for v in a.reshape(-1)]


def main() -> None:
    arr = test_image()
    png_path = os.path.join(HERE, "frame_97x61.png")
    jpg_path = os.path.join(HERE, "frame_97x61_q90.jpg")
    Image.fromarray(arr, mode="RGB").save(png_path, optimize=False)
    Image.fromarray(arr, mode="RGB").save(jpg_path, quality=JPEG_QUALITY)

    png = Image.open(png_path).convert("RGB")
    jpg = Image.open(jpg_path).convert("RGB")
    assert np.array_equal(np.asarray(png), arr), "PNG must round-trip exactly"

    resized = []
    for w, h in SIZES:
        resized.append(
            {
                "width": w,
                "height": h,
                "png_rgb": flat(np.asarray(png.resize((w, h), Image.BILINEAR))),
                "jpeg_rgb": flat(np.asarray(jpg.resize((w, h), Image.BILINEAR))),
            }
        )

    # torchvision: ToTensor (x / 255 in float32, HWC -> CHW) then Normalize in float32.
    w0, h0 = SIZES[0]
    small = np.asarray(png.resize((w0, h0), Image.BILINEAR)).astype(np.float32) / np.float32(255.0)
    normalized = ((small - MEAN) / STD).transpose(2, 0, 1)  # (3, H, W)

    out = {
        "generator": "data-prep/golden/video/make_golden.py",
        "pillow_version": PIL.__version__,
        "numpy_version": np.__version__,
        "seed": SEED,
        "jpeg_quality": JPEG_QUALITY,
        "width": WIDTH,
        "height": HEIGHT,
        "jpeg_decoded_rgb": flat(np.asarray(jpg)),
        "resized": resized,
        "normalized": {
            "width": w0,
            "height": h0,
            "mean": MEAN.tolist(),
            "std": STD.tolist(),
            "chw": [float(v) for v in normalized.reshape(-1)],
        },
    }
    with open(os.path.join(HERE, "golden.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote fixtures with Pillow {PIL.__version__}, seed {SEED}")


if __name__ == "__main__":
    main()

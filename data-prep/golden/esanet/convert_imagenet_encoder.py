#!/usr/bin/env python3
"""Convert ImageNet encoder weights to the safetensors file `--imagenet-weights` reads.

    python convert_imagenet_encoder.py IN.pth OUT.safetensors
    python convert_imagenet_encoder.py --self-test

Needs torch only (the safetensors file is written by hand); no network.

Inputs:
- a torchvision ResNet18/34 ImageNet state dict (`resnet34-b627a593.pth`, BasicBlock
  encoders): keys are kept as they are, the classifier `fc.*` is dropped;
- ESANet's own ImageNet checkpoint of the NonBottleneck1D encoder (`r34_NBt1D.pth` /
  `r18_NBt1D.pth`, a dict with `state_dict`): as ESANet's
  `load_pretrained_with_different_encoder_block` (src/models/resnet.py), every key that
  contains `encoder.` is kept with everything up to and including the last `encoder.` removed
  (`module.encoder.layer1.0.conv3x1_1.weight` -> `layer1.0.conv3x1_1.weight`); all other keys
  (the classifier) are dropped. The block names (`conv3x1_1`, `conv1x3_1`, `bn1`, `conv3x1_2`,
  `conv1x3_2`, `bn2`, `downsample.0/1`) are the reference's and umt-esanet's alike, so no
  renaming is needed.

The output keeps the 3-channel stem; umt-segtrainer sums `conv1.weight` over its input
channels for the depth encoder (as ESANet does). Tensors are written as float32, the
metadata records the source file, its SHA-256, the mapping and torch's version, and the
ImageNet normalisation the weights were trained with.
"""

import ctypes
import hashlib
import json
import struct
import sys
import tempfile
from pathlib import Path

import torch


def encoder_state_dict(ckpt):
    """The encoder tensors of a loaded checkpoint, torchvision-named; and the mapping used."""
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        sd = ckpt["state_dict"]
        out = {k.split("encoder.")[-1]: v for k, v in sd.items() if "encoder." in k}
        return out, "esanet-nbt1d: keys containing 'encoder.' with the prefix up to it removed"
    sd = ckpt
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if not k.startswith("fc."):
            out[k] = v
    return out, "torchvision: keys as they are, fc.* dropped"


def write_safetensors(path, tensors, metadata):
    """Writes a safetensors file (F32 tensors, sorted keys) with torch and the stdlib only."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        # A fresh copy owns exactly its elements (a view's storage may be larger).
        t = tensors[name].detach().to(torch.float32).cpu().clone().contiguous()
        # The raw little-endian bytes (ctypes: stdlib, no numpy needed).
        data = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Reads back what write_safetensors wrote (for the self-test)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + a : base + b]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"])
    return out, meta


def convert(src, dst):
    raw = Path(src).read_bytes()
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    tensors, mapping = encoder_state_dict(ckpt)
    tensors = {k: v for k, v in tensors.items() if k != "num_batches_tracked" and not k.endswith(".num_batches_tracked")}
    if "conv1.weight" not in tensors or tensors["conv1.weight"].shape[1] != 3:
        sys.exit(f"{src}: no 3-channel `conv1.weight` among the encoder keys: {sorted(tensors)[:5]} ...")
    write_safetensors(
        dst,
        tensors,
        {
            "source": Path(src).name,
            "source_sha256": hashlib.sha256(raw).hexdigest(),
            "mapping": mapping,
            "torch": torch.__version__,
            "normalization": json.dumps(
                {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
            ),
        },
    )
    print(f"{dst}: {len(tensors)} tensors ({mapping})")


def self_test():
    torch.manual_seed(0)
    import torchvision  # only for the test model; weights=None, no download

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        m = torchvision.models.resnet18(weights=None)
        torch.save(m.state_dict(), d / "tv.pth")
        convert(d / "tv.pth", d / "tv.safetensors")
        got, meta = read_safetensors(d / "tv.safetensors")
        want = {k: v for k, v in m.state_dict().items() if not k.startswith("fc.") and "num_batches_tracked" not in k}
        assert set(got) == set(want), set(got) ^ set(want)
        assert all(torch.equal(got[k], want[k].float()) for k in want)
        assert "fc.weight" not in got and meta["mapping"].startswith("torchvision")

        # An ESANet-style checkpoint: DataParallel prefix, encoder + classifier.
        sd = {"module.encoder." + k: v for k, v in want.items()}
        sd["module.fc.weight"] = torch.zeros(1000, 512)
        torch.save({"state_dict": sd, "epoch": 89}, d / "nbt1d.pth")
        convert(d / "nbt1d.pth", d / "nbt1d.safetensors")
        got2, meta2 = read_safetensors(d / "nbt1d.safetensors")
        assert set(got2) == set(want) and all(torch.equal(got2[k], want[k].float()) for k in want)
        assert meta2["mapping"].startswith("esanet-nbt1d")
    print("self-test passed (torch", torch.__version__ + ")")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif len(sys.argv) == 3:
        convert(sys.argv[1], sys.argv[2])
    else:
        sys.exit(__doc__)

"""Fixture for the ImageNet-weights path: data-prep/convert_torchvision.py run on a randomly
initialised torchvision ResNet18 (no download), and torchvision's outputs to check it against.

Run from the repository root:

    /work/pyenv/bin/python data-prep/golden/imagenet/make_fixture.py

Writes, next to this script (read by tests/tests/imagenet_weights.rs):

* ``resnet18_w4.safetensors`` -- the output of ``convert_torchvision.convert`` for torchvision's
  ResNet (BasicBlock, layers [2, 2, 2, 2], 10 classes) at base width 4 (the full width is 45 MB;
  the narrow model is ``NarrowResNet`` from ``data-prep/golden/resnet/make_golden.py``), with
  torchvision's initialisation and randomly perturbed BatchNorm statistics, ``num_batches_tracked``
  kept; its metadata says architecture ``umt-resnet``, the inferred config and ImageNet's
  normalisation;
* ``resnet18_w4.check.safetensors`` -- ``input`` (2, 3, 32, 32) with torchvision's ``embedding``
  and ``logits`` in eval mode, and ``depth_input`` (2, 1, 32, 32) with the ``depth_embedding`` of
  the same model whose conv1 was summed over the RGB channels (ESANet's depth encoder) and whose
  fc was removed.

It also checks the converter on a narrow ResNet34 and the ``--in-channels 1`` path (not written).
Seeds: torch.manual_seed(SEED) before building the model, generator SEED + 1 for the rest.
"""

import importlib.util
import json
import os
import sys
import tempfile

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SEED = 0


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_torchvision = load_module("convert_torchvision", os.path.join(ROOT, "data-prep", "convert_torchvision.py"))
make_golden = load_module("make_golden", os.path.join(ROOT, "data-prep", "golden", "resnet", "make_golden.py"))


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    model = make_golden.NarrowResNet(BasicBlock, [2, 2, 2, 2], width=4, in_channels=3, num_classes=10)
    make_golden.perturb_batchnorm(model, gen)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=gen)
    d = torch.randn(2, 1, 32, 32, generator=gen)
    out = make_golden.stages(model, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), out["logits"], rtol=0, atol=0)

    weights_path = os.path.join(HERE, "resnet18_w4.safetensors")
    meta = convert_torchvision.convert(
        model.state_dict(), weights_path,
        source=f"random init: NarrowResNet(BasicBlock, [2, 2, 2, 2], width=4, num_classes=10), seed {SEED}",
        arch="resnet18")
    config = json.loads(meta["config"])
    assert config == {"block": "basic", "layers": [2, 2, 2, 2], "in_channels": 3, "base_width": 4,
                      "stem": "torchvision", "num_classes": 10}, config

    # ESANet's depth encoder: conv1 summed over RGB, no classifier.
    depth = make_golden.NarrowResNet(BasicBlock, [2, 2, 2, 2], width=4, in_channels=1, num_classes=10)
    depth_state = {k: v.clone() for k, v in model.state_dict().items()}
    depth_state["conv1.weight"] = depth_state["conv1.weight"].sum(dim=1, keepdim=True)
    depth.load_state_dict(depth_state)
    del depth.fc
    depth.eval()
    depth_out = make_golden.stages(depth, d)

    meta_versions = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "seed": str(SEED), "script": "data-prep/golden/imagenet/make_fixture.py"}
    save_file({"input": x.contiguous(), "embedding": out["embedding"].contiguous(),
               "logits": out["logits"].contiguous(), "depth_input": d.contiguous(),
               "depth_embedding": depth_out["embedding"].contiguous()},
              os.path.join(HERE, "resnet18_w4.check.safetensors"), metadata=meta_versions)

    with tempfile.TemporaryDirectory() as tmp:
        # The converter's own --in-channels 1 / --no-fc path gives the same depth tensors.
        c1 = os.path.join(tmp, "c1.safetensors")
        meta = convert_torchvision.convert(model.state_dict(), c1, source="test", in_channels=1,
                                           no_fc=True, drop_num_batches_tracked=True)
        assert "normalization" not in meta and json.loads(meta["config"])["in_channels"] == 1
        with safe_open(c1, framework="pt") as f:
            assert not any(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in f.keys())
            torch.testing.assert_close(f.get_tensor("conv1.weight"), depth_state["conv1.weight"])
        # A narrow ResNet34 is recognised as such; a wrong --arch and a Bottleneck are refused.
        r34 = make_golden.NarrowResNet(BasicBlock, [3, 4, 6, 3], width=4)
        meta = convert_torchvision.convert(r34.state_dict(), c1, source="test", arch="resnet34")
        assert json.loads(meta["config"])["layers"] == [3, 4, 6, 3]
        for bad, kwargs in [(r34.state_dict(), {"arch": "resnet18"}),
                            (torchvision.models.resnet50().state_dict(), {})]:
            try:
                convert_torchvision.convert(bad, c1, source="test", **kwargs)
            except convert_torchvision.ConversionError as e:
                print(f"refused as expected: {e}")
            else:
                sys.exit("a bad state_dict was converted")

    for name in ["resnet18_w4.safetensors", "resnet18_w4.check.safetensors"]:
        print(f"{name}: {os.path.getsize(os.path.join(HERE, name))} bytes")


if __name__ == "__main__":
    main()

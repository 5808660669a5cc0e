"""Golden fixtures for `umt-resnet`: torchvision's ResNet forward pass in eval mode.

Run from the repository root:

    /work/pyenv/bin/python data-prep/golden/resnet/make_golden.py

It writes, next to this script (all small, committed, read by crates/umt-resnet/tests/golden.rs):

* ``resnet18_w4.weights.safetensors`` -- the state_dict (``num_batches_tracked`` keys included)
  of torchvision's ResNet with BasicBlock, layers [2, 2, 2, 2], base width 4 (widths 4/8/16/32),
  3 input channels, ``num_classes=10``;
* ``resnet18_w4.input.safetensors`` -- tensor ``input`` (2, 3, 64, 64);
* ``resnet18_w4.expected.safetensors`` -- ``stem`` (after conv1/bn1/relu, before the max
  pool), ``layer1`` .. ``layer4``, ``embedding`` (global average pool of layer4, the input of
  fc) and ``logits``, all in eval mode;
* ``r34nbt1d_w4_c1.*`` -- the same for ESANet's ResNet34-NBt1D layout (NonBottleneck1D blocks
  in layers [3, 4, 6, 3], 1 input channel as the depth encoder, no fc), input (2, 1, 48, 64).

The narrow models are torchvision's own ``ResNet`` class (its ``_make_layer``, ``BasicBlock``,
``_forward_impl`` and weight names); only the stage widths are scaled by rebuilding the stem and
the four layers with torchvision's helpers, because full-width weights (45 MB) are too big to
commit. The NonBottleneck1D block is copied from ESANet (github.com/TUI-NICR/ESANet,
src/models/resnet.py, Apache-2.0); its constructor has torchvision's block signature, so
torchvision's ``_make_layer`` builds ESANet's layout (1x1/s2 conv + BN shortcut in the first block
of layers 2-4). BatchNorm running statistics and affine parameters are perturbed randomly so that
eval mode is non-trivial.

The Rust side runs the same check from the command line:

    cargo xtask run-encoder --arch resnet18 --width 4 \\
        --weights data-prep/golden/resnet/resnet18_w4.weights.safetensors \\
        --input data-prep/golden/resnet/resnet18_w4.input.safetensors \\
        --output /tmp/resnet18_w4.out.safetensors

and this script compares such an output with ``--compare /tmp/resnet18_w4.out.safetensors``.

Full-width check (weights are NOT committed; needs ~200 MB in ``--out-dir``):

    /work/pyenv/bin/python data-prep/golden/resnet/make_golden.py --full --out-dir /tmp/rn
    cargo xtask run-encoder --arch resnet18 --weights /tmp/rn/resnet18_full.weights.safetensors \\
        --input /tmp/rn/resnet18_full.input.safetensors --output /tmp/rn/resnet18_full.out.safetensors
    /work/pyenv/bin/python data-prep/golden/resnet/make_golden.py --out-dir /tmp/rn \\
        --compare /tmp/rn/resnet18_full.out.safetensors
    (same with resnet34)

Seeds: torch.manual_seed(0) before building each model (see ``SEED``).
"""

import argparse
import os
import warnings

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import BasicBlock, ResNet

SEED = 0
HERE = os.path.dirname(os.path.abspath(__file__))


class NonBottleneck1D(nn.Module):
    """ESANet's NonBottleneck1D (ERFNet block), verbatim semantics (dropout 0, dilation 1)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1,
                 base_width=None, dilation=1, norm_layer=None):
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(inplanes, planes, (3, 1), stride=(stride, 1),
                                   padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(planes, planes, (1, 3), stride=(1, stride),
                                   padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(planes, eps=1e-03)
        self.act = nn.ReLU(inplace=True)
        self.conv3x1_2 = nn.Conv2d(planes, planes, (3, 1), padding=(1 * dilation, 0),
                                   bias=True, dilation=(dilation, 1))
        self.conv1x3_2 = nn.Conv2d(planes, planes, (1, 3), padding=(0, 1 * dilation),
                                   bias=True, dilation=(1, dilation))
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-03)
        self.dropout = nn.Dropout2d(0)
        self.downsample = downsample
        self.stride = stride

    def forward(self, input):
        output = self.conv3x1_1(input)
        output = self.act(output)
        output = self.conv1x3_1(output)
        output = self.bn1(output)
        output = self.act(output)
        output = self.conv3x1_2(output)
        output = self.act(output)
        output = self.conv1x3_2(output)
        output = self.bn2(output)
        if self.dropout.p != 0:
            output = self.dropout(output)
        identity = input if self.downsample is None else self.downsample(input)
        return self.act(output + identity)


class NarrowResNet(ResNet):
    """torchvision's ResNet with stage widths width*[1, 2, 4, 8] instead of 64*[1, 2, 4, 8]."""

    def __init__(self, block, layers, width, in_channels=3, num_classes=1000):
        super().__init__(block, layers, num_classes=num_classes)
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        # torchvision's initialisation loop (ResNet.__init__).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def perturb_batchnorm(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(c, generator=gen))
            m.num_batches_tracked.fill_(7)


@torch.no_grad()
def stages(model, x):
    """The features the Rust model exposes, computed with torchvision's modules."""
    out = {}
    x = model.relu(model.bn1(model.conv1(x)))
    out["stem"] = x
    x = model.maxpool(x)
    for name in ["layer1", "layer2", "layer3", "layer4"]:
        x = getattr(model, name)(x)
        out[name] = x
    out["embedding"] = torch.flatten(model.avgpool(x), 1)
    if hasattr(model, "fc"):
        out["logits"] = model.fc(out["embedding"])
    return out


def versions():
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "seed": str(SEED),
        "script": "data-prep/golden/resnet/make_golden.py",
    }


def write(name, model, x, out_dir):
    model.eval()
    out = stages(model, x)
    if hasattr(model, "fc"):
        # The stage-by-stage path must agree with torchvision's own forward.
        with torch.no_grad():
            torch.testing.assert_close(model(x), out["logits"], rtol=0, atol=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = versions()
    save_file(state, os.path.join(out_dir, f"{name}.weights.safetensors"), metadata=meta)
    save_file({"input": x.contiguous()}, os.path.join(out_dir, f"{name}.input.safetensors"),
              metadata=meta)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(out_dir, f"{name}.expected.safetensors"), metadata=meta)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters, embedding {tuple(out['embedding'].shape)}")


def build_small():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    m = NarrowResNet(BasicBlock, [2, 2, 2, 2], width=4, in_channels=3, num_classes=10)
    perturb_batchnorm(m, gen)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    return m, x


def build_nbt1d():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = NarrowResNet(NonBottleneck1D, [3, 4, 6, 3], width=4, in_channels=1)
    del m.fc
    perturb_batchnorm(m, gen)
    x = torch.randn(2, 1, 48, 64, generator=gen)
    return m, x


def build_full(arch):
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 3)
    m = getattr(torchvision.models, arch)(weights=None, num_classes=1000)
    perturb_batchnorm(m, gen)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    return m, x


def compare(path, out_dir):
    base = os.path.basename(path).replace(".out.safetensors", "")
    got = load_file(path)
    want = load_file(os.path.join(out_dir, f"{base}.expected.safetensors"))
    for key in ["embedding", "logits"]:
        if key in got:
            diff = (got[key] - want[key]).abs().max().item()
            scale = max(1.0, want[key].abs().max().item())
            print(f"{base} {key}: max |diff| = {diff:.3e} (largest |value| {scale:.3g})")
            # 1e-4 relative to the largest magnitude (as crates/umt-resnet/tests/golden.rs).
            assert diff < 1e-4 * scale, f"{key} differs by {diff}"
    print("OK")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out-dir", default=HERE)
    p.add_argument("--full", action="store_true", help="full-width resnet18/34 (not committed)")
    p.add_argument("--compare", help="an output of `cargo xtask run-encoder` to check")
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if args.compare:
        compare(args.compare, args.out_dir)
        return
    if args.full:
        for arch in ["resnet18", "resnet34"]:
            m, x = build_full(arch)
            write(f"{arch}_full", m, x, args.out_dir)
        return
    write("resnet18_w4", *build_small(), args.out_dir)
    write("r34nbt1d_w4_c1", *build_nbt1d(), args.out_dir)


if __name__ == "__main__":
    main()

"""Convert torchvision's ResNet18/34 checkpoints to safetensors that umt-resnet loads as they are.

The weight names already match (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc, ...), so
the conversion only checks the layout, infers the umt-resnet config from the tensor shapes, and
writes the tensors with metadata in the umt_nn::checkpoint format:

* ``architecture`` = ``umt-resnet`` and ``config`` = the ResNetConfig JSON (block, layers,
  in_channels, base_width, stem, num_classes), so ``umt_resnet::load_resnet_from_checkpoint``
  rebuilds the model from the file alone;
* ``normalization`` = the input mean/std the weights expect (ImageNet's for torchvision's
  weights), so the constants travel with the weights;
* ``source``, ``torch_version``, ``torchvision_version``, ``converted_by``, and ``classes`` (the
  1000 ImageNet class names, JSON) when converting a torchvision weights enum.

``num_batches_tracked`` is kept by default (``umt_nn::checkpoint::load_varmap_strict`` ignores it;
``--drop-num-batches-tracked`` removes it). ``--no-fc`` drops the classifier (UMT's encoders have
no head). ``--in-channels 1`` makes the depth encoder's first convolution as ESANet does: conv1's
weights summed over the RGB input channels (the normalisation is then dropped from the metadata,
since depth uses its own statistics). The Rust side has the same transformation,
``umt_hub::imagenet::adapt_first_conv``, for files converted without it.

Usage (from the repository root, with torch, torchvision and safetensors installed):

    # torchvision's published weights (downloads them once into torch's cache):
    python data-prep/convert_torchvision.py --weights ResNet18_Weights.IMAGENET1K_V1 \\
        --out resnet18_imagenet.safetensors
    python data-prep/convert_torchvision.py --weights ResNet34_Weights.IMAGENET1K_V1 --no-fc \\
        --out resnet34_imagenet_encoder.safetensors
    # a state_dict saved with torch.save (e.g. resnet18-f37072fd.pth), checked against --arch:
    python data-prep/convert_torchvision.py --state-dict resnet18-f37072fd.pth --arch resnet18 \\
        --out resnet18_imagenet.safetensors

The conversion itself is tested without any download by
``data-prep/golden/imagenet/make_fixture.py`` on a randomly initialised (narrow) torchvision
model; ``tests/tests/imagenet_weights.rs`` loads its output in Rust.
"""

import argparse
import json
import re
import sys

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file

# torchvision.transforms._presets.ImageClassification defaults (the IMAGENET1K weights' transforms).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# He et al. 2016, Table 1: blocks per stage.
LAYOUTS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}

_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")
_BASIC_BLOCK_PARAMS = re.compile(
    r"^(conv1\.weight|conv2\.weight|bn[12]\.(weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|downsample\.0\.weight|downsample\.1\.(weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_STEM_PARAMS = re.compile(
    r"^(conv1\.weight|bn1\.(weight|bias|running_mean|running_var|num_batches_tracked)|fc\.(weight|bias))$"
)


class ConversionError(ValueError):
    """A state dict that is not a torchvision BasicBlock ResNet; the message names the key."""


def unwrap_state_dict(obj):
    """The tensor dict inside a checkpoint: {'state_dict': ...} / {'model': ...} wrappers and a
    DataParallel 'module.' prefix are removed."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError("expected a state_dict (a dict of tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def infer_config(state):
    """The umt-resnet ResNetConfig (as a JSON-able dict) of a torchvision BasicBlock ResNet."""
    blocks = {1: set(), 2: set(), 3: set(), 4: set()}
    for key in state:
        m = _BLOCK_KEY.match(key)
        if m:
            if not _BASIC_BLOCK_PARAMS.match(m.group(3)):
                raise ConversionError(
                    f"tensor {key!r} is not part of a BasicBlock (Bottleneck ResNets such as "
                    "resnet50 are not supported: umt-resnet implements ResNet18/34)")
            blocks[int(m.group(1))].add(int(m.group(2)))
        elif not _STEM_PARAMS.match(key):
            raise ConversionError(f"unexpected tensor {key!r} for a torchvision ResNet")
    if "conv1.weight" not in state:
        raise ConversionError("missing tensor 'conv1.weight'")
    layers = []
    for stage, ids in blocks.items():
        if not ids or sorted(ids) != list(range(len(ids))):
            raise ConversionError(f"layer{stage} has blocks {sorted(ids)}, expected 0..n-1")
        layers.append(len(ids))
    conv1 = state["conv1.weight"]
    width, in_channels, kh, kw = conv1.shape
    stems = {(7, 7): "torchvision", (3, 3): "small"}
    if (kh, kw) not in stems:
        raise ConversionError(f"tensor 'conv1.weight' has kernel {kh}x{kw}, expected 7x7 (or 3x3)")
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else None
    return {
        "block": "basic",
        "layers": layers,
        "in_channels": int(in_channels),
        "base_width": int(width),
        "stem": stems[(kh, kw)],
        "num_classes": None if num_classes is None else int(num_classes),
    }


def sum_first_conv(state):
    """ESANet's depth encoder: conv1 (O, 3, kh, kw) summed over the input channels -> (O, 1, kh, kw)."""
    w = state["conv1.weight"]
    if w.shape[1] != 3:
        raise ConversionError(f"tensor 'conv1.weight' has {w.shape[1]} input channels, expected 3")
    state["conv1.weight"] = w.sum(dim=1, keepdim=True)


def convert(state, out_path, *, source, arch=None, normalization=(IMAGENET_MEAN, IMAGENET_STD),
            classes=None, no_fc=False, in_channels=None, drop_num_batches_tracked=False):
    """Writes `state` (a torchvision ResNet state_dict) to `out_path`; returns the metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap_state_dict(state).items()}
    if no_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if drop_num_batches_tracked:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if in_channels is not None and in_channels != state["conv1.weight"].shape[1]:
        if in_channels != 1:
            raise ConversionError(f"--in-channels {in_channels}: only 1 (summed RGB) is supported")
        sum_first_conv(state)
        normalization = None
    config = infer_config(state)
    if arch is not None and config["layers"] != LAYOUTS[arch]:
        raise ConversionError(
            f"--arch {arch} expects layers {LAYOUTS[arch]}, the state_dict has {config['layers']}")
    meta = {
        "architecture": "umt-resnet",
        "config": json.dumps(config),
        "source": source,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "converted_by": "data-prep/convert_torchvision.py",
    }
    if normalization is not None:
        mean, std = normalization
        meta["normalization"] = json.dumps({"mean": list(mean), "std": list(std)})
    if classes is not None:
        meta["classes"] = json.dumps(list(classes))
    save_file(state, out_path, metadata=meta)
    # Read back: every tensor identical, nothing lost.
    with safe_open(out_path, framework="pt") as f:
        if set(f.keys()) != set(state):
            raise ConversionError(f"{out_path}: written keys differ from the state_dict")
        for k in f.keys():
            if not torch.equal(f.get_tensor(k), state[k]):
                raise ConversionError(f"{out_path}: tensor {k!r} changed when written")
    return meta


def load_weights_enum(name):
    """torchvision's weights enum (e.g. 'ResNet18_Weights.IMAGENET1K_V1'): state_dict, mean/std,
    class names. Downloads the file into torch's cache the first time."""
    weights = torchvision.models.get_weight(name)
    transforms = weights.transforms()
    state = weights.get_state_dict(progress=True)
    return state, (list(transforms.mean), list(transforms.std)), weights.meta.get("categories")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="torchvision weights enum, e.g. ResNet18_Weights.IMAGENET1K_V1")
    src.add_argument("--state-dict", help="a .pth file saved with torch.save(model.state_dict())")
    p.add_argument("--arch", choices=sorted(LAYOUTS), help="check the layout against this architecture")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--no-fc", action="store_true", help="drop the classifier (fc.weight, fc.bias)")
    p.add_argument("--in-channels", type=int, choices=[1, 3], default=None,
                   help="1: sum conv1 over the RGB channels (ESANet's depth encoder)")
    p.add_argument("--drop-num-batches-tracked", action="store_true")
    p.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN,
                   help="input mean for --state-dict (default: ImageNet's)")
    p.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD,
                   help="input std for --state-dict (default: ImageNet's)")
    args = p.parse_args(argv)
    classes = None
    if args.weights:
        state, normalization, classes = load_weights_enum(args.weights)
        source = f"torchvision.models.{args.weights}"
        arch = args.arch or {"ResNet18": "resnet18", "ResNet34": "resnet34"}.get(args.weights.split("_")[0])
    else:
        state = torch.load(args.state_dict, map_location="cpu", weights_only=True)
        normalization = (args.mean, args.std)
        source = f"state_dict {args.state_dict}"
        arch = args.arch
    try:
        meta = convert(state, args.out, source=source, arch=arch, normalization=normalization,
                       classes=None if args.no_fc else classes, no_fc=args.no_fc,
                       in_channels=args.in_channels,
                       drop_num_batches_tracked=args.drop_num_batches_tracked)
    except ConversionError as e:
        sys.exit(f"convert_torchvision: {e}")
    print(f"wrote {args.out}: config {meta['config']}")


if __name__ == "__main__":
    main()

"""Golden values for umt-nn's pooling and resizing ops (crates/umt-nn/tests/ops_golden.rs).

Run: /work/pyenv/bin/python data-prep/golden/ops/make_golden.py
Writes ops.json next to this script: for each case the input x, a projection r, the forward
output and the input gradient of sum(out * r), all computed in float64 by PyTorch.
"""
import json
import os
import platform

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20260128
torch.manual_seed(SEED)


def t(a):
    return {"shape": list(a.shape), "data": [float(v) for v in a.detach().reshape(-1).tolist()]}


def case(name, op, args, shape, fn, x=None):
    if x is None:
        x = torch.randn(*shape, dtype=torch.float64)
    x = x.clone().requires_grad_(True)
    out = fn(x)
    r = torch.randn(*out.shape, dtype=torch.float64)
    (out * r).sum().backward()
    return {"name": name, "op": op, "args": args, "x": t(x), "r": t(r), "out": t(out), "grad": t(x.grad)}


cases = []
for k, s, p, shape in [(3, 2, 1, (2, 3, 7, 9)), (2, 2, 0, (1, 2, 7, 9)), (3, 1, 1, (1, 2, 5, 6)), (3, 2, 0, (1, 1, 8, 11))]:
    cases.append(case(f"max_pool2d_k{k}s{s}p{p}", "max_pool2d", {"kernel": k, "stride": s, "padding": p}, shape,
                      lambda x: F.max_pool2d(x, k, s, p)))
    cases.append(case(f"avg_pool2d_k{k}s{s}p{p}", "avg_pool2d", {"kernel": k, "stride": s, "padding": p}, shape,
                      lambda x: F.avg_pool2d(x, k, s, p)))
# Ties: small integers, so windows hold repeated maxima (first maximum wins in PyTorch's CPU kernel).
ties = torch.randint(0, 3, (1, 2, 6, 7)).to(torch.float64)
cases.append(case("max_pool2d_ties", "max_pool2d", {"kernel": 3, "stride": 2, "padding": 1}, None,
                  lambda x: F.max_pool2d(x, 3, 2, 1), x=ties))
for (oh, ow), shape in [((3, 5), (2, 3, 7, 9)), ((5, 5), (1, 2, 15, 20)), ((2, 4), (1, 1, 7, 9)), ((1, 1), (1, 2, 5, 6))]:
    cases.append(case(f"adaptive_avg_pool2d_{oh}x{ow}", "adaptive_avg_pool2d", {"out_h": oh, "out_w": ow}, shape,
                      lambda x: F.adaptive_avg_pool2d(x, (oh, ow))))
for (oh, ow), shape in [((14, 18), (1, 2, 7, 9)), ((10, 13), (1, 2, 7, 9)), ((4, 5), (1, 2, 7, 9)), ((11, 8), (1, 1, 5, 6))]:
    cases.append(case(f"nearest_{oh}x{ow}", "upsample_nearest2d", {"out_h": oh, "out_w": ow}, shape,
                      lambda x: F.interpolate(x, size=(oh, ow), mode="nearest")))
    for ac in (False, True):
        cases.append(case(f"bilinear_{oh}x{ow}_ac{int(ac)}", "upsample_bilinear2d",
                          {"out_h": oh, "out_w": ow, "align_corners": ac}, shape,
                          lambda x: F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=ac)))

meta = {"seed": SEED, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "script": "data-prep/golden/ops/make_golden.py"}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops.json")
with open(path, "w") as f:
    json.dump({"meta": meta, "cases": cases}, f, separators=(",", ":"))
print(f"wrote {len(cases)} cases to {path} ({os.path.getsize(path)} bytes)")

"""Golden values for umt-nn's optimizers, gradient clipping and LR schedules
(crates/umt-nn/tests/optim.rs and tests/schedule.rs).

Run: /work/pyenv/bin/python data-prep/golden/optim/make_golden.py
Writes optim.json next to this script. Problem: W (3, 4), b (3,), loss = sum((X W^T + b - Y)^2)
with fixed X (5, 4), Y (5, 3); every trajectory runs 6 optimizer steps in float64 and records the
parameters after each step.
"""
import json
import math
import os
import platform

import numpy as np
import torch

SEED = 20260128
torch.manual_seed(SEED)
X = torch.randn(5, 4, dtype=torch.float64)
Y = torch.randn(5, 3, dtype=torch.float64)
W0 = torch.randn(3, 4, dtype=torch.float64)
B0 = torch.randn(3, dtype=torch.float64)
STEPS = 6


def flat(a):
    return [float(v) for v in a.detach().reshape(-1).tolist()]


def loss_fn(w, b):
    return ((X @ w.T + b - Y) ** 2).sum()


def run(name, make_opt, clip=None, lr_change=None):
    w = W0.clone().requires_grad_(True)
    b = B0.clone().requires_grad_(True)
    opt = make_opt(w, b)
    traj, norms = [], []
    for step in range(STEPS):
        if lr_change is not None and step == lr_change[0]:
            for g in opt.param_groups:
                g["lr"] = g["lr"] * lr_change[1]
        opt.zero_grad()
        loss_fn(w, b).backward()
        if clip is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_([w, b], clip)))
        opt.step()
        traj.append({"w": flat(w), "b": flat(b)})
    return {"name": name, "trajectory": traj, "clip_norms": norms}


cases = [
    run("sgd_plain", lambda w, b: torch.optim.SGD([w, b], lr=0.01)),
    run("sgd_momentum_dampening_wd",
        lambda w, b: torch.optim.SGD([w, b], lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    run("sgd_nesterov_wd", lambda w, b: torch.optim.SGD([w, b], lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    run("sgd_groups", lambda w, b: torch.optim.SGD(
        [{"params": [w], "weight_decay": 0.05}, {"params": [b], "weight_decay": 0.0, "lr": 0.005}],
        lr=0.01, momentum=0.9)),
    run("sgd_clip", lambda w, b: torch.optim.SGD([w, b], lr=0.01, momentum=0.9), clip=0.5),
    run("adam", lambda w, b: torch.optim.Adam([w, b], lr=0.05, betas=(0.9, 0.999), eps=1e-8)),
    run("adam_wd", lambda w, b: torch.optim.Adam([w, b], lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    run("adamw_wd_lr_change",
        lambda w, b: torch.optim.AdamW([w, b], lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
        lr_change=(3, 0.5)),
]


def sched_values(make_sched, n, base_lr=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr, momentum=0.9)
    sched = make_sched(opt)
    lrs, moms = [], []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    return lrs, moms


schedules = []
lrs, moms = sched_values(lambda o: torch.optim.lr_scheduler.OneCycleLR(
    o, max_lr=0.01, total_steps=500, pct_start=0.1, anneal_strategy="cos", div_factor=25, final_div_factor=1e4), 500)
schedules.append({"name": "one_cycle_esanet", "kind": "one_cycle",
                  "args": {"max_lr": 0.01, "total_steps": 500, "pct_start": 0.1, "div_factor": 25.0,
                           "final_div_factor": 1e4},
                  "lr": lrs, "momentum": moms})
lrs, moms = sched_values(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=37), 37)
schedules.append({"name": "one_cycle_defaults", "kind": "one_cycle",
                  "args": {"max_lr": 0.1, "total_steps": 37, "pct_start": 0.3, "div_factor": 25.0,
                           "final_div_factor": 1e4},
                  "lr": lrs, "momentum": moms})
lrs, _ = sched_values(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.1), 23, base_lr=0.1)
schedules.append({"name": "step_lr", "kind": "step_decay", "args": {"base_lr": 0.1, "step_size": 5, "gamma": 0.1},
                  "lr": lrs})
lrs, _ = sched_values(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.001), 21,
                      base_lr=0.1)
schedules.append({"name": "cosine", "kind": "cosine", "args": {"base_lr": 0.1, "total_steps": 20, "min_lr": 0.001},
                  "lr": lrs})
lrs, _ = sched_values(lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5),
                      9, base_lr=0.1)
schedules.append({"name": "linear_warmup", "kind": "linear_warmup",
                  "args": {"base_lr": 0.1, "warmup_steps": 5, "start_factor": 0.1}, "lr": lrs})

meta = {"seed": SEED, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "script": "data-prep/golden/optim/make_golden.py"}
out = {"meta": meta, "problem": {"x": flat(X), "y": flat(Y), "w0": flat(W0), "b0": flat(B0), "steps": STEPS},
       "optimizers": cases, "schedules": schedules}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(f"wrote {path} ({os.path.getsize(path)} bytes)")

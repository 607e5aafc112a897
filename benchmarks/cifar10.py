# SPDX-License-Identifier: MIT
"""CIFAR-10 (JPEG) side by side: ConvNet XS (Prach et al., CVPR 2024) built from onelip's,
orthogonium's and deel-torchlip's layers, the same wall-clock budget each, certified the same
valid way for the whole network (issue 11).

    .venv/bin/python benchmarks/cifar10.py --data /tmp/cifar --sweep          # the benchmark
    .venv/bin/python benchmarks/cifar10.py --data /tmp/cifar --budget 20s --sweep \\
        --sweep-budget 10s --train-limit 2000 --jobs 1 --out /tmp/c10-smoke   # a smoke run
    .venv/bin/python benchmarks/cifar10.py --data /tmp/cifar --recipe-from \\
        benchmarks/results/cifar10_hour.json          # issue 21: the one-hour recipe for all
    .venv/bin/python benchmarks/cifar10.py --data /tmp/cifar --device cuda    # GPU protocol
    .venv/bin/python benchmarks/cifar10.py --data /tmp/cifar --gpu-checks --device cpu \\
        --budget 30s --out /tmp/c10-gpu-smoke                                  # it, on a CPU

**Data.** ``--data DIR``: an image folder, ``DIR/train/<class>/*.jpg`` (or ``DIR/<class>/``),
decoded once by :func:`onelip.data.images.read_image_folder` into a uint8 cache. Only the
training images are read — a ``DIR/test`` split is never opened. A fixed-seed validation split
of ``--val-size`` (5,000 = 10 %) images is carved from them; every figure is measured on it.
Training batches are augmented on the fly (:func:`onelip.data.augment.augment`, random crop
with padding 4 + horizontal flip, uint8) and become float in [0, 1] per batch. Inputs stay in
pixel space: each network starts with ``onelip.nn.normalize.Normalize(mean, std)`` (per-channel
statistics of the training split), whose exact bound 1/min σ is part of the certified bound, so
radii are in pixel units (ε = 36/255 …).

**Networks** (``--only`` takes the short names), the same ConvNet XS structure (width 16):
zero-channel padding 3 → 16, a 1×1 convolution + MaxMin, five blocks of five convolutions +
activation (3×3, the last block 1×1), each ending in first-channels (halving) + a 2×2
invertible downsampling, flatten (512), a 512 → 10 dense head. The parameter-free parts
(Normalize, ZeroChannelPad, FirstChannels, InvertibleDownsample) are onelip's in all three, so
only the learned layers differ:

* ``onelip``: :func:`onelip.models.lipconvnet.lipconvnet` (``OrthoConv2d``, zero padding;
  ``MaxMin``; ``OrthoLinear`` head), ``onelip.nn.retract_`` after each step;
* ``orthogonium``: ``AdaptiveOrthoConv2d`` (AOC; its defaults: "same", circular padding),
  its ``MaxMin``, its ``OrthoLinear`` head;
* ``deel``: deel-torchlip ``SpectralConv2d`` (zero padding "same"), ``GroupSort2``,
  ``SpectralLinear`` head (orthonormal rows, like the others'; deel's multiclass tutorials use
  a classwise ``FrobeniusLinear``, whose certificate is the same last-layer radius below).

**Recipe** (the same for all): Adam (``--lr``), onelip's one-cycle schedule over the wall-clock
budget (30 % warm-up from lr/25, cosine decay), batch 256, gradient clipping at ``--clip``,
``--budget`` of training per network (default 20 minutes), ``--threads`` (1) torch threads per
network, ``--jobs`` (2) networks at a time in separate processes (this script re-run with
``--worker``), results merged. The loss is chosen by ``--sweep`` (below) or given by ``--loss``.

**Certificate** (every network, the same code: ``benchmarks/_certify.py``): the network is
split into its body h and last linear layer (W, b); every layer of the body is bounded from
the operator it applies in eval mode (checked against the layer's own output): convolutions by
the certified norm of their symbol (zero padding:
:func:`onelip.functional.conv2d_operator_norm_bound`; circular padding: exact), Normalize
by max 1/σ, the parameter-free layers by 1; L_body is the product. Radius
``min_j (f_y − f_j) / (L_body ‖w_y − w_j‖)`` (the last-layer radius, valid for
any linear head; with orthonormal rows it equals margin/(√2 L_body)); the whole-network radius
margin/(√2 · L_body ‖W‖₂) is reported beside it, and each library's own claim (onelip:
``certified_accuracy(method="last_layer")``; orthogonium and deel-torchlip: margin/(√2 · bound
of Normalize), their layers assumed 1-Lipschitz) with its validity. A minimal-norm attack on the
first ``--attack`` validation points checks that no certificate is violated.

**Sweep** (``--sweep``): the onelip network trained ``--sweep-budget`` (3 minutes) with each of
``--sweep-losses`` (× ``--sweep-lrs``), ``--jobs`` at a time; the rule (``choose``) picks the
loss then used for all three networks. Recorded in the result files.

**The one-hour recipe** (``--recipe-from PATH``, issue 21): the recipe of
``benchmarks/cifar10_hour.py`` — its result file (the winner of its finals, a grid recipe) or a
saved network's JSON with a ``recipe`` (``benchmarks/models/cifar10-hour.json``) — given to
all three networks: the input normalisation (``std``: Normalize(mean, std); ``center``:
Normalize(mean, 1), bound 1), the optimiser, lr and weight decay, the ε ramp (for a loss that
has an ε) and bf16 (only where :func:`onelip.train.config.bf16_support` allows it; else
float32, said in the report); onelip's network takes the recipe's layer family
(``lipconvnet(layer=...)``, its title names the class). Each network then gets the loss that
suits it best: a ``--sweep-budget`` run per spec of ``--peer-losses`` (default: the recipe's
loss and the baseline run's), ``choose`` per network, and its headline run trains with its own
pick. The margin-aware losses (offset-ce, emma, la: :func:`cifar10_hour.build_recipe_loss`)
get L = the network's certified bound at initialisation: onelip's
``onelip.certify.lipschitz_bound`` (as ``cifar10_hour.py``), each peer's the bound this
benchmark certifies for it (``benchmarks/_certify.py``: L_body · ‖W_last‖₂, the bound its
radii are computed with; not 1/min σ of Normalize, which assumes 1-Lipschitz layers:
orthogonium's AOC are, its bound at initialisation is 1/min σ within 1e-4, but deel-torchlip's
zero-padded ``SpectralConv2d`` are contractions, about 0.63 each, and its network's certified
bound is about 1e-4 of 1/min σ). Budgets stay wall-clock (``clock: wall`` in the files). The
report puts each network's figures under the previous run's recipe (``--baseline``: default
the ``cifar10.json`` about to be overwritten, read first and copied to
``cifar10_before_recipe.json`` unless that exists; a recipe run's own baseline is carried
over) beside the new ones, so that recipe and layers show apart.

**GPU protocol** (``--device cuda``, or ``--gpu-checks`` on any device): the time of a training
step at batch 256 of each network and of its plain twin (the same network with ``nn.Conv2d`` /
``nn.Linear`` of the same shapes and padding), then onelip's network trained for
``--gpu-train`` (5 minutes) on the device and certified; writes ``cifar10_gpu.{json,md}``.

Writes ``<out>/cifar10.json`` and ``cifar10.md`` (``--out``, default ``benchmarks/results``)
and the trained networks under ``--models`` (default ``benchmarks/models`` for the default
``--out``, else ``<out>/models``): ``cifar10-<name>.safetensors`` (state dict, no pickle) +
``cifar10-<name>.json`` (how to rebuild it, recipe, validation figures), to be certified later
on data the benchmark never saw (``--evaluate-saved --data OTHER_FOLDER``).

The peers live in ``benchmarks/.peers-venv`` (``--peers-venv``); the script re-executes itself
there when they are needed (``benchmarks/_peers.py``); ``--only onelip`` needs no peers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _certify import (  # noqa: E402
    certified_body_bound,
    claim_is_valid,
    exact_body_bound,
    split_head,
)
from _machine import machine_info as _machine_info  # noqa: E402
from _peers import DEFAULT_PEERS_VENV, REPO, import_working_tree_onelip  # noqa: E402
from fashion_mnist import lr_factor, make_loss  # noqa: E402

ONELIP, ORTHO, DEEL = "onelip", "orthogonium", "deel"
NETS = [ONELIP, ORTHO, DEEL]
PEERS = (ORTHO, DEEL)
TITLES = {ONELIP: "onelip (OrthoConv2d)", ORTHO: "orthogonium (AOC)",
          DEEL: "deel-torchlip (SpectralConv2d)"}
FAMILY = "ortho"  # onelip's layer family (lipconvnet's layer=) unless a recipe names another
DATA_NAME = "CIFAR-10 (JPEG)"
EPS255 = (36, 72, 108, 255)
WIDTH = 16  # ConvNet XS
NUM_CLASSES = 10
AUGMENT = ("crop", "flip")
# The loss grid of --sweep. In pixel space the network's bound is that of Normalize, about
# 1/0.243 ≈ 4.1, so a certificate at ε needs a logit margin of about √2 · 4.1 · ε: 0.82 at
# 36/255, 1.6 at 72/255. τ-CE pushes margins to about 5/τ (p_y ≈ 0.95 over 9 others):
# τ = 4 → 1.3, τ = 8 → 0.6; the hinge with m = 1.0 stops at 1.0 (≈ 44/255).
# τ of τ-CE spans the paper's trade-off (Fig. 3): small τ, large margins (more certified),
# large τ, higher clean accuracy. The first run (ce:tau=4, 8, hinge m=1) certified 0.0 % with
# every setting after 3 minutes.
SWEEP_LOSSES = ["ce:tau=0.25", "ce:tau=0.5", "ce:tau=1", "ce:tau=4"]
DEFAULT_LOSS = "ce:tau=4"  # without --sweep (and without --loss)
BASELINE_LOSS = "ce:tau=0.25"  # --peer-losses' second default when no baseline says its loss
MATCHED_CLEAN_TOL = 0.01  # "matched clean accuracy": within 1 point
TARGET_CERT_GAIN = 0.03  # CPU target: onelip cert@36/255 >= better peer's + 3 points
TARGET_GPU_STEP_RATIO = 1.5  # GPU target: onelip step <= 1.5 x its plain twin
PAPER_BEST = {"clean": 0.70, "cert@36": 0.44}  # the paper's best point (original CIFAR-10)
SWEEP_CERT_TIE = 0.005


# ==== small helpers =========================================================================


def parse_duration(text: str | float | None) -> float | None:
    """'20m' -> 1200.0, '30s' -> 30.0, '1h' -> 3600.0, '90' -> 90.0; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 20m, 30s, 1h or 90, got "
                                         f"{text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def fmt_s(s: float) -> str:
    return f"{s / 60:g} min" if s >= 60 and s % 60 == 0 else f"{s:g} s"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _f(v, fmt="{:.4f}") -> str:
    return "—" if v is None else fmt.format(v)


# ==== data ==================================================================================


def train_root(data: Path) -> Path:
    """``DIR/train`` if it exists, else ``DIR`` (a test split is never read)."""
    return data / "train" if (data / "train").is_dir() else data


def load_images(args):
    """(x uint8 (N, 3, 32, 32), y int64 (N,), classes, seconds) of the training images."""
    import torch

    from onelip.data.images import read_image_folder

    t0 = time.perf_counter()
    arr = read_image_folder(train_root(Path(args.data)), cache_dir=args.cache_dir,
                            progress=not args.worker)
    x, y = torch.from_numpy(arr.x), torch.from_numpy(arr.y)
    if tuple(x.shape[1:]) != (3, 32, 32):
        raise SystemExit(f"[cifar10] expected 3×32×32 images, got {tuple(x.shape[1:])}")
    return x, y, list(arr.classes), time.perf_counter() - t0


def split(x, y, args):
    """Fixed-seed validation split: (x_train, y_train, x_val, y_val), all uint8 / int64.
    ``--train-limit N`` keeps the first N training images of the (fixed) permutation."""
    import torch

    n = x.shape[0]
    if args.val_size >= n:
        raise SystemExit(f"[cifar10] --val-size {args.val_size} >= {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.split_seed))
    val, tr = perm[:args.val_size], perm[args.val_size:]
    if args.train_limit:
        tr = tr[:args.train_limit]
    return x[tr].contiguous(), y[tr].contiguous(), x[val].contiguous(), y[val].contiguous()


def channel_stats(x) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population) of uint8 images, in [0, 1] units (float64)."""
    import torch

    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for i in range(0, x.shape[0], 5000):
        b = x[i:i + 5000].double().div_(255.0)
        s += b.sum((0, 2, 3))
        s2 += b.square().sum((0, 2, 3))
    cnt = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / cnt
    std = (s2 / cnt - mean.square()).clamp_min(0).sqrt()
    return [float(v) for v in mean], [float(v) for v in std]


def to_float(xb):
    return xb.float().div_(255.0)


# ==== networks ==============================================================================


def title_of(name: str, family: str = FAMILY) -> str:
    """The network's title; onelip's names the class of its layer family."""
    if name == ONELIP and family != FAMILY:
        from onelip import nn as onn

        return f"onelip ({onn.CONV_LAYERS[family].__name__})"
    return TITLES[name]


def build_network(name: str, mean, std, *, width: int = WIDTH, seed: int = 0,
                  family: str = FAMILY):
    """ConvNet XS of Prach et al. from the layers of ``name``; input (N, 3, 32, 32) in [0, 1].
    ``family``: onelip's convolutions (:data:`onelip.nn.CONV_LAYERS`; the peers ignore it)."""
    import torch
    from torch import nn

    from onelip import nn as onn
    from onelip.nn.channels import FirstChannels, ZeroChannelPad
    from onelip.nn.normalize import Normalize

    torch.manual_seed(seed)
    if name == ONELIP:
        from onelip.models.lipconvnet import LipConvNetConfig, lipconvnet

        return lipconvnet(LipConvNetConfig(width=width, layer=family, mean=tuple(mean),
                                           std=tuple(std)))
    if name == ORTHO:
        from orthogonium.layers import MaxMin, OrthoLinear
        from orthogonium.layers.conv.AOC import AdaptiveOrthoConv2d

        conv = lambda c, k: AdaptiveOrthoConv2d(c, c, kernel_size=k, stride=1)  # noqa: E731
        act = lambda: MaxMin()  # noqa: E731
        head = lambda i, o: OrthoLinear(i, o)  # noqa: E731
    elif name == DEEL:
        from deel import torchlip

        conv = lambda c, k: torchlip.SpectralConv2d(  # noqa: E731
            c, c, kernel_size=(k, k), padding="same" if k > 1 else 0)
        act = lambda: torchlip.GroupSort2()  # noqa: E731
        head = lambda i, o: torchlip.SpectralLinear(i, o)  # noqa: E731
    else:
        raise KeyError(name)
    layers: list = [Normalize(mean, std), ZeroChannelPad(width), conv(width, 1), act()]
    blocks, depth = 5, 5
    for i in range(blocks):
        w = width * 2 ** i
        k = 1 if i == blocks - 1 else 3
        for _ in range(depth):
            layers += [conv(w, k), act()]
        layers += [FirstChannels(w // 2), onn.InvertibleDownsample(2)]
    layers += [nn.Flatten(), head(width * 2 ** blocks, NUM_CLASSES)]
    return nn.Sequential(*layers)


def plain_twin(model):
    """The same network with plain ``nn.Conv2d`` / ``nn.Linear`` of the same shapes, padding
    and bias (freshly initialised), parameter-free layers kept: what the constrained layers
    cost against unconstrained ones."""
    import copy

    from _certify import _leaves
    from torch import nn

    out = []
    for m in _leaves(model):
        if hasattr(m, "in_channels") and hasattr(m, "kernel_size"):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = getattr(m, "stride", 1)
            s = s if isinstance(s, int) else s[0]
            # a residual family (SLL, CPL, ...) keeps its shape: in = out channels
            c_out = getattr(m, "out_channels", m.in_channels)
            out.append(nn.Conv2d(m.in_channels, c_out, k, stride=s,
                                 padding=(k - 1) // 2, bias=getattr(m, "bias", None) is not None,
                                 padding_mode=getattr(m, "padding_mode", "zeros")))
        elif hasattr(m, "in_features") and hasattr(m, "out_features"):
            out.append(nn.Linear(m.in_features, m.out_features,
                                 bias=getattr(m, "bias", None) is not None))
        else:
            if any(True for _ in m.parameters()):
                raise TypeError(f"plain_twin: {type(m).__name__} has parameters")
            out.append(copy.deepcopy(m))
    return nn.Sequential(*out)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ==== training ==============================================================================


TRAIN_OPTIMIZERS = ("adam", "adamw", "nesterov", "sgd", "nadam")


def make_optimizer(params, name: str, lr: float, weight_decay: float = 0.0):
    """``train``'s optimiser: 'adam' (torch Adam; ``weight_decay`` as L2, the default 0 is
    the benchmarks' Adam), 'adamw' (AdamW, decoupled), 'nesterov' / 'sgd' (SGD with momentum
    0.9, Nesterov or plain; L2) or 'nadam' (NAdam, decoupled weight decay)."""
    import torch

    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name in ("nesterov", "sgd"):
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay,
                               nesterov=name == "nesterov")
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, weight_decay=weight_decay,
                                 decoupled_weight_decay=True)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(TRAIN_OPTIMIZERS)}")


def train(model, loss_fn, x, y, *, budget_s: float, batch_size: int, lr: float, clip: float,
          retract: bool, device: str, seed: int, label: str, log_every_s: float = 60.0,
          clock=time.perf_counter, optimizer: str = "adam", weight_decay: float = 0.0,
          epsilon_ramp: float = 0.0, amp: bool = False) -> dict:
    """Adam, one-cycle over the wall-clock budget, augmented uint8 batches, gradient clipping,
    ``retract_`` after each step (onelip). Stops when ``budget_s`` seconds of training have
    passed by ``clock`` (default wall-clock; ``time.process_time`` budgets CPU time, which
    does not depend on what else the machine runs). ``x`` uint8 on ``device``.

    ``optimizer`` / ``weight_decay``: :func:`make_optimizer` (default: Adam, no decay).
    ``epsilon_ramp``: a fraction of the budget in [0, 1]; before each step a loss with
    ``ramps_epsilon`` (onelip's margin-aware losses) gets ``epsilon_scale = min(1, progress /
    epsilon_ramp)``, and 1.0 again at the end. ``amp``: the forward under bf16 autocast of
    the device's type (logits cast back to float32 for the loss), refused where
    :func:`onelip.train.config.bf16_support` says bf16 does not pay. The defaults are the
    benchmarks' recipe, unchanged."""
    import contextlib

    import torch

    from onelip.data.augment import augment
    from onelip.nn.utils import batched_kernel_build, retract_

    if not 0.0 <= epsilon_ramp <= 1.0:
        raise ValueError(f"epsilon_ramp is a fraction of the budget in [0, 1], got {epsilon_ramp}")
    ramp = epsilon_ramp > 0
    if ramp and not getattr(loss_fn, "ramps_epsilon", False):
        raise ValueError(f"epsilon_ramp={epsilon_ramp:g} needs a loss with an ε to ramp "
                         "(offset-ce, emma, la); use epsilon_ramp=0 with this loss")
    if amp:
        from onelip.train.config import bf16_support

        ok, why = bf16_support(device)
        if not ok:
            raise ValueError(f"amp (bf16 autocast) refused on {device}: {why}")
    dev_type = torch.device(device).type
    cuda = device.startswith("cuda")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, optimizer, lr, weight_decay)
    n = x.shape[0]
    gperm = torch.Generator().manual_seed(seed)
    gaug = torch.Generator(device=device).manual_seed(seed + 1)
    check_every = 20 if cuda else 1
    step, images, clipped, aug_s = 0, 0, 0, 0.0
    grad_norms: list[float] = []
    history: list[dict] = []
    epoch, stop = 0, False
    t_start = clock()
    last_log = t_start
    while not stop:
        epoch += 1
        perm = torch.randperm(n, generator=gperm).to(device)
        tot_loss = torch.zeros((), device=device, dtype=torch.float64)
        tot_ok = torch.zeros((), device=device, dtype=torch.int64)
        count, t_epoch = 0, clock()
        for i in range(0, n, batch_size):
            progress = (clock() - t_start) / budget_s
            if progress >= 1.0:
                stop = True
                break
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(progress, "onecycle")
            if ramp:
                loss_fn.epsilon_scale = min(1.0, progress / epsilon_ramp)
            idx = perm[i:i + batch_size]
            ta = clock()
            xb = to_float(augment(x[idx], AUGMENT, generator=gaug))
            aug_s += clock() - ta
            yb = y[idx]
            with (torch.autocast(device_type=dev_type, dtype=torch.bfloat16) if amp
                  else contextlib.nullcontext()):
                with batched_kernel_build(model):  # like OrthoConv2d kernels built together
                    out = model(xb)
            if amp:
                out = out.float()
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if retract:
                retract_(model)
            step += 1
            images += idx.numel()
            count += idx.numel()
            tot_loss += loss.detach().double() * idx.numel()
            tot_ok += (out.detach().argmax(1) == yb).sum()
            if step % check_every == 0:
                gnf = float(gn)
                grad_norms.append(gnf)
                clipped += int(gnf > clip)
                if not math.isfinite(float(loss)):
                    raise FloatingPointError(f"[{label}] loss became {float(loss)} at step "
                                             f"{step}")
            now = clock()
            if now - last_log >= log_every_s:
                last_log = now
                print(f"[{label}] {now - t_start:.0f}/{budget_s:.0f} s  step {step}  epoch "
                      f"{images / n:.2f}  loss {float(tot_loss) / max(count, 1):.4f}  "
                      f"train(running) {int(tot_ok) / max(count, 1):.4f}  "
                      f"{images / (now - t_start):.0f} img/s", flush=True)
        if cuda:
            torch.cuda.synchronize()
        if count:
            history.append({"epoch": epoch, "images": count,
                            "seconds": clock() - t_epoch,
                            "loss": float(tot_loss) / count,
                            "train_acc_running": int(tot_ok) / count})
    if cuda:
        torch.cuda.synchronize()
    seconds = clock() - t_start
    if ramp:
        loss_fn.epsilon_scale = 1.0
    model.eval()
    gsorted = sorted(grad_norms)
    return {"train_seconds": seconds, "steps": step, "images_seen": images,
            "epochs_done": images / n, "images_per_second": images / seconds,
            "augment_seconds": aug_s,  # on a GPU: time to enqueue, not to run
            "augment_fraction": None if cuda else aug_s / seconds,
            "grad_norm_median": gsorted[len(gsorted) // 2] if gsorted else None,
            "clipped_fraction": clipped / max(len(grad_norms), 1), "history": history}


# ==== evaluation: the same certificate for every network ====================================


def evaluate(name: str, model, x_u8, y, *, attack_n: int, batch: int = 500) -> dict:
    """Clean and certified accuracy of ``model`` (eval mode, on the CPU) on uint8 images, the
    certificate computed by ``benchmarks/_certify.py``; each library's own claim beside it."""
    import torch
    import torch.nn.utils.parametrize as P

    from onelip import certify
    from onelip.nn.normalize import Normalize

    model.to("cpu").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_u8, y = x_u8.cpu(), y.cpu()
    t0 = time.perf_counter()
    eps = [e / 255 for e in EPS255]
    res: dict = {}
    with P.cached():
        body, w, b = split_head(model)
        l_body, rows = certified_body_bound(body, to_float(x_u8[:2]))
        w_norm = float(torch.linalg.matrix_norm(w.double(), ord=2))
        logits, feats = [], []
        with torch.no_grad():
            for i in range(0, x_u8.shape[0], batch):
                xb = to_float(x_u8[i:i + batch])
                logits.append(model(xb).double())
                feats.append(body(xb).double())
        logits, feats = torch.cat(logits), torch.cat(feats)
        recon = feats @ w.double().mT + (b.double() if b is not None else 0)
        split_err = float((recon - logits).abs().max())
        if split_err > 1e-3:
            raise RuntimeError(f"[{name}] body/head split does not reproduce the model "
                               f"({split_err:.2e})")
        radius = certify.last_layer_radius(logits, w.double(), y, lipschitz=l_body)
        margin = certify.certified_radius(logits, y, lipschitz=1.0) * math.sqrt(2)
        global_r = margin / (math.sqrt(2) * l_body * w_norm)
        norm_bound = math.prod(m.lipschitz_bound() for m in model.modules()
                               if isinstance(m, Normalize))
        if name == ONELIP:
            own = certify.certified_accuracy(model, to_float(x_u8), y, eps, method="last_layer")
            claim_r = own["radii"].double()
            claim_l = float(certify.lipschitz_bound(body))
            need = exact_body_bound(rows)
            claim_text = ("onelip certified_accuracy(method='last_layer'), "
                          "lipschitz_bound(body)")
        else:  # the layers assumed 1-Lipschitz, the head orthonormal: margin/(√2 · Normalize)
            claim_r = margin / (math.sqrt(2) * norm_bound)
            claim_l = norm_bound
            need = exact_body_bound(rows) * w_norm
            claim_text = "margin/(√2 · bound of Normalize) (layers assumed 1-Lipschitz)"
        res.update({
            "clean": float((logits.argmax(1) == y).float().mean()),
            "predicted_classes": int(logits.argmax(1).unique().numel()),
            "certified": {str(e): float((radius > e / 255).float().mean()) for e in EPS255},
            "certified_global": {str(e): float((global_r > e / 255).float().mean())
                                 for e in EPS255},
            "L_body": l_body, "last_layer_norm": w_norm, "lipschitz_upper": l_body * w_norm,
            "normalize_bound": norm_bound, "layers": rows,
            "median_radius_correct": float(radius[radius > 0].median())
            if bool((radius > 0).any()) else 0.0,
            "claim": {"certificate": claim_text, "assumed_bound": claim_l,
                      "certified_bound_needed": need, "valid": claim_is_valid(claim_l, need),
                      "certified": {str(e): float((claim_r > e / 255).float().mean())
                                    for e in EPS255}},
            "val_size": int(x_u8.shape[0]),
        })
        if attack_n:
            t1 = time.perf_counter()
            xa, ya = to_float(x_u8[:attack_n]), y[:attack_n]
            ra = radius[:attack_n]
            att = certify.attack_l2(model, xa, ya, max_eps=max(1.0, 1.5 * float(ra.max())),
                                    steps=10, restarts=1, bisection=4, deepfool_steps=20)
            mn = att.min_norm.double()
            found = (ra > 0) & torch.isfinite(mn)
            ratios = (mn[found] / ra[found])
            res["attack"] = {
                "points": int(xa.shape[0]), "correct": int((ra > 0).sum()),
                "found": int(found.sum()),
                "median_ratio": float(ratios.median()) if ratios.numel() else None,
                "violations": int((found & (mn < ra * (1 - 1e-5))).sum()),
                "violations_of_library_claim":
                    int((found & (mn < claim_r[:attack_n] * (1 - 1e-5))).sum()),
                "seconds": time.perf_counter() - t1,
                "protocol": "onelip.certify.attack_l2(steps=10, restarts=1, bisection=4, "
                            "deepfool_steps=20): an upper bound of the minimal adversarial norm",
            }
    res["eval_seconds"] = time.perf_counter() - t0
    return res


def cert_line(r: dict) -> str:
    cert = "  ".join(f"{e}/255:{r['certified'][str(e)]:.4f}" for e in EPS255)
    return f"clean {r['clean']:.4f}  cert {cert}  L {r['lipschitz_upper']:.3f}"


# ==== saving models =========================================================================


def save_model(model, path: Path, meta: dict) -> None:
    """``path``.safetensors (the state dict, no pickle) and ``path``.json (``meta``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path.with_suffix(".safetensors")),
              metadata={"format": "onelip-benchmark-cifar10/1", "network": meta["network"]})
    meta = dict(meta, state_dict_keys=sorted(tensors),
                rebuild="import sys; sys.path.insert(0, 'benchmarks'); from cifar10 import "
                        "load_saved; model, meta = load_saved('" + str(path) + ".json')")
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


def load_saved(json_path: str | Path):
    """(model in eval mode, meta) of a network saved by this benchmark."""
    from safetensors.torch import load_file

    json_path = Path(json_path)
    meta = json.loads(json_path.read_text())
    model = build_network(meta["network"], meta["mean"], meta["std"], width=meta["width"],
                          family=meta.get("family", FAMILY))
    model.load_state_dict(load_file(str(json_path.with_suffix(".safetensors"))))
    return model.eval(), meta


def models_dir(args) -> Path:
    if args.models is not None:
        return args.models
    default_out = (REPO / "benchmarks" / "results").resolve()
    return (REPO / "benchmarks" / "models") if args.out.resolve() == default_out \
        else args.out / "models"


# ==== one network, end to end (a worker process) ============================================


def run_worker(args) -> int:
    """Train and evaluate one job (``--worker JOB.json``) and write ``JOB.result.json``."""
    import torch

    job = json.loads(Path(args.worker).read_text())
    torch.set_num_threads(args.threads)
    x, y, classes, load_s = load_images(args)
    xtr, ytr, xva, yva = split(x, y, args)
    del x, y
    mean, std = channel_stats(xtr)
    rss_data = peak_rss_mb()
    name, loss_spec, lr = job["network"], job["loss"], job["lr"]
    rec = job.get("recipe")  # --recipe-from: the one-hour recipe's settings
    family = rec["family"] if rec and name == ONELIP else FAMILY
    std_used = list(std) if not rec or rec["norm"] == "std" else [1.0] * len(std)
    model = build_network(name, mean, std_used, seed=args.seed, family=family)
    label = job["label"]
    opt, wd, ramp, amp = "adam", 0.0, 0.0, False
    if rec:
        from cifar10_hour import build_recipe_loss, loss_values

        lip, lip_from = init_bound(name, model, to_float(xtr[:2]))
        loss_fn = build_recipe_loss(loss_spec, lip)
        opt, wd, amp = rec["optimizer"], rec["weight_decay"], rec["amp"]
        # the ε ramp schedules a loss's ε: none for a loss without one (τ-CE, hinge)
        ramp = rec["epsilon_ramp"] if getattr(loss_fn, "ramps_epsilon", False) else 0.0
    else:
        loss_fn = make_loss(loss_spec)
    print(f"[{label}] {title_of(name, family)}: {count_params(model):,} parameters, loss "
          f"{loss_spec}, {opt} lr {lr:g}" + (f", wd {wd:g}, ε ramp {ramp:g}, "
                                             f"{rec['norm']}, L {lip:.4f}" if rec else "")
          + f", budget {job['budget_s']:.0f} s, {torch.get_num_threads()} thread(s), "
          f"train {xtr.shape[0]} / val {xva.shape[0]} images", flush=True)
    info = {"network": name, "title": title_of(name, family), "loss": loss_spec, "lr": lr,
            "budget_seconds": job["budget_s"], "clock": "wall", "role": job["role"],
            "params": count_params(model), "batch_size": args.batch_size, "clip": args.clip,
            "schedule": "one-cycle over the wall-clock budget "
                        f"({'Adam' if opt == 'adam' else opt})",
            "retract_each_step": name == ONELIP, "train_size": int(xtr.shape[0]),
            "val_size": int(xva.shape[0]), "mean": mean, "std": std_used,
            "machine": machine_info(args), "data_load_seconds": load_s,
            "load_average_start": os.getloadavg()[0]}
    if rec:
        info.update({"family": family, "normalisation": rec["norm"], "optimizer": opt,
                     "weight_decay": wd, "epsilon_ramp": ramp,
                     "epsilon_ramp_recipe": rec["epsilon_ramp"], "amp": amp,
                     "loss_class": type(loss_fn).__name__, "loss_values": loss_values(loss_fn),
                     "lipschitz_at_init": lip, "lipschitz_at_init_from": lip_from})
    info.update(train(model, loss_fn, xtr, ytr, budget_s=job["budget_s"],
                      batch_size=args.batch_size, lr=lr, clip=args.clip,
                      retract=name == ONELIP, device="cpu", seed=args.seed, label=label,
                      optimizer=opt, weight_decay=wd, epsilon_ramp=ramp, amp=amp))
    info["load_average_end"] = os.getloadavg()[0]
    info["peak_rss_mb"] = peak_rss_mb()
    info["peak_rss_after_data_mb"] = rss_data
    info.update(evaluate(name, model, xva, yva, attack_n=job["attack"]))
    print(f"[{label}] {info['epochs_done']:.2f} epochs, {info['images_per_second']:.0f} img/s, "
          f"peak RSS {info['peak_rss_mb']:.0f} MB; val {cert_line(info)}", flush=True)
    if job.get("save"):
        meta = {"network": name, "width": WIDTH, "mean": mean, "std": std_used,
                "classes": classes, "data": DATA_NAME,
                "recipe": {k: info[k] for k in ("loss", "lr", "budget_seconds", "batch_size",
                                                "clip", "schedule", "retract_each_step")},
                "validation": {k: info[k] for k in ("clean", "certified", "lipschitz_upper",
                                                    "val_size", "epochs_done")},
                "split": {"val_size": args.val_size, "split_seed": args.split_seed,
                          "train_limit": args.train_limit},
                "written_by": "benchmarks/cifar10.py"}
        if name == ONELIP:  # how onelip.models builds it (benchmarks/ship_pretrained.py)
            import dataclasses

            from onelip.models.lipconvnet import LipConvNetConfig

            meta.update(model="lipconvnet", family=family, config=dataclasses.asdict(
                LipConvNetConfig(width=WIDTH, layer=family, mean=tuple(mean),
                                 std=tuple(std_used))))
        if rec:
            meta["recipe"].update({k: info[k] for k in (
                "optimizer", "weight_decay", "epsilon_ramp", "amp", "loss_values",
                "lipschitz_at_init")}, normalisation=rec["norm"], clock="wall",
                threads=args.threads, recipe_from=job.get("recipe_from"))
        save_model(model, Path(job["save"]), meta)
        info["saved"] = job["save"]
    Path(job["result"]).write_text(json.dumps(info, indent=1) + "\n")
    return 0


def worker_argv(args, job_path: Path) -> list[str]:
    """This script's own arguments, minus the orchestration ones, plus ``--worker JOB``."""
    return [sys.executable, str(Path(__file__).resolve()), *args.argv, "--worker",
            str(job_path)]


def run_jobs(args, jobs: list[dict], tmp: Path) -> list[dict]:
    """Run each job in its own process, ``--jobs`` at a time; their result dicts, in order."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), str(REPO / "benchmarks")]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    pending = list(enumerate(jobs))
    running: list = []
    results: list = [None] * len(jobs)
    while pending or running:
        while pending and len(running) < args.jobs:
            i, job = pending.pop(0)
            jp = tmp / f"job{i}.json"
            job["result"] = str(tmp / f"job{i}.result.json")
            jp.write_text(json.dumps(job))
            print(f"[cifar10] start {job['label']}", flush=True)
            running.append((i, job, subprocess.Popen(worker_argv(args, jp), env=env,
                                                     cwd=REPO)))
        time.sleep(0.5)
        for item in list(running):
            i, job, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode == 0 and Path(job["result"]).exists():
                results[i] = json.loads(Path(job["result"]).read_text())
            else:
                print(f"[cifar10] {job['label']} failed (exit {proc.returncode})", flush=True)
                results[i] = {"network": job["network"], "loss": job["loss"],
                              "lr": job["lr"], "error": f"exit {proc.returncode}"}
    return results


# ==== the sweep and its rule ================================================================


def choose(rows: list[dict]) -> dict:
    """The highest validation certified accuracy at 36/255, the benchmark's headline (ties,
    within 0.5 point: the higher validation clean accuracy); runs that predict one class on
    the whole split rank after the others (a constant classifier is certified at every
    radius)."""
    ok = [r for r in rows if "error" not in r]
    if not ok:
        raise SystemExit("[cifar10] every sweep run failed")
    ok = [r for r in ok if r.get("predicted_classes", 2) > 1] or ok
    best = max(r["certified"]["36"] for r in ok)
    near = [r for r in ok if r["certified"]["36"] >= best - SWEEP_CERT_TIE]
    return max(near, key=lambda r: (r["clean"], r["certified"]["36"]))


# ==== the one-hour recipe (--recipe-from) ===================================================


def load_recipe(path: str | Path) -> dict:
    """The recipe of ``path``: a ``benchmarks/cifar10_hour.py`` result file (the grid recipe
    of its ``winner``) or a saved network's JSON with a ``recipe`` dict (its ``family`` or
    ``config.layer``; ``normalisation``, else ``center`` where every std of its config is 1).
    Returns ``cifar10_hour.Recipe``'s fields (family, norm, loss, optimizer, lr, weight_decay,
    epsilon_ramp, amp) with ``text``, ``source`` and ``from``; a file without one is a one-line
    ValueError that says what to pass."""
    import dataclasses

    from cifar10_hour import Recipe, check_recipe

    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--recipe-from {path}: cannot read it as JSON ({e})") from None
    d = d if isinstance(d, dict) else {}
    if "grid" in d and "winner" in d:
        w = d["winner"]
        if w is None or str(w) not in d["grid"]:
            raise ValueError(f"--recipe-from {path}: the recipe search has no winner yet (its "
                             "finals have not finished); wait for it, or pass a saved "
                             "network's JSON (benchmarks/models/cifar10-hour.json)")
        fields, src = dict(d["grid"][str(w)]), f"the winner of the recipe search (grid recipe " \
                                                 f"({w}) of `{path.name}`)"
    elif isinstance(d.get("recipe"), dict):
        r, cfg = d["recipe"], d.get("config") or {}
        if "loss" not in r or "lr" not in r:
            raise ValueError(f"--recipe-from {path}: its recipe records no loss or lr")
        norm = r.get("normalisation")
        if norm is None:
            std = cfg.get("std") or d.get("std") or ()
            norm = "center" if std and all(float(v) == 1.0 for v in std) else "std"
        fields = {"family": d.get("family") or cfg.get("layer") or FAMILY, "norm": norm,
                  "loss": r["loss"], "optimizer": r.get("optimizer", "adam"),
                  "lr": float(r["lr"]), "weight_decay": float(r.get("weight_decay", 0.0)),
                  "epsilon_ramp": float(r.get("epsilon_ramp", 0.0)),
                  "amp": bool(r.get("amp", False))}
        src = f"the recipe of the saved network `{path.name}`"
    else:
        raise ValueError(f"--recipe-from {path}: neither a cifar10_hour result ('grid', "
                         "'winner') nor a saved network's JSON ('recipe')")
    try:
        rec = Recipe(**fields)
        check_recipe(dataclasses.replace(rec, amp=False))  # bf16: recipe_amp() decides
    except (TypeError, ValueError) as e:
        raise ValueError(f"--recipe-from {path}: {e}") from None
    return {**dataclasses.asdict(rec), "text": rec.text(), "source": str(path), "from": src}


def recipe_amp(rec: dict, device: str = "cpu") -> tuple[bool, str | None]:
    """(bf16 autocast used, why not where the recipe asks for it and ``device`` refuses it)."""
    if not rec["amp"]:
        return False, None
    from onelip.train.config import bf16_support

    ok, why = bf16_support(device)
    return (True, None) if ok else (False, f"the recipe's bf16 is not used here ({why}): "
                                           "every network trains in float32")


def init_bound(name: str, model, sample) -> tuple[float, str]:
    """(L, where it comes from): the certified bound of a freshly built network that a
    margin-aware loss is given. onelip: ``onelip.certify.lipschitz_bound`` (as
    ``cifar10_hour.py``); a peer: this benchmark's certificate (``benchmarks/_certify.py``,
    L_body · ‖W_last‖₂ in eval mode on ``sample``), the bound its figures are certified with."""
    import torch
    import torch.nn.utils.parametrize as P

    if name == ONELIP:
        from onelip import certify

        return (float(certify.lipschitz_bound(model)),
                "onelip.certify.lipschitz_bound at initialisation (as cifar10_hour.py)")
    was_training = model.training
    model.eval()
    with torch.no_grad(), P.cached():
        body, w, _ = split_head(model)
        l_body, _ = certified_body_bound(body, sample)
        w_norm = float(torch.linalg.matrix_norm(w.double(), ord=2))
    model.train(was_training)
    return (l_body * w_norm, "the benchmark's certified bound at initialisation "
                             "(benchmarks/_certify.py: L_body · ‖W_last‖₂)")


def baseline_summary(path: Path) -> dict | None:
    """Per network, the loss and validation figures of a previous ``cifar10.json`` and the
    recipe it trained with; a ``--recipe-from`` run's own baseline is carried over (None if
    it has none)."""
    d = json.loads(Path(path).read_text())
    if d.get("recipe"):
        b = d.get("baseline")
        return None if b is None else dict(b, carried_from=str(path))
    nets = {}
    for n, r in d.get("candidates", {}).items():
        row = {"title": r.get("title", TITLES.get(n, n)), "loss": r.get("loss", d.get("loss"))}
        if "error" in r:
            row["error"] = r["error"]
        else:
            row.update({k: r.get(k) for k in ("clean", "certified", "epochs_done",
                                              "images_per_second", "predicted_classes")})
        nets[n] = row
    sweep = d.get("sweep")
    return {"path": str(path), "command": d.get("command"), "written": d.get("written"),
            "budget_s": d.get("budget_s"), "loss": d.get("loss"), "lr": d.get("lr"),
            "train_limit": (d.get("args") or {}).get("train_limit"),
            "recipe_text": f"Adam lr {d.get('lr', 1e-3):g}, Normalize(mean, std), onelip in "
                           "OrthoConv2d, no weight decay, no ε ramp, float32, one loss for all "
                           f"(`{d.get('loss')}`"
                           + (", chosen on onelip's sweep)" if sweep else ")"),
            "networks": nets}


def default_baseline(args) -> Path | None:
    """``--baseline``, else ``<out>/cifar10.json``, else the committed results file."""
    if args.baseline is not None:
        return None if str(args.baseline) == "none" else args.baseline
    for p in (args.out / "cifar10.json", REPO / "benchmarks" / "results" / "cifar10.json"):
        if p.exists():
            return p
    return None


def prepare_recipe(args) -> dict:
    """Everything a ``--recipe-from`` run fixes before training: the recipe, bf16, the loss
    specs of each network's sweep, the baseline (read now, before the results file is
    overwritten, and copied to ``cifar10_before_recipe.json`` when it is that file)."""
    import shutil

    from cifar10_hour import build_recipe_loss

    try:
        rec = load_recipe(args.recipe_from)
    except ValueError as e:
        raise SystemExit(f"[cifar10] {e}") from None
    amp, amp_note = recipe_amp(rec)
    bpath = default_baseline(args)
    base = None
    if bpath is not None:
        try:
            base = baseline_summary(bpath)
        except (OSError, ValueError) as e:
            raise SystemExit(f"[cifar10] --baseline {bpath}: cannot read it ({e}); pass "
                             "another previous cifar10.json or --baseline none") from None
        keep = args.out / "cifar10_before_recipe.json"
        if base is not None and "carried_from" not in base and not keep.exists() \
                and Path(bpath).resolve() == (args.out / "cifar10.json").resolve():
            shutil.copyfile(bpath, keep)
            base["kept_as"] = str(keep)
    if args.peer_losses:
        specs = [s.strip() for s in args.peer_losses.split(";") if s.strip()]
    else:
        specs = [rec["loss"], (base or {}).get("loss") or BASELINE_LOSS]
    specs = list(dict.fromkeys(specs))
    for spec in specs:
        try:
            build_recipe_loss(spec, 1.0)
        except (ValueError, TypeError) as e:
            raise SystemExit(f"[cifar10] --peer-losses {spec!r}: {e}") from None
    return {"recipe": rec, "amp": amp, "amp_note": amp_note, "losses": specs,
            "baseline": base, "baseline_path": None if bpath is None else str(bpath)}


def job_recipe(prep: dict) -> dict:
    """What a worker needs of the recipe (bf16 as it will be used)."""
    r = prep["recipe"]
    return {k: r[k] for k in ("family", "norm", "optimizer", "weight_decay",
                              "epsilon_ramp")} | {"amp": prep["amp"]}


def run_peer_sweep(args, prep: dict, names: list[str], tmp: Path) -> tuple[dict, dict | None]:
    """Each network trained ``--sweep-budget`` with each loss spec, the rule per network:
    ({network: its loss or None when every run failed}, the sweep's record or None when
    there is a single spec)."""
    specs, lr = prep["losses"], prep["recipe"]["lr"]
    if len(specs) == 1:
        return {n: specs[0] for n in names}, None
    sb = parse_duration(args.sweep_budget)
    jobs = [{"network": n, "loss": s, "lr": lr, "budget_s": sb, "role": "sweep", "attack": 0,
             "label": f"sweep {n} {s}", "recipe": job_recipe(prep)}
            for n in names for s in specs]
    rows = run_jobs(args, jobs, tmp)
    losses, per = {}, {}
    for n in names:
        mine = [r for r in rows if r["network"] == n]
        pick = choose(mine) if any("error" not in r for r in mine) else None
        losses[n] = pick["loss"] if pick else None
        per[n] = {"rows": [{k: v for k, v in r.items() if k not in ("layers", "history")}
                           for r in mine], "chosen": losses[n]}
        print(f"[cifar10] sweep {n}: " + (f"chose {losses[n]}" if pick
                                          else "every run failed"), flush=True)
    return losses, {"budget_s": sb, "clock": "wall", "jobs": args.jobs,
                    "threads": args.threads, "losses": specs, "networks": per,
                    "rule": " ".join(choose.__doc__.split())}


# ==== targets ===============================================================================


def better_peer(cands: dict):
    """The peer with the higher cert@36/255 (then clean accuracy), among the peers that predict
    more than one class if any does (a constant classifier is certified at every radius)."""
    peers = [p for p in PEERS if p in cands and "error" not in cands[p]]
    informative = [p for p in peers if cands[p].get("predicted_classes", 2) > 1]
    peers = informative or peers
    if not peers:
        return None
    return max(peers, key=lambda p: (cands[p]["certified"]["36"], cands[p]["clean"]))


def targets(cands: dict) -> list[dict]:
    rows = []
    o = cands.get(ONELIP)
    p = better_peer(cands)
    if o is None or "error" in o or p is None:
        return [{"target": "CPU, same budget: onelip cert@36/255 >= the better peer's + 3 "
                           "points at matched clean accuracy", "met": False,
                 "text": "not measured (onelip or both peers missing from this run)"}]
    r = cands[p]
    gain = o["certified"]["36"] - r["certified"]["36"]
    dclean = o["clean"] - r["clean"]
    matched = dclean >= -MATCHED_CLEAN_TOL
    met = matched and gain >= TARGET_CERT_GAIN
    if met:
        text = (f"met: onelip {_pct(o['certified']['36'])} vs {TITLES[p]} "
                f"{_pct(r['certified']['36'])} certified at 36/255 ({gain * 100:+.1f} points), "
                f"clean {_pct(o['clean'])} vs {_pct(r['clean'])}")
    else:
        why = []
        if gain < TARGET_CERT_GAIN:
            why.append(f"certified accuracy at 36/255 is {gain * 100:+.1f} points against "
                       f"{TITLES[p]} ({_pct(o['certified']['36'])} vs "
                       f"{_pct(r['certified']['36'])}), {(TARGET_CERT_GAIN - gain) * 100:.1f} "
                       "points short of +3")
        if not matched:
            why.append(f"clean accuracy is not matched: onelip {_pct(o['clean'])} vs "
                       f"{_pct(r['clean'])} ({dclean * 100:+.1f} points, more than 1 below)")
        text = "not met: " + "; ".join(why)
    rows.append({"target": "CPU, same budget: onelip cert@36/255 >= the better peer's + 3 "
                           "points at matched clean accuracy (within 1 point)",
                 "met": met, "text": text, "better_peer": p, "gain_points": gain * 100,
                 "clean_diff_points": dclean * 100})
    return rows


def ratios(cands: dict) -> dict | None:
    o, p = cands.get(ONELIP), better_peer(cands)
    if o is None or p is None or "error" in o:
        return None
    r = cands[p]

    def q(a, b):
        return a / b if b else None

    return {"peer": p, "clean_matched": o["clean"] - r["clean"] >= -MATCHED_CLEAN_TOL,
            "certified@36": q(o["certified"]["36"], r["certified"]["36"]),
            "certified@72": q(o["certified"]["72"], r["certified"]["72"]),
            "clean": q(o["clean"], r["clean"]),
            "images_per_second": q(o["images_per_second"], r["images_per_second"]),
            "peak_rss": q(o["peak_rss_mb"], r["peak_rss_mb"]),
            "epochs": q(o["epochs_done"], r["epochs_done"])}


# ==== reports ===============================================================================


def machine_info(args) -> dict:
    import torch

    gpu = None
    if args.device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(args.device))
    return _machine_info(device=args.device, gpu=gpu)


def _machine_line(m: dict) -> str:
    return (f"{m['cpu']} ({m['cpu_count']} CPUs), {m['threads']} torch thread(s) per network, "
            f"device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, torch "
            f"{m['torch']}, Python {m['python']}, deel-torchlip {m['deel-torchlip']}, "
            f"orthogonium {m['orthogonium']}, onelip `{m['onelip_git']}`")


def sweep_markdown(sweep: dict) -> list[str]:
    L = ["## Loss chosen on the validation split (the sweep)", "",
         f"The onelip network trained {fmt_s(sweep['budget_s'])} with each setting "
         f"({sweep['jobs']} at a time, {sweep['threads']} thread each), evaluated on the "
         f"{DATA_NAME} validation split:", "",
         "| loss | lr | epochs | val clean | cert@36 | cert@72 | cert@108 | cert@255 |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sweep["rows"]:
        if "error" in r:
            L.append(f"| `{r['loss']}` | {r['lr']:g} | failed ({r['error']}) | | | | | |")
            continue
        mark = " **(chosen)**" if (r["loss"], r["lr"]) == (sweep["chosen"]["loss"],
                                                          sweep["chosen"]["lr"]) else ""
        c = r["certified"]
        L.append(f"| `{r['loss']}`{mark} | {r['lr']:g} | {r['epochs_done']:.2f} | "
                 f"{_pct(r['clean'])} | " + " | ".join(_pct(c[str(e)]) for e in EPS255) + " |")
    L += ["", f"Rule: {sweep['rule']} The chosen loss and learning rate are then used for all "
          "three networks (the same recipe for all).", "",
          "Loss specs: `ce:tau=T` = onelip TauCrossEntropyLoss(T) (cross-entropy of T·logits); "
          "`hinge:m=M` = onelip MulticlassHingeLoss(M, mode='top2'), max(0, M − (f_y − max_j "
          "f_j)); `hkr:alpha=A,m=M` = MulticlassHKRLoss(A, M).", ""]
    return L


def onelip_conv(result: dict) -> str:
    """onelip's convolutions as the Networks section names them."""
    fam = (result.get("recipe") or {}).get("family", FAMILY)
    if fam == FAMILY:
        return "`OrthoConv2d` (zero padding)"
    return f"`{title_of(ONELIP, fam)[len('onelip ('):-1]}` (the recipe's family `{fam}`)"


def recipe_markdown(result: dict) -> list[str]:
    """The "Recipe" section of a ``--recipe-from`` run: where it came from, what it sets, each
    network's loss and the L its margin-aware loss was given."""
    rc, cands = result["recipe"], result["candidates"]
    norm = ("`center`: Normalize(mean, 1), inputs centred, not scaled (bound 1)"
            if rc["norm"] == "center" else
            f"`std`: Normalize(mean, std) (bound 1/min σ = {1 / min(result['std']):.4f})")
    wd = f", weight decay {rc['weight_decay']:g}" if rc["weight_decay"] else ", no weight decay"
    ramp = (f"the ε ramp over the first {100 * rc['epsilon_ramp']:g} % of the budget (a "
            "margin-aware loss's ε grows linearly from 0; none for a loss without an ε)"
            if rc["epsilon_ramp"] else "no ε ramp")
    amp = ("bf16 autocast of the forward" if rc["amp_used"] else
           (rc["amp_note"] if rc["amp"] else "float32"))
    fam = ("the onelip network keeps `OrthoConv2d`" if rc["family"] == FAMILY else
           f"the onelip network is built from the recipe's layer family `{rc['family']}` "
           f"({onelip_conv(result).split(' ')[0]}), so its row changes its layers as well as "
           "its recipe against the baseline")
    L = ["## Recipe (issue 21: the one-hour benchmark's, given to every network)", "",
         f"From {rc['from']} (`{rc['source']}`): {rc['text']}. It sets, for every network: the "
         f"input normalisation {norm}; the optimiser `{rc['optimizer']}`, lr {rc['lr']:g}{wd}, "
         f"one-cycle over the budget; {ramp}; {amp}; {fam}. Batch, clipping, augmentation, "
         "the budget, its clock (wall) and the threads are this benchmark's, as before. "
         + ("The loss is each network's own: each network's sweep tries every spec of `"
            + "; ".join(result["peer_sweep"]["losses"]) + "` (below) and the rule picks."
            if result.get("peer_sweep") else
            "The loss: one spec given (`--peer-losses`), every network's, no sweep."), "",
         "| network | loss (its pick) | resolved | ε ramp | L given to the loss | that L is |",
         "|---|---|---|---:|---:|---|"]
    for n, r in cands.items():
        if "error" in r:
            L.append(f"| {title_of(n, rc['family'])} | `{r.get('loss') or '—'}` | failed "
                     f"({r['error']}) | | | |")
            continue
        vals = ", ".join(f"{k} {v:.4g}" for k, v in (r.get("loss_values") or {}).items())
        name, _, opts = str(r["loss"]).partition(":")
        margin = name in ("emma", "la") or (name == "offset-ce" and "offset" not in opts)
        L.append(f"| {r['title']} | `{r['loss']}` | {r.get('loss_class', '')} {vals} | "
                 f"{r.get('epsilon_ramp', 0):g} | "
                 + (f"{r['lipschitz_at_init']:.4f} | {r['lipschitz_at_init_from']}"
                    if margin else "— | (the loss takes no L)") + " |")
    L += ["", f"Rule per network: {result['loss_rule']}", ""]
    return L


def peer_sweep_markdown(result: dict) -> list[str]:
    sw = result["peer_sweep"]
    L = ["## Each network's loss, chosen on the validation split", "",
         f"Each network trained {fmt_s(sw['budget_s'])} ({sw['clock']} clock, as every budget "
         f"here; {sw['jobs']} run(s) at a time, {sw['threads']} thread each) with each loss of "
         "`" + "; ".join(sw["losses"]) + f"` and the recipe above, evaluated on the {DATA_NAME} "
         "validation split:", "",
         "| network | loss | epochs | val clean | cert@36 | cert@72 | cert@108 | cert@255 | "
         "L at init |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, d in sw["networks"].items():
        for r in d["rows"]:
            if "error" in r:
                L.append(f"| {title_of(n, result['recipe']['family'])} | `{r['loss']}` | "
                         f"failed ({r['error']}) | | | | | | |")
                continue
            mark = " **(chosen)**" if r["loss"] == d["chosen"] else ""
            one = " (one class)" if r.get("predicted_classes") == 1 else ""
            c = r["certified"]
            L.append(f"| {r['title']} | `{r['loss']}`{mark} | {r['epochs_done']:.2f} | "
                     f"{_pct(r['clean'])}{one} | " + " | ".join(_pct(c[str(e)]) for e in EPS255)
                     + f" | {_f(r.get('lipschitz_at_init'))} |")
    L += ["", f"Rule: {sw['rule']} Each network's headline run trains with its own pick.", ""]
    return L


def before_after_markdown(result: dict) -> list[str]:
    """Recipe and layers apart: each network's figures under the baseline's recipe beside
    this run's."""
    b, cands = result.get("baseline"), result["candidates"]
    L = ["## Recipe and layers apart: the previous recipe against the one-hour recipe", ""]
    if not b:
        return L + ["No baseline run to compare with (`--baseline none`, or no previous "
                    "`cifar10.json`).", ""]
    same = b.get("budget_s") == result["budget_s"] and \
        (b.get("train_limit") or 0) == (result["args"].get("train_limit") or 0)
    L += [f"Before: `{b.get('command')}` ({b.get('written')}; "
          + (f"its figures carried over from `{b['carried_from']}`; " if b.get("carried_from")
             else "")
          + f"{fmt_s(b['budget_s']) if b.get('budget_s') else '?'} per network): "
          f"{b['recipe_text']}. After: this run, the recipe above. "
          + ("The same budget and data." if same else
             "**Not the same budget or training data** (a smoke run?): the columns do not "
             "compare.")
          + " Down a column the layers differ under one recipe; along a row the recipe "
          "differs for the same layers"
          + ("" if result["recipe"]["family"] == FAMILY else
             f" (onelip's row also changes its layers: OrthoConv2d → "
             f"{onelip_conv(result).split('`')[1]})") + ".", "",
          "| network | before: loss | epochs | clean | cert@36 | cert@72 | after: loss | epochs | "
          "clean | cert@36 | cert@72 | Δ clean | Δ cert@36 |",
          "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n, r in cands.items():
        o = b["networks"].get(n)
        def ep(x):
            return "—" if x.get("epochs_done") is None else f"{x['epochs_done']:.2f}"

        before = (["—"] * 5 if o is None else
                  [f"`{o.get('loss')}`", "", f"failed ({o['error']})", "", ""] if "error" in o
                  else [f"`{o['loss']}`", ep(o), _pct(o["clean"]), _pct(o["certified"]["36"]),
                        _pct(o["certified"]["72"])])
        after = ([f"`{r.get('loss')}`", "", f"failed ({r['error']})", "", ""] if "error" in r
                 else [f"`{r['loss']}`", ep(r), _pct(r["clean"]), _pct(r["certified"]["36"]),
                       _pct(r["certified"]["72"])])
        both = o is not None and "error" not in o and "error" not in r
        delta = ([f"{100 * (r['clean'] - o['clean']):+.1f}",
                  f"{100 * (r['certified']['36'] - o['certified']['36']):+.1f}"]
                 if both else ["—", "—"])
        title = r.get("title") or title_of(n, result["recipe"]["family"])
        if o is not None and o.get("title") and o["title"] != title:
            title = f"{o['title']} → {title}"
        L.append("| " + " | ".join([title, *before, *after, *delta]) + " |")
    L += ["", "Δ in points. Every figure on the validation split; a network that predicts "
          "one class everywhere is a constant classifier (its certified accuracy is that "
          "class's share).", ""]
    speed = machine_speed_note(b, cands, result["recipe"]["family"])
    return L + ([speed, ""] if speed else [])


def machine_speed_note(b: dict, cands: dict, family: str) -> str | None:
    """A wall-clock budget buys what the machine gives: when a network whose layers did not
    change trained at another speed before, say by how much (the same budget then bought
    that ratio of epochs, and the "Δ" columns mix recipe and machine)."""
    ratios = []
    for n, r in cands.items():
        o = b["networks"].get(n) or {}
        same_layers = n != "onelip" or family == FAMILY
        if (same_layers and "error" not in r and "error" not in o
                and o.get("images_per_second") and r.get("images_per_second")):
            ratios.append((r.get("title") or n, o["images_per_second"], r["images_per_second"]))
    if not ratios:
        return None
    parts = [f"{t} {a:.0f} → {c:.0f} images/s ({c / a:.2f}×)" for t, a, c in ratios]
    worst = min(c / a for _, a, c in ratios)
    if 0.8 <= worst and max(c / a for _, a, c in ratios) <= 1.25:
        return ("Training speed of the unchanged layers, before → after: " + "; ".join(parts)
                + ": the same machine speed, within 25 %.")
    return ("**The machine differs.** Training speed of the unchanged layers, before → after: "
            + "; ".join(parts) + ". The same wall-clock budget bought that ratio of epochs, "
            "so the Δ columns mix the recipe with the machine's speed; down a column (one run, "
            "one machine) the comparison holds.")


def write_markdown(path: Path, result: dict) -> None:
    cands, a = result["candidates"], result["args"]
    ok = {n: r for n, r in cands.items() if "error" not in r}
    rc = result.get("recipe")
    L = [f"# {DATA_NAME}: certified accuracy, onelip vs orthogonium and deel-torchlip "
         "(ConvNet XS, same CPU budget" + (", the one-hour recipe)" if rc else ")"), "",
         f"Written by `{result['command']}` on {result['written']}, in "
         f"{result['seconds'] / 60:.0f} min. Every figure is on the **{DATA_NAME} validation "
         f"split** ({a['val_size']} of the 50,000 training images, fixed seed "
         f"{a['split_seed']}; the test split is never read), in pixel space (ε = k/255).", ""]
    if a.get("train_limit") or result["budget_s"] < 600:
        L += [f"**Smoke run** (train limit {a.get('train_limit') or 'none'}, budget "
              f"{fmt_s(result['budget_s'])}): a pipeline check, not the benchmark.", ""]
    if rc:
        L += recipe_markdown(result)
    L += ["## Results", "",
          f"Each network trained for {fmt_s(result['budget_s'])} of wall-clock time with "
          f"{a['threads']} torch thread(s), {a['jobs']} network(s) at a time; "
          + ("the recipe above, each network with its own loss" if rc else
             f"loss `{result['loss']}`, Adam lr {result['lr']:g}")
          + f", one-cycle over the budget, batch "
          f"{a['batch_size']}, gradient clipping at {a['clip']:g}, augmentation crop (padding "
          "4) + flip.", "",
          f"| {DATA_NAME}, validation | params | epochs | images/s (training) | peak RSS MB | "
          "clean | cert@36/255 | cert@72/255 | cert@108/255 | cert@255/255 | Lipschitz bound "
          "(certified) | attack violations |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in cands.items():
        if "error" in r:
            L.append(f"| {title_of(n, (rc or {}).get('family', FAMILY))} | failed "
                     f"({r['error']}) |" + " |" * 11)
            continue
        c = r["certified"]
        att = r.get("attack")
        L.append(f"| {r['title']} | {r['params']:,} | {r['epochs_done']:.2f} | "
                 f"{r['images_per_second']:.0f} | {r['peak_rss_mb']:.0f} | {_pct(r['clean'])} | "
                 + " | ".join(_pct(c[str(e)]) for e in EPS255)
                 + f" | {r['lipschitz_upper']:.3f} | "
                 + (f"{att['violations']} / {att['found']}" if att else "—") + " |")
    const = [TITLES[n] for n, r in ok.items() if r.get("predicted_classes", 2) <= 1]
    if const:
        L += ["", f"**{', '.join(const)}: predicts a single class on the whole validation "
              "split** (a constant classifier: its certified accuracy at every ε is that class's "
              "share, not robustness learned)."]
    L += ["", "Certificate (every row, the same code, `benchmarks/_certify.py`): radius = "
          "min_j (f_y − f_j) / (L_body · ‖w_y − w_j‖), L_body the product of per-layer bounds "
          "certified from the operator each layer applies in eval mode (convolutions: the "
          "certified norm of their symbol, zero padding bounded, circular padding exact; "
          "Normalize: max 1/σ; parameter-free layers: 1); valid for the whole network, in pixel "
          "space. 'Lipschitz bound' = L_body · ‖W_last‖₂ (Normalize's 1/min σ included). "
          "'images/s' = augmented training images per second of training wall time; 'peak "
          "RSS' = `resource.getrusage` maxrss of the network's process (the 150 MB uint8 data "
          "set included; after loading the data: "
          + ", ".join(f"{r.get('title') or TITLES[n]} {r['peak_rss_after_data_mb']:.0f} MB"
                      for n, r in ok.items()) + "). 'attack violations' = points of the first "
          f"{a['attack']} whose adversarial (found / of those attacked successfully) is closer "
          "than their certificate: must be 0.", ""]
    if rc:
        L += before_after_markdown(result)
    rt = result.get("ratios")
    if rt:
        L += ["## onelip against the better peer", "",
              " ".join(better_peer.__doc__.split()) + f" Here: {TITLES[rt['peer']]}; clean "
              "accuracy "
              + ("matched (onelip within 1 point or above)." if rt["clean_matched"]
                 else "**not matched** (onelip more than 1 point below)."),
              "", "| ratio onelip / peer | cert@36 | cert@72 | clean | images/s | peak RSS | "
              "epochs |", "|---|---:|---:|---:|---:|---:|---:|",
              "| " + DATA_NAME + " | " + " | ".join(
                  _f(rt[k], "{:.2f}") for k in ("certified@36", "certified@72", "clean",
                                                  "images_per_second", "peak_rss", "epochs"))
              + " |", ""]
    L += ["## Targets (issue 11)", ""]
    for t in result["targets"]:
        L.append(f"- **{'MET' if t['met'] else 'NOT MET'}** — {t['target']}: {t['text']} "
                 f"({DATA_NAME}, validation split).")
    L += ["- GPU targets: see `cifar10_gpu.md` (the GPU protocol, `--device cuda`).", ""]
    L += ["## Each library's own certificate", "",
          "| network | certificate | assumes L | certified L it needs | valid | cert@36 | "
          "cert@72 | attack violations of the claim |", "|---|---|---:|---:|---|---:|---:|---:|"]
    for n, r in ok.items():
        cl, att = r["claim"], r.get("attack")
        L.append(f"| {r['title']} | {cl['certificate']} | {cl['assumed_bound']:.4f} | "
                 f"{cl['certified_bound_needed']:.4f} | {'yes' if cl['valid'] else '**no**'} | "
                 f"{_pct(cl['certified']['36'])} | {_pct(cl['certified']['72'])} | "
                 f"{att['violations_of_library_claim'] if att else '—'} |")
    L += ["", "Whole-network radius margin/(√2 · Lipschitz bound), for comparison: " + "; ".join(
        f"{r['title']}: cert@36 {_pct(r['certified_global']['36'])}, cert@72 "
        f"{_pct(r['certified_global']['72'])}" for r in ok.values()) + ".", ""]
    if result.get("sweep"):
        L += sweep_markdown(result["sweep"])
    if result.get("peer_sweep"):
        L += peer_sweep_markdown(result)
    L += ["## Networks", "",
          "ConvNet XS of Prach et al. (CVPR 2024), width 16: Normalize (per-channel mean/std of "
          "the training split: mean " + ", ".join(f"{v:.4f}" for v in result["mean"])
          + "; std " + ", ".join(f"{v:.4f}" for v in result["std"]) + f"; bound "
          f"{1 / min(result['std']):.4f}"
          + ("; **this run: centred only, std 1, bound 1**, the recipe's normalisation"
             if rc and rc["norm"] == "center" else "")
          + "), zero-channel padding 3 → 16, 1×1 convolution + activation, 5 blocks × "
          "(5 convolutions + activation; 3×3, the last block 1×1) each "
          "ending in first-channels (halving) + 2×2 invertible downsampling, flatten (512), "
          "512 → 10 dense head. The parameter-free layers are onelip's in all three networks.",
          "", f"- onelip: {onelip_conv(result)}, `MaxMin`, `OrthoLinear`; "
          "`retract_()` after each step.",
          "- orthogonium: `AdaptiveOrthoConv2d` (AOC, circular padding, its default), its "
          "`MaxMin`, its `OrthoLinear`.",
          "- deel-torchlip: `SpectralConv2d` (zero padding), `GroupSort2`, `SpectralLinear`.",
          ""]
    L.append("Per-layer certified bounds (those ≠ 1 or of learned layers, product = L_body):")
    L.append("")
    for n, r in ok.items():
        learned = [row for row in r["layers"] if abs(row["bound"] - 1) > 1e-5]
        L.append(f"- **{r['title']}**: L_body = {r['L_body']:.4f}; layers with a bound "
                 "≠ 1: " + (", ".join(f"{row['layer']} {row['bound']:.4f}" for row in learned)
                            or "none") + f"; ‖W_last‖₂ = {r['last_layer_norm']:.4f}.")
    L += ["", "## Time and machine", "",
          "| network | budget s | train s | steps | augmentation share | grad norm (median) | "
          "clipped | eval s | load avg start → end | saved |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for n, r in ok.items():
        L.append(f"| {r['title']} | {r['budget_seconds']:.0f} | {r['train_seconds']:.0f} | "
                 f"{r['steps']} | {_pct(r.get('augment_fraction'))} | "
                 f"{_f(r.get('grad_norm_median'), '{:.3g}')} | {_pct(r['clipped_fraction'])} | "
                 f"{r['eval_seconds']:.0f} | {r['load_average_start']:.1f} → "
                 f"{r['load_average_end']:.1f} | "
                 + (f"`{Path(r['saved']).name}`.safetensors/.json" if r.get("saved") else "—")
                 + " |")
    d = result["data"]
    L += ["", f"Data: {d['images']} training images of `{d['root']}` read in "
          f"{d['load_seconds']:.1f} s ("
          + ("decoded: no cache yet" if d["decoded"] else "from the cache") + ")"
          + (f", {d['reload_seconds']:.2f} s from the cache" if d.get("reload_seconds") else "")
          + (f"; cold decode into a fresh cache: {d['cold_decode_seconds']:.1f} s"
             if d.get("cold_decode_seconds") else "")
          + " (issue 11's targets: < 60 s decoding, < 2 s from the cache).", ""]
    seen = set()
    for r in ok.values():
        line = _machine_line(r["machine"])
        if line not in seen:
            seen.add(line)
            L.append(f"- Machine: {line}.")
    L.append("")
    path.write_text("\n".join(L))


# ==== the CPU benchmark (orchestrator) ======================================================


def data_summary(args) -> dict:
    """Load once in the parent (builds the cache before the workers start), timed."""
    cache = Path(args.cache_dir) if args.cache_dir else None
    from onelip.data.images import _default_cache_dir

    cdir = cache or _default_cache_dir()
    before = set(cdir.glob("*.npz")) if cdir.is_dir() else set()
    x, y, classes, load_s = load_images(args)
    after = set(cdir.glob("*.npz")) if cdir.is_dir() else set()
    _, _, _, reload_s = load_images(args)
    d = {"root": str(train_root(Path(args.data))), "images": int(x.shape[0]),
         "classes": classes, "load_seconds": load_s, "decoded": after != before,
         "reload_seconds": reload_s, "cache_dir": str(cdir)}
    if args.time_decode:
        from onelip.data.images import read_image_folder

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            read_image_folder(train_root(Path(args.data)), cache_dir=tmp, progress=False)
            d["cold_decode_seconds"] = time.perf_counter() - t0
    xtr, _, xva, _ = split(x, y, args)
    mean, std = channel_stats(xtr)
    d.update(train=int(xtr.shape[0]), val=int(xva.shape[0]), mean=mean, std=std)
    return d


def run_benchmark(args) -> int:
    import torch

    t0 = time.perf_counter()
    # the recipe and the baseline first: a bad file stops here, before any data is read
    prep = prepare_recipe(args) if args.recipe_from else None
    d = data_summary(args)
    print(f"[cifar10] {DATA_NAME}: {d['images']} images in {d['load_seconds']:.1f} s "
          f"(cache {'built' if d['decoded'] else 'hit'}; again {d['reload_seconds']:.2f} s); "
          f"train {d['train']}, val {d['val']}; mean {[round(v, 4) for v in d['mean']]}, std "
          f"{[round(v, 4) for v in d['std']]}; torch {torch.__version__}", flush=True)
    budget = parse_duration(args.budget) or 1200.0
    sweep = peer_sweep = None
    loss, lr = args.loss or DEFAULT_LOSS, args.lr
    mdir = models_dir(args)
    names = [n for n in NETS if n in args.only]
    if prep:
        lr = prep["recipe"]["lr"]
        print(f"[cifar10] recipe from {args.recipe_from}: {prep['recipe']['text']}"
              + (f" ({prep['amp_note']})" if prep["amp_note"] else "") + "; losses swept: "
              + "; ".join(prep["losses"]) + "; baseline: " + str(prep["baseline_path"]),
              flush=True)
    with tempfile.TemporaryDirectory(prefix="cifar10-jobs-") as tmp:
        if prep:
            losses, peer_sweep = run_peer_sweep(args, prep, names, Path(tmp))
        if args.sweep:
            sb = parse_duration(args.sweep_budget)
            specs = [s for s in args.sweep_losses.split(";") if s]
            lrs = [float(v) for v in args.sweep_lrs.split(",")] if args.sweep_lrs else [args.lr]
            jobs = [{"network": ONELIP, "loss": s, "lr": r, "budget_s": sb, "role": "sweep",
                     "attack": 0, "label": f"sweep {s} lr {r:g}"} for s in specs for r in lrs]
            rows = run_jobs(args, jobs, Path(tmp))
            pick = choose(rows)
            loss, lr = pick["loss"], pick["lr"]
            sweep = {"budget_s": sb, "jobs": args.jobs, "threads": args.threads,
                     "rows": [{k: v for k, v in r.items() if k not in ("layers", "history")}
                              for r in rows],
                     "chosen": {"loss": loss, "lr": lr}, "rule": " ".join(choose.__doc__.split())}
            print(f"[cifar10] sweep: chose {loss} (lr {lr:g})", flush=True)
        if not prep:
            losses = {n: loss for n in names}
        jobs = [{"network": n, "loss": losses[n], "lr": lr, "budget_s": budget,
                 "role": "headline", "attack": args.attack, "label": n,
                 "save": str(mdir / f"cifar10-{n}")} for n in names if losses[n]]
        if prep:
            for j in jobs:
                j.update(recipe=job_recipe(prep), recipe_from=prep["recipe"]["source"])
        results = iter(run_jobs(args, jobs, Path(tmp)))
    cands = {n: next(results) if losses[n] else
             {"network": n, "loss": None, "lr": lr, "error": "every sweep run failed"}
             for n in names}
    if prep:  # the loss results files name: onelip's (the GPU protocol reads the baseline's)
        loss = losses.get(ONELIP) or next((v for v in losses.values() if v), None)
    result = {"command": " ".join(["benchmarks/cifar10.py", *args.argv]),
              "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "data_name": DATA_NAME, "args": {k: (str(v) if isinstance(v, Path) else v)
                                               for k, v in vars(args).items()},
              "budget_s": budget, "loss": loss, "lr": lr, "eps_255": list(EPS255),
              "mean": d["mean"], "std": d["std"], "data": d, "sweep": sweep,
              "clock": "wall (time.perf_counter): every budget of this benchmark",
              "candidates": cands, "seconds": time.perf_counter() - t0}
    if prep:
        result.update(recipe=dict(prep["recipe"], amp_used=prep["amp"],
                                  amp_note=prep["amp_note"]),
                      losses=losses, peer_sweep=peer_sweep, baseline=prep["baseline"],
                      loss_rule=" ".join(choose.__doc__.split()))
    result["targets"] = targets(cands)
    result["ratios"] = ratios(cands)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cifar10.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(args.out / "cifar10.md", result)
    for n, r in cands.items():
        print(f"[cifar10] {n}: " + (r["error"] if "error" in r else cert_line(r)))
    for t in result["targets"]:
        print(f"[cifar10] {'MET' if t['met'] else 'NOT MET'}: {t['text']}")
    print(f"[cifar10] wrote {args.out / 'cifar10.json'} and .md; models in {mdir}")
    return 0 if all("error" not in r for r in cands.values()) else 1


# ==== the GPU protocol ======================================================================


def time_steps(model, loss_fn, x, y, *, device: str, steps: int, warmup: int, retract: bool,
               batch_size: int, clip: float, seed: int, batched: bool = True,
               amp: bool = False, compile: bool = False) -> dict:
    """Median / mean time of a full training step (augmentation, forward, backward, clipping,
    Adam, retraction) at ``batch_size``, and of the augmentation alone. ``batched``: the
    forward inside ``onelip.nn.batched_kernel_build`` (as ``onelip.train.fit`` runs it);
    ``amp``: the forward under bf16 autocast of the device's type (logits cast back to float32
    for the loss, as ``train``); ``compile``: the forward through ``torch.compile(model)``
    (its compilation falls in the warm-up steps, which are not timed)."""
    import contextlib

    import torch

    from onelip.data.augment import augment
    from onelip.nn.utils import batched_kernel_build, retract_

    cuda = device.startswith("cuda")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    g = torch.Generator(device=device).manual_seed(seed)
    idx = torch.arange(batch_size, device=device) % x.shape[0]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    forward = torch.compile(model) if compile else model
    dev_type = torch.device(device).type

    def step():
        xb = to_float(augment(x[idx], AUGMENT, generator=g))
        with (batched_kernel_build(model) if batched else contextlib.nullcontext(),
              torch.autocast(device_type=dev_type, dtype=torch.bfloat16) if amp
              else contextlib.nullcontext()):
            out = forward(xb)
        loss = loss_fn(out.float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if retract:
            retract_(model)

    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    aug = []
    for _ in range(max(steps, 5)):
        t = time.perf_counter()
        to_float(augment(x[idx], AUGMENT, generator=g))
        sync()
        aug.append(time.perf_counter() - t)
    ts = sorted(times)
    return {"step_ms_median": 1e3 * ts[len(ts) // 2], "step_ms_mean": 1e3 * sum(ts) / len(ts),
            "step_ms_min": 1e3 * ts[0], "steps": steps, "warmup": warmup, "amp": amp,
            "compile": compile,
            "augment_ms_median": 1e3 * sorted(aug)[len(aug) // 2],
            "peak_gpu_memory_mb": (torch.cuda.max_memory_allocated(device) / 2 ** 20
                                   if cuda else None)}


def run_gpu(args) -> int:
    import torch

    device = args.device
    on_gpu = device.startswith("cuda")
    if not on_gpu:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    x, y, classes, load_s = load_images(args)
    xtr, ytr, xva, yva = split(x, y, args)
    mean, std = channel_stats(xtr)
    loss, loss_from = args.loss, "--loss"
    if loss is None:  # the loss chosen by the CPU benchmark, if it has run
        for prev in (args.out / "cifar10.json", REPO / "benchmarks" / "results" / "cifar10.json"):
            d = json.loads(prev.read_text()) if prev.exists() else {}
            if d.get("recipe"):  # a --recipe-from run: its baseline's loss fits this protocol
                if (d.get("baseline") or {}).get("loss"):  # (Adam, Normalize(mean, std))
                    loss = d["baseline"]["loss"]
                    loss_from = f"{prev} (the loss of its baseline run, Adam / std recipe)"
                    break
            elif d.get("loss"):
                loss, loss_from = d["loss"], str(prev)
                break
        else:
            loss, loss_from = DEFAULT_LOSS, "DEFAULT_LOSS (no cifar10.json yet)"
    lr = args.lr
    xd, yd = xtr.to(device), ytr.to(device)
    steps = args.gpu_steps or (20 if on_gpu else 3)
    warmup = 5 if on_gpu else 1
    names = [n for n in NETS if n in args.only]
    timing: dict = {}
    for n in names:
        for twin in (False, True):
            model = build_network(n, mean, std, seed=args.seed)
            if twin:
                model = plain_twin(model)
            key = f"{n}-plain" if twin else n
            r = time_steps(model, make_loss(loss), xd, yd, device=device, steps=steps,
                           warmup=warmup, retract=(n == ONELIP and not twin),
                           batch_size=args.batch_size, clip=args.clip, seed=args.seed)
            r["params"] = count_params(model)
            timing[key] = r
            print(f"[cifar10-gpu] {key}: step {r['step_ms_median']:.2f} ms (median of "
                  f"{steps}), augmentation {r['augment_ms_median']:.3f} ms", flush=True)
            if n == ONELIP and not twin:  # the same network, kernels built layer by layer
                r1 = time_steps(model, make_loss(loss), xd, yd, device=device, steps=steps,
                                warmup=warmup, retract=True, batch_size=args.batch_size,
                                clip=args.clip, seed=args.seed, batched=False)
                r1["params"] = r["params"]
                timing[f"{n}-per-layer-build"] = r1
                print(f"[cifar10-gpu] {n}-per-layer-build: step {r1['step_ms_median']:.2f} ms",
                      flush=True)
            del model
    timing.update(time_variants(args, loss, xd, yd, mean, std, steps=steps, warmup=warmup))
    train_s = parse_duration(args.gpu_train) or parse_duration(args.budget) or 300.0
    model = build_network(ONELIP, mean, std, seed=args.seed)
    print(f"[cifar10-gpu] training onelip for {train_s:.0f} s on {device}, loss {loss}",
          flush=True)
    tr = train(model, make_loss(loss), xd, yd, budget_s=train_s, batch_size=args.batch_size,
               lr=lr, clip=args.clip, retract=True, device=device, seed=args.seed,
               label="gpu onelip")
    ev = evaluate(ONELIP, model, xva, yva, attack_n=args.attack)
    print(f"[cifar10-gpu] onelip after {tr['epochs_done']:.1f} epochs: {cert_line(ev)}",
          flush=True)
    mdir = models_dir(args)
    save = mdir / ("cifar10-onelip-gpu" if on_gpu else "cifar10-onelip-gpu-protocol-on-cpu")
    save_model(model, save, {
        "network": ONELIP, "width": WIDTH, "mean": mean, "std": std, "classes": classes,
        "data": DATA_NAME, "recipe": {"loss": loss, "lr": lr, "budget_seconds": train_s,
                                      "batch_size": args.batch_size, "clip": args.clip,
                                      "device": device},
        "validation": {k: ev[k] for k in ("clean", "certified", "lipschitz_upper", "val_size")},
        "split": {"val_size": args.val_size, "split_seed": args.split_seed,
                  "train_limit": args.train_limit}, "written_by": "benchmarks/cifar10.py"})
    result = {"command": " ".join(["benchmarks/cifar10.py", *args.argv]),
              "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "data_name": DATA_NAME, "device": device, "on_gpu": on_gpu,
              "machine": machine_info(args), "loss": loss, "loss_from": loss_from, "lr": lr,
              "batch_size": args.batch_size, "timing": timing, "train_budget_s": train_s,
              "train": {k: v for k, v in tr.items() if k != "history"},
              "history": tr["history"], "eval": ev, "saved": str(save),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "data_load_seconds": load_s, "seconds": time.perf_counter() - t0}
    result["targets"] = gpu_targets(result)
    if not on_gpu:  # the protocol ran, but these are not GPU figures: no verdict
        for t in result["targets"]:
            t["met_on_this_device"], t["met"] = t["met"], None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cifar10_gpu.json").write_text(json.dumps(result, indent=1) + "\n")
    write_gpu_markdown(args.out / "cifar10_gpu.md", result)
    for t in result["targets"]:
        print(f"[cifar10-gpu] {verdict(t['met'])}: {t['target']}: {t['text']}")
    print(f"[cifar10-gpu] wrote {args.out / 'cifar10_gpu.json'} and .md")
    return 0


GPU_VARIANTS = ("amp", "compile")


def gpu_variants(args) -> tuple[str, ...]:
    """The step variants to time: ``--gpu-variants`` (default: both on CUDA, none on a CPU,
    where compilation takes minutes and bf16 is refused without native support)."""
    if args.gpu_variants is None:
        return GPU_VARIANTS if args.device.startswith("cuda") else ()
    picked = tuple(v.strip() for v in args.gpu_variants.split(",") if v.strip())
    bad = sorted(set(picked) - set(GPU_VARIANTS))
    if bad:
        raise SystemExit(f"cifar10.py: --gpu-variants {bad}: expected a comma-separated subset "
                         f"of {', '.join(GPU_VARIANTS)}")
    return picked


def time_variants(args, loss, xd, yd, mean, std, *, steps: int, warmup: int) -> dict:
    """onelip's training step and its plain twin's under bf16 autocast (``amp``; where
    :func:`onelip.train.config.bf16_support` allows it) and ``torch.compile`` (``compile``),
    keyed ``onelip-amp``, ``onelip-plain-amp``, ``onelip-compile``, ... A variant that fails
    is recorded with its error (one line), not raised."""
    from onelip.train.config import bf16_support

    out: dict = {}
    for variant in gpu_variants(args):
        if variant == "amp":
            ok, why = bf16_support(args.device)
            if not ok:
                out[f"{ONELIP}-amp"] = {"skipped": why}
                print(f"[cifar10-gpu] amp: skipped ({why})", flush=True)
                continue
        for twin in (False, True):
            model = build_network(ONELIP, mean, std, seed=args.seed)
            if twin:
                model = plain_twin(model)
            key = f"{ONELIP}{'-plain' if twin else ''}-{variant}"
            try:
                r = time_steps(model, make_loss(loss), xd, yd, device=args.device,
                               steps=steps, warmup=warmup + (3 if variant == "compile" else 0),
                               retract=not twin, batch_size=args.batch_size, clip=args.clip,
                               seed=args.seed, amp=variant == "amp",
                               compile=variant == "compile")
            except Exception as exc:  # noqa: BLE001 - a variant's failure is a result
                out[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                print(f"[cifar10-gpu] {key}: failed ({out[key]['error']})", flush=True)
                continue
            r["params"] = count_params(model)
            out[key] = r
            print(f"[cifar10-gpu] {key}: step {r['step_ms_median']:.2f} ms", flush=True)
            del model
    return out


def verdict(met) -> str:
    return "NOT MEASURED (CPU only)" if met is None else ("MET" if met else "NOT MET")


def gpu_targets(res: dict) -> list[dict]:
    t, rows = res["timing"], []
    where = "" if res["on_gpu"] else " (measured on the CPU only: not the GPU target)"
    if ONELIP in t and f"{ONELIP}-plain" in t:
        q = t[ONELIP]["step_ms_median"] / t[f"{ONELIP}-plain"]["step_ms_median"]
        rows.append({"target": f"onelip's training step <= {TARGET_GPU_STEP_RATIO}x its "
                               f"plain-conv twin{where}", "met": q <= TARGET_GPU_STEP_RATIO,
                     "text": f"×{q:.2f} ({t[ONELIP]['step_ms_median']:.2f} vs "
                             f"{t[ONELIP + '-plain']['step_ms_median']:.2f} ms)"})
    if ONELIP in t and ORTHO in t:
        a, b = t[ONELIP]["step_ms_median"], t[ORTHO]["step_ms_median"]
        rows.append({"target": f"onelip's training step faster than orthogonium's{where}",
                     "met": a < b, "text": f"{a:.2f} vs {b:.2f} ms (×{a / b:.2f})"})
    ev = res["eval"]
    met = ev["certified"]["36"] >= PAPER_BEST["cert@36"] and ev["clean"] >= PAPER_BEST["clean"]
    rows.append({"target": f"the {fmt_s(res['train_budget_s'])} run reaches "
                           "the paper's best point (44 % certified at 36/255 with 70 % clean, "
                           f"original CIFAR-10){where}", "met": met,
                 "text": f"{_pct(ev['certified']['36'])} certified at 36/255, "
                         f"{_pct(ev['clean'])} clean ({DATA_NAME}, validation split)"})
    if ONELIP in t:
        share = t[ONELIP]["augment_ms_median"] / t[ONELIP]["step_ms_median"]
        rows.append({"target": f"augmentation < 5 % of a training step{where}",
                     "met": share < 0.05, "text": f"{share * 100:.2f} % "
                     f"({t[ONELIP]['augment_ms_median']:.3f} of "
                     f"{t[ONELIP]['step_ms_median']:.2f} ms)"})
    return rows


def write_gpu_markdown(path: Path, res: dict) -> None:
    m = res["machine"]
    L = [f"# {DATA_NAME}: the GPU protocol (ConvNet XS)", "",
         f"Written by `{res['command']}` on {res['written']}."]
    if not res["on_gpu"]:
        L += ["", f"**Run on the CPU only** (device `{res['device']}`, no GPU at hand): this "
              "checks that the protocol runs end to end; the figures are not GPU figures and "
              "the GPU targets below are **not** measured."]
    L += ["", f"Device: {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}; "
          f"{_machine_line(m)}.", "",
          f"## Training step at batch {res['batch_size']} (augmentation, forward, backward, "
          "clipping, Adam, retraction for onelip)", "",
          "| network | params | step ms (median) | min | ×plain twin | augmentation ms | peak "
          "GPU MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    t = res["timing"]
    for n in NETS:
        for key, title in ((n, TITLES[n]), (f"{n}-per-layer-build",
                                            f"{TITLES[n]}: kernels built layer by layer"),
                           (f"{n}-plain", f"{TITLES[n]}: plain twin")):
            if key not in t:
                continue
            r = t[key]
            ratio = (r["step_ms_median"] / t[f"{n}-plain"]["step_ms_median"]
                     if key != f"{n}-plain" and f"{n}-plain" in t else None)
            L.append(f"| {title} | {r['params']:,} | {r['step_ms_median']:.2f} | "
                     f"{r['step_ms_min']:.2f} | {_f(ratio, '×{:.2f}')} | "
                     f"{r['augment_ms_median']:.3f} | {_f(r['peak_gpu_memory_mb'], '{:.0f}')} |")
    variants = [(k, v) for k, v in t.items()
                if k.startswith(ONELIP) and k.rsplit("-", 1)[-1] in GPU_VARIANTS]
    if variants:
        L += ["", "### bf16 autocast (`amp`) and `torch.compile` (`compile`), float32 as the "
              "reference", "", "| step | ms (median) | × float32 eager of the same network |",
              "|---|---:|---:|"]
        for k, v in variants:
            if "step_ms_median" not in v:
                L.append(f"| {k} | {v.get('skipped') or v.get('error')} | |")
                continue
            base = t.get(f"{ONELIP}-plain" if "-plain-" in k else ONELIP)
            ratio = v["step_ms_median"] / base["step_ms_median"] if base else None
            L.append(f"| {k} | {v['step_ms_median']:.2f} | {_f(ratio, '×{:.2f}')} |")
    ev, tr = res["eval"], res["train"]
    L += ["", "Plain twin: the same network with `nn.Conv2d` / `nn.Linear` of the same shapes, "
          "padding and bias (parameter-free layers kept), trained by the same step.", "",
          f"## onelip trained for {tr['train_seconds']:.0f} s on `{res['device']}`", "",
          f"Loss `{res['loss']}` (from {res['loss_from']}), Adam lr {res['lr']:g}, one-cycle "
          f"over the budget, batch {res['batch_size']}: {tr['epochs_done']:.1f} epochs, "
          f"{tr['images_per_second']:.0f} images/s.", "",
          f"| {DATA_NAME}, validation ({ev['val_size']} images) | clean | cert@36/255 | "
          "cert@72/255 | cert@108/255 | cert@255/255 | Lipschitz bound |",
          "|---|---:|---:|---:|---:|---:|---:|",
          f"| onelip | {_pct(ev['clean'])} | " + " | ".join(
              _pct(ev["certified"][str(e)]) for e in EPS255)
          + f" | {ev['lipschitz_upper']:.3f} |", "",
          "Certified the same way as the CPU benchmark (`benchmarks/_certify.py`, "
          f"`cifar10.md`). The paper's best point is on the original CIFAR-10; ours is "
          f"{DATA_NAME}. Saved: `{Path(res['saved']).name}`.safetensors/.json.", "",
          "## Targets (issue 11)", ""]
    for tg in res["targets"]:
        L.append(f"- **{verdict(tg['met'])}** — {tg['target']}: {tg['text']}.")
    L.append("")
    path.write_text("\n".join(L))


# ==== certify saved networks on another folder ==============================================


def saved_networks(args) -> list[Path]:
    """The saved networks that ``--evaluate-saved`` certifies: the ``cifar10-*.json`` of
    ``--models`` whose network ``--only`` names (by default all of them)."""
    return [jp for jp in sorted(models_dir(args).glob("cifar10-*.json"))
            if json.loads(jp.read_text()).get("network") in args.only]


def run_evaluate_saved(args) -> int:
    """Certify every ``cifar10-*.json`` network of ``--models`` that ``--only`` names on all
    images of ``--data`` (a folder of class sub-folders, e.g. a split the benchmark never
    saw)."""
    import torch

    from onelip.data.images import read_image_folder

    torch.set_num_threads(args.threads)
    out = {}
    for jp in saved_networks(args):
        model, meta = load_saved(jp)
        arr = read_image_folder(Path(args.data), classes=meta["classes"],
                                cache_dir=args.cache_dir)
        x, y = torch.from_numpy(arr.x), torch.from_numpy(arr.y)
        r = evaluate(meta["network"], model, x, y, attack_n=args.attack)
        out[jp.stem] = {k: v for k, v in r.items() if k != "layers"}
        print(f"[cifar10] {jp.stem} on {args.data} ({x.shape[0]} images): {cert_line(r)}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cifar10_saved_{Path(args.data).name}.json"
    path.write_text(json.dumps({"data": str(args.data), "data_name": DATA_NAME,
                                "results": out}, indent=1) + "\n")
    print(f"[cifar10] wrote {path}")
    return 0


# ==== main ==================================================================================


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path,
                   help="image folder: DIR/train/<class>/*.jpg (or DIR/<class>/); only the "
                        "training images are read")
    p.add_argument("--cache-dir", default=None,
                   help="uint8 cache of the decoded images (default: onelip's, "
                        "$ONELIP_CACHE/images or ~/.cache/onelip/images)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--models", type=Path, default=None,
                   help="where the trained networks go (default benchmarks/models with the "
                        "default --out, else <out>/models)")
    p.add_argument("--peers-venv", type=Path,
                   default=Path(os.environ.get("ONELIP_PEERS_VENV", DEFAULT_PEERS_VENV)))
    p.add_argument("--only", default=",".join(NETS),
                   help=f"comma-separated networks among {','.join(NETS)}")
    p.add_argument("--budget", default=None,
                   help="training wall time per network (20m; 30s, 1h, 90 also read). In the "
                        "GPU protocol: the training time when --gpu-train is not given")
    p.add_argument("--sweep", action="store_true",
                   help="choose the loss on the validation split first (see the docstring)")
    p.add_argument("--sweep-budget", default="3m")
    p.add_argument("--sweep-losses", default=";".join(SWEEP_LOSSES),
                   help="';'-separated loss specs (ce:tau=T, hinge:m=M, hkr:alpha=A,m=M)")
    p.add_argument("--sweep-lrs", default=None,
                   help="comma-separated learning rates to sweep too (default: --lr only)")
    p.add_argument("--loss", default=None,
                   help=f"the loss without --sweep (default {DEFAULT_LOSS}; GPU protocol: the "
                        "loss of <out>/cifar10.json or benchmarks/results/cifar10.json if any)")
    p.add_argument("--recipe-from", type=Path, default=None,
                   help="train every network with the recipe of benchmarks/cifar10_hour.py: its "
                        "result file (the winner's recipe) or a saved network's JSON with a "
                        "'recipe' (benchmarks/models/cifar10-hour.json); see the docstring")
    p.add_argument("--peer-losses", default=None,
                   help="with --recipe-from: ';'-separated loss specs each network is swept "
                        "over for --sweep-budget (default: the recipe's loss and the baseline "
                        "run's); one spec: no sweep")
    p.add_argument("--baseline", type=Path, default=None,
                   help="with --recipe-from: the previous run's cifar10.json to put beside the "
                        "new figures (default <out>/cifar10.json, else benchmarks/results/"
                        "cifar10.json, read before it is overwritten); 'none': no comparison")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--threads", type=int, default=1, help="torch threads per network")
    p.add_argument("--jobs", type=int, default=2, help="networks trained at a time")
    p.add_argument("--train-limit", type=int, default=0,
                   help="train on the first N training images (smoke tests); 0: all 45,000")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attack", type=int, default=50,
                   help="attack the first N validation points to check the certificates")
    p.add_argument("--time-decode", action="store_true",
                   help="also time decoding all images into a fresh (temporary) cache")
    p.add_argument("--device", default="cpu",
                   help="cpu (the CPU benchmark) or cuda[:i] (the GPU protocol)")
    p.add_argument("--gpu-checks", action="store_true",
                   help="run the GPU protocol on --device even if it is the CPU")
    p.add_argument("--gpu-variants", default=None,
                   help="GPU protocol: step variants to time beside float32 eager, a "
                        "comma-separated subset of amp,compile (default: both on CUDA, none "
                        "elsewhere)")
    p.add_argument("--gpu-train", default=None,
                   help="GPU protocol: onelip's training time (default 5m, or --budget)")
    p.add_argument("--gpu-steps", type=int, default=None,
                   help="GPU protocol: timed steps per network (default 20 on a GPU, 3 on CPU)")
    p.add_argument("--evaluate-saved", action="store_true",
                   help="certify the saved networks (--models) of the networks --only names "
                        "on every image of --data")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    args.argv = raw
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    bad = set(args.only) - set(NETS)
    if bad:
        p.error(f"unknown networks {sorted(bad)}; expected among {NETS}")
    for k in ("budget", "sweep_budget", "gpu_train"):
        try:
            parse_duration(getattr(args, k))
        except argparse.ArgumentTypeError as e:
            p.error(f"--{k.replace('_', '-')}: {e}")
    if args.recipe_from is None:
        for k in ("peer_losses", "baseline"):
            if getattr(args, k) is not None:
                p.error(f"--{k.replace('_', '-')} goes with --recipe-from")
    else:
        clash = [f for f, on in (("--sweep", args.sweep), ("--loss", args.loss),
                                 ("--sweep-lrs", args.sweep_lrs),
                                 ("--evaluate-saved", args.evaluate_saved),
                                 ("--device cuda / --gpu-checks", args.gpu_checks
                                  or args.device.startswith("cuda"))) if on]
        if clash:
            p.error(f"--recipe-from does not go with {', '.join(clash)}: the recipe fixes the "
                    "lr, each network's loss comes from its own sweep over --peer-losses "
                    "(one spec: that loss for all)")
        if not args.worker and not args.recipe_from.is_file():
            p.error(f"--recipe-from {args.recipe_from}: no such file")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    gpu_mode = args.gpu_checks or args.device.startswith("cuda")
    peers_needed = bool(set(PEERS) & set(args.only))
    if args.evaluate_saved:  # the peers' venv only for a peer's saved network that is asked for
        peers_needed = any(json.loads(p.read_text()).get("network") in PEERS
                           for p in saved_networks(args))
    import_working_tree_onelip(need_peers=peers_needed, script=__file__, venv=args.peers_venv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("[cifar10] --device cuda but torch sees no GPU (a peers' venv with a "
                         "CPU-only torch? put deel-torchlip and orthogonium on PYTHONPATH of a "
                         "CUDA torch, or use --only onelip)")
    if args.worker:
        return run_worker(args)
    if args.evaluate_saved:
        return run_evaluate_saved(args)
    if gpu_mode:
        return run_gpu(args)
    return run_benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())

# SPDX-License-Identifier: MIT
r"""What the image claims (``pareto``, ``consistency``) share: data with a validation split,
the paper's networks and onelip's, their unconstrained twins, one training + certification
sub-run.

Every figure here is a **validation** figure: the data's training part is split once
(stratified, fixed seed, :func:`onelip.data.validation_split`) into the images trained on and a
validation part; choices and verdicts read the validation part; the test split, when the data
has one, is never read.

Certificates are in pixel space (images in [0, 1], ε = k/255): certified accuracy at ε is the
fraction of validation points correctly classified with
:func:`onelip.certify.certified_accuracy` (``method="last_layer"``) radius > ε, a bound valid
for the whole network (a ``Normalize`` first layer's 1/min σ included).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from onelip import data as datasets
from onelip.data import DataSplit
from onelip.experiments import common
from onelip.experiments.common import SubRuns, rounded

__all__ = ["EPS_255", "OPTIMIZERS", "SCHEDULES", "Budget", "ImageData", "Recipe",
           "build_network", "certify", "load", "lr_factor", "plain_twin", "train_and_certify",
           "train_budgeted"]

EPS_255 = (36, 72, 108)
"""Radii of the certified accuracies, in 1/255 pixel units (the field's standard)."""


@dataclass(frozen=True)
class ImageData:
    """A training pool and a validation part carved from it (uint8 or float images)."""

    split: DataSplit
    """``x_train``/``y_train`` the pool trained on, ``x_val``/``y_val`` the validation part;
    the test part is not used."""
    val_fraction: float
    """Fraction of the data's training part held out as the validation part."""


def load(name: str, *, val_fraction: float, n_val: int | None = None,
         seed: int = 0) -> ImageData:
    """Data set ``name`` (e.g. ``folder:DIR``, ``digits``) with a validation part of
    ``val_fraction`` of its training images (kept to its first ``n_val`` when given; the
    split is stratified and fixed, so ``n_val`` only shortens it). The test part is dropped."""
    d = datasets.load(name)
    d = datasets.validation_split(DataSplit(d.name, d.x_train, d.y_train, d.x_train[:0],
                                            d.y_train[:0], d.num_classes, d.input_shape),
                                  val_fraction, seed=seed)
    xv, yv = d.x_val, d.y_val
    if n_val is not None and n_val < xv.shape[0]:
        gen = torch.Generator().manual_seed(seed + 31)
        idx = torch.randperm(xv.shape[0], generator=gen)[:n_val]
        xv, yv = xv[idx], yv[idx]
    return ImageData(DataSplit(d.name, d.x_train, d.y_train, d.x_test, d.y_test,
                               d.num_classes, d.input_shape, xv, yv), val_fraction)


def subset(data: ImageData, n: int | None, *, seed: int) -> DataSplit:
    """The split with a fixed random ``n`` of its training pool (stratification not needed:
    a uniform subset); ``None`` keeps the whole pool. The validation part is unchanged."""
    d = data.split
    if n is None or n >= d.x_train.shape[0]:
        return d
    gen = torch.Generator().manual_seed(seed + 17)
    idx = torch.randperm(d.x_train.shape[0], generator=gen)[:n]
    return DataSplit(d.name, d.x_train[idx], d.y_train[idx], d.x_test, d.y_test,
                     d.num_classes, d.input_shape, d.x_val, d.y_val)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1]; float data unchanged."""
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def channel_stats(x: torch.Tensor, input_shape: tuple[int, ...]) -> tuple[list, list]:
    """Per-channel mean and std of the images ``x`` (in [0, 1]), for a Normalize layer."""
    c = input_shape[0]
    xs = as_float(x[:10000]).reshape(x[:10000].shape[0], c, -1).transpose(0, 1).reshape(c, -1)
    return [float(v) for v in xs.mean(1)], [float(v) for v in xs.std(1).clamp_min(1e-3)]


def build_network(model: str, fields: dict, data: DataSplit, *, seed: int,
                  normalize: bool | str = False) -> nn.Module:
    """``onelip.models.build(model, **fields)`` for ``data``'s input shape and classes,
    initialised from ``seed`` (the global RNG left as it was). ``normalize`` (lipconvnet
    only): a Normalize first layer with the pool's per-channel statistics (``True`` or
    ``"std"``: mean and std, bound 1/min σ; ``"center"``: the mean and std 1, bound 1)."""
    from onelip import models

    if normalize not in (False, True, "std", "center"):
        raise ValueError(f"Expected normalize False, True, 'std' or 'center', but got "
                         f"{normalize!r}")
    kw = {**fields, "input_shape": tuple(data.input_shape), "num_outputs": data.num_classes}
    if normalize:
        kw["mean"], kw["std"] = channel_stats(data.x_train, data.input_shape)
        if normalize == "center":
            kw["std"] = [1.0] * len(kw["std"])
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        net, _ = models.build(model, **kw)
    return net


def plain_twin(model: nn.Module, *, seed: int) -> nn.Sequential:
    """The unconstrained network of the same widths: every constrained convolution and dense
    layer replaced by a freshly initialised ``nn.Conv2d`` / ``nn.Linear`` of the same shape,
    stride and padding, every activation by ReLU; the parameter-free layers (reshapes,
    poolings, channel pads, Normalize) kept."""
    from onelip.nn import GroupSort, MaxMin

    acts = (MaxMin, GroupSort)
    out: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for m in model.children():
            if hasattr(m, "in_channels") and hasattr(m, "kernel_size") and \
                    any(True for _ in m.parameters()):
                k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
                out.append(nn.Conv2d(m.in_channels, m.out_channels, k, stride=s, padding=p,
                                     bias=True))
            elif hasattr(m, "in_features") and hasattr(m, "out_features"):
                out.append(nn.Linear(m.in_features, m.out_features))
            elif isinstance(m, acts):
                out.append(nn.ReLU())
            elif any(True for _ in m.parameters()):
                raise TypeError(f"plain_twin: no unconstrained twin for {type(m).__name__}")
            else:
                out.append(copy.deepcopy(m))
    return nn.Sequential(*out)


def device() -> str:
    """'cuda' when a GPU is at hand, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_and_certify(model: nn.Module, data: DataSplit, loss: nn.Module, *, epochs: int,
                      lr: float, batch_size: int, augment: tuple[str, ...], seed: int,
                      certify: bool = True, train_eval: bool = False,
                      runs: SubRuns | None = None, name: str = "") -> dict:
    """Train ``model`` on ``data``'s training part (Adam, one-cycle, gradient clipping at 1;
    ``augment`` applied when the images are at least 16×16), measuring the validation part
    every epoch; then, in eval mode on the CPU: validation clean accuracy, certified accuracy
    at :data:`EPS_255` (with ``certify``), and with ``train_eval`` the accuracy on the whole
    (un-augmented) training part. Returns the JSON result of a sub-run."""
    from onelip.certify import certified_accuracy
    from onelip.train import TrainConfig, fit

    h, w = data.input_shape[-2:]
    aug = tuple(augment) if min(h, w) >= 16 else ()
    dev = device()

    def hook(record: dict) -> None:
        if runs is not None:
            runs.note(f"{name} epoch {record['epoch']}/{epochs}")

    t0 = time.perf_counter()
    hist = fit(model, data, loss,
               TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=dev,
                           augment=aug, grad_clip=1.0),
               progress=False, on_epoch=hook, final_test=False)
    seconds = time.perf_counter() - t0
    model.cpu()
    xv, yv = as_float(data.x_val), data.y_val
    out = {"epochs": epochs, "augment": list(aug), "n_train": int(data.x_train.shape[0]),
           "n_val": int(xv.shape[0]), "seconds": seconds, "device": common.device_name(dev),
           "val_curve": [r.get("val_acc") for r in hist],
           "train_curve": [r["train_acc"] for r in hist]}
    if certify:
        res = certified_accuracy(model, xv, yv, [e / 255 for e in EPS_255],
                                 method="last_layer")
        out["val_acc"] = res["clean"]
        out["certified"] = {str(e): res["certified"][e / 255] for e in EPS_255}
    else:
        out["val_acc"] = float((common.scores(model, xv).argmax(1) == yv).float().mean())
    if train_eval:
        xt = as_float(data.x_train)
        out["train_acc"] = float((common.scores(model, xt).argmax(1) == data.y_train)
                                 .float().mean())
    return rounded(out, 5)


# ==== training within a budget of CPU time ==================================================

OPTIMIZERS = ("adam", "adamw", "nesterov", "nadam")
"""Optimisers of :class:`Recipe`: torch Adam (L2 weight decay; with none it is AdamW), AdamW,
SGD with Nesterov momentum 0.9, NAdam (decoupled weight decay)."""
SCHEDULES = ("cosine", "onecycle")
"""Learning-rate schedules of :class:`Recipe`, functions of the budget's progress
(:func:`lr_factor`)."""


@dataclass(frozen=True)
class Budget:
    """How long a sub-run trains: ``cpu_seconds`` of its own process's CPU time
    (:func:`time.process_time`, every thread of the process counted), or else ``epochs``
    passes over the training images (fractions allowed)."""

    cpu_seconds: float | None = None
    epochs: float | None = None

    def __post_init__(self) -> None:
        if (self.cpu_seconds is None) == (self.epochs is None):
            raise ValueError("A budget is cpu_seconds or epochs, exactly one of them")
        v = self.cpu_seconds if self.cpu_seconds is not None else self.epochs
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"Expected a positive finite budget, but got {self}")

    def text(self) -> str:
        """e.g. '20 min of CPU time' or '3 epochs'."""
        if self.cpu_seconds is not None:
            m = self.cpu_seconds / 60
            return f"{m:g} min of CPU time" if m >= 1 else f"{self.cpu_seconds:g} s of CPU time"
        return f"{self.epochs:g} epoch{'s' if self.epochs != 1 else ''}"


@dataclass(frozen=True)
class Recipe:
    """How a sub-run trains: the optimiser, a schedule over the budget's progress, the batch,
    the augmentation (``"crop"``: pad 4 + random crop, ``"flip"``), gradient clipping (0: off)
    and weight decay."""

    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "cosine"
    lr_floor: float = 0.01
    """'cosine': the learning rate decays to lr · lr_floor (Keras ``CosineDecay(alpha=)``)."""
    batch_size: int = 512
    augment: tuple[str, ...] = ("crop", "flip")
    grad_clip: float = 0.0
    weight_decay: float = 0.0
    epsilon_ramp: float = 0.0
    """A fraction r ∈ [0, 1] of the budget: before each step a loss with ``ramps_epsilon``
    (onelip's margin-aware losses) gets ``epsilon_scale = min(1, p / r)`` at progress p, 1
    again at the end; 0: no ramp."""

    def __post_init__(self) -> None:
        from onelip.data.augment import check_augment

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; expected one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; expected one of "
                             f"{', '.join(SCHEDULES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.batch_size < 1:
            raise ValueError(f"Expected a positive lr and batch_size, but got {self.lr}, "
                             f"{self.batch_size}")
        if not 0 <= self.lr_floor <= 1 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("Expected lr_floor in [0, 1], grad_clip >= 0 and weight_decay >= 0")
        if not 0 <= self.epsilon_ramp <= 1:
            raise ValueError(f"Expected epsilon_ramp, a fraction of the budget, in [0, 1], but "
                             f"got {self.epsilon_ramp}")
        object.__setattr__(self, "augment", check_augment(tuple(self.augment)))

    def text(self) -> str:
        """e.g. 'Adam lr 0.001, cosine to 1 %, batch 512, crop+flip'."""
        name = {"adam": "Adam", "adamw": "AdamW", "nesterov": "SGD-Nesterov",
                "nadam": "NAdam"}[self.optimizer]
        sched = (f"cosine to {100 * self.lr_floor:g} %" if self.schedule == "cosine"
                 else "one-cycle")
        parts = [f"{name} lr {self.lr:g}", sched, f"batch {self.batch_size}",
                 "+".join(self.augment) or "no augmentation"]
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay:g}")
        if self.grad_clip:
            parts.append(f"gradient clipping at {self.grad_clip:g}")
        if self.epsilon_ramp:
            parts.append(f"ε ramp over the first {100 * self.epsilon_ramp:g} %")
        return ", ".join(parts)


def lr_factor(progress: float, recipe: Recipe) -> float:
    r"""The learning rate's factor at ``progress`` p ∈ [0, 1] of the budget.

    * ``cosine``: :math:`f + (1 - f)\,\tfrac12(1 + \cos \pi p)`, f = ``lr_floor`` (1 → f).
    * ``onecycle`` (torch's ``OneCycleLR`` defaults): from 1/25 up to 1 over the first 30 %
      (cosine), then down to 1/25/10⁴ (cosine).

    >>> r = Recipe(schedule="cosine", lr_floor=0.01)
    >>> lr_factor(0.0, r), round(lr_factor(0.5, r), 3), lr_factor(1.0, r)
    (1.0, 0.505, 0.01)
    """
    p = min(max(progress, 0.0), 1.0)
    if recipe.schedule == "cosine":
        f = recipe.lr_floor
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p))
    lo, end, up = 1 / 25, 1 / 25 / 1e4, 0.3
    if p < up:
        return lo + (1 - lo) * 0.5 * (1 - math.cos(math.pi * p / up))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * (p - up) / (1 - up)))


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "nadam":
        return torch.optim.NAdam(params, lr=recipe.lr, weight_decay=recipe.weight_decay,
                                 decoupled_weight_decay=True)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, nesterov=True,
                           weight_decay=recipe.weight_decay)


def train_budgeted(model: nn.Module, data: DataSplit, loss: nn.Module, recipe: Recipe,
                   budget: Budget, *, seed: int, device: str = "cpu",
                   note=None) -> dict:
    """Train ``model`` on ``data``'s training part until ``budget`` is spent.

    Each step: a batch of ``recipe.batch_size`` in a fresh permutation per pass (seeded from
    ``seed``), augmented (images of at least 16×16 only), uint8 → [0, 1], the forward under
    :func:`onelip.nn.utils.batched_kernel_build`, the loss, its gradient (clipped when
    ``recipe.grad_clip``; the loss's ε ramped over ``recipe.epsilon_ramp`` of the progress),
    the optimiser step at ``lr · lr_factor(progress)``, then
    :func:`onelip.nn.utils.retract_`. The progress p is the fraction of the budget spent
    before the step: CPU seconds of this process (:func:`time.process_time`) over
    ``budget.cpu_seconds``, or steps over ``budget.epochs`` × steps per pass; training stops
    at p ≥ 1 (a CPU-time budget is overrun by at most one step). A non-finite loss stops it
    as ``diverged``.

    Returns the JSON record: ``steps``, ``epochs`` (images trained on / training images),
    ``cpu_seconds`` and ``wall_seconds`` of the training, ``images_per_cpu_second``,
    ``train_loss`` and ``train_acc`` (of the last pass's batches as trained on),
    ``diverged`` (None, or where and why). ``model`` is left in eval mode on the CPU.
    """
    from onelip.data.augment import augment as _augment
    from onelip.nn.utils import batched_kernel_build, retract_

    x, y = data.x_train, data.y_train
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("train_budgeted: the training part is empty")
    image = tuple(data.input_shape)
    h, w = image[-2:]
    aug = recipe.augment if (len(image) == 3 and min(h, w) >= 16) else ()
    batch = min(recipe.batch_size, n)
    per_pass = -(-n // batch)
    total = None if budget.epochs is None else max(1, round(budget.epochs * per_pass))
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    model.to(device).train()
    opt = _optimizer(model, recipe)
    params = [p for p in model.parameters() if p.requires_grad]
    ramp = recipe.epsilon_ramp > 0
    if ramp and not getattr(loss, "ramps_epsilon", False):
        raise ValueError(f"Recipe(epsilon_ramp={recipe.epsilon_ramp:g}) needs a loss with an ε "
                         f"to ramp (offset-ce, emma, la), not {type(loss).__name__}")
    c0, w0 = time.process_time(), time.perf_counter()
    step, seen, pos, perm = 0, 0, n, None
    loss_sum, hits, count, diverged = 0.0, 0, 0, None
    while True:
        progress = (step / total if total is not None
                    else (time.process_time() - c0) / budget.cpu_seconds)
        if progress >= 1:
            break
        if pos >= n:
            perm, pos = torch.randperm(n, generator=gen), 0
            loss_sum, hits, count = 0.0, 0, 0
            if note is not None and step:
                note(f"pass {seen / n:.1f}, {100 * progress:.0f} % of the budget")
        idx = perm[pos:pos + batch]
        pos += batch
        xb = x[idx].to(device).reshape(len(idx), *image)
        yb = y[idx].to(device)
        if aug:
            xb = _augment(xb, aug, generator=aug_gen)
        xb = xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float()
        for g in opt.param_groups:
            g["lr"] = recipe.lr * lr_factor(progress, recipe)
        if ramp:
            loss.epsilon_scale = min(1.0, progress / recipe.epsilon_ramp)
        with batched_kernel_build(model):
            out = model(xb)
        value = loss(out, yb)
        if not bool(torch.isfinite(value)):
            diverged = f"loss {float(value)} at step {step + 1}"
            break
        opt.zero_grad(set_to_none=True)
        value.backward()
        if recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        retract_(model)
        step += 1
        seen += len(idx)
        loss_sum += float(value.detach()) * len(idx)
        hits += int((out.detach().argmax(1) == yb).sum())
        count += len(idx)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if ramp:
        loss.epsilon_scale = 1.0
    model.cpu().eval()
    return {"steps": step, "epochs": seen / n, "cpu_seconds": cpu, "wall_seconds": wall,
            "images_per_cpu_second": seen / max(cpu, 1e-9),
            "train_loss": loss_sum / count if count else None,
            "train_acc": hits / count if count else None, "diverged": diverged,
            "augment": list(aug), "n_train": n}


def certify(model: nn.Module, data: DataSplit) -> dict:
    """Validation clean accuracy and certified accuracy at :data:`EPS_255` of ``model`` (eval
    mode, CPU): ``{"val_acc", "certified": {"36": …, "72": …, "108": …}, "n_val"}``."""
    from onelip.certify import certified_accuracy

    xv, yv = as_float(data.x_val), data.y_val
    res = certified_accuracy(model, xv, yv, [e / 255 for e in EPS_255], method="last_layer")
    return {"val_acc": res["clean"], "n_val": int(xv.shape[0]),
            "certified": {str(e): res["certified"][e / 255] for e in EPS_255}}

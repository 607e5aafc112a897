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
import time
from dataclasses import dataclass

import torch
from torch import nn

from onelip import data as datasets
from onelip.data import DataSplit
from onelip.experiments import common
from onelip.experiments.common import SubRuns, rounded

__all__ = ["EPS_255", "ImageData", "build_network", "load", "plain_twin", "train_and_certify"]

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
                  normalize: bool = False) -> nn.Module:
    """``onelip.models.build(model, **fields)`` for ``data``'s input shape and classes,
    initialised from ``seed`` (the global RNG left as it was). ``normalize`` (lipconvnet
    only): a Normalize first layer with the pool's per-channel statistics."""
    from onelip import models

    kw = {**fields, "input_shape": tuple(data.input_shape), "num_outputs": data.num_classes}
    if normalize:
        kw["mean"], kw["std"] = channel_stats(data.x_train, data.input_shape)
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

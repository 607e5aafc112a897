# SPDX-License-Identifier: MIT
"""One training loop, driven by a frozen :class:`TrainConfig` (no argparse inside)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from onelip._validation import binary_scores_and_signs, class_indices, is_binary_output
from onelip.data import DataSplit
from onelip.distributed import Context
from onelip.nn import eval_mode, retract_

__all__ = ["TrainConfig", "fit", "evaluate_accuracy"]

_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters."""

    epochs: int = 20
    """Passes over the training set (> 0)."""
    batch_size: int = 128
    """Samples per optimiser step (> 0)."""
    lr: float = 1e-3
    """Peak learning rate (> 0)."""
    optimizer: str = "adam"
    """'adam' or 'sgd' (momentum 0.9)."""
    schedule: str = "onecycle"
    """'onecycle', 'cosine' or 'constant'."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) or L2 (SGD)."""
    seed: int = 0
    """Seeds :func:`fit`'s own ``torch.Generator`` (the data order): same seed and same
    initial model, same weights. The global RNG is neither read nor reseeded; initialisation
    is the caller's (seed torch before building the model, as ``onelip train`` does)."""
    device: str = "cpu"
    """'cpu', 'cuda', 'cuda:1', ..."""
    retract_every: int = 1
    """Retract orthogonal latents every this many steps (0: never; see OrthoLinear)."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"Expected epochs to be positive, but got epochs={self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"Expected batch_size to be positive, but got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"Expected lr to be positive, but got lr={self.lr}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; expected {_OPTIMIZERS}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; expected {_SCHEDULES}")
        if self.retract_every < 0:
            raise ValueError("Expected retract_every >= 0")


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      *, batch_size: int = 1024) -> float:
    """Fraction of ``x`` classified as ``y`` in eval mode (each submodule's mode restored).

    One output: predicted sign(f) (f = 0 counts as the negative class), labels in {0, 1} or
    {−1, +1}; K outputs: argmax, labels in [0, K).
    """
    correct = 0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i:i + batch_size])
            if is_binary_output(out):
                f, sign = binary_scores_and_signs(out, y[i:i + batch_size])
                hit = (f > 0) == (sign > 0)
            else:
                hit = out.argmax(1) == class_indices(out, y[i:i + batch_size])
            correct += int(hit.sum())
    return correct / max(x.shape[0], 1)


def _make_optimizer(model: nn.Module, cfg: TrainConfig, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


class _Progress:
    """A rich progress bar on a TTY, one line per epoch otherwise."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool) -> None:
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.bar = None
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                transient=False)
            self.task = self.bar.add_task("train", total=epochs * steps_per_epoch, info="")
            self.bar.start()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def epoch(self, line: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, info=line)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def fit(model: nn.Module, data: DataSplit, loss: nn.Module, config: TrainConfig, *,
        progress: bool = True, on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` on ``data.x_train, data.y_train`` with ``loss``; returns one record per
    epoch (``epoch, loss, train_acc, test_acc, seconds``).

    Deterministic for a given ``config.seed`` and initial model (same data order, same
    weights) on one device: the data order comes from a ``torch.Generator`` of its own, seeded
    with ``config.seed``; the global RNG state is left as it was. Every rank of a distributed
    run seeds the same generator, so all draw the same permutation. Leaves ``model`` in eval
    mode.
    After each optimiser step, orthogonal latents are retracted every ``retract_every`` steps
    (:func:`onelip.nn.retract_`).

    If ``torch.distributed`` is initialised (``onelip train --nproc N``, torchrun), trains
    data-parallel with the same result as one process on the same global batches of
    ``batch_size``: see :mod:`onelip.distributed`. Records then also hold
    ``rank_divergence``; only rank 0 shows progress.
    """
    ddp = Context(config.device)
    device = ddp.device
    model.to(device)
    net = ddp.wrap(model)
    x, y = data.x_train.to(device), data.y_train.to(device)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    opt, sched = _make_optimizer(model, config, config.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(config.seed)  # CPU: the same stream on every device
    bar = _Progress(config.epochs, steps_per_epoch, progress and ddp.is_main)
    history: list[dict] = []
    step = 0
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            total, count = 0.0, 0
            for i in range(0, n, config.batch_size):
                idx = perm[i:i + config.batch_size]
                mine = ddp.shard(idx)  # this rank's part of the global batch
                out = net(x[mine])
                value, value_sum = ddp.loss(loss, out, y[mine], idx.numel())
                if not torch.isfinite(value):
                    raise FloatingPointError(
                        f"loss became {float(value)} at epoch {epoch}; lower the learning rate"
                    )
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                sched.step()
                step += 1
                if config.retract_every and step % config.retract_every == 0:
                    retract_(model)
                total += value_sum
                count += mine.numel()
                bar.step()
            total, count = ddp.all_sum(total, count)
            record = {
                "epoch": epoch,
                "loss": total / count,
                "train_acc": evaluate_accuracy(model, x, y),
                "test_acc": evaluate_accuracy(model, data.x_test.to(device),
                                              data.y_test.to(device)),
                "seconds": time.perf_counter() - t0,
            }
            if ddp.active:
                record["rank_divergence"] = ddp.sync_(model)
            history.append(record)
            bar.epoch(f"epoch {epoch}/{config.epochs}  loss {record['loss']:.4f}  "
                      f"train {record['train_acc']:.3f}  test {record['test_acc']:.3f}  "
                      f"{record['seconds']:.1f}s")
            if on_epoch is not None:
                on_epoch(record)
    finally:
        bar.close()
    model.eval()
    return history

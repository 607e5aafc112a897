# SPDX-License-Identifier: MIT
"""The training pass of an epoch (:class:`Loop`) with its divergence guard
(:class:`TrainingDiverged`), and the progress a run shows."""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from onelip._errors import Argument, ArgumentError, NamesArguments
from onelip.distributed import Context
from onelip.nn.utils import retract_
from onelip.train.config import TrainConfig
from onelip.train.evaluate import _class_counts, _hits
from onelip.train.sources import _Prepare, _Tensors
from onelip.train.state import TrainingState

__all__ = ["Loop", "TrainingDiverged"]

_EXPLODED = 10.0  # divergence: |loss| above this many times its first value ...
_CHANCE_MARGIN = 0.02  # ... with a training accuracy at most this above chance level


class TrainingDiverged(NamesArguments, FloatingPointError):
    """Training diverged (see :attr:`TrainConfig.divergence_guard`); the message says where
    and what to do, in one line (``lower lr``: :attr:`arguments` names it)."""

    def __init__(self, epoch: int, step: int, loss: float, lr: float, detail: str = "") -> None:
        self.epoch, self.step, self.loss, self.lr = epoch, step, loss, lr
        super().__init__(f"training diverged at epoch {epoch} step {step} (loss {loss:.4g}"
                         f"{detail}): lower ", Argument("lr"), f" (now {lr:g})")


class Loop:
    """One epoch of training steps of ``net`` (``model``, maybe wrapped for DDP or compiled):
    forward under ``kernels()`` and bf16 autocast (``amp``), loss, backward, gradient
    clipping, optimiser and schedule step, retraction every ``retract_every`` steps; the
    divergence guard checks the loss (every step on CPU, every 16 on a GPU: the check
    synchronises) and, at the end of the epoch, the accuracy against chance level."""

    def __init__(self, model: nn.Module, net: nn.Module, loss: nn.Module, config: TrainConfig,
                 ddp: Context, prepare: _Prepare, kernels: Callable[[], ContextManager]
                 ) -> None:
        self.model, self.net, self.loss, self.config = model, net, loss, config
        self.ddp, self.prepare, self.kernels = ddp, prepare, kernels
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.check_every = 1 if ddp.device.type == "cpu" else 16
        self.chance_counts = None
        if config.epsilon_ramp > 0 and not getattr(loss, "ramps_epsilon", False):
            raise ArgumentError(Argument("epsilon_ramp"), f"={config.epsilon_ramp:g} needs a "
                                "loss with an ε to ramp (EMMALoss, LogitAnnealingLoss, "
                                f"OffsetCrossEntropyLoss), but the loss is "
                                f"{type(loss).__name__}: set it to 0")

    def autocast(self) -> ContextManager:
        """bf16 autocast of the device's type with ``amp``, else nothing."""
        if self.config.amp:
            return torch.autocast(device_type=self.ddp.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def ramp(self, step: int, steps_per_epoch: int) -> None:
        """Set the loss's ``epsilon_scale`` for training step ``step`` (0-based) of the
        ε ramp (:attr:`TrainConfig.epsilon_ramp`); 1 after it, and without one."""
        ramp = self.config.epsilon_ramp
        if ramp > 0:
            steps = max(int(round(ramp * steps_per_epoch)), 1)
            self.loss.epsilon_scale = min(1.0, (step + 1) / steps)

    def _diverged(self, epoch: int, step: int, value: float, detail: str = ""
                  ) -> TrainingDiverged:
        if self.config.amp:
            detail += ", under bf16 autocast: try without --amp"
        return TrainingDiverged(epoch, step, value, self.config.lr, detail)

    def epoch(self, epoch: int, source, run: TrainingState, bar: _Progress) -> dict[str, Any]:
        """Train one pass over ``source`` from ``run``'s state (updated); returns the
        record: ``epoch``, ``loss``, ``train_acc`` (of the batches as trained on), ``lr``."""
        model, config, ddp, device = self.model, self.config, self.ddp, self.ddp.device
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        hits = torch.zeros((), dtype=torch.int64, device=device)
        counts = None
        count = 0
        for i, (xb, yb, n_global) in enumerate(
                source.batches(config.batch_size, run.gen, ddp), 1):
            yb = yb.to(device, non_blocking=True)
            xb = self.prepare(xb, train=True, rows=ddp.positions(n_global), total=n_global)
            self.ramp(run.step, run.steps_per_epoch)
            with self.autocast(), self.kernels():
                out = self.net(xb)
            out = out.float() if config.amp else out
            value, value_sum = ddp.loss(self.loss, out, yb, n_global)
            if run.first_loss is None:  # the reference of the guard: the same on every rank
                s, c = ddp.all_sum(float(value_sum), float(yb.shape[0]))
                run.first_loss = s / max(c, 1)
            check = config.divergence_guard and i % self.check_every == 0
            if check and not bool(torch.isfinite(value)):
                raise self._diverged(epoch, i, float(value.detach()))
            run.opt.zero_grad(set_to_none=True)
            value.backward()
            if config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
                if check and not bool(torch.isfinite(norm)):
                    raise self._diverged(epoch, i, float(value.detach()),
                                         ", gradient norm not finite")
            run.opt.step()
            run.step += 1
            if run.step <= run.schedule_steps:  # past its end (a continued run): its last lr
                run.sched.step()
            if config.retract_every and run.step % config.retract_every == 0:
                retract_(model)
            total += value_sum
            hits += _hits(out, yb)
            if not isinstance(source, _Tensors):  # tensors: counted once, in _guard
                c = _class_counts(out, yb)
                counts = c if counts is None else counts + c
            count += int(yb.shape[0])
            bar.step()
        loss_sum, hit_sum, n_seen = ddp.all_sum(float(total), float(hits), count)
        record: dict[str, Any] = {"epoch": epoch, "loss": loss_sum / max(n_seen, 1),
                                  "train_acc": hit_sum / max(n_seen, 1),
                                  "lr": float(run.opt.param_groups[0]["lr"])}
        if config.divergence_guard:
            self._guard(record, source, run, out, counts)
        return record

    def _guard(self, record: dict, source, run: TrainingState, out, counts) -> None:
        """The end-of-epoch check: a finite mean loss, and not a training accuracy at chance
        level with a loss :data:`_EXPLODED` times its first value."""
        epoch, mean_loss, steps = record["epoch"], record["loss"], run.steps_per_epoch
        if not math.isfinite(mean_loss):
            raise self._diverged(epoch, steps, mean_loss)
        if isinstance(source, _Tensors):
            if self.chance_counts is None:
                self.chance_counts = _class_counts(out, source.y)
            counts = self.chance_counts
        if counts is None:
            return
        freq = self.ddp.all_sum(*[float(v) for v in counts])
        chance = max(freq) / max(sum(freq), 1)
        first = run.first_loss
        if (record["train_acc"] <= chance + _CHANCE_MARGIN
                and abs(mean_loss) > _EXPLODED * abs(first or 0.0) + 1e-12):
            raise self._diverged(epoch, steps, mean_loss,
                                 f", {first:.4g} at the first step; training accuracy "
                                 f"{record['train_acc']:.1%}, chance level")


def epoch_line(record: dict, epochs: int) -> str:
    """The one line of an epoch: loss, training (and validation) accuracy, seconds."""
    line = (f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  "
            f"train {record['train_acc']:.3f}  ")
    if "val_acc" in record:
        line += f"val {record['val_acc']:.3f}  "
    return line + f"{record['seconds']:.1f}s"


class _Progress:
    """A rich progress bar on a TTY, one line per epoch otherwise."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool, done: int = 0) -> None:
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.bar = None
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                transient=False)
            self.task = self.bar.add_task("train", total=epochs * steps_per_epoch, info="",
                                          completed=done * steps_per_epoch)
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

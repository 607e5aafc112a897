# SPDX-License-Identifier: MIT
"""One training loop, driven by a frozen :class:`TrainConfig` (no argparse inside).

:func:`fit` takes a :class:`~onelip.data.DataSplit` (tensors kept on the device as they come:
images that are exact multiples of 1/255 are kept as uint8 and become float per batch), a
``torch.utils.data.Dataset`` or a ``DataLoader`` yielding ``(x, y)`` (data larger than memory
streams through it). Per batch, on the device: uint8 → float/255, augmentation
(``TrainConfig.augment``), channels_last on CUDA, bf16 autocast (``amp``). Batches reach the
model as they come (flat DataSplit rows stay flat), except that with augmentation, or
channels_last on CUDA, images reach it as (N, C, H, W) (every model of :mod:`onelip.models`
takes both).

Per epoch it records the mean training loss and the training accuracy *of the batches it
trained on* (no second pass over the training set), and, when there is a validation part
(``TrainConfig.val_fraction`` or ``DataSplit.x_val`` or ``val=``), the validation accuracy and
loss in eval mode. The test split is never measured per epoch: with ``final_test=True`` it is
measured once, after the last epoch.

The data order is a permutation per epoch drawn from a ``torch.Generator`` of fit's own,
seeded from ``config.seed`` (the augmentation has another): same seed and same initial model,
same weights, on one device; the global RNG state is left as it was. ``sampler=`` replaces the
permutation with any order drawn from that generator (:data:`~onelip.train.sources.Sampler`:
oversampling, a curriculum, samples chosen from the model's current outputs). Each training
forward builds the kernels of like :class:`~onelip.nn.OrthoConv2d` layers together
(:func:`onelip.nn.batched_kernel_build`; not with ``compile``); orthogonal latents are
retracted every ``retract_every`` steps (:func:`onelip.nn.retract_`).

A divergence guard stops a run whose loss is not finite, or whose training accuracy is at
chance level with a loss ten times its first value, with :class:`TrainingDiverged`.

With ``checkpoint_dir``, the whole training state (model, optimiser, schedule, generators,
epoch, history) is written after every epoch (:func:`onelip.runs.write_checkpoint`);
``resume_from`` continues from such a state: an interrupted run ends with the same weights as
an uninterrupted one (bit for bit on CPU), and a finished run continues for more epochs with
its optimiser state and at the last learning rate of its schedule (no new cycle). Which
options may differ on resume, and why: :mod:`onelip.train.resume`.

If ``torch.distributed`` is initialised (``onelip train --nproc N``, torchrun), fit trains
data-parallel with the same result as one process on the same global batches of
``batch_size`` (:mod:`onelip.distributed`): every rank seeds the same generators, records also
hold ``rank_divergence``, and only rank 0 shows progress and writes checkpoints.

Modules: :mod:`~onelip.train.config` (:class:`TrainConfig`), :mod:`~onelip.train.sources` (the
batches), :mod:`~onelip.train.optim` (optimiser and schedule), :mod:`~onelip.train.state` (the
saved training state), :mod:`~onelip.train.resume` (the resume rule),
:mod:`~onelip.train.loop` (an epoch and the divergence guard), :mod:`~onelip.train.evaluate`.
"""

from __future__ import annotations

import functools
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from onelip.distributed import Context
from onelip.nn.utils import batched_kernel_build
from onelip.train.config import TrainConfig
from onelip.train.evaluate import _measure, evaluate_accuracy
from onelip.train.loop import Loop, TrainingDiverged, _Progress, epoch_line
from onelip.train.optim import make_optimizer as _make_optimizer  # noqa: F401 (0.2's name)
from onelip.train.sources import Sampler, _Prepare, _Tensors, sources
from onelip.train.sources import _exact_uint8 as _exact_uint8  # 0.2's place, for tests
from onelip.train.state import TrainingState, load_state, resumed_state

__all__ = ["Sampler", "TrainConfig", "TrainingDiverged", "evaluate_accuracy", "fit",
           "load_state"]


def fit(model: nn.Module, data, loss: nn.Module, config: TrainConfig, *,
        val=None, sampler: Sampler | None = None, progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None, final_test: bool = True,
        checkpoint_dir: str | Path | None = None, checkpoint_extra: dict | None = None,
        resume_from: str | Path | dict | None = None) -> list[dict]:
    """Train ``model`` with ``loss`` (see :mod:`onelip.train`); returns one record per epoch:
    ``epoch``, ``loss`` (mean training loss), ``train_acc`` (of the training batches as
    trained on), ``lr``, ``seconds``, with a validation part ``val_acc`` and ``val_loss``, and
    on the last record ``test_acc`` with ``final_test``. Leaves ``model`` in eval mode.

    Args:
        data: a :class:`~onelip.data.DataSplit`, a ``Dataset`` of ``(x, y)`` samples or a
            ``DataLoader`` of ``(x, y)`` batches (its own order); features float or uint8.
        val: validation data (``(x, y)``, a Dataset or a DataLoader), measured every epoch.
        sampler: the data order of an epoch (:data:`~onelip.train.sources.Sampler`).
        progress, on_epoch: show progress; ``on_epoch(record)`` after every epoch.
        final_test: measure the DataSplit's test part once, after the last epoch.
        checkpoint_dir, checkpoint_extra: write the training state (with ``extra``, JSON-able)
            there after every epoch.
        resume_from: a saved state (its folder or file, or :func:`load_state`'s dict) to
            continue up to ``config.epochs``, under the rule of :mod:`onelip.train.resume`.

    Raises:
        TrainingDiverged: the divergence guard stopped the run (one-line message).
        ValueError: unusable data or options, a state the rule does not let resume.
    """
    ddp = Context(config.device)
    gen = torch.Generator().manual_seed(config.seed)  # CPU: the same stream on every device
    saved = None if resume_from is None else resumed_state(resume_from, config)
    src = sources(data, val, config, ddp.device, gen, sampler)
    steps_per_epoch = src.train.steps(config.batch_size)

    model.to(ddp.device)
    if config.channels_last and ddp.device.type == "cuda" and src.image is not None:
        model.to(memory_format=torch.channels_last)
    run = TrainingState(model, config, src.train.n, steps_per_epoch, gen, ddp.device, saved)
    net = ddp.wrap(model)
    if config.compile:
        net = torch.compile(net)
    prepare = _Prepare(ddp.device, config, src.image, run.aug_gen)
    # The training kernels of like OrthoConv2d layers in one batched build per forward (not
    # under torch.compile, which traces the layers' own builds).
    kernels = nullcontext if config.compile else functools.partial(batched_kernel_build, model)
    loop = Loop(model, net, loss, config, ddp, prepare, kernels)

    bar = _Progress(config.epochs, steps_per_epoch, progress and ddp.is_main, run.epoch)
    try:
        for epoch in range(run.epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            record = loop.epoch(epoch, src.train, run, bar)
            if src.val is not None:
                record["val_acc"], record["val_loss"] = _measure(model, src.val, prepare, loss,
                                                                 loop.autocast)
            record["seconds"] = time.perf_counter() - t0
            if ddp.active:
                record["rank_divergence"] = ddp.sync_(model)
            run.history.append(record)
            run.epoch = epoch
            if checkpoint_dir is not None and ddp.is_main:
                from onelip import runs

                runs.write_checkpoint(checkpoint_dir, run.saved(model, config, checkpoint_extra))
            bar.epoch(epoch_line(record, config.epochs))
            if on_epoch is not None:
                on_epoch(record)
    finally:
        bar.close()
        if config.epsilon_ramp > 0:  # the loss as built: its full ε
            loss.epsilon_scale = 1.0
    model.eval()
    if final_test and src.split is not None and len(src.split.x_test) and run.history:
        test = _Tensors(src.split.x_test, src.split.y_test, ddp.device)
        run.history[-1] = {**run.history[-1],
                           "test_acc": _measure(model, test, prepare, loss, loop.autocast)[0]}
    return run.history

# SPDX-License-Identifier: MIT
"""The training state of a run: what a checkpoint saves after every epoch (model, optimiser,
schedule, generators, epoch, history: :meth:`TrainingState.saved`, the schema of
:data:`STATE_VERSION`), :func:`load_state` reads back, and a resumed run restores
(:class:`TrainingState`, under the rule of :mod:`onelip.train.resume`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onelip.train import resume
from onelip.train.config import TrainConfig
from onelip.train.optim import make_optimizer

__all__ = ["STATE_VERSION", "TrainingState", "load_state", "resumed_state"]

STATE_VERSION = 1
"""The version of the saved dict (:meth:`TrainingState.saved`); :func:`load_state` reads only
this one."""


def load_state(path: str | Path) -> dict:
    """The training state saved by :func:`fit` (``checkpoint_dir``) in ``path``: a run folder,
    an unfinished run or the checkpoint file. Keys: ``config``, ``epoch``, ``step``,
    ``history``, ``extra`` (what the caller saved with it), ``model``, ``optimizer``, ...
    """
    from onelip import runs

    state = runs.read_checkpoint(path)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise runs.CheckpointError(f"{path}: a training state of another version "
                                   f"({state.get('version') if isinstance(state, dict) else '?'}"
                                   f", expected {STATE_VERSION})")
    return state


def resumed_state(resume_from: str | Path | dict, config: TrainConfig) -> dict:
    """The saved state ``resume_from`` (loaded when a path), checked against ``config`` by the
    resume rule (:mod:`onelip.train.resume`)."""
    state = resume_from if isinstance(resume_from, dict) else load_state(resume_from)
    resume.check_config(state["config"], config)
    resume.check_epochs(int(state["epoch"]), config.epochs)
    return state


class TrainingState:
    """The optimiser, schedule, generators, step, epoch and history of a run: new, or restored
    from a saved state (with the model's weights) when ``saved`` is given."""

    def __init__(self, model: nn.Module, config: TrainConfig, n_train: int,
                 steps_per_epoch: int, gen: torch.Generator, device: torch.device,
                 saved: dict | None = None) -> None:
        self.n_train, self.steps_per_epoch, self.gen = n_train, steps_per_epoch, gen
        self.schedule_steps = config.epochs * steps_per_epoch
        if saved is not None:
            if saved["steps_per_epoch"] != steps_per_epoch or saved["n_train"] != n_train:
                raise ValueError(f"cannot resume: the training data changed ({n_train} samples"
                                 f", {steps_per_epoch} steps an epoch; the saved run had "
                                 f"{saved['n_train']}, {saved['steps_per_epoch']})")
            self.schedule_steps = saved["schedule_steps"]
            model.load_state_dict(saved["model"])
            _restore_legacy_snapshots(model, saved.get("snapshots", {}))
        self.opt, self.sched = make_optimizer(model, config, self.schedule_steps,
                                              steps_per_epoch)
        self.aug_gen = None
        if config.augment:
            self.aug_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.history: list[dict] = []
        self.step, self.first_loss, self.epoch = 0, None, 0
        if saved is not None:
            self.opt.load_state_dict(saved["optimizer"])
            self.sched.load_state_dict(saved["scheduler"])
            gen.set_state(saved["generators"]["order"])
            if self.aug_gen is not None:
                self.aug_gen.set_state(saved["generators"]["augment"])
            self.history = list(saved["history"])
            self.step, self.first_loss = saved["step"], saved["first_loss"]
            self.epoch = saved["epoch"]

    def saved(self, model: nn.Module, config: TrainConfig, extra: dict | None) -> dict[str, Any]:
        """The state after epoch :attr:`epoch`, as :func:`onelip.runs.write_checkpoint`
        writes it (``extra``: the caller's, JSON-able)."""
        return {
            "version": STATE_VERSION, "config": asdict(config), "epoch": self.epoch,
            "step": self.step, "steps_per_epoch": self.steps_per_epoch, "n_train": self.n_train,
            "schedule_steps": self.schedule_steps, "first_loss": self.first_loss,
            "history": self.history, "extra": extra or {},
            "model": model.state_dict(),  # layers' hidden state included (_extra_state)
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "generators": {"order": self.gen.get_state(),
                           "augment": (self.aug_gen.get_state() if self.aug_gen is not None
                                       else None)},
        }


def _restore_legacy_snapshots(model: nn.Module, saved: dict[str, list[str]]) -> None:
    """Checkpoints written by onelip 0.1/0.2 named, per module, the copies of its latent that
    OrthoLinear had certified (``snapshots``); since 0.3 the layer saves them in its own
    ``state_dict``. Each named module restores them through its own hook."""
    modules = dict(model.named_modules())
    for name, keys in saved.items():
        hook = getattr(modules.get(name), "load_legacy_snapshots", None)
        if callable(hook):
            hook(keys)

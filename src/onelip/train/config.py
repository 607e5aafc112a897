# SPDX-License-Identifier: MIT
"""The frozen configuration of a run: :class:`TrainConfig` (its defaults are ``onelip
train``'s)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from onelip._errors import Argument, ArgumentError
from onelip.data.augment import check_augment

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")


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
    """Seeds :func:`fit`'s own ``torch.Generator`` s (the data order, the augmentation): same
    seed and same initial model, same weights. The global RNG is neither read nor reseeded;
    initialisation is the caller's (seed torch before building the model, as ``onelip train``
    does)."""
    device: str = "cpu"
    """'cpu', 'cuda', 'cuda:1', ..."""
    retract_every: int = 1
    """Retract orthogonal latents every this many steps (0: never; see OrthoLinear)."""
    val_fraction: float = 0.0
    """Carve this fraction of the training data as a validation split (fixed seed
    :data:`onelip.data.VAL_SEED`, stratified: :func:`onelip.data.validation_split`), measured
    every epoch; 0: none (unless the data has one)."""
    augment: tuple[str, ...] = ()
    """Augmentations applied per batch on the device (``"crop"``: pad 4 + random crop,
    ``"flip"``: horizontal flip); image data (input shape (C, H, W)) only."""
    warmup_epochs: float = 0.0
    """Learning-rate warm-up, in epochs (fractions allowed). 'onecycle': the length of its
    rising phase (0: the default 30 % of the run); 'cosine' / 'constant': a linear ramp from
    lr/steps to lr over this many epochs, then the schedule."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value before each step (0: no clipping)."""
    amp: bool = False
    """bf16 autocast of the forward on CUDA (refused elsewhere). Loss, optimiser state and
    weights stay float32; certificates are computed in float32 whatever the ambient autocast."""
    compile: bool = False
    """Train through ``torch.compile(model)`` (evaluation uses the model as it is)."""
    channels_last: bool = True
    """On CUDA, image batches and the model in channels_last memory format (no effect on
    CPU)."""
    divergence_guard: bool = True
    """Stop with :class:`TrainingDiverged` on a non-finite loss, or at the end of an epoch
    whose training accuracy is at chance level with a loss ten times its first value."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"Expected epochs to be positive, but got epochs={self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"Expected batch_size to be positive, but got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"Expected lr to be positive, but got lr={self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; expected {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; expected {SCHEDULES}")
        if self.retract_every < 0:
            raise ValueError("Expected retract_every >= 0")
        if not (0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"Expected val_fraction in [0, 1), but got {self.val_fraction}")
        if isinstance(self.augment, str):
            raise ValueError(f"augment is a tuple of names, e.g. ('crop', 'flip'), not the "
                             f"string {self.augment!r}")
        object.__setattr__(self, "augment", check_augment(tuple(self.augment)))
        if not (0.0 <= self.warmup_epochs < self.epochs):
            raise ValueError(f"Expected warmup_epochs in [0, epochs={self.epochs}), but got "
                             f"{self.warmup_epochs}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"Expected grad_clip >= 0 (0: off), but got {self.grad_clip}")
        if self.amp and torch.device(self.device).type != "cuda":
            raise ArgumentError(Argument("amp"), " (bf16 autocast) needs a CUDA device, but "
                                f"device is {self.device!r}; it is refused on {self.device}, "
                                "not ignored")

# SPDX-License-Identifier: MIT
"""The frozen configuration of a run: :class:`TrainConfig` (its defaults are ``onelip
train``'s)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from onelip._errors import Argument, ArgumentError
from onelip.data.augment import check_augment

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig", "bf16_support"]

OPTIMIZERS = ("adam", "sgd", "nesterov", "nadam")
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
    """'adam' (AdamW), 'sgd' (momentum 0.9), 'nesterov' (SGD, Nesterov momentum 0.9) or
    'nadam' (NAdam, decoupled weight decay)."""
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
    """bf16 autocast of the forward, on CUDA or on a CPU with native bf16 arithmetic
    (AVX-512 BF16 or AMX: :func:`bf16_support`; refused elsewhere, where it would be slower,
    not faster). Loss, optimiser state and weights stay float32; the constraint math runs in
    full precision, and certificates are computed in float32 whatever the ambient autocast."""
    compile: bool = False
    """Train through ``torch.compile(model)`` (evaluation uses the model as it is)."""
    channels_last: bool = True
    """On CUDA, image batches and the model in channels_last memory format (no effect on
    CPU)."""
    epsilon_ramp: float = 0.0
    r"""Ramp the loss's ε linearly from 0 to its value over this many epochs (fractions
    allowed; 0: no ramp): before training step s the trainer sets ``loss.epsilon_scale =
    min(1, (s + 1) / S)``, S the ramp's steps. Only for losses with ``ramps_epsilon``
    (:class:`~onelip.losses.EMMALoss`, :class:`~onelip.losses.LogitAnnealingLoss`: their ε;
    :class:`~onelip.losses.OffsetCrossEntropyLoss`: its offset), as LiResNet and BRONet
    train."""
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
        if not (0.0 <= self.epsilon_ramp <= self.epochs and math.isfinite(self.epsilon_ramp)):
            raise ArgumentError(Argument("epsilon_ramp"), f" must lie in [0, epochs="
                                f"{self.epochs}] (epochs of the ramp), but got "
                                f"{self.epsilon_ramp}")
        if self.amp:
            ok, why = bf16_support(self.device)
            if not ok:
                raise ArgumentError(Argument("amp"), f" (bf16 autocast) is refused on "
                                    f"{self.device}, not ignored: {why}")


def bf16_support(device: str | torch.device) -> tuple[bool, str]:
    """Whether bf16 autocast pays on ``device``, and why not: CUDA, or a CPU whose
    instruction set has native bf16 arithmetic (AVX-512 BF16 or AMX tiles; without them
    oneDNN emulates bf16 and the forward gets slower). ``(ok, reason)``, reason "" if ok."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True, ""
    if kind != "cpu":
        return False, f"bf16 autocast is supported on CUDA and on CPUs, not on {kind}"
    cpu = getattr(torch, "cpu", None)
    native = any(bool(getattr(cpu, name, lambda: False)())
                 for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    if native:
        return True, ""
    return False, ("this CPU has no native bf16 arithmetic (AVX-512 BF16 or AMX; it has "
                   f"{torch.backends.cpu.get_cpu_capability()}), where bf16 is emulated and "
                   "slower than float32: train without it")

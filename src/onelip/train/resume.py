# SPDX-License-Identifier: MIT
"""The resume rule, stated once: what may differ when a run continues from its saved state.

A resumed run (:func:`~onelip.train.fit` with ``resume_from``, ``onelip train --resume``)
continues the trajectory of the saved one: an interrupted run ends with the weights the
uninterrupted one would have had (bit for bit on CPU), a finished one trains more epochs from
its optimiser and schedule state. So what shapes a step must be the saved run's; what only
says how long to train, where, and how a run is shown and kept may differ.

================  ===========  ================================================================
option            on resume    why
================  ===========  ================================================================
epochs            may differ   how long to train: at least the epochs already trained (a
                               finished run: more), :func:`check_epochs`; epochs past the saved
                               schedule's end run at its last learning rate
device            may differ   the same computation on another device (bit for bit on the
                               same kind of device)
compile           may differ   the same model, traced
channels_last     may differ   a memory layout, not a value
divergence_guard  may differ   only stops a run; never changes a step
batch_size        same         the steps of an epoch and the schedule's length
lr                same         the schedule's peak: the saved schedule continues
optimizer         same         the saved optimiser state is of this optimiser
schedule          same         the saved schedule state is of this schedule
warmup_epochs     same         part of the schedule
weight_decay      same         part of every step
grad_clip         same         part of every step
retract_every     same         which steps retract the orthogonal latents
amp               same         bf16 forwards change the value of every step
epsilon_ramp      same         the loss's ε at every step of the ramp
seed              same         the data order and the augmentation continue the saved
                               generators
val_fraction      same         which samples are trained on
augment           same         the augmentation of every batch
================  ===========  ================================================================

The arguments of a run that are not training fields (:data:`RUN_OPTIONS`: whether progress
shows, the final test, where the state is written, the number of processes, which give the
same global batches) may differ. Everything that makes the model, the loss or the data
(``onelip train``'s ``--data``, ``--model``, ``--loss``, ...) must be the saved run's: fit
checks the size of the training data and the shapes of the saved weights, ``onelip train``
its recorded options. :func:`differences` applies the rule to the options of both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, NamedTuple

from onelip._errors import Argument, ArgumentError
from onelip.train.config import TrainConfig

__all__ = ["MAY_DIFFER", "RUN_OPTIONS", "SAME_ON_RESUME", "Difference", "ResumeError",
           "check_config", "check_epochs", "differences", "may_differ"]

MAY_DIFFER = frozenset({"epochs", "device", "compile", "channels_last", "divergence_guard"})
"""The :class:`TrainConfig` fields a resumed run may change (the table above)."""
SAME_ON_RESUME = tuple(f.name for f in fields(TrainConfig) if f.name not in MAY_DIFFER)
"""The :class:`TrainConfig` fields that shape the trajectory: a resumed run has the saved
values (the table above)."""
RUN_OPTIONS = frozenset({"progress", "on_epoch", "final_test", "checkpoint_dir",
                         "checkpoint_extra", "resume_from", "overwrite", "world_size"})
"""How a run is shown, measured at the end, kept and shared, not what it computes: may
differ (``world_size``: the number of data-parallel processes, which train on the same
global batches)."""


class Difference(NamedTuple):
    """An option that a resumed run must keep, given another value."""

    name: str
    now: Any
    saved: Any


class ResumeError(ArgumentError):
    """A resumed run that cannot continue the saved one; the message names the argument
    (``epochs``). :attr:`done`: the epochs the saved run has trained."""

    def __init__(self, *parts: str, done: int = 0, epochs: int = 0, finished: bool = False
                 ) -> None:
        super().__init__(*parts)
        self.done, self.epochs, self.finished = done, epochs, finished


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def may_differ(name: str) -> bool:
    """Whether the option ``name`` (a TrainConfig field or a :data:`RUN_OPTIONS` name) may
    differ on resume."""
    return name in MAY_DIFFER or name in RUN_OPTIONS


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[Difference]:
    """The options of ``now`` (name -> value: TrainConfig fields, or a front end's options
    under the same names) that the rule keeps and whose value is not ``saved``'s, in
    ``now``'s order (tuples and lists compare alike; a name not saved differs)."""
    out = []
    for name, value in now.items():
        if may_differ(name):
            continue
        if _plain(value) != _plain(saved.get(name)):
            out.append(Difference(name, value, saved.get(name)))
    return out


def check_config(saved: Mapping[str, Any], config: TrainConfig) -> None:
    """ValueError unless ``config`` may continue a run saved with config ``saved``."""
    diff = differences(saved, asdict(config))
    if diff:
        raise ValueError("cannot resume: the configuration differs from the saved run's: "
                         + ", ".join(f"{d.name} {d.now!r} (saved {d.saved!r})" for d in diff))


def check_epochs(done: int, epochs: int, *, finished: bool = False) -> None:
    """:class:`ResumeError` unless a run that has trained ``done`` epochs may continue to
    ``epochs``: at least ``done`` (the remaining epochs of an unfinished run, none when equal);
    a finished run (``finished``) only for more."""
    if epochs < done or (finished and epochs == done):
        raise ResumeError(f"cannot resume: the saved run has trained {done} epochs, "
                          f"{'as many as' if epochs == done else 'more than'} ",
                          Argument("epochs", f"epochs={epochs}", value=epochs),
                          *(("; nothing to resume",) if finished else ()),
                          done=done, epochs=epochs, finished=finished)

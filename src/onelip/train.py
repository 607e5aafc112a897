# SPDX-License-Identifier: MIT
"""One training loop, driven by a frozen :class:`TrainConfig` (no argparse inside).

:func:`fit` takes a :class:`~onelip.data.DataSplit` (tensors kept on the device as they come:
images that are exact multiples of 1/255 are kept as uint8 and become float per batch), a
``torch.utils.data.Dataset`` or a ``DataLoader`` yielding ``(x, y)`` (data larger than memory
streams through it). Per batch, on the device: uint8 → float/255, augmentation
(``TrainConfig.augment``), channels_last on CUDA, bf16 autocast (``amp``).

Per epoch it records the mean training loss and the training accuracy *of the batches it
trained on* (no second pass over the training set), and, when there is a validation part
(``TrainConfig.val_fraction`` or ``DataSplit.x_val`` or ``val=``), the validation accuracy and
loss in eval mode. The test split is never measured per epoch: with ``final_test=True`` it is
measured once, after the last epoch.

A divergence guard stops a run whose loss is not finite, or whose training accuracy is at
chance level with a loss ten times its first value, with :class:`TrainingDiverged`.

With ``checkpoint_dir``, the whole training state (model, optimiser, schedule, generators,
epoch, history) is written after every epoch (:func:`onelip.runs.write_checkpoint`);
``resume_from`` continues from such a state: an interrupted run ends with the same weights as
an uninterrupted one (bit for bit on CPU), and a finished run continues for more epochs with
its optimiser state and at the last learning rate of its schedule (no new cycle).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from onelip._validation import binary_scores_and_signs, class_indices, is_binary_output
from onelip.data import DataSplit
from onelip.data._split import validation_split
from onelip.data.augment import augment as _augment
from onelip.data.augment import check_augment
from onelip.distributed import Context
from onelip.nn import batched_kernel_build, eval_mode, retract_

__all__ = ["TrainConfig", "TrainingDiverged", "evaluate_accuracy", "fit", "load_state"]

_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("onecycle", "cosine", "constant")
_STATE_VERSION = 1
# Fields that define the trajectory: a resumed run must have the saved values.
_SAME_ON_RESUME = ("batch_size", "lr", "optimizer", "schedule", "weight_decay", "seed",
                   "retract_every", "val_fraction", "augment", "warmup_epochs", "grad_clip",
                   "amp")
# Copies of a latent that OrthoLinear keeps (outside its state_dict) to know which values it has
# certified; which of them it trains through depends on them, so a checkpoint records those
# equal to the latent and a resumed run restores them: its first step takes the same path.
_SNAPSHOTS = ("_retracted_latent", "_guarded_latent")
_EXPLODED = 10.0  # divergence: |loss| above this many times its first value ...
_CHANCE_MARGIN = 0.02  # ... with a training accuracy at most this above chance level


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
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; expected {_OPTIMIZERS}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; expected {_SCHEDULES}")
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
            raise ValueError(f"amp (bf16 autocast) needs a CUDA device, but device is "
                             f"{self.device!r}; it is refused on {self.device}, not ignored")


class TrainingDiverged(FloatingPointError):
    """Training diverged (see :attr:`TrainConfig.divergence_guard`); the message says where
    and what to do, in one line."""

    def __init__(self, epoch: int, step: int, loss: float, lr: float, detail: str = "") -> None:
        self.epoch, self.step, self.loss, self.lr = epoch, step, loss, lr
        super().__init__(f"training diverged at epoch {epoch} step {step} (loss {loss:.4g}"
                         f"{detail}): lower --lr (now {lr:g})")


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


def _hits(out: Tensor, y: Tensor) -> Tensor:
    """Correct predictions in a batch whose labels the loss has already checked (no host
    synchronisation): sign for one output ({0,1} or {−1,+1} labels), argmax for K."""
    out = out.detach()
    if is_binary_output(out):
        return ((out.reshape(-1) > 0) == (y.reshape(-1) > 0)).sum()
    return (out.argmax(1) == y.reshape(-1)).sum()


def _class_counts(out: Tensor, y: Tensor) -> Tensor:
    if is_binary_output(out):
        return torch.bincount((y.reshape(-1) > 0).long(), minlength=2)
    return torch.bincount(y.reshape(-1).long(), minlength=out.shape[1])


# ==== schedules =============================================================================


def _make_optimizer(model: nn.Module, cfg: TrainConfig, steps: int, steps_per_epoch: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle":
        kw = {"pct_start": min(max(warm, 1) / steps, 0.99)} if warm else {}
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, **kw)
    elif warm:  # a linear ramp, then the schedule (closed form)
        cosine = cfg.schedule == "cosine"

        def factor(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            if not cosine:
                return 1.0
            return 0.5 * (1.0 + math.cos(math.pi * min(s - warm, steps - warm)
                                         / max(steps - warm, 1)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


# ==== data sources ==========================================================================


def _exact_uint8(x: Tensor) -> Tensor | None:
    """``x`` as uint8 if it is exactly ``uint8 / 255`` in float32 (images), else None."""
    if x.dtype != torch.float32 or x.numel() == 0:
        return None
    out = torch.empty(x.shape, dtype=torch.uint8)
    flat_in, flat_out = x.reshape(-1), out.view(-1)
    chunk = 1 << 22
    for i in range(0, flat_in.numel(), chunk):
        part = flat_in[i:i + chunk]
        q = part.mul(255.0).round_()
        if not bool(((q >= 0) & (q <= 255)).all()):
            return None
        q8 = q.to(torch.uint8)
        if not torch.equal(q8.to(torch.float32).div_(255.0), part):
            return None
        flat_out[i:i + chunk] = q8
    return out


class _Prepare:
    """A batch as the model gets it, on the device: uint8 → float32/255, augmentation on
    (N, C, H, W), channels_last on CUDA."""

    def __init__(self, device: torch.device, cfg: TrainConfig, image: tuple[int, ...] | None,
                 generator: torch.Generator | None) -> None:
        self.device = device
        self.image = image
        self.augment = cfg.augment
        self.generator = generator
        self.channels_last = cfg.channels_last and device.type == "cuda"

    def __call__(self, x: Tensor, *, train: bool, rows: Tensor | None = None,
                 total: int | None = None) -> Tensor:
        """``rows`` / ``total``: the batch is a shard of a global batch of ``total`` (DDP); the
        augmentation draws are those of the global batch (:mod:`onelip.data.augment`)."""
        x = x.to(self.device, non_blocking=True)
        image = self.image if self.image is not None else (
            tuple(x.shape[1:]) if x.dim() == 4 else None)
        if train and self.augment:
            if image is None:
                raise ValueError(f"augmentation {', '.join(self.augment)} needs image batches "
                                 f"(N, C, H, W), but got {tuple(x.shape)}")
        as_image = image is not None and (
            (train and self.augment) or self.channels_last or x.dim() == 4)
        if as_image:
            x = x.reshape(x.shape[0], *image)
            if train and self.augment:
                x = _augment(x, self.augment, generator=self.generator, rows=rows,
                             total=total)
        if not x.is_floating_point():
            x = x.to(torch.float32).div_(255.0)
        if as_image and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class _Tensors:
    """Samples held on the device (uint8 when exact), batches by index."""

    def __init__(self, x: Tensor, y: Tensor, device: torch.device) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} samples but {y.shape[0]} labels")
        if x.is_floating_point():
            small = _exact_uint8(x.cpu() if x.device.type != "cpu" else x)
            x = small if small is not None else x
        elif x.dtype != torch.uint8:
            raise ValueError(f"features must be float or uint8 images, but are {x.dtype}")
        self.x, self.y = x.to(device), y.to(device)
        self.n = int(x.shape[0])

    def steps(self, batch_size: int) -> int:
        return math.ceil(self.n / batch_size)

    def batches(self, batch_size: int, gen: torch.Generator | None, ddp: Context | None
                ) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Global batches of ``batch_size`` in ``gen``'s order (None: in order); with ``ddp``,
        this rank's shard of each."""
        if gen is None:
            for i in range(0, self.n, batch_size):
                yield self.x[i:i + batch_size], self.y[i:i + batch_size], \
                    min(batch_size, self.n - i)
            return
        order = torch.randperm(self.n, generator=gen).to(self.x.device)
        for i in range(0, self.n, batch_size):
            idx = order[i:i + batch_size]
            mine = ddp.shard(idx) if ddp is not None else idx  # this rank's part
            yield self.x[mine], self.y[mine], idx.numel()


class _OrderSampler(torch.utils.data.Sampler):
    """The data order of the tensor path (``randperm`` of fit's generator, drawn when an
    epoch starts), for a map-style Dataset."""

    def __init__(self, n: int, gen: torch.Generator | None) -> None:
        self.n, self.gen = n, gen

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.gen is None:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=self.gen).tolist())


class _Loader:
    """Batches of a DataLoader (the user's, or one fit builds around a Dataset with its own
    order); under DDP every rank reads the global batch and keeps its shard."""

    def __init__(self, source, batch_size: int, gen: torch.Generator | None,
                 device: torch.device, *, shuffle: bool) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        if isinstance(source, DataLoader):
            if isinstance(getattr(source, "sampler", None), DistributedSampler):
                raise ValueError("give fit the DataLoader of the whole data set (no "
                                 "DistributedSampler): it shards each global batch itself")
            self.loader = source
            self.own = False
        else:
            self.loader = DataLoader(source, batch_size=batch_size,
                                     sampler=_OrderSampler(len(source), gen if shuffle else None),
                                     pin_memory=device.type == "cuda")
            self.own = True
        try:
            self._steps = len(self.loader)
        except TypeError:
            raise ValueError("fit needs a DataLoader with a length (the schedule needs the "
                             "number of steps); give its dataset a __len__") from None
        try:
            self.n = len(self.loader.dataset)
        except TypeError:
            self.n = -1

    def steps(self, batch_size: int) -> int:
        return self._steps

    def batches(self, batch_size: int, gen, ddp: Context | None
                ) -> Iterator[tuple[Tensor, Tensor, int]]:
        for item in self.loader:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError("fit's DataLoader must yield (x, y) batches, but yielded "
                                 f"{type(item).__name__}")
            x, y = item
            x, y = torch.as_tensor(x), torch.as_tensor(y)
            n = int(x.shape[0])
            if ddp is not None and ddp.active:
                x = x.tensor_split(ddp.world)[ddp.rank]
                y = y.tensor_split(ddp.world)[ddp.rank]
            yield x, y, n


def _source(data, device: torch.device, batch_size: int, gen, *, shuffle: bool = True):
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        return _Tensors(data[0], data[1], device)
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return _Tensors(data.tensors[0], data.tensors[1], device)
    if isinstance(data, (DataLoader, Dataset)):
        return _Loader(data, batch_size, gen, device, shuffle=shuffle)
    raise TypeError(f"fit takes a DataSplit, a Dataset or a DataLoader yielding (x, y), not "
                    f"{type(data).__name__}")


def _image_shape(data) -> tuple[int, ...] | None:
    """(C, H, W) of image data, when known up front."""
    if isinstance(data, DataSplit):
        shape = tuple(int(s) for s in data.input_shape)
        return shape if len(shape) == 3 else None
    from torch.utils.data import Dataset

    if isinstance(data, Dataset) and hasattr(data, "__getitem__"):
        try:
            x = data[0][0]
        except Exception:  # noqa: BLE001 - an unusual Dataset: decided at the first batch
            return None
        x = torch.as_tensor(x)
        return tuple(x.shape) if x.dim() == 3 else None
    return None


# ==== evaluation ============================================================================


@torch.no_grad()
def _measure(model: nn.Module, source, prepare: _Prepare, loss: nn.Module,
             autocast) -> tuple[float, float]:
    """(accuracy, mean loss) of ``source`` in eval mode (every rank measures all of it)."""
    hits = torch.zeros((), dtype=torch.int64, device=prepare.device)
    total = torch.zeros((), dtype=torch.float64, device=prepare.device)
    count = 0
    with eval_mode(model):
        for x, y, _ in source.batches(1024, None, None):
            y = y.to(prepare.device)
            with autocast():
                out = model(prepare(x, train=False))
            out = out.float()
            value = loss(out, y)
            hits += _hits(out, y)
            total += value.detach().double() * y.shape[0]
            count += int(y.shape[0])
    return int(hits) / max(count, 1), float(total) / max(count, 1)


# ==== the training state ====================================================================


def load_state(path: str | Path) -> dict:
    """The training state saved by :func:`fit` (``checkpoint_dir``) in ``path``: a run folder,
    an unfinished run or the checkpoint file. Keys: ``config``, ``epoch``, ``step``,
    ``history``, ``extra`` (what the caller saved with it), ``model``, ``optimizer``, ...
    """
    from onelip import runs

    state = runs.read_checkpoint(path)
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        raise runs.CheckpointError(f"{path}: a training state of another version "
                                   f"({state.get('version') if isinstance(state, dict) else '?'}"
                                   f", expected {_STATE_VERSION})")
    return state


def _snapshots(model: nn.Module) -> dict[str, list[str]]:
    """{module name: the snapshot keys equal, value for value, to its weight}."""
    out: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, Tensor):
            continue
        keys = [k for k in _SNAPSHOTS if isinstance(m.__dict__.get(k), Tensor)
                and m.__dict__[k].shape == w.shape and torch.equal(m.__dict__[k], w.detach())]
        if keys:
            out[name] = keys
    return out


def _restore_snapshots(model: nn.Module, saved: dict[str, list[str]]) -> None:
    modules = dict(model.named_modules())
    for name, keys in saved.items():
        m = modules.get(name)
        if m is not None:
            for k in keys:
                m.__dict__[k] = m.weight.detach().clone()


def _config_differences(saved: dict, config: TrainConfig) -> list[str]:
    now = asdict(config)
    out = []
    for name in _SAME_ON_RESUME:
        a, b = saved.get(name), now[name]
        if isinstance(a, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            out.append(f"{name} {b!r} (saved {a!r})")
    return out


# ==== the loop ==============================================================================


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


def fit(model: nn.Module, data, loss: nn.Module, config: TrainConfig, *,
        val=None, progress: bool = True, on_epoch: Callable[[dict], None] | None = None,
        final_test: bool = True, checkpoint_dir: str | Path | None = None,
        checkpoint_extra: dict | None = None,
        resume_from: str | Path | dict | None = None) -> list[dict]:
    """Train ``model`` with ``loss``; returns one record per epoch: ``epoch``, ``loss`` (mean
    training loss), ``train_acc`` (accuracy of the training batches as they were trained on,
    augmented, in train mode), ``lr``, ``seconds``, and with a validation part ``val_acc``,
    ``val_loss`` (eval mode). The test split is not measured per epoch: with ``final_test``
    (and a DataSplit with test samples) the last record gets ``test_acc``, measured once after
    the last epoch.

    Args:
        data: a :class:`~onelip.data.DataSplit` (its training part; its ``x_val`` if any), a
            ``torch.utils.data.Dataset`` of ``(x, y)`` samples (batched in fit's own seeded
            order, like tensors) or a ``DataLoader`` yielding ``(x, y)`` batches (its own order
            and workers: data larger than memory streams through it). Features float, or uint8
            images (divided by 255 per batch). Batches reach the model as they come (flat
            DataSplit rows stay flat), except that with augmentation, or channels_last on
            CUDA, images reach it as (N, C, H, W) (every model of :mod:`onelip.models` takes
            both).
        val: validation data (a ``(x, y)`` pair of tensors, a Dataset or a DataLoader), measured
            after every epoch; or use ``config.val_fraction`` with a DataSplit.
        final_test: measure the DataSplit's test part once at the end (``onelip train`` does
            so only with ``--eval-test``).
        checkpoint_dir: write the training state there after every epoch (atomically;
            :func:`onelip.runs.write_checkpoint`), with ``checkpoint_extra`` (JSON-able) in it.
        resume_from: a state from ``checkpoint_dir`` (that folder, a run folder or the file;
            or :func:`load_state`'s dict): restores the model weights, optimiser, schedule,
            generators and history, and trains the remaining epochs up to ``config.epochs``.
            An interrupted run ends as the uninterrupted one would (bit for bit on CPU); epochs
            beyond the saved schedule's end run at its last learning rate (a finished run
            continues; it does not start a new cycle). The fields that shape the trajectory
            (lr, batch_size, schedule, seed, ...) must equal the saved ones.

    Deterministic for a given ``config.seed`` and initial model (same data order, same
    augmentation, same weights) on one device: both come from ``torch.Generator`` s of fit's
    own, seeded from ``config.seed``; the global RNG state is left as it was. Every rank of a
    distributed run seeds the same generators, so all draw the same permutation. Leaves
    ``model`` in eval mode. Each training forward builds the kernels of like
    :class:`~onelip.nn.OrthoConv2d` layers together (:func:`onelip.nn.batched_kernel_build`;
    not with ``compile``). After each optimiser step, orthogonal latents are retracted every
    ``retract_every`` steps (:func:`onelip.nn.retract_`, batched the same way).

    If ``torch.distributed`` is initialised (``onelip train --nproc N``, torchrun), trains
    data-parallel with the same result as one process on the same global batches of
    ``batch_size``: see :mod:`onelip.distributed`. Records then also hold
    ``rank_divergence``; only rank 0 shows progress and writes checkpoints.

    Raises:
        TrainingDiverged: the divergence guard stopped the run (one-line message).
        ValueError: unusable data or options (augmentation of non-image data, a validation
            fraction of a DataLoader, a resumed state of another configuration, ...).
    """
    ddp = Context(config.device)
    device = ddp.device
    gen = torch.Generator().manual_seed(config.seed)  # CPU: the same stream on every device
    state = None
    if resume_from is not None:
        state = resume_from if isinstance(resume_from, dict) else load_state(resume_from)
        diff = _config_differences(state["config"], config)
        if diff:
            raise ValueError("cannot resume: the configuration differs from the saved run's: "
                             + ", ".join(diff))
        if config.epochs < state["epoch"]:
            raise ValueError(f"cannot resume: the saved run has trained {state['epoch']} "
                             f"epochs, more than epochs={config.epochs}")

    # ---- data
    image = _image_shape(data)
    if config.augment and image is None and isinstance(data, DataSplit):
        raise ValueError(f"augmentation ({', '.join(config.augment)}) is for images, but data "
                         f"set {data.name!r} has input_shape {tuple(data.input_shape)}; "
                         "drop it for this data")
    if config.val_fraction > 0:
        if not isinstance(data, DataSplit):
            raise ValueError("val_fraction carves a validation split from a DataSplit; for a "
                             "Dataset or DataLoader pass val= instead")
        if val is not None or data.x_val is not None:
            raise ValueError("val_fraction and a validation part given (val= or "
                             "DataSplit.x_val): use one of them")
        data = validation_split(data, config.val_fraction)
    if isinstance(data, DataSplit):
        if data.x_val is not None:
            if val is not None:
                raise ValueError("the DataSplit has a validation part and val= is given; use "
                                 "one of them")
            val = (data.x_val, data.y_val)
        train_src = _Tensors(data.x_train, data.y_train, device)
    else:
        train_src = _source(data, device, config.batch_size, gen)
    val_src = _source(val, device, config.batch_size, None, shuffle=False) \
        if val is not None else None
    steps_per_epoch = train_src.steps(config.batch_size)
    if steps_per_epoch < 1:
        raise ValueError("the training data is empty")

    # ---- model, optimiser, schedule, generators
    model.to(device)
    if config.channels_last and device.type == "cuda" and image is not None:
        model.to(memory_format=torch.channels_last)
    schedule_steps = config.epochs * steps_per_epoch
    if state is not None:
        if state["steps_per_epoch"] != steps_per_epoch or state["n_train"] != train_src.n:
            raise ValueError(f"cannot resume: the training data changed ({train_src.n} samples"
                             f", {steps_per_epoch} steps an epoch; the saved run had "
                             f"{state['n_train']}, {state['steps_per_epoch']})")
        schedule_steps = state["schedule_steps"]
        model.load_state_dict(state["model"])
        _restore_snapshots(model, state.get("snapshots", {}))
    opt, sched = _make_optimizer(model, config, schedule_steps, steps_per_epoch)
    aug_gen = None
    if config.augment:
        aug_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    history: list[dict] = []
    step, first_loss, start = 0, None, 1
    chance_counts = None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generators"]["order"])
        if aug_gen is not None:
            aug_gen.set_state(state["generators"]["augment"])
        history = list(state["history"])
        step, first_loss, start = state["step"], state["first_loss"], state["epoch"] + 1
    net = ddp.wrap(model)
    if config.compile:
        net = torch.compile(net)
    prepare = _Prepare(device, config, image, aug_gen)
    if config.amp:
        def autocast():
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    else:
        autocast = nullcontext
    # The training kernels of like OrthoConv2d layers in one batched build per forward (not
    # under torch.compile, which traces the layers' own builds).
    kernels = nullcontext if config.compile else functools.partial(batched_kernel_build, model)
    params = [p for p in model.parameters() if p.requires_grad]
    check_every = 1 if device.type == "cpu" else 16  # the non-finite check syncs on a GPU

    def diverged(epoch: int, s: int, value: float, detail: str = "") -> TrainingDiverged:
        return TrainingDiverged(epoch, s, value, config.lr, detail)

    def save(epoch: int) -> None:
        if checkpoint_dir is None or not ddp.is_main:
            return
        from onelip import runs

        runs.write_checkpoint(checkpoint_dir, {
            "version": _STATE_VERSION, "config": asdict(config), "epoch": epoch,
            "step": step, "steps_per_epoch": steps_per_epoch, "n_train": train_src.n,
            "schedule_steps": schedule_steps, "first_loss": first_loss,
            "history": history, "extra": checkpoint_extra or {},
            "model": model.state_dict(), "snapshots": _snapshots(model),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generators": {"order": gen.get_state(),
                           "augment": aug_gen.get_state() if aug_gen is not None else None},
        })

    bar = _Progress(config.epochs, steps_per_epoch, progress and ddp.is_main, start - 1)
    try:
        for epoch in range(start, config.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            total = torch.zeros((), dtype=torch.float64, device=device)
            hits = torch.zeros((), dtype=torch.int64, device=device)
            counts = None
            count = 0
            for i, (xb, yb, n_global) in enumerate(
                    train_src.batches(config.batch_size, gen, ddp), 1):
                yb = yb.to(device, non_blocking=True)
                xb = prepare(xb, train=True, rows=ddp.positions(n_global), total=n_global)
                with autocast(), kernels():
                    out = net(xb)
                out = out.float() if config.amp else out
                value, value_sum = ddp.loss(loss, out, yb, n_global)
                if first_loss is None:  # the reference of the guard: the same on every rank
                    s, c = ddp.all_sum(float(value_sum), float(yb.shape[0]))
                    first_loss = s / max(c, 1)
                if config.divergence_guard and i % check_every == 0 and not bool(
                        torch.isfinite(value)):
                    raise diverged(epoch, i, float(value.detach()))
                opt.zero_grad(set_to_none=True)
                value.backward()
                if config.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                    if config.divergence_guard and i % check_every == 0 and not bool(
                            torch.isfinite(norm)):
                        raise diverged(epoch, i, float(value.detach()),
                                       ", gradient norm not finite")
                opt.step()
                step += 1
                if step <= schedule_steps:  # past its end (a continued run): its last lr
                    sched.step()
                if config.retract_every and step % config.retract_every == 0:
                    retract_(model)
                total += value_sum
                hits += _hits(out, yb)
                if not isinstance(train_src, _Tensors):  # tensors: counted once, below
                    c = _class_counts(out, yb)
                    counts = c if counts is None else counts + c
                count += int(yb.shape[0])
                bar.step()
            loss_sum, hit_sum, n_seen = ddp.all_sum(float(total), float(hits), count)
            mean_loss = loss_sum / max(n_seen, 1)
            record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss,
                                      "train_acc": hit_sum / max(n_seen, 1),
                                      "lr": float(opt.param_groups[0]["lr"])}
            if config.divergence_guard:
                if not math.isfinite(mean_loss):
                    raise diverged(epoch, steps_per_epoch, mean_loss)
                if isinstance(train_src, _Tensors):
                    if chance_counts is None:
                        chance_counts = _class_counts(out, train_src.y)
                    counts = chance_counts
                if counts is not None:
                    freq = ddp.all_sum(*[float(v) for v in counts])
                    chance = max(freq) / max(sum(freq), 1)
                    if (record["train_acc"] <= chance + _CHANCE_MARGIN
                            and abs(mean_loss) > _EXPLODED * abs(first_loss or 0.0) + 1e-12):
                        raise diverged(epoch, steps_per_epoch, mean_loss,
                                       f", {first_loss:.4g} at the first step; training "
                                       f"accuracy {record['train_acc']:.1%}, chance level")
            if val_src is not None:
                record["val_acc"], record["val_loss"] = _measure(model, val_src, prepare, loss,
                                                                 autocast)
            record["seconds"] = time.perf_counter() - t0
            if ddp.active:
                record["rank_divergence"] = ddp.sync_(model)
            history.append(record)
            save(epoch)
            line = (f"epoch {epoch}/{config.epochs}  loss {record['loss']:.4f}  "
                    f"train {record['train_acc']:.3f}  ")
            if "val_acc" in record:
                line += f"val {record['val_acc']:.3f}  "
            bar.epoch(line + f"{record['seconds']:.1f}s")
            if on_epoch is not None:
                on_epoch(record)
    finally:
        bar.close()
    model.eval()
    if final_test and isinstance(data, DataSplit) and len(data.x_test) and history:
        test = _Tensors(data.x_test, data.y_test, device)
        history[-1] = {**history[-1],
                       "test_acc": _measure(model, test, prepare, loss, autocast)[0]}
    return history

# SPDX-License-Identifier: MIT
r"""Data-parallel training: ``torch.distributed`` + ``DistributedDataParallel``.

Two ways to start it, one code path (torchrun's environment variables ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``):

* ``onelip train ... --nproc N`` — :func:`onelip.cli.launch.launch` re-runs the same command
  in N local processes (``python -m onelip``) with that environment;
* ``torchrun --nproc_per_node N [--nnodes ...] -m onelip train ...`` (see docs/distributed.md).

Backend: gloo on CPU, NCCL on CUDA (rank r uses ``cuda:LOCAL_RANK``).

**Same result as one process on the same global batch.** Every rank draws the same
permutation (same seed); each global batch of ``batch_size`` samples is split into
``WORLD_SIZE`` contiguous shards (:meth:`Context.shard`), so the union of the shards is the
single-process batch. The KR terms need class frequencies of the *global* batch: their counts
are summed across ranks (:meth:`Context.frequency`, an ``all_reduce``) and passed to the loss as
``frequency=``. DDP averages gradients over ranks; each rank's mean loss is weighted by
:math:`n_r W / n` (:math:`n_r` its shard size, W ranks, n the global batch), so the averaged
gradient is the gradient of the global mean even for the last, uneven batch (no sample is
dropped). The retraction after each step (:func:`onelip.nn.retract_`) is deterministic, so
ranks stay bit-identical; at the end of each epoch :meth:`Context.sync_` measures the largest
difference to rank 0 (recorded as ``rank_divergence``, 0.0 on CPU) and copies rank 0's
weights. Only rank 0 shows progress and writes files.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from onelip._errors import Argument, ArgumentError
from onelip._validation import is_binary_output

__all__ = ["Context", "check_nproc", "in_worker", "is_main", "process_group"]


def in_worker() -> bool:
    """True in a process started by ``onelip train --nproc`` or torchrun (``WORLD_SIZE`` and
    ``RANK`` set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_nproc(nproc: int, device: str = "cpu") -> None:
    """Refuse, before anything starts, more local processes than this machine can run side
    by side: on CPU more than its cores (each process would get less than one core, and the
    gloo all-reduces of every step wait for the slowest), on CUDA more than its visible GPUs
    (NCCL needs one each).

    Raises:
        ArgumentError: in one line, naming ``nproc`` and saying how many are possible.
    """
    if nproc < 1:
        raise ValueError(f"Expected nproc >= 1, but got nproc={nproc}")
    if torch.device(device).type == "cuda":
        n_gpu = torch.cuda.device_count()
        if nproc > n_gpu:
            raise ArgumentError(_nproc(nproc), f" needs {nproc} GPUs, but {n_gpu} are "
                                "visible: pass ", _nproc(max(n_gpu, 1)),
                                " or less on CUDA (one GPU each)")
        return
    cores = _cores()
    if nproc > cores:
        raise ArgumentError(_nproc(nproc), f" is more processes than the {cores} CPU core"
                            f"{'s' if cores != 1 else ''} this machine gives onelip: they "
                            "would share cores and run slower than fewer; pass ", _nproc(cores),
                            " or less")


def _nproc(n: int) -> Argument:
    return Argument("nproc", f"nproc={n}", value=n)


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main() -> bool:
    """Rank 0 (or not distributed): the process that prints and writes files."""
    if _dist_ready():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextmanager
def process_group(device: str = "cpu") -> Iterator[None]:
    """Initialise ``torch.distributed`` from torchrun's environment for the body, then tear it
    down; does nothing outside a worker (see :func:`in_worker`) or if one is already set up.

    Backend: NCCL when ``device`` is CUDA (and ``cuda:LOCAL_RANK`` becomes the current
    device), gloo otherwise.
    """
    if not in_worker() or _dist_ready():
        yield
        return
    dist = torch.distributed
    if torch.device(device).type == "cuda":
        n_gpu = torch.cuda.device_count()
        if _local_rank() >= n_gpu:
            raise ValueError(
                f"LOCAL_RANK {_local_rank()} needs GPU {_local_rank()}, but {n_gpu} are visible: "
                f"run at most {n_gpu} processes per node on CUDA (NCCL needs one GPU each)"
            )
        torch.cuda.set_device(_local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    try:
        yield
    finally:
        dist.destroy_process_group()


class Context:
    """What :func:`onelip.train.fit` needs to know about data parallelism.

    Inactive (one process, every method the identity) unless ``torch.distributed`` is
    initialised.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.active = _dist_ready()
        dist = torch.distributed
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        dev = torch.device(device)
        if self.active and dev.type == "cuda":
            dev = torch.device("cuda", _local_rank())
        self.device = dev

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` when active, else ``model``."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, idx: Tensor) -> Tensor:
        """This rank's contiguous part of the global batch ``idx`` (sizes differ by ≤ 1)."""
        if not self.active:
            return idx
        return idx.tensor_split(self.world)[self.rank]

    def positions(self, n_global: int) -> Tensor | None:
        """Positions of this rank's shard (:meth:`shard`) in a global batch of ``n_global``
        samples; None when not distributed (the batch is the global batch)."""
        if not self.active:
            return None
        return torch.arange(n_global).tensor_split(self.world)[self.rank]

    def frequency(self, out: Tensor, target: Tensor) -> Tensor:
        """Class frequencies of the global batch: (p(−1), p(+1)) for one output, (p_k) for K.

        Counts are summed over ranks (``all_reduce``), in float64.
        """
        binary = is_binary_output(out)
        t = target.reshape(-1)
        if binary:
            pos = (t > 0).sum()
            counts = torch.stack((t.numel() - pos, pos))  # (2,)
        else:
            counts = torch.bincount(t.long(), minlength=out.shape[1])  # (K,)
        counts = counts.to(torch.float64)
        if self.active:
            torch.distributed.all_reduce(counts)
        return counts / counts.sum().clamp_min(1)

    @staticmethod
    def _frequency_kw(loss: nn.Module) -> bool:
        """Whether ``loss`` takes ``frequency=``: what it declares by its class attribute
        ``takes_frequency`` (True on the KR and HKR losses of :mod:`onelip.losses`; a loss
        that does not declare it is called without)."""
        return bool(getattr(type(loss), "takes_frequency", False))

    def loss(self, loss: nn.Module, out: Tensor, target: Tensor,
             n_global: int) -> tuple[Tensor, Tensor]:
        """(value to backpropagate, sum of this shard's per-sample losses as a detached
        float64 scalar tensor: no host synchronisation).

        One process: ``loss(out, target)`` unchanged. Distributed: the loss of the shard with
        the global class frequencies (``frequency=``, for a loss that declares
        ``takes_frequency = True``: see :mod:`onelip.losses`), weighted so that
        DDP's average of the ranks' gradients is the gradient of the global-batch loss.
        """
        n_local = target.shape[0]
        if not self.active:
            value = loss(out, target)
            return value, value.detach().double() * n_local
        kw = {"frequency": self.frequency(out, target)} if self._frequency_kw(loss) else {}
        if n_local == 0:  # fewer samples than ranks: take part in the gradient all-reduce
            return out.sum() * 0.0, torch.zeros((), dtype=torch.float64, device=out.device)
        value = loss(out, target, **kw)
        if getattr(loss, "reduction", "mean") == "sum":
            return value * self.world, value.detach().double()
        scale = n_local * self.world / n_global
        weighted = value if scale == 1 else value * scale
        return weighted, value.detach().double() * n_local

    def all_sum(self, *values: float) -> tuple[float, ...]:
        """Sum scalars over ranks."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return tuple(t.tolist())

    @torch.no_grad()
    def sync_(self, model: nn.Module) -> float:
        """Copy rank 0's parameters and buffers to every rank; returns the largest absolute
        difference there was (0.0 when the ranks stayed in sync)."""
        if not self.active:
            return 0.0
        tensors = [t for t in list(model.parameters()) + list(model.buffers())]
        worst = torch.zeros((), dtype=torch.float64, device=self.device)
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            ref = flat.clone()
            torch.distributed.broadcast(ref, src=0)
            if flat.numel():
                worst = torch.maximum(worst, (ref.double() - flat.double()).abs().max())
            offset = 0
            for t in group:
                t.copy_(ref[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
        torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
        return float(worst)

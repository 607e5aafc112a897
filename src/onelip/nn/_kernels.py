# SPDX-License-Identifier: MIT
"""How convolution kernels are built in training: on one thread (:func:`serial_kernel_build`)
and batched over like layers (:func:`batched_kernel_build`). A private leaf of
:mod:`onelip.nn`; the public names live in :mod:`onelip.nn.utils`.

A layer takes part in the batched build by defining the *batched-build protocol*:

* ``_batch_key() -> tuple``: layers of equal keys build their kernels together;
* ``_latent_names() -> tuple[str, ...]``: the parameters the kernel is built from;
* ``_kernel(exact=False, latents={name: (G, *shape)}) -> (G, C_out, C_in, k, k)``: the
  training kernels of G stacked layers;
* optionally ``_retract_group_(group)`` (a classmethod): :meth:`retract_` of like layers at
  once (:func:`onelip.nn.utils.retract_` calls it).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["batched_kernel_build", "build_threads", "serial", "serial_kernel_build",
           "batch_kernel"]


# Opt-in serial kernel builds (serial_kernel_build). Off by default: torch.set_num_threads is
# process-wide, so a layer must not call it on its own.
_SERIAL_BUILD: ContextVar[bool] = ContextVar("onelip_serial_kernel_build", default=False)


@contextmanager
def serial_kernel_build() -> Iterator[None]:
    """Build the kernels of :class:`~onelip.nn.OrthoConv2d` and
    :class:`~onelip.nn.SpectralConv2d` on one CPU thread while in the block (opt-in; outside
    it the layers never change the thread count).

    A constrained kernel is built from ~100 small operations (Cholesky, triangular solves,
    small products). With several intra-op threads on a loaded CPU, each small parallel
    operation waits until all its threads are scheduled, so the build can be much slower than
    on one thread, while the convolution itself gains from every thread
    (``benchmarks/results/conv.md`` times the layers with 2 threads and with 1). Inside the
    block, on CPU, each kernel build — the training forward, its recomputation in a backward
    run inside the block (like ``torch.utils.checkpoint``), ``OrthoConv2d.retract_`` —
    runs under ``torch.set_num_threads(1)``, and the previous count is restored straight
    after; the convolutions keep every thread. The function and its gradients are unchanged.

    The thread count is a *process-wide* setting: while a kernel is being built, torch work
    in other Python threads of the process also runs on one thread. Enter the block around
    the training loop of a single-threaded program, not in library code.

    Example:
        >>> from onelip.nn import OrthoConv2d
        >>> conv = OrthoConv2d(4, 4, 3)
        >>> threads = torch.get_num_threads()
        >>> with serial_kernel_build():
        ...     conv(torch.randn(2, 4, 8, 8)).square().sum().backward()
        >>> torch.get_num_threads() == threads
        True
    """
    token = _SERIAL_BUILD.set(True)
    try:
        yield
    finally:
        _SERIAL_BUILD.reset(token)


def _serial_wanted(device: torch.device) -> bool:
    return _SERIAL_BUILD.get() and device.type == "cpu" and torch.get_num_threads() > 1


@contextmanager
def build_threads(device: torch.device) -> Iterator[None]:
    """One intra-op thread for a kernel build inside :func:`serial_kernel_build` (on CPU);
    otherwise nothing."""
    if not _serial_wanted(device):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _Serial(torch.autograd.Function):
    """``fn(*tensors)`` built on one thread; the backward recomputes ``fn`` (on one thread when
    it runs inside :func:`serial_kernel_build`)."""

    @staticmethod
    def forward(ctx, fn, *tensors):
        ctx.fn = fn
        ctx.save_for_backward(*tensors)
        with build_threads(tensors[0].device):
            return fn(*tensors)

    @staticmethod
    def backward(ctx, grad):
        needs = ctx.needs_input_grad[1:]
        inputs = [t.detach().requires_grad_(n) for t, n in zip(ctx.saved_tensors, needs)]
        with build_threads(inputs[0].device), torch.enable_grad():
            out = ctx.fn(*inputs)
            wanted = [t for t, n in zip(inputs, needs) if n]
            grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True))
        return (None, *[next(grads) if n else None for n in needs])


@torch.compiler.disable
def serial(fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    """``fn(*tensors)`` (pure, differentiable): built on one thread inside
    :func:`serial_kernel_build` on CPU, else called as it is."""
    if not _serial_wanted(tensors[0].device):
        return fn(*tensors)
    return _Serial.apply(fn, *tensors)


# The kernel batch of the forward pass at hand (batched_kernel_build), or None.
_BATCH: ContextVar["_KernelBatch | None"] = ContextVar("onelip_kernel_batch", default=None)


def _batchable(m: nn.Module) -> bool:
    return m.training and callable(getattr(m, "_batch_key", None))


class _KernelBatch:
    """The training-mode kernels of a network's batchable layers (the module docstring's
    protocol), built group by group (layers of equal ``_batch_key()``) at the first forward of
    a member: the group's latents are stacked and built in one batched call. A group is
    rebuilt when a latent changed since (an optimiser step or ``retract_`` in the block:
    tensor versions), or when grad mode differs from the build's."""

    def __init__(self, model: nn.Module) -> None:
        groups: dict[tuple, list[nn.Module]] = {}
        for m in model.modules():
            if _batchable(m):
                groups.setdefault(m._batch_key(), []).append(m)
        self._group = {id(m): g for g in groups.values() for m in g}
        self._built: dict[int, tuple[tuple, dict[int, Tensor]]] = {}  # id(group[0]) -> ...

    def kernel(self, module: nn.Module) -> Tensor | None:
        group = self._group.get(id(module))
        if group is None or group[0]._batch_key() != module._batch_key():
            return None  # not in the batch (added, or changed, after the block began)
        stamp = (torch.is_grad_enabled(),) + tuple(
            (getattr(m, n)._version, getattr(m, n).data_ptr())
            for m in group for n in m._latent_names())
        built = self._built.get(id(group[0]))
        if built is None or built[0] != stamp:
            kernels = _build_group(group)  # (G, C_out, C_in, k, k)
            built = (stamp, {id(m): kernels[i] for i, m in enumerate(group)})
            self._built[id(group[0])] = built
        return built[1][id(module)]


def _build_group(group: list[nn.Module]) -> Tensor:
    """The training kernels of like layers, stacked: (G, C_out, C_in, k, k), with gradients
    to every layer's latents."""
    first, names = group[0], group[0]._latent_names()

    def build(*flat: Tensor) -> Tensor:  # flat: the latents of layer 0, then layer 1, ...
        stacked = {n: torch.stack(flat[i::len(names)]) for i, n in enumerate(names)}
        return first._kernel(exact=False, latents=stacked)

    flat = [getattr(m, n) for m in group for n in names]
    return serial(build, *flat)


def batch_kernel(module: nn.Module) -> Tensor | None:
    """``module``'s training kernel from the batch of the enclosing
    :func:`batched_kernel_build`, or ``None`` outside one (or when not in its batch)."""
    batch = _BATCH.get()
    return None if batch is None else batch.kernel(module)


@contextmanager
def batched_kernel_build(model: nn.Module) -> Iterator[None]:
    """Build the training kernels of every :class:`~onelip.nn.OrthoConv2d` (every layer of
    the batched-build protocol) of ``model`` in a few batched operations: wrap the
    **forward** pass (not the backward) of a training step in the block.

    A training-mode :class:`~onelip.nn.OrthoConv2d` builds its kernel from about 30 small
    operations (Cholesky, triangular solves, 2×2 block compositions), each a kernel launch on
    a GPU that can take longer than the convolution itself. Inside the block, the layers whose
    latents have the same shapes (e.g. the five 3×3 convolutions of one block of
    ``lipconvnet``) are built together: their latents are stacked and every operation runs
    once for the group (:func:`~onelip.functional.bcop_kernel` on a batch), with no host
    synchronisation. The function and the gradients are those of the layers built one by one
    (equal up to float rounding; tested); eval-mode layers are untouched.
    :func:`onelip.train.fit` uses it.

    Each group is built at the first forward of one of its layers in the block and reused by
    the others (and by further forwards in the block: the same graph); it is rebuilt if a
    latent changed in the block. Every layer of a group receives a gradient (zeros if it was
    not used). A ``backward()`` *inside* the block followed by another forward would reuse
    the freed graph (PyTorch raises "backward through the graph a second time"): keep one
    forward per block.

    Example:
        >>> from onelip.nn import OrthoConv2d
        >>> net = torch.nn.Sequential(OrthoConv2d(4, 4), OrthoConv2d(4, 4))
        >>> x = torch.randn(2, 4, 8, 8)
        >>> with batched_kernel_build(net):
        ...     y = net(x)
        >>> bool(torch.allclose(y, net(x), atol=1e-5))
        True
    """
    token = _BATCH.set(_KernelBatch(model))
    try:
        yield
    finally:
        _BATCH.reset(token)

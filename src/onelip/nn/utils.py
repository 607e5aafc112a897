# SPDX-License-Identifier: MIT
"""The training and export utilities that work on onelip layers (:mod:`onelip.nn` holds the
layers themselves).

* :func:`retract_` — after an optimiser step, move orthogonal latents back towards their
  constraint (the eval function unchanged);
* :func:`batched_kernel_build`, :func:`serial_kernel_build` — how training kernels are built;
* :func:`eval_mode` — eval mode for a block, each submodule's own mode restored after it;
* :func:`full_precision`, :func:`float32_forward` — the constraint math out of autocast;
* :func:`export_tree` — the plain-torch twin of a module tree.

Until 0.4 the same names are importable from :mod:`onelip.nn` (with a
``DeprecationWarning``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from onelip.nn._base import LipschitzModule, _owner
from onelip.nn._kernels import batched_kernel_build, serial_kernel_build
from onelip.nn._precision import float32_forward, full_precision
from onelip.nn.plain import own_tensors

__all__ = ["batched_kernel_build", "eval_mode", "export_tree", "float32_forward",
           "full_precision", "retract_", "retract_modules_", "serial_kernel_build"]


def retract_(model: nn.Module) -> None:
    """Call ``retract_()`` on every onelip layer of ``model`` that has one (after an optimiser
    step).

    Retraction moves latent weights towards their constrained values without changing the
    function computed in eval mode; it keeps the fast training forward close to exact. Layers
    whose class defines ``_retract_group_`` (a classmethod; :class:`~onelip.nn.OrthoConv2d`)
    and share a ``_batch_key()`` are retracted together, in one batched float64 Cholesky QR
    per latent.
    """
    retract_modules_(model.modules())


def retract_modules_(modules: Iterable[nn.Module]) -> None:
    """:func:`retract_` of the layers in ``modules`` (not of their children)."""
    groups: dict[tuple, list[nn.Module]] = {}
    for m in modules:
        if not isinstance(m, LipschitzModule) or not callable(getattr(m, "retract_", None)):
            continue
        cls = type(m)
        # batched only while the class's retract_ is the one its group retraction matches
        if callable(getattr(cls, "_retract_group_", None)) and \
                _owner(cls, "retract_") is _owner(cls, "_retract_group_"):
            groups.setdefault((cls,) + tuple(m._batch_key()), []).append(m)
        else:
            m.retract_()
    for group in groups.values():
        type(group[0])._retract_group_(group)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's own mode after
    it, also when the block raises.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:  # each module's own mode, not model.train(mode) for all
            m.training = mode
            if isinstance(m, LipschitzModule):
                m.clear_cache()


def _compiled_original(m: nn.Module) -> nn.Module | None:
    """The module ``torch.compile`` wrapped, when ``m`` is its wrapper (else ``None``)."""
    if not hasattr(m, "_orig_mod"):  # cheap test first: importing dynamo costs a second
        return None
    from torch._dynamo.eval_frame import OptimizedModule  # the type torch.compile returns

    return m._orig_mod if isinstance(m, OptimizedModule) else None


@torch.no_grad()
def export_tree(m: nn.Module) -> nn.Module:
    """A new module tree of plain layers computing ``m``'s eval-mode function.

    The one rule, in order:

    1. ``DataParallel``, ``DistributedDataParallel`` and ``torch.compile`` wrappers are
       unwrapped;
    2. a onelip layer (:class:`~onelip.nn.LipschitzModule`) that defines ``export()`` returns
       it; one with parameters or buffers and no ``export()`` is an error, never a silent copy;
    3. containers (``nn.Sequential`` and its subclasses that keep its ``forward``,
       ``nn.ModuleList``, ``nn.ModuleDict``) become the plain container of exported children;
    4. any other module without tensors of its own (activations, pooling, ``nn.Flatten``, a
       user's wrapper that only *calls* its children) and any plain torch leaf (``nn.Linear``,
       ``nn.Conv2d``, …) is copied, its children exported.

    Raises:
        TypeError: a constrained layer without ``export()``, or a module with tensors of its
            own *and* children (its ``forward`` may read its children's weights).
    """
    if isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return export_tree(m.module)
    original = _compiled_original(m)  # torch.compile's wrapper
    if original is not None:
        return export_tree(original)
    own = own_tensors(m)
    if isinstance(m, LipschitzModule):
        if callable(getattr(type(m), "export", None)):
            return m.export()
        if own:
            raise TypeError(
                f"{type(m).__name__} has parameters or buffers ({', '.join(own)}) but no "
                "export(): give it an export() method returning plain modules"
            )
    if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
        return nn.Sequential(OrderedDict((k, export_tree(c)) for k, c in m.named_children()))
    if type(m) is nn.ModuleList:
        return nn.ModuleList(export_tree(c) for c in m)
    if type(m) is nn.ModuleDict:
        return nn.ModuleDict({k: export_tree(c) for k, c in m.items()})
    children = list(m.named_children())
    if own and children:
        raise TypeError(
            f"Cannot export {type(m).__name__}: it has its own tensors ({', '.join(own)}) and "
            "children; give it an export() method"
        )
    memo = {id(c): None for c in m.children()}  # copy the shell, not the children
    new = copy.deepcopy(m, memo)
    for name, child in children:
        setattr(new, name, export_tree(child))
    return new

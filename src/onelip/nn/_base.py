# SPDX-License-Identifier: MIT
"""What every onelip layer shares: its Lipschitz bound and an eval-mode weight cache."""

from __future__ import annotations

import abc
import copy
import functools
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch
from torch import Tensor, nn


class LipschitzModule(nn.Module, metaclass=abc.ABCMeta):
    """Base of onelip layers: *the* rule for "is this a onelip layer" is
    ``isinstance(m, LipschitzModule)`` (certification, export and retraction all use it).

    * :meth:`lipschitz_bound` (abstract: every layer states its own) returns a certified upper
      bound of the layer's L2 Lipschitz constant in eval mode, for the weights as applied
      (float32 rounding included). A subclass that overrides ``forward`` without restating
      :meth:`lipschitz_bound` is refused by :func:`check_bound_applies`.
    * In eval mode the constrained weight is computed once and cached: inference costs what the
      plain layer costs. The cache is keyed on the version counter, storage, dtype and device of
      every tensor it depends on, so ``train()``, an optimiser step, ``load_state_dict``,
      ``.to()`` and ``deepcopy`` all invalidate it.
    """

    @abc.abstractmethod
    def lipschitz_bound(self) -> float:
        """A certified upper bound of the L2 Lipschitz constant of the eval-mode function."""

    def _cache_sources(self) -> tuple[Tensor, ...]:
        return tuple(self.parameters(recurse=False)) + tuple(self.buffers(recurse=False))

    def _cache_key(self) -> tuple:
        return tuple(
            (t._version, t.data_ptr(), t.dtype, t.device) for t in self._cache_sources()
        )

    @torch.compiler.disable
    def _cached(self, name: str, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()`` (no grad), recomputed only when a source tensor changed."""
        cache: dict = self.__dict__.setdefault("_onelip_cache", {})
        key = self._cache_key()
        entry = cache.get(name)
        if entry is None or entry[0] != key:
            with torch.no_grad():
                entry = (key, compute())
            cache[name] = entry
        return entry[1]

    def clear_cache(self) -> None:
        self.__dict__["_onelip_cache"] = {}

    def train(self, mode: bool = True):
        self.clear_cache()
        return super().train(mode)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_onelip_cache", None)
        return state

    def __deepcopy__(self, memo):
        # Copy without the cache: it is rebuilt on first use.
        cls = self.__class__
        new = cls.__new__(cls)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k == "_onelip_cache":
                continue
            new.__dict__[k] = copy.deepcopy(v, memo)
        return new


def full_precision(device: torch.device):
    """A context with any ambient ``torch.autocast`` of ``device``'s type switched off: the
    constraint math (orthonormalisation, normalisation by a norm, its float32 cast margin)
    runs in the weights' own dtype, float32 or float64, never in bf16/fp16, so the weight a
    layer applies is the one its bound was proved for. Without autocast: a no-op.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), full_precision(torch.device("cpu")):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def float32_forward(forward: Callable) -> Callable:
    """Decorate a layer's ``forward(self, x)`` to run in full precision under autocast: x is
    upcast to the layer's dtype and the whole forward, constraint math included, runs with
    autocast off (for the dense and residual layers, whose cost is small beside the
    convolutions'; :class:`~onelip.nn.OrthoConv2d` instead builds only its kernel in full
    precision and convolves under the ambient autocast). Without autocast: ``forward`` as it
    is."""

    @functools.wraps(forward)
    def wrapped(self, x: Tensor) -> Tensor:
        dt = x.device.type
        if not torch.is_autocast_enabled(dt):
            return forward(self, x)
        dtype = next((p.dtype for p in self.parameters()), torch.float32)
        with torch.autocast(dt, enabled=False):
            return forward(self, x.to(dtype) if x.is_floating_point() else x)

    return wrapped


def _owner(cls: type, name: str) -> type:
    return next(c for c in cls.__mro__ if name in c.__dict__)


def check_bound_applies(module: nn.Module) -> None:
    """Refuse a module whose ``forward`` is not the one its :meth:`lipschitz_bound` was
    derived for: a subclass that overrides ``forward`` but inherits the bound (e.g. a
    ``Sequential`` whose ``forward`` returns ``10 * super().forward(x)``).

    Raises:
        TypeError: with what to do (state the bound of the new ``forward``).
    """
    cls = type(module)
    fwd, bound = _owner(cls, "forward"), _owner(cls, "lipschitz_bound")
    if fwd is not bound and issubclass(fwd, bound):
        raise TypeError(
            f"{cls.__name__} overrides forward() but inherits lipschitz_bound() from "
            f"{bound.__name__}, which was derived for {bound.__name__}'s forward: refusing to "
            f"certify it; define {cls.__name__}.lipschitz_bound() for the new forward"
        )


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

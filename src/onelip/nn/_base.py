# SPDX-License-Identifier: MIT
"""What every onelip layer shares: its Lipschitz bound and an eval-mode weight cache."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class LipschitzModule(nn.Module):
    """Base of onelip layers.

    * :meth:`lipschitz_bound` returns a certified upper bound of the layer's L2 Lipschitz
      constant (in eval mode).
    * In eval mode the constrained weight is computed once and cached: inference costs what the
      plain layer costs. The cache is keyed on the version counter, storage, dtype and device of
      every tensor it depends on, so ``train()``, an optimiser step, ``load_state_dict``,
      ``.to()`` and ``deepcopy`` all invalidate it.
    """

    def lipschitz_bound(self) -> float:
        return 1.0

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
        import copy

        for k, v in self.__dict__.items():
            if k == "_onelip_cache":
                continue
            new.__dict__[k] = copy.deepcopy(v, memo)
        return new

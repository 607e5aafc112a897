# SPDX-License-Identifier: MIT
"""What every onelip layer shares (:class:`LipschitzModule`: its bound and an eval-mode
cache) and the layer author's contract for layers with weights (:class:`ConstrainedLayer`,
with :class:`DenseLayer` and :class:`ConvLayer` for the two usual shapes)."""

from __future__ import annotations

import abc
import copy
import hashlib
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._precision import float32_call, param_dtype
from onelip.nn.plain import plain_conv, plain_linear

__all__ = ["ConstrainedLayer", "ConvLayer", "DenseLayer", "LipschitzModule",
           "check_bound_applies"]


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


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


# The methods that decide the eval-mode function: a subclass overriding one of them below the
# class that states the bound changes the function the bound was proved for.
_BOUND_DEPENDS_ON = ("forward", "eval_forward", "apply_weight", "applied_weight")


def check_bound_applies(module: nn.Module) -> None:
    """Refuse a module whose ``forward`` is not the one its :meth:`lipschitz_bound` was
    derived for: a subclass that overrides ``forward`` (or, for a
    :class:`ConstrainedLayer`, ``eval_forward``, ``apply_weight`` or ``applied_weight``) but
    inherits the bound (e.g. a ``Sequential`` whose ``forward`` returns
    ``10 * super().forward(x)``).

    Raises:
        TypeError: with what to do (state the bound of the new ``forward``).
    """
    cls = type(module)
    bound = _owner(cls, "lipschitz_bound")
    if bound is None:  # not a onelip layer: no bound stated, nothing to check
        return
    for name in _BOUND_DEPENDS_ON:
        if not hasattr(cls, name):
            continue
        fwd = _owner(cls, name)
        if fwd is not bound and issubclass(fwd, bound):
            raise TypeError(
                f"{cls.__name__} overrides {name}() but inherits lipschitz_bound() from "
                f"{bound.__name__}, which was derived for {bound.__name__}'s {name}: refusing "
                f"to certify it; define {cls.__name__}.lipschitz_bound() for the new {name}"
            )


def tensor_digest(t: Tensor) -> Tensor:
    """The SHA-256 of ``t``'s bytes as a (32,) uint8 tensor: how a layer's saved hidden state
    names the latent it belongs to (:meth:`ConstrainedLayer.set_extra_state`)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return torch.frombuffer(bytearray(hashlib.sha256(raw).digest()), dtype=torch.uint8)


# ==== the layer author's contract ==========================================================


class ConstrainedLayer(LipschitzModule):
    r"""Base of the onelip layers with weights: the mechanism, split from each family's
    constraint (as ``torch.nn.utils.parametrize`` splits them).

    **A family defines** (one file under ``src/onelip/nn/``; see ``docs/architecture.md``):

    1. ``__init__`` with keyword-only options, its parameters (:meth:`DenseLayer._init_dense`
       / :meth:`ConvLayer._init_conv` make the usual ones) and ``reset_parameters()``;
    2. :meth:`applied_weight` — the weight **as applied in eval mode**, built from the stored
       latents in float64 and rounded with a margin (:meth:`cast_unit`, or
       :func:`~onelip.functional.float32_cast_margin`) so that its bound holds for the
       rounded values the forward multiplies by; called without gradients, cached;
    3. :meth:`train_weight` — the constrained weight with gradients (what
       :meth:`effective_weight` returns in training and the training forward applies, unless
       the family overrides :meth:`train_forward` with something cheaper);
    4. :meth:`lipschitz_bound` — the certified bound of the eval-mode function (one line
       with its reason: ``return 1.0  # ...``); a subclass that overrides ``forward``,
       ``eval_forward``, ``apply_weight`` or ``applied_weight`` must restate it
       (:func:`check_bound_applies`);
    5. its plain twin, when it is not the shape class's: :meth:`plain_twin` (a
       :class:`DenseLayer` exports to ``nn.Linear``, a :class:`ConvLayer` to ``nn.Conv2d``);
    6. optionally ``retract_()`` (called after optimiser steps by
       :func:`onelip.nn.utils.retract_`) and hidden training state as a tensor through
       ``get_extra_state`` / ``set_extra_state`` (saved in its ``state_dict``; a state dict
       written before the layer had it still loads).

    **It gets for free:** ``forward`` (the input check with a one-line error, full precision
    under autocast when ``full_precision_forward``, then :meth:`train_forward` or
    :meth:`eval_forward`); the eval-mode cache of :meth:`applied_weight`, keyed on the
    latents (every own parameter but ``bias``: :meth:`_cache_sources`) and invalidated by
    ``train()``, an optimiser step, ``load_state_dict``, ``.to()`` and ``deepcopy``;
    :meth:`eval_weight`, :meth:`effective_weight`, :meth:`export` (the plain twin of the
    eval-mode function, in either mode); the float32 cast margin (:meth:`cast_unit`); and the
    suite's generic attacks (``tests/test_layer_table.py``), at once for a family listed in
    :data:`~onelip.nn.DENSE_LAYERS` / :data:`~onelip.nn.CONV_LAYERS`, through its line in
    ``tests/layer_table.py`` for any other public layer.

    Class attributes:
        input_layout: ``"features"`` (input :math:`(*, H_{in})`, ``self.in_features``) or
            ``"image"`` (input :math:`(N, C_{in}, H, W)`, ``self.in_channels``).
        full_precision_forward: run the whole forward with autocast off (dense layers and
            residual blocks, cheap beside the convolutions); ``False`` (the convolutions)
            builds only the weight in full precision and applies it under the ambient
            autocast.

    Example (a whole family: :math:`y = Wx/\|W\|_F + b`, 1-Lipschitz as
    :math:`\|W\|_2 \le \|W\|_F`):
        >>> class Frobenius(DenseLayer):
        ...     def __init__(self, in_features, out_features):
        ...         super().__init__()
        ...         self._init_dense(in_features, out_features, bias=True)
        ...         torch.nn.init.normal_(self.weight)
        ...     def train_weight(self):
        ...         return self.weight / self.weight.norm()
        ...     def applied_weight(self):
        ...         w64 = self.weight.detach().double()
        ...         return self.cast_unit(w64 / w64.norm())
        ...     def lipschitz_bound(self):
        ...         return 1.0  # ‖W‖₂ ≤ ‖W‖_F; eval: the rounding by cast_unit
        >>> layer = Frobenius(6, 3).eval()
        >>> plain = layer.export()  # an nn.Linear with the weight as applied
        >>> bool(torch.linalg.matrix_norm(plain.weight.double(), ord=2) <= 1)
        True
        >>> x = torch.randn(4, 6)
        >>> bool(torch.equal(plain(x), layer(x)))
        True
    """

    input_layout: ClassVar[str] = "features"
    full_precision_forward: ClassVar[bool] = False

    # ---- what a family defines ----------------------------------------------------------

    @abc.abstractmethod
    def applied_weight(self) -> Any:
        """The certified eval-mode weight (or tuple of weights) from the latents as stored,
        in the parameter dtype; no gradients."""

    def train_weight(self) -> Any:
        """The constrained weight with gradients (training)."""
        raise NotImplementedError(f"{type(self).__name__} defines no train_weight()")

    def apply_weight(self, x: Tensor, weight: Any) -> Tensor:
        """The layer's function with ``weight`` (``x`` already checked)."""
        raise NotImplementedError(f"{type(self).__name__} defines no apply_weight()")

    def plain_twin(self, weight: Any) -> nn.Module:
        """Plain torch modules computing :meth:`apply_weight` with ``weight`` (copies)."""
        raise NotImplementedError(f"{type(self).__name__} defines no plain_twin()")

    # ---- what it gets --------------------------------------------------------------------

    def _init_bias(self, features: int, bias: bool, *, device=None, dtype=None) -> None:
        """``bias``: a (features,) parameter of zeros, or ``None``."""
        if bias:
            self.bias = nn.Parameter(torch.zeros(features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def _cache_sources(self) -> tuple[Tensor, ...]:
        # Read at every eval forward (the cache key): the registry itself, not the
        # named_parameters generator.
        return tuple(p for n, p in self._parameters.items() if p is not None and n != "bias")

    def _param_dtype(self) -> torch.dtype:
        return param_dtype(self)

    def cast_unit(self, w64: Tensor) -> Tensor:
        r"""``w64`` (float64, :math:`\sigma_{\max} \le 1`) rounded to the parameter dtype
        with :math:`\sigma_{\max} \le 1` kept (:func:`~onelip.functional.unit_norm_cast`)."""
        return F.unit_norm_cast(w64, self._param_dtype())

    def eval_weight(self) -> Any:
        """:meth:`applied_weight`: cached in eval mode, recomputed in training (no grad)."""
        if self.training:
            with torch.no_grad():
                return self.applied_weight()
        return self._cached("weight", self.applied_weight)

    def effective_weight(self) -> Any:
        """The constrained weight: :meth:`train_weight` (with gradients) in training, the
        certified :meth:`applied_weight` (cached) in eval mode."""
        return self.train_weight() if self.training else self.eval_weight()

    def check_input(self, x: Tensor) -> None:
        """Raise a one-line ``ValueError`` unless ``x`` has the layout the layer takes."""
        if self.input_layout == "image":
            c = self.in_channels
            if x.dim() != 4 or x.shape[1] != c:
                raise ValueError(f"{type(self).__name__} expected input of shape (N, {c}, H, "
                                 f"W), but got {tuple(x.shape)}")
        elif x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Expected input with last dimension {self.in_features}, but "
                             f"got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if self.full_precision_forward:
            return float32_call(self, self._mode_forward, x)
        return self._mode_forward(x)

    def _mode_forward(self, x: Tensor) -> Tensor:
        return self.train_forward(x) if self.training else self.eval_forward(x)

    def train_forward(self, x: Tensor) -> Tensor:
        """The training forward: :meth:`apply_weight` with :meth:`train_weight`."""
        return self.apply_weight(x, self.train_weight())

    def eval_forward(self, x: Tensor) -> Tensor:
        """The eval-mode forward: :meth:`apply_weight` with the cached :meth:`applied_weight`."""
        return self.apply_weight(x, self.eval_weight())

    @torch.no_grad()
    def export(self) -> nn.Module:
        """Plain torch modules computing the eval-mode function (in either mode)."""
        return self.plain_twin(self.eval_weight())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        key = prefix + "_extra_state"
        if key in missing_keys:  # written before the layer saved its hidden state: keep it
            missing_keys.remove(key)


class DenseLayer(ConstrainedLayer):
    r"""A :class:`ConstrainedLayer` applying a weight of shape (out, in) as ``nn.Linear``:
    :math:`y = x W^\top + b`, :math:`(*, H_{in}) \to (*, H_{out})`; it exports to
    ``nn.Linear`` and runs in full precision under autocast."""

    input_layout: ClassVar[str] = "features"
    full_precision_forward: ClassVar[bool] = True

    def _init_dense(self, in_features: int, out_features: int, *, bias: bool, device=None,
                    dtype=None) -> None:
        """``in_features``, ``out_features``, ``weight`` (out, in, uninitialised) and
        ``bias`` (zeros, or ``None``)."""
        factory = {"device": device, "dtype": dtype}
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"Expected positive in_features and out_features, but got "
                f"in_features={in_features}, out_features={out_features}"
            )
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self._init_bias(out_features, bias, device=device, dtype=dtype)

    @classmethod
    def for_shape(cls, in_features: int, out_features: int, **options) -> "DenseLayer":
        """The layer from in → out features: how :mod:`onelip.models` builds a family by
        its name in :data:`onelip.nn.DENSE_LAYERS`."""
        return cls(in_features, out_features, **options)

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return TF.linear(x, weight, self.bias)

    def plain_twin(self, weight: Tensor) -> nn.Module:
        return plain_linear(weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


_PADDING_MODES = ("zeros", "circular")


class ConvLayer(ConstrainedLayer):
    r"""A :class:`ConstrainedLayer` applying a kernel (C_out, C_in, k, k) as ``nn.Conv2d``
    with ``stride``, ``padding`` and ``padding_mode``:
    :math:`(N, C_{in}, H, W) \to (N, C_{out}, H', W')`; it exports to ``nn.Conv2d``. The
    weight is built in full precision; the convolution runs under the ambient autocast."""

    input_layout: ClassVar[str] = "image"
    full_precision_forward: ClassVar[bool] = False

    def _init_conv(self, in_channels: int, out_channels: int, kernel_size: int, *,
                   stride: int = 1, padding: int | None = None,
                   padding_mode: str = "zeros") -> None:
        """Check and set ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
        ``padding`` (pairs; default padding ``(k-1)//2``) and ``padding_mode``; the family
        makes its latents, then the bias (:meth:`_init_bias`)."""
        k, s = int(kernel_size), int(stride)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"Expected positive channels, but got in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"Expected padding_mode 'zeros' or 'circular', but got {padding_mode!r}"
            )
        p = (k - 1) // 2 if padding is None else int(padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (k, k), (s, s), (p, p)
        self.padding_mode = padding_mode

    sized_by_input: ClassVar[bool] = False
    """Whether the family's operator depends on the input size (its constructor takes
    ``input_size=``: SpectralConv2d, BROConv2d, ...)."""

    @classmethod
    def for_shape(cls, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                  stride: int = 1, input_size: tuple[int, int]) -> "ConvLayer":
        """The layer for inputs of shape (C_in, H, W) = (``in_channels``, *``input_size``):
        how :mod:`onelip.models` builds a family by its name in
        :data:`onelip.nn.CONV_LAYERS` (``input_size`` is passed on to the families that are
        :attr:`sized_by_input`)."""
        sized = {"input_size": input_size} if cls.sized_by_input else {}
        return cls(in_channels, out_channels, kernel_size, stride=stride, **sized)

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.padding_mode == "circular":
            ph, pw = self.padding
            x = TF.pad(x, (pw, pw, ph, ph), mode="circular")
            return TF.conv2d(x, weight, self.bias, stride=self.stride)
        return TF.conv2d(x, weight, self.bias, stride=self.stride, padding=self.padding)

    def plain_twin(self, weight: Tensor) -> nn.Module:
        return plain_conv(self, weight, padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"padding_mode={self.padding_mode!r}, bias={self.bias is not None}")

# SPDX-License-Identifier: MIT
"""Dense 1-Lipschitz layers: :class:`OrthoLinear`, :class:`SpectralLinear`,
:class:`FrobeniusLinear`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import LipschitzModule

__all__ = ["FrobeniusLinear", "OrthoLinear", "SpectralLinear"]

# A latent whose certified bound of σ_max(W)² (Gram row sums) exceeds this is retracted
# before a training forward; the one-step Björck map used in training is ≤ 1 for any
# σ_max(W) ≤ 2 (see OrthoLinear).
_TRAIN_GUARD = 4.0


def _init_linear(layer: nn.Module, in_features: int, out_features: int, bias: bool,
                 device, dtype) -> None:
    factory = {"device": device, "dtype": dtype}
    if in_features < 1 or out_features < 1:
        raise ValueError(
            f"Expected positive in_features and out_features, but got "
            f"in_features={in_features}, out_features={out_features}"
        )
    layer.in_features = in_features
    layer.out_features = out_features
    layer.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
    if bias:
        layer.bias = nn.Parameter(torch.zeros(out_features, **factory))
    else:
        layer.register_parameter("bias", None)


class OrthoLinear(LipschitzModule):
    r"""Linear layer with an orthogonal weight: all singular values equal to 1.

    .. math::
        y = Q x + b, \qquad Q = \operatorname{polar}(W) = U V^\top
        \quad\text{for}\quad W = U \Sigma V^\top,

    the closest orthogonal matrix to the latent weight :math:`W` (orthonormal rows if
    out ≤ in, orthonormal columns if out > in). Q is a function of W alone and is orthogonal
    for *any* full-rank W, not only near its initialisation.

    **Eval mode (exact, cached).** Q is computed by :func:`onelip.functional.polar_bjorck` in
    float64 from a certified start, iterated until :math:`\|Q^\top Q - I\|_F \le 10^{-10}`
    (σ within 1e-10 of 1 before the float32 cast), then divided by
    :math:`\sqrt{1+\|Q^\top Q-I\|_F}` so that :math:`\|Q\|_2 \le 1` holds whatever happens.
    It is computed once and cached: inference costs one ``F.linear``.

    **Train mode (fast).** Orthonormalising a 512×512 matrix at every step (Cholesky ~18 ms,
    Björck from scratch ~30 matmuls) costs ×10–20 the layer itself on a CPU. Instead the
    forward applies *one* Björck step to the latent, without forming it:
    :math:`y = \tfrac32 xW^\top - \tfrac12 ((xW^\top)W)W^\top`. On singular values this is
    :math:`\sigma\mapsto \tfrac32\sigma-\tfrac12\sigma^3 \le 1` for every :math:`\sigma\le2`
    (so the layer is 1-Lipschitz in training too), equal to 1 with zero derivative at
    :math:`\sigma = 1`, and its gradient at an orthogonal W is the gradient of the polar map.
    :meth:`retract_` keeps the latent near orthogonal (one certified Björck step, which leaves
    polar(W) — the eval function — unchanged); :func:`onelip.train.fit` calls it after each
    optimiser step. A certified guard retracts the latent before a training forward if the
    Gram row-sum bound allows :math:`\sigma_{\max}(W) > 2`; it costs nothing when
    :meth:`retract_` certified the current latent, one Gram matrix otherwise. Measured
    choice: ``benchmarks/results/dense.md``.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias. Default: ``True``.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.

    Example:
        >>> layer = OrthoLinear(64, 64).eval()
        >>> s = torch.linalg.svdvals(layer.effective_weight())
        >>> bool((s - 1).abs().max() < 1e-5)
        True
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        _init_linear(self, in_features, out_features, bias, device, dtype)
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("_u", torch.empty(out_features, **factory), persistent=False)
        self.register_buffer("_v", torch.empty(in_features, **factory), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        with torch.no_grad():
            self._v.copy_(TF.normalize(torch.ones_like(self._v), dim=0))
            self._u.copy_(TF.normalize(self.weight @ self._v, dim=0))

    def _cache_sources(self):
        return (self.weight,)

    def effective_weight(self) -> Tensor:
        """The exact orthogonal Q = polar(W), shape (out, in); cached in eval mode."""
        if self.training:
            return F.polar_bjorck(self.weight)[0]
        return self._cached("weight", lambda: F.polar_bjorck(self.weight)[0])

    @torch.no_grad()
    def retract_(self) -> None:
        """Move the latent W towards polar(W) without changing polar(W).

        One Björck step when the certified Gram bound allows it (σ_max(W)² ≤ 2.5), a full
        :func:`~onelip.functional.polar_bjorck` otherwise.
        """
        w = self.weight
        gram = F._small_gram(w)
        if float(F.gram_row_sum_bound(gram)) <= 2.5:
            w.copy_(F.bjorck_step(w, gram))
        else:
            w.copy_(F.polar_bjorck(w)[0])
        self._mark_certified()  # σ_max(W) ≤ 1 now (Björck step from σ² ≤ 2.5, or polar)

    def _mark_certified(self) -> None:
        w = self.weight
        self.__dict__["_certified_latent"] = (w._version, w.data_ptr(), w.dtype, w.device)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Expected input with last dimension {self.in_features}, "
                f"but got shape {tuple(x.shape)}"
            )
        if self.training:
            self._guard()
            return F.bjorck1_linear(x, self.weight, self.bias)
        return TF.linear(x, self.effective_weight(), self.bias)

    @torch.compiler.disable
    @torch.no_grad()
    def _guard(self) -> None:
        # Note: a certified bound, not a power-iteration estimate (a lower bound): one Adam
        # step can create a large singular direction that a warm power iteration misses
        # (σ_max(W) ≈ 4 unseen at lr 0.05; see tests/test_nn_dense.py).
        w = self.weight
        if self.__dict__.get("_certified_latent") == (w._version, w.data_ptr(), w.dtype,
                                                      w.device):
            return
        bound = float(F.gram_row_sum_bound(F._small_gram(w)))
        if not math.isfinite(bound) or bound > _TRAIN_GUARD:
            w.copy_(F.polar_bjorck(w)[0])
        self._mark_certified()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class SpectralLinear(LipschitzModule):
    r"""Linear layer normalised by its largest singular value.

    .. math::
        y = \frac{W}{\sigma_{\max}(W)} x + b .

    **Eval mode (exact, cached).** :math:`\sigma_{\max}` is computed by SVD in float64, once:
    the spectral norm of the effective weight is 1 to float rounding.

    **Train mode.** :math:`\hat\sigma = u^\top W v` after ``n_power_iterations`` steps of power
    iteration with persistent vectors u, v (buffers, saved in the ``state_dict``), started from
    the exact top singular vectors at initialisation. :math:`\hat\sigma \le \sigma_{\max}`, so the
    train-mode norm is :math:`\sigma_{\max}/\hat\sigma \ge 1`: the training forward is only
    *approximately* 1-Lipschitz (as with ``torch.nn.utils.spectral_norm``). It is within 1e-4 of 1
    right after initialisation; during training σ̂ lags when the weights move faster than one
    power-iteration step follows: measured up to 1.017 (64×64, Adam lr 1e-3, 25 steps; tested
    ≤ 1.05) and up to 1.28 under a loss that pushes a second singular value past the first
    (1.09 with ``n_power_iterations=4``). **Eval mode is exact** (the norm is 1 to float
    rounding), and certificates are computed in eval mode. Use :class:`OrthoLinear` when the
    training forward itself must be ≤ 1.

    Args:
        in_features, out_features, bias: as in :class:`torch.nn.Linear`.
        n_power_iterations: power-iteration steps per training forward. Default: 1.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 n_power_iterations: int = 1, device=None, dtype=None) -> None:
        super().__init__()
        if n_power_iterations < 1:
            raise ValueError(
                "Expected n_power_iterations to be positive, but got "
                f"n_power_iterations={n_power_iterations}"
            )
        _init_linear(self, in_features, out_features, bias, device, dtype)
        self.n_power_iterations = n_power_iterations
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("u", torch.empty(out_features, **factory))
        self.register_buffer("v", torch.empty(in_features, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        with torch.no_grad():
            u, _, vh = torch.linalg.svd(self.weight.double(), full_matrices=False)
            self.u.copy_(u[:, 0])
            self.v.copy_(vh[0])

    def _cache_sources(self):
        return (self.weight,)

    def _exact_weight(self) -> Tensor:
        return self.weight / F.spectral_norm_exact(self.weight)

    def effective_weight(self) -> Tensor:
        """W / σ_max(W) (exact), shape (out, in); cached in eval mode."""
        if self.training:
            return self._exact_weight()
        return self._cached("weight", self._exact_weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Expected input with last dimension {self.in_features}, "
                f"but got shape {tuple(x.shape)}"
            )
        if self.training:
            F.power_iteration(self.weight, self.u, self.v, n_iter=self.n_power_iterations)
            # Note: u, v are updated in place, so the graph keeps clones of them (as torch's
            # spectral_norm does): two forwards before one backward (pairs, GANs) still work.
            sigma = torch.dot(self.u.clone(), self.weight @ self.v.clone())  # grad through W
            return TF.linear(x, self.weight / sigma, self.bias)
        return TF.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, "
                f"n_power_iterations={self.n_power_iterations}")


class FrobeniusLinear(LipschitzModule):
    r"""Linear layer normalised by the Frobenius norm: :math:`y = W x / \|W\|_F + b`.

    :math:`\|W\|_2 \le \|W\|_F`, so the layer is 1-Lipschitz; for one output (a binary head)
    the two norms coincide and the layer is exactly 1-Lipschitz *and* gradient-norm preserving.

    With ``per_row=True`` each row is normalised separately (:math:`w_i/\|w_i\|`): every output
    is 1-Lipschitz but the layer as a whole is not (its norm can reach :math:`\sqrt{out}`);
    :meth:`lipschitz_bound` then returns the exact spectral norm of the normalised weight, and
    certificates use it.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.
    """

    def __init__(self, in_features: int, out_features: int = 1, *, bias: bool = True,
                 per_row: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        _init_linear(self, in_features, out_features, bias, device, dtype)
        self.per_row = per_row
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _cache_sources(self):
        return (self.weight,)

    def _normalised(self) -> Tensor:
        if self.per_row:
            return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.weight / self.weight.norm().clamp_min(1e-12)

    def effective_weight(self) -> Tensor:
        if self.training:
            return self._normalised()
        return self._cached("weight", self._normalised)

    def lipschitz_bound(self) -> float:
        if not self.per_row:
            return 1.0
        return float(F.spectral_norm_exact(self._normalised())) * (1 + 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Expected input with last dimension {self.in_features}, "
                f"but got shape {tuple(x.shape)}"
            )
        return TF.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, per_row={self.per_row}")

# SPDX-License-Identifier: MIT
"""1-Lipschitz residual blocks: :class:`ConvexResidual`, :class:`SLLBlock` (dense) and
:class:`SLLConv2d` (convolutional), after Araujo et al., ICLR 2023."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import ConstrainedLayer, LipschitzModule, check_bound_applies
from onelip.nn._precision import float32_forward, full_precision
from onelip.nn.plain import Residual
from onelip.nn.sequential import module_lipschitz_bound
from onelip.nn.utils import export_tree

__all__ = ["ConvexResidual", "SLLBlock", "SLLConv2d"]

# The training forward's T⁻¹ is computed in the weights' dtype: each T_ii sums n1·n2 rounded
# terms (n1 per Gram entry, n2 Gram entries), and a T⁻¹ rounded *up* lifts a block whose
# Gershgorin bound is tight (one inner unit: the reflection I − 2wwᵀ/‖w‖²) above 1 (measured
# 1 + 2e-7 in float32). The training T⁻¹ is therefore shrunk by 4u√(n1 + n2) (u the unit
# roundoff: 2^-24 in float32), 3× and more the relative error of T⁻¹ measured (dense blocks
# of 1–512 features and 1–64 units, convolutions of 1–128 channels and 1–128 inner ones,
# 1×1 and 3×3; tests/test_train_mode_margin.py). Not a proof (a worst-case bound of the sums,
# n·u times a ratio of |K|⋆|K| to |K⋆K|, is up to 4e-3 for 256 channels, and a convolution
# algorithm may round otherwise); eval mode, which certificates use, computes T in float64
# and is proven (onelip.functional.sll_cast).
_TRAIN_MARGIN = 4.0


def _train_t_inv(t_inv: Tensor, n1: int, n2: int) -> Tensor:
    """T⁻¹ of the training forward: ``t_inv`` shrunk by its rounding margin (above)."""
    u = torch.finfo(t_inv.dtype).eps / 2
    return t_inv * (1.0 - _TRAIN_MARGIN * u * math.sqrt(n1 + n2))


class ConvexResidual(LipschitzModule):
    r"""Convex combination of the identity and a 1-Lipschitz branch.

    .. math::
        y = (1 - \lambda)\,x + \lambda\,g(x), \qquad \lambda \in [0, 1],

    Lipschitz constant :math:`\le (1-\lambda) + \lambda L_g` (triangle inequality): 1 when g
    is 1-Lipschitz. With ``learnable=True``, :math:`\lambda = \operatorname{sigmoid}(\theta)`
    is trained (initialised at ``lam``).

    Args:
        body: g, a module whose output has the shape of its input.
        lam: λ. Default: 0.5.
        learnable: train λ. Default: ``False``.

    Shape:
        :math:`(N, *) \to (N, *)`.
    """

    def __init__(self, body: nn.Module, lam: float = 0.5, *, learnable: bool = False) -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"Expected lam in [0, 1], but got lam={lam}")
        self.body = body
        self.learnable = bool(learnable)
        if learnable:
            lam_c = min(max(lam, 1e-6), 1 - 1e-6)
            self.logit = nn.Parameter(torch.tensor(math.log(lam_c / (1 - lam_c))))
        else:
            self.register_buffer("logit", None)
            self._lam = float(lam)

    @property
    def lam(self) -> Tensor | float:
        return torch.sigmoid(self.logit) if self.logit is not None else self._lam

    @float32_forward
    def forward(self, x: Tensor) -> Tensor:
        lam = self.lam
        return (1 - lam) * x + lam * self.body(x)

    @torch.no_grad()
    def _applied(self) -> list[tuple[float, float]]:
        """The coefficients (1 − λ, λ) as the forward can apply them: the learnable λ's in
        its own dtype; a fixed λ rounded to float32 (a float32 input) or exact (float64)."""
        if self.logit is not None:
            lam = torch.sigmoid(self.logit)
            return [(float(1 - lam), float(lam))]
        lam = self._lam
        f32 = torch.tensor([1 - lam, lam], dtype=torch.float32).tolist()
        return [(1 - lam, lam), (f32[0], f32[1])]

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        r""":math:`\hat a + \hat b L_g` for the coefficients :math:`\hat a, \hat b` the
        forward applies (float32 rounding can lift :math:`\hat a + \hat b` above 1 by an
        ulp: for a third of the λ values), computed exactly and rounded up."""
        check_bound_applies(self)
        lip = Fraction(module_lipschitz_bound(self.body))
        out = 0.0
        for a, b in self._applied():
            exact = Fraction(a) + Fraction(b) * lip
            v = float(exact)
            out = max(out, v if Fraction(v) >= exact else math.nextafter(v, math.inf))
        return out

    @torch.no_grad()
    def export(self) -> nn.Module:
        lam = float(self.lam)
        return Residual(export_tree(self.body), skip=1 - lam, scale=lam)

    def extra_repr(self) -> str:
        return f"lam={float(torch.as_tensor(self.lam).detach()):.4g}, " \
            f"learnable={self.logit is not None}"


class SLLBlock(ConstrainedLayer):
    r"""Dense SDP-based Lipschitz layer (SLL), a 1-Lipschitz residual block.

    .. math::
        y = x - 2\,W T^{-1} \operatorname{ReLU}(W^\top x + b), \qquad
        T_{ii} = \sum_j |W^\top W|_{ij}\, \frac{q_j}{q_i},

    W (features × inner), :math:`q = e^{\log q} > 0` learned. :math:`T \succeq W^\top W`,
    which makes the block 1-Lipschitz for every W, b, q (Araujo et al. 2023, Thm 3): in
    train and eval mode, no approximation. **Train mode** computes :math:`T^{-1}` in the
    weights' dtype and shrinks it by a rounding margin :math:`4u\sqrt{d + m}` (u = 2^-24 in
    float32: 2.7e-6 for d = m = 64), measured to cover its rounding (module note).

    **Eval mode** (cached, and what :meth:`export` folds in): T in float64 from the weights
    as stored, :math:`2WT^{-1}` rounded to the parameter dtype, and the identity scaled by
    :math:`a = 1 - \eta` (:meth:`skip_factor`; η ~ 1e-7–1e-6 in float32, 0 in float64) so
    that the rounding cannot lift the block above 1 (:func:`onelip.functional.sll_cast`).

    Args:
        features: d.
        inner: m, the hidden units. Default: d.

    Shape:
        :math:`(*, d) \to (*, d)`.

    Reference:
        Araujo, Havens, Delattre, Allauzen, Hu, *A Unified Algebraic Perspective on Lipschitz
        Neural Networks*, ICLR 2023.
    """

    def __init__(self, features: int, inner: int | None = None, *, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        inner = features if inner is None else int(inner)
        if features < 1 or inner < 1:
            raise ValueError(f"Expected positive sizes, but got {features}, {inner}")
        self.features, self.inner = features, inner
        self.weight = nn.Parameter(torch.empty(features, inner, **factory))
        self.bias = nn.Parameter(torch.empty(inner, **factory))
        self.log_q = nn.Parameter(torch.zeros(inner, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight)
        bound = 1 / math.sqrt(self.features)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.log_q)

    full_precision_forward = True

    @property
    def in_features(self) -> int:
        return self.features

    def _t_inv(self) -> Tensor:
        """T⁻¹ (m,) of the training forward, with its float rounding margin."""
        return _train_t_inv(F.sll_scaling(self.weight.mT @ self.weight, self.log_q),
                            self.features, self.inner)

    def applied_weight(self) -> tuple[float, Tensor]:
        """``(a, w_out)``: the skip factor 1 − η and :math:`2aWT^{-1}` (d, m) from float64,
        rounded as the class says (:func:`onelip.functional.sll_cast`)."""
        return F.sll_cast(self.weight, self.log_q)

    def train_weight(self) -> tuple[float, Tensor]:
        """``(1, 2WT⁻¹)`` with gradients."""
        return 1.0, 2 * self.weight * self._t_inv()

    def train_forward(self, x: Tensor) -> Tensor:
        # T⁻¹ scales the hidden units, not W: the operator applied, I - 2 W T⁻¹ D Wᵀ, stays
        # symmetric (a rounded 2WT⁻¹ would perturb it by a non-symmetric u·|2WT⁻¹| Wᵀ, whose
        # mixing lifted the reflection of one unit to 1 + 3e-10 however small T⁻¹)
        h = torch.relu(TF.linear(x, self.weight.mT, self.bias))
        return x - 2 * TF.linear(h * self._t_inv(), self.weight)

    def skip_factor(self) -> float:
        """a in :math:`y = a\\,x - \\dots`: 1 in training, 1 − η in eval mode (the class)."""
        return 1.0 if self.training else self.eval_weight()[0]

    def effective_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(w_in, b, w_out)`` with :math:`y = a\\,x - \\mathrm{ReLU}(x w_{in}^\\top + b)
        w_{out}^\\top` (a = :meth:`skip_factor`): w_in (m, d) = Wᵀ, w_out (d, m) = 2a W T⁻¹,
        in eval mode rounded as the class says. Built in full precision under autocast."""
        with full_precision(self.weight.device):
            return self.weight.mT, self.bias, self.effective_weight()[1]

    def lipschitz_bound(self) -> float:
        return 1.0  # Araujo et al. 2023, Thm 3; eval: rounding absorbed by a (sll_cast)

    def apply_weight(self, x: Tensor, weight: tuple[float, Tensor]) -> Tensor:
        a, w_out = weight
        h = torch.relu(TF.linear(x, self.weight.mT, self.bias))
        return (x if a == 1.0 else a * x) - TF.linear(h, w_out)

    def plain_twin(self, weight: tuple[float, Tensor]) -> nn.Module:
        """:class:`~onelip.nn.plain.Residual` of Linear → ReLU → Linear, skip a, scale −1."""
        a, w_out = weight
        w_in, b = self.weight.detach().mT.clone(), self.bias.detach().clone()
        first = nn.Linear(self.features, self.inner, device=w_in.device, dtype=w_in.dtype)
        second = nn.Linear(self.inner, self.features, bias=False, device=w_in.device,
                           dtype=w_in.dtype)
        first.weight.copy_(w_in)
        first.bias.copy_(b)
        second.weight.copy_(w_out)
        return Residual(nn.Sequential(first, nn.ReLU(), second), skip=a, scale=-1.0)

    def extra_repr(self) -> str:
        return f"features={self.features}, inner={self.inner}"


class SLLConv2d(ConstrainedLayer):
    r"""Convolutional SLL block: a 1-Lipschitz residual block with zero "same" padding.

    .. math::
        y = x - 2\,T_K^\top\big(t \odot \operatorname{ReLU}(T_K x + b)\big), \qquad
        t_i^{-1} = \sum_{j,\delta} |(K \star K)_{ij\delta}|\,\frac{q_j}{q_i},

    :math:`T_K` = ``conv2d(·, K, padding=(k-1)/2)`` (:math:`C \to m` channels),
    :math:`T_K^\top` its adjoint ``conv_transpose2d``, :math:`K \star K` the autocorrelation
    kernel of :math:`T_K T_K^\top` (:func:`onelip.functional.sll_conv_gram`), q > 0 learned.
    1-Lipschitz for every K, b, q, in train and eval mode (the padded Gram is dominated by
    the infinite one; :func:`onelip.functional.sll_conv2d`). In eval mode (cached, and what
    :meth:`export` folds in) t is computed in float64 from the kernel as stored,
    :math:`2K\,t` is rounded to the parameter dtype and the identity scaled by
    :math:`a = 1 - \eta` (:meth:`skip_factor`; η ~ 1e-7–1e-6 in float32, 0 in float64) so
    that the rounding cannot lift the block above 1 (:func:`onelip.functional.sll_cast`). In
    train mode t is computed in the weights' dtype and shrunk by a rounding margin
    :math:`4u\sqrt{Ck^2 + m(2k-1)^2}` (1.5e-5 for C = m = 128, k = 3), measured to cover
    its rounding (module note).

    Args:
        channels: C (input = output channels).
        inner_channels: m. Default: C.
        kernel_size: odd k. Default: 3.

    Shape:
        :math:`(N, C, H, W) \to (N, C, H, W)`.

    Reference:
        Araujo, Havens, Delattre, Allauzen, Hu, *A Unified Algebraic Perspective on Lipschitz
        Neural Networks*, ICLR 2023.
    """

    def __init__(self, channels: int, inner_channels: int | None = None, kernel_size: int = 3,
                 *, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        inner = channels if inner_channels is None else int(inner_channels)
        if channels < 1 or inner < 1:
            raise ValueError(f"Expected positive channels, but got {channels}, {inner}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Expected an odd kernel_size, but got {kernel_size}")
        self.channels, self.inner_channels = channels, inner
        self.kernel_size = (kernel_size, kernel_size)
        self.padding = ((kernel_size - 1) // 2, (kernel_size - 1) // 2)
        self.stride = (1, 1)
        self.weight = nn.Parameter(
            torch.empty(inner, channels, kernel_size, kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(inner, **factory))
        self.log_q = nn.Parameter(torch.zeros(inner, **factory))
        self.reset_parameters()

    @classmethod
    def for_shape(cls, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                  stride: int = 1, input_size: tuple[int, int] | None = None) -> "SLLConv2d":
        """The block for ``layer='sll'`` of :mod:`onelip.models`: a residual block keeps its
        shape, so only ``in_channels == out_channels`` and stride 1 are accepted."""
        if in_channels != out_channels or stride != 1:
            raise ValueError(
                f"SLLConv2d is a residual block (in_channels = out_channels, stride 1), but "
                f"a model asked for {in_channels} -> {out_channels} channels with stride "
                f"{stride}; use layer='sll' in lipconvnet, or a shape-changing family "
                f"(e.g. 'ortho') where the model changes the shape")
        return cls(in_channels, kernel_size=kernel_size)

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight)
        fan_in = self.channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.log_q)

    input_layout = "image"
    full_precision_forward = True

    @property
    def in_channels(self) -> int:
        return self.channels

    def _t_inv(self) -> Tensor:
        """t (m,) of the training forward, with its float rounding margin."""
        k = self.kernel_size[0]
        return _train_t_inv(F.sll_scaling(F.sll_conv_gram(self.weight), self.log_q),
                            self.channels * k * k, self.inner_channels * (2 * k - 1) ** 2)

    def applied_weight(self) -> tuple[float, Tensor]:
        """``(a, out)``: the skip factor 1 − η and :math:`2aK\\,t` (m, C, k, k) from
        float64, rounded as the class says (:func:`onelip.functional.sll_cast`)."""
        return F.sll_cast(self.weight, self.log_q)

    def train_weight(self) -> tuple[float, Tensor]:
        """``(1, 2K t)`` with gradients."""
        return 1.0, 2 * self.weight * self._t_inv()[:, None, None, None]

    def skip_factor(self) -> float:
        """a in :math:`y = a\\,x - \\dots`: 1 in training, 1 − η in eval mode (the class)."""
        return 1.0 if self.training else self.eval_weight()[0]

    def effective_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(w_in, b, w_out)`` with :math:`y = a\\,x - \\mathrm{conv}(\\mathrm{ReLU}(
        \\mathrm{conv}(x, w_{in}) + b), w_{out})` (a = :meth:`skip_factor`), both convs
        stride 1 with ``padding``: w_in (m, C, k, k) = K, w_out (C, m, k, k) = the adjoint
        kernel of :math:`2a\\,T_K^\\top\\,\\mathrm{diag}(t)` (transposed and flipped), in eval
        mode rounded as the class says. Built in full precision under autocast."""
        with full_precision(self.weight.device):
            out = self.effective_weight()[1]
        return self.weight, self.bias, out.transpose(0, 1).flip(-2, -1)

    def lipschitz_bound(self) -> float:
        return 1.0  # Araujo et al. 2023, Thm 3; eval: rounding absorbed by a (sll_cast)

    def train_forward(self, x: Tensor) -> Tensor:
        h = torch.relu(TF.conv2d(x, self.weight, self.bias, padding=self.padding))
        t_inv = self._t_inv()
        return x - 2 * TF.conv_transpose2d(h * t_inv[:, None, None], self.weight,
                                           padding=self.padding)

    def apply_weight(self, x: Tensor, weight: tuple[float, Tensor]) -> Tensor:
        a, out = weight  # out = 2a K t, rounded
        h = torch.relu(TF.conv2d(x, self.weight, self.bias, padding=self.padding))
        return (x if a == 1.0 else a * x) - TF.conv_transpose2d(h, out, padding=self.padding)

    def plain_twin(self, weight: tuple[float, Tensor]) -> nn.Module:
        """:class:`~onelip.nn.plain.Residual` of Conv2d → ReLU → Conv2d, skip a, scale −1."""
        a, out = weight
        w_in, b = self.weight.detach().clone(), self.bias.detach().clone()
        w_out = out.transpose(0, 1).flip(-2, -1).clone()
        k = self.kernel_size
        first = nn.Conv2d(self.channels, self.inner_channels, k, padding=self.padding,
                          device=w_in.device, dtype=w_in.dtype)
        second = nn.Conv2d(self.inner_channels, self.channels, k, padding=self.padding,
                           bias=False, device=w_in.device, dtype=w_in.dtype)
        first.weight.copy_(w_in)
        first.bias.copy_(b)
        second.weight.copy_(w_out)
        return Residual(nn.Sequential(first, nn.ReLU(), second), skip=a, scale=-1.0)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, inner_channels={self.inner_channels}, "
                f"kernel_size={self.kernel_size}")

# SPDX-License-Identifier: MIT
r"""Almost-orthogonal Lipschitz (AOL) layers: :class:`AOLLinear` and :class:`AOLConv2d`, after
Prach & Lampert, ECCV 2022: the weight rescaled per input channel by a closed-form diagonal
that makes it 1-Lipschitz for *every* weight (a bound, tight when the columns are
orthogonal)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import ConvLayer, DenseLayer
from onelip.nn._precision import full_precision

__all__ = ["AOLConv2d", "AOLLinear"]

_EPS = 1e-6  # added to the row sums t_i before t^{-1/2} (Prach & Lampert's reference code)


def aol_scale(gram: Tensor, log_q: Tensor | None = None, *, eps: float = _EPS) -> Tensor:
    r"""The AOL diagonal :math:`d_i = (t_i + \varepsilon)^{-1/2}`,
    :math:`t_i = \sum_j |G_{ij}|\, q_j / q_i` (:math:`q = e^{\log q}`, 1 without ``log_q``).

    :math:`G = P^\top P` (dense) or, for a convolution, the kernel :math:`K^\top \star K` of
    :math:`J^\top J` (``gram`` (C_in, C_in, 2k-1, 2k-1), summed over the offsets after the
    absolute value). :math:`\operatorname{diag}(t) \succeq G` (scaled Gershgorin, Prach &
    Lampert 2022 Thm 1; Araujo et al. 2023 Thm 3 with q), hence
    :math:`\|P\operatorname{diag}(d)\|_2 \le 1`; ε > 0 only shrinks d (and keeps a zero
    column finite).

    Shape: gram (n, n) or (n, n, kh, kw), log_q (n,) or None -> (n,).
    """
    g = gram.abs()
    if g.dim() == 4:
        g = g.sum((-2, -1))  # (n, n)
    if log_q is None:
        t = g.sum(1)
    else:
        q = torch.exp(log_q)
        t = (g * q[None, :]).sum(1) / q
    return torch.rsqrt(t + eps)


def aol_conv_gram(kernel: Tensor) -> Tensor:
    r"""The kernel of :math:`J^\top J` for J = ``conv2d(·, kernel)`` (stride 1, infinite
    signals): :math:`(K^\top \star K)_{c c' \delta} = \sum_{o, u} K_{o c u} K_{o c' (u+\delta)}`.

    Shape: (C_out, C_in, k, k) -> (C_in, C_in, 2k-1, 2k-1).
    """
    return F.sll_conv_gram(kernel.transpose(0, 1))


class AOLLinear(DenseLayer):
    r"""Dense AOL layer: :math:`y = P D x + b`,
    :math:`D_{ii} = \big(\sum_j |P^\top P|_{ij}\, q_j/q_i + \varepsilon\big)^{-1/2}`.

    :math:`\|PD\|_2 \le 1` for every P (Prach & Lampert 2022, Thm 1: for symmetric M,
    :math:`v^\top M v \le \sum_{ij} |M_{ij}||v_i||v_j| \le \sum_i v_i^2 \sum_j |M_{ij}|`),
    with equality of every singular value to 1 iff the columns of P are orthogonal. The
    optional learnable :math:`q > 0` (``learnable_q``) is SLL's generalisation (Araujo et al.
    2023): :math:`\operatorname{diag}(t) \succeq P^\top P` for every q.

    **Eval mode** (cached, and what :meth:`export` gives: an ``nn.Linear``): PD in float64,
    rounded to the parameter dtype by :meth:`cast_unit` (σ_max ≤ 1 as stored).
    Initialisation: orthogonal P (tight when out ≥ in; AOL is loose for generic P).

    Args:
        in_features, out_features: as in ``nn.Linear`` (any sizes).
        bias: Default: ``True``.
        learnable_q: learn the diagonal q (``log_q``). Default: ``False``.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.

    Reference:
        Prach, Lampert, *Almost-Orthogonal Layers for Efficient General-Purpose Lipschitz
        Networks*, ECCV 2022.

    Example:
        >>> lin = AOLLinear(5, 3).eval()
        >>> with torch.no_grad():
        ...     _ = lin.weight.normal_()
        >>> bool(torch.linalg.matrix_norm(lin.export().weight.double(), ord=2) <= 1)
        True
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 learnable_q: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        self._init_dense(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.learnable_q = bool(learnable_q)
        if learnable_q:
            self.log_q = nn.Parameter(torch.zeros(in_features, device=device, dtype=dtype))
        else:
            self.register_parameter("log_q", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.log_q is not None:
            nn.init.zeros_(self.log_q)

    def _scaled(self, w: Tensor, log_q: Tensor | None) -> Tensor:
        return w * aol_scale(w.mT @ w, log_q)[None, :]

    def train_weight(self) -> Tensor:
        return self._scaled(self.weight, self.log_q)

    def applied_weight(self) -> Tensor:
        log_q = None if self.log_q is None else self.log_q.detach().double()
        return self.cast_unit(self._scaled(self.weight.detach().double(), log_q))

    def lipschitz_bound(self) -> float:
        return 1.0  # AOL rescaling (Prach & Lampert 2022, Thm 1); eval: cast_unit rounding

    def extra_repr(self) -> str:
        return super().extra_repr() + f", learnable_q={self.learnable_q}"


class AOLConv2d(ConvLayer):
    r"""AOL convolution: :math:`y = T_{K\operatorname{diag}(d)}\,x + b`, the kernel rescaled
    per input channel,

    .. math::
        d_c = \Big(\sum_{c'} \sum_{\delta} |(K^\top \star K)_{c c' \delta}|\,
        \frac{q_{c'}}{q_c} + \varepsilon\Big)^{-1/2},

    :math:`K^\top \star K` the autocorrelation of the kernel ((2k−1)² offsets,
    :func:`aol_conv_gram`): the entries of :math:`J^\top J` for J the convolution of infinite
    signals, so :math:`t_c` bounds the row sums of :math:`|J^\top J|` and
    :math:`\|J\operatorname{diag}(d)\| \le 1` (Prach & Lampert 2022, Thm 1 and §4.2). It
    holds for every input size: zero padding is a compression of the infinite convolution; a
    circular one has Gram entries that are sums of aliased autocorrelation taps (each row sum
    still ≤ t_c); a stride keeps a subset of the output rows (:math:`\|SJ\| \le \|J\|`).
    On a circular grid of size ≥ 2k−1 the row sums equal :math:`t_c` exactly (tested).
    **A bound, not exact:** tight (all singular values 1) iff the channel columns of the
    convolution are orthogonal, hence the Dirac initialisation.

    **Eval mode** (cached): :math:`K\operatorname{diag}(d)` in float64 from the weights as
    stored, scaled by :math:`1-\delta` (:func:`~onelip.functional.float32_cast_margin`)
    and rounded: one plain kernel, so inference costs an ``nn.Conv2d`` and :meth:`export`
    gives one.

    Args:
        in_channels, out_channels: any (AOL needs no square shape).
        kernel_size: k. Default: 3.
        stride: Default: 1.
        padding: Default: (k−1)//2.
        padding_mode: ``"zeros"`` (default) or ``"circular"``.
        bias: Default: ``True``.
        learnable_q: learn the diagonal q (``log_q``, SLL's generalisation, as orthogonium's
            AOL). Default: ``False``.

    Initialisation: Dirac (the identity at the centre tap) when out ≥ in channels — an
    isometry with circular padding; otherwise a centre tap with orthonormal rows.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, H', W')` as ``nn.Conv2d``.

    Reference:
        Prach, Lampert, *Almost-Orthogonal Layers for Efficient General-Purpose Lipschitz
        Networks*, ECCV 2022.

    Example:
        >>> conv = AOLConv2d(2, 3, 3, stride=2).double().eval()
        >>> with torch.no_grad():
        ...     _ = conv.weight.normal_()
        >>> basis = torch.eye(72, dtype=torch.float64).reshape(72, 2, 6, 6)
        >>> op = (conv(basis) - conv.bias.view(1, -1, 1, 1)).reshape(72, -1)
        >>> bool(torch.linalg.matrix_norm(op, ord=2) <= 1)
        True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 stride: int = 1, padding: int | None = None, padding_mode: str = "zeros",
                 bias: bool = True, learnable_q: bool = False, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        k, s = int(kernel_size), int(stride)
        if k < 1 or s < 1:
            raise ValueError(f"Expected positive kernel_size and stride, but got {k}, {s}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding=padding,
                        padding_mode=padding_mode)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, **factory))
        self.learnable_q = bool(learnable_q)
        if learnable_q:
            self.log_q = nn.Parameter(torch.zeros(in_channels, **factory))
        else:
            self.register_parameter("log_q", None)
        self._init_bias(out_channels, bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            c = (self.kernel_size[0] - 1) // 2
            if self.out_channels >= self.in_channels:
                nn.init.dirac_(self.weight)
            else:
                centre = torch.empty(self.out_channels, self.in_channels,
                                     dtype=self.weight.dtype, device=self.weight.device)
                nn.init.orthogonal_(centre)
                self.weight[:, :, c, c] = centre
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.log_q is not None:
            nn.init.zeros_(self.log_q)

    def scale(self) -> Tensor:
        """The diagonal d (C_in,) with gradients, in the parameter dtype (full precision
        under autocast)."""
        with full_precision(self.weight.device):
            return aol_scale(aol_conv_gram(self.weight), self.log_q)

    def train_weight(self) -> Tensor:
        return self.weight * self.scale()[None, :, None, None]

    def applied_weight(self) -> Tensor:
        with full_precision(self.weight.device):
            return self._applied()

    def _applied(self) -> Tensor:
        w64 = self.weight.detach().double()
        log_q = None if self.log_q is None else self.log_q.detach().double()
        w64 = w64 * aol_scale(aol_conv_gram(w64), log_q)[None, :, None, None]
        if self.weight.dtype == torch.float64:
            return w64
        return (w64 * (1 - F.float32_cast_margin(w64))).to(self.weight.dtype)

    def lipschitz_bound(self) -> float:
        return 1.0  # AOL rescaling (Prach & Lampert 2022, Thm 1); eval: float32 cast margin

    def extra_repr(self) -> str:
        return super().extra_repr() + f", learnable_q={self.learnable_q}"

# SPDX-License-Identifier: MIT
"""Skew orthogonal convolution (SOC, Singla & Feizi 2021) with a certified truncation:
:class:`SOCConv2d` and its plain twin :class:`ConvSeries2d`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from onelip import functional as F
from onelip.functional.conv import square_adapter_in
from onelip.functional.soc import (
    exp_series_max,
    skew_conv_kernel,
    skew_conv_norm_bound,
    skew_exp_series,
)
from onelip.nn._base import ConvLayer
from onelip.nn._kernels import serial
from onelip.nn._precision import full_precision

__all__ = ["ConvSeries2d", "SOCConv2d"]

# The float32 SVD of the training bound may fall short of the float64 one by ~1e-6
# (relative): the training series is certified for a ρ this much larger.
_TRAIN_RHO_SLACK = 1e-3


def _check_square_options(in_channels: int, out_channels: int, k: int, s: int,
                          padding_mode: str) -> None:
    if in_channels < 1 or out_channels < 1 or k < 1 or s < 1:
        raise ValueError(f"Expected positive channels, kernel_size and stride, but got "
                         f"{in_channels}, {out_channels}, {k}, {s}")
    if k % 2 == 0:
        raise ValueError(f"Expected an odd kernel_size, but got {k}")
    if padding_mode not in ("zeros", "circular"):
        raise ValueError(f"Expected padding_mode 'zeros' or 'circular', but got "
                         f"{padding_mode!r}")


class ConvSeries2d(nn.Module):
    r"""Plain module: :math:`y = a\,[S_K(T)\,A(x)]_{:C_{out}} + b`, with T = ``conv2d(·,
    weight)`` ("same" zero or circular padding), :math:`S_K(T) = \sum_{i \le K} T^i / i!`
    (Horner's rule, K convolutions) and A the input adapter (zero-pad H, W to multiples of s,
    pixel-unshuffle by s, zero-pad the channels to C). What :class:`SOCConv2d` exports to
    (ONNX: Pad, SpaceToDepth, Conv, Add, Mul).

    Args:
        in_channels, out_channels: C_in, C_out.
        channels: C >= max(C_in s², C_out), the channels of ``weight`` (C, C, k, k).
        kernel_size: k (odd).
        stride: s. Default: 1.
        padding_mode: ``"zeros"`` or ``"circular"``. Default: ``"zeros"``.
        terms: K. Default: 12.
        scale: a. Default: 1.
        bias: a (C_out,) bias. Default: ``True``.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, \lceil H/s \rceil, \lceil W/s \rceil)`.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int, kernel_size: int,
                 *, stride: int = 1, padding_mode: str = "zeros", terms: int = 12,
                 scale: float = 1.0, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.channels, self.kernel_size = int(channels), int(kernel_size)
        self.stride, self.padding_mode = int(stride), padding_mode
        self.terms, self.scale = int(terms), float(scale)
        factory = {"device": device, "dtype": dtype}
        k = self.kernel_size
        self.weight = nn.Parameter(torch.zeros(self.channels, self.channels, k, k, **factory))
        self.bias = nn.Parameter(torch.zeros(self.out_channels, **factory)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        z = square_adapter_in(x, stride=self.stride, channels=self.channels)
        y = skew_exp_series(z, self.weight, terms=self.terms, scale=self.scale,
                            padding_mode=self.padding_mode)[:, :self.out_channels]
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, channels={self.channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding_mode={self.padding_mode!r}, terms={self.terms}, scale={self.scale}")


class SOCConv2d(ConvLayer):
    r"""Skew orthogonal convolution with a certified truncation of the exponential.

    .. math::
        L = \frac{\rho_{\max}}{\beta(L_0)} L_0, \quad L_0 = \tfrac12 (M - M^\top), \qquad
        y = \frac{1}{m_K}\Big[\sum_{i=0}^{K} \frac{T_L^i}{i!}\, A(x)\Big]_{:C_{out}} + b,

    M (C, C, k, k) the free kernel, :math:`M^\top` its adjoint kernel (channels swapped, taps
    flipped), :math:`T_L` = ``conv2d(·, L)`` with "same" zero or circular padding (its
    Jacobian is exactly skew-symmetric), :math:`\beta` a certified, differentiable upper bound
    of :math:`\|T_{L_0}\|` (:func:`~onelip.functional.skew_conv_norm_bound`: the smaller of
    :math:`k\|R\|_2`, R the :math:`Ck \times Ck` reshape, and :math:`\sum_t \|L_t\|_2`), A the
    adapter (zero-pad H, W to multiples of s, pixel-unshuffle by s, zero-pad the channels to
    :math:`C = \max(C_{in}s^2, C_{out})`), and :math:`m_K =`
    :func:`~onelip.functional.exp_series_max` (K, ρ_max) ≥ 1.

    **Claim (train and eval, certified).** :math:`\|T_L\| \le \rho_{\max}`, so
    :math:`S_K(T_L)` is normal with singular values :math:`|S_K(i\theta)|`,
    :math:`|\theta| \le \rho_{\max}`, all at most :math:`m_K`: the layer is 1-Lipschitz (the
    adapter is an isometry, the channel crop a projection; with zero padding too, since the
    zero-padded :math:`T_L` is itself skew). The series is *not* assumed to be the
    exponential: for K = 5, :math:`\max_\theta |S_5(i\theta)| = 1.0047` (θ ≈ 1.59), so the
    reference's training rule (5 terms, no correction) is not 1-Lipschitz
    (``train_terms=5`` here divides by :math:`m_5 = 1.00474`). The default training series
    has K = 4: :math:`|S_4(i\theta)|^2 = 1 - \theta^6/72 + \theta^8/576 \le 1` for
    :math:`\theta^2 \le 8`, so :math:`m_4 = 1` for ρ_max < 2√2. The eval series (12 terms,
    ρ_max = 2.5 < 3.379) has :math:`m_{12} = 1` exactly and is the exponential to
    :math:`\rho^{13}/13! \le 2\cdot 10^{-5}` (≤ 1e-8 at the typical ρ ≈ 1.5): with stride 1
    and C_in = C_out the eval layer is orthogonal to that accuracy, for zero and circular
    padding. Eval mode computes L in float64 and scales it by :math:`1-\delta` for its float32
    rounding (:func:`~onelip.functional.float32_cast_margin`; rounding keeps L skew).

    **Defaults.** ``train_terms=4`` (four convolutions: ~6× an ``nn.Conv2d`` training step;
    5 terms, the reference's, cost ~7.7×), ``eval_terms=12``; ``max_norm`` ρ_max = 2.5 for
    k > 1 (β is 1.4–2.6 × the true norm on random kernels, so :math:`\|T_L\| \approx`
    1–1.7, like the reference's 0.7/σ) and 1.0 for k = 1 (β exact). Training contracts the
    top of the spectrum: its singular values are :math:`|S_4(i\theta)| \in [0.96, 1]` for
    :math:`|\theta| \le 1.5` (0.5 at θ = 2.5, reached only where β is tight), and differ from
    the eval ones by at most :math:`\theta^5/120`.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: k (odd). Default: 3.
        stride: s (by pixel unshuffle). Default: 1.
        bias: Default: ``True``.
        padding_mode: ``"zeros"`` (default) or ``"circular"``.
        train_terms, eval_terms: K in training and in eval mode. Defaults: 4, 12.
        max_norm: ρ_max. Default: 2.5 (k > 1), 1.0 (k = 1).

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, \lceil H/s \rceil, \lceil W/s \rceil)`.

    References:
        Singla, Feizi, *Skew Orthogonal Convolutions*, ICML 2021.

    Example:
        >>> conv = SOCConv2d(4, 4, padding_mode="circular", bias=False).double().eval()
        >>> x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
        >>> bool(torch.allclose(conv(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1)))
        True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 stride: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 train_terms: int = 4, eval_terms: int = 12, max_norm: float | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        k, s = int(kernel_size), int(stride)
        _check_square_options(in_channels, out_channels, k, s, padding_mode)
        if train_terms < 1 or eval_terms < 1:
            raise ValueError(f"Expected train_terms and eval_terms >= 1, but got "
                             f"{train_terms}, {eval_terms}")
        rho = (2.5 if k > 1 else 1.0) if max_norm is None else float(max_norm)
        if not 0 < rho <= 4:
            raise ValueError(f"Expected 0 < max_norm <= 4, but got max_norm={max_norm}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding_mode=padding_mode)
        self.channels = max(in_channels * s * s, out_channels)
        self.train_terms, self.eval_terms, self.max_norm = int(train_terms), int(eval_terms), rho
        self.train_scale = 1.0 / exp_series_max(self.train_terms, rho * (1 + _TRAIN_RHO_SLACK))
        self.eval_scale = 1.0 / exp_series_max(self.eval_terms, rho)
        self.weight = nn.Parameter(torch.empty(self.channels, self.channels, k, k,
                                               device=device, dtype=dtype))
        self._init_bias(out_channels, bias, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.channels))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _scaled(self, m: Tensor) -> Tensor:
        """:math:`\\rho_{\\max} L_0 / \\beta(L_0)` from M (differentiable)."""
        skew = skew_conv_kernel(m)
        return skew * (self.max_norm / skew_conv_norm_bound(skew).clamp_min(1e-30))

    def train_weight(self) -> Tensor:
        """L (C, C, k, k) with gradients, in the parameter dtype (built on one thread inside
        :func:`~onelip.nn.utils.serial_kernel_build`)."""
        def build(m: Tensor) -> Tensor:
            with full_precision(m.device):
                return self._scaled(m)

        return serial(build, self.weight)

    def applied_weight(self) -> Tensor:
        """L (C, C, k, k) built in float64, scaled by :math:`1-\\delta` for its rounding to
        the parameter dtype, so that :math:`\\|T_L\\| \\le \\rho_{\\max}` holds as stored."""
        with full_precision(self.weight.device):
            w64 = self._scaled(self.weight.detach().double())
            if self.weight.dtype == torch.float64:
                return w64
            # rounding moves ‖T_L‖ by at most u Σ_t ‖L_t‖_F = δ ρ_max·(Σ‖L_t‖_F / ρ_max)
            delta = F.float32_cast_margin(w64) / self.max_norm
            return (w64 * (1 - delta)).to(self.weight.dtype)

    def _series(self, x: Tensor, kernel: Tensor, terms: int, scale: float) -> Tensor:
        z = square_adapter_in(x, stride=self.stride[0], channels=self.channels)
        y = skew_exp_series(z, kernel, terms=terms, scale=scale,
                            padding_mode=self.padding_mode)[:, :self.out_channels]
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def train_forward(self, x: Tensor) -> Tensor:
        return self._series(x, self.train_weight(), self.train_terms, self.train_scale)

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._series(x, weight, self.eval_terms, self.eval_scale)

    def plain_twin(self, weight: Tensor) -> nn.Module:
        plain = ConvSeries2d(self.in_channels, self.out_channels, self.channels,
                             self.kernel_size[0], stride=self.stride[0],
                             padding_mode=self.padding_mode, terms=self.eval_terms,
                             scale=self.eval_scale, bias=self.bias is not None,
                             device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(weight)
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain

    def lipschitz_bound(self) -> float:
        return 1.0  # ‖T_L‖ ≤ ρ_max (certified β, cast margin) and |S_K(iθ)|/m_K ≤ 1 for |θ| ≤ ρ_max

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding_mode={self.padding_mode!r}, "
                f"train_terms={self.train_terms}, eval_terms={self.eval_terms}, "
                f"max_norm={self.max_norm}, bias={self.bias is not None}")

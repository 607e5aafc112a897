# SPDX-License-Identifier: MIT
"""Block reflector orthogonal layers (BRO, Lai, Huang, Kung, Chen, ICML 2025):
:class:`BROLinear` and :class:`BROConv2d` (an FFT convolution on a fixed input size)."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from onelip.functional.bro import bro_factor, bro_symbol_factor
from onelip.functional.conv import square_adapter_in
from onelip.nn._base import ConvLayer, DenseLayer
from onelip.nn._kernels import serial
from onelip.nn._precision import full_precision

__all__ = ["BROConv2d", "BROLinear"]


def _rank(m: int, ratio: float) -> int:
    if not 0 < ratio < 1:
        raise ValueError(f"Expected 0 < rank_ratio < 1, but got rank_ratio={ratio}")
    return max(1, min(m - 1, round(ratio * m))) if m > 1 else 1


class BROLinear(DenseLayer):
    r"""Linear layer whose weight is a block of a block reflector.

    .. math::
        y = W_{:H_{out}, :H_{in}}\,x + b, \qquad
        W = I_m - 2V(V^\top V + \varepsilon I_r)^{-1}V^\top,

    V (m, r) the free parameter, :math:`m = \max(H_{in}, H_{out})`, r < m (``rank_ratio`` ·
    m), :math:`\varepsilon` = ``eps`` × the mean diagonal of :math:`V^\top V`. W is symmetric
    with r eigenvalues :math:`1 - 2\sigma_i^2/(\sigma_i^2+\varepsilon) \approx -1` and m − r
    eigenvalues 1: orthogonal up to :math:`2\varepsilon/\sigma_{\min}^2` (≤ 1e-6 with the
    default ε = 1e-10 unless V is very ill-conditioned), never expanding. For
    :math:`H_{in} \ne H_{out}` the block is a contraction. One r×r Cholesky factorisation, no
    iteration, computed in float64 in both modes; eval mode rounds it with
    :func:`~onelip.functional.unit_norm_cast` (σ_max ≤ 1 as stored).

    Args:
        in_features, out_features: H_in, H_out.
        bias: Default: ``True``.
        rank_ratio: r / m. Default: 0.5.
        eps: ε relative to the mean diagonal of :math:`V^\top V`. Default: 1e-10.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.

    References:
        Lai, Huang, Kung, Chen, *Enhancing Certified Robustness via Block Reflector
        Orthogonal Layers and Logit Annealing Loss*, ICML 2025.

    Example:
        >>> lin = BROLinear(6, 6).eval()
        >>> w = lin.export().weight.double()
        >>> bool(torch.allclose(w @ w.T, torch.eye(6, dtype=torch.float64), atol=1e-6))
        True
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 rank_ratio: float = 0.5, eps: float = 1e-10, device=None,
                 dtype=None) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Expected positive in_features and out_features, but got "
                             f"{in_features}, {out_features}")
        if not eps > 0:
            raise ValueError(f"Expected eps > 0, but got eps={eps}")
        self.in_features, self.out_features = in_features, out_features
        self.rank_ratio, self.eps = float(rank_ratio), float(eps)
        m = max(in_features, out_features)
        self.weight = nn.Parameter(torch.empty(m, _rank(m, rank_ratio), device=device,
                                               dtype=dtype))
        self._init_bias(out_features, bias, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _reflector(self, v: Tensor) -> Tensor:
        """The block W[:out, :in] in float64 from V (differentiable)."""
        y = bro_factor(v.double(), eps=self.eps)  # (m, r)
        o, i = self.out_features, self.in_features
        eye = torch.eye(o, i, dtype=torch.float64, device=v.device)
        return eye - 2 * y[:o] @ y[:i].mT

    def train_weight(self) -> Tensor:
        with full_precision(self.weight.device):
            return self._reflector(self.weight).to(self.weight.dtype)

    def applied_weight(self) -> Tensor:
        with full_precision(self.weight.device):
            return self.cast_unit(self._reflector(self.weight.detach()))

    def lipschitz_bound(self) -> float:
        return 1.0  # a block of a reflector (eigenvalues in (-1, 1]), rounded by cast_unit

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.weight.shape[1]}, bias={self.bias is not None}")


class BROConv2d(ConvLayer):
    r"""Block reflector convolution: per frequency, a block reflector of the kernel's symbol.

    .. math::
        \hat W(\omega) = I_C - 2\hat V(\omega)\big(\hat V(\omega)^H\hat V(\omega) +
        \varepsilon_\omega I_r\big)^{-1}\hat V(\omega)^H, \qquad
        y = \mathrm{crop}\Big(\mathcal F^{-1}\big[\hat W_{:C_{out}, :C_{in}'}(\omega)\,
        \mathcal F[\mathrm{pad}_p(A(x))](\omega)\big]\Big) + b,

    V (C, r, k, k) the free kernel, :math:`\hat V(\omega)` its DFT zero-padded to the grid
    :math:`G = (H' + 2p) \times (W' + 2p)`, p = k // 2 ("pad-then-crop"; ``padding_mode=
    "circular"``: p = 0, G = H' × W'), :math:`\varepsilon_\omega` = ``eps`` × the mean
    diagonal of :math:`\hat V^H\hat V` at ω, A the stride adapter (zero-pad H, W to multiples
    of s, pixel-unshuffle: :math:`C_{in}' = C_{in}s^2`, :math:`H' = \lceil H/s\rceil`),
    :math:`C = \max(C_{in}', C_{out})`, r = ``rank_ratio`` · C.

    **Claim (train and eval).** Each :math:`\hat W(\omega)` is Hermitian with eigenvalues in
    (−1, 1] (r of them ≈ −1, Proposition 1 of the paper), so the circular convolution on G is
    a contraction, orthogonal up to :math:`2\varepsilon/\sigma^2`; the zero padding is an
    isometric embedding, the crop and the channel block are projections: 1-Lipschitz. With
    circular padding, stride 1 and C_in = C_out the layer is orthogonal up to the ε terms
    (:math:`\sigma \ge 1 - 2\varepsilon\,\bar\sigma^2/\sigma_{\min}^2` per frequency;
    2e-5 at the identity initialisation, ~1e-3 for badly conditioned V̂). With
    zero padding it is the pad-then-crop *approximation* of a zero-padded convolution (the
    reflector's kernel fills the grid, so the borders interact), as in the reference.
    The small matrices are computed in complex128 (Cholesky, no iteration); training applies
    :math:`\hat x - 2Y(Y^H\hat x)` with Y cast to complex64. **Eval mode** caches
    :math:`\hat W_{:C_{out}, :C_{in}'}` built in complex128, divided by its largest singular
    value over ω when that exceeds 1 and scaled by :math:`1 - \delta`,
    :math:`\delta = 2^{-24}\max_\omega\|\hat W(\omega)\|_F + 10^{-12}` (entrywise rounding to
    complex64 moves each :math:`\sigma_{\max}` by at most :math:`2^{-24}\|\hat W\|_F`), then
    applies it with two FFTs (``rfft2`` / ``irfft2(s=G)``, so odd sizes work). The
    self-conjugate frequencies' symbol is averaged with its conjugate by ``irfft2``: still a
    contraction. It is an FFT layer, not foldable into a k×k convolution: :meth:`export`
    gives its exact spatial form, a circular convolution of the padded grid with the
    full-grid kernel (:math:`G_h \times G_w` taps), scaled for its own float32 rounding.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: k (odd). Default: 3.
        input_size: (H, W) of the inputs (the grid depends on it; another size raises).
        stride: s (by pixel unshuffle). Default: 1.
        bias: Default: ``True``.
        padding_mode: ``"zeros"`` (pad-then-crop, default) or ``"circular"``.
        rank_ratio: r / C. Default: 0.5.
        eps: ε relative to the mean diagonal of :math:`\hat V^H\hat V`. Default: 1e-5.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, \lceil H/s \rceil, \lceil W/s \rceil)`.

    References:
        Lai, Huang, Kung, Chen, *Enhancing Certified Robustness via Block Reflector
        Orthogonal Layers and Logit Annealing Loss*, ICML 2025.

    Example:
        >>> conv = BROConv2d(4, 4, input_size=(6, 6), padding_mode="circular",
        ...                  bias=False).double().eval()
        >>> x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
        >>> ratio = conv(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
        >>> bool(((ratio <= 1) & (ratio > 0.999)).all())
        True
    """

    sized_by_input = True  # the operator depends on the input size

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 input_size: tuple[int, int], stride: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rank_ratio: float = 0.5, eps: float = 1e-5,
                 device=None, dtype=None) -> None:
        super().__init__()
        k, s = int(kernel_size), int(stride)
        if in_channels < 1 or out_channels < 1 or k < 1 or s < 1 or k % 2 == 0:
            raise ValueError(f"Expected positive channels and stride and an odd kernel_size, "
                             f"but got {in_channels}, {out_channels}, {k}, {s}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"Expected input_size (H, W), but got {input_size}")
        if not eps > 0:
            raise ValueError(f"Expected eps > 0, but got eps={eps}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding_mode=padding_mode)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.rank_ratio, self.eps = float(rank_ratio), float(eps)
        self.unshuffled = in_channels * s * s
        self.channels = max(self.unshuffled, out_channels)
        h, w = (-(-n // s) for n in self.input_size)
        p = 0 if padding_mode == "circular" else k // 2
        self.grid = (h + 2 * p, w + 2 * p)
        self.weight = nn.Parameter(torch.empty(self.channels, _rank(self.channels, rank_ratio),
                                               k, k, device=device, dtype=dtype))
        self._init_bias(out_channels, bias, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""V = [I_r; 0] at the centre tap (the reference's ``id_init``): every
        :math:`\hat V(\omega)` has orthonormal columns, so :math:`\hat W` is orthogonal up to
        2ε at initialisation."""
        k = self.kernel_size[0]
        with torch.no_grad():
            self.weight.zero_()
            r = self.weight.shape[1]
            self.weight[torch.arange(r), torch.arange(r), k // 2, k // 2] = 1.0
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # ---- the operator -------------------------------------------------------------------

    def _pad(self) -> int:
        return 0 if self.padding_mode == "circular" else self.kernel_size[0] // 2

    def _spectrum(self, x: Tensor) -> Tensor:
        """rfft2 of the adapted, padded input, laid out per frequency: (F, C_in', N)."""
        size = (x.shape[-2], x.shape[-1])
        if size != self.input_size:
            raise ValueError(
                f"BROConv2d was built for inputs of size {self.input_size} (its per-frequency "
                f"matrices live on that grid), but got {size}: build it with "
                f"input_size={size}")
        s, p = self.stride[0], self._pad()
        x = square_adapter_in(x, stride=s, channels=x.shape[1] * s * s)
        if p:
            x = TF.pad(x, (p, p, p, p))
        xf = torch.fft.rfft2(x)  # (N, C_in', G_h, G_w')
        return xf.permute(2, 3, 1, 0).reshape(-1, xf.shape[1], xf.shape[0])

    def _spatial(self, yf: Tensor, n: int) -> Tensor:
        """(F, C_out, N) spectrum -> the cropped real output (N, C_out, H', W') + bias."""
        gh, gw = self.grid
        yf = yf.reshape(gh, gw // 2 + 1, self.out_channels, n).permute(3, 2, 0, 1)
        y = torch.fft.irfft2(yf, s=self.grid)  # (N, C_out, G_h, G_w)
        p = self._pad()
        if p:
            y = y[..., p:gh - p, p:gw - p]
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def _factor(self, v: Tensor) -> Tensor:
        """Y(ω) (F, C, r) complex128 with :math:`\\hat W = I - 2YY^H` (differentiable)."""
        with full_precision(v.device):
            y = bro_symbol_factor(v, self.grid, eps=self.eps)
        return y.reshape(-1, *y.shape[-2:])

    def _identity_block(self, xf: Tensor) -> Tensor:
        """:math:`I_{:C_{out}, :C_{in}'}\\hat x`: (F, C_in', N) -> (F, C_out, N)."""
        c_out, c_in = self.out_channels, self.unshuffled
        if c_out <= c_in:
            return xf[:, :c_out]
        return TF.pad(xf, (0, 0, 0, c_out - c_in))

    def train_weight(self) -> Tensor:
        """Y(ω) (F, C, r), complex64, with gradients (built on one thread inside
        :func:`~onelip.nn.utils.serial_kernel_build`)."""
        ctype = torch.complex64 if self.weight.dtype != torch.float64 else torch.complex128
        return serial(lambda v: self._factor(v).to(ctype), self.weight)

    def train_forward(self, x: Tensor) -> Tensor:
        y = self.train_weight()
        xf = self._spectrum(x).to(y.dtype)
        low = y[:, :self.unshuffled].mH @ xf  # (F, r, N)
        yf = self._identity_block(xf) - 2 * (y[:, :self.out_channels] @ low)
        return self._spatial(yf, x.shape[0])

    def _eval_block(self) -> Tensor:
        """:math:`\\hat W_{:C_{out}, :C_{in}'}(\\omega)` (F, C_out, C_in') in complex128,
        certified :math:`\\sigma_{\\max} \\le 1 - \\delta` before its rounding."""
        y = self._factor(self.weight.detach())
        c_out, c_in = self.out_channels, self.unshuffled
        eye = torch.eye(c_out, c_in, dtype=y.dtype, device=y.device)
        w = eye - 2 * y[:, :c_out] @ y[:, :c_in].mH  # (F, C_out, C_in')
        if self.weight.dtype == torch.float64:
            return w
        top = float(torch.linalg.matrix_norm(w, ord=2).max())
        delta = 2.0 ** -24 * float(torch.linalg.matrix_norm(w).max()) + 1e-12
        return w * ((1 - delta) / max(1.0, top))

    def applied_weight(self) -> Tensor:
        """The cached per-frequency matrices, (F, C_out, C_in', 2) real view of complex64
        (complex128 for float64 parameters)."""
        with full_precision(self.weight.device):
            w = self._eval_block()
            ctype = torch.complex128 if self.weight.dtype == torch.float64 else torch.complex64
            return torch.view_as_real(w.to(ctype)).to(self.weight.dtype)

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        w = torch.view_as_complex(weight.contiguous())
        xf = self._spectrum(x).to(w.dtype)
        return self._spatial(w @ xf, x.shape[0])

    @torch.no_grad()
    def spatial_kernel(self, weight: Tensor | None = None) -> Tensor:
        """The exact spatial form of the eval operator: the circular convolution kernel on the
        grid, as a cross-correlation kernel (C_out, C_in', G_h, G_w) for the input circularly
        extended by (0, W'-1, 0, H'-1) after the zero padding (see :meth:`export`), in float64.
        """
        w = torch.view_as_complex((self.eval_weight() if weight is None else weight)
                                  .double().contiguous())  # (F, C_out, C_in')
        gh, gw = self.grid
        w = w.reshape(gh, gw // 2 + 1, *w.shape[-2:]).permute(2, 3, 0, 1)
        kern = torch.fft.irfft2(w, s=self.grid)  # y = Σ_m K[m] x[n - m] (circular)
        p = self._pad()
        # correlation form: out[n'] = Σ_j K[(p - j) mod G] X[n' + j]
        return torch.roll(kern.flip(-2, -1), shifts=(p + 1, p + 1), dims=(-2, -1))

    def plain_twin(self, weight: Tensor) -> nn.Module:
        kern = self.spatial_kernel(weight)
        taps = kern.flatten(2).permute(2, 0, 1)
        delta = 2.0 ** -24 * float(torch.linalg.matrix_norm(taps).sum()) + 1e-12
        kern = (kern * (1 - delta)).to(weight.dtype)
        s, p = self.stride[0], self._pad()
        h, w = (-(-n // s) for n in self.input_size)
        layers: list[nn.Module] = []
        ph, pw = -self.input_size[0] % s, -self.input_size[1] % s
        if ph or pw:
            layers.append(nn.ZeroPad2d((0, pw, 0, ph)))
        if s > 1:
            layers.append(nn.PixelUnshuffle(s))
        if p:
            layers.append(nn.ZeroPad2d(p))
        layers.append(nn.CircularPad2d((0, w - 1, 0, h - 1)))
        conv = nn.Conv2d(self.unshuffled, self.out_channels, self.grid,
                         bias=self.bias is not None, device=kern.device, dtype=kern.dtype)
        conv.weight.copy_(kern)
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        layers.append(conv)
        return nn.Sequential(*layers)

    def lipschitz_bound(self) -> float:
        return 1.0  # per-frequency block reflectors (eigenvalues in (-1, 1]), cast margin

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, "
                f"padding_mode={self.padding_mode!r}, rank={self.weight.shape[1]}, "
                f"bias={self.bias is not None}")

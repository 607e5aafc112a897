# SPDX-License-Identifier: MIT
"""The shift block of LipNeXt (Hu, Hu, Fredrikson, ICLR 2026): orthogonal 1×1 channel mixings
around a parameter-free circular spatial shift, :class:`ShiftConv2d`; and the plain modules it
exports to, :class:`SpatialShift` and :class:`PositionBias`."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import ConvLayer
from onelip.nn._kernels import serial
from onelip.nn._precision import full_precision

__all__ = ["PositionBias", "ShiftConv2d", "SpatialShift", "shift_permutation",
           "spatial_shift"]


def spatial_shift(x: Tensor, group: int) -> Tensor:
    r"""Circular shift by one pixel of four groups of ``group`` channels: channels
    :math:`[0, g)` down, :math:`[g, 2g)` up, :math:`[2g, 3g)` right, :math:`[3g, 4g)` left; the
    others unchanged. A permutation of the coordinates: orthogonal.

    ``torch.roll`` and ``torch.cat`` (what the plain :class:`SpatialShift` runs, ONNX-exportable);
    :class:`ShiftConv2d` applies the same permutation as one gather (:func:`shift_permutation`),
    whose backward is the gather by the inverse.

    Shape: (N, C, H, W) -> (N, C, H, W), :math:`4g \le C`.
    """
    if group == 0:
        return x
    g = group
    return torch.cat((x[:, :g].roll(1, 2), x[:, g:2 * g].roll(-1, 2),
                      x[:, 2 * g:3 * g].roll(1, 3), x[:, 3 * g:4 * g].roll(-1, 3),
                      x[:, 4 * g:]), 1)


def shift_permutation(channels: int, height: int, width: int, group: int, *,
                      device=None) -> tuple[Tensor, Tensor]:
    """:func:`spatial_shift` as a permutation of the C·H·W coordinates of one sample: ``perm``
    with ``spatial_shift(x).flatten(1) == x.flatten(1)[:, perm]``, and its inverse."""
    n = channels * height * width
    perm = spatial_shift(torch.arange(n, device=device).view(1, channels, height, width),
                         group).flatten()
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n, device=device)
    return perm, inv


class _Shift(torch.autograd.Function):
    """:func:`spatial_shift` as one gather by its permutation (:func:`shift_permutation`),
    whose backward is the gather by the inverse permutation: two operations per step where
    autograd through ``roll``/``cat`` fills a zero tensor per slice (and one op is what a
    loaded multi-threaded CPU schedules best)."""

    @staticmethod
    def forward(ctx, x: Tensor, perm: Tensor, inv: Tensor) -> Tensor:
        ctx.inv = inv
        return x.reshape(x.shape[0], -1).index_select(1, perm).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        out = grad.reshape(grad.shape[0], -1).index_select(1, ctx.inv).view(grad.shape)
        return out, None, None


class SpatialShift(nn.Module):
    """Plain :func:`spatial_shift` of ``group`` channels per direction (what
    :class:`ShiftConv2d` exports to; ``torch.roll`` and ``torch.cat``, ONNX-exportable).

    Shape:
        :math:`(N, C, H, W) \\to (N, C, H, W)`.
    """

    def __init__(self, group: int) -> None:
        super().__init__()
        if group < 0:
            raise ValueError(f"Expected group >= 0, but got group={group}")
        self.group = int(group)

    def forward(self, x: Tensor) -> Tensor:
        return spatial_shift(x, self.group)

    def extra_repr(self) -> str:
        return f"group={self.group}"


class PositionBias(nn.Module):
    r"""Plain per-position translation :math:`y = x + b`, b of shape (C, H, W) (what
    :class:`ShiftConv2d`'s position embedding exports to).

    Shape:
        :math:`(N, C, H, W) \to (N, C, H, W)`.
    """

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.channels, self.height, self.width = int(channels), int(height), int(width)
        self.bias = nn.Parameter(torch.zeros(self.channels, self.height, self.width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias

    def extra_repr(self) -> str:
        return f"{self.channels}, {self.height}, {self.width}"


class ShiftConv2d(ConvLayer):
    r"""LipNeXt's shift block: orthogonal 1×1 mixings around a circular spatial shift, an
    orthogonal map by construction.

    .. math::
        y = \Pi_{out}\, M R^\top S\big(R\,(\iota(x) + p)\big) + b,

    with R, M orthogonal :math:`c \times c` matrices applied per pixel (1×1 convolutions), S
    the parameter-free spatial shift (:func:`spatial_shift`: :math:`\lfloor\alpha c\rceil`
    channels shifted by one pixel, circularly, in each of the four directions, the rest not
    shifted; on its own a permutation), p a learned position embedding (:math:`c \times H'
    \times W'`, optional; a constant translation, so it does not change the Lipschitz
    constant), b the bias. The adapters: ι zero-pads the bottom and right of the input to
    a multiple of the stride s (an isometric embedding), pixel-unshuffles it (a permutation:
    :math:`C_{in} s^2` channels at :math:`H' = \lceil H/s\rceil`) and appends zero channels
    up to :math:`c = \max(C_{in} s^2, C_{out})` (an isometry); :math:`\Pi_{out}` keeps the
    first :math:`C_{out}` channels (a projection). So the block is an isometry when
    :math:`C_{out} \ge C_{in} s^2` (orthogonal when equal and s divides H and W), a
    co-isometry (every non-zero singular value 1) when :math:`C_{out} < C_{in} s^2` and s
    divides H and W, and a contraction in every case. With ``kernel_size=1`` there is no
    shift (S = I): an orthogonal 1×1 convolution.

    **Why.** A depthwise k×k convolution with circular padding is norm-preserving only if it
    is a signed shift (LipNeXt, Theorem 1); the block gets its spatial reach from shifts
    alone and all its learned mixing from two dense orthogonal matrices, so it is exact
    without any convolution constraint, and costs two 1×1 convolutions (about 2/9 of the
    multiply-adds of a 3×3 convolution of the same width) and a few copies.

    **Orthogonal factors.** R and M are the Cholesky-QR factors of their latents
    (:func:`~onelip.functional.cholesky_orthonormalize`, divided by
    :math:`\sqrt{1+\|Q^\top Q-I\|_F}`): in training, one pass in the parameter dtype with
    gradients; in eval, float64 with refinement, then :math:`R\,\iota` and
    :math:`\Pi_{out} M R^\top` are rounded to float32 by
    :func:`~onelip.functional.unit_norm_cast` (σ_max of each applied matrix ≤ 1, σ within
    ~1e-6 of 1) and cached. :meth:`retract_` (called by :func:`onelip.train.fit` after each
    step) replaces each latent by its orthonormal factor, so the latents stay orthogonal
    (the function is unchanged). LipNeXt instead takes Riemannian steps (a truncated
    exponential map) with a polar retraction once per epoch.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: 3 (one-pixel shifts) or 1 (no shift). Default: 3.
        input_size: (H, W) of the inputs (the position embedding's size).
        stride: s, by pixel unshuffle. Default: 1.
        alpha: fraction of the c channels shifted in *each* direction, 0 ≤ α ≤ 1/4 (LipNeXt:
            1/8 or 1/16). Default: 1/8 (half of the channels move).
        position_embedding: learn p. Default: ``True``.
        bias: learn b. Default: ``True``.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, \lceil H/s\rceil, \lceil W/s\rceil)`.

    References:
        Hu, Hu, Fredrikson, *LipNeXt: Scaling up Lipschitz-based Certified Robustness to
        Billion-parameter Models*, ICLR 2026 (arXiv 2601.18513).

    Example:
        >>> conv = ShiftConv2d(8, 8, input_size=(5, 5)).double().eval()
        >>> x, y = torch.randn(2, 8, 5, 5, dtype=torch.float64).unbind(0)
        >>> d = conv(x[None]) - conv(y[None])
        >>> bool(torch.isclose(d.norm(), (x - y).norm()))
        True
    """

    sized_by_input = True  # the operator depends on the input size

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 input_size: tuple[int, int], stride: int = 1, alpha: float = 0.125,
                 position_embedding: bool = True, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        k, s = int(kernel_size), int(stride)
        if k not in (1, 3) or s < 1:
            raise ValueError(f"Expected kernel_size 1 or 3 and stride >= 1, but got "
                             f"kernel_size={k}, stride={s}")
        if not 0.0 <= alpha <= 0.25:
            raise ValueError(f"Expected 0 <= alpha <= 1/4, but got alpha={alpha}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"Expected input_size (H, W), but got {input_size}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding_mode="circular")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.alpha = float(alpha)
        self.position_embedding = bool(position_embedding)
        self.channels = c = max(in_channels * s * s, out_channels)
        self.group = 0 if k == 1 or alpha == 0 else min(c // 4, max(1, round(alpha * c)))
        self.rotation = nn.Parameter(torch.empty(c, c, **factory))  # R's latent
        self.mixing = nn.Parameter(torch.empty(c, c, **factory))  # M's latent
        if self.position_embedding:
            size = self.output_size(self.input_size)
            self.pos = nn.Parameter(torch.zeros(c, *size, **factory))
        else:
            self.register_parameter("pos", None)
        self._init_bias(out_channels, bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.rotation)
        with torch.no_grad():  # M = I: the block starts as the conjugated shift RᵀSR
            self.mixing.copy_(torch.eye(self.channels))
        if self.pos is not None:
            nn.init.zeros_(self.pos)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def output_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        s = self.stride[0]
        return -(-int(input_size[0]) // s), -(-int(input_size[1]) // s)

    # ---- the weights: (R ι, Π M Rᵀ, R p) ------------------------------------------------------

    def _factors(self, exact: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        dtype = torch.float64 if exact else self.rotation.dtype

        def build(rotation: Tensor, mixing: Tensor) -> Tensor:  # R and M in one batched QR
            return F.cholesky_orthonormalize(torch.stack((rotation, mixing)).to(dtype),
                                             refine=exact)

        r, m = serial(build, self.rotation, self.mixing).unbind(0)  # (c, c) each
        c_in = self.in_channels * self.stride[0] ** 2
        first = r[:, :c_in]  # R ι: (c, C_in s²)
        last = (m @ r.mT)[:self.out_channels]  # Π M Rᵀ: (C_out, c)
        offset = None if self.pos is None else torch.einsum("ij,jhw->ihw", r,
                                                            self.pos.to(dtype))
        return first, last, offset

    def applied_weight(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(first, last, offset)``: :math:`R\\iota` (c, C_in s²) and :math:`\\Pi M R^\\top`
        (C_out, c), built in float64 and rounded with σ_max ≤ 1 kept, and :math:`Rp`
        (c, H', W') or ``None``; no gradients."""
        with torch.no_grad(), full_precision(self.rotation.device):
            first, last, offset = self._factors(exact=True)
            dtype = self._param_dtype()
            return (self.cast_unit(first), self.cast_unit(last),
                    None if offset is None else offset.to(dtype))

    def train_weight(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """The same three with gradients: one Cholesky QR pass per factor in the parameter
        dtype."""
        with full_precision(self.rotation.device):
            return self._factors(exact=False)

    def lipschitz_bound(self) -> float:
        return 1.0  # eval: isometry/permutation adapters, S a permutation, ‖Rι‖, ‖ΠMRᵀ‖ ≤ 1

    def _unshuffle(self, x: Tensor) -> Tensor:
        s = self.stride[0]
        return F.square_adapter_in(x, stride=s, channels=x.shape[1] * s * s)

    def apply_weight(self, x: Tensor, weight: tuple[Tensor, Tensor, Tensor | None]) -> Tensor:
        first, last, offset = weight
        x = self._unshuffle(x)
        if offset is not None and tuple(x.shape[-2:]) != tuple(offset.shape[-2:]):
            raise ValueError(
                f"ShiftConv2d was built for inputs of size {self.input_size} (its position "
                f"embedding has that size), but got {tuple(x.shape[-2:])} after the stride")
        y = TF.conv2d(x, first[:, :, None, None])
        if offset is not None:
            y = y + offset
        if self.group:
            y = _Shift.apply(y, *self._permutation(y))
        return TF.conv2d(y, last[:, :, None, None], self.bias)

    def _permutation(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """The shift's permutation for maps of y's size (cached per size and device)."""
        key = (tuple(y.shape[1:]), y.device)
        cache = self.__dict__.setdefault("_shift_index", {})
        if key not in cache:
            cache[key] = shift_permutation(*y.shape[1:], self.group, device=y.device)
        return cache[key]

    @torch.no_grad()
    def plain_twin(self, weight: tuple[Tensor, Tensor, Tensor | None]) -> nn.Module:
        """Plain modules for inputs of ``input_size``: [``nn.ZeroPad2d``,
        ``nn.PixelUnshuffle``], a 1×1 ``nn.Conv2d``, [:class:`PositionBias`],
        [:class:`SpatialShift`], a 1×1 ``nn.Conv2d`` with the bias."""
        first, last, offset = weight
        s, (h, w) = self.stride[0], self.input_size
        factory = {"device": first.device, "dtype": first.dtype}
        layers: list[nn.Module] = []
        if s > 1:
            if h % s or w % s:
                layers.append(nn.ZeroPad2d((0, -w % s, 0, -h % s)))
            layers.append(nn.PixelUnshuffle(s))
        conv_in = nn.Conv2d(first.shape[1], first.shape[0], 1, bias=False, **factory)
        conv_in.weight.copy_(first[:, :, None, None])
        layers.append(conv_in)
        if offset is not None:
            pos = PositionBias(*offset.shape).to(**factory)
            pos.bias.copy_(offset)
            layers.append(pos)
        if self.group:
            layers.append(SpatialShift(self.group))
        conv_out = nn.Conv2d(last.shape[1], last.shape[0], 1, bias=self.bias is not None,
                             **factory)
        conv_out.weight.copy_(last[:, :, None, None])
        if self.bias is not None:
            conv_out.bias.copy_(self.bias)
        layers.append(conv_out)
        return nn.Sequential(*layers)

    @torch.no_grad()
    def retract_(self) -> None:
        """Replace R's and M's latents by their orthonormal factors (float64 Cholesky QR);
        the function is unchanged."""
        for p in (self.rotation, self.mixing):
            p.copy_(F.cholesky_orthonormalize(p.double()).to(p.dtype))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, alpha={self.alpha}, "
                f"channels={self.channels}, group={self.group}, "
                f"position_embedding={self.position_embedding}, bias={self.bias is not None}")

"""RKO convolution: the reshaped kernel orthonormalised, times the patch-count correction.

The parameterisation of the paper's Fig. 3 network (Béthune et al. 2022, deel-lip's
``SpectralConv2d``): Serrurier et al.'s *Reshaped Kernel Orthogonalisation*.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import ConvLayer
from onelip.nn._precision import full_precision

_U = 2.0 ** -24


def patch_count(kernel_size: tuple[int, int], stride: tuple[int, int]) -> int:
    r"""How many output pixels' patches one input pixel can fall in, with zero padding:
    :math:`n = \lceil k_h/s_h \rceil \lceil k_w/s_w \rceil`."""
    return math.ceil(kernel_size[0] / stride[0]) * math.ceil(kernel_size[1] / stride[1])


def rko_kernel(weight: Tensor, *, iterations: int, stride: tuple[int, int]) -> Tensor:
    r"""The RKO kernel :math:`K = Q / \sqrt n` of a latent ``weight`` (C_out, C_in, k_h, k_w).

    :math:`W_r` is the latent reshaped to (C_out, C_in·k_h·k_w); :math:`Q` is ``iterations``
    Björck–Bowie steps from :math:`W_r/\sqrt b`, :math:`b \ge \sigma_{\max}(W_r)^2` the Gram
    row-sum bound, so every singular value starts in [0, 1] and stays there
    (:math:`\sigma \mapsto \tfrac32\sigma - \tfrac12\sigma^3` maps [0, 1] into itself):
    :math:`\|Q\|_2 \le 1` in exact arithmetic, whatever the number of steps. With
    :math:`n` = :func:`patch_count`,

    .. math::
        \|T_K x\|^2 = \sum_p \|K_r\,\mathrm{patch}_p(x)\|^2
        \le \|K_r\|^2 \sum_p \|\mathrm{patch}_p(x)\|^2 \le \|K_r\|^2\, n\, \|x\|^2,

    each input pixel sitting in at most n zero-padded patches: :math:`\|T_K\| \le 1`.
    A bound, loose but for kernels constant over their taps (the deel-lip correction,
    0.34–0.36 per 3×3 layer, is this 1/3 measured on an input size): the layer is 1-Lipschitz
    and far from norm preserving, as the paper's network is.

    Differentiable; computed in ``weight``'s dtype. Shape: (O, C, k_h, k_w) -> same.
    """
    w = weight.flatten(1)
    gram = F.small_gram(w)
    bound = F.gram_row_sum_bound(gram).clamp_min(1e-30)
    q = w / bound.sqrt()
    for _ in range(iterations):
        q = F.bjorck_step(q)
    n = patch_count(tuple(weight.shape[-2:]), stride)
    return (q / math.sqrt(n)).view_as(weight)


class RKOConv2d(ConvLayer):
    r"""RKO convolution: :math:`y = T_K x + b` with :math:`K = Q(W_r)/\sqrt n`
    (:func:`rko_kernel`): the reshaped kernel made orthonormal by Björck steps, divided by
    the square root of the number of patches an input pixel falls in (3 for a 3×3 kernel at
    stride 1). 1-Lipschitz by that bound for every input size (zero padding only).

    It is the paper's parameterisation (deel-lip's ``SpectralConv2d``: spectral
    normalisation, then Björck on the reshaped kernel, then its correction factor ≈ 0.34–0.36,
    which we replace by the provable 1/√n). Its gain on natural images is well below 1 (the
    eight layers of the paper's VGG multiply to ≈ (1/3)⁸ on generic signals), and its
    Björck step keeps every singular value of :math:`W_r` near 1, so training cannot collapse
    the kernel onto one direction — what a kernel normalised by its operator norm alone
    (:class:`~onelip.nn.SpectralConv2d`) does in the paper's VGG under the paper's recipe.

    **Train mode:** :func:`rko_kernel` in float32 with gradients, scaled by
    :math:`1 - 4u\|Q\|_F` (u = 2⁻²⁴) for the rounding of the Björck steps (measured, as for
    :class:`~onelip.nn.OrthoLinear`, not proven). **Eval mode** (cached): the same in float64,
    scaled by :math:`1-\delta` (:func:`~onelip.functional.float32_cast_margin`) and rounded: a
    plain kernel, an ``nn.Conv2d`` on export.

    Args:
        in_channels, out_channels: any.
        kernel_size: k. Default: 3.
        stride: Default: 1.
        padding: Default: (k−1)//2.
        padding_mode: ``"zeros"`` only (a circular wrap can put one pixel twice in a patch).
        bias: Default: ``True``.
        iterations: Björck steps. Default: 15 (deel-lip's default).

    Initialisation: :math:`W_r` orthogonal (deel-lip's default), bias 0.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, H', W')` as ``nn.Conv2d``.

    Reference:
        Serrurier, Mamalet, González-Sanz, Boissin, Loubes, del Barrio, *Achieving robustness
        in classification using optimal transport with hinge regularization*, CVPR 2021
        (RKO); Béthune et al., NeurIPS 2022 (its use in Fig. 3).

    Example:
        >>> conv = RKOConv2d(2, 3, 3).double().eval()
        >>> basis = torch.eye(72, dtype=torch.float64).reshape(72, 2, 6, 6)
        >>> op = (conv(basis) - conv.bias.view(1, -1, 1, 1)).reshape(72, -1)
        >>> bool(torch.linalg.matrix_norm(op, ord=2) <= 1)
        True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 stride: int = 1, padding: int | None = None, padding_mode: str = "zeros",
                 bias: bool = True, iterations: int = 15, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        k, s = int(kernel_size), int(stride)
        if k < 1 or s < 1:
            raise ValueError(f"Expected positive kernel_size and stride, but got {k}, {s}")
        if padding_mode != "zeros":
            raise ValueError(f"RKOConv2d's bound holds for zero padding only, but got "
                             f"padding_mode={padding_mode!r}: use padding_mode='zeros'")
        if int(iterations) < 0:
            raise ValueError(f"Expected iterations >= 0, but got {iterations}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding=padding,
                        padding_mode=padding_mode)
        self.iterations = int(iterations)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, **factory))
        self._init_bias(out_channels, bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.orthogonal_(self.weight.view(self.out_channels, -1))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def train_weight(self) -> Tensor:
        with full_precision(self.weight.device):
            k = rko_kernel(self.weight, iterations=self.iterations, stride=self.stride)
            n = patch_count(self.kernel_size, self.stride)
            margin = 4 * _U * float(k.detach().norm()) * math.sqrt(n)
            return k * (1 - margin)

    def applied_weight(self) -> Tensor:
        with full_precision(self.weight.device):
            k64 = rko_kernel(self.weight.detach().double(), iterations=self.iterations,
                             stride=self.stride)
            if self.weight.dtype == torch.float64:
                return k64
            return (k64 * (1 - F.float32_cast_margin(k64))).to(self.weight.dtype)

    def lipschitz_bound(self) -> float:
        return 1.0  # the patch-count bound (rko_kernel); eval: float32 cast margin

    def extra_repr(self) -> str:
        return super().extra_repr() + f", iterations={self.iterations}"

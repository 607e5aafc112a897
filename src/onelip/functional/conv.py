# SPDX-License-Identifier: MIT
"""Orthogonal convolution kernels (BCOP, by block convolution) and certified bounds of the
operator norm of a convolution (its symbol on a circular grid, padding and stride included).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "square_adapter_in",
    "bcop_kernel",
    "circular_grid",
    "compose_kernels",
    "conv2d_infinite_norm_bound",
    "conv2d_operator_norm_bound",
    "conv2d_polyphase",
    "conv2d_symbol",
    "dft_phases",
    "symbol_power_iteration",
]


def compose_kernels(first: Tensor, second: Tensor) -> Tensor:
    """The kernel of ``conv2d(conv2d(x, first), second)`` (stride 1, no padding): the *block
    convolution* :math:`C_t = \\sum_{a + b = t} B_b A_a` of the two kernels.

    A strided ``second`` composes too: ``conv2d(conv2d(x, A), B, stride=s)`` equals
    ``conv2d(x, C, stride=s)``. The operator of the composition is the product of the
    operators (on infinite or circular signals), so norms multiply at most.

    Shape: first (*, M, C, ka, ka'), second (*, O, M, kb, kb') -> (*, O, C, ka+kb-1,
    ka'+kb'-1); leading dimensions * (a batch of kernel pairs) broadcast.
    """
    kah, kaw = first.shape[-2:]
    kbh, kbw = second.shape[-2:]
    out = 0
    for i in range(kbh):  # one (O, M) @ (M, C·ka·ka') product per tap of the second kernel
        for j in range(kbw):
            term = torch.einsum("...om,...mchw->...ochw", second[..., i, j], first)
            out = out + F.pad(term, (j, kbw - 1 - j, i, kbh - 1 - i))
    return out


def _two_tap(kernel: Tensor, p: Tensor, dim: int) -> Tensor:
    """Compose ``kernel`` with the 2-tap 1-D convolution :math:`[P, I - P]` along ``dim``
    (-2: height, -1: width): :math:`C_t = P K_t + (I-P) K_{t-1}`.

    Shape: kernel (*, n, C, h, w), p (*, n, n) -> (*, n, C, h+1, w) or (*, n, C, h, w+1).
    """
    pk = torch.einsum("...ij,...jchw->...ichw", p, kernel)
    after, before = ((0, 0, 0, 1), (0, 0, 1, 0)) if dim == -2 else ((0, 1), (1, 0))
    return F.pad(pk, after) + F.pad(kernel - pk, before)


def bcop_kernel(mix: Tensor, projectors: Tensor, *, in_channels: int,
                out_channels: int) -> Tensor:
    """A k×k orthogonal convolution kernel (stride 1) from orthonormal factors (BCOP).

    The block convolution of a 1×1 kernel ``mix`` (orthonormal columns) with :math:`k-1`
    2×2 kernels :math:`B_j[a, b] = W_b H_a`, :math:`H = (P_j, I - P_j)` along the height and
    :math:`W = (R_j, I - R_j)` along the width, :math:`P_j = Q_jQ_j^\\top` the projectors
    of the orthonormal ``projectors`` (Li et al., 2019). With :math:`n = \\max(C_{in},
    C_{out})`: if :math:`C_{out} \\ge C_{in}` the 1×1 isometry comes first (then the
    n-channel blocks), else last (a co-isometry after :math:`C_{in}`-channel blocks). On
    circular or infinite signals the operator is an isometry (:math:`C_{out} \\ge C_{in}`) or
    a co-isometry; whenever every factor has :math:`\\sigma_{\\max} \\le 1` it is a
    contraction (each 1-D block's symbol :math:`P + (I-P)e^{i\\omega}` is, for
    :math:`0 \\preceq P \\preceq I`).

    A leading batch dimension builds G kernels of the same shape at once, in the same number
    of (batched) operations as one: the form :func:`onelip.nn.batched_kernel_build` uses to
    build every orthogonal kernel of a network in a few operations.

    Args:
        mix: (*, max(C_in, C_out), min(C_in, C_out)) with orthonormal columns.
        projectors: (*, 2(k-1), n, r), r ≤ n, orthonormal columns: :math:`P_1..P_{k-1}`,
            then :math:`R_1..R_{k-1}`.

    Returns: kernel (*, C_out, C_in, k, k), k = 1 + projectors.shape[-3] / 2.
    """
    n_blocks = projectors.shape[-3] // 2
    n = projectors.shape[-2] if n_blocks else mix.shape[-2]
    if out_channels >= in_channels:
        kernel = mix[..., None, None]  # (*, C_out, C_in, 1, 1)
    else:
        eye = torch.eye(n, dtype=mix.dtype, device=mix.device)
        kernel = eye.expand(*mix.shape[:-2], n, n)[..., None, None]  # (*, n, n, 1, 1)
    proj = projectors @ projectors.mT  # (*, 2(k-1), n, n): P_1..P_{k-1}, R_1..R_{k-1}
    for j in range(n_blocks):
        kernel = _two_tap(kernel, proj[..., j, :, :], -2)  # height taps (P_j, I - P_j)
        kernel = _two_tap(kernel, proj[..., n_blocks + j, :, :], -1)  # width (R_j, I - R_j)
    if out_channels < in_channels:
        kernel = torch.einsum("...io,...ichw->...ochw", mix, kernel)  # (*, C_out, C_in, k, k)
    return kernel


def circular_grid(kernel_size: tuple[int, int], input_size: tuple[int, int], *,
                  stride: int = 1, padding: int = 0) -> tuple[int, int]:
    """The smallest circular size (M_h, M_w) whose circular convolution contains the
    zero-padded ``conv2d(·, K, stride, padding)`` on ``input_size`` inputs as a restriction
    (see :func:`conv2d_operator_norm_bound`): M = max(hi, H_out + ⌈k/s⌉ - 1 - lo), lo/hi the
    first/last rows of the unshuffled padded input that can be non-zero; M = H + p for
    stride 1."""
    sizes = []
    for size, ksz in zip(input_size, kernel_size):
        q = -(-ksz // stride)  # polyphase kernel size
        n_out = (size + 2 * padding - ksz) // stride + 1  # output rows
        lo = max(0, -(-(padding - stride + 1) // stride))  # leading all-padding rows of X
        hi = (padding + size - 1) // stride + 1  # rows of X holding input
        sizes.append(max(hi, n_out + q - 1 - lo))
    return sizes[0], sizes[1]


def conv2d_polyphase(kernel: Tensor, *, stride: int | tuple[int, int] = 1) -> Tensor:
    """The polyphase kernel :math:`K'[o, (c, r_1, r_2), a_1, a_2] = K[o, c, s_1 a_1 + r_1,
    s_2 a_2 + r_2]`: the stride-s convolution as a stride-1 convolution of the
    pixel-unshuffled input. Differentiable.

    Shape: (C_out, C_in, kh, kw) -> (C_out, C_in s_1 s_2, ⌈kh/s_1⌉, ⌈kw/s_2⌉).
    """
    c_out, c_in, kh, kw = kernel.shape
    sh, sw = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
    qh, qw = -(-kh // sh), -(-kw // sw)
    k = F.pad(kernel, (0, qw * sw - kw, 0, qh * sh - kh))  # (O, C, qh sh, qw sw)
    k = k.reshape(c_out, c_in, qh, sh, qw, sw).permute(0, 1, 3, 5, 2, 4)
    return k.reshape(c_out, c_in * sh * sw, qh, qw)  # (O, C sh sw, qh, qw)


def dft_phases(taps: tuple[int, int], grid: tuple[int, int], *,
               dtype: torch.dtype = torch.complex128, device=None) -> Tensor:
    """:math:`e^{-2\\pi i (f_1 a_1 / M_h + f_2 a_2 / M_w)}` for the frequencies f of the half
    DFT grid :math:`M_h \\times (\\lfloor M_w/2 \\rfloor + 1)` and the kernel taps a.

    Shape: -> (M_h, M_w/2+1, q_h, q_w), complex.
    """
    (qh, qw), (mh, mw) = taps, grid
    fh = torch.arange(mh, dtype=torch.float64, device=device)[:, None, None, None] / mh
    fw = torch.arange(mw // 2 + 1, dtype=torch.float64, device=device)[None, :, None, None] / mw
    ah = torch.arange(qh, dtype=torch.float64, device=device)[None, None, :, None]
    aw = torch.arange(qw, dtype=torch.float64, device=device)[None, None, None, :]
    angle = -2 * math.pi * (fh * ah + fw * aw)  # (M_h, M_w', q_h, q_w)
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


def conv2d_symbol(kernel: Tensor, grid: tuple[int, int], *, stride: int = 1) -> Tensor:
    """The symbol :math:`\\hat K'(\\omega) = \\sum_a K'_a e^{-i\\langle\\omega, a\\rangle}` of the
    polyphase kernel (:func:`conv2d_polyphase`) on the half DFT grid
    :math:`M_h \\times (\\lfloor M_w/2 \\rfloor + 1)` (:math:`\\hat K'(-\\omega) =
    \\overline{\\hat K'(\\omega)}` covers the other half). A sum over the few taps (faster than
    an FFT of the padded kernel on a CPU). Differentiable.

    Shape: kernel (C_out, C_in, kh, kw) -> (M_h, M_w/2+1, C_out, C_in s²), complex.
    """
    k = conv2d_polyphase(kernel, stride=stride)  # (O, C s², qh, qw)
    ctype = torch.complex128 if kernel.dtype == torch.float64 else torch.complex64
    phases = dft_phases(tuple(k.shape[-2:]), grid, dtype=ctype, device=kernel.device)
    return torch.einsum("ocab,fgab->fgoc", k.to(ctype), phases)  # (M_h, M_w', O, C s²)


def conv2d_operator_norm_bound(kernel: Tensor, input_size: tuple[int, int], *,
                               stride: int = 1, padding: int = 0,
                               n_sizes: int = 1) -> Tensor:
    """A certified upper bound of the operator norm of ``conv2d(·, kernel, stride, padding)``
    (zero padding) on inputs of spatial size ``input_size``.

    Exact reduction to a circular convolution (no approximation):

    1. Polyphase: a stride-s convolution of the zero-padded input is a stride-1 "valid"
       convolution of the pixel-unshuffled padded input X (an *isometric* embedding of x) with
       the polyphase kernel :math:`K'` (:math:`C_{in} s^2` channels, size
       :math:`\\lceil k/s\\rceil`; :func:`conv2d_symbol`).
    2. Embedding X in a circular signal of size M large enough that no output read wraps
       onto non-zero input (:func:`circular_grid`; M = H + p for stride 1), the operator is a
       restriction of the circular convolution :math:`C_M`, so :math:`\\|T\\| \\le \\|C_M\\|`.
    3. :math:`\\|C_M\\| = \\max_{\\omega} \\sigma_{\\max}(\\hat K'(\\omega))` over the
       :math:`M_h \\times M_w` DFT grid (Sedghi et al., ICLR 2019), computed exactly by SVD in
       float64. Every :math:`M' \\ge M` is valid too: with ``n_sizes > 1`` the minimum over
       :math:`M, \\dots, M + n_{sizes} - 1` is returned (1-3 % tighter on small inputs).

    The bound is tight up to border effects (the zero-padded operator is a compression of the
    circular one); measured in ``benchmarks/results/conv.md``.

    Shape: kernel (C_out, C_in, kh, kw) -> scalar (float64).
    """
    k = kernel.detach().double()
    m_h, m_w = circular_grid(tuple(kernel.shape[-2:]), input_size, stride=stride,
                             padding=padding)
    best = None
    for extra in range(n_sizes):  # every M >= M_min is valid: keep the smallest bound
        sym = conv2d_symbol(k, (m_h + extra, m_w + extra), stride=stride)
        bound = torch.linalg.matrix_norm(sym, ord=2).amax()
        best = bound if best is None else torch.minimum(best, bound)
    return best


# conv2d_infinite_norm_bound: refine until the bound is within this (relative) of the largest
# value found, or after this many symbol evaluations (the bound is then looser, still valid).
_SUP_RTOL = 1e-5
_SUP_MAX_EVALS = 200_000


def _symbol_extremes(kp: Tensor, omega: Tensor, chunk: int = 2 ** 22) -> tuple[Tensor, Tensor]:
    """Largest and smallest squared singular values of the symbol of ``kp`` at the
    frequencies ``omega``, per group, in chunks of about ``chunk`` complex entries.

    Shape: kp (G, O, C', qh, qw) float64, omega (P, 2) float64 -> (G, P), (G, P).
    """
    g, o, c, qh, qw = kp.shape
    kc = kp.to(torch.complex128)
    ah = torch.arange(qh, dtype=torch.float64, device=kp.device)
    aw = torch.arange(qw, dtype=torch.float64, device=kp.device)
    step = max(1, chunk // max(1, g * o * c))
    big, small = [], []
    for start in range(0, omega.shape[0], step):
        w = omega[start:start + step]
        angle = -(w[:, 0, None, None] * ah[None, :, None] + w[:, 1, None, None] * aw[None, None, :])
        phases = torch.polar(torch.ones_like(angle), angle)  # (P', qh, qw)
        sym = torch.einsum("gocab,pab->gpoc", kc, phases)  # (G, P', O, C')
        sv = torch.linalg.svdvals(sym)  # (G, P', min(O, C')), descending
        big.append(sv[..., 0] ** 2)
        small.append(sv[..., -1] ** 2)
    return torch.cat(big, 1), torch.cat(small, 1)


@torch.no_grad()
def conv2d_infinite_norm_bound(kernel: Tensor, *, stride: int | tuple[int, int] = 1,
                               dilation: int | tuple[int, int] = 1, groups: int = 1,
                               rtol: float = _SUP_RTOL,
                               max_evals: int = _SUP_MAX_EVALS) -> float:
    r"""A certified upper bound, valid for **every input size and every zero padding**, of the
    operator norm of ``conv2d(·, kernel, stride, padding, dilation, groups)``.

    The zero-padded convolution of a finite input is a compression of the convolution of
    infinite signals (zero-embed the padded input, convolve, keep the output window), so its
    norm is at most that of the infinite one, :math:`\sup_\omega \sigma_{\max}(\hat K'(\omega))`
    over the *continuous* torus (:math:`K'` the polyphase kernel, :func:`conv2d_polyphase`;
    grouped: the max over the groups). A DFT grid only samples that supremum
    (:func:`conv2d_operator_norm_bound` is the maximum over one grid, which holds for one
    input size); this bounds it from samples:

    For a unit vector u, :math:`p_u(\omega) = \|\hat K'(\omega)^H u\|^2` is a real
    trigonometric polynomial of degree :math:`d_i = q_i - 1` in :math:`\omega_i` (q_i the
    polyphase taps) with values in :math:`[m, M]`, the infimum of the smallest and the supremum
    of the largest eigenvalue of the small Gram matrix :math:`\hat K'\hat K'^H` (or
    :math:`\hat K'^H\hat K'`). At a maximiser :math:`\omega^*` of :math:`p_u` the gradient
    vanishes, and Bernstein's inequality (applied to :math:`p_u - c` in each variable) bounds
    the Hessian by :math:`(d_1|\delta_1| + d_2|\delta_2|)^2 R`, :math:`R = \sup|p_u - c|`. So
    if :math:`\omega^*` lies in a cell of half-widths :math:`h_i` around a sampled frequency
    g, with :math:`\kappa = (d_1h_1 + d_2h_2)^2/2`,

    .. math::
        M \le \lambda_{\max}(g) + \kappa R, \qquad
        R \le \frac{\Lambda - \lambda}{2(1 - \kappa_0)}

    (Λ, λ the largest and smallest squared singular values on a first DFT grid with
    :math:`\kappa_0 < 1`, :math:`c = (\Lambda + \lambda)/2`; the same argument at the
    minimiser bounds m). The bound is the maximum over the cells tiling the half torus
    (:math:`\hat K'(-\omega) = \overline{\hat K'(\omega)}`); the cells whose bound exceeds the
    largest sampled value by more than ``rtol`` (relative, on σ) are split in four, until none
    does or ``max_evals`` frequencies were evaluated.

    For a symbol that is an isometry or a co-isometry at every frequency (an orthogonal
    convolution) R = 0 and the bound is the grid value at once; for others the refinement
    concentrates on the neighbourhood of the maximum (hundreds to a few thousand SVDs for
    random 3×3 kernels). Float64 (SVD per frequency) from
    the kernel as stored, then rounded up: :math:`\times(1 + 10^{-9})` and
    :math:`+\,10^{-12}\sum_a \|K'_a\|_F`.

    Shape: kernel (C_out, C_in / groups, kh, kw) -> float.
    """
    with torch.autocast(kernel.device.type, enabled=False):  # float64 whatever the context
        return _infinite_norm_bound(kernel, stride, dilation, groups, rtol, max_evals)


def _infinite_norm_bound(kernel: Tensor, stride, dilation, groups: int, rtol: float,
                         max_evals: int) -> float:
    sh, sw = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else (int(dilation[0]),
                                                                        int(dilation[1]))
    k = kernel.detach().double()
    c_out, c_group, kh, kw = k.shape
    if groups < 1 or c_out % groups:
        raise ValueError(f"Expected C_out divisible by groups, but got {c_out} and {groups}")
    if k.numel() == 0:
        return 0.0
    if not bool(torch.isfinite(k).all()):
        raise ValueError("Cannot bound a convolution whose kernel has NaN or infinite entries")
    if (dh, dw) != (1, 1):  # the dilated kernel, zeros between the taps
        dil = k.new_zeros(c_out, c_group, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dil[:, :, ::dh, ::dw] = k
        k = dil
    kp = conv2d_polyphase(k, stride=(sh, sw))  # (O, C', qh, qw)
    kp = kp.reshape(groups, c_out // groups, *kp.shape[1:])  # (G, O/G, C', qh, qw)
    deg = torch.tensor([kp.shape[-2] - 1, kp.shape[-1] - 1], dtype=torch.float64)
    # First grid: N_i = 8 d_i frequencies on axis i (κ₀ = (π/4)²/2 ≈ 0.31), half of it on
    # the last axis; each frequency is the centre of a cell of half-widths π/N_i.
    n = [max(1, 8 * int(d)) for d in deg]
    f1 = torch.arange(n[0], dtype=torch.float64) * (2 * math.pi / n[0])
    f2 = torch.arange(n[1] // 2 + 1, dtype=torch.float64) * (2 * math.pi / n[1])
    centers = torch.cartesian_prod(f1, f2).reshape(-1, 2)  # (P, 2)
    half = torch.tensor([math.pi / n[0], math.pi / n[1]], dtype=torch.float64)
    halves = half.expand(centers.shape[0], 2).clone()  # (P, 2) per cell
    big, small = _symbol_extremes(kp, centers.to(k.device))  # (G, P)
    big, small = big.cpu(), small.cpu()

    def kappa(h: Tensor) -> Tensor:  # (P, 2) -> (P,)
        return (h * deg).sum(1) ** 2 / 2

    k0 = float(kappa(half[None])[0])
    radius = (big.amax(1) - small.amin(1)).clamp_min(0) / (2 * (1 - k0))  # R per group, (G,)
    best = float(big.amax())  # the largest value sampled: a lower bound of M
    settled = 0.0  # the largest bound of the cells dropped (each below the target then)
    evals = centers.shape[0]
    split = deg > 0  # split the cells along the axes with a non-constant symbol
    while True:
        ub = (big + kappa(halves)[None, :] * radius[:, None]).amax(0)  # (P,)
        target = best * (1 + rtol) ** 2
        open_ = ub > target
        if not bool(open_.any()) or evals >= max_evals:
            bound = max(settled, float(ub.max()) if ub.numel() else 0.0)
            break
        settled = max(settled, float(ub[~open_].max()) if bool((~open_).any()) else 0.0)
        c, h = centers[open_], halves[open_] / torch.where(split, 2.0, 1.0)
        signs = [(-1, 1) if bool(split[i]) else (0,) for i in (0, 1)]
        offsets = [torch.tensor([a, b], dtype=torch.float64) for a in signs[0] for b in signs[1]]
        centers = torch.cat([c + o * h for o in offsets])  # children: quarters of the cells
        halves = torch.cat([h for _ in offsets])
        big = _symbol_extremes(kp, centers.to(k.device))[0].cpu()
        best = max(best, float(big.amax()))
        evals += centers.shape[0]
    slack = 1e-12 * float(torch.linalg.matrix_norm(kp.permute(3, 4, 0, 1, 2)).sum())
    return math.sqrt(bound) * (1 + 1e-9) + slack


@torch.no_grad()
def symbol_power_iteration(sym: Tensor, v: Tensor, *, n_iter: int = 1) -> None:
    """One power-iteration step per frequency, batched: :math:`v_\\omega \\leftarrow
    \\hat K_\\omega^H \\hat K_\\omega v_\\omega / \\|\\cdot\\|`, updating the complex unit
    vectors ``v`` in place. Then :math:`\\max_\\omega \\|\\hat K_\\omega v_\\omega\\|` is a lower
    bound of the circular norm that converges to it, tracking *every* frequency at once.

    Shape: sym (*, O, C) complex, v (*, C) complex.
    """
    for _ in range(n_iter):
        u = (sym @ v[..., None])  # (*, O, 1)
        w = (sym.mH @ u)[..., 0]  # (*, C)
        v.copy_(w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(1e-30))


def square_adapter_in(x: Tensor, *, stride: int, channels: int) -> Tensor:
    """The input of a square stride-1 operator of ``channels`` channels: zero-pad H and W at
    the bottom/right to multiples of ``stride``, pixel-unshuffle by ``stride`` (a
    permutation), zero-pad the channels up to ``channels`` (an isometric embedding).

    Shape: (N, C_in, H, W) -> (N, channels, ⌈H/s⌉, ⌈W/s⌉), channels >= C_in s².
    """
    if stride > 1:
        h, w = x.shape[-2:]
        ph, pw = -h % stride, -w % stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        x = F.pixel_unshuffle(x, stride)
    extra = channels - x.shape[1]
    return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x

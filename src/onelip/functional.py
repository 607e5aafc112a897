# SPDX-License-Identifier: MIT
"""The stateless math behind onelip's layers and losses.

Layers: :func:`group_sort`, :func:`full_sort`, :func:`polar_bjorck`, :func:`bjorck_step`,
:func:`bjorck1_linear`, :func:`spectral_norm_exact`, :func:`power_iteration`.
Convolutions: :func:`cholesky_orthonormalize`, :func:`compose_kernels`, :func:`bcop_kernel`,
:func:`circular_grid`, :func:`conv2d_symbol`, :func:`conv2d_operator_norm_bound`,
:func:`symbol_power_iteration`, :func:`conv2d_power_iteration`,
:func:`conv2d_top_singular_vector`. Pooling:
:func:`scaled_avg_pool2d`, :func:`l2_norm_pool2d`, :func:`global_l2_norm_pool2d`,
:func:`invertible_downsample`. Residual: :func:`sll_linear`, :func:`sll_conv2d`.

Losses (per-sample values reduced by ``reduction=``): :func:`kr_loss`, :func:`hinge_loss`,
:func:`hkr_loss`, :func:`multiclass_kr_loss`, :func:`multiclass_hinge_loss`,
:func:`multiclass_hkr_loss`, :func:`tau_cross_entropy_loss`.

Loss convention (onelip; see docs/losses.md for the mapping to deel-lip / deel-torchlip):

* KR is *minimised*: :math:`\\mathcal L_{KR}(f) = E[f \\mid y=-1] - E[f \\mid y=+1]`.
* hinge uses the **full** margin: :math:`\\max(0, m - y f(x))`.
* HKR is :math:`\\mathcal L_{KR} + \\alpha\\,\\mathcal L_m` with :math:`\\alpha \\ge 0`.
* τ-cross-entropy is :math:`CE(\\tau f(x), y)` (not divided by τ).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from onelip._checks import (
    binary_scores_and_signs,
    check_positive,
    class_indices,
    reduce,
)

__all__ = [
    "avg_pool_norm",
    "bcop_kernel",
    "bjorck1_linear",
    "bjorck_step",
    "cholesky_orthonormalize",
    "circular_grid",
    "compose_kernels",
    "conv2d_operator_norm_bound",
    "conv2d_polyphase",
    "conv2d_power_iteration",
    "conv2d_symbol",
    "conv2d_top_singular_vector",
    "dft_phases",
    "float32_cast_margin",
    "full_sort",
    "global_l2_norm_pool2d",
    "gram_row_sum_bound",
    "group_sort",
    "hinge_loss",
    "hkr_loss",
    "invertible_downsample",
    "kr_loss",
    "l2_norm_pool2d",
    "multiclass_hinge_loss",
    "multiclass_hkr_loss",
    "multiclass_kr_loss",
    "polar_bjorck",
    "power_iteration",
    "scaled_avg_pool2d",
    "sll_conv2d",
    "sll_conv_gram",
    "sll_linear",
    "sll_scaling",
    "spectral_norm_exact",
    "symbol_power_iteration",
    "tau_cross_entropy_loss",
]


# ==== activations ===========================================================================


def group_sort(x: Tensor, *, group_size: int = 2, dim: int = 1) -> Tensor:
    """Sort each group of ``group_size`` consecutive channels along ``dim`` (ascending).

    On each linear piece GroupSort is a permutation matrix, so it is 1-Lipschitz and
    gradient-norm preserving (Anil et al., ICML 2019). ``group_size=2`` is MaxMin.

    Shape: :math:`(N, C, *) \\to (N, C, *)` with ``C % group_size == 0``.
    """
    c = x.shape[dim]
    if group_size < 1 or c % group_size != 0:
        raise ValueError(
            f"Expected group_size to divide the {c} channels of dim {dim}, "
            f"but got group_size={group_size}"
        )
    if group_size == 1:
        return x
    dim = dim % x.dim()
    shape = x.shape
    g = x.reshape(*shape[:dim], c // group_size, group_size, *shape[dim + 1 :])  # (.., C/g, g, ..)
    if group_size == 2:
        a, b = g.unbind(dim + 1)
        out = torch.stack((torch.minimum(a, b), torch.maximum(a, b)), dim=dim + 1)
    else:
        out = torch.sort(g, dim=dim + 1).values
    return out.reshape(shape)


def full_sort(x: Tensor, *, dim: int = 1) -> Tensor:
    """Sort all channels along ``dim``: GroupSort with one group. 1-Lipschitz."""
    return torch.sort(x, dim=dim).values


# ==== orthonormalisation ====================================================================


def _small_gram(w: Tensor) -> Tensor:
    """Gram matrix on the smaller side: W Wᵀ (out ≤ in) or Wᵀ W (out > in)."""
    return w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w


def gram_row_sum_bound(gram: Tensor) -> Tensor:
    """A certified upper bound of :math:`\\sigma_{\\max}(W)^2` from the Gram matrix.

    :math:`\\|G\\|_2 \\le \\|G\\|_\\infty = \\max_i \\sum_j |G_{ij}|` for any matrix, and
    :math:`\\|G\\|_2 = \\sigma_{\\max}(W)^2` for :math:`G = W^\\top W`.
    """
    return gram.abs().sum(-1).amax(-1)


def bjorck_step(w: Tensor, gram: Tensor | None = None) -> Tensor:
    """One Björck–Bowie step :math:`W (\\tfrac32 I - \\tfrac12 W^\\top W)`.

    On singular values it is :math:`\\sigma \\mapsto \\tfrac32\\sigma - \\tfrac12\\sigma^3`,
    whose maximum over :math:`[0, 2]` is 1 (at :math:`\\sigma = 1`): the result has spectral
    norm :math:`\\le 1` whenever :math:`\\sigma_{\\max}(W) \\le 2`, and the same singular
    vectors (the polar factor :math:`UV^\\top` is unchanged).

    Shape: (out, in) -> (out, in).
    """
    if gram is None:
        gram = _small_gram(w)
    eye = torch.eye(gram.shape[-1], dtype=w.dtype, device=w.device)
    a = 1.5 * eye - 0.5 * gram
    return a @ w if w.shape[-2] <= w.shape[-1] else w @ a


def polar_bjorck(
    w: Tensor,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    dtype: torch.dtype | None = torch.float64,
) -> tuple[Tensor, float]:
    """The orthogonal polar factor :math:`Q = U V^\\top` of :math:`W = U \\Sigma V^\\top`.

    Björck–Bowie iterations from a *certified* start: if the Gram row-sum bound
    :math:`b \\ge \\sigma_{\\max}^2` exceeds 2.5 the iteration starts from :math:`W/\\sqrt b`
    (all singular values in (0, 1], where the iteration converges), otherwise from
    :math:`W` (warm start: a near-orthogonal latent converges quadratically in a few steps).
    It stops when :math:`e = \\|G - I\\|_F \\le` ``tol`` (:math:`G` the Gram matrix of the
    iterate) and finally divides by :math:`\\sqrt{1 + e}`, so that the result satisfies
    :math:`\\sigma_{\\max}(Q) \\le 1` *exactly* (up to rounding) even if the tolerance was not
    reached, and :math:`\\sigma_{\\min}(Q) \\ge \\sqrt{(1-e)/(1+e)}`.

    A rank-deficient :math:`W` keeps its zero singular values (no orthogonal factor exists).

    Args:
        w: the latent weight, shape (out, in).
        tol: stop when :math:`\\|G - I\\|_F \\le` tol.
        max_iter: at most this many steps.
        dtype: compute in this dtype (float64 by default: the float32 rounding floor of
            :math:`\\|G-I\\|_F` for a 512×512 matrix is ~1e-3). ``None`` keeps ``w.dtype``.

    Returns:
        ``(Q, e)``: Q in ``w.dtype``, shape (out, in); e the final :math:`\\|G-I\\|_F`.
    """
    out_dtype = w.dtype
    q = w.detach().to(dtype) if dtype is not None else w
    gram = _small_gram(q)
    bound = float(gram_row_sum_bound(gram))
    if not math.isfinite(bound) or bound == 0.0:
        raise ValueError("Cannot orthonormalise a weight that is zero, NaN or infinite")
    if bound > 2.5:
        q = q / math.sqrt(bound)
        gram = gram / bound
    eye = torch.eye(gram.shape[-1], dtype=q.dtype, device=q.device)
    err = float(torch.linalg.matrix_norm(gram - eye))
    for _ in range(max_iter):
        if err <= tol:
            break
        q = bjorck_step(q, gram)
        gram = _small_gram(q)
        new_err = float(torch.linalg.matrix_norm(gram - eye))
        if new_err >= err and err < 1e-3:  # rounding floor reached
            err = new_err
            break
        err = new_err
    q = q / math.sqrt(1.0 + err)
    return q.to(out_dtype), err


def bjorck1_linear(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """:math:`y = x\\,Q^\\top + b` with :math:`Q = W(\\tfrac32 I - \\tfrac12 W^\\top W)`,
    applied without forming Q.

    :math:`x Q^\\top = \\tfrac32\\,x W^\\top - \\tfrac12\\,((x W^\\top) W) W^\\top`: three
    (N × d × d) products instead of two (d × d × d) ones, which is cheaper when the batch
    N is smaller than the width d. :math:`\\|Q\\|_2 \\le 1` when :math:`\\sigma_{\\max}(W) \\le 2`
    (:func:`bjorck_step`).

    Shape: x (*, in), w (out, in) -> (*, out).
    """
    xw = x @ w.mT  # (*, out)
    y = 1.5 * xw - 0.5 * ((xw @ w) @ w.mT)  # (*, out)
    if bias is not None:
        y = y + bias
    return y


# ==== spectral norm =========================================================================


def spectral_norm_exact(w: Tensor) -> Tensor:
    """:math:`\\sigma_{\\max}(W)` by SVD in float64 (exact to float64 rounding).

    Shape: (out, in) -> scalar, in ``w.dtype``.
    """
    return torch.linalg.matrix_norm(w.detach().double(), ord=2).to(w.dtype)


@torch.no_grad()
def power_iteration(w: Tensor, u: Tensor, v: Tensor, *, n_iter: int = 1) -> None:
    """Update the persistent singular vectors ``u`` (out,), ``v`` (in,) of ``w`` in place.

    :math:`v \\leftarrow W^\\top u / \\|W^\\top u\\|`, :math:`u \\leftarrow W v / \\|W v\\|`.
    Then :math:`\\hat\\sigma = u^\\top W v \\le \\sigma_{\\max}(W)` (a lower bound that converges
    to it).
    """
    for _ in range(n_iter):
        v.copy_(F.normalize(w.mT @ u, dim=0, eps=1e-12))
        u.copy_(F.normalize(w @ v, dim=0, eps=1e-12))


# ==== orthogonal convolutions (BCOP kernels by block convolution) ===========================


_ORTHO_TOL = 1e-12  # ‖QᵀQ − I‖_F above which Cholesky QR takes a second pass


def _cholesky_qr(a: Tensor) -> Tensor:
    """Q = A R^{-1}, RᵀR = AᵀA + jitter (Cholesky QR). (*, m, n), m >= n."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    gram = a.mT @ a  # (*, n, n)
    jitter = 1e-14 * gram.diagonal(dim1=-2, dim2=-1).mean(-1) + torch.finfo(a.dtype).tiny
    chol = torch.linalg.cholesky_ex(gram + jitter[..., None, None] * eye).L  # (*, n, n)
    return torch.linalg.solve_triangular(chol, a.mT, upper=False).mT  # A L^{-T}: (*, m, n)


def cholesky_orthonormalize(w: Tensor, *, refine: bool = True) -> Tensor:
    """Orthonormalise the columns (rows, for a wide matrix) of ``w`` by Cholesky QR.

    :math:`W = QR` with :math:`R^\\top R = W^\\top W` (Cholesky), :math:`Q = W R^{-1}`:
    no iteration to converge, smooth, and :math:`\\operatorname{span} Q =
    \\operatorname{span} W`. The orthogonality error of one pass is about
    :math:`\\kappa(W)^2 \\epsilon`; when it exceeds 1e-12 a second pass ("CholeskyQR2")
    brings it down to :math:`\\epsilon` (float64: ~1e-15 for :math:`\\kappa \\lesssim 10^6`)
    unless ``refine=False`` (no second pass, and no host synchronisation: for well-conditioned
    latents, e.g. retracted ones). A relative jitter of 1e-14 on the Gram diagonal keeps
    rank-deficient inputs finite. The result is divided by :math:`\\sqrt{1+e}`,
    :math:`e = \\|Q^\\top Q - I\\|_F` (no gradient), so :math:`\\sigma_{\\max}(Q) \\le 1` holds
    for *any* input, whatever its conditioning.

    Shape: (*, m, n) -> (*, m, n).
    """
    wide = w.shape[-2] < w.shape[-1]
    a = w.mT if wide else w  # (*, m, n), m >= n
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)

    def error(q: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.linalg.matrix_norm(q.mT @ q - eye)  # (*,)

    q = _cholesky_qr(a)
    err = error(q)
    if refine and q.numel() and float(err.max()) > _ORTHO_TOL:  # ill-conditioned: 2nd pass
        q = _cholesky_qr(q)
        err = error(q)
    q = q / torch.sqrt(1 + err)[..., None, None]
    return q.mT if wide else q


def compose_kernels(first: Tensor, second: Tensor) -> Tensor:
    """The kernel of ``conv2d(conv2d(x, first), second)`` (stride 1, no padding): the *block
    convolution* :math:`C_t = \\sum_{a + b = t} B_b A_a` of the two kernels.

    A strided ``second`` composes too: ``conv2d(conv2d(x, A), B, stride=s)`` equals
    ``conv2d(x, C, stride=s)``. The operator of the composition is the product of the
    operators (on infinite or circular signals), so norms multiply at most.

    Shape: first (M, C, ka, ka'), second (O, M, kb, kb') -> (O, C, ka+kb-1, ka'+kb'-1).
    """
    kah, kaw = first.shape[-2:]
    kbh, kbw = second.shape[-2:]
    out = 0
    for i in range(kbh):  # one (O, M) @ (M, C·ka·ka') product per tap of the second kernel
        for j in range(kbw):
            term = torch.einsum("om,mchw->ochw", second[:, :, i, j], first)  # (O, C, ka, ka')
            out = out + F.pad(term, (j, kbw - 1 - j, i, kbh - 1 - i))
    return out


def _two_tap(kernel: Tensor, p: Tensor, dim: int) -> Tensor:
    """Compose ``kernel`` with the 2-tap 1-D convolution :math:`[P, I - P]` along ``dim``
    (-2: height, -1: width): :math:`C_t = P K_t + (I-P) K_{t-1}`.

    Shape: kernel (n, C, h, w), p (n, n) -> (n, C, h+1, w) or (n, C, h, w+1).
    """
    pk = torch.einsum("ij,jchw->ichw", p, kernel)
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

    Args:
        mix: (max(C_in, C_out), min(C_in, C_out)) with orthonormal columns.
        projectors: (2(k-1), n, r), r ≤ n, orthonormal columns: :math:`P_1..P_{k-1}`, then
            :math:`R_1..R_{k-1}`.

    Returns: kernel (C_out, C_in, k, k), k = 1 + len(projectors) / 2.
    """
    n_blocks = projectors.shape[0] // 2
    n = projectors.shape[1] if n_blocks else mix.shape[0]
    if out_channels >= in_channels:
        kernel = mix[:, :, None, None]  # (C_out, C_in, 1, 1)
    else:
        kernel = torch.eye(n, dtype=mix.dtype, device=mix.device)[:, :, None, None]
    proj = projectors @ projectors.mT  # (2(k-1), n, n): P_1..P_{k-1}, R_1..R_{k-1}
    for j in range(n_blocks):
        kernel = _two_tap(kernel, proj[j], -2)  # height taps (P_j, I - P_j)
        kernel = _two_tap(kernel, proj[n_blocks + j], -1)  # width taps (R_j, I - R_j)
    if out_channels < in_channels:
        kernel = torch.einsum("io,ichw->ochw", mix, kernel)  # (C_out, C_in, k, k)
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


def conv2d_polyphase(kernel: Tensor, *, stride: int = 1) -> Tensor:
    """The polyphase kernel :math:`K'[o, (c, r_1, r_2), a_1, a_2] = K[o, c, s a_1 + r_1,
    s a_2 + r_2]`: the stride-s convolution as a stride-1 convolution of the
    pixel-unshuffled input. Differentiable.

    Shape: (C_out, C_in, kh, kw) -> (C_out, C_in s², ⌈kh/s⌉, ⌈kw/s⌉).
    """
    c_out, c_in, kh, kw = kernel.shape
    s = stride
    qh, qw = -(-kh // s), -(-kw // s)
    k = F.pad(kernel, (0, qw * s - kw, 0, qh * s - kh))  # (O, C, qh s, qw s)
    k = k.reshape(c_out, c_in, qh, s, qw, s).permute(0, 1, 3, 5, 2, 4)
    return k.reshape(c_out, c_in * s * s, qh, qw)  # (O, C s², qh, qw)


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


@torch.no_grad()
def conv2d_power_iteration(kernel: Tensor, v: Tensor, *, stride: int = 1, padding: int = 0,
                           n_iter: int = 1) -> None:
    """Power iteration on :math:`T^\\top T` for :math:`T = ` ``conv2d(·, kernel, stride,
    padding)``, updating the unit input-space vector ``v`` in place
    (:math:`T^\\top` is ``conv_transpose2d``). Afterwards :math:`\\|Tv\\| \\le \\|T\\|` is a lower
    bound that converges to it.

    Shape: kernel (C_out, C_in, kh, kw), v (1, C_in, H, W).
    """
    for _ in range(n_iter):
        t = _conv2d_gram_apply(kernel, v, stride, padding)  # (1, C_in, H, W)
        v.copy_(t / t.norm().clamp_min(1e-30))


def _conv2d_gram_apply(kernel: Tensor, v: Tensor, stride: int, padding: int) -> Tensor:
    """:math:`T^\\top T v` for T = conv2d(·, kernel, stride, padding). v (1, C_in, H, W)."""
    h, w = v.shape[-2:]
    u = F.conv2d(v, kernel, stride=stride, padding=padding)  # (1, C_out, H', W')
    oh = h - ((u.shape[-2] - 1) * stride - 2 * padding + kernel.shape[-2])
    ow = w - ((u.shape[-1] - 1) * stride - 2 * padding + kernel.shape[-1])
    return F.conv_transpose2d(u, kernel, stride=stride, padding=padding,
                              output_padding=(oh, ow))  # (1, C_in, H, W)


@torch.no_grad()
def conv2d_top_singular_vector(kernel: Tensor, v0: Tensor, *, stride: int = 1,
                               padding: int = 0, n_iter: int = 60) -> Tensor:
    """The top right singular vector of ``conv2d(·, kernel, stride, padding)``, by Lanczos on
    :math:`T^\\top T` (``n_iter`` steps, full reorthogonalisation) from ``v0``.

    The padded operator's top singular values are nearly degenerate, so power iteration
    converges slowly (relative error ~1e-3 after 100 steps at 64 channels, 32×32); Lanczos
    reaches ~1e-5 in 60 steps. Used to start :func:`conv2d_power_iteration`.

    Shape: kernel (C_out, C_in, kh, kw), v0 (1, C_in, H, W) -> unit vector (1, C_in, H, W).
    """
    basis = [(v0 / v0.norm()).flatten()]  # orthonormal Krylov basis
    alpha: list[float] = []
    beta: list[float] = []
    for _ in range(n_iter):
        w = _conv2d_gram_apply(kernel, basis[-1].view_as(v0), stride, padding).flatten()
        alpha.append(float(basis[-1] @ w))
        q = torch.stack(basis)  # (j, d)
        for _ in range(2):  # full reorthogonalisation, twice
            w = w - q.mT @ (q @ w)
        b = float(w.norm())
        if b <= 1e-12 * max(abs(alpha[-1]), 1e-300):
            break
        beta.append(b)
        basis.append(w / b)
    m = len(alpha)
    tri = torch.diag(torch.tensor(alpha, dtype=torch.float64))  # (m, m) tridiagonal
    off = torch.tensor(beta[:m - 1], dtype=torch.float64)
    tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    y = torch.linalg.eigh(tri).eigenvectors[:, -1].to(v0.dtype)  # top Ritz vector
    v = (torch.stack(basis[:m]).mT @ y).view_as(v0)
    return v / v.norm()


def float32_cast_margin(kernel: Tensor) -> float:
    """:math:`\\delta` such that rounding ``(1-\\delta) K`` to float32 keeps a convolution of norm
    ≤ 1 below 1.

    The rounding perturbs each entry by at most :math:`u = 2^{-24}` relatively, so the operator
    norm moves by at most :math:`u \\sum_{t} \\|K_t\\|_F` (triangle inequality over the taps t).
    Plus 1e-12 for the float64 SVD of the bound.
    """
    taps = kernel.detach().double().flatten(2).permute(2, 0, 1)  # (k², O, C)
    return 2.0 ** -24 * float(torch.linalg.matrix_norm(taps).sum()) + 1e-12


# ==== pooling ===============================================================================


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def avg_pool_norm(kernel_size, stride=None, padding=0, input_size=None) -> float:
    """Exact operator norm of the window *sum* behind ``avg_pool2d(·, k, s, p) · k_h k_w``
    (``count_include_pad=True``).

    The operator is separable: the Kronecker product of two 1-D strided box sums, so its norm
    is the product of theirs. For infinite signals (``input_size=None``) the 1-D norm is
    :math:`\\sqrt{\\sum_r n_r^2}`, :math:`n_r = \\#\\{a < k : a \\equiv r \\bmod s\\}` (the polyphase
    symbol is maximal at frequency 0, all coefficients being positive): a bound for every
    input size, reached as the size grows. Non-overlapping windows (s = k) give
    :math:`\\sqrt k` per axis. With ``input_size`` the norm is the exact one of that size
    (SVD of the 1-D matrices).
    """
    ks, st, pd = _pair(kernel_size), _pair(stride if stride is not None else kernel_size), \
        _pair(padding)
    total = 1.0
    for i, (k, s, p) in enumerate(zip(ks, st, pd)):
        if input_size is None:
            counts = [len(range(r, k, s)) for r in range(min(s, k))]
            total *= math.sqrt(sum(c * c for c in counts))
        else:
            n = int(input_size[i])
            n_out = (n + 2 * p - k) // s + 1
            mat = torch.zeros(max(n_out, 0), n, dtype=torch.float64)
            for o in range(n_out):
                lo, hi = max(o * s - p, 0), min(o * s - p + k, n)
                if hi > lo:
                    mat[o, lo:hi] = 1.0
            total *= float(torch.linalg.matrix_norm(mat, ord=2)) if mat.numel() else 0.0
    return total


def scaled_avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, *,
                      scale: float | None = None) -> Tensor:
    """Average pooling scaled to be 1-Lipschitz: :math:`\\frac{k_h k_w}{\\|S\\|}
    \\operatorname{avgpool}(x)`, :math:`\\|S\\|` the norm of the window sum
    (:func:`avg_pool_norm`; :math:`k` for non-overlapping k×k windows, i.e. avg × k).

    Shape: (N, C, H, W) -> (N, C, H', W').
    """
    ks = _pair(kernel_size)
    if scale is None:
        scale = ks[0] * ks[1] / avg_pool_norm(kernel_size, stride, padding)
    return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=True) * scale


def l2_norm_pool2d(x: Tensor, kernel_size, stride=None, *, eps: float = 1e-12) -> Tensor:
    """Window L2 norms :math:`y = \\sqrt{\\|x_w\\|^2 + \\epsilon} - \\sqrt\\epsilon` (smooth at 0),
    divided by :math:`\\sqrt{c}`, c the largest number of windows covering one pixel
    (:math:`\\lceil k/s\\rceil` per axis; 1 for non-overlapping windows).

    Each window is 1-Lipschitz (:math:`v \\mapsto \\sqrt{\\|v\\|^2+\\epsilon}` is), so
    :math:`\\|N(x) - N(y)\\|^2 \\le \\sum_w \\|x_w - y_w\\|^2 \\le c\\,\\|x - y\\|^2`, with equality
    for y = 0, x an impulse (ε = 0): the factor is exact.

    Shape: (N, C, H, W) -> (N, C, H', W').
    """
    ks = _pair(kernel_size)
    st = _pair(stride if stride is not None else kernel_size)
    cover = math.prod(-(-k // s) for k, s in zip(ks, st))
    sq = F.avg_pool2d(x * x, ks, st) * (ks[0] * ks[1])  # window sums of squares
    out = torch.sqrt(sq + eps) - math.sqrt(eps)
    return out / math.sqrt(cover) if cover > 1 else out


def global_l2_norm_pool2d(x: Tensor, *, eps: float = 1e-12) -> Tensor:
    """Per-channel L2 norm over the spatial axes, :math:`\\sqrt{\\|x_c\\|^2+\\epsilon} -
    \\sqrt\\epsilon`: 1-Lipschitz (one window per channel).

    Shape: (N, C, H, W) -> (N, C).
    """
    return torch.sqrt(x.square().sum((-2, -1)) + eps) - math.sqrt(eps)


def invertible_downsample(x: Tensor, *, factor: int = 2) -> Tensor:
    """Pixel unshuffle: each factor×factor block becomes factor² channels. A permutation of
    the coordinates: orthogonal.

    Shape: (N, C, H, W) -> (N, C·f², H/f, W/f); H and W must be multiples of f.
    """
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"Expected spatial size divisible by factor={factor}, but got {h}x{w}"
        )
    return F.pixel_unshuffle(x, factor)


# ==== residual blocks =======================================================================


def _safe_inv(t: Tensor) -> Tensor:
    return torch.where(t > 0, 1 / t.clamp_min(1e-30), torch.zeros_like(t))


def sll_scaling(gram: Tensor, log_q: Tensor) -> Tensor:
    """The SLL diagonal :math:`T^{-1}` (Araujo et al., ICLR 2023, Thm 3).

    :math:`T_{ii} = \\sum_j |G_{ij}|\\, q_j / q_i` with :math:`G = W^\\top W` (for a convolution,
    :math:`|G_{ij}|` summed over the spatial offsets of the kernel autocorrelation),
    :math:`q = e^{\\text{log\\_q}} > 0`. Then :math:`T \\succeq W^\\top W` (a scaled
    Gershgorin bound) and :math:`x \\mapsto x - 2WT^{-1}\\sigma(W^\\top x + b)` is 1-Lipschitz
    for any slope-restricted σ in [0, 1] (ReLU).

    Shape: gram (m, m) or (m, m, kh, kw), log_q (m,) -> (m,) = 1 / T_ii (0 for a zero row).
    """
    g = gram.abs()
    if g.dim() == 4:
        g = g.sum((-2, -1))  # (m, m)
    q = torch.exp(log_q)
    t = (g * q[None, :]).sum(1) / q  # (m,)
    return _safe_inv(t)


def sll_linear(x: Tensor, weight: Tensor, bias: Tensor | None, log_q: Tensor) -> Tensor:
    """Dense SLL block :math:`y = x - 2 W T^{-1} \\operatorname{ReLU}(W^\\top x + b)`.

    Shape: x (*, d), weight (d, m) (W: features × inner units), bias (m,), log_q (m,)
    -> (*, d).
    """
    t_inv = sll_scaling(weight.mT @ weight, log_q)  # (m,)
    h = torch.relu(x @ weight + (bias if bias is not None else 0))  # (*, m)
    return x - 2 * (h * t_inv) @ weight.mT


def sll_conv_gram(kernel: Tensor) -> Tensor:
    """The kernel of :math:`W^\\top W` for W the transposed convolution of ``kernel``
    (i.e. :math:`T T^\\top`, T = conv2d(·, kernel)): autocorrelation over the offsets.

    Shape: (m, C, k, k) -> (m, m, 2k-1, 2k-1).
    """
    kh, kw = kernel.shape[-2:]
    return F.conv2d(kernel, kernel, padding=(kh - 1, kw - 1))


def sll_conv2d(x: Tensor, kernel: Tensor, bias: Tensor | None, log_q: Tensor, *,
               padding: int) -> Tensor:
    """Convolutional SLL block :math:`y = x - 2\\,T^\\top\\big(t \\odot
    \\operatorname{ReLU}(Tx + b)\\big)`, T = ``conv2d(·, kernel, padding)``, t the per-channel
    :func:`sll_scaling` of :func:`sll_conv_gram`. 1-Lipschitz with zero padding too: the padded
    Gram :math:`T T^\\top = R T_\\infty E E^\\top T_\\infty^\\top R^\\top \\preceq
    R\\,T_\\infty T_\\infty^\\top R^\\top \\preceq R\\,\\mathrm{diag}(t)^{-1} R^\\top` (E, R: the
    zero embedding and the crop; the last step is the scaled Gershgorin bound on the infinite
    Toeplitz Gram, whose entries are the autocorrelation).

    Shape: x (N, C, H, W), kernel (m, C, k, k) (odd k, padding (k-1)/2) -> (N, C, H, W).
    """
    t_inv = sll_scaling(sll_conv_gram(kernel), log_q)  # (m,)
    h = torch.relu(F.conv2d(x, kernel, bias, padding=padding))  # (N, m, H, W)
    return x - 2 * F.conv_transpose2d(h * t_inv[:, None, None], kernel, padding=padding)


# ==== losses: binary ========================================================================


def _binary_frequency(sign: Tensor, frequency: Tensor | None) -> tuple[Tensor, Tensor]:
    """Class frequencies (p(-1), p(+1)) of the batch, or the given global ones."""
    if frequency is None:
        p_pos = (sign > 0).to(sign.dtype).mean()
        return 1 - p_pos, p_pos
    return frequency[0].to(sign.dtype), frequency[1].to(sign.dtype)


def kr_loss(
    input: Tensor,
    target: Tensor,
    *,
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """Kantorovich–Rubinstein loss, minimised: :math:`E[f|y=-1] - E[f|y=+1]`.

    Per sample :math:`\\ell_n = -y_n f(x_n) / \\hat p(y_n)` with :math:`\\hat p` the batch
    frequency of the label (or ``frequency``, e.g. gathered across processes), so that the
    mean over the batch is exactly :math:`E_-[f] - E_+[f]`. Over 1-Lipschitz f its minimum
    is :math:`-W_1(P_+, P_-)`.

    Args:
        input: f(x), shape (N,) or (N, 1).
        target: labels in {0, 1} or {-1, +1}, shape (N,).
        frequency: optional (2,) tensor of label frequencies (p(-1), p(+1)).
    """
    f, y = binary_scores_and_signs(input, target)
    p_neg, p_pos = _binary_frequency(y, frequency)
    weight = torch.where(y > 0, 1 / p_pos.clamp_min(1e-12), 1 / p_neg.clamp_min(1e-12))
    return reduce(-y * f * weight, reduction)


def hinge_loss(
    input: Tensor, target: Tensor, *, margin: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Hinge loss with the full margin m: :math:`\\ell_n = \\max(0, m - y_n f(x_n))`.

    deel-torchlip's ``HingeMarginLoss(min_margin=m')`` is :math:`\\max(0, m'/2 - yf)`: m = m'/2.
    """
    check_positive("margin", margin, strict=False)
    f, y = binary_scores_and_signs(input, target)
    return reduce(F.relu(margin - y * f), reduction)


def hkr_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 10.0,
    margin: float = 1.0,
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """Hinge-KR loss :math:`\\mathcal L_{KR} + \\alpha\\,\\mathcal L_m`, α ≥ 0 (deel-lip's form).

    deel-torchlip ≥ 1.0 uses :math:`\\alpha_t\\,\\text{hinge}_{m'} - (1-\\alpha_t)\\,KR`; it is
    :math:`(1-\\alpha_t)` times ours with :math:`\\alpha = \\alpha_t/(1-\\alpha_t)`, m = m'/2.
    """
    check_positive("alpha", alpha, strict=False)
    kr = kr_loss(input, target, reduction="none", frequency=frequency)
    hinge = hinge_loss(input, target, margin=margin, reduction="none")
    return reduce(kr + alpha * hinge, reduction)


# ==== losses: multiclass ====================================================================


def _class_frequency(y: Tensor, k: int, dtype: torch.dtype, frequency: Tensor | None) -> Tensor:
    if frequency is not None:
        if frequency.shape != (k,):
            raise ValueError(
                f"Expected frequency of shape ({k},), but got {tuple(frequency.shape)}"
            )
        return frequency.to(dtype)
    return torch.bincount(y, minlength=k).to(dtype) / max(y.numel(), 1)


def multiclass_kr_loss(
    input: Tensor,
    target: Tensor,
    *,
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """One-vs-all KR, averaged over the K classes.

    .. math::
        \\mathcal L_{KR} = \\frac1K \\sum_{k=1}^K \\big(E[f_k \\mid y \\ne k] - E[f_k \\mid y = k]\\big)

    Per sample :math:`\\ell_n = \\frac1K \\big(-f_{y_n}/p_{y_n} +
    \\sum_{k \\ne y_n} f_k / (1 - p_k)\\big)` with :math:`p_k` the batch (or given) frequency.

    Shape: input (N, K), target (N,) integer in [0, K).
    """
    y = class_indices(input, target)
    n, k = input.shape
    p = _class_frequency(y, k, input.dtype, frequency)  # (K,)
    onehot = F.one_hot(y, k).to(input.dtype)  # (N, K)
    w_pos = 1 / p.clamp_min(1e-12)
    w_neg = 1 / (1 - p).clamp_min(1e-12)
    per = -onehot * input * w_pos + (1 - onehot) * input * w_neg  # (N, K)
    return reduce(per.sum(1) / k, reduction)


def multiclass_hinge_loss(
    input: Tensor,
    target: Tensor,
    *,
    margin: float = 1.0,
    mode: str = "one_vs_all",
    reduction: str = "mean",
) -> Tensor:
    """Multiclass hinge with the full margin m.

    * ``mode="one_vs_all"``: :math:`\\ell_n = \\max(0, m - f_{y}) + \\frac{1}{K-1}
      \\sum_{j \\ne y}\\max(0, m + f_j)` (deel-torchlip's form divided by K−1). It asks
      for :math:`f_y \\ge m \\ge -f_j`, i.e. a top-1 margin of 2m.
    * ``mode="top2"``: :math:`\\ell_n = \\max(0, m - (f_y - \\max_{j\\ne y} f_j))`: it asks
      for a margin m, i.e. a certified radius :math:`m/\\sqrt2`.

    Shape: input (N, K), target (N,) integer in [0, K).
    """
    check_positive("margin", margin, strict=False)
    y = class_indices(input, target)
    k = input.shape[1]
    onehot = F.one_hot(y, k).to(torch.bool)
    f_y = input.gather(1, y[:, None])[:, 0]  # (N,)
    if mode == "one_vs_all":
        neg = F.relu(margin + input).masked_fill(onehot, 0).sum(1) / (k - 1)
        loss = F.relu(margin - f_y) + neg
    elif mode == "top2":
        other = input.masked_fill(onehot, float("-inf")).amax(1)
        loss = F.relu(margin - (f_y - other))
    else:
        raise ValueError(f"Expected mode 'one_vs_all' or 'top2', but got mode={mode!r}")
    return reduce(loss, reduction)


def multiclass_hkr_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 10.0,
    margin: float = 1.0,
    mode: str = "one_vs_all",
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """Multiclass HKR: :func:`multiclass_kr_loss` + α · :func:`multiclass_hinge_loss`."""
    check_positive("alpha", alpha, strict=False)
    kr = multiclass_kr_loss(input, target, reduction="none", frequency=frequency)
    hinge = multiclass_hinge_loss(
        input, target, margin=margin, mode=mode, reduction="none"
    )
    return reduce(kr + alpha * hinge, reduction)


def tau_cross_entropy_loss(
    input: Tensor, target: Tensor, *, tau: float = 8.0, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy at temperature τ: :math:`\\ell_n = CE(\\tau f(x_n), y_n)`.

    Small τ → large margins (robust); large τ → accuracy. deel-torchlip's
    ``TauCrossEntropyLoss`` is ours divided by τ.

    Shape: input (N, K), target (N,) integer in [0, K).
    """
    check_positive("tau", tau)
    y = class_indices(input, target)
    return reduce(F.cross_entropy(tau * input, y, reduction="none"), reduction)

# SPDX-License-Identifier: MIT
"""The linear residual convolution of LiResNet (Hu et al., NeurIPS 2023) as one certified
convolution: :class:`LiResConv2d`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import ConvLayer
from onelip.nn._kernels import build_threads, serial
from onelip.nn._precision import full_precision
from onelip.nn.conv import _TRACK_SWEEP, _TRACK_TOP
from onelip.nn.plain import plain_conv

__all__ = ["LiResConv2d"]

# A Krylov direction whose norm after orthogonalisation is below this fraction of its norm
# before is dropped (it is rounding noise: normalising it would break orthonormality).
_KRYLOV_DROP = 1e-4


def _apply(sym: Tensor, v: Tensor) -> Tensor:
    """The batched product :math:`\\hat K_\\omega v_\\omega`: (S, O, C), (S, C) -> (S, O) (a
    broadcast product and sum: several times faster on a CPU than a batched complex matmul
    by one vector)."""
    return (sym * v[..., None, :]).sum(-1)


def _apply_adjoint(sym: Tensor, u: Tensor) -> Tensor:
    """:math:`\\hat K_\\omega^H u_\\omega`: (S, O, C), (S, O) -> (S, C)."""
    return (sym.conj() * u[..., None]).sum(-2)


def _estimates(kp: Tensor, phases: Tensor, v: Tensor) -> Tensor:
    """:math:`\\|\\hat K'_\\omega v_\\omega\\|` at every frequency without forming the symbols:
    :math:`\\sum_a e^{-i\\langle\\omega, a\\rangle} (K'_a v_\\omega)`, one matrix product
    (F, C') @ (C', taps·O) then a sum over the taps: memory F·taps·O instead of F·O·C'.

    Shape: kp (O, C', qh, qw) complex, phases (F, qh, qw), v (F, C') -> (F,).
    """
    o, c = kp.shape[:2]
    taps = kp.flatten(2).permute(1, 2, 0).reshape(c, -1)  # (C', taps·O)
    u = (v @ taps).view(v.shape[0], -1, o)  # K'_a v_ω: (F, taps, O)
    return torch.linalg.vector_norm((phases.flatten(1)[..., None] * u).sum(1), dim=-1)


@torch.no_grad()
def symbol_krylov_(sym: Tensor, v: Tensor, *, dim: int) -> None:
    r"""Rayleigh–Ritz on the Krylov space :math:`\mathcal K_m = \operatorname{span}\{v, Gv,
    \dots, G^{m-1}v\}` of :math:`G_\omega = \hat K_\omega^H \hat K_\omega`, per frequency,
    batched: ``v`` (complex unit vectors, updated in place) becomes the top Ritz vector.

    Power iteration converges at the rate :math:`\sigma_2^2/\sigma_1^2`, which is close to 1
    for the identity-dominated symbols :math:`E + \gamma\hat W` of a residual kernel (all
    singular values near 1); Rayleigh–Ritz on :math:`\mathcal K_m` is shift-invariant and
    converges at a rate set by the gap relative to the *spread* of the spectrum (Lanczos).
    Measured (25 Adam steps at lr 2e-2, 8×8 inputs): the training operator's σ_max reached
    1.030 with 3 power-iteration steps per forward, ≤ 0.996 with m = 4 at about the same cost.
    Whatever v is, :math:`\|\hat K_\omega v\|` stays a lower bound of
    :math:`\sigma_{\max}(\hat K_\omega)`.

    Shape: sym (S, O, C) complex, v (S, C) complex.
    """
    q = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-30)
    basis, images = [], []
    for j in range(dim):
        kq = _apply(sym, q)  # (S, O)
        basis.append(q)
        images.append(kq)
        if j == dim - 1:
            break
        w = _apply_adjoint(sym, kq)  # G q: (S, C)
        before = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        for _ in range(2):  # Gram–Schmidt twice against the basis
            for p in basis:
                w = w - (p.conj() * w).sum(-1, keepdim=True) * p
        after = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        q = torch.where(after > _KRYLOV_DROP * before, w / after.clamp_min(1e-30),
                        torch.zeros_like(w))
    basis_m = torch.stack(basis, -1)  # (S, C, m)
    images_m = torch.stack(images, -1)  # (S, O, m)
    _, vecs = torch.linalg.eigh(images_m.mH @ images_m)  # projected G: (S, m, m)
    new = (basis_m @ vecs[..., -1:])[..., 0]  # top Ritz vector (S, C)
    v.copy_(new / torch.linalg.vector_norm(new, dim=-1, keepdim=True).clamp_min(1e-30))


class LiResConv2d(ConvLayer):
    r"""Linear residual convolution :math:`x \mapsto x + \gamma\,W \star x` (LiResNet), as ONE
    convolution with kernel :math:`K = E + \gamma W` normalised by a certified bound of its
    operator norm.

    .. math::
        y = \frac{E + \gamma W}{\beta(E + \gamma W)} \star x + b, \qquad
        \beta(K) = \max_{\omega \in \Omega_M} \sigma_{\max}\big(\hat K'(\omega)\big)
        \;\ge\; \|T_K\|,

    E the identity tap: :math:`E[o, c, \lfloor k/2\rfloor, \lfloor k/2\rfloor] = [o = c]` (for
    :math:`C_{in} \ne C_{out}` the identity padded with zero rows or columns: the first
    :math:`\min(C_{in}, C_{out})` channels pass through; with stride s the centre tap reads
    pixel :math:`(s i, s j)`), W the learned residual kernel, γ a fixed scale (LiResNet uses
    :math:`1/\sqrt{\text{depth}}`). :math:`\beta` is the certified operator-norm bound of
    :class:`~onelip.nn.SpectralConv2d` for the zero-padded, strided convolution on inputs of
    size (H, W) (:func:`onelip.functional.conv2d_operator_norm_bound`: the norm of the
    circular convolution on the grid :math:`\Omega_M` of which the padded operator is a
    restriction). Since the whole kernel is divided by its norm, any :math:`C_{in}`,
    :math:`C_{out}`, stride and padding are handled natively (no channel or stride adapter).

    **Why.** LiResNet's block :math:`x \mapsto \sigma(x + \operatorname{conv}_W(x))` is a
    single convolution, but its network is not 1-Lipschitz by construction: the reference
    divides by a product of per-block norms *estimated by power iteration* on the padded
    operator (10 iterations per training step, 500 at validation), a lower bound, so the
    certificate is not proven (``tests/test_liresnet.py`` builds a seeded case where 10
    iterations from a random start leave :math:`\sigma_{\max} > 1`). Here eval mode divides by
    the certified :math:`\beta`: the certificate is exact.

    **Eval mode (certified, cached).** :math:`\beta` by SVD of the symbol at every frequency
    (float64), for the size of the input at hand; the normalised kernel is scaled by
    :math:`1-\delta` for its float32 rounding and cached per input size: inference is one
    ``conv2d``, and :meth:`export` is an ``nn.Conv2d``.

    **Train mode.** As :class:`~onelip.nn.SpectralConv2d`: :math:`\hat\beta = \max_\omega
    \|\hat K'(\omega) v_\omega\|` with persistent per-frequency unit vectors (buffer ``v``,
    exact at initialisation), with gradient through K. Each step refreshes the 8 frequencies
    with the largest estimates and a round-robin slice of 32 (all of them on grids of ≤ 40)
    by Rayleigh–Ritz on a Krylov space of dimension ``krylov_dim`` (:func:`symbol_krylov_`)
    rather than power iteration, which stalls on the near-degenerate top of the spectrum of
    an identity-dominated kernel; the frequencies with the largest current estimates (the
    stored vectors on the kernel at hand, all frequencies at once) are among the refreshed,
    so :math:`\hat\beta` is the maximum over the whole grid. :math:`\hat\beta \le \beta`
    lags by the refresh only (measured: train-mode σ_max ≤ 0.9985 after 25 Adam steps at lr
    2e-2 that push the norm up, stride 1 and 2, grids of 15 to 91 frequencies; power
    iteration with 3 steps per forward reached 1.030, and refreshing by the last estimates
    only, as SpectralConv2d does, 1.007 on the 91-frequency grid).

    Args:
        in_channels, out_channels, kernel_size: as in ``nn.Conv2d`` (odd kernel_size: the
            identity tap is the centre).
        input_size: (H, W) of the training inputs (the operator depends on it).
        stride: Default: 1.
        padding: zero padding; default ``(k-1)//2``.
        gamma: γ > 0, the scale of the residual kernel. Default: 1.
        bias: Default: ``True``.
        krylov_dim: m ≥ 2, the dimension of the Krylov space per refreshed frequency and
            training forward (m products by the symbol and m - 1 by its adjoint). Default: 4.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, H', W')` as ``nn.Conv2d``.

    References:
        Hu, Zou, Wang, Leino, Fredrikson, *Unlocking Deterministic Robustness Certification
        on ImageNet*, NeurIPS 2023 (LiResNet).

    Example:
        >>> conv = LiResConv2d(2, 2, 3, input_size=(6, 6)).double().eval()
        >>> basis = torch.eye(72, dtype=torch.float64).reshape(72, 2, 6, 6)
        >>> op = (conv(basis) - conv.bias.view(1, -1, 1, 1)).reshape(72, -1)
        >>> bool(torch.linalg.matrix_norm(op, ord=2) <= 1)
        True
    """

    sized_by_input = True  # the operator depends on the input size

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 input_size: tuple[int, int], stride: int = 1, padding: int | None = None,
                 gamma: float = 1.0, bias: bool = True, krylov_dim: int = 4,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        k, s = int(kernel_size), int(stride)
        if in_channels < 1 or out_channels < 1 or k < 1 or k % 2 == 0 or s < 1:
            raise ValueError(
                f"Expected positive channels and stride and an odd kernel_size, but got "
                f"{in_channels}, {out_channels}, kernel_size={k}, stride={s}"
            )
        if not gamma > 0:
            raise ValueError(f"Expected gamma > 0, but got gamma={gamma}")
        if krylov_dim < 2:
            raise ValueError(f"Expected krylov_dim >= 2, but got krylov_dim={krylov_dim}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"Expected input_size (H, W), but got {input_size}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding=padding)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.gamma = float(gamma)
        self.krylov_dim = int(krylov_dim)
        self.grid = F.circular_grid(self.kernel_size, self.input_size, stride=s,
                                    padding=self.padding[0])
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, **factory))
        self._init_bias(out_channels, bias, **factory)
        n_freq = (self.grid[0], self.grid[1] // 2 + 1)
        self.register_buffer("v", torch.empty(*n_freq, in_channels * s * s, 2, **factory))
        self.register_buffer("freq_sigma", torch.empty(n_freq[0] * n_freq[1], **factory))
        self._sweep = 0  # round-robin position of the frequency refresh (get_extra_state)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # LiResNet's initialisation: a small residual, W ~ N(0, 1/(C_in k²)²).
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / (self.in_channels * self.kernel_size[0] ** 2))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.reset_tracking()

    def kernel(self, weight: Tensor | None = None) -> Tensor:
        """:math:`K = E + \\gamma W` (unnormalised), differentiable in ``weight`` (default:
        the layer's W). Shape: (C_out, C_in, k, k)."""
        w = self.weight if weight is None else weight
        eye = torch.zeros_like(w)
        n, c = min(self.in_channels, self.out_channels), self.kernel_size[0] // 2
        idx = torch.arange(n, device=w.device)
        eye[idx, idx, c, c] = 1.0
        return eye + self.gamma * w

    @torch.no_grad()
    def reset_tracking(self) -> None:
        """Set ``v`` to the exact top right singular vector of every frequency."""
        sym = F.conv2d_symbol(self.kernel().double(), self.grid, stride=self.stride[0])
        _, sv, vh = torch.linalg.svd(sym)
        v = vh[..., 0, :].conj().resolve_conj()  # (M_h, M_w/2+1, C s²)
        self.v.copy_(torch.view_as_real(v).to(self.v.dtype))
        self.freq_sigma.copy_(sv[..., 0].flatten())

    def get_extra_state(self) -> Tensor:
        """(1,) int64: the round-robin position of the frequency refresh."""
        return torch.tensor([self._sweep], dtype=torch.int64)

    def set_extra_state(self, state: Tensor) -> None:
        self._sweep = int(torch.as_tensor(state).reshape(-1)[0]) % max(
            self.freq_sigma.numel(), 1)

    # ---- eval: certified --------------------------------------------------------------------

    def _normalised(self, size: tuple[int, int]) -> Tensor:
        with full_precision(self.weight.device):
            k = self.kernel(self.weight.detach().double())
            k = k / F.conv2d_operator_norm_bound(k, size, stride=self.stride[0],
                                                 padding=self.padding[0])
            margin = F.float32_cast_margin(k) if self.weight.dtype != torch.float64 else 0.0
            return (k * (1 - margin)).to(self.weight.dtype)

    def applied_weight(self, input_size: tuple[int, int] | None = None) -> Tensor:
        """The certified normalised kernel :math:`K/\\beta(K)` for inputs of ``input_size``
        (default: the constructor's), shape (C_out, C_in, k, k)."""
        return self._normalised(self.input_size if input_size is None else input_size)

    def effective_weight(self, input_size: tuple[int, int] | None = None) -> Tensor:
        """The certified normalised kernel for inputs of ``input_size`` (default: the
        constructor's); cached in eval mode."""
        size = self.input_size if input_size is None else (int(input_size[0]),
                                                           int(input_size[1]))
        if self.training:
            return self._normalised(size)
        return self._cached(f"weight{size[0]}x{size[1]}", lambda: self._normalised(size))

    def eval_weight(self, input_size: tuple[int, int] | None = None) -> Tensor:
        with torch.no_grad():
            return self.effective_weight(input_size)

    def lipschitz_bound(self) -> float:
        return 1.0  # eval: kernel / certified operator-norm bound, with the cast margin

    def eval_forward(self, x: Tensor) -> Tensor:
        return self.apply_weight(x, self.effective_weight((x.shape[-2], x.shape[-1])))

    @torch.no_grad()
    def export(self, input_size: tuple[int, int] | None = None) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the certified kernel for ``input_size`` folded in."""
        return plain_conv(self, self.effective_weight(input_size))

    # ---- train: Krylov tracking per frequency ---------------------------------------------

    def _frequencies(self, current: Tensor) -> Tensor:
        """The frequencies refreshed at this step: the ``_TRACK_TOP`` largest by their
        ``current`` estimate (the stored vectors on the kernel at hand) and a round-robin slice
        of ``_TRACK_SWEEP`` (all of them on small grids)."""
        n_f = current.numel()
        if n_f <= _TRACK_TOP + _TRACK_SWEEP:
            return torch.arange(n_f, device=current.device)
        top = current.topk(_TRACK_TOP).indices
        sweep = (torch.arange(_TRACK_SWEEP, device=top.device) + self._sweep) % n_f
        self._sweep = (self._sweep + _TRACK_SWEEP) % n_f
        return torch.unique(torch.cat((top, sweep)))

    def train_weight(self) -> Tensor:
        """:math:`K/\\hat\\beta`, :math:`\\hat\\beta = \\max_\\omega \\|\\hat K'_\\omega
        v_\\omega\\|` over every frequency of the grid, the stored vectors of the largest
        estimates (and of a round-robin slice) refreshed first; differentiable in W (through
        the frequency of the maximum)."""
        stride = self.stride[0]
        ctype = torch.complex128 if self.weight.dtype == torch.float64 else torch.complex64

        def normalised(weight: Tensor, v: Tensor, phase: Tensor) -> Tensor:
            with full_precision(weight.device):
                kernel = self.kernel(weight)
                kp = F.conv2d_polyphase(kernel, stride=stride)  # (O, C', qh, qw)
                sym = torch.einsum("ocab,ab->oc", kp.to(ctype), phase)  # (O, C')
                return kernel / torch.linalg.vector_norm(sym @ v)

        with torch.no_grad(), build_threads(self.weight.device), \
                full_precision(self.weight.device):
            taps = (-(-self.kernel_size[0] // stride), -(-self.kernel_size[1] // stride))
            phases = F.dft_phases(taps, self.grid, dtype=ctype,
                                  device=self.weight.device).flatten(0, 1)  # (F, qh, qw)
            kp = F.conv2d_polyphase(self.kernel(), stride=stride).to(ctype)  # (O, C', qh, qw)
            v_all = torch.view_as_complex(self.v).view(-1, self.v.shape[-2])  # (F, C') view
            current = _estimates(kp, phases, v_all)  # (F,)
            sel = self._frequencies(current)  # (S,)
            sym = torch.einsum("ocab,sab->soc", kp, phases[sel])  # (S, O, C')
            v = v_all[sel]  # (S, C') copy
            symbol_krylov_(sym, v, dim=self.krylov_dim)
            v_all[sel] = v
            current[sel] = torch.linalg.vector_norm(_apply(sym, v), dim=-1)
            self.freq_sigma.copy_(current.to(self.freq_sigma.dtype))
            top = int(current.argmax())  # a refreshed frequency (the largest are refreshed)
        # differentiable in W: the estimate at the argmax (the only one amax would pass a
        # gradient to), recomputed with the graph
        return serial(normalised, self.weight, v_all[top].clone(), phases[top])

    def train_forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        if size != self.input_size:
            raise ValueError(
                f"LiResConv2d was built for inputs of size {self.input_size} (its norm "
                f"depends on it), but got {size} in training"
            )
        return self.apply_weight(x, self.train_weight())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, "
                f"padding={self.padding}, gamma={self.gamma}, bias={self.bias is not None}, "
                f"krylov_dim={self.krylov_dim}")

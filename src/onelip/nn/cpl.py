# SPDX-License-Identifier: MIT
r"""Convex potential layers (CPL, Meunier, Delattre, Araujo, Allauzen, ICML 2022) with a
*certified* step: :class:`CPLLinear` and :class:`CPLConv2d`,
:math:`f(x) = x - h\,W^\top \operatorname{ReLU}(Wx + b)`, :math:`h = 2/\beta^2`,
:math:`\beta \ge \|W\|` proven at every training step and in eval mode (the references use a
power-iteration *estimate*, which approaches :math:`\|W\|` from below and can break the
bound)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import ConstrainedLayer
from onelip.nn._precision import full_precision
from onelip.nn.channels import FirstChannels, ZeroChannelPad
from onelip.nn.conv import dirac_orthogonal_
from onelip.nn.plain import Residual
from onelip.nn.pooling import InvertibleDownsample

__all__ = ["CPLConv2d", "CPLLinear"]

_TAU = 2e-3  # relative slack of the tested λ over the largest Rayleigh quotient
_EPS = 1e-12  # h = 2 / (β² + ε): W = 0 gives the identity, no division by zero
_TINY = 1e-30  # the tested λ is at least this (W = 0: λI ≻ 0 still)


@torch.no_grad()
def certified_top_eigenvalue(gram: Tensor, v: Tensor, *, tau: float = _TAU,
                             extra: int = 0) -> tuple[Tensor, Tensor]:
    r"""A certified upper bound :math:`\hat\lambda \ge \max_f \lambda_{\max}(G_f)` of a batch
    of Hermitian PSD matrices, and the index of the matrix whose estimate is the largest.

    One power step on the persistent unit vectors ``v`` (updated in place), the estimates
    :math:`\rho_f = \|G_f v_f\| \le \lambda_{\max}(G_f)` (v before the step), the candidate
    :math:`\lambda = (1+\tau)\max_f \rho_f`, then the **certificate**: a Cholesky
    factorisation of :math:`\lambda I - G_f` succeeds for every f iff every
    :math:`\lambda I - G_f \succ 0`, i.e. :math:`\lambda_{\max}(G_f) < \lambda`. Where it
    fails (the estimate lagged by more than τ) the top eigenpairs are computed (``eigh``),
    ``v`` reset there and λ raised; monotonicity (:math:`\lambda' I - G \succeq \lambda I -
    G`) leaves the other matrices certified. Floating point: a Cholesky that completes is
    exact for :math:`\lambda I - G + E`, :math:`\|E\| \le (n+1)u\,\mathrm{tr}(\lambda I - G
    + E)`, and G itself carries the rounding of its product and of the symbol, so the
    returned bound is :math:`\lambda(1 + 2(n + \mathtt{extra} + 2)^2 u)` (u the unit
    roundoff of the dtype; :math:`\approx 6\cdot 10^{-4}` for n = 64 in float32).

    Shape: gram (F, n, n), v (F, n) (same dtype, real or complex) -> (scalar λ̂, index).
    """
    n = gram.shape[-1]
    gv = (gram @ v[..., None])[..., 0]  # (F, n)
    rq = torch.linalg.vector_norm(gv, dim=-1)  # (F,), ≥ the Rayleigh quotient, ≤ λ_max
    v.copy_(gv / rq.clamp_min(1e-30)[:, None])
    real = rq.dtype
    u = torch.finfo(real).eps / 2
    lam = rq.max() * (1 + tau) + _TINY
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    bad = torch.linalg.cholesky_ex(lam * eye - gram).info != 0  # (F,)
    if bool(bad.any()):
        if not bool(torch.isfinite(gram).all()):
            raise ValueError("CPL: the weight has NaN or infinite entries")
        evals, evecs = torch.linalg.eigh(gram[bad])
        v[bad] = evecs[..., -1]
        rq[bad] = evals[..., -1]
        top = evals[..., -1].max()
        slack = 4 * n * u * float(evals.abs().amax())  # eigh's own backward error
        lam = torch.maximum(lam, top * (1 + tau) + slack + _TINY)
        for _ in range(8):  # raise λ until the Cholesky certificate holds where it failed
            still = torch.linalg.cholesky_ex(lam * eye - gram[bad]).info != 0
            if not bool(still.any()):
                break
            lam = lam * (1 + 8 * tau)
        else:
            raise RuntimeError("CPL: could not certify the top eigenvalue")
    lam = lam * (1 + 2 * (n + extra + 2) ** 2 * u)
    return lam, rq.argmax()


def _step_size(beta: float) -> float:
    r""":math:`h = 2/(\beta^2(1 + 10^{-9}) + \varepsilon)` rounded *down* to a float32 value
    (exact in float32 and float64): :math:`h\|W\|^2 \le 2` for the weights as stored,
    whatever the dtype the forward runs in."""
    h64 = 2.0 / (beta * beta * (1 + 1e-9) + _EPS)
    t = torch.tensor(h64, dtype=torch.float32)
    while float(t) > h64:
        t = torch.nextafter(t, torch.zeros((), dtype=torch.float32))
    return float(t)


class _CPLBase(ConstrainedLayer):
    """What the dense and the convolutional CPL share: the certified training step size
    (:meth:`train_step_size`) and the eval-mode one."""

    full_precision_forward = True

    def _init_common(self, inner: int, channels: int, n_freq: int, complex_v: bool,
                     factory: dict) -> None:
        self._gram_rows = inner <= channels  # G = S Sᴴ (inner × inner) or Sᴴ S
        n = min(inner, channels)
        shape = (n_freq, n, 2) if complex_v else (n_freq, n)
        self.register_buffer("v", torch.zeros(*shape, **factory))

    def _v(self) -> Tensor:
        return torch.view_as_complex(self.v) if self.v.dim() == 3 else self.v

    def _symbol(self, weight: Tensor) -> Tensor:
        """(F, inner, channels) of ``weight`` (no reshaping of W for dense)."""
        raise NotImplementedError

    def _symbol_at(self, weight: Tensor, f: Tensor) -> Tensor:
        raise NotImplementedError

    def _gram(self, sym: Tensor) -> Tensor:
        return sym @ sym.mH if self._gram_rows else sym.mH @ sym

    @torch.no_grad()
    def reset_power_iteration(self) -> None:
        """Set ``v`` to the exact top eigenvectors of the Gram matrices (float64)."""
        with full_precision(self.weight.device):
            w64 = self.weight.detach().double()
            _, vecs = torch.linalg.eigh(self._gram(self._symbol(w64)))
            top = vecs[..., -1]
            if self.v.dim() == 3:
                self.v.copy_(torch.view_as_real(top.to(torch.complex128)).to(self.v.dtype))
            else:
                self.v.copy_(top.real.to(self.v.dtype))

    def train_step_size(self) -> Tensor:
        r""":math:`h_t = 2/(\beta_t^2 + \varepsilon)` with gradients: the *value* of
        :math:`\beta_t` is the certified :math:`\sqrt{\hat\lambda}`
        (:func:`certified_top_eigenvalue` on the symbol's Gram matrices), its gradient the
        one of the top singular value estimate :math:`\|\hat S_{f^*}^H v_{f^*}\|`
        (straight-through: the bound is the number used, the estimate only steers)."""
        with full_precision(self.weight.device):
            with torch.no_grad():
                sym = self._symbol(self.weight.detach())
                lam, f = certified_top_eigenvalue(self._gram(sym), self._v(),
                                                  extra=self._taps())
                vf = self._v()[f].clone()
            s_f = self._symbol_at(self.weight, f)  # (inner, channels), with gradients
            est = torch.linalg.vector_norm(s_f.mH @ vf if self._gram_rows else s_f @ vf)
            beta = torch.sqrt(lam) + (est - est.detach())
            return 2 / (beta * beta + _EPS)

    def _taps(self) -> int:
        return 1

    def lipschitz_bound(self) -> float:
        return 1.0  # I − hWᵀDW, D ∈ [0, I], h‖W‖² ≤ 2 certified: eigenvalues in [−1, 1]


class CPLLinear(_CPLBase):
    r"""Dense convex potential layer (Meunier et al. 2022) with a certified step size.

    .. math::
        y = P_{out}\big(z - h\,W^\top \operatorname{ReLU}(W z + b)\big), \quad
        z = P_{in} x, \qquad h = \frac{2}{\beta^2 + \varepsilon}, \quad \beta \ge \|W\|_2,

    W (m × d), d = max(in, out); :math:`P_{in}` appends zero features (an isometry),
    :math:`P_{out}` keeps the first ``out_features`` (a projection). The Jacobian of the
    square part, :math:`I - hW^\top D W` (D = diag(ReLU′) ∈ [0, I]), is symmetric with
    eigenvalues in :math:`[1 - h\|W\|^2, 1] \subseteq [-1, 1]`: 1-Lipschitz.

    **Training:** :math:`\beta` is certified at every step by a Cholesky test of
    :math:`\lambda I - W W^\top` (:func:`certified_top_eigenvalue`; λ from a persistent
    power iteration ``v``, a buffer), not a bare estimate. **Eval mode** (cached):
    :math:`\beta = \|W\|_2` by SVD in float64 of the weights as stored, h rounded down to
    float32 (:math:`h\|W\|^2 \le 2` for the stored weights).

    Args:
        in_features, out_features: any sizes (the adapters above).
        inner_features: m, the rank of W. Default: max(in, out).
        bias: b (m,). Default: ``True``.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})` (the export takes (N, H_in) when
        in ≠ out).

    Reference:
        Meunier, Delattre, Araujo, Allauzen, *A Dynamical System Perspective for Lipschitz
        Neural Networks*, ICML 2022.
    """

    def __init__(self, in_features: int, out_features: int, *,
                 inner_features: int | None = None, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Expected positive in_features and out_features, but got "
                             f"in_features={in_features}, out_features={out_features}")
        d = max(in_features, out_features)
        m = d if inner_features is None else int(inner_features)
        if m < 1:
            raise ValueError(f"Expected positive inner_features, but got {m}")
        self.in_features, self.out_features = in_features, out_features
        self.features, self.inner_features = d, m
        self.weight = nn.Parameter(torch.empty(m, d, **factory))
        self._init_bias(m, bias, **factory)
        self._init_common(m, d, 1, False, factory)
        self.reset_parameters()

    @classmethod
    def for_shape(cls, in_features: int, out_features: int) -> "CPLLinear":
        return cls(in_features, out_features)

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.features)
            nn.init.uniform_(self.bias, -bound, bound)
        self.reset_power_iteration()

    def _symbol(self, weight: Tensor) -> Tensor:
        return weight[None]

    def _symbol_at(self, weight: Tensor, f: Tensor) -> Tensor:
        return weight

    def _core(self, x: Tensor, h) -> Tensor:
        d = self.features
        z = TF.pad(x, (0, d - self.in_features)) if self.in_features < d else x
        y = z - h * TF.linear(torch.relu(TF.linear(z, self.weight, self.bias)),
                              self.weight.mT)
        return y[..., :self.out_features] if self.out_features < d else y

    def train_forward(self, x: Tensor) -> Tensor:
        return self._core(x, self.train_step_size())

    def applied_weight(self) -> float:
        """h for the weights as stored (float64 SVD, rounded down to float32)."""
        with full_precision(self.weight.device):
            beta = float(torch.linalg.matrix_norm(self.weight.detach().double(), ord=2))
        return _step_size(beta)

    def apply_weight(self, x: Tensor, weight: float) -> Tensor:
        return self._core(x, weight)

    def lipschitz_bound(self) -> float:
        return 1.0  # I − hWᵀDW, D ∈ [0, I], h‖W‖² ≤ 2 (float64 SVD, h rounded down)

    @torch.no_grad()
    def plain_twin(self, weight: float) -> nn.Module:
        d, m = self.features, self.inner_features
        w, b = self.weight.detach(), self.bias
        first = nn.Linear(d, m, bias=b is not None, device=w.device, dtype=w.dtype)
        second = nn.Linear(m, d, bias=False, device=w.device, dtype=w.dtype)
        first.weight.copy_(w)
        if b is not None:
            first.bias.copy_(b)
        second.weight.copy_(w.mT)
        out: list[nn.Module] = []
        if self.in_features < d:
            out.append(ZeroChannelPad(d))
        out.append(Residual(nn.Sequential(first, nn.ReLU(), second), skip=1.0, scale=-weight))
        if self.out_features < d:
            out.append(FirstChannels(self.out_features))
        return out[0] if len(out) == 1 else nn.Sequential(*out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"inner_features={self.inner_features}, bias={self.bias is not None}")


class CPLConv2d(_CPLBase):
    r"""Convolutional convex potential layer (Meunier et al. 2022) with a certified step size.

    .. math::
        y = P_{out}\big(z - h\,T_W^\top \operatorname{ReLU}(T_W z + b)\big), \quad
        z = P_{in} x, \qquad h = \frac{2}{\beta^2 + \varepsilon}, \quad \beta \ge \|T_W\|,

    :math:`T_W` = ``conv2d(·, W, padding=(k-1)/2)`` (C → m channels, zero 'same' padding),
    :math:`T_W^\top` its exact adjoint ``conv_transpose2d`` (odd k, stride 1). Its Jacobian
    :math:`I - hT_W^\top D T_W` has eigenvalues in :math:`[1 - h\|T_W\|^2, 1] \subseteq
    [-1, 1]`. **Adapters** (both 1-Lipschitz): :math:`P_{in}` = for stride s > 1, zero
    padding of the bottom/right to a multiple of s and an s×s pixel unshuffle
    (:math:`C_{in}s^2` channels, size ⌈H/s⌉, as the SOC/BRO references); then zero channels
    up to :math:`C = \max(C_{in}s^2, C_{out})`; :math:`P_{out}` keeps the first
    :math:`C_{out}` channels.

    :math:`\|T_W\|` is the norm on the layer's input size (after :math:`P_{in}`): it is at
    most :math:`\max_\omega \sigma_{\max}(\hat W(\omega))` over the DFT grid of the circular
    convolution that contains it (:func:`onelip.functional.conv2d_operator_norm_bound`).

    **Training:** every step certifies :math:`\hat\lambda \ge \max_\omega
    \lambda_{\max}(\hat W(\omega)\hat W(\omega)^H)` by a batched Cholesky factorisation of
    :math:`\hat\lambda I - \hat W\hat W^H` at every frequency (:func:`certified_top_eigenvalue`:
    λ from one step of a per-frequency power iteration on persistent vectors ``v``, a buffer
    saved in the state dict; ``eigh`` where the estimate lagged), so :math:`h_t` is proven
    at *every* step, never a bare estimate; the gradient of β is that of the estimated top
    singular value (straight-through). **Eval mode:** β = the exact float64 bound for the
    input size at hand (cached per size), h rounded down to float32 so that the stored
    weights satisfy :math:`h\|T_W\|^2 \le 2`. ``W = 0`` gives the identity.

    Args:
        in_channels, out_channels: any.
        kernel_size: odd k. Default: 3.
        input_size: (H, W) of the training inputs (the norm depends on it).
        stride: s (by pixel unshuffle). Default: 1.
        inner_channels: m, the rank of :math:`T_W`. Default: C.
        bias: b (m,). Default: ``True``.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, \lceil H/s\rceil, \lceil W/s\rceil)`.

    Reference:
        Meunier, Delattre, Araujo, Allauzen, *A Dynamical System Perspective for Lipschitz
        Neural Networks*, ICML 2022.
    """

    input_layout = "image"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 input_size: tuple[int, int], stride: int = 1,
                 inner_channels: int | None = None, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        k, s = int(kernel_size), int(stride)
        if in_channels < 1 or out_channels < 1 or s < 1:
            raise ValueError(f"Expected positive channels and stride, but got "
                             f"{in_channels}, {out_channels}, {s}")
        if k < 1 or k % 2 == 0:
            raise ValueError(f"Expected an odd kernel_size, but got {k}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"Expected input_size (H, W), but got {input_size}")
        c = max(in_channels * s * s, out_channels)
        m = c if inner_channels is None else int(inner_channels)
        if m < 1:
            raise ValueError(f"Expected positive inner_channels, but got {m}")
        self.in_channels, self.out_channels, self.channels = in_channels, out_channels, c
        self.inner_channels = m
        self.kernel_size, self.stride = (k, k), (s, s)
        self.padding = ((k - 1) // 2, (k - 1) // 2)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.grid = F.circular_grid(self.kernel_size, self._inner_size(self.input_size),
                                    padding=self.padding[0])
        self.weight = nn.Parameter(torch.empty(m, c, k, k, **factory))
        self._init_bias(m, bias, **factory)
        self._init_common(m, c, self.grid[0] * (self.grid[1] // 2 + 1), True, factory)
        self.reset_parameters()

    @classmethod
    def for_shape(cls, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                  stride: int = 1, input_size: tuple[int, int]) -> "CPLConv2d":
        return cls(in_channels, out_channels, kernel_size, stride=stride,
                   input_size=input_size)

    def reset_parameters(self) -> None:
        # Dirac-orthogonal, not Xavier (as SLL; Prach et al. reuse it for CPL): with every
        # singular value of T_W equal to 1 the block is a local isometry (slopes 1 and
        # 1 - h ≈ -1 in the basis of W); with a random W the directions of middle singular
        # values are contracted (to 0 at σ² = ‖W‖²/2), and 26 such blocks start flat.
        dirac_orthogonal_(self.weight)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.channels * self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)
        # the Gram matrices are then the identity at every frequency (up to the float32
        # rounding of Q): any unit vector is a top eigenvector, without reset_power_iteration's
        # eigh (most of the time of building lipconvnet)
        with torch.no_grad():
            self.v.zero_()
            self.v[:, 0, 0] = 1.0

    def _inner_size(self, size: tuple[int, int]) -> tuple[int, int]:
        s = self.stride[0]
        return (-(-size[0] // s), -(-size[1] // s))

    def _phases(self, ctype: torch.dtype, device) -> Tensor:
        cache: dict = self.__dict__.setdefault("_cpl_phases", {})
        key = (ctype, device)
        if key not in cache:
            cache[key] = F.dft_phases(self.kernel_size, self.grid, dtype=ctype,
                                      device=device).flatten(0, 1)  # (F, k, k)
        return cache[key]

    @staticmethod
    def _ctype(weight: Tensor) -> torch.dtype:
        return torch.complex128 if weight.dtype == torch.float64 else torch.complex64

    def _symbol(self, weight: Tensor) -> Tensor:
        ctype = self._ctype(weight)
        phases = self._phases(ctype, weight.device)
        return torch.einsum("ocab,fab->foc", weight.to(ctype), phases)  # (F, m, C)

    def _symbol_at(self, weight: Tensor, f: Tensor) -> Tensor:
        ctype = self._ctype(weight)
        phase = self._phases(ctype, weight.device)[f]  # (k, k)
        return torch.einsum("ocab,ab->oc", weight.to(ctype), phase)

    def _taps(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def _adapt_in(self, x: Tensor) -> Tensor:
        return F.square_adapter_in(x, stride=self.stride[0], channels=self.channels)

    def _core(self, z: Tensor, h, *, fold: bool = False) -> Tensor:
        p = self.padding
        act = torch.relu(TF.conv2d(z, self.weight, self.bias, padding=p))
        if fold:  # training: h·W (a kernel-size product) instead of h·(a batch-size output)
            y = z - TF.conv_transpose2d(act, h * self.weight, padding=p)
        else:
            y = z - h * TF.conv_transpose2d(act, self.weight, padding=p)
        return y[:, :self.out_channels] if self.out_channels < self.channels else y

    def train_forward(self, x: Tensor) -> Tensor:
        z = self._adapt_in(x)
        if tuple(z.shape[-2:]) != self._inner_size(self.input_size):
            raise ValueError(
                f"CPLConv2d was built for inputs of size {self.input_size} (its norm depends "
                f"on it), but got {tuple(x.shape[-2:])} in training")
        return self._core(z, self.train_step_size(), fold=True)

    def _eval_h(self, inner: tuple[int, int]) -> float:
        with full_precision(self.weight.device):
            beta = float(F.conv2d_operator_norm_bound(self.weight.detach().double(), inner,
                                                      padding=self.padding[0]))
        return _step_size(beta)

    def applied_weight(self, input_size: tuple[int, int] | None = None) -> float:
        """h for inputs of ``input_size`` (default: the constructor's), from the exact
        float64 bound of the weights as stored, rounded down to float32."""
        size = self.input_size if input_size is None else input_size
        return self._eval_h(self._inner_size(size))

    def eval_weight(self, input_size: tuple[int, int] | None = None) -> float:
        size = self.input_size if input_size is None else (int(input_size[0]),
                                                           int(input_size[1]))
        if self.training:
            return self.applied_weight(size)
        inner = self._inner_size(size)
        return self._cached(f"h{inner[0]}x{inner[1]}", lambda: self._eval_h(inner))

    def eval_forward(self, x: Tensor) -> Tensor:
        z = self._adapt_in(x)
        return self._core(z, self.eval_weight(tuple(x.shape[-2:])))

    def apply_weight(self, x: Tensor, weight: float) -> Tensor:
        return self._core(self._adapt_in(x), weight)

    def lipschitz_bound(self) -> float:
        return 1.0  # I − hT_WᵀDT_W, D ∈ [0, I], h‖T_W‖² ≤ 2 (float64 bound, h rounded down)

    @torch.no_grad()
    def export(self, input_size: tuple[int, int] | None = None) -> nn.Module:
        """Plain modules computing the eval-mode function on inputs of ``input_size``
        (default: the constructor's; h depends on it)."""
        return self.plain_twin(self.eval_weight(input_size), input_size)

    @torch.no_grad()
    def plain_twin(self, weight: float, input_size: tuple[int, int] | None = None
                   ) -> nn.Module:
        size = self.input_size if input_size is None else input_size
        c, m, k, p = self.channels, self.inner_channels, self.kernel_size, self.padding
        w, b = self.weight.detach(), self.bias
        first = nn.Conv2d(c, m, k, padding=p, bias=b is not None, device=w.device,
                          dtype=w.dtype)
        second = nn.ConvTranspose2d(m, c, k, padding=p, bias=False, device=w.device,
                                    dtype=w.dtype)
        first.weight.copy_(w)
        if b is not None:
            first.bias.copy_(b)
        second.weight.copy_(w)
        out: list[nn.Module] = []
        s = self.stride[0]
        if s > 1:
            ph, pw = -size[0] % s, -size[1] % s
            if ph or pw:
                out.append(nn.ZeroPad2d((0, pw, 0, ph)))
            out.append(InvertibleDownsample(s))
        if self.in_channels * s * s < c:
            out.append(ZeroChannelPad(c))
        out.append(Residual(nn.Sequential(first, nn.ReLU(), second), skip=1.0, scale=-weight))
        if self.out_channels < c:
            out.append(FirstChannels(self.out_channels))
        return out[0] if len(out) == 1 else nn.Sequential(*out)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, "
                f"inner_channels={self.inner_channels}, bias={self.bias is not None}")

# SPDX-License-Identifier: MIT
"""1-Lipschitz convolutions: :class:`OrthoConv2d` (orthogonal, BCOP by block convolution) and
:class:`SpectralConv2d` (normalised by a certified bound of its operator norm)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import ConvLayer
from onelip.nn._kernels import batch_kernel, build_threads, serial
from onelip.nn._precision import full_precision
from onelip.nn.plain import plain_conv

__all__ = ["OrthoConv2d", "SpectralConv2d", "dirac_orthogonal_", "retract_ortho_convs_"]


# SpectralConv2d's training-mode tracking: frequencies refreshed per step (see _frequencies).
_TRACK_TOP = 8
_TRACK_SWEEP = 32


@torch.no_grad()
def dirac_orthogonal_(weight: Tensor, *, stride: int = 1, padding: int | None = None) -> Tensor:
    r"""Fill a kernel (C_out, C_in, k, k) in place so that ``conv2d(·, weight, stride,
    padding)`` is a semi-orthogonal map of each output pixel's s×s input block: the taps
    :math:`a, b \in \{p, \dots, p+s-1\}` (the block that output pixel i reads, rows
    :math:`s i .. s i + s - 1`) hold a random semi-orthogonal matrix Q (C_out × C_in·s²,
    ``nn.init.orthogonal_``) and every other tap is 0.

    The convolution's symbol is then Q at every frequency: all its singular values are 1, so
    a layer normalised by its largest one (:class:`SpectralConv2d`, :class:`~onelip.nn.
    CPLConv2d`) starts as an isometry (C_out ≥ C_in·s²) or a co-isometry, not as a map that
    contracts most directions — a random kernel's other singular values are well below its
    largest (measured: 0.47 mean gain of a 16-channel 3×3 layer, 2.5e-9 through the 26 of
    lipconvnet XS). A stride-1 layer starts as the 1×1 convolution Q (its other taps learn).
    Where the block does not fit in the kernel (padding ≥ k) the centre tap holds Q.

    Shape: (C_out, C_in, k, k), returned.
    """
    c_out, c_in, k, _ = weight.shape
    p = (k - 1) // 2 if padding is None else int(padding)
    taps = [t for t in range(p, p + stride) if t < k] or [k // 2]
    n = len(taps)
    q = torch.empty(c_out, c_in * n * n, dtype=weight.dtype, device=weight.device)
    nn.init.orthogonal_(q)
    weight.zero_()
    weight[:, :, taps[0]:taps[-1] + 1, taps[0]:taps[-1] + 1] = q.reshape(c_out, c_in, n, n)
    return weight


def retract_ortho_convs_(modules: list["OrthoConv2d"]) -> None:
    """:meth:`OrthoConv2d.retract_` of many layers, batched over the layers of equal
    latent shapes (0.2's name of :func:`onelip.nn.utils.retract_modules_`)."""
    from onelip.nn.utils import retract_modules_

    retract_modules_(modules)


class OrthoConv2d(ConvLayer):
    r"""Orthogonal 2-D convolution: an explicit k×k kernel built by BCOP block convolutions.

    .. math::
        K = M \circledast B_1 \circledast \dots \circledast B_{k_b-1} \;[\circledast\; D],
        \qquad
        B_j[a, b] = (R_j \text{ or } I - R_j)\,(P_j \text{ or } I - P_j),

    where :math:`\circledast` composes two kernels into the kernel of their composition
    (:func:`onelip.functional.compose_kernels`), :math:`P_j = Q_jQ_j^\top` and
    :math:`R_j` are orthogonal projectors of rank :math:`\lfloor n/2\rfloor`
    (:func:`~onelip.functional.bcop_kernel`), M is a 1×1 kernel with orthonormal
    columns or rows, and, for stride s > 1, D is an s×s stride-s kernel whose
    :math:`(C_{out}, C_{mid} s^2)` matrix has orthonormal rows or columns (pixel unshuffle
    followed by an orthogonal 1×1: "RKO"), :math:`k_b = k - s + 1`. Every orthonormal factor
    comes from its latent matrix by :func:`~onelip.functional.cholesky_orthonormalize`
    (Cholesky QR).

    **Claims.** On circular (or infinite) signals the operator is an isometry when
    :math:`C_{out} \ge C_{in} s^2` and a co-isometry (orthonormal rows) otherwise: every
    non-zero singular value is 1 (``padding_mode="circular"``, tested to 1e-5). With zero
    padding (the default, "same" size :math:`\lceil H/s\rceil` for odd k) the operator is a
    compression of the infinite one, so :math:`\sigma_{\max} \le 1` on every input size, and
    it preserves the norm of signals supported away from the borders, so
    :math:`\sigma_{\max} = 1` as soon as the input is larger than the kernel. The bound
    :math:`\le 1` does not depend on orthonormalisation accuracy: the factors are divided by
    :math:`\sqrt{1+\|Q^\top Q-I\|_F}`, so each 2×2 block's symbol
    :math:`(R + (I-R)e^{i\omega_2})(P + (I-P)e^{i\omega_1})` is a contraction, and the final
    kernel is scaled by :math:`1-\delta` to absorb the float32 rounding
    (:func:`~onelip.functional.float32_cast_margin`, δ ~ 1e-6).

    **Why BCOP by block convolution** (Li et al. 2019, in the fast form of AOC, Boissin et
    al. 2025). The forward pass is one ``conv2d`` with an explicit kernel, and the kernel is
    built from :math:`2(k-1)` small :math:`n \times n/2` matrices: building it is cheap next
    to the convolution, so a training step costs about what an ``nn.Conv2d`` step costs
    (``benchmarks/results/conv.md``), with *exact* orthogonality (no truncated series
    like SOC, no FFT of every input like Cayley, no iteration to converge like Björck).
    Reshaping the kernel to :math:`(C_{out}, C_{in}k^2)` and orthogonalising it ("RKO") is as
    cheap but is *not* an orthogonal convolution: its operator norm reaches ~1.9 for 3×3
    kernels (measured, 8–16 channels), so it must be divided by k, which leaves σ ≤ 0.64
    (deel-torchlip's SpectralConv2d: 0.63).
    Strides use a stride-1 BCOP into :math:`C_{mid} = \max(C_{in}, \lfloor C_{out}/s^2\rfloor)`
    channels composed with the RKO kernel D, which *is* orthogonal when kernel = stride:
    the composed k×k stride-s kernel exports as one ``nn.Conv2d``. Measured:
    ``benchmarks/results/conv.md``.

    **Train mode** computes the kernel (with gradients) at each forward, in the parameter
    dtype with one Cholesky QR pass; **eval mode** computes it once in float64 (certified, see
    above) and caches it: inference is one ``conv2d``. The two agree to rounding (~1e-6 in
    float32). :meth:`retract_` replaces the latents by their orthonormal factors (the function
    is unchanged); :func:`onelip.train.fit` calls it after every step so the latents stay well
    conditioned.

    Args:
        in_channels: C_in.
        out_channels: C_out. With stride 1 and k > 1, :math:`\max(C_{in}, C_{out}) \ge 2`
            (the only orthogonal convolutions of one channel are shifts). With stride s > 1
            one channel is allowed (e.g. 1 → 2): the 2×2 blocks of the one-channel stride-1
            part are then shifts and D mixes the :math:`s^2` phases.
        kernel_size: k, odd when ``stride == 1``; ``k >= stride``. Default: 3.
        stride: s. Default: 1.
        bias: learn an additive bias. Default: ``True``.
        padding_mode: ``"zeros"`` (default) or ``"circular"``.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, H', W')`, :math:`H' = \lfloor (H + 2p - k)/s
        \rfloor + 1`, :math:`p = \lfloor (k-1)/2 \rfloor` (:math:`H' = \lceil H/s \rceil` for
        k = 3).

    References:
        Li, Haghighi, Ghodsi, Jiang, Grosse, Jacobsen, *Preventing gradient attenuation in
        Lipschitz constrained convolutional networks*, NeurIPS 2019 (BCOP).
        Boissin, Mamalet, Fel, Picard, Massena, Serrurier, *An Adaptive Orthogonal Convolution
        Scheme for Efficient and Flexible CNN Architectures*, 2025 (arXiv 2501.07930).

    Example:
        >>> conv = OrthoConv2d(4, 4, 3, padding_mode="circular").double().eval()
        >>> x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
        >>> y = conv(x) - conv.bias.view(1, -1, 1, 1)
        >>> bool(torch.allclose(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1)))
        True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 stride: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        k, s = int(kernel_size), int(stride)
        if s < 1 or k < s:
            raise ValueError(
                f"Expected 1 <= stride <= kernel_size, but got stride={s}, kernel_size={k}"
            )
        if s == 1 and k % 2 == 0:
            raise ValueError(f"Expected an odd kernel_size for stride 1, but got {k}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding_mode=padding_mode)
        # Channels of the stride-1 BCOP part (C_in -> C_mid), then RKO (C_mid s² -> C_out).
        self.mid_channels = out_channels if s == 1 else max(in_channels, out_channels // (s * s))
        n = max(in_channels, self.mid_channels)  # channels of the 2×2 blocks
        kb = k - s + 1
        if kb > 1 and n < 2 and s == 1:
            # One channel: the only orthogonal k×k convolutions are ±shifts.
            raise ValueError(
                f"A {k}x{k} stride-1 orthogonal convolution needs at least 2 channels (with "
                f"one it can only be a shift), but got in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        small = min(in_channels, self.mid_channels)
        self.mix = nn.Parameter(torch.empty(n, small, **factory))  # (n, min)
        if kb > 1 and n >= 2:  # 2(kb-1) projectors of rank n/2: (2(kb-1), n, n/2)
            self.proj = nn.Parameter(torch.empty(2 * (kb - 1), n, n // 2, **factory))
        else:  # kb = 1, or one channel (stride > 1): rank-0 projectors, the blocks are shifts
            self.register_parameter("proj", None)
        if s > 1:
            self.down = nn.Parameter(
                torch.empty(out_channels, self.mid_channels * s * s, **factory))
        else:
            self.register_parameter("down", None)
        self._init_bias(out_channels, bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.mix)
        if self.proj is not None:
            for p in self.proj:
                nn.init.orthogonal_(p)
        if self.down is not None:
            nn.init.orthogonal_(self.down)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _kernel(self, exact: bool = True, latents: dict[str, Tensor] | None = None) -> Tensor:
        """The orthogonal kernel (C_out, C_in, k, k).

        ``exact`` (eval, export): built in float64, Cholesky QR refined where needed, scaled
        by :math:`1-\\delta` for the rounding to the parameter dtype: a certified
        :math:`\\sigma_{\\max} \\le 1`. Otherwise (training): built in the parameter dtype
        with one Cholesky QR pass and no host synchronisation — the same function up to
        rounding (~1e-6 in float32), about a third of the small operations.

        Always in full precision: an ambient autocast (``--amp``) is switched off for the
        build (:func:`~onelip.nn.full_precision`); the convolution itself runs under it.
        """
        with full_precision(self.mix.device):
            return self._build_kernel(exact, latents)

    def _build_kernel(self, exact: bool, latents: dict[str, Tensor] | None) -> Tensor:
        lat = latents if latents is not None else {
            "mix": self.mix, "proj": self.proj, "down": self.down}
        dtype = torch.float64 if exact else self.mix.dtype
        mix = F.cholesky_orthonormalize(lat["mix"].to(dtype), refine=exact)
        if lat.get("proj") is not None:
            proj = F.cholesky_orthonormalize(lat["proj"].to(dtype), refine=exact)
        else:  # rank-0 projectors: each 2×2 block is a one-tap shift (none for kb = 1)
            kb = self.kernel_size[0] - self.stride[0] + 1
            proj = mix.new_zeros(*mix.shape[:-2], 2 * (kb - 1), mix.shape[-2], 0)
        kernel = F.bcop_kernel(mix, proj, in_channels=self.in_channels,
                               out_channels=self.mid_channels)  # (*, C_mid, C_in, kb, kb)
        if lat.get("down") is not None:
            s = self.stride[0]
            down = F.cholesky_orthonormalize(lat["down"].to(dtype), refine=exact)
            down = down.reshape(*down.shape[:-2], self.out_channels, self.mid_channels, s, s)
            kernel = F.compose_kernels(kernel, down)  # (*, C_out, C_in, k, k)
        if not exact or self.mix.dtype == torch.float64:
            return kernel
        return (kernel * (1 - F.float32_cast_margin(kernel))).to(self.mix.dtype)

    def _latent_names(self) -> tuple[str, ...]:
        return tuple(n for n in ("mix", "proj", "down") if getattr(self, n) is not None)

    def _batch_key(self) -> tuple:
        """Layers with equal keys build their training kernels in one batched call."""
        shapes = tuple(tuple(getattr(self, n).shape) for n in self._latent_names())
        return (type(self), self.in_channels, self.out_channels, self.mid_channels,
                self.kernel_size, self.stride, self._latent_names(), shapes, self.mix.dtype,
                self.mix.device)

    def _train_kernel(self) -> Tensor:
        """The training-mode kernel, with gradients (built on one thread inside
        :func:`~onelip.nn.utils.serial_kernel_build`; for the whole group of like layers at
        once inside :func:`~onelip.nn.utils.batched_kernel_build`)."""
        kernel = batch_kernel(self)
        if kernel is not None:
            return kernel
        names = self._latent_names()

        def build(*latents: Tensor) -> Tensor:
            return self._kernel(exact=False, latents=dict(zip(names, latents)))

        return serial(build, *(getattr(self, n) for n in names))

    def applied_weight(self) -> Tensor:
        """The exact orthogonal kernel, shape (C_out, C_in, k, k), built in float64 and
        scaled by the float32 cast margin (certified :math:`\\sigma_{\\max} \\le 1`)."""
        return self._kernel()

    def train_weight(self) -> Tensor:
        """The exact kernel with gradients (the training forward uses the cheaper
        single-pass build, equal to rounding: :meth:`_train_kernel`)."""
        return self._kernel(exact=True)

    def train_forward(self, x: Tensor) -> Tensor:
        return self.apply_weight(x, self._train_kernel())

    @classmethod
    @torch.no_grad()
    def _retract_group_(cls, group: list["OrthoConv2d"]) -> None:
        """Replace every latent of the like layers ``group`` by its orthonormal factor
        (float64 Cholesky QR, batched per latent name: one host synchronisation per name)."""
        first = group[0]
        with build_threads(first.mix.device):
            for name in first._latent_names():
                params = [getattr(m, name) for m in group]
                q = F.cholesky_orthonormalize(torch.stack(params).double())
                for p, qi in zip(params, q):
                    p.copy_(qi.to(p.dtype))

    @torch.no_grad()
    def retract_(self) -> None:
        """Replace each latent by its orthonormal factor; the function is unchanged.
        (:func:`onelip.nn.utils.retract_` does this for all the like layers of a network at
        once.)"""
        type(self)._retract_group_([self])

    def lipschitz_bound(self) -> float:
        return 1.0  # eval: BCOP kernel of norm ≤ 1, shrunk by the float32 cast margin


class SpectralConv2d(ConvLayer):
    r"""Convolution normalised by its operator norm: padding, stride and input size included.

    .. math::
        y = \frac{K}{\beta(K)} \star x + b, \qquad
        \beta(K) = \max_{\omega \in \Omega_M} \sigma_{\max}\big(\hat K'(\omega)\big)
        \;\ge\; \|T_K\|,

    :math:`T_K` the linear map ``conv2d(·, K, stride, padding)`` on inputs of spatial size
    (H, W) — not the reshaped kernel, whose norm can be larger or smaller than the
    operator's. :math:`\beta` is the norm of the circular convolution on the
    :math:`M_h \times M_w` grid :math:`\Omega_M` of which the zero-padded :math:`T_K` is a
    restriction (:math:`K'` the polyphase kernel for stride > 1, M = H + p for stride 1:
    :func:`onelip.functional.conv2d_operator_norm_bound`).

    **Eval mode (certified, cached).** :math:`\beta` is computed exactly (SVD of the symbol at
    every frequency, float64) for the size of the input at hand, and the normalised kernel is
    cached per input size and scaled by :math:`1-\delta` for its float32 rounding: so
    :math:`\|T_{K/\beta}\| \le 1` is *guaranteed* for every input size. It is not equal to 1:
    the padded operator's norm is below the circular one by its border effects (measured
    0.96–0.99 for 3×3 kernels on 8×8–16×16 inputs, → 1 as the size grows;
    ``benchmarks/results/conv.md``).

    **Train mode.** The same :math:`\beta`, estimated by power iteration per frequency on
    persistent unit vectors :math:`v_\omega` (buffer ``v``, saved in the ``state_dict`` with
    the per-frequency estimates ``freq_sigma``; exact at initialisation):
    :math:`\hat\beta = \max_\omega \|\hat K'(\omega) v_\omega\| \le \beta`, with gradient.
    Each step refreshes the 8 frequencies with the largest estimates and a round-robin slice
    of 32 others (all of them on grids of ≤ 40 frequencies).
    So training computes the function that eval certifies, up to the power-iteration lag.
    **Initialisation:** Dirac-orthogonal (:func:`dirac_orthogonal_`), every singular value 1,
    so that deep stacks start with gain near 1 (from a random kernel, lipconvnet XS started at
    gain 2.5e-9 and could not learn). The price: from that flat spectrum the power iteration
    follows a top singular value that training creates more slowly than from a random one.
    *Why in the Fourier domain:* power iteration through ``conv2d``/``conv_transpose2d`` on
    one spatial vector tracks the padded operator's top singular vector, a windowed plane
    wave whose frequency can jump when the kernel changes; the top of that spectrum is a
    near-degenerate cluster, so the vector follows slowly — measured: the train-mode layer
    reached σ = 1.063 after 25 Adam steps at lr 0.01. Tracking every frequency at once costs
    a few batched matrix-vector products per frequency (a DFT of the kernel, not of the
    inputs). Measured after 25 Adam steps at lr 1e-2 on an objective that pushes the norm up
    (4→6 channels, 8×8), from a random Kaiming kernel: train-mode σ_max ≤ 0.99 (stride 1)
    and ≤ 1.0015 (stride 2), within 2 % of the eval-mode σ_max; with one iteration per step,
    stride 2 reached 1.016. From the Dirac-orthogonal start: up to 1.028 (stride 1) and 1.015
    (stride 2) over 10 seeds (``tests/test_models_can_learn.py`` bounds it by 1.05).

    Args:
        in_channels, out_channels, kernel_size: as in ``nn.Conv2d``.
        input_size: (H, W) of the training inputs (the operator depends on it).
        stride: Default: 1.
        padding: zero padding; default ``(k-1)//2`` ("same" for odd k and stride 1).
        bias: Default: ``True``.
        n_power_iterations: per refreshed frequency and training forward (batched
            matrix-vector products on the kernel's symbol, not convolutions). Default: 3.

    Shape:
        :math:`(N, C_{in}, H, W) \to (N, C_{out}, H', W')` as ``nn.Conv2d``.

    Example:
        >>> conv = SpectralConv2d(2, 3, 3, input_size=(6, 6)).double().eval()
        >>> basis = torch.eye(72, dtype=torch.float64).reshape(72, 2, 6, 6)
        >>> op = (conv(basis) - conv.bias.view(1, -1, 1, 1)).reshape(72, -1)
        >>> bool(torch.linalg.matrix_norm(op, ord=2) <= 1 + 1e-12)  # float64 rounding
        True
        >>> bool(torch.linalg.svdvals(op)[-1] >= 1 - 1e-6)  # at initialisation: an isometry
        True
    """

    sized_by_input = True  # the operator depends on the input size

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 input_size: tuple[int, int], stride: int = 1, padding: int | None = None,
                 bias: bool = True, n_power_iterations: int = 3, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        k, s = int(kernel_size), int(stride)
        if in_channels < 1 or out_channels < 1 or k < 1 or s < 1:
            raise ValueError(
                f"Expected positive channels, kernel_size and stride, but got "
                f"{in_channels}, {out_channels}, {k}, {s}"
            )
        if n_power_iterations < 1:
            raise ValueError(
                "Expected n_power_iterations to be positive, but got "
                f"n_power_iterations={n_power_iterations}"
            )
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"Expected input_size (H, W), but got {input_size}")
        self._init_conv(in_channels, out_channels, k, stride=s, padding=padding)
        p = self.padding[0]
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.n_power_iterations = n_power_iterations
        self.grid = F.circular_grid(self.kernel_size, self.input_size, stride=s, padding=p)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, **factory))
        self._init_bias(out_channels, bias, **factory)
        # Per-frequency right singular vectors (complex, stored as (..., 2) real) and the
        # latest estimate of σ_max at each frequency.
        n_freq = (self.grid[0], self.grid[1] // 2 + 1)
        self.register_buffer("v", torch.empty(*n_freq, in_channels * s * s, 2, **factory))
        self.register_buffer("freq_sigma", torch.empty(n_freq[0] * n_freq[1], **factory))
        self._sweep = 0  # round-robin position of the frequency refresh (get_extra_state)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A Dirac-orthogonal kernel (:func:`dirac_orthogonal_`): every singular value of the
        symbol is 1, so the layer starts with gain 1 in every direction (a random kernel,
        divided by its largest singular value, contracts the others: a deep stack of them
        starts flat and cannot learn). Zero bias."""
        dirac_orthogonal_(self.weight, stride=self.stride[0], padding=self.padding[0])
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._start_power_iteration()

    @torch.no_grad()
    def _start_power_iteration(self) -> None:
        """:meth:`reset_power_iteration` for a kernel whose symbol has orthonormal rows or
        columns at every frequency (:func:`dirac_orthogonal_`), without its SVDs (which were
        most of the time of building lipconvnet): every singular value is 1 (up to the
        float32 rounding of Q), and the normalised first row is a right singular vector."""
        sym = F.conv2d_symbol(self.weight.double(), self.grid, stride=self.stride[0])
        v = sym[..., 0, :].conj().resolve_conj()  # (M_h, M_w/2+1, C s²)
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        self.v.copy_(torch.view_as_real(v).to(self.v.dtype))
        sigma = torch.linalg.vector_norm((sym @ v[..., None])[..., 0], dim=-1)
        self.freq_sigma.copy_(sigma.flatten())

    @torch.no_grad()
    def reset_power_iteration(self) -> None:
        """Set ``v`` to the exact top right singular vector of every frequency."""
        sym = F.conv2d_symbol(self.weight.double(), self.grid, stride=self.stride[0])
        _, sv, vh = torch.linalg.svd(sym)
        v = vh[..., 0, :].conj().resolve_conj()  # (M_h, M_w/2+1, C s²)
        self.v.copy_(torch.view_as_real(v).to(self.v.dtype))
        self.freq_sigma.copy_(sv[..., 0].flatten())

    def get_extra_state(self) -> Tensor:
        """(1,) int64: the round-robin position of the frequency refresh, so that a resumed
        run refreshes the frequencies the uninterrupted one would."""
        return torch.tensor([self._sweep], dtype=torch.int64)

    def set_extra_state(self, state: Tensor) -> None:
        self._sweep = int(torch.as_tensor(state).reshape(-1)[0]) % max(
            self.freq_sigma.numel(), 1)

    def _normalised(self, size: tuple[int, int]) -> Tensor:
        with full_precision(self.weight.device):
            w = self.weight.detach().double()
            w = w / F.conv2d_operator_norm_bound(w, size, stride=self.stride[0],
                                                 padding=self.padding[0])
            margin = F.float32_cast_margin(w) if self.weight.dtype != torch.float64 else 0.0
            return (w * (1 - margin)).to(self.weight.dtype)

    def applied_weight(self, input_size: tuple[int, int] | None = None) -> Tensor:
        """The certified normalised kernel for inputs of ``input_size`` (default: the
        constructor's), shape (C_out, C_in, k, k)."""
        return self._normalised(self.input_size if input_size is None else input_size)

    def effective_weight(self, input_size: tuple[int, int] | None = None) -> Tensor:
        """The certified normalised kernel for inputs of ``input_size`` (default: the
        constructor's), shape (C_out, C_in, k, k); cached in eval mode."""
        size = self.input_size if input_size is None else (int(input_size[0]),
                                                           int(input_size[1]))
        if self.training:
            return self._normalised(size)
        return self._cached(f"weight{size[0]}x{size[1]}", lambda: self._normalised(size))

    def eval_weight(self, input_size: tuple[int, int] | None = None) -> Tensor:
        with torch.no_grad():
            return self.effective_weight(input_size)

    def train_weight(self) -> Tensor:
        return self._train_weight()

    def _frequencies(self) -> Tensor:
        """Frequencies refreshed at this training step: the ``_TRACK_TOP`` largest by their
        last estimate, and a round-robin slice of ``_TRACK_SWEEP`` (every frequency is
        refreshed every F / ``_TRACK_SWEEP`` steps). All of them on small grids."""
        n_f = self.freq_sigma.numel()
        if n_f <= _TRACK_TOP + _TRACK_SWEEP:
            return torch.arange(n_f, device=self.freq_sigma.device)
        top = self.freq_sigma.topk(_TRACK_TOP).indices
        sweep = (torch.arange(_TRACK_SWEEP, device=top.device) + self._sweep) % n_f
        self._sweep = (self._sweep + _TRACK_SWEEP) % n_f
        return torch.unique(torch.cat((top, sweep)))

    def _train_weight(self) -> Tensor:
        """:math:`K / \\hat\\beta`, :math:`\\hat\\beta = \\max_\\omega \\|\\hat K'_\\omega
        v_\\omega\\|` over the refreshed frequencies after their power-iteration steps;
        differentiable in the kernel."""
        stride = self.stride[0]
        ctype = torch.complex128 if self.weight.dtype == torch.float64 else torch.complex64

        def normalised(weight: Tensor, v: Tensor, phases: Tensor) -> Tensor:
            with full_precision(weight.device):
                kp = F.conv2d_polyphase(weight, stride=stride)  # (O, C', qh, qw)
                sym = torch.einsum("ocab,sab->soc", kp.to(ctype), phases)  # (S, O, C')
                est = torch.linalg.vector_norm(sym @ v[..., None], dim=(-2, -1))  # (S,)
                return weight / est.amax()

        with torch.no_grad(), build_threads(self.weight.device), \
                full_precision(self.weight.device):
            sel = self._frequencies()  # (S,)
            taps = (-(-self.kernel_size[0] // stride), -(-self.kernel_size[1] // stride))
            phases = F.dft_phases(taps, self.grid, dtype=ctype,
                                  device=self.weight.device).flatten(0, 1)[sel]  # (S, qh, qw)
            kp = F.conv2d_polyphase(self.weight, stride=stride)
            sym = torch.einsum("ocab,sab->soc", kp.to(ctype), phases)  # (S, O, C')
            v_all = torch.view_as_complex(self.v).view(-1, self.v.shape[-2])  # (F, C') view
            v = v_all[sel]  # (S, C') copy
            F.symbol_power_iteration(sym, v, n_iter=self.n_power_iterations)
            v_all[sel] = v
            est = torch.linalg.vector_norm(sym @ v[..., None], dim=(-2, -1))  # (S,)
            self.freq_sigma[sel] = est.to(self.freq_sigma.dtype)
        return serial(normalised, self.weight, v, phases)  # differentiable in the weight

    def lipschitz_bound(self) -> float:
        return 1.0  # eval: kernel / certified operator-norm bound, with the cast margin

    def eval_forward(self, x: Tensor) -> Tensor:
        return self.apply_weight(x, self.effective_weight((x.shape[-2], x.shape[-1])))

    def train_forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        if size != self.input_size:
            raise ValueError(
                f"SpectralConv2d was built for inputs of size {self.input_size} (its norm "
                f"depends on it), but got {size} in training"
            )
        return self.apply_weight(x, self._train_weight())

    @torch.no_grad()
    def export(self, input_size: tuple[int, int] | None = None) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the certified kernel for ``input_size`` folded in (its
        bound holds for that input size)."""
        return plain_conv(self, self.effective_weight(input_size))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, "
                f"n_power_iterations={self.n_power_iterations}")

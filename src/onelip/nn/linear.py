# SPDX-License-Identifier: MIT
"""Dense 1-Lipschitz layers: :class:`OrthoLinear`, :class:`SpectralLinear`,
:class:`FrobeniusLinear`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import DenseLayer, tensor_digest

__all__ = ["FrobeniusLinear", "OrthoLinear", "SpectralLinear"]

# A latent whose certified bound of σ_max(W)² (Gram row sums) exceeds this is retracted
# before a training forward; the one-step Björck map used in training is ≤ 1 for any
# σ_max(W) ≤ 2 (see OrthoLinear).
_TRAIN_GUARD = 4.0
# The relative shrink of the latent after a float32 Björck step in retract_, in units of
# u·‖W‖_F (u = 2^-24): the step's rounding left σ_max(W) up to 1 + 1.54·u·‖W‖_F (measured
# over shapes 1×1 – 1024×1024, worst on thin ones, e.g. 64×1; 1 + 4.4e-7 on 1024×1024).
_RETRACT_CAST = 4.0
# The copies of the latent that OrthoLinear has certified (the fast training path, the guard):
# which of them equal the latent is its hidden training state (get_extra_state).
_SNAPSHOTS = ("_retracted_latent", "_guarded_latent")


class _RetractedLinear(torch.autograd.Function):
    r"""``y = x Wᵀ + b`` whose weight gradient is the Riemannian one (:class:`OrthoLinear`).

    Forward: one matmul, as :func:`torch.nn.functional.linear`. Backward: ``dx = gy W``
    (exact) and ``dW`` = the projection of the Euclidean gradient :math:`G = g_y^\top x` on
    the tangent space of the Stiefel manifold at W — :math:`\tfrac12(G - W G^\top W)` for a
    square W, :math:`G - \tfrac12 G W^\top W - \tfrac12 W G^\top W` (orthonormal rows) or
    :math:`G - \tfrac12 W W^\top G - \tfrac12 W G^\top W` (orthonormal columns) — which is
    the gradient of the polar map at an orthogonal W. Evaluated batch-side, with
    :math:`W G^\top W = (xW^\top)^\top (g_y W)`: for a square W the backward costs three
    (N × out × in) products, ``dx`` included.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, w: Tensor, b: Tensor | None):
        a = x @ w.mT
        # y must be another tensor than a even without a bias: a is marked
        # non-differentiable, and ``y = a`` would leave the output without a grad_fn.
        return (a.clone() if b is None else a + b), a

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, w, _ = inputs
        _, a = output
        ctx.mark_non_differentiable(a)
        ctx.save_for_backward(x, w, a)

    @staticmethod
    def backward(ctx, gy: Tensor, _ga: Tensor | None):
        x, w, a = ctx.saved_tensors
        n_out, n_in = w.shape
        gy2, x2, a2 = gy.reshape(-1, n_out), x.reshape(-1, n_in), a.reshape(-1, n_out)
        gyw = gy2 @ w  # (N, in): dx, and W Gᵀ W = a2ᵀ gyw
        gx = gyw.reshape(x.shape) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            if n_out == n_in:
                gw = torch.addmm(gy2.mT @ x2, a2.mT, gyw, beta=0.5, alpha=-0.5)
            elif n_out < n_in:
                gw = torch.addmm(gy2.mT @ (x2 - 0.5 * (a2 @ w)), a2.mT, gyw, alpha=-0.5)
            else:
                gw = torch.addmm((gy2 - 0.5 * (gyw @ w.mT)).mT @ x2, a2.mT, gyw, alpha=-0.5)
        gb = gy2.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


class OrthoLinear(DenseLayer):
    r"""Linear layer with an orthogonal weight: all singular values equal to 1.

    .. math::
        y = Q x + b, \qquad Q = \operatorname{polar}(W) = U V^\top
        \quad\text{for}\quad W = U \Sigma V^\top,

    the closest orthogonal matrix to the latent weight :math:`W` (orthonormal rows if
    out ≤ in, orthonormal columns if out > in). Q is a function of W alone and is orthogonal
    for *any* full-rank W, not only near its initialisation.

    **Eval mode (exact, cached).** Q is computed by :func:`onelip.functional.polar_bjorck` in
    float64 from a certified start, iterated until :math:`\|Q^\top Q - I\|_F \le 10^{-10}`
    (σ within 1e-10 of 1 before the float32 cast), then divided by
    :math:`\sqrt{1+\|Q^\top Q-I\|_F}` so that :math:`\|Q\|_2 \le 1` holds whatever happens.
    It is computed once and cached: inference costs one ``F.linear``.

    **Train mode (fast).** Orthonormalising the latent at every step (a Cholesky
    factorisation, or some 30 matmuls of Björck from scratch) costs many times the layer
    itself. Instead the latent is kept near orthogonal by :meth:`retract_` — one certified
    Björck step :math:`W \leftarrow W(\tfrac32 I - \tfrac12 W^\top W)`, which leaves
    polar(W), the eval function, unchanged — that :func:`onelip.train.fit` calls after each
    optimiser step, and the training forward is:

    * **the retracted latent itself**, :math:`y = xW^\top + b` (one matmul, as
      ``nn.Linear``), while W equals, value for value, the output of the last
      :meth:`retract_` (the constructor retracts too). :meth:`retract_` certifies
      :math:`\sigma_{\max}(W)\le1`:
      :math:`\sigma\mapsto\tfrac32\sigma-\tfrac12\sigma^3` maps :math:`[0, 2]` into
      :math:`[0, 1]` and it is applied only when the Gram row-sum bound gives
      :math:`\sigma_{\max}\le1.58` (otherwise W becomes polar(W)), and its float32 rounding
      is absorbed by a cast margin as in eval mode (:meth:`retract_`). If the optimiser step moved
      the singular values to :math:`1\pm\delta`, the retracted ones are
      :math:`\ge 1-\tfrac32\delta^2-\tfrac12\delta^3` (0.99995 after 25 Adam steps at lr 1e-3
      in the benchmark). The backward returns the exact :math:`dx = g_y W` and, for W, the
      *Riemannian* gradient: the Euclidean one projected on the tangent space of the
      orthogonal matrices at W, :math:`\tfrac12(G - WG^\top W)` with :math:`G = g_y^\top x`
      (square W; see ``_RetractedLinear`` for rectangular ones) — the gradient of the polar
      map at an orthogonal W, within :math:`O(\delta^2)` of it at the retracted latent.
    * **otherwise** (an optimiser step without :meth:`retract_`, a loaded, overwritten or
      converted latent): *one* Björck step applied without forming it,
      :math:`y = \tfrac32 xW^\top - \tfrac12 ((xW^\top)W)W^\top`, with autograd gradients.
      On singular values :math:`\sigma\mapsto \tfrac32\sigma-\tfrac12\sigma^3 \le 1` for every
      :math:`\sigma\le2`, equal to 1 with zero derivative at :math:`\sigma = 1`. A certified
      guard retracts the latent first if the Gram row-sum bound allows
      :math:`\sigma_{\max}(W) > 2`; it costs nothing when :meth:`retract_` certified the
      current latent, one comparison when it certified these values itself, one Gram matrix
      otherwise.

    Both are 1-Lipschitz. What the retracted forward gives up: the training operator is
    1 − O(δ²) tight instead of 1 − O(δ⁴), and the weight gradient is the projected one rather
    than autograd's through a Björck step (equal at an orthogonal W). Rejected: forming the
    Björck-1 matrix explicitly (two d×d×d products: more than the batch-side ones while
    batch < 2·width); keeping the Björck-1 forward with a projected backward (slower in
    forward+backward than the retracted forward); a version-counter check of the latent
    instead of comparing values (misses writes through ``weight.data``, for the fast path
    and for the guard alike). Timings against
    ``nn.Linear`` and the peers: ``benchmarks/results/dense.md``.

    **What the training checks see.** Both the fast-path test and the guard compare the
    latent *value for value* with the copy they last certified (not by version counter), at
    the start of every training forward. So every write made before a forward is seen: an
    optimiser step, ``load_state_dict``, ``with torch.no_grad(): weight.copy_(…)``, and
    writes through ``weight.data``, which bump no version counter
    (``layer.weight.data.normal_()`` then a training forward gave a 326-Lipschitz operator
    at 16×16, 1.8e3 at 64×64, while the guard keyed on the counter; now ≤ 1). What they
    cannot see:

    * a write made *after* the check, i.e. while the forward runs (another thread) or
      between a forward and its backward: the output was computed from the checked values,
      but a ``.data`` write also escapes autograd's saved-tensor check, so that backward
      uses the new values;
    * a forward replayed without running Python: ``torch.jit.trace`` of a training-mode
      layer records the branch taken when it was traced (measured: σ = 5.6 after a ``.data``
      write to a traced 8×8 layer), as would any other capture that replays a recorded
      graph of a training forward (a CUDA graph). ``torch.compile`` is not affected: the
      checks are graph breaks, run at every call.

    **Saved with the weights.** Which certified copy the latent equals is the layer's hidden
    training state: it goes into the ``state_dict`` (``_extra_state``: the two flags and the
    SHA-256 of the latent they were computed for) and is restored by ``load_state_dict``
    only for a latent with that digest, so a resumed run takes the same path at its first
    step as the uninterrupted one.

    ``torch.func.vmap`` over the weight is refused (no batching rule for the comparison), not
    left unchecked. Eval mode is unaffected: its cache may keep a stale Q after a ``.data``
    write (still orthogonal; see :class:`~onelip.nn.LipschitzModule`).

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias. Default: ``True``.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.

    Example:
        >>> layer = OrthoLinear(64, 64).eval()
        >>> s = torch.linalg.svdvals(layer.effective_weight())
        >>> bool((s - 1).abs().max() < 1e-5)
        True
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self._init_dense(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.weight.device.type != "meta":
            self.retract_()  # certifies the initial latent: training starts on the fast path

    def applied_weight(self) -> Tensor:
        """The orthogonal Q = polar(W), shape (out, in), rounded so that σ_max of the weight
        applied is ≤ 1 (:func:`~onelip.functional.unit_norm_cast`)."""
        return self.cast_unit(F.polar_bjorck(self.weight.detach())[0])

    def train_weight(self) -> Tensor:
        """polar(W) with gradients (the training forward applies the retracted latent or a
        Björck step instead: see the class)."""
        return F.polar_bjorck(self.weight)[0]

    def lipschitz_bound(self) -> float:
        return 1.0  # eval: σ_max of the applied (rounded) weight ≤ 1 by unit_norm_cast

    @torch.no_grad()
    def retract_(self) -> None:
        r"""Move the latent W towards polar(W) without changing polar(W).

        One Björck step when the certified Gram bound allows it (σ_max(W)² ≤ 2.5), a full
        :func:`~onelip.functional.polar_bjorck` otherwise; either way σ_max(W) ≤ 1 after it,
        and the training forward applies W as it is until W changes (see the class).

        **The cast margin.** In exact arithmetic both give σ_max ≤ 1; computed in the
        latent's dtype they give σ_max up to :math:`1 + O(u)` (measured up to 1 + 4.4e-7 in
        float32: the float32 latent the training forward applies, where eval mode and
        certificates were fine). So the result is scaled as eval mode's weights are
        (:func:`~onelip.functional.unit_norm_cast`): the float64 polar factor by
        :math:`1-\delta`, :math:`\delta` = :func:`~onelip.functional.rounding_margin`, before
        its cast (proven); the float32 Björck step by :math:`1 - 4u\|W\|_F` (u the unit
        roundoff, 2^-24), 2.6× the largest excess measured (1.54·u·‖W‖_F, over shapes
        1×1 – 1024×1024 and perturbations 1e-5 – 0.3; a worst-case rounding bound of the two
        products, :math:`\sim n\,u\|W\|_F^2`, is orders of magnitude looser, and the
        step in float64 would double the cost of a training step of an MLP). Neither moves
        polar(W), the eval function; the training operator stays within :math:`4u\|W\|_F`
        (1e-5 for 512×512) of the Björck-retracted one. ``tests/test_train_mode_margin.py``
        measures σ_max of the stored latent after retractions and Adam steps.
        """
        w = self.weight
        gram = F.small_gram(w)
        if float(F.gram_row_sum_bound(gram)) <= 2.5:
            new = F.bjorck_step(w, gram)
            u = torch.finfo(w.dtype).eps / 2
            delta = _RETRACT_CAST * u * float(torch.linalg.matrix_norm(new.double()))
            w.copy_(new.double().mul_(1.0 - delta))
        else:
            q = F.polar_bjorck(w)[0]  # float64, σ_max ≤ 1
            w.copy_(q * (1.0 - F.rounding_margin(q, w.dtype)))
        # σ_max(W) ≤ 1 now (Björck step from σ² ≤ 2.5, or polar): the training forward
        # applies this latent as it is while it stays equal to this certified copy.
        self.__dict__["_retracted_latent"] = w.detach().clone()

    @torch.compiler.disable
    def _retracted(self) -> bool:
        """Does the latent equal, value for value, the output of the last :meth:`retract_`?"""
        return self._latent_equals("_retracted_latent")

    def _latent_equals(self, key: str) -> bool:
        """Does the latent equal, value for value, the copy stored under ``key``?

        A comparison of values, not of version counters: it also sees writes through
        ``weight.data`` (which bump no counter), and survives ``deepcopy`` and a
        ``load_state_dict`` of the same values. One pass over W. A NaN never compares equal.
        """
        snap = self.__dict__.get(key)
        w = self.weight.detach()
        if snap is None or snap.shape != w.shape or snap.dtype != w.dtype or \
                snap.device != w.device:
            return False
        if w.device.type == "cpu":
            # NumPy's array_equal: cheaper than torch.equal for this check, which runs at
            # every training forward (benchmarks/results/dense.md times the step).
            try:
                import numpy as np

                return bool(np.array_equal(w.numpy(), snap.numpy()))
            except (ImportError, RuntimeError, TypeError):  # no NumPy, functorch, bfloat16
                pass
        return torch.equal(w, snap)

    def get_extra_state(self) -> Tensor:
        """(34,) uint8: for each certified copy (``_SNAPSHOTS``) whether the latent equals
        it, then the SHA-256 of the latent."""
        flags = torch.tensor([self._latent_equals(k) for k in _SNAPSHOTS], dtype=torch.uint8)
        return torch.cat((flags, tensor_digest(self.weight)))

    def set_extra_state(self, state: Tensor) -> None:
        """Restore the certified copies saved by :meth:`get_extra_state` (called by
        ``load_state_dict`` after the weight): only for the latent they were saved with."""
        state = torch.as_tensor(state).to("cpu", torch.uint8).reshape(-1)
        ok = state.numel() == len(_SNAPSHOTS) + 32 and torch.equal(
            state[len(_SNAPSHOTS):], tensor_digest(self.weight))
        for key, flag in zip(_SNAPSHOTS, state[:len(_SNAPSHOTS)].tolist() if ok else ()):
            if flag:
                self.__dict__[key] = self.weight.detach().clone()
            else:
                self.__dict__.pop(key, None)

    @torch.no_grad()
    def load_legacy_snapshots(self, keys: list[str]) -> None:
        """Restore the certified copies named ``keys`` as checkpoints of onelip 0.1/0.2
        recorded them (``fit``'s ``snapshots``: the copies equal to the latent saved with
        them); 0.3 saves them in :meth:`get_extra_state`."""
        for key in _SNAPSHOTS:
            if key in keys:
                self.__dict__[key] = self.weight.detach().clone()

    def __getstate__(self):
        state = super().__getstate__()
        for key in _SNAPSHOTS:  # copies of W, rebuilt on use
            state.pop(key, None)
        return state

    def train_forward(self, x: Tensor) -> Tensor:
        if self._retracted():
            return _RetractedLinear.apply(x, self.weight, self.bias)[0]
        self._guard()
        return F.bjorck1_linear(x, self.weight, self.bias)

    @torch.compiler.disable
    @torch.no_grad()
    def _guard(self) -> None:
        # Note: a certified bound, not a power-iteration estimate (a lower bound): one Adam
        # step can create a large singular direction that a warm power iteration misses
        # (σ_max(W) ≈ 4 unseen at lr 0.05; see tests/test_nn_dense.py).
        # Skipped only for the very values it last certified (compared by value, as in
        # _retracted: a version-counter key missed `weight.data` writes, issue 10).
        if self._latent_equals("_guarded_latent"):
            return
        w = self.weight
        bound = float(F.gram_row_sum_bound(F.small_gram(w)))
        if not math.isfinite(bound) or bound > _TRAIN_GUARD:
            w.copy_(F.polar_bjorck(w)[0])
        self.__dict__["_guarded_latent"] = w.detach().clone()


class SpectralLinear(DenseLayer):
    r"""Linear layer normalised by its largest singular value.

    .. math::
        y = \frac{W}{\sigma_{\max}(W)} x + b .

    **Eval mode (exact, cached).** :math:`\sigma_{\max}` is computed by SVD in float64, once:
    the spectral norm of the effective weight is 1 to float rounding.

    **Train mode.** :math:`\hat\sigma = u^\top W v` after ``n_power_iterations`` steps of power
    iteration with persistent vectors u, v (buffers, saved in the ``state_dict``), started from
    the exact top singular vectors at initialisation. :math:`\hat\sigma \le \sigma_{\max}`, so the
    train-mode norm is :math:`\sigma_{\max}/\hat\sigma \ge 1`: the training forward is only
    *approximately* 1-Lipschitz (as with ``torch.nn.utils.spectral_norm``). It is within 1e-4 of 1
    right after initialisation; during training σ̂ lags when the weights move faster than one
    power-iteration step follows: measured up to 1.017 (64×64, Adam lr 1e-3, 25 steps; tested
    ≤ 1.05) and up to 1.28 under a loss that pushes a second singular value past the first
    (1.09 with ``n_power_iterations=4``). **Eval mode is exact** (the norm is 1 to float
    rounding), and certificates are computed in eval mode. Use :class:`OrthoLinear` when the
    training forward itself must be ≤ 1.

    Args:
        in_features, out_features, bias: as in :class:`torch.nn.Linear`.
        n_power_iterations: power-iteration steps per training forward. Default: 1.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 n_power_iterations: int = 1, device=None, dtype=None) -> None:
        super().__init__()
        if n_power_iterations < 1:
            raise ValueError(
                "Expected n_power_iterations to be positive, but got "
                f"n_power_iterations={n_power_iterations}"
            )
        self._init_dense(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.n_power_iterations = n_power_iterations
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("u", torch.empty(out_features, **factory))
        self.register_buffer("v", torch.empty(in_features, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Singular values spread evenly from 1 down to 1/2 (a random orthogonal W, its rows or
        # columns scaled): every direction keeps at least half its norm, where a random W divided by
        # its largest singular value contracts most of them (an MLP of four such layers
        # started at gain 0.07), and the top one stands out, which the power iteration needs
        # to follow it (from all equal, an orthogonal W, train mode reached 1.14 after
        # training in tests/test_layer_table.py; 1.0 from this spread)
        nn.init.orthogonal_(self.weight)
        with torch.no_grad():
            n = min(self.weight.shape)
            spread = torch.linspace(1.0, 0.5, n, dtype=self.weight.dtype,
                                    device=self.weight.device)
            if self.weight.shape[0] <= self.weight.shape[1]:
                self.weight.mul_(spread[:, None])  # orthonormal rows, scaled
            else:
                self.weight.mul_(spread[None, :])  # orthonormal columns, scaled
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        with torch.no_grad():
            u, _, vh = torch.linalg.svd(self.weight.double(), full_matrices=False)
            self.u.copy_(u[:, 0])
            self.v.copy_(vh[0])

    def applied_weight(self) -> Tensor:
        """W / σ_max(W), shape (out, in), computed in float64 and rounded so that σ_max of
        the weight applied is ≤ 1."""
        w64 = self.weight.detach().double()
        return self.cast_unit(w64 / F.spectral_norm_exact(w64))

    def train_weight(self) -> Tensor:
        """W / σ_max(W) (exact SVD) with gradients; the training forward divides by the
        power-iteration estimate instead (see the class)."""
        return self.weight / F.spectral_norm_exact(self.weight)

    def lipschitz_bound(self) -> float:
        return 1.0  # eval: σ_max of the applied (rounded) weight ≤ 1 by unit_norm_cast

    def train_forward(self, x: Tensor) -> Tensor:
        F.power_iteration(self.weight, self.u, self.v, n_iter=self.n_power_iterations)
        # Note: u, v are updated in place, so the graph keeps clones of them (as torch's
        # spectral_norm does): two forwards before one backward (pairs, GANs) still work.
        sigma = torch.dot(self.u.clone(), self.weight @ self.v.clone())  # grad through W
        return TF.linear(x, self.weight / sigma, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_power_iterations={self.n_power_iterations}"


class FrobeniusLinear(DenseLayer):
    r"""Linear layer normalised by the Frobenius norm: :math:`y = W x / \|W\|_F + b`.

    :math:`\|W\|_2 \le \|W\|_F`, so the layer is 1-Lipschitz; for one output (a binary head)
    the two norms coincide and the layer is exactly 1-Lipschitz *and* gradient-norm preserving.

    With ``per_row=True`` each row is normalised separately (:math:`w_i/\|w_i\|`): every output
    is 1-Lipschitz but the layer as a whole is not (its norm can reach :math:`\sqrt{out}`);
    :meth:`lipschitz_bound` then returns the exact spectral norm of the normalised weight, and
    certificates use it.

    Shape:
        :math:`(*, H_{in}) \to (*, H_{out})`.
    """

    def __init__(self, in_features: int, out_features: int = 1, *, bias: bool = True,
                 per_row: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        self._init_dense(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.per_row = per_row
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def train_weight(self) -> Tensor:
        """W/‖W‖_F (or per row), shape (out, in), with gradients."""
        if self.per_row:
            return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.weight / self.weight.norm().clamp_min(1e-12)

    def applied_weight(self) -> Tensor:
        """W/‖W‖_F rounded so that σ_max of the weight applied is ≤ 1 (``per_row=False``);
        per row: the rows normalised (the bound is measured on it: :meth:`lipschitz_bound`)."""
        if self.per_row:
            return self.train_weight().detach()
        w64 = self.weight.detach().double()
        return self.cast_unit(w64 / w64.norm().clamp_min(1e-300))

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        if not self.per_row:
            return 1.0  # eval: σ_max of the applied (rounded) weight ≤ 1 by unit_norm_cast
        # σ_max of the applied weight (float64 SVD of the stored values), rounded up.
        return float(F.spectral_norm_exact(self.eval_weight().double())) * (1 + 1e-9)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_row={self.per_row}"

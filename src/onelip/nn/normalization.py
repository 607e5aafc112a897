# SPDX-License-Identifier: MIT
"""1-Lipschitz normalisation: centering without scaling (:class:`BatchCentering`,
:class:`LayerCentering`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onelip.nn._base import LipschitzModule
from onelip.nn.plain import ChannelShift

__all__ = ["BatchCentering", "LayerCentering"]


class BatchCentering(LipschitzModule):
    r"""Subtract the per-channel mean, like batch normalisation without the division.

    .. math::
        y = x - \mu + \beta, \qquad \mu_c = \text{mean of channel } c

    over the batch (and spatial) axes.

    * **Eval mode:** μ is the running mean: y is a translation of x, exactly 1-Lipschitz and
      gradient-norm preserving per sample. Certificates are about this mode.
    * **Train mode:** μ is the mean of the current batch, which couples the samples: as a map
      of the whole batch, :math:`X \mapsto X - \bar X` is an orthogonal projection
      (norm 1, so still 1-Lipschitz jointly), but one sample's output depends on the others —
      the per-sample Lipschitz statement does not apply. The running mean is updated with
      ``momentum``.

    Args:
        num_features: C, the size of axis 1.
        momentum: running-mean update rate. Default: 0.05.
        bias: learn β. Default: ``True``.

    Shape:
        :math:`(N, C, *) \to (N, C, *)`.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.05, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if num_features < 1 or not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"Expected num_features >= 1 and momentum in [0, 1], but got "
                f"{num_features}, {momentum}"
            )
        self.num_features, self.momentum = num_features, momentum
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(num_features, **factory)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"Expected input of shape (N, {self.num_features}, *), but got "
                f"{tuple(x.shape)}"
            )
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dims)  # (C,)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype),
                                        self.momentum)
        else:
            mean = self.running_mean
        y = x - mean.view(view)
        return y + self.bias.view(view) if self.bias is not None else y

    def lipschitz_bound(self) -> float:
        return 1.0  # eval: a translation x − μ + β

    @torch.no_grad()
    def export(self) -> ChannelShift:
        """A :class:`~onelip.nn.plain.ChannelShift` by β − μ_running (the eval-mode map)."""
        shift = -self.running_mean.detach()
        if self.bias is not None:
            shift = shift + self.bias.detach()
        out = ChannelShift(self.num_features).to(device=shift.device, dtype=shift.dtype)
        out.bias.copy_(shift)
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, momentum={self.momentum}, "
                f"bias={self.bias is not None}")


class LayerCentering(LipschitzModule):
    r"""Subtract each sample's mean over the channel (and spatial) axes:
    :math:`y = x - \bar x\,\mathbf 1`.

    An orthogonal projection of each sample (onto the vectors of mean 0): 1-Lipschitz in train
    and eval mode, with no coupling between samples.

    Args:
        dim: axes to average over. Default: all but the batch axis.

    Shape:
        :math:`(N, *) \to (N, *)`.
    """

    def __init__(self, *, dim: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.dim = None if dim is None else tuple(dim)

    def lipschitz_bound(self) -> float:
        return 1.0  # x − mean(x): an orthogonal projection

    def forward(self, x: Tensor) -> Tensor:
        dims = self.dim if self.dim is not None else tuple(range(1, x.dim()))
        return x - x.mean(dims, keepdim=True)

# SPDX-License-Identifier: MIT
r"""Batched image augmentation on the device, without per-sample Python: random crops with
zero padding and horizontal flips, the standard CIFAR-10 recipe (``--augment crop,flip``).

Each function maps a batch (N, C, H, W) of any dtype (uint8 included) to one of the same shape
and dtype, drawing from the given ``torch.Generator`` (on the batch's device), so that a run is
reproducible and resumable.

Data-parallel training gives each process a shard of the global batch. With ``rows`` (the
positions of the shard's samples in a global batch of ``total``), the draws are made for the
whole global batch, the same on every process, and each sample gets the draw of its global
position: N processes augment exactly as one process does (``rows=None``: the batch is the
global batch).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AUGMENTATIONS", "augment", "check_augment", "random_crop", "random_flip"]

AUGMENTATIONS = ("crop", "flip")


def _draw_rows(x: Tensor, rows: Tensor | None, total: int | None) -> tuple[int, Tensor | None]:
    """(how many samples to draw for, which draws this batch takes)."""
    if rows is None:
        return x.shape[0], None
    if total is None or rows.shape != (x.shape[0],):
        raise ValueError(f"rows must give the position of each of the {x.shape[0]} samples "
                         f"in a global batch of total samples")
    return int(total), rows.to(x.device)


def random_crop(x: Tensor, *, padding: int = 4, generator: torch.Generator | None = None,
                rows: Tensor | None = None, total: int | None = None) -> Tensor:
    """Pad each image by ``padding`` zeros on every side and cut a random H×W window.

    One gather for the whole batch: offsets (total, 2) are drawn at once (``rows`` of them
    kept, see the module) and turned into index grids. Shape: (N, C, H, W) -> (N, C, H, W).
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p)
    m, keep = _draw_rows(x, rows, total)
    off = torch.randint(0, 2 * padding + 1, (m, 2), device=x.device, generator=generator)
    off = off if keep is None else off[keep]  # (N, 2)
    top = off[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = off[:, 1:] + torch.arange(w, device=x.device)  # (N, W)
    idx_r = top[:, None, :, None].expand(n, c, h, w + 2 * padding)
    out = padded.gather(2, idx_r)  # (N, C, H, W+2p)
    idx_c = cols[:, None, None, :].expand(n, c, h, w)
    return out.gather(3, idx_c)  # (N, C, H, W)


def random_flip(x: Tensor, *, p: float = 0.5, generator: torch.Generator | None = None,
                rows: Tensor | None = None, total: int | None = None) -> Tensor:
    """Flip each image left-right with probability ``p`` (draws for ``total`` samples, ``rows``
    of them kept, see the module). Shape: (N, C, H, W) kept."""
    m, keep = _draw_rows(x, rows, total)
    flip = torch.rand(m, device=x.device, generator=generator) < p  # (total,)
    flip = flip if keep is None else flip[keep]  # (N,)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def check_augment(names: Sequence[str]) -> tuple[str, ...]:
    """Validate augmentation names; returns them as a tuple."""
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise ValueError(f"unknown augmentation {', '.join(bad)}; expected a comma-separated "
                         f"subset of {', '.join(AUGMENTATIONS)}")
    return tuple(names)


def augment(x: Tensor, names: Sequence[str], *, generator: torch.Generator | None = None,
            rows: Tensor | None = None, total: int | None = None) -> Tensor:
    """Apply the named augmentations in order (``"crop"``: pad 4 + random crop,
    ``"flip"``: horizontal flip); ``rows`` / ``total``: a shard of a global batch (see the
    module). Shape: (N, C, H, W) kept."""
    for name in check_augment(names):
        if name == "crop":
            x = random_crop(x, padding=4, generator=generator, rows=rows, total=total)
        else:
            x = random_flip(x, generator=generator, rows=rows, total=total)
    return x

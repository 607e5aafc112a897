# SPDX-License-Identifier: MIT
"""Data sets in a user's files: IDX (MNIST format) and CIFAR-10 binary.

* ``idx:DIR``: ``DIR/{train,t10k}-images-idx3-ubyte[.gz]`` and ``...labels-idx1-ubyte[.gz]``;
  grey (N, H, W) or colour (N, C, H, W) / (N, H, W, C) images, uint8 0..255 or floats in
  [0, 1]; labels 0..K-1 (see :func:`load_idx_dir`).
* ``cifar10:DIR``: the *binary* version, ``DIR/data_batch_{1..5}.bin`` and
  ``DIR/test_batch.bin`` (records of 1 label byte + 3072 pixel bytes). (3, 32, 32). The pickle
  version is refused: it would execute code.

All images are float32 in [0, 1], flattened to (N, C·H·W).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from onelip.data._split import DataSplit, _counted

__all__ = ["load_cifar10_binary", "load_idx_dir", "read_idx"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array; clear errors on corrupt files."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt deflate stream
        raise ValueError(f"{path} cannot be read ({e}); the file is corrupt or truncated")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated (incomplete IDX header)")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says {dims} ({expected} bytes of data), "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"{directory / stem}[.gz] not found")


def _as_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    """IDX images (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3} -> (N, C, H, W).
    A 4-D array with C-sized axes at both ends, e.g. (N, 3, 5, 3), is read as (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    raise ValueError(f"{path} holds an array of shape {x.shape}; IDX images must be (N, H, W), "
                     "(N, C, H, W) or (N, H, W, C) with C = 1 or 3 channels")


def _pixels(x: np.ndarray, path: Path) -> np.ndarray:
    """Pixels as float32 in [0, 1]: integers 0..255 are divided by 255, floats already in
    [0, 1] are kept as they are; anything else is an error that names the range found."""
    if x.size == 0:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{path} holds integer pixels in [{lo}, {hi}]; onelip reads integer "
                             "pixels as 0..255 (uint8): rescale them, or store floats in [0, 1]")
        return x.astype(np.float32) / 255.0
    n_nan = int(np.isnan(x).sum())
    n_inf = int(np.isinf(x).sum())
    if n_nan or n_inf:
        raise ValueError(f"{path} holds {n_nan} NaN and {n_inf} infinite pixel values (of "
                         f"{x.size}); fix or drop those images")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{path} holds float pixels in [{lo:g}, {hi:g}]; float IDX pixels must "
                         "be in [0, 1] (divide by 255 if they are 0..255), or store uint8 0..255")
    return x.astype(np.float32)


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError(f"{path} holds non-integer labels (e.g. "
                             f"{y[~np.isfinite(y) | (y != np.round(y))][0]}); labels must be "
                             "integer class indices 0..K-1")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        vals, counts = np.unique(y[y < 0], return_counts=True)
        raise ValueError(f"{path} holds negative labels {_counted(vals, counts, unit='image')}; "
                         "labels must be class indices 0..K-1")
    return y


def _dims(x: np.ndarray) -> str:
    return "×".join(str(s) for s in x.shape[1:])


def _num_classes(y_train: np.ndarray, y_test: np.ndarray, d: Path, *, train: str = "train",
                 test: str = "t10k") -> int:
    """K from the train labels: they must be 0..K-1 with every class present; the test labels
    must be classes the train labels have. ``train`` / ``test``: what the messages call the
    two label sets (``idx:``: the files' train and t10k; ``npz:``: the arrays y and y_test)."""
    present = np.unique(y_train)
    k = int(present[-1]) + 1 if present.size else 0
    if len(present) < k:  # a gap: the labels above the first missing class are the stray ones
        gap = int(np.setdiff1d(np.arange(k), present)[0])
        vals, counts = np.unique(y_train[y_train > gap], return_counts=True)
        if gap == 0:
            raise ValueError(f"{d}: {train} labels run from {int(present[0])} to {k - 1} and "
                             "no image has label 0; labels must be 0..K-1 with every class "
                             f"present (subtract {int(present[0])} if they start at "
                             f"{int(present[0])})")
        raise ValueError(f"{d}: {train} labels must be 0..K-1 with every class present, but "
                         f"after 0..{gap - 1} class {gap} never occurs and the labels above it are "
                         f"{_counted(vals, counts, unit='image')}; relabel or drop those images")
    if k < 2:
        raise ValueError(f"{d}: every {train} label is 0; a classifier needs at least 2 classes")
    extra = y_test >= k
    if extra.any():
        vals, counts = np.unique(y_test[extra], return_counts=True)
        raise ValueError(f"{d}: {test} labels hold {_counted(vals, counts, unit='image')}, "
                         f"classes that no {train} image has ({train} labels are 0..{k - 1}); "
                         "relabel or drop those images")
    return k


def load_idx_dir(directory: str | Path, *, name: str | None = None) -> DataSplit:
    """MNIST-format files in ``directory`` -> :class:`~onelip.data.DataSplit`.

    Images are (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3; integer pixels
    0..255 are divided by 255, float pixels must already be in [0, 1] (and finite). Labels are
    integers 0..K-1 with every class present in the train labels, which give K. Both splits
    must be non-empty and have the same image shape.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory of IDX files")
    parts = {}
    for split in ("train", "t10k"):
        x_path = _find(d, f"{split}-images-idx3-ubyte")
        y_path = _find(d, f"{split}-labels-idx1-ubyte")
        x, y = read_idx(x_path), read_idx(y_path)
        if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"{d}: {split} images {x.shape} and labels {y.shape} do not match: "
                             "the labels file must hold one label (shape (N,)) per image")
        x = _as_nchw(x, x_path)
        if len(x) == 0:
            raise ValueError(f"{d}: {x_path.name} holds 0 images; both the train and the t10k "
                             "split need images (onelip tests every run on the t10k split)")
        parts[split] = (_pixels(x, x_path), _labels(y, y_path))
    (x_tr, y_tr), (x_te, y_te) = parts["train"], parts["t10k"]
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"{d}: train images are {_dims(x_tr)} (C×H×W) but t10k images are "
                         f"{_dims(x_te)}; both splits need the same image size")
    k = _num_classes(y_tr, y_te, d)
    flat = [torch.from_numpy(np.ascontiguousarray(a.reshape(len(a), -1))) for a in (x_tr, x_te)]
    return DataSplit(name or f"idx:{d}", flat[0], torch.from_numpy(y_tr), flat[1],
                     torch.from_numpy(y_te), k, tuple(int(s) for s in x_tr.shape[1:]))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    rec = 1 + 3072
    if raw.size == 0 or raw.size % rec:
        raise ValueError(f"{path} is truncated or not a CIFAR-10 binary batch "
                         f"({raw.size} bytes is not a multiple of {rec})")
    raw = raw.reshape(-1, rec)
    y = raw[:, 0].astype(np.int64)
    if y.max() > 9:
        raise ValueError(f"{path} has labels > 9; not a CIFAR-10 binary batch")
    return raw[:, 1:].astype(np.float32) / 255.0, y


def load_cifar10_binary(directory: str | Path) -> DataSplit:
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory")
    if list(d.glob("data_batch_*")) and not list(d.glob("data_batch_*.bin")):
        raise ValueError(f"{d} holds the pickle version of CIFAR-10, which onelip refuses to "
                         "load (pickles can run code); use the binary version (*.bin)")
    train = sorted(d.glob("data_batch_*.bin"))
    test = d / "test_batch.bin"
    if not train or not test.exists():
        raise FileNotFoundError(f"{d} must hold data_batch_*.bin and test_batch.bin")
    xs, ys = zip(*[_read_cifar_batch(p) for p in train])
    xt, yt = _read_cifar_batch(test)
    return DataSplit(f"cifar10:{d}", torch.from_numpy(np.concatenate(xs)),
                     torch.from_numpy(np.concatenate(ys)), torch.from_numpy(xt),
                     torch.from_numpy(yt), 10, (3, 32, 32))

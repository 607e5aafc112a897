# SPDX-License-Identifier: MIT
"""Data sets in a user's files: IDX (MNIST format) and CIFAR-10 binary.

* ``idx:DIR``: ``DIR/{train,t10k}-images-idx3-ubyte[.gz]`` and ``...labels-idx1-ubyte[.gz]``.
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

from onelip.data._split import DataSplit

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


def load_idx_dir(directory: str | Path, *, name: str | None = None) -> DataSplit:
    """MNIST-format files in ``directory`` -> :class:`~onelip.data.DataSplit`."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory of IDX files")
    parts = {}
    for split in ("train", "t10k"):
        x = read_idx(_find(d, f"{split}-images-idx3-ubyte"))
        y = read_idx(_find(d, f"{split}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"{d}: {split} images {x.shape} and labels {y.shape} do not match")
        parts[split] = (torch.from_numpy(x.reshape(x.shape[0], -1).astype(np.float32) / 255.0),
                        torch.from_numpy(y.astype(np.int64)))
    h, w = x.shape[1:]
    k = int(max(parts["train"][1].max(), parts["t10k"][1].max())) + 1
    return DataSplit(name or f"idx:{d}", *parts["train"], *parts["t10k"], max(k, 2), (1, h, w))


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

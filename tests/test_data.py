# SPDX-License-Identifier: MIT
"""Data sets: built-in shapes, dtypes and ranges; the IDX and CIFAR-10 binary loaders on small
files written here (gzipped or not, truncated, corrupt); the Fashion-MNIST package."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import onelip.data.files as DF
import onelip.data.packaged as DP
from onelip import data

TOY = ["two-moons", "circles", "spiral", "checkerboard"]


def _check_split(d: data.DataSplit, *, n_train: int, n_test: int, dim: int, k: int) -> None:
    assert d.x_train.shape == (n_train, dim) and d.x_test.shape == (n_test, dim), d
    assert d.y_train.shape == (n_train,) and d.y_test.shape == (n_test,)
    assert d.x_train.dtype == torch.float32 and d.x_test.dtype == torch.float32
    assert d.y_train.dtype == torch.int64 and d.y_test.dtype == torch.int64
    assert d.num_classes == k
    assert int(d.y_train.min()) >= 0 and int(d.y_train.max()) < k
    assert int(d.y_test.min()) >= 0 and int(d.y_test.max()) < k
    assert torch.isfinite(d.x_train).all() and torch.isfinite(d.x_test).all()
    assert int(np.prod(d.input_shape)) == dim


# ==== built-in sets =========================================================================


@pytest.mark.parametrize("name", TOY)
def test_toy_sets(name):
    d = data.load(name, n_samples=500, seed=1)
    _check_split(d, n_train=400, n_test=100, dim=2, k=2)
    assert d.input_shape == (2,)
    assert set(d.y_train.tolist()) == {0, 1}
    # both classes are represented in roughly equal numbers
    assert 0.3 < float(d.y_train.float().mean()) < 0.7
    # deterministic for a seed, different for another
    again = data.load(name, n_samples=500, seed=1)
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)
    other = data.load(name, n_samples=500, seed=2)
    assert not torch.equal(other.x_train, d.x_train)


@pytest.mark.parametrize("name", ["two-moons", "circles"])
def test_toy_sets_are_standardised(name):
    d = data.load(name, n_samples=1000)
    x = torch.cat([d.x_train, d.x_test])
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(2), atol=1e-4)


def test_toy_default_size_and_train_test_disjoint():
    d = data.load("two-moons")
    _check_split(d, n_train=1600, n_test=400, dim=2, k=2)
    train = {tuple(r) for r in d.x_train.tolist()}
    assert not any(tuple(r) in train for r in d.x_test.tolist())


def test_digits():
    d = data.load("digits")
    _check_split(d, n_train=1437, n_test=360, dim=64, k=10)
    assert d.input_shape == (1, 8, 8)
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) <= 1.0
    assert float(d.x_train.max()) == 1.0
    assert set(d.y_train.tolist()) == set(range(10))


def test_mnist_5k():
    d = data.load("mnist-5k")
    _check_split(d, n_train=4000, n_test=1000, dim=784, k=10)
    assert d.input_shape == (1, 28, 28)
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert set(d.y_test.tolist()) == set(range(10))


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown data set 'imagenet'; known: .*two-moons") as e:
        data.load("imagenet")
    for name in TOY + ["digits", "mnist-5k", "fashion-mnist", "idx:DIR", "cifar10:DIR"]:
        assert name in str(e.value)
        assert name in data.available()
    with pytest.raises(ValueError, match="Unknown data set 'svhn:/tmp'"):
        data.load("svhn:/tmp")


def test_unknown_loader_option_is_an_error():
    with pytest.raises(TypeError):
        data.load("digits", n_samples=10)


# ==== IDX (MNIST format) ====================================================================


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">i", s) for s in arr.shape)
    return header + arr.astype(np.uint8 if code == 0x08 else ">i4").tobytes()


def _write_idx_dir(root: Path, *, gz: bool, n_train: int = 6, n_test: int = 4, h: int = 5,
                   w: int = 3, k: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % k).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % k).astype(np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 255
    arrays["train-images-idx3-ubyte"][0, 0, 1] = 0
    for name, arr in arrays.items():
        raw = _idx_bytes(arr)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (root / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_dir_loads(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path / "mnistlike", gz=gz)
    d = data.load(f"idx:{tmp_path / 'mnistlike'}")
    _check_split(d, n_train=6, n_test=4, dim=15, k=3)
    assert d.input_shape == (1, 5, 3)
    want = torch.from_numpy(arrays["train-images-idx3-ubyte"].reshape(6, -1) / 255.0).float()
    assert torch.allclose(d.x_train, want)
    assert float(d.x_train.max()) == 1.0 and float(d.x_train.min()) == 0.0
    assert d.y_test.tolist() == [0, 1, 2, 0]


def test_read_idx_other_dtype(tmp_path):
    arr = np.arange(-3, 9, dtype=np.int32).reshape(3, 4)
    p = tmp_path / "ints-idx2"
    p.write_bytes(_idx_bytes(arr, code=0x0C))
    assert np.array_equal(DF.read_idx(p), arr)


def test_idx_truncated_data_is_a_clear_error(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"truncated or corrupt: header says \[6, 5, 3\]"):
        data.load(f"idx:{tmp_path}")


def test_idx_truncated_header_is_a_clear_error(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    p = tmp_path / "t10k-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes()[:6])
    with pytest.raises(ValueError, match="truncated .incomplete IDX header"):
        data.load(f"idx:{tmp_path}")


def test_idx_bad_magic_is_a_clear_error(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match="not an IDX file .bad magic number"):
        data.load(f"idx:{tmp_path}")


def test_idx_corrupt_gzip_is_a_clear_error(tmp_path):
    _write_idx_dir(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="cannot be read .* corrupt or truncated"):
        data.load(f"idx:{tmp_path}")


def test_idx_corrupt_deflate_stream_is_a_clear_error(tmp_path):
    """Regression: a valid gzip header over a damaged deflate stream raised zlib.error (not a
    ValueError: a traceback in the CLI)."""
    raw = _idx_bytes((np.arange(5000) % 7).astype(np.uint8))
    gz = bytearray(gzip.compress(raw))
    for i in range(12, len(gz) - 10, 5):
        gz[i] ^= 0x5A
    p = tmp_path / "labels-idx1-ubyte.gz"
    p.write_bytes(bytes(gz))
    with pytest.raises(ValueError, match="cannot be read .* corrupt or truncated"):
        DF.read_idx(p)


def test_idx_truncated_gzip_is_a_clear_error(tmp_path):
    _write_idx_dir(tmp_path, gz=True)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.load(f"idx:{tmp_path}")


def test_idx_mismatched_counts_is_a_clear_error(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError,
                       match=r"train images \(6, 5, 3\) and labels \(5,\) do not match"):
        data.load(f"idx:{tmp_path}")


def test_idx_missing_files_and_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory of IDX files"):
        data.load(f"idx:{tmp_path / 'nowhere'}")
    _write_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found"):
        data.load(f"idx:{tmp_path}")


# ==== CIFAR-10 binary =======================================================================


def _cifar_records(n: int, seed: int, labels=None) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10 if labels is None else np.asarray(labels)).astype(np.uint8)
    px = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    raw = np.concatenate([y[:, None], px], axis=1).tobytes()
    return raw, y, px


def _write_cifar_dir(root: Path, n_batches: int = 2, n: int = 7) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for b in range(1, n_batches + 1):
        raw, y, px = _cifar_records(n, seed=b)
        (root / f"data_batch_{b}.bin").write_bytes(raw)
        out[b] = (y, px)
    raw, y, px = _cifar_records(5, seed=99)
    (root / "test_batch.bin").write_bytes(raw)
    out["test"] = (y, px)
    return out


def test_cifar10_binary_loads(tmp_path):
    written = _write_cifar_dir(tmp_path)
    d = data.load(f"cifar10:{tmp_path}")
    _check_split(d, n_train=14, n_test=5, dim=3072, k=10)
    assert d.input_shape == (3, 32, 32)
    y1, px1 = written[1]
    assert d.y_train[:7].tolist() == y1.tolist()
    assert torch.allclose(d.x_train[:7], torch.from_numpy(px1 / 255.0).float())
    # channel-major records: (N, 3072) -> (N, 3, 32, 32) puts the first 1024 bytes in red
    img = d.x_train.reshape(-1, *d.input_shape)
    assert torch.allclose(img[0, 1].flatten(), torch.from_numpy(px1[0, 1024:2048] / 255.0).float())
    assert float(d.x_test.min()) >= 0 and float(d.x_test.max()) <= 1


def test_cifar10_pickle_version_refused(tmp_path):
    for b in range(1, 3):
        (tmp_path / f"data_batch_{b}").write_bytes(b"\x80\x04pickle")
    (tmp_path / "test_batch").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="pickle version of CIFAR-10.*binary version"):
        data.load(f"cifar10:{tmp_path}")


def test_cifar10_truncated_is_a_clear_error(tmp_path):
    _write_cifar_dir(tmp_path)
    p = tmp_path / "data_batch_2.bin"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or not a CIFAR-10 binary batch .* 3073"):
        data.load(f"cifar10:{tmp_path}")


def test_cifar10_bad_labels_and_missing_files(tmp_path):
    _write_cifar_dir(tmp_path)
    raw, _, _ = _cifar_records(3, seed=5, labels=[1, 200, 3])
    (tmp_path / "test_batch.bin").write_bytes(raw)
    with pytest.raises(ValueError, match="labels > 9"):
        data.load(f"cifar10:{tmp_path}")
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(FileNotFoundError, match="must hold data_batch_.*test_batch.bin"):
        data.load(f"cifar10:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        data.load(f"cifar10:{tmp_path / 'nowhere'}")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="truncated"):
        DF._read_cifar_batch(tmp_path / "empty.bin")


# ==== Fashion-MNIST (Debian package) ========================================================


@pytest.mark.skipif(not DP.FASHION_DIR.exists(),
                    reason="dataset-fashion-mnist is not installed (make data)")
def test_fashion_mnist_loads():
    d = data.load("fashion-mnist")
    _check_split(d, n_train=60000, n_test=10000, dim=784, k=10)
    assert d.name == "fashion-mnist" and d.input_shape == (1, 28, 28)
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert torch.bincount(d.y_test).tolist() == [1000] * 10  # the standard balanced test set


def test_fashion_mnist_missing_package_message(monkeypatch, tmp_path):
    monkeypatch.setattr(DP, "FASHION_DIR", tmp_path / "not-installed")
    with pytest.raises(FileNotFoundError,
                       match=r"Fashion-MNIST is not installed: run `make data` .*"
                             r"apt-get install -y dataset-fashion-mnist"):
        data.load("fashion-mnist")

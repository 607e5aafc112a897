# SPDX-License-Identifier: MIT
"""Bad data is refused before the first training step, in one line that says what is wrong:
the IDX loader (float pixels, stray labels, NaN/Inf, colour images, mismatched sizes, empty
splits), :func:`onelip.data.check_split` (run by every :func:`onelip.data.load`), and the
2-D generators' minimum size. Every test writes its own tiny files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from onelip import data
from onelip.cli import main

TOY = ["two-moons", "circles", "spiral", "checkerboard"]
_CODES = {np.dtype(np.uint8): (0x08, np.uint8), np.dtype(np.int32): (0x0C, ">i4"),
          np.dtype(np.float32): (0x0D, ">f4"), np.dtype(np.float64): (0x0E, ">f8")}


def _idx(arr: np.ndarray) -> bytes:
    code, dtype = _CODES[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">i", s) for s in arr.shape)
    return head + arr.astype(dtype).tobytes()


def _labels(n: int, k: int = 3) -> np.ndarray:
    return (np.arange(n) % k).astype(np.uint8)


def _images(n: int, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _write(root: Path, x_train, y_train, x_test, y_test) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for stem, arr in [("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                      ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", y_test)]:
        (root / stem).write_bytes(_idx(np.asarray(arr)))
    return f"idx:{root}"


def _refused(name: str, match: str) -> str:
    with pytest.raises(ValueError, match=match) as e:
        data.load(name)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ==== IDX pixels =============================================================================


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_idx_float_pixels_in_unit_range_are_kept(tmp_path, dtype):
    """Before: float pixels already in [0, 1] were divided by 255 again (max 0.0039)."""
    rng = np.random.default_rng(0)
    xtr, xte = rng.random((6, 5, 4)).astype(dtype), rng.random((3, 5, 4)).astype(dtype)
    xtr[0, 0, 0], xtr[0, 0, 1] = 0.0, 1.0
    d = data.load(_write(tmp_path, xtr, _labels(6), xte, _labels(3)))
    assert d.x_train.dtype == torch.float32 and d.input_shape == (1, 5, 4)
    assert torch.equal(d.x_train, torch.from_numpy(xtr.reshape(6, -1).astype(np.float32)))
    assert float(d.x_train.max()) == 1.0
    assert torch.equal(d.x_test, torch.from_numpy(xte.reshape(3, -1).astype(np.float32)))


def test_idx_float_pixels_outside_unit_range_are_refused(tmp_path):
    xtr = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32) * 255
    xtr[0, 0, 0] = 255.0
    msg = _refused(_write(tmp_path, xtr, _labels(6), xtr[:3], _labels(3)),
                   r"train-images-idx3-ubyte holds float pixels in \[.*, 255\]; .*\[0, 1\]")
    assert "divide by 255" in msg


def test_idx_integer_pixels_outside_0_255_are_refused(tmp_path):
    xtr = np.full((6, 2, 2), 7, np.int32)
    xtr[1, 1, 1] = 1000
    _refused(_write(tmp_path, xtr, _labels(6), xtr[:3], _labels(3)),
             r"integer pixels in \[7, 1000\]")


@pytest.mark.parametrize("part", ["train", "t10k"])
def test_idx_nan_and_inf_pixels_name_the_file_and_count(tmp_path, part):
    """Before: NaN/Inf pixels loaded, and training blamed the learning rate."""
    good = np.random.default_rng(0).random((6, 4, 4)).astype(np.float32)
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    bad[2, 1, 1] = np.inf
    bad[3, 2, 2] = -np.inf
    xtr, xte = (bad, good[:3]) if part == "train" else (good, bad[:4])
    _refused(_write(tmp_path, xtr, _labels(6), xte, _labels(len(xte))),
             rf"{part}-images-idx3-ubyte holds 1 NaN and 2 infinite pixel values")


# ==== IDX labels =============================================================================


def test_idx_stray_label_is_refused_not_a_201_class_model(tmp_path):
    """Before: one label 200 among 0..9 built a 201-class model."""
    y = _labels(40, 10)
    y[7] = 200
    msg = _refused(_write(tmp_path, _images(40, 4, 4), y, _images(10, 4, 4), _labels(10, 10)),
                   r"class 10 never occurs and the labels above it are 200 \(1 image\)")
    assert "relabel or drop" in msg and "201" not in msg


def test_idx_several_stray_labels_are_counted(tmp_path):
    y = _labels(40, 10)
    y[[1, 2, 3]] = 200
    y[4] = 17
    _refused(_write(tmp_path, _images(40, 4, 4), y, _images(10, 4, 4), _labels(10, 10)),
             r"17 \(1 image\), 200 \(3 images\)")


def test_idx_test_label_unknown_to_train_is_refused(tmp_path):
    yte = _labels(6)
    yte[5] = 9
    _refused(_write(tmp_path, _images(6, 4, 4), _labels(6), _images(6, 4, 4), yte),
             r"t10k labels hold 9 \(1 image\), classes that no train image has "
             r"\(train labels are 0\.\.2\)")


def test_idx_one_based_and_single_class_labels(tmp_path):
    _refused(_write(tmp_path / "a", _images(6, 4, 4), _labels(6) + 1, _images(3, 4, 4),
                    _labels(3) + 1), r"no image has label 0.*subtract 1")
    _refused(_write(tmp_path / "b", _images(6, 4, 4), np.zeros(6, np.uint8), _images(3, 4, 4),
                    np.zeros(3, np.uint8)), "at least 2 classes")


def test_idx_classes_inferred_from_train_labels(tmp_path):
    """K = max train label + 1 when every class 0..K-1 is in train (the test split may lack
    some)."""
    d = data.load(_write(tmp_path, _images(8, 4, 4), _labels(8, 4), _images(2, 4, 4),
                         np.array([0, 0], np.uint8)))
    assert d.num_classes == 4 and d.y_test.tolist() == [0, 0]


# ==== IDX shapes and sizes ===================================================================


def test_idx_colour_images_load_channels_first_and_last(tmp_path):
    """Before: (N, 3, H, W) and (N, H, W, 3) were refused as "labels do not match"."""
    chw_tr, chw_te = _images(6, 3, 5, 4, seed=1), _images(3, 3, 5, 4, seed=2)
    a = data.load(_write(tmp_path / "chw", chw_tr, _labels(6), chw_te, _labels(3)))
    hwc = [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in (chw_tr, chw_te)]
    b = data.load(_write(tmp_path / "hwc", hwc[0], _labels(6), hwc[1], _labels(3)))
    for d in (a, b):
        assert d.input_shape == (3, 5, 4) and d.x_train.shape == (6, 60)
        want = torch.from_numpy(chw_tr.reshape(6, -1) / 255.0).float()
        assert torch.allclose(d.x_train, want)  # channel-major, as the models reshape it
        assert torch.allclose(d.x_test, torch.from_numpy(chw_te.reshape(3, -1) / 255.0).float())


def test_idx_bad_image_rank_is_refused(tmp_path):
    _refused(_write(tmp_path, _images(6, 5, 4, 7), _labels(6), _images(3, 5, 4, 7), _labels(3)),
             r"\(N, H, W\), \(N, C, H, W\) or \(N, H, W, C\) with C = 1 or 3")


def test_idx_train_and_test_sizes_must_match(tmp_path):
    """Before: 8×8 train with 10×10 test loaded, and failed only after the first epoch."""
    _refused(_write(tmp_path, _images(6, 8, 8), _labels(6), _images(3, 10, 10), _labels(3)),
             r"train images are 1×8×8 \(C×H×W\) but t10k images are 1×10×10")


@pytest.mark.parametrize("part", ["train", "t10k"])
def test_idx_empty_split_is_refused(tmp_path, part):
    """Before: an empty test split failed inside numpy ("cannot reshape array of size 0")."""
    empty, full = _images(0, 8, 8), _images(6, 8, 8)
    xtr, ytr, xte, yte = ((empty, _labels(0), full, _labels(6)) if part == "train"
                          else (full, _labels(6), empty, _labels(0)))
    _refused(_write(tmp_path, xtr, ytr, xte, yte), rf"{part}-images-idx3-ubyte holds 0 images")


# ==== check_split ============================================================================


def _split(**changes) -> data.DataSplit:
    fields = dict(name="toy", x_train=torch.rand(6, 4), y_train=torch.tensor([0, 1, 2] * 2),
                  x_test=torch.rand(3, 4), y_test=torch.tensor([0, 1, 2]), num_classes=3,
                  input_shape=(1, 2, 2))
    fields.update(changes)
    return data.DataSplit(**fields)


def test_check_split_accepts_a_good_split():
    d = _split()
    assert data.check_split(d) is d
    assert data.check_split(_split(x_train=torch.rand(6, 1, 2, 2),
                                   x_test=torch.rand(3, 1, 2, 2))) is not None


@pytest.mark.parametrize("changes,match", [
    ({"x_test": torch.rand(0, 4), "y_test": torch.zeros(0, dtype=torch.int64)},
     r"the test split is empty \(0 samples\)"),
    ({"x_train": torch.rand(0, 4), "y_train": torch.zeros(0, dtype=torch.int64)},
     "the train split is empty"),
    ({"x_train": torch.tensor([[float("nan"), 0, 0, 0]] * 5 + [[float("inf"), 0, 0, 0]])},
     "train features hold 5 NaN and 1 infinite values"),
    ({"y_test": torch.tensor([0, 7, 7])}, r"test labels must be in 0\.\.2 .*7 \(2 samples\)"),
    ({"y_train": torch.tensor([0, 1, 2, -1, 0, 1])}, r"-1 \(1 sample\)"),
    ({"y_train": torch.tensor([0.0, 1, 2, 0, 1, 2])}, "labels must be integer class indices"),
    ({"y_train": torch.tensor([0, 1, 2])}, "6 train samples but labels of shape"),
    ({"num_classes": 1}, "at least|>= 2"),
    ({"x_test": torch.rand(3, 5)}, r"test features have shape \(3, 5\).*\(N, 4\)"),
    ({"x_train": torch.rand(6, 2, 2), "x_test": torch.rand(3, 4)}, "need the same shape"),
    ({"x_train": torch.randint(0, 255, (6, 4))}, "convert them to float32"),
])
def test_check_split_refuses(changes, match):
    with pytest.raises(ValueError, match=match) as e:
        data.check_split(_split(**changes))
    assert "\n" not in str(e.value) and "'toy'" in str(e.value)


def test_load_checks_every_loader(monkeypatch):
    bad = _split(x_test=torch.rand(0, 4), y_test=torch.zeros(0, dtype=torch.int64))
    monkeypatch.setattr(data, "LOADERS", {"bad": lambda: bad})
    with pytest.raises(ValueError, match="test split is empty"):
        data.load("bad")


# ==== the 2-D generators =====================================================================


@pytest.mark.parametrize("name", TOY)
@pytest.mark.parametrize("n", [1, 4, 9])
def test_toy_sets_need_ten_samples(name, n):
    """Before: n_samples=4 gave a test set of 0 points ("test acc 0.0000"), n_samples=1 NaNs."""
    with pytest.raises(ValueError, match=rf"{name} needs n_samples >= 10, got {n}"):
        data.load(name, n_samples=n)


@pytest.mark.parametrize("name", TOY)
def test_toy_sets_small_splits_hold_every_class(name):
    for seed in range(8):
        d = data.load(name, n_samples=10, seed=seed)
        assert len(d.x_train) == 8 and len(d.x_test) == 2
        assert set(d.y_train.tolist()) == {0, 1} and set(d.y_test.tolist()) == {0, 1}
        train = {tuple(r) for r in d.x_train.tolist()}
        assert not any(tuple(r) in train for r in d.x_test.tolist())


def test_toy_class_missing_from_a_split_is_named(monkeypatch):
    import onelip.data.synthetic as S

    monkeypatch.setattr(S, "checkerboard_label", lambda x, cells=4: np.zeros(len(x), np.int64))
    with pytest.raises(ValueError, match=r"checkerboard with n_samples=20 and seed=0 drew 0 "
                                         r"point\(s\) of class 1.*use more samples"):
        data.load("checkerboard", n_samples=20)


# ==== the CLI ================================================================================


@pytest.mark.parametrize("n", ["1", "4"])
def test_cli_two_moons_too_few_samples(tmp_path, capsys, n):
    rc = main(["train", "--data", "two-moons", "--n-samples", n, "--epochs", "1", "--quiet",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("onelip: error: two-moons needs n_samples >= 10"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_idx_stray_label(tmp_path, capsys):
    y = _labels(20, 10)
    y[3] = 200
    name = _write(tmp_path / "idx", _images(20, 8, 8), y, _images(10, 8, 8), _labels(10, 10))
    rc = main(["train", "--data", name, "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "200 (1 image)" in err and err.count("\n") == 1, err

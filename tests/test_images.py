# SPDX-License-Identifier: MIT
"""A user's images: image folders (PNG/JPEG written here) and .npz arrays."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from onelip.data import images


def _write(root, classes=("cat", "dog"), n=3, size=(8, 6), mode="RGB", ext=".png", seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                root / c / f"{i}{ext}")


def test_folder_decodes_labels_and_pixels_exactly(tmp_path):
    _write(tmp_path / "d")
    arr = images.read_image_folder(tmp_path / "d", cache_dir=tmp_path / "cache", progress=False)
    assert arr.x.shape == (6, 3, 8, 6) and arr.x.dtype == np.uint8
    assert arr.classes == ("cat", "dog") and list(arr.y) == [0, 0, 0, 1, 1, 1]
    png = np.asarray(Image.open(tmp_path / "d" / "dog" / "1.png"))  # (H, W, 3)
    assert np.array_equal(arr.x[4], png.transpose(2, 0, 1))


def test_folder_cache_is_reused_and_refreshed_when_a_file_changes(tmp_path, monkeypatch):
    _write(tmp_path / "d")
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    images.read_image_folder(tmp_path / "d", **kw)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    calls = []
    real = images._decode
    monkeypatch.setattr(images, "_decode", lambda *a: calls.append(1) or real(*a))
    images.read_image_folder(tmp_path / "d", **kw)
    assert calls == [], "unchanged files must come from the cache"
    img = tmp_path / "d" / "cat" / "0.png"
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(img)
    os.utime(img, ns=(1, 1))  # another mtime whatever the clock's resolution
    again = images.read_image_folder(tmp_path / "d", **kw)
    assert calls == [1] and int(again.x[0].max()) == 0
    assert not list((tmp_path / "d").rglob("*.npz")), "the cache must stay outside the data"


def test_folder_train_test_layout_and_datasplit(tmp_path):
    _write(tmp_path / "d" / "train", n=4, ext=".jpg")
    _write(tmp_path / "d" / "test", n=2, ext=".jpg", seed=1)
    split = images.load_folder(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert split.x_train.shape == (8, 3 * 8 * 6) and split.x_test.shape == (4, 3 * 8 * 6)
    assert split.input_shape == (3, 8, 6) and split.num_classes == 2
    assert split.x_train.dtype == split.x_test.dtype == torch.uint8  # pixels, float per batch


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("empty", "no class sub-folders"),
    ("empty-class", "holds no images"),
    ("sizes", r"different sizes.*resize=\(H, W\)"),
    ("unreadable", "cannot read image .*bad.png"),
])
def test_folder_errors_say_what_is_wrong(tmp_path, case, match):
    d = tmp_path / "d"
    if case != "missing":
        d.mkdir()
    if case == "empty-class":
        _write(d)
        (d / "bird").mkdir()
    if case == "sizes":
        _write(d)
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(d / "dog" / "odd.png")
    if case == "unreadable":
        _write(d)
        (d / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        images.read_image_folder(d, cache_dir=tmp_path / "c", progress=False)


def test_folder_resize_and_mixed_gray_colour(tmp_path, capsys):
    d = tmp_path / "d"
    _write(d, classes=("a",), size=(8, 8))
    _write(d, classes=("b",), size=(4, 4), mode="L")
    split = images.load_folder(d, resize=(6, 6), cache_dir=tmp_path / "c", progress=False)
    assert split.input_shape == (3, 6, 6)
    assert "converted to RGB" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_npz_uint8_and_float_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 5, 5, 3), dtype=np.uint8)
    y = np.arange(10) % 3
    xs = x if layout == "nhwc" else x.transpose(0, 3, 1, 2)
    np.savez(tmp_path / "u.npz", x=xs, y=y)
    np.savez(tmp_path / "f.npz", x=xs.astype(np.float32) / 255, y=y)
    a = images.load_npz(tmp_path / "u.npz")
    b = images.load_npz(tmp_path / "f.npz")
    assert a.input_shape == (3, 5, 5) and a.num_classes == 3
    assert a.x_train.dtype == b.x_train.dtype == torch.uint8
    assert np.array_equal(a.x_train.numpy(), b.x_train.numpy())
    assert np.array_equal(a.x_train[0].numpy().reshape(3, 5, 5), x[0].transpose(2, 0, 1))


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((4, 3, 3, 3), np.float32) + 2, "y": np.zeros(4, int)}, r"\[0, 1\]"),
    ({"x": np.full((4, 3, 3, 3), np.nan, np.float32), "y": np.zeros(4, int)}, "NaN"),
    ({"x": np.zeros((4, 3, 3, 3), np.uint8), "y": np.zeros(3, int)}, "shape"),
    ({"x": np.zeros((4, 3, 3, 3), np.uint8), "y": np.array([0, 1, 0.5, 1])}, "integer"),
    ({"x": np.zeros((4, 3, 3, 3), np.uint8)}, "no array y"),
    ({"x": np.zeros((4, 3, 3, 3), np.uint8), "y": np.array([0, 1, 200, 1])}, "0..K-1"),
])
def test_npz_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        images.load_npz(tmp_path / "bad.npz")

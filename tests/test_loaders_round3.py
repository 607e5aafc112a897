# SPDX-License-Identifier: MIT
"""Loaders that survive real folders (issue 23, items 6-10 and 17): images of more than 8
bits, a class named ``train``, channels-last arrays of small height, corrupt and odd files,
uint8 end to end, strict npz labels, files the folder loader skips. Tiny data made here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from onelip.data import images


def _rgb(root, classes=("cat", "dog"), n=2, size=(4, 4), seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")


def _read(root, tmp_path, **kw):
    return images.read_image_folder(root, cache_dir=tmp_path / "cache", progress=False, **kw)


# -- item 6: images of more than 8 bits ---------------------------------------------------

@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_images_are_scaled_by_their_bit_depth(tmp_path, ext):
    a = np.array([[0, 257, 32768, 65535], [1000, 20000, 40000, 60000]], dtype=np.uint16)
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.fromarray(a).save(tmp_path / "d" / c / f"0{ext}")
    assert Image.open(tmp_path / "d" / "a" / f"0{ext}").mode == "I;16"
    arr = _read(tmp_path / "d", tmp_path)
    want = np.round(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(arr.x[0, 0], want), "16-bit pixels must map to 0..255, not clip"
    assert any("16" in n for n in arr.notes)


def test_16_bit_image_is_resized_without_clipping(tmp_path):
    a = np.full((4, 4), 1000, dtype=np.uint16)  # 3.9 in 8 bits; clipped, it would be 255
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.fromarray(a).save(tmp_path / "d" / c / "0.png")
    arr = _read(tmp_path / "d", tmp_path, resize=(2, 2))
    assert arr.x.shape == (2, 1, 2, 2) and arr.x.ravel().tolist() == [4] * 8


def test_float_and_32_bit_images(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir(parents=True)
    Image.fromarray(np.full((2, 2), 0.5, np.float32)).save(tmp_path / "d" / "a" / "0.tif")
    Image.fromarray(np.full((2, 2), 65535, np.int32)).save(tmp_path / "d" / "b" / "0.tif")
    arr = _read(tmp_path / "d", tmp_path)
    assert arr.x[0].ravel().tolist() == [128] * 4 and arr.x[1].ravel().tolist() == [255] * 4
    Image.fromarray(np.full((2, 2), 70000, np.int32)).save(tmp_path / "d" / "b" / "0.tif")
    with pytest.raises(ValueError, match=r"0\.tif.*70000") as e:
        _read(tmp_path / "d", tmp_path)
    assert "\n" not in str(e.value)


# -- item 7: the split layout is read from the whole tree ---------------------------------

def test_a_class_named_train_is_a_class(tmp_path):
    _rgb(tmp_path / "d", classes=("train", "zebra"))
    split = images.load_folder(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert split.num_classes == 2 and len(split.x_train) == 4 and len(split.x_test) == 0
    assert images.folder_classes(tmp_path / "d") == ["train", "zebra"]
    _rgb(tmp_path / "e", classes=("test", "train"))  # both split names, both classes
    split = images.load_folder(tmp_path / "e", cache_dir=tmp_path / "c", progress=False)
    assert split.num_classes == 2 and len(split.x_train) == 4 and len(split.x_test) == 0


def test_split_layout_needs_class_folders_in_each_split(tmp_path):
    _rgb(tmp_path / "d" / "train", classes=("a", "b"))
    _rgb(tmp_path / "d" / "test", classes=("a", "b"), n=1)
    split = images.load_folder(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert (len(split.x_train), len(split.x_test)) == (4, 2)
    assert images.folder_classes(tmp_path / "d") == ["a", "b"]
    _rgb(tmp_path / "m" / "train", classes=("a", "b"))
    _rgb(tmp_path / "m", classes=("test",))  # test/ holds images directly
    with pytest.raises(ValueError, match=r"test holds images directly") as e:
        images.load_folder(tmp_path / "m", cache_dir=tmp_path / "c", progress=False)
    assert "\n" not in str(e.value)


# -- item 8: the layout of .npz images ------------------------------------------------------

def _nhwc(n=4, h=4, w=4, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def test_npz_channels_last_of_small_height_is_refused_as_ambiguous(tmp_path):
    x = _nhwc()  # (4, 4, 4, 3): 4×4 RGB, or 4 channels of 4×3
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"a\.npz.*layout") as e:
        images.load_npz(tmp_path / "a.npz")
    assert "\n" not in str(e.value) and "NHWC" in str(e.value)
    x = _nhwc(h=3, w=5)  # (4, 3, 5, 3): a 3×5 RGB image
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="layout"):
        images.load_npz(tmp_path / "b.npz")


@pytest.mark.parametrize("where", ["argument", "key"])
def test_npz_layout_decides_an_ambiguous_array(tmp_path, where):
    x = _nhwc()
    arrays = {"x": x, "y": np.array([0, 1, 0, 1]), "x_test": x[:2], "y_test": np.array([1, 0])}
    if where == "key":
        arrays["layout"] = np.array("NHWC")
    np.savez(tmp_path / "a.npz", **arrays)
    d = images.load_npz(tmp_path / "a.npz", **({"layout": "nhwc"} if where == "argument" else {}))
    assert d.input_shape == (3, 4, 4)
    got = d.x_train[1].reshape(3, 4, 4).numpy()
    assert np.array_equal(got, x[1].transpose(2, 0, 1).astype(got.dtype) / (
        1 if got.dtype == np.uint8 else 255))
    assert np.array_equal(d.x_test.reshape(2, -1).numpy(), d.x_train[:2].numpy())
    nchw = images.load_npz(tmp_path / "a.npz", layout="NCHW")
    assert nchw.input_shape == (4, 4, 3)


def test_npz_unambiguous_layouts_and_a_layout_that_does_not_fit(tmp_path):
    x = _nhwc(h=5, w=6)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 0, 1]))
    assert images.load_npz(tmp_path / "a.npz").input_shape == (3, 5, 6)
    np.savez(tmp_path / "b.npz", x=x.transpose(0, 3, 1, 2), y=np.array([0, 1, 0, 1]))
    assert images.load_npz(tmp_path / "b.npz").input_shape == (3, 5, 6)
    with pytest.raises(ValueError, match=r"NHWC.*6 channels"):
        images.load_npz(tmp_path / "b.npz", layout="NHWC")
    with pytest.raises(ValueError, match="'NHWC'.*'NCHW'"):
        images.load_npz(tmp_path / "b.npz", layout="HWC")


def test_cli_names_layout_for_an_ambiguous_npz_and_trains_with_it(tmp_path, capsys):
    from onelip.cli import main

    x = np.concatenate([_nhwc(n=6, seed=1) // 2, _nhwc(n=6, seed=2) // 2 + 128])
    np.savez(tmp_path / "a.npz", x=x, y=np.repeat([0, 1], 6))
    argv = ["train", "--data", f"npz:{tmp_path / 'a.npz'}", "--model", "mlp", "--width", "8",
            "--depth", "1", "--epochs", "1", "--val-fraction", "0.34", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "r0")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--layout NHWC" in err and "a.npz" in err
    assert main([*argv, "--layout", "nhwc", "--out", str(tmp_path / "r1")]) == 0
    import json

    cfg = json.loads((tmp_path / "r1" / "config.json").read_text())
    assert cfg["data"]["layout"] == "NHWC" and cfg["splits"]["input_shape"] == [3, 4, 4]


# -- item 9: corrupt and odd files are one line naming the file -----------------------------

def _npz_bytes(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "good.npz", x=x, y=np.arange(6) % 2)
    return (tmp_path / "good.npz").read_bytes()


def test_truncated_npz_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys):
    from onelip.cli import main

    raw = _npz_bytes(tmp_path)
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz.*corrupt.*np\.savez"):
        images.load_npz(tmp_path / "cut.npz")
    rc = main(["train", "--data", f"npz:{tmp_path / 'cut.npz'}", "--val-fraction", "0.3",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "cut.npz" in err and "Traceback" not in err


def test_npz_with_a_corrupt_member_names_the_file_and_the_array(tmp_path):
    raw = bytearray(_npz_bytes(tmp_path))
    at = raw.index(b"x.npy") + 200  # inside x's pixels: the CRC no longer matches
    raw[at] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad\.npz: array x cannot be read.*corrupt") as e:
        images.load_npz(tmp_path / "bad.npz")
    assert "\n" not in str(e.value)


def test_decompression_bomb_is_one_line_naming_the_image(tmp_path, monkeypatch):
    _rgb(tmp_path / "d", size=(16, 16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 256 pixels > 2 × 100: a "bomb"
    with pytest.raises(ValueError, match=r"image .*cat.0\.png is too large.*shrink it") as e:
        _read(tmp_path / "d", tmp_path)
    assert "\n" not in str(e.value)


def test_file_names_that_are_not_utf8(tmp_path):
    import os

    root = os.fsencode(tmp_path / "d")
    _rgb(tmp_path / "d")
    os.rename(os.path.join(root, b"cat", b"0.png"), os.path.join(root, b"cat", b"\xff0.png"))
    arr = _read(tmp_path / "d", tmp_path)  # an image's name needs no UTF-8
    assert arr.x.shape[0] == 4 and arr.classes == ("cat", "dog")
    os.rename(os.path.join(root, b"dog"), os.path.join(root, b"d\xffg"))
    with pytest.raises(ValueError, match=r"class folder .*d\\xffg.*not valid UTF-8.*rename"):
        _read(tmp_path / "d", tmp_path)


# -- item 17: npz labels as strict as idx:, files the folder loader skips -------------------

@pytest.mark.parametrize("y, y_test, match", [
    ([1, 2, 1, 2], None, r"no image has label 0.*subtract 1"),  # 1-based
    ([0, 2, 0, 2], None, r"class 1 never occurs"),  # a gap
    ([0, 1, 0, 1], [0, 2], r"y_test labels hold 2 \(1 image\).*no y image has"),  # unseen
    ([0, 0, 0, 0], None, r"at least 2 classes"),
])
def test_npz_labels_are_as_strict_as_idx(tmp_path, y, y_test, match):
    x = _nhwc(h=5, w=6)
    arrays = {"x": x, "y": np.array(y)}
    if y_test is not None:
        arrays.update(x_test=x[:2], y_test=np.array(y_test))
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(ValueError, match=match) as e:
        images.load_npz(tmp_path / "a.npz")
    assert "\n" not in str(e.value) and "a.npz" in str(e.value)


def test_gif_images_are_read_and_skipped_files_are_counted(tmp_path, capsys):
    _rgb(tmp_path / "d")
    rng = np.random.default_rng(3)
    gif = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(gif).convert("P").save(tmp_path / "d" / "cat" / "2.gif")
    (tmp_path / "d" / "cat" / "notes.txt").write_text("x")
    (tmp_path / "d" / "dog" / "x.heic").write_bytes(b"x")
    _rgb(tmp_path / "d" / "dog" / "more", classes=("sub",), n=1)  # dog/more/sub/0.png
    (tmp_path / "d" / "cat" / ".hidden.png").write_bytes(b"x")  # hidden: not counted
    split = images.load_folder(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(split.x_train) == 5  # 2 cats + the gif + 2 dogs
    err = capsys.readouterr().err
    want = np.asarray(Image.open(tmp_path / "d" / "cat" / "2.gif").convert("RGB"))
    assert np.array_equal(_read(tmp_path / "d", tmp_path).x[2], want.transpose(2, 0, 1))
    line = [ln for ln in err.splitlines() if "skipped" in ln]
    assert len(line) == 1 and "warning" in line[0]
    assert "2 files of other types (.heic, .txt;" in line[0]
    assert "1 sub-folder of class folders" in line[0] and "more" in line[0]


# -- item 10: uint8 end to end; what cannot fit is refused before allocating ---------------

def test_folder_and_npz_splits_keep_uint8_pixels(tmp_path):
    import torch

    from onelip import data

    _rgb(tmp_path / "d", n=3)
    d = data.load(f"folder:{tmp_path / 'd'}", cache_dir=tmp_path / "c", progress=False)
    assert d.x_train.dtype == d.x_test.dtype == torch.uint8  # 1 byte a pixel, not 4
    png = np.asarray(Image.open(tmp_path / "d" / "dog" / "1.png")).transpose(2, 0, 1)
    assert np.array_equal(d.x_train[4].reshape(3, 4, 4).numpy(), png)
    x = _nhwc(h=5, w=6)
    np.savez(tmp_path / "a.npz", x=x.astype(np.float32) / 255, y=np.array([0, 1, 0, 1]))
    n = data.load(f"npz:{tmp_path / 'a.npz'}")
    assert n.x_train.dtype == torch.uint8
    assert np.array_equal(n.x_train[1].reshape(3, 5, 6).numpy(), x[1].transpose(2, 0, 1))
    f = data.as_float(n.x_train)
    assert f.dtype == torch.float32 and torch.equal(f * 255, n.x_train.float())


def test_certify_refuses_uint8_pixels_and_the_cli_certifies_them_as_floats(tmp_path, capsys):
    import json

    import torch

    from onelip import certify, data, runs
    from onelip.cli import main

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    with pytest.raises(ValueError, match=r"uint8 pixels.*as_float") as e:
        certify.certified_accuracy(net, torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                                   torch.tensor([0, 1]), [0.1])
    assert "\n" not in str(e.value)
    x = np.concatenate([_nhwc(n=8, h=5, w=6, seed=1) // 4, _nhwc(n=8, h=5, w=6, seed=2) // 4 + 190])
    np.savez(tmp_path / "a.npz", x=x, y=np.repeat([0, 1], 8))
    run = tmp_path / "run"
    assert main(["train", "--data", f"npz:{tmp_path / 'a.npz'}", "--model", "mlp", "--width",
                 "8", "--depth", "1", "--epochs", "2", "--val-fraction", "0.25", "--quiet",
                 "--out", str(run)]) == 0
    assert main(["certify", str(run), "--split", "val", "--eps", "0.1"]) == 0
    capsys.readouterr()
    got = json.loads((run / "certify.json").read_text())
    model, _ = runs.load(run)
    d = data.validation_split(data.load(f"npz:{tmp_path / 'a.npz'}"), 0.25)
    want = certify.evaluate(model, data.as_float(d.x_val), d.y_val, eps=[0.1])
    res = got["results"][got["latest"]]
    assert res["n_test"] == 4 == want.n and res["clean"] == want.clean
    assert res["certified"]["0.1"] == want.certified[0.1]


def test_a_resize_that_cannot_fit_is_refused_before_decoding(tmp_path, monkeypatch):
    _rgb(tmp_path / "d")

    def no_resize(*a, **k):
        raise AssertionError("an image was resized before the size was checked")

    monkeypatch.setattr(Image.Image, "resize", no_resize)
    with pytest.raises(ValueError, match=r"4 images of 3×1000000×1000000 .*need 12.0 TB.*"
                                         r"resize=\(H, W\)") as e:
        _read(tmp_path / "d", tmp_path, resize=(10**6, 10**6))
    assert "\n" not in str(e.value)


def test_an_mlp_width_that_cannot_fit_is_refused_before_allocating(tmp_path, capsys):
    from onelip import models
    from onelip.cli import main

    with pytest.raises(ValueError, match=r"mlp: hidden widths \(2 × 10000000\).*need .* TB"):
        models.build("mlp", in_features=3072, hidden=[10**7, 10**7], num_outputs=10)
    np.savez(tmp_path / "a.npz", x=_nhwc(h=5, w=6), y=np.array([0, 1, 0, 1]))
    rc = main(["train", "--data", f"npz:{tmp_path / 'a.npz'}", "--model", "mlp", "--width",
               "10000000", "--depth", "2", "--val-fraction", "0.5", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "TB" in err and "pass smaller --width" in err

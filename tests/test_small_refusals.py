# SPDX-License-Identifier: MIT
"""Two inputs that failed silently or with a traceback (issue 23, closing items): a training
folder with a single class trained to a meaningless 0 % (the split counted two classes), and
``certify.estimate_lipschitz`` on an empty batch raised a bare RuntimeError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from onelip import certify
from onelip import nn as onn
from onelip.cli import main


def _folder(root, classes, n=4):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


def test_train_refuses_a_one_class_folder_in_one_line(tmp_path, capsys):
    d = _folder(tmp_path / "d", ["cat"])
    out = tmp_path / "run"
    rc = main(["train", "--model", "mlp", "--data", f"folder:{d}", "--val-fraction", "0.25",
               "--epochs", "1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("onelip: error: "), err
    assert "1 class" in err[0] and "own sub-folder" in err[0], err[0]
    assert not out.exists()


def test_train_still_takes_two_classes(tmp_path, capsys):
    d = _folder(tmp_path / "d", ["cat", "dog"])
    rc = main(["train", "--model", "mlp", "--data", f"folder:{d}", "--val-fraction", "0.25",
               "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("shape", [(0, 4), (4,), ()])
def test_estimate_lipschitz_refuses_no_points(shape):
    model = onn.Sequential(onn.OrthoLinear(4, 3))
    with pytest.raises(ValueError, match="at least one point"):
        certify.estimate_lipschitz(model, torch.zeros(shape))

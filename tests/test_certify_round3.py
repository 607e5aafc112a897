# SPDX-License-Identifier: MIT
"""What "held out" means to ``onelip certify`` (issue 23, items 1, 2 and 11), on tiny image
folders written here:

* the training folder given again under another spelling (``folder:D/``, ``D/.``, a relative
  path, a symbolic link) or copied is the run's own data: never certified as "test"; its
  ``--split val`` is the run's validation split;
* ``--split val`` / ``--split train`` of a folder that changed since training are refused,
  naming the change; a run that recorded no fingerprint gets a warning;
* a run trained with ``--resize`` certifies another folder of mixed sizes (the recorded resize
  is applied, or ``--resize`` given).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onelip.cli import main

TRAIN = ["--model", "mlp", "--width", "8", "--depth", "1", "--epochs", "1",
         "--batch-size", "8", "--quiet"]


def _folder(root: Path, *, n: int = 8, sizes=(6,), seed: int = 0,
            classes=("cat", "dog")) -> Path:
    """``n`` PNGs per class, a colour each, of the sizes ``sizes`` in turn."""
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            s = sizes[i % len(sizes)]
            a = rng.integers(0, 90, (s, s, 3), dtype=np.uint8)
            a[:, :, k] += 160
            Image.fromarray(a).save(root / c / f"{i:02d}.png")
    return root


def _error(capsys, rc: int) -> str:
    """The one stderr line of a refused command (exit status 2)."""
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onelip: error: "), lines
    return lines[0]


def _latest(path: Path) -> dict:
    rec = json.loads(path.read_text())
    return rec["results"][rec["latest"]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("ONELIP_CACHE", str(cache))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache) -> tuple[Path, Path]:
    """(training folder D, run) of a run trained on D with a validation split of 4."""
    root = tmp_path_factory.mktemp("own")
    d = _folder(root / "D")
    run = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ONELIP_CACHE", str(cache))
        assert main(["train", "--data", f"folder:{d}", "--val-fraction", "0.25", *TRAIN,
                     "--out", str(run)]) == 0
    return d, run


def _spellings(d: Path, tmp_path: Path, monkeypatch) -> dict[str, str]:
    link = tmp_path / "link"
    link.symlink_to(d, target_is_directory=True)
    monkeypatch.chdir(d.parent)
    return {"slash": f"folder:{d}/", "dot": f"folder:{d}/.", "relative": f"folder:{d.name}",
            "dotdot": f"folder:{d}/../{d.name}", "link": f"folder:{link}"}


@pytest.mark.parametrize("spelling", ["slash", "dot", "relative", "dotdot", "link"])
def test_the_training_folder_spelled_otherwise_is_not_test_data(trained, spelling, tmp_path,
                                                                 monkeypatch, capsys):
    d, run = trained
    data = _spellings(d, tmp_path, monkeypatch)[spelling]
    out = tmp_path / "c.json"
    rc = main(["certify", str(run), "--data", data, "--eps", "0.1", "--out", str(out)])
    line = _error(capsys, rc)
    assert "trained on" in line and "not held-out test data" in line and "--split val" in line
    assert not out.exists()
    # --split val is the run's validation split, reported as such, under the run's name
    assert main(["certify", str(run), "--data", data, "--split", "val", "--eps", "0.1",
                 "--out", str(out)]) == 0
    assert "the run's validation split: held out from training" in capsys.readouterr().out
    res = _latest(out)
    assert res["n_test"] == json.loads((run / "config.json").read_text())["splits"]["n_val"] == 4
    assert res["settings"]["data"] == f"folder:{d}" and res["settings"]["split"] == "val"


def test_a_copy_of_the_training_folder_is_the_runs_own(trained, tmp_path, capsys):
    d, run = trained
    copy = tmp_path / "E"
    shutil.copytree(d, copy)
    rc = main(["certify", str(run), "--data", f"folder:{copy}", "--eps", "0.1", "--out",
               str(tmp_path / "c.json")])
    assert "a copy of the data the run was trained on" in _error(capsys, rc)
    assert main(["certify", str(run), "--data", f"folder:{copy}", "--split", "val",
                 "--eps", "0.1", "--out", str(tmp_path / "c.json")]) == 0
    assert _latest(tmp_path / "c.json")["n_test"] == 4


def test_another_folder_is_certified_whole_as_test(trained, tmp_path, capsys):
    _, run = trained
    other = _folder(tmp_path / "F", n=3, seed=1)
    assert main(["certify", str(run), "--data", f"folder:{other}", "--eps", "0.1", "--out",
                 str(tmp_path / "c.json")]) == 0
    res = _latest(tmp_path / "c.json")
    assert res["n_test"] == 6 and res["split"] == "test" and "split" not in res["settings"]


def test_split_val_of_a_changed_folder_is_refused_naming_the_change(tmp_path, capsys):
    d = _folder(tmp_path / "G")
    run = tmp_path / "run"
    assert main(["train", "--data", f"folder:{d}", "--val-fraction", "0.25", *TRAIN,
                 "--out", str(run)]) == 0
    cert = ["certify", str(run), "--split", "val", "--eps", "0.1"]
    assert main(cert) == 0
    capsys.readouterr()
    _folder(tmp_path / "extra", n=3, seed=2)
    for f in sorted((tmp_path / "extra" / "cat").iterdir()):
        shutil.copy(f, d / "cat" / f"new-{f.name}")
    line = _error(capsys, main(cert))
    assert "changed since the run was trained" in line
    assert "3 images added since training (cat 8 -> 11)" in line
    for f in (d / "cat").glob("new-*"):
        f.unlink()
    (d / "dog" / "00.png").unlink()
    assert "1 image removed since training (dog 8 -> 7)" in _error(capsys, main(cert))
    _folder(tmp_path / "G", seed=3)  # the same files and labels, other pixels
    line = _error(capsys, main(cert))
    assert "validation images changed" in line
    assert "training images changed" in _error(
        capsys, main([*cert[:2], "--split", "train", "--eps", "0.1"]))


def test_a_run_without_a_fingerprint_warns_that_val_cannot_be_verified(trained, tmp_path,
                                                                       capsys):
    _, run = trained
    old = tmp_path / "old"
    shutil.copytree(run, old)
    cfg = json.loads((old / "config.json").read_text())
    for key in ("fingerprint", "source"):
        cfg["splits"].pop(key)
    (old / "config.json").write_text(json.dumps(cfg))
    assert main(["certify", str(old), "--split", "val", "--eps", "0.1"]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "cannot be verified" in warnings[0]


def test_a_run_trained_with_resize_certifies_a_folder_of_mixed_sizes(tmp_path, capsys):
    d = _folder(tmp_path / "M", sizes=(6, 8))
    run = tmp_path / "run"
    assert main(["train", "--data", f"folder:{d}", "--resize", "4", "4", "--val-fraction",
                 "0.25", *TRAIN, "--out", str(run)]) == 0
    other = _folder(tmp_path / "N", n=3, sizes=(5, 9), seed=1)
    out = tmp_path / "c.json"
    assert main(["certify", str(run), "--data", f"folder:{other}", "--eps", "0.1",
                 "--out", str(out)]) == 0
    assert _latest(out)["n_test"] == 6
    assert main(["certify", str(run), "--data", f"folder:{other}", "--resize", "4", "4",
                 "--eps", "0.1", "--out", str(out)]) == 0
    line = _error(capsys, main(["certify", str(run), "--data", f"folder:{other}",
                                "--resize", "5", "5", "--eps", "0.1"]))
    assert "same shape" in line and "--resize" in line
    line = _error(capsys, main(["certify", str(run), "--split", "val", "--resize", "5", "5"]))
    assert "resized to 4 4" in line
    assert main(["certify", str(run), "--split", "val", "--eps", "0.1"]) == 0


def test_resize_is_refused_for_data_that_are_not_an_image_folder(trained, tmp_path, capsys):
    _, run = trained
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 6, 6, 3), np.uint8), y=np.array([0, 1, 0, 1]))
    line = _error(capsys, main(["certify", str(run), "--data", f"npz:{tmp_path / 'a.npz'}",
                                "--resize", "4", "4"]))
    assert "--resize is for image folders" in line

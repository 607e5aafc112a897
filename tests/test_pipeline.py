# SPDX-License-Identifier: MIT
"""The training pipeline (issue 11, "The pipeline"): data kept on the device as it comes (uint8
images become float per batch), fit from a Dataset or DataLoader, augmentation per batch, a
validation split measured every epoch (never the test split), the training accuracy from the
batches already computed, warm-up, gradient clipping, the divergence guard, --amp/--compile,
and the CLI on a tiny image folder written here (train, then certify on another folder or
split). Everything on small data; the whole file takes a few seconds."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import onelip.nn as onn
from onelip import data as datasets
from onelip import losses
from onelip.cli import main
from onelip.data import DataSplit
from onelip.train import TrainConfig, TrainingDiverged, _exact_uint8, _make_optimizer, fit


def _images(n: int = 48, seed: int = 0) -> DataSplit:
    """4×4 colour images, two classes told apart by their red channel; float k/255."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randint(0, 120, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    x[:, 0] += (y * 120).to(torch.uint8)[:, None, None]
    xf = x.reshape(n, -1).to(torch.float32).div_(255.0)
    return DataSplit("tiny-images", xf, y, xf[:8], y[:8], 2, (3, 4, 4))


def _net() -> nn.Module:
    return onn.Sequential(nn.Flatten(), onn.OrthoLinear(48, 16), onn.MaxMin(),
                          onn.OrthoLinear(16, 1))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


CFG = dict(epochs=2, batch_size=16, lr=1e-2, seed=3)


def _one_line(capsys, rc: int, match: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("onelip: a ")]
    assert len(lines) == 1 and lines[0].startswith("onelip: error: "), lines
    assert match in lines[0], lines[0]
    return lines[0]


# ==== data as it comes ======================================================================


def test_images_are_kept_as_uint8_and_every_source_gives_the_same_weights():
    """k/255 float images are held as uint8 (4× less memory) and divided per batch, bit for
    bit the same as float; a uint8 TensorDataset, a plain Dataset (fit's own seeded order) and
    a DataSplit train to identical weights."""
    d = _images()
    small = _exact_uint8(d.x_train)
    assert small is not None and small.dtype == torch.uint8
    assert torch.equal(small.to(torch.float32).div_(255.0), d.x_train)
    assert _exact_uint8(d.x_train + 1e-3) is None  # not exact: kept as float
    loss = losses.HingeLoss(0.5)
    torch.manual_seed(0)
    init = _net()
    ref = copy.deepcopy(init)
    fit(ref, d, loss, TrainConfig(**CFG), progress=False)
    x8 = small.reshape(-1, 3, 4, 4)

    class Plain(Dataset):  # per-sample access, as a user's own data set
        def __len__(self):
            return len(x8)

        def __getitem__(self, i):
            return x8[i], d.y_train[i]

    for source in (TensorDataset(x8, d.y_train), Plain()):
        other = copy.deepcopy(init)
        fit(other, source, loss, TrainConfig(**CFG), progress=False)
        assert _same(ref, other), type(source).__name__


def test_a_user_dataloader_streams_and_needs_image_batches_to_augment():
    d = _images()
    loader = DataLoader(TensorDataset(d.x_train.reshape(-1, 3, 4, 4), d.y_train),
                        batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    hist = fit(_net(), loader, losses.HingeLoss(0.5),
               TrainConfig(**CFG, augment=("flip",)), val=(d.x_test, d.y_test), progress=False)
    assert len(hist) == 2 and "val_acc" in hist[-1] and "test_acc" not in hist[-1]
    flat = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=16)
    with pytest.raises(ValueError, match=r"needs image batches \(N, C, H, W\)"):
        fit(_net(), flat, losses.HingeLoss(0.5), TrainConfig(**CFG, augment=("crop",)),
            progress=False)


def test_augmentation_is_refused_for_data_that_are_not_images(capsys, tmp_path):
    moons = datasets.load("two-moons", n_samples=100)
    model = onn.Sequential(onn.OrthoLinear(2, 8), onn.MaxMin(), onn.OrthoLinear(8, 1))
    with pytest.raises(ValueError, match="augmentation .* is for images"):
        fit(model, moons, losses.HingeLoss(0.5), TrainConfig(augment=("crop",)),
            progress=False)
    with pytest.raises(ValueError, match="unknown augmentation"):
        TrainConfig(augment=("rotate",))
    rc = main(["train", "--data", "two-moons", "--n-samples", "100", "--augment", "flip",
               "--quiet", "--out", str(tmp_path / "r")])
    _one_line(capsys, rc, "--augment is for images")
    assert not (tmp_path / "r").exists()


# ==== what is measured every epoch ==========================================================


def test_validation_split_is_stratified_fixed_and_disjoint():
    d = datasets.digits()
    a = datasets.validation_split(d, 0.1)
    b = datasets.validation_split(d, 0.1)
    assert torch.equal(a.x_val, b.x_val) and len(a.x_train) + len(a.x_val) == len(d.x_train)
    counts = torch.bincount(a.y_val, minlength=10).float()
    expected = torch.bincount(d.y_train, minlength=10).float() * 0.1
    assert (counts - expected).abs().max() <= 1  # stratified: round(0.1 · n_c) per class
    tr, va = datasets.validation_indices(d.y_train, 0.1)
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(a.x_test, d.x_test)  # the test split is left alone
    with pytest.raises(ValueError, match="already has a validation part"):
        datasets.validation_split(a, 0.1)


def test_an_epoch_is_one_training_pass_plus_validation_and_never_the_test_split():
    """Issue 11 measured 233 s vs 113 s for the extra eval passes: now the training accuracy
    comes from the training batches (forwards in train mode only, one per step), eval-mode
    forwards are the validation set's, and the test split is not touched."""
    d = _images(64)
    net = _net()
    modes: list[bool] = []
    net.register_forward_hook(lambda m, i, o: modes.append(m.training))
    poisoned = DataSplit(d.name, d.x_train, d.y_train, torch.full_like(d.x_test, float("nan")),
                         d.y_test, 2, d.input_shape)  # NaN test data: never read
    hist = fit(net, poisoned, losses.HingeLoss(0.5),
               TrainConfig(**CFG, val_fraction=0.25), progress=False, final_test=False)
    steps = math.ceil(48 / 16)  # 64 - 16 validation samples
    assert modes.count(True) == 2 * steps
    assert modes.count(False) == 2  # one validation batch an epoch
    assert all("val_acc" in r and "val_loss" in r and "test_acc" not in r for r in hist)
    assert all(0 <= r["train_acc"] <= 1 for r in hist)
    last = fit(_net(), d, losses.HingeLoss(0.5), TrainConfig(**CFG), progress=False)
    assert "test_acc" in last[-1] and "test_acc" not in last[0]  # once, at the end


# ==== warm-up, clipping, the divergence guard ===============================================


def test_warmup_ramps_the_learning_rate_and_sets_the_onecycle_rise():
    model = nn.Linear(2, 1)
    cfg = TrainConfig(epochs=4, lr=0.1, schedule="cosine", warmup_epochs=1)
    opt, sched = _make_optimizer(model, cfg, steps=40, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[:10] == sorted(lrs[:10]) and lrs[10:] == sorted(lrs[10:], reverse=True)
    opt, sched = _make_optimizer(model, TrainConfig(epochs=4, lr=0.1, warmup_epochs=2),
                                 steps=40, steps_per_epoch=10)
    peak = []
    for _ in range(40):
        peak.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert int(np.argmax(peak)) in (19, 20)  # one-cycle's rise: half the run


def test_gradient_clipping_bounds_each_step():
    d = _images()
    torch.manual_seed(0)
    init = _net()
    moved = {}
    for clip in (0.0, 1e-6):
        m = copy.deepcopy(init)
        fit(m, d, losses.HingeLoss(0.5), TrainConfig(**{**CFG, "epochs": 1}, optimizer="sgd",
                                                     schedule="constant", grad_clip=clip),
            progress=False)
        moved[clip] = max((a - b).abs().max().item() for a, b in
                          zip(m.parameters(), init.parameters()))
    assert moved[1e-6] < 1e-4 < moved[0.0]


def test_divergence_guard_stops_a_run_at_chance_with_an_exploded_loss(tmp_path, capsys):
    """`--lr 1e6` ended with rc 0 at 10 % accuracy; now exit status 2, one line, no run."""
    rc = main(["train", "--data", "digits", "--width", "32", "--depth", "1", "--epochs", "2",
               "--lr", "1e6", "--quiet", "--out", str(tmp_path / "r")])
    line = _one_line(capsys, rc, "training diverged at epoch 1 step")
    assert "lower --lr (now 1e+06)" in line
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())


def test_divergence_guard_stops_at_the_step_of_a_non_finite_loss():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, out, y):
            self.calls += 1
            value = losses.HingeLoss(0.5)(out, y)
            return value * float("nan") if self.calls == 5 else value

    with pytest.raises(TrainingDiverged, match=r"at epoch 2 step 2 \(loss nan\)"):
        fit(_net(), _images(), Boom(), TrainConfig(**CFG), progress=False)


# ==== amp, compile, --nproc =================================================================


def test_amp_is_refused_on_a_cpu_without_bf16_and_compile_trains_through_torch_compile(
        monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("onelip.train.config.bf16_support",
                        lambda device: (False, "this CPU has no native bf16 arithmetic"))
    with pytest.raises(ValueError, match="refused on cpu, not ignored: this CPU has no"):
        TrainConfig(amp=True)
    rc = main(["train", "--data", "two-moons", "--n-samples", "100", "--amp", "--quiet",
               "--out", str(tmp_path / "r")])
    _one_line(capsys, rc, "--amp (bf16 autocast) is refused on cpu, not ignored")
    seen = []
    real = torch.compile

    def spy(module, **kw):
        seen.append(module)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", spy)
    net = _net()
    fit(net, _images(), losses.HingeLoss(0.5), TrainConfig(**CFG, compile=True),
        progress=False)
    assert seen == [net]


def test_nproc_above_the_cores_is_refused_before_launching(tmp_path, capsys, monkeypatch):
    """`--nproc 64` on 2 cores ran for minutes without a word."""
    monkeypatch.setattr("onelip.cli.train.launch",
                        lambda *a, **k: pytest.fail("launched processes"))
    rc = main(["train", "--data", "two-moons", "--n-samples", "100", "--nproc", "64",
               "--quiet", "--out", str(tmp_path / "r")])
    _one_line(capsys, rc, "--nproc 64 is more processes than the")


# ==== the CLI on an image folder ============================================================


def _folder(root: Path, classes=("cat", "dog"), n: int = 12, size: int = 8, seed: int = 0):
    """A few PNG and JPEG files per class, a colour each (so a small net learns them)."""
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            a[:, :, k % 3] += 160
            Image.fromarray(a).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    return {"train": _folder(tmp_path / "imgs"),
            "other": _folder(tmp_path / "more", n=6, seed=1),
            "classes": _folder(tmp_path / "birds", classes=("cat", "owl"), n=4),
            "shape": _folder(tmp_path / "big", n=4, size=16)}


def test_cli_trains_lipconvnet_on_a_folder_and_certifies_other_splits_and_folders(
        folders, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", f"folder:{folders['train']}", "--model", "lipconvnet",
               "--set", "preset=xs", "--set", "blocks=2", "--augment", "crop,flip",
               "--val-fraction", "0.25", "--epochs", "2", "--batch-size", "8", "--lr", "0.01",
               "--quiet", "--out", str(out)])
    std = capsys.readouterr()
    assert rc == 0, std.err
    assert "val acc" in std.out and "test acc" not in std.out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["splits"]["classes"] == ["cat", "dog"] and cfg["splits"]["n_val"] == 6
    assert cfg["train"]["augment"] == ["crop", "flip"]
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert all("val_acc" in r and "test_acc" not in r for r in hist)
    for argv, n in (["--split", "val"], 6), (["--split", "train"], 18), \
            (["--data", f"folder:{folders['other']}"], 12):
        assert main(["certify", str(out), "--eps", "0.1", *argv]) == 0
        assert f"({n} points)" in capsys.readouterr().out.replace("\n", " "), argv
    capsys.readouterr()
    for argv, match in [
        ([], "the test split of folder:"),  # none: --split val, or another folder
        (["--data", f"folder:{folders['classes']}"], "has classes cat, owl, but the run was "
                                                     "trained on cat, dog"),
        (["--data", f"folder:{folders['shape']}"], "has samples of shape (3, 16, 16)"),
        (["--data", f"folder:{folders['other']}", "--split", "val"], "--split val is the "),
    ]:
        rc = main(["certify", str(out), "--eps", "0.1", *argv])
        _one_line(capsys, rc, match)


def test_cli_a_folder_without_a_test_split_needs_a_validation_split(folders, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr("onelip.train.fit", lambda *a, **k: pytest.fail("training started"))
    base = ["train", "--data", f"folder:{folders['train']}", "--quiet"]
    rc = main([*base, "--out", str(tmp_path / "r")])
    _one_line(capsys, rc, "has no test split: pass --val-fraction F")
    rc = main([*base, "--val-fraction", "0.2", "--eval-test", "--out", str(tmp_path / "r")])
    _one_line(capsys, rc, "--eval-test: folder:")
    assert not (tmp_path / "r").exists()


def test_cli_eval_test_reports_the_test_split_once_at_the_end(tmp_path, capsys):
    rc = main(["train", "--data", "two-moons", "--n-samples", "200", "--width", "8",
               "--depth", "1", "--epochs", "2", "--eval-test", "--quiet",
               "--out", str(tmp_path / "r")])
    assert rc == 0
    assert "test acc" in capsys.readouterr().out
    hist = json.loads((tmp_path / "r" / "metrics.json").read_text())["history"]
    assert "test_acc" not in hist[0] and "test_acc" in hist[1]

# SPDX-License-Identifier: MIT
"""`onelip reproduce snowflake|memorization --quick`: results.json, figures, verdict rows; the
exact snowflake geometry; random labels; `--data folder:DIR`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onelip.cli import main
from onelip.experiments import memorization, snowflake
from onelip.experiments.report import CLAIMS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VERDICT_FIELDS = {"claim", "research", "measured", "agree"}


def _claim(out, name):
    return json.loads((out / "results.json").read_text())[name]


def _check_verdicts(r):
    assert r["verdicts"], "no verdict rows"
    for v in r["verdicts"]:
        assert set(v) == VERDICT_FIELDS, v
        assert isinstance(v["agree"], bool)


def test_both_claims_are_registered_and_in_all():
    assert "snowflake" in CLAIMS and "memorization" in CLAIMS
    from onelip.cli.reproduce import _CHOICES

    assert {"snowflake", "memorization", "all"} <= set(_CHOICES)


# ==== snowflake =============================================================================


def test_koch_snowflake_has_768_segments_and_the_koch_area():
    poly = snowflake.koch_snowflake(4)
    assert poly.shape == (768, 2)
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    triangle = 3 * np.sqrt(3) / 4  # circumradius 1
    # area after n iterations: A0 (1 + 3/5 (1 − (4/9)^n)); bumps outwards
    assert area == pytest.approx(triangle * (1 + 0.6 * (1 - (4 / 9) ** 4)), rel=1e-9)


def test_signed_distance_is_exact_on_a_square():
    square = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    pts = np.array([[0.0, 0.0], [0.5, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, -0.9]])
    sd = snowflake.signed_distance(pts, square)
    np.testing.assert_allclose(sd, [1.0, 0.5, -1.0, -np.sqrt(2), 0.1], atol=1e-12)


def test_snowflake_quick_writes_results_figure_and_verdicts(tmp_path):
    out = tmp_path / "claims"
    assert main(["reproduce", "snowflake", "--quick", "--out", str(out), "--quiet"]) == 0
    r = _claim(out, "snowflake")
    assert r["mode"] == "quick"
    fit = r["fit"]
    assert fit["pixels"] == 100 * 100 and r["config"]["grid"] == 100
    assert 0.0 <= fit["pixel_acc"] <= 1.0 and -1.0 <= fit["corr"] <= 1.0
    assert fit["errors"] == round((1 - fit["pixel_acc"]) * fit["pixels"])
    assert fit["corr"] > 0.5, "even the quick fit follows the signed distance"
    assert 0.3 < fit["inside_fraction"] < 0.4  # snowflake area 2.078 of the 5.76 square
    assert len(fit["train_acc_curve"]) == r["config"]["epochs"]
    _check_verdicts(r)
    assert any("Fig. 1a" in v["claim"] for v in r["verdicts"])
    assert any("100×100" in v["measured"] for v in r["verdicts"]), "protocol in the row"
    assert (out / "snowflake.png").read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    assert "![snowflake](snowflake.png)" in report and "Snowflake" in report
    assert list((out / "snowflake" / "runs").glob("*.json"))


@pytest.mark.parametrize("focus", [0.0, 0.5])
def test_train_focused_records_the_focus_set_and_the_accuracy_it_reaches(focus):
    from onelip.experiments import common

    cfg = snowflake.SnowflakeConfig(grid=30, hidden=(32, 32), group_size=4, epochs=6,
                                    batch_size=64, lr=5e-3, focus=focus)
    pts = snowflake.pixel_grid(cfg)
    sd = snowflake.signed_distance(pts, snowflake.koch_snowflake(2))
    x = torch.as_tensor(pts, dtype=torch.float32)
    y = torch.as_tensor((sd > 0).astype(np.int64))
    model = common.lipschitz_mlp(2, 1, cfg.hidden, group_size=cfg.group_size, seed=0)
    seen = []
    hist = snowflake.train_focused(model, x, y, cfg, on_epoch=seen.append)
    assert seen == hist and [r["epoch"] for r in hist] == list(range(1, 7))
    n = x.shape[0]
    for r in hist:
        assert 0 <= r["acc"] <= 1 and r["loss"] == r["loss"]  # not NaN
        if focus:
            assert 0 < r["focused"] < n  # far pixels leave the focus set
        else:
            assert r["focused"] == n
    # the last record is the accuracy of the trained model (its training forward)
    with torch.no_grad():
        f = model(x).reshape(-1)
    assert hist[-1]["acc"] == pytest.approx(float(((f > 0) == (y > 0)).float().mean()))
    assert hist[-1]["acc"] > max(y.float().mean(), 1 - y.float().mean()) + 0.05, \
        "better than a constant classifier"


def test_focus_outside_its_range_is_refused():
    with pytest.raises(ValueError, match="focus in"):
        snowflake.SnowflakeConfig(focus=1.0)
    with pytest.raises(ValueError, match="loss 'hkr' or 'mse'"):
        snowflake.SnowflakeConfig(loss="l1")


def test_mse_regresses_f_onto_the_signed_distance():
    from onelip.experiments import common

    cfg = snowflake.SnowflakeConfig(grid=30, hidden=(32, 32), epochs=8, batch_size=64,
                                    loss="mse", focus=0.0)
    pts = snowflake.pixel_grid(cfg)
    sd = snowflake.signed_distance(pts, snowflake.koch_snowflake(2))
    x = torch.as_tensor(pts, dtype=torch.float32)
    y = torch.as_tensor((sd > 0).astype(np.int64))
    s = torch.as_tensor(sd, dtype=torch.float32)
    model = common.lipschitz_mlp(2, 1, cfg.hidden, group_size=cfg.group_size, seed=0)
    with torch.no_grad():
        before = float(((model(x).reshape(-1) - s) ** 2).mean())
    hist = snowflake.train_focused(model, x, y, cfg, target=s)
    with torch.no_grad():
        after = float(((model(x).reshape(-1) - s) ** 2).mean())
    assert after < 0.2 * before and hist[-1]["loss"] < hist[0]["loss"]
    with pytest.raises(ValueError, match="needs target"):
        snowflake.train_focused(model, x, y, cfg)


def test_set_overrides_a_preset_field_and_is_recorded(tmp_path):
    out = tmp_path / "claims"
    argv = ["reproduce", "snowflake", "--quick", "--set", "grid=40", "--set", "hidden=16,16",
            "--set", "epochs=2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    r = _claim(out, "snowflake")
    assert r["config"]["grid"] == 40 and r["config"]["hidden"] == [16, 16]
    assert r["fit"]["pixels"] == 40 * 40 and len(r["fit"]["train_acc_curve"]) == 2
    assert r["mode"] == "quick" and r["overrides"] == ["epochs", "grid", "hidden"]
    report = (out / "report.md").read_text()
    assert "*Mode: quick preset with epochs, grid, hidden set;" in report
    assert "QUICK MODE" not in report  # a preset with fields set is not the smoke preset
    # the same settings again: the one sub-run is loaded, not recomputed
    assert main(argv) == 0
    assert _claim(out, "snowflake")["subruns"]["cached"] == 1


# ==== memorization ==========================================================================


def test_random_labels_keep_class_counts_and_break_the_labels():
    y = torch.arange(1000) % 10
    r = memorization.random_labels(y, seed=0)
    assert torch.equal(torch.bincount(r, minlength=10), torch.bincount(y, minlength=10))
    assert (r == y).float().mean() < 0.2
    assert torch.equal(r, memorization.random_labels(y, seed=0))


def test_memorization_quick_writes_results_figure_and_verdicts(tmp_path):
    out = tmp_path / "claims"
    assert main(["reproduce", "memorization", "--quick", "--out", str(out), "--quiet"]) == 0
    r = _claim(out, "memorization")
    assert r["mode"] == "quick"
    cfg = r["config"]
    for kind in ("lipschitz", "unconstrained"):
        run = r["runs"][kind]
        assert run["n_train"] == cfg["n_train"] == 300
        assert len(run["curve"]) == cfg["epochs"]
        assert 0.0 <= run["train_acc"] <= 1.0
    assert r["runs"]["lipschitz"]["train_acc"] > 0.5, "the quick 1-Lip MLP fits most labels"
    _check_verdicts(r)
    rows = " ".join(v["measured"] for v in r["verdicts"])
    assert "300 training images" in rows and "the paper: 500" in rows
    assert "99.96" in " ".join(v["research"] for v in r["verdicts"])
    assert (out / "memorization.png").read_bytes()[:8] == PNG_MAGIC
    assert "![memorization](memorization.png)" in (out / "report.md").read_text()


@pytest.mark.parametrize("claim", ["memorization", "all"])
def test_full_memorization_without_data_fails_before_training(claim, tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["reproduce", claim, "--out", str(out), "--quiet"])
    assert rc != 0
    assert "--data folder:DIR" in capsys.readouterr().err
    assert not (out / "results.json").exists(), "nothing may run before the refusal"


def test_memorization_reads_an_image_folder_given_by_data(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    gen = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            a = gen.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / "imgs" / c / f"{i}.png")
    out = tmp_path / "claims"
    assert main(["reproduce", "memorization", "--quick", "--out", str(out), "--quiet",
                 "--data", f"folder:{tmp_path / 'imgs'}"]) == 0
    r = _claim(out, "memorization")
    assert r["config"]["data"].startswith("folder:")
    assert r["runs"]["lipschitz"]["n_train"] == 24
    assert r["runs"]["lipschitz"]["num_classes"] == 2
    assert r["runs"]["lipschitz"]["input_features"] == 8 * 8 * 3
    assert "CIFAR-10 JPEG" in r["verdicts"][0]["measured"]


def test_each_mlp_trains_at_its_own_learning_rate(tmp_path, monkeypatch):
    """``lr`` is the 1-Lipschitz MLP's, ``plain_lr`` the unconstrained MLP's: changing one
    reruns only that network's sub-run."""
    import onelip.train

    seen: list = []
    fit = onelip.train.fit

    def spy(model, data, loss, cfg, **kw):
        seen.append((type(loss).__name__, cfg.lr))
        return fit(model, data, loss, cfg, **kw)

    monkeypatch.setattr(onelip.train, "fit", spy)
    out = tmp_path / "claims"
    base = ["reproduce", "memorization", "--quick", "--out", str(out), "--quiet",
            "--set", "n_train=60", "--set", "epochs=2", "--set", "hidden=16,16"]
    assert main([*base, "--set", "lr=2e-4", "--set", "plain_lr=7e-4"]) == 0
    assert sorted(seen) == [("CrossEntropyLoss", 7e-4), ("TauCrossEntropyLoss", 2e-4)]
    seen.clear()
    assert main([*base, "--set", "lr=2e-4", "--set", "plain_lr=5e-4"]) == 0
    assert seen == [("CrossEntropyLoss", 5e-4)], "the 1-Lipschitz sub-run came from the cache"
    r = _claim(out, "memorization")
    assert r["subruns"]["ran"] == 1 and r["subruns"]["cached"] == 1
    assert "the unconstrained MLP: 0.0005" in r["verdicts"][0]["measured"]

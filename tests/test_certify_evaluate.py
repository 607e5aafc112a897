# SPDX-License-Identifier: MIT
"""``onelip.certify.evaluate``: the numbers ``onelip certify`` saves, and the laws they obey
(certified ≤ clean, decreasing in ε, the attack never beats a certificate, the attacked points'
figures are those of the same points)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onelip import certify, runs
from onelip import data as datasets
from onelip import nn as lnn
from onelip.certify import AttackSettings, CertifyReport, evaluate
from onelip.cli import main

EPS = [0.05, 0.2, 0.5]
# An adversarial norm is an upper bound of the distance to the boundary, a certified radius a
# lower bound: the attack's points are float32 and bisected, so allow float32 rounding.
TOL_RADIUS = 1e-4  # relative


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A 10-class run (sklearn digits, 3 epochs) certified by the command with the attack."""
    out = tmp_path_factory.mktemp("evaluate") / "digits"
    assert main(["train", "--data", "digits", "--model", "mlp", "--width", "32", "--depth", "2",
                 "--epochs", "3", "--quiet", "--out", str(out)]) == 0
    assert main(["certify", str(out), "--eps", *map(str, EPS), "--attack",
                 "--attack-points", "30", "--attack-steps", "8"]) == 0
    return out


def _test_points(run: Path) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model, cfg = runs.load(run)
    extra = {k: v for k, v in cfg["data"].items() if k != "name"}
    data = datasets.load(cfg["data"]["name"], **extra)
    return model, data.x_test, data.y_test


def _saved(run: Path) -> dict:
    saved = json.loads((run / "certify.json").read_text())
    return saved["results"][saved["latest"]]


def test_evaluate_gives_the_numbers_the_command_saves(digits_run, capsys):
    """Same model, same points, same settings: the command's JSON is the report's, number
    for number (keys, ε spelled as strings, attack figures)."""
    capsys.readouterr()
    model, x, y = _test_points(digits_run)
    rep = evaluate(model, x, y, eps=EPS, attack=AttackSettings(points=30, steps=8))
    saved = _saved(digits_run)
    assert saved["settings"]["attack"] == {"points": 30, "steps": 8}
    assert saved.pop("split") == "test"  # the command names the split it certified
    mine = {"settings": saved["settings"], "data": "digits", **rep.to_dict()}
    assert mine == saved, f"evaluate: {mine}\ncommand: {saved}"
    assert rep.n == x.shape[0] == saved["n_test"]
    assert not rep.binary
    assert rep.certified_last_layer is not None  # an MLP ends in a linear layer


def test_certified_is_at_most_clean_and_falls_with_eps(digits_run):
    model, x, y = _test_points(digits_run)
    rep = evaluate(model, x, y, eps=[0.5, 0.0, 0.2, 0.2])  # unsorted, repeated, 0
    assert list(rep.certified) == [0.0, 0.2, 0.5], list(rep.certified)
    assert rep.certified[0.0] == rep.clean, (rep.certified[0.0], rep.clean)
    values = list(rep.certified.values())
    assert all(a >= b for a, b in zip(values, values[1:])), values
    assert 0.0 <= values[-1] <= rep.clean <= 1.0
    # the radii behind them: certified at ε ⇔ radius > ε, correct ⇔ radius > 0
    assert rep.radii.shape == (x.shape[0],)
    assert rep.clean == pytest.approx(float((rep.radii > 0).float().mean()))
    for e, v in rep.certified.items():
        assert v == pytest.approx(float((rep.radii > e).float().mean())), e
    # the last layer certifies at least as much as the margin (‖W‖₂ ≤ 1)
    for e in rep.certified:
        assert rep.certified_last_layer[e] >= rep.certified[e], (e, rep.certified_last_layer,
                                                                 rep.certified)
    assert rep.last_layer_median_gain >= 1.0 - 1e-6, rep.last_layer_median_gain


def test_the_attack_never_succeeds_on_a_certified_point(digits_run):
    """On the attacked points: empirical robust ≥ certified (the certificates are sound),
    ≤ clean; and every adversarial norm found is at least the point's certified radius."""
    model, x, y = _test_points(digits_run)
    rep = evaluate(model, x, y, eps=EPS, attack=AttackSettings(points=40, steps=10))
    att = rep.attack
    assert att.points == 40
    r = rep.radii[:40]
    assert att.clean_same_points == pytest.approx(float((r > 0).float().mean()))
    for e in EPS:
        assert att.certified_same_points[e] <= att.robust[e] <= att.clean_same_points, (
            e, att.certified_same_points[e], att.robust[e])
    found = (r > 0) & torch.isfinite(att.result.min_norm)
    assert found.any(), "the attack broke no point: it checks nothing"
    assert bool((att.result.min_norm[found] >= r[found] * (1 - TOL_RADIUS)).all()), (
        att.result.min_norm[found], r[found])
    assert att.violations == 0, att.violations
    assert att.median_adv_over_radius >= 1 - TOL_RADIUS, att.median_adv_over_radius
    # each adversarial point is misclassified
    with torch.no_grad():
        pred = model(att.result.x_adv[found.nonzero()[:, 0]]).argmax(1)
    assert bool((pred != y[:40][found]).all())


def test_a_binary_model_and_a_model_without_last_linear():
    """One output: radius y f / L, no last-layer split for a model that does not end in a
    linear layer; the attack covers all the points when there are fewer than asked for."""
    torch.manual_seed(0)
    model = lnn.Sequential(lnn.OrthoLinear(2, 8), lnn.MaxMin(), lnn.OrthoLinear(8, 1),
                           lnn.Abs())
    x = torch.randn(20, 2)
    y = (model(x).reshape(-1) > 0.1).long()  # mostly right, some wrong
    rep = evaluate(model, x, y, eps=0.01, attack=AttackSettings(points=500, steps=5))
    assert isinstance(rep, CertifyReport) and rep.binary
    assert rep.certified_last_layer is None and rep.last_layer_median_gain is None
    assert "certified_last_layer" not in rep.to_dict()
    assert rep.attack.points == 20
    with torch.no_grad():
        f = model(x).reshape(-1)
    radius = torch.where(y == 1, f, -f) / rep.lipschitz_bound
    torch.testing.assert_close(rep.radii, radius)


def test_a_plain_sequential_of_onelip_layers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(lnn.OrthoLinear(4, 8), lnn.MaxMin(), lnn.OrthoLinear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    rep = evaluate(model, x, y, eps=[0.1])
    assert rep.certified_last_layer is not None
    assert rep.certified_last_layer[0.1] >= rep.certified[0.1]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"eps": -1.0}, ValueError, "non-negative finite eps"),
    ({"attack": True}, TypeError, "attack to be an AttackSettings"),
    ({"batch_size": 0}, ValueError, "batch_size"),
])
def test_evaluate_names_its_own_arguments(kwargs, error, match):
    model = lnn.Sequential(lnn.OrthoLinear(4, 3))
    with pytest.raises(error, match=match):
        evaluate(model, torch.randn(5, 4), torch.zeros(5, dtype=torch.long), **kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"points": 0}, "attack.points"),
    ({"steps": 0}, "attack.steps"),
    ({"restarts": -1}, "attack.restarts"),
])
def test_attack_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttackSettings(**kwargs)


def test_no_points_is_an_error():
    model = lnn.Sequential(lnn.OrthoLinear(4, 3))
    with pytest.raises(ValueError, match="no points"):
        evaluate(model, torch.randn(0, 4), torch.zeros(0, dtype=torch.long))


def test_evaluate_is_exported():
    assert certify.evaluate is evaluate
    assert {"evaluate", "CertifyReport", "AttackSettings", "AttackReport"} <= set(
        certify.__all__)

# SPDX-License-Identifier: MIT
"""`onelip reproduce`: the four claims in quick mode, the report, redrawing from results.json
alone, resuming from cached sub-runs, and the exact-transport reference."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from onelip.cli import main
from onelip.experiments import common, optimal_transport
from onelip.experiments.report import CLAIMS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOL_W1_POT = 1e-6  # network simplex on 300 points: exact to float64 rounding
TOL_W1_NET = 0.05  # KR network, quick preset (2×32 GroupSort, 60 epochs): measured ~0.3 %


def _tiny_image_claims(mp: pytest.MonkeyPatch) -> None:
    """pareto and consistency with still smaller quick presets (their quick presets on the
    digits take ~2 min together; tests/test_reproduce_cifar.py covers them on their own)."""
    from dataclasses import replace

    from onelip.experiments import consistency, pareto

    p, c = pareto.ParetoConfig.quick(), consistency.ConsistencyConfig.quick()
    mp.setattr(pareto.ParetoConfig, "quick", classmethod(lambda cls: replace(
        p, n_train=300, n_val=100, taus=(0.1, 3.0), margins=(36.0,), alphas=(10.0,), epochs=1,
        paper_net=(("preset", "bethune-vgg"), ("width", 4), ("hidden", (8,))),
        onelip_net=(("width", 4), ("blocks", 2), ("depth", 1)))))
    mp.setattr(consistency.ConsistencyConfig, "quick", classmethod(lambda cls: replace(
        c, n_pool=400, n_val=100, fractions=(0.25, 1.0), taus=(0.5, 1000.0), width=4,
        hidden=8, epochs=2, min_steps=10)))


@pytest.fixture(scope="module", autouse=True)
def tiny_image_claims():
    with pytest.MonkeyPatch.context() as mp:
        _tiny_image_claims(mp)
        yield


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, tiny_image_claims):
    """`onelip reproduce all --quick --out DIR` once for the module: (DIR, exit code, seconds)."""
    out = tmp_path_factory.mktemp("claims")
    t0 = time.perf_counter()
    rc = main(["reproduce", "all", "--quick", "--out", str(out), "--quiet"])
    return out, rc, time.perf_counter() - t0


def _results(out):
    return json.loads((out / "results.json").read_text())


def _pngs(report: str) -> list[str]:
    return [line.split("](")[1].rstrip(")") for line in report.splitlines()
            if line.startswith("![")]


def test_all_quick_writes_report_results_and_figures(quick_run):
    out, rc, _ = quick_run
    assert rc == 0, f"exit code {rc}"
    results = _results(out)
    assert list(results) == list(CLAIMS), f"claims in results.json: {list(results)}"
    for name, r in results.items():
        assert r["mode"] == "quick"
        assert r["verdicts"], f"{name} has no verdict rows"
        for v in r["verdicts"]:
            assert set(v) == {"claim", "research", "measured", "agree"}, v
            assert isinstance(v["agree"], bool)
    report = (out / "report.md").read_text()
    assert "QUICK MODE" in report
    pngs = _pngs(report)
    assert len(pngs) >= 6, f"figures linked from report.md: {pngs}"
    for png in pngs:
        data = (out / png).read_bytes()
        assert data[:8] == PNG_MAGIC, f"{png} is not a PNG"
    for name in CLAIMS:
        assert list((out / name / "runs").glob("*.json")), f"no cached sub-runs for {name}"


def test_figures_redraw_from_results_json_alone(quick_run, tmp_path):
    out, _, _ = quick_run
    fresh = tmp_path / "redraw"
    fresh.mkdir()
    shutil.copy(out / "results.json", fresh / "results.json")
    assert main(["reproduce", "all", "--redraw", "--out", str(fresh)]) == 0
    pngs = _pngs((fresh / "report.md").read_text())
    assert sorted(pngs) == sorted(_pngs((out / "report.md").read_text()))
    for png in pngs:
        assert (fresh / png).read_bytes()[:8] == PNG_MAGIC, f"{png} was not redrawn"
    assert not any(p.is_dir() for p in fresh.iterdir()), "redraw must not train (no runs/)"


def test_second_run_reuses_every_finished_subrun(quick_run):
    out, _, first = quick_run
    t0 = time.perf_counter()
    assert main(["reproduce", "all", "--quick", "--out", str(out), "--quiet"]) == 0
    second = time.perf_counter() - t0
    for name, r in _results(out).items():
        assert r["subruns"]["ran"] == 0, f"{name} recomputed {r['subruns']}"
        assert r["subruns"]["cached"] > 0
    assert second < first, f"second run {second:.1f}s is not faster than the first {first:.1f}s"


def test_one_claim_redraws_its_own_figures_and_keeps_the_others(quick_run):
    """After each claim the report is rewritten; only that claim's figures are drawn again
    (drawing every claim's after each one made a cached `reproduce all` quadratic: 80 figures
    for 8 claims). A figure file that went missing is drawn again."""
    out, _, _ = quick_run
    recorded = {n: r["figures"] for n, r in _results(out).items() if r.get("figures")}
    assert "tradeoff" in recorded and len(recorded) >= 3
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {f for fs in recorded.values() for f in fs}
    before = {p.name: p.stat().st_mtime_ns for p in pngs}
    other = next(n for n in recorded if n != "tradeoff")
    (out / recorded[other][0]).unlink()
    time.sleep(0.01)
    assert main(["reproduce", "tradeoff", "--quick", "--out", str(out), "--quiet"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert set(after) == set(before), "the missing figure is drawn again"
    redrawn = {f for f in after if after[f] != before[f]}
    assert redrawn == set(recorded["tradeoff"]) | {recorded[other][0]}, redrawn
    report = (out / "report.md").read_text()
    assert all(f"]({f})" in report for f in after)


def test_an_interrupted_claim_resumes_where_it_stopped(quick_run):
    out, _, _ = quick_run
    runs = sorted((out / "tradeoff" / "runs").glob("*.json"))
    runs[0].unlink()  # as if the run had stopped before this sub-run finished
    assert main(["reproduce", "tradeoff", "--quick", "--out", str(out), "--quiet"]) == 0
    stats = _results(out)["tradeoff"]["subruns"]
    assert stats["ran"] == 1 and stats["cached"] == len(runs) - 1, stats


def test_kr_network_recovers_a_known_w1(quick_run):
    """Q = P shifted by Δ: W₁ = |Δ| exactly; POT finds it, the KR network estimates it."""
    out, _, _ = quick_run
    r = _results(out)["optimal-transport"]
    shift = r["config"]["shift"]
    pair = r["pairs"]["shift"]
    assert abs(pair["w1_pot"] - shift) < TOL_W1_POT, (pair["w1_pot"], shift)
    assert abs(pair["w1_net"] - shift) / shift < TOL_W1_NET, (pair["w1_net"], shift)
    assert pair["corr"] > 0.95, pair["corr"]


def test_exact_w1_on_trivial_cases():
    p = np.zeros((1, 2))
    q = np.array([[3.0, 4.0]])
    w1, v = optimal_transport.exact_w1(p, q)
    assert abs(w1 - 5.0) < 1e-9, w1  # two Diracs: their distance
    phi = optimal_transport.kantorovich_potential(np.concatenate([p, q]), q, v)
    assert abs((phi[0] - phi[1]) - 5.0) < 1e-9, phi  # the potential attains W₁
    p, q = optimal_transport.sample_pair("shift", 200, seed=3, shift=1.5)
    w1, _ = optimal_transport.exact_w1(p, q)
    assert abs(w1 - 1.5) < TOL_W1_POT, w1


def test_label_noise_flips_exactly_the_asked_fraction_to_other_classes():
    from onelip.data import DataSplit

    y = torch.arange(1000) % 10
    data = DataSplit("x", torch.zeros(1000, 2), y, torch.zeros(5, 2), y[:5], 10, (2,))
    noisy = common.label_noise(data, 0.2, seed=1)
    changed = noisy.y_train != y
    assert int(changed.sum()) == 200, int(changed.sum())
    assert torch.equal(noisy.y_test, data.y_test)


def test_unknown_claim_is_a_one_line_error(tmp_path, capsys):
    assert main(["reproduce", "nonsense", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown claim 'nonsense'" in err, err


def test_redraw_without_results_is_a_one_line_error(tmp_path, capsys):
    assert main(["reproduce", "all", "--redraw", "--out", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_model_builders_seed_without_touching_the_global_rng():
    """lipschitz_mlp / plain_mlp initialise from their seed (the same weights as after
    torch.manual_seed(seed)) and leave the global RNG state as it was."""
    from onelip import models

    for build in (common.lipschitz_mlp, common.plain_mlp):
        torch.manual_seed(99)
        torch.rand(2)
        state = torch.get_rng_state()
        a = build(4, 3, (8,), seed=5)
        assert torch.equal(torch.get_rng_state(), state), build.__name__
        b = build(4, 3, (8,), seed=5)
        c = build(4, 3, (8,), seed=6)
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    torch.manual_seed(5)  # what lipschitz_mlp did before: the same initial weights
    ref, _ = models.build("mlp", in_features=4, num_outputs=3, hidden=(8,),
                          activation="maxmin")
    new = common.lipschitz_mlp(4, 3, (8,), seed=5)
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in ref.state_dict().items())


def test_scores_restore_modes_and_bce_reads_both_label_encodings():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Dropout(0.5)).train()
    model[0].eval()
    x = torch.randn(6, 2)
    s = common.scores(model, x)
    assert s.shape == (6,)
    assert model.training and not model[0].training and model[1].training
    assert torch.equal(s, common.scores(model, x))  # eval mode inside: no dropout
    y01 = torch.tensor([1, 0, 0, 1, 1, 0])
    bce = common.BCELoss()
    assert torch.equal(bce(s, y01), bce(s, 2 * y01 - 1))
    with pytest.raises(ValueError, match="binary labels"):
        bce(s, y01 + 1)

# SPDX-License-Identifier: MIT
"""`onelip reproduce pareto|consistency`: the paper's CIFAR-10 experiments (Fig. 3 and 4) on
tiny image folders the tests make; the Pareto-front arithmetic; verdicts recomputed from the
stored results; the unconstrained twin; nothing read from a test split."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from onelip.cli import main
from onelip.experiments import consistency, pareto, vision
from onelip.experiments.common import config_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _folder(root, *, classes=("cat", "dog", "frog"), n=16, size=8, test=False):
    """``root/<class>/*.png``: class c's images are brighter by c (learnable), plus noise;
    with ``test`` also ``root/test/...`` (which no claim may read)."""
    from PIL import Image

    gen = np.random.default_rng(0)
    parts = [root / "train", root / "test"] if test else [root]
    for part in parts:
        for k, c in enumerate(classes):
            (part / c).mkdir(parents=True)
            for i in range(n):
                base = 40 + 80 * k
                a = np.clip(base + gen.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(part / c / f"{i}.png")
    return root


def _tiny_pareto(data: str) -> pareto.ParetoConfig:
    return replace(pareto.ParetoConfig.quick(), data=data, val_fraction=0.25, n_val=None,
                   taus=(0.1, 3.0), margins=(36.0,), alphas=(10.0,), offsets=(0.0, 72.0),
                   epochs=2.0, paper_batch_size=16, onelip_batch_size=16,
                   paper_net=(("preset", "bethune-vgg"), ("width", 4), ("hidden", (8,))),
                   onelip_net=(("width", 4), ("blocks", 2), ("depth", 1)))


def _tiny_consistency(data: str) -> consistency.ConsistencyConfig:
    return replace(consistency.ConsistencyConfig.quick(), data=data, val_fraction=0.25,
                   n_val=None, fractions=(0.25, 1.0), taus=(0.5, 1000.0), width=4, hidden=8,
                   epochs=2, min_steps=10, batch_size=8)


# ==== the front arithmetic ==================================================================


def test_front_keeps_only_non_dominated_points():
    pts = [(0.5, 0.5), (0.6, 0.4), (0.55, 0.3), (0.6, 0.4), (0.4, 0.5)]
    assert pareto.front(pts) == [(0.5, 0.5), (0.6, 0.4)]


def test_paper_front_is_the_papers_envelope():
    f = pareto.PAPER_FRONT
    assert (0.698, 0.437) in f and (0.799, 0.211) in f and (0.865, 0.0) in f
    assert (0.575, 0.437) not in f, "dominated by (0.698, 0.437)"
    assert (0.802, 0.144) not in f, "dominated by (0.804, 0.167)"
    cs, rs = zip(*f)
    assert list(cs) == sorted(cs) and list(rs) == sorted(rs, reverse=True)


def test_domination_gap_is_zero_only_when_every_point_is_dominated():
    theirs = pareto.PAPER_FRONT
    assert pareto.domination_gap([(0.9, 0.5)], theirs) == 0.0
    gap = pareto.domination_gap([(0.9, 0.40)], theirs)
    assert gap == pytest.approx(0.037), "(0.698, 0.437) beats it by 3.7 points of certified"
    assert pareto.domination_gap([(0.7, 0.44), (0.865, 0.0)], theirs) > 0, \
        "(0.799, 0.211) is not dominated by either point"
    assert pareto.domination_gap([], theirs) == 1.0


def test_certified_at_clean_reads_the_best_point_above_a_clean_accuracy():
    pts = [(0.65, 0.6), (0.71, 0.5), (0.8, 0.3)]
    assert pareto.certified_at_clean(pts, 0.70) == 0.5
    assert pareto.certified_at_clean(pts, 0.9) is None


# ==== the networks ==========================================================================


def test_plain_twin_has_the_same_widths_and_is_unconstrained():
    d = vision.load("digits", val_fraction=0.2, seed=0).split
    net = vision.build_network("convnet", consistency._fields(
        consistency.ConsistencyConfig(width=8, hidden=16)), d, seed=0)
    twin = vision.plain_twin(net, seed=0)
    lip_convs = [m for m in net.modules() if hasattr(m, "in_channels") and
                 any(True for _ in m.parameters())]
    convs = [m for m in twin.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.stride[0]) for m in lip_convs] == \
        [(m.in_channels, m.out_channels, m.stride[0]) for m in convs]
    assert any(isinstance(m, torch.nn.ReLU) for m in twin.modules())
    x = torch.rand(4, 64)
    assert twin(x).shape == net(x).shape == (4, 10)
    # unconstrained: scaling its weights scales its output (no re-normalisation)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(3.0)
    assert twin(x).abs().max() > 5 * net(x).abs().max()


def test_train_and_certify_measures_validation_and_certifies(tmp_path):
    d = vision.subset(vision.load("digits", val_fraction=0.2, n_val=80, seed=0), 200, seed=0)
    assert d.x_val.shape[0] == 80 and d.x_train.shape[0] == 200
    net = vision.build_network("lipconvnet", {"width": 4, "blocks": 2, "depth": 1}, d, seed=0,
                               normalize=True)
    from onelip.losses import TauCrossEntropyLoss

    r = vision.train_and_certify(net, d, TauCrossEntropyLoss(2.0), epochs=2, lr=3e-3,
                                 batch_size=32, augment=("crop", "flip"), seed=0,
                                 train_eval=True)
    assert r["augment"] == [], "8×8 digits are not augmented (needs ≥ 16×16)"
    assert r["n_val"] == 80 and len(r["val_curve"]) == 2
    assert 0 <= r["certified"]["108"] <= r["certified"]["72"] <= r["certified"]["36"] \
        <= r["val_acc"] <= 1
    assert 0 <= r["train_acc"] <= 1


# ==== pareto ================================================================================


def test_pareto_on_an_image_folder_writes_results_verdicts_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs", test=True)
    cfg = _tiny_pareto(f"folder:{root}")
    assert vision.load(cfg.data, val_fraction=0.25).split.x_test.shape[0] == 0, \
        "the folder's test split is dropped: nothing is measured on it"
    out = tmp_path / "claims"
    r = pareto.run(cfg, out=out, progress=False)
    nets = r["networks"]
    assert set(nets) == set(cfg.networks) == {"paper-rko", "paper-ortho", "onelip"}
    assert set(nets["paper-rko"]) == set(nets["paper-ortho"]) == set(pareto.SWEEPS)
    assert set(nets["onelip"]) == set(cfg.sweeps("onelip")) == {pareto.XI}
    for network in ("paper-rko", "paper-ortho"):
        for rs in nets[network].values():
            for x in rs:
                assert x["n_train"] == 36 and x["n_val"] == 12, "25 % of 48 training images"
                assert set(x["certified"]) == {"36", "72", "108"}
                assert x["val_acc"] >= x["certified"]["36"]
                assert x["epochs"] == pytest.approx(2.0) and x["budget"] == "2 epochs"
    assert r["subruns"]["ran"] == 10
    claims = " ".join(v["claim"] for v in r["verdicts"])
    assert "Fig. 3" in claims and "dominates" in claims and "70 % clean" in claims
    rows = " ".join(v["research"] + v["measured"] for v in r["verdicts"])
    assert "43.4 % certified" in rows and "12-image validation split" in rows
    assert "the paper: the test split" in rows, "the protocol's difference in the row"
    budget = r["tables"][0]["rows"][0][-1]
    assert "thread(s): 2.00 epochs" in budget, "every row states its budget"
    assert pareto.verdicts(json.loads(json.dumps(r))) == r["verdicts"]
    assert pareto.plot(r, tmp_path) == ["pareto.png"]
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    # a second run is all cached, and the same
    again = pareto.run(cfg, out=out, progress=False)
    assert again["subruns"] == {**again["subruns"], "ran": 0, "cached": 10}
    assert again["networks"] == r["networks"]


def test_pareto_verdicts_follow_the_stored_points():
    """The verdicts are computed from the stored results: move the points, they change."""
    def sweeps(points):
        return {"offset": [{"value": 36.0 * i, "val_acc": c,
                            "certified": {"36": r, "72": 0, "108": 0}, "cpu_seconds": 1,
                            "threads": 1, "epochs": 1.0, "steps": 1, "n_train": 10,
                            "n_val": 5} for i, (c, r) in enumerate(points)]}

    cfg = pareto.ParetoConfig(data="folder:x")
    good = [(0.87, 0.1), (0.81, 0.44), (0.75, 0.5), (0.70, 0.56)]
    res = {"config": config_dict(cfg), "networks": {"onelip": sweeps(good)}}
    v = {x["claim"]: x["agree"] for x in pareto.verdicts(res)}
    assert v["Fig. 3: onelip's network dominates the paper's points up to 80 % clean"]
    assert v["Fig. 3: onelip's network at 70 % clean certifies ≥ 55 % at 36/255"]
    res["networks"]["onelip"] = sweeps([(0.87, 0.1), (0.78, 0.4), (0.70, 0.50)])
    v = {x["claim"]: x["agree"] for x in pareto.verdicts(res)}
    assert not v["Fig. 3: onelip's network at 70 % clean certifies ≥ 55 % at 36/255"], \
        "50 % at 70 % clean misses the 55 % target"
    assert not v["Fig. 3: onelip's network dominates the paper's points up to 80 % clean"], \
        "(0.792, 0.244) … (0.799, 0.211) are more accurate than every onelip point"


def test_pareto_full_needs_data_and_refuses_before_training(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["reproduce", "pareto", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--data folder:DIR" in err and err.count("\n") == 1
    assert not (out / "results.json").exists()


# ==== consistency ===========================================================================


def test_consistency_on_an_image_folder_nests_fractions_and_has_the_twin(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs")
    cfg = _tiny_consistency(f"folder:{root}")
    r = consistency.run(cfg, out=tmp_path / "claims", progress=False)
    grid = r["grid"]
    assert set(grid) == {"0.5", "1000", "plain"}
    for rs in grid.values():
        assert [x["fraction"] for x in rs] == [0.25, 1.0]
        assert [x["n_train"] for x in rs] == [9, 36], "25 % and 100 % of 36 images"
        assert all(0 <= x["train_acc"] <= 1 and 0 <= x["val_acc"] <= 1 for x in rs)
        assert all("certified" not in x for x in rs), "the experiment is about accuracy"
    names = [v["claim"] for v in r["verdicts"]]
    assert any("gap shrinks" in n for n in names) and any("τ = 1000" in n for n in names)
    table = r["tables"][0]
    assert table["columns"] == ["network", "25 % (9 images)", "100 % (36 images)"]
    # the paper's points are beside ours only at the same number of training images: 36
    # images are none of its fractions of 50,000 (its "100 %" is 50,000 images)
    assert "paper at" not in json.dumps(table)
    assert consistency.verdicts(json.loads(json.dumps(r))) == r["verdicts"]
    assert consistency.plot(r, tmp_path) == ["consistency.png"]


def test_consistency_fractions_are_nested(tmp_path, monkeypatch):
    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs")
    cfg = _tiny_consistency(f"folder:{root}")
    data = consistency._data(cfg)
    small, big = consistency._fraction(data, 0.25), consistency._fraction(data, 1.0)
    assert torch.equal(small.x_train, big.x_train[:small.x_train.shape[0]])
    assert torch.equal(small.x_val, big.x_val), "one validation split for every fraction"


def test_consistency_epochs_reach_min_steps():
    cfg = consistency.ConsistencyConfig(epochs=3, min_steps=100, batch_size=10)
    assert cfg.epochs_for(50) == 20  # 5 steps an epoch
    assert cfg.epochs_for(10_000) == 3


def test_consistency_verdicts_flip_with_the_stored_numbers():
    def rows(pairs):
        return [{"fraction": f, "train_acc": t, "val_acc": v, "n_train": 10, "n_val": 5}
                for f, (t, v) in zip((0.1, 1.0), pairs)]

    cfg = consistency.ConsistencyConfig(data="folder:x", fractions=(0.1, 1.0),
                                        taus=(0.5, 4.0, 1000.0))

    grid = {"0.5": rows([(0.7, 0.4), (0.45, 0.44)]), "4": rows([(1.0, 0.45), (0.7, 0.6)]),
            "1000": rows([(1.0, 0.3), (1.0, 0.45)]), "plain": rows([(1.0, 0.3), (1.0, 0.5)])}
    res = {"config": config_dict(cfg), "grid": grid}
    v = {x["claim"]: x["agree"] for x in consistency.verdicts(res)}
    assert all(v.values()), v
    grid["4"] = rows([(1.0, 0.45), (0.99, 0.4)])  # the gap grows: not consistent
    v = {x["claim"]: x["agree"] for x in consistency.verdicts(res)}
    assert not v["Fig. 4: for every τ the train/validation gap shrinks as the fraction grows"]
    grid["1000"] = rows([(1.0, 0.3), (0.9, 0.45)])
    v = {x["claim"]: x["agree"] for x in consistency.verdicts(res)}
    assert not v["Fig. 4: at τ = 1000 the 1-Lipschitz network memorises at every fraction"]


def test_both_claims_are_registered_in_the_cli():
    from onelip.cli.reproduce import _CHOICES, _NEEDS_DATA
    from onelip.experiments.report import CLAIMS

    assert {"pareto", "consistency"} <= set(CLAIMS) & set(_CHOICES)
    assert {"pareto", "consistency"} <= set(_NEEDS_DATA)


def test_the_paper_is_compared_at_the_same_number_of_training_images():
    from onelip.experiments.consistency import PAPER, _paper_at, paper_fraction, tables

    assert paper_fraction(2_500) == 0.05 and paper_fraction(50_000) == 1.0
    assert paper_fraction(45_000) == 1.0 and paper_fraction(11_250) == 0.25  # a 45,000 pool
    assert paper_fraction(36) is None and paper_fraction(3_500) is None
    assert _paper_at(4.0, 2_500) == (0.05, PAPER[4.0][1])
    rows = [{"fraction": 0.25, "n_train": 2_500, "n_val": 1_000, "train_acc": 0.5,
             "val_acc": 0.4}]
    t = tables({"config": {"data": "folder:x", "width": 16, "epochs": 4, "min_steps": 1,
                           "batch_size": 64, "lr": 1e-3}, "grid": {"4": rows}})[0]
    assert t["columns"] == ["network", "25 % (2,500 images)"]
    assert t["rows"][0][1] == "50.0 / 40.0 (paper at 5 %: 100.0 / 45.0)", \
        "25 % of a 10,000-image pool is the paper's 5 %, not its 25 % (80.5 / 57.0)"


def _grid_result(rows_by_tau: dict) -> dict:
    cfg = {"data": "folder:x", "width": 16, "epochs": 4, "min_steps": 1, "batch_size": 64,
           "lr": 1e-3}
    grid = {f"{tau:g}": [{"fraction": f, "n_train": n, "n_val": 1_000, "train_acc": tr,
                          "val_acc": va} for f, n, tr, va in rows]
            for tau, rows in rows_by_tau.items()}
    return {"config": cfg, "grid": grid}


@pytest.mark.parametrize("shift, agree", [(0.02, True), (0.10, False)])
def test_point_by_point_verdict_compares_at_equal_training_set_sizes(shift, agree):
    from onelip.experiments.consistency import PAPER, verdicts

    # a pool of 10,000: 10 % and 25 % are the paper's 2 % and 5 % (1,000 and 2,500 images)
    rows = {tau: [(0.1, 1_000, PAPER[tau][0][0] - shift, PAPER[tau][0][1] + shift),
                  (0.25, 2_500, PAPER[tau][1][0] - shift, PAPER[tau][1][1] + shift)]
            for tau in (0.5, 4.0)}
    v = next(v for v in verdicts(_grid_result(rows)) if "point by point" in v["claim"])
    assert v["agree"] is agree
    assert v["measured"].startswith("4 (τ, size) points: mean |ours − paper| "
                                    f"{100 * shift:.1f} pt over 8 accuracies")
    # 36 images are none of the paper's sizes: no point-by-point row at all
    tiny = {0.5: [(0.25, 9, 0.5, 0.4), (1.0, 36, 0.6, 0.5)]}
    assert not any("point by point" in v["claim"] for v in verdicts(_grid_result(tiny)))


# ==== a time budget (--budget): what did not fit is recorded as not run =====================


def test_duration_reads_seconds_minutes_and_hours():
    from onelip.cli._common import duration

    assert [duration(s) for s in ("540", "540s", "9m", "2.5h", "0")] == [540, 540, 540, 9000, 0]


def test_subruns_past_the_deadline_start_nothing_but_read_the_cache(tmp_path):
    from onelip.experiments.common import ClaimNotRun, SubRuns

    def compute():
        calls.append(1)
        return {"x": len(calls)}

    calls: list = []
    with SubRuns("c", tmp_path, total=3, progress=False) as runs:
        assert runs("a", {"k": 1}, compute) == {"x": 1}
    past = 0.0  # time.monotonic() is far beyond it
    with SubRuns("c", tmp_path, total=3, progress=False, deadline=past, partial=True) as runs:
        assert runs("a", {"k": 1}, compute) == {"x": 1}, "cached: read past the deadline"
        assert runs("b", {"k": 2}, compute) is None
        assert runs("c", {"k": 3}, compute) is None
        stats = runs.stats()
    assert calls == [1], "nothing computed past the deadline"
    assert stats["not_run"] == ["b", "c"] and stats["cached"] == 1 and stats["total"] == 3
    with SubRuns("c", tmp_path, total=3, progress=False, deadline=past) as runs:
        runs("a", {"k": 1}, compute)
        with pytest.raises(ClaimNotRun, match="1 came from the cache, of 3"):
            runs("b", {"k": 2}, compute)


def _names(out, claim):
    return {json.loads(p.read_text())["name"]: p for p in (out / claim / "runs").glob("*.json")}


def test_a_spent_budget_reports_a_partial_grid_and_names_what_did_not_run(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    data = f"folder:{_folder(tmp_path / 'imgs')}"
    tiny = _tiny_consistency(data)
    monkeypatch.setattr(consistency.ConsistencyConfig, "quick", classmethod(lambda cls: tiny))
    out = tmp_path / "claims"
    argv = ["reproduce", "consistency", "--quick", "--data", data, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    runs = _names(out, "consistency")
    assert len(runs) == 6
    runs["fraction 1, τ = 1000"].unlink()  # as if the budget had run out before it
    assert main([*argv, "--budget", "0"]) == 0
    r = json.loads((out / "results.json").read_text())["consistency"]
    assert r["subruns"]["not_run"] == ["fraction 1, τ = 1000"]
    assert r["subruns"]["ran"] == 0 and r["subruns"]["cached"] == 5
    assert [x["fraction"] for x in r["grid"]["1000"]] == [0.25]
    row = next(row for row in r["tables"][0]["rows"] if row[0] == "τ = 1000")
    assert row[2] == "not run" and row[1] != "not run"
    v = {x["claim"]: x for x in r["verdicts"]}
    unc = v["Fig. 4: at τ = 1000 it overfits like the unconstrained network"]
    assert "at fractions" not in unc["measured"] and unc["measured"].count("%") >= 2
    report = (out / "report.md").read_text()
    assert "**Partial: 5 of 6 sub-runs.** Not run" in report
    assert "fraction 1, τ = 1000" in report and "[partial: 5 of 6 sub-runs]" in report
    assert "not run" in report and (out / "consistency.png").exists()
    # the same command without a budget runs the one left out, and nothing else
    assert main(argv) == 0
    r = json.loads((out / "results.json").read_text())["consistency"]
    assert r["subruns"]["ran"] == 1 and r["subruns"]["not_run"] == []
    assert "Partial" not in (out / "report.md").read_text()


@pytest.mark.parametrize("claim", ["pareto", "memorization"])
def test_a_claim_with_nothing_at_hand_is_recorded_as_not_reported(claim, tmp_path, capsys):
    out = tmp_path / "claims"
    assert main(["reproduce", claim, "--quick", "--out", str(out), "--budget", "0"]) == 0
    r = json.loads((out / "results.json").read_text())[claim]
    assert r["stopped"] and r["verdicts"] == [] and r["subruns"]["ran"] == 0
    assert r["subruns"]["not_run"], "the sub-run it stopped at is named"
    report = (out / "report.md").read_text()
    assert "**Not reported: the time budget was spent** with 0 of" in report
    needs = "at least one" if claim == "pareto" else "all of them"
    assert f"its report needs {needs}." in report
    assert f"**Not reported** (the time budget was spent): {claim}." in report
    assert "stopped by the time budget" in capsys.readouterr().out
    assert main(["reproduce", "all", "--redraw", "--out", str(out)]) == 0
    assert not list((out / claim / "runs").glob("*.json")), "nothing trained"


def test_a_spent_budget_keeps_a_claim_reported_before(tmp_path, capsys):
    out = tmp_path / "claims"
    base = ["reproduce", "memorization", "--quick", "--out", str(out), "--quiet",
            "--set", "n_train=60", "--set", "epochs=2", "--set", "hidden=16,16"]
    assert main(base) == 0
    before = (out / "results.json").read_text()
    assert main([*base[:-2], "--set", "hidden=8,8", "--budget", "0"]) == 0
    assert "keeps its earlier report" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before, "the earlier report was replaced"

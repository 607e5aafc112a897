# SPDX-License-Identifier: MIT
"""`onelip reproduce pareto` (the paper's Fig. 3): the paper's network and settings, the
paper's losses converted to inputs in [0, 1], the budgeted trainer, the verdicts on hand-made
points, a saved network as a point, sub-runs resumed from the cache and run two at a time."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from onelip import losses
from onelip.cli import main
from onelip.experiments import common, pareto, vision
from onelip.experiments.common import SubRuns, config_dict

# ==== the paper's network and settings ======================================================


@pytest.mark.parametrize("network, params", [("paper-rko", 489_322),
                                             ("paper-spectral", 489_322),
                                             ("paper-ortho", 197_738)])
def test_the_papers_network_has_the_papers_parameter_count(network, params):
    from onelip import models

    name, fields = pareto.ParetoConfig.full().net_fields(network)
    net, _ = models.build(name, input_shape=(3, 32, 32), num_outputs=10, **fields)
    assert sum(p.numel() for p in net.parameters()) == params
    convs = [m for m in net.modules() if type(m).__name__.endswith("Conv2d")]
    kind = {"paper-rko": "RKOConv2d", "paper-spectral": "SpectralConv2d",
            "paper-ortho": "OrthoConv2d"}[network]
    assert len(convs) == 8 and {type(m).__name__ for m in convs} == {kind}
    if network != "paper-ortho":  # dense 3×3 kernels: in·out·9 weights + out biases each
        widths = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 128), (128, 128),
                  (128, 128)]
        assert [m.weight.shape for m in convs] == [(o, i, 3, 3) for i, o in widths]


def test_the_full_sweep_is_the_papers_18_settings_and_six_offsets():
    cfg = pareto.ParetoConfig.full()
    for sweep in pareto.SWEEPS:
        assert set(cfg.values(sweep)) == set(pareto.PAPER[sweep]), sweep
    assert cfg.taus == (0.05, 0.1, 0.5, 1.0, 2.0, 3.0)
    assert cfg.margins == (2.0, 10.0, 20.0, 36.0, 50.0, 100.0)
    assert cfg.alphas == (5.0, 10.0, 30.0, 50.0, 100.0, 300.0) and cfg.hkr_margin == 20.0
    assert len(pareto.PAPER_POINTS) == 18 and len(cfg.offsets) >= 6
    items = [(n, s, v) for n in cfg.networks for s in cfg.sweeps(n) for v in cfg.values(s)]
    assert len(items) == 18 + 18 + 6
    assert cfg.budget() == vision.Budget(cpu_seconds=1200.0) and cfg.threads == 1
    r = cfg.recipe("paper-spectral")
    assert (r.optimizer, r.lr, r.schedule, r.lr_floor, r.batch_size, r.grad_clip) == \
        ("adam", 1e-3, "cosine", 0.01, 512, 0.0)
    # every sub-run has its own cache key, and the budget is part of it
    keys = {common.config_key(cfg.key(*it)) for it in items}
    assert len(keys) == len(items)
    other = replace(cfg, point_budget=600.0)
    assert common.config_key(other.key(*items[0])) not in keys


def test_bad_settings_are_refused_in_one_line():
    for kw, match in [({"networks": ("paper",)}, "Expected networks among"),
                      ({"point_budget": 0.0}, "positive point_budget"),
                      ({"onelip_inputs": "raw"}, "onelip_inputs 'center' or 'std'"),
                      ({"onelip_optimizer": "lbfgs"}, "Unknown optimizer 'lbfgs'"),
                      ({"jobs": 0}, "jobs >= 1"),
                      ({"onelip_loss": "hinge"}, "onelip_loss 'la', 'la-epsilon' or"),
                      ({"la_offsets": (-1.0,)}, "la_offsets"),
                      ({"onelip_epsilon_ramp": 1.5}, "epsilon_ramp, a fraction")]:
        with pytest.raises(ValueError, match=match) as info:
            pareto.ParetoConfig(**kw)
        assert "\n" not in str(info.value)


# ==== the paper's losses, on inputs in [0, 1] ===============================================


def _deel12_hinge(f: np.ndarray, y: np.ndarray, m: float) -> float:
    """deel-lip 1.2.0 ``MulticlassHinge(m)``: relu(m − s·f), the true class × (K−1), the
    mean over the batch and the K outputs."""
    k = f.shape[1]
    s = np.where(np.eye(k)[y] == 1, 1.0, -1.0)
    h = np.maximum(m - s * f, 0.0)
    return float(np.mean(np.where(s > 0, h * (k - 1), h)))


def _deel12_kr(f: np.ndarray, y: np.ndarray) -> float:
    """deel-lip 1.2.0 ``MulticlassKR``: the mean over the classes of E[f_k | y = k] −
    E[f_k | y ≠ k] (batch frequencies)."""
    onehot = np.eye(f.shape[1])[y]
    pos = (f * onehot).sum(0) / onehot.sum(0)
    neg = (f * (1 - onehot)).sum(0) / (1 - onehot).sum(0)
    return float(np.mean(pos - neg))


def _batch():
    f = torch.tensor([[0.30, -0.10, 0.05], [-0.20, 0.40, 0.10], [0.00, 0.10, -0.30],
                      [0.25, 0.20, -0.15]], dtype=torch.float64)
    return f, torch.tensor([0, 1, 2, 0])


def test_the_papers_hinge_and_hkr_are_onelips_one_vs_all_on_pixels_over_255():
    """The paper's f on 0–255 inputs is 255 × onelip's f on [0, 1]: its losses at (m, α) in
    pixels are onelip's at (m/255, α·(K−1)/K), times 255 (closed forms on a hand-built
    batch)."""
    f, y = _batch()
    fp, yn = 255 * f.numpy(), y.numpy()
    m, alpha, k = 20.0, 30.0, 3
    hinge = pareto.paper_loss("margin", m, num_classes=k)
    assert hinge.mode == "one_vs_all" and hinge.margin == pytest.approx(m / 255)
    assert _deel12_hinge(fp, yn, m) == pytest.approx(255 * (k - 1) / k * float(hinge(f, y)),
                                                     rel=1e-12)
    hkr = pareto.paper_loss("alpha", alpha, num_classes=k, hkr_margin=m)
    paper = -_deel12_kr(fp, yn) + alpha * _deel12_hinge(fp, yn, m)
    assert paper == pytest.approx(255 * float(hkr(f, y)), rel=1e-12)
    assert hkr.alpha == pytest.approx(alpha * (k - 1) / k)
    # without the (K−1)/K the HKR would differ: the mapping is not a rescaling of α alone
    wrong = losses.MulticlassHKRLoss(alpha, m / 255, mode="one_vs_all")
    assert abs(paper - 255 * float(wrong(f, y))) > 1e-3


def test_the_papers_tau_is_onelips_tau_over_255():
    f, y = _batch()
    tau = 0.05
    onelip = pareto.paper_loss("tau", tau, num_classes=3)
    assert onelip.tau == pytest.approx(255 * tau)
    paper = torch.nn.functional.cross_entropy(tau * 255 * f, y) / tau  # CE(τ·f_paper)/τ
    assert float(paper) == pytest.approx(float(onelip(f, y)) / tau, rel=1e-12)


# ==== training within a budget ==============================================================


def test_lr_factor_closed_forms():
    cos = vision.Recipe(schedule="cosine", lr_floor=0.01)
    assert vision.lr_factor(0.0, cos) == 1.0 and vision.lr_factor(1.0, cos) == 0.01
    assert vision.lr_factor(0.5, cos) == pytest.approx(0.01 + 0.99 * 0.5)
    one = vision.Recipe(schedule="onecycle")
    assert vision.lr_factor(0.0, one) == pytest.approx(1 / 25)
    assert vision.lr_factor(0.3, one) == pytest.approx(1.0)
    assert vision.lr_factor(1.0, one) == pytest.approx(1 / 25 / 1e4)


def _digits(n=200):
    return vision.subset(vision.load("digits", val_fraction=0.2, n_val=60, seed=0), n, seed=0)


def _tiny_net(data):
    return vision.build_network("convnet", {"width": 4, "stages": 2, "depth": 1}, data, seed=0)


def test_a_cpu_budget_stops_training_when_it_is_spent():
    data = _digits()
    budget = 0.6
    r = vision.train_budgeted(_tiny_net(data), data, losses.TauCrossEntropyLoss(8.0),
                              vision.Recipe(batch_size=32), vision.Budget(cpu_seconds=budget),
                              seed=0)
    assert r["diverged"] is None and r["steps"] >= 1
    assert budget <= r["cpu_seconds"] < budget + 2.0, r["cpu_seconds"]
    # 200 images at batch 32: a pass is 7 steps (six of 32, one of 8); epochs count images seen
    passes, rest = divmod(r["steps"], 7)
    assert r["epochs"] == pytest.approx(passes + 32 * rest / 200)


def test_an_epoch_budget_trains_exactly_its_steps_and_is_seeded():
    data = _digits()
    runs = []
    for _ in range(2):
        net = _tiny_net(data)
        r = vision.train_budgeted(net, data, losses.TauCrossEntropyLoss(8.0),
                                  vision.Recipe(batch_size=50), vision.Budget(epochs=1.5),
                                  seed=3)
        runs.append((r, net))
    (r, a), (_, b) = runs
    assert r["steps"] == 6 and r["epochs"] == pytest.approx(1.5)  # 4 batches a pass
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb), "same seed, same weights"


def test_onelips_part_is_the_one_hour_headlines_recipe_sweeping_las_offset():
    """Part 2 trains the headline's network and recipe (cifar10_hour recipe 12: ShiftConv2d,
    centred inputs, LA T 0.75 / γ 5 at ε 36/255, ε ramp 0.3) and sweeps LA's offset ξ over
    six values; LA's ε at ξ = 2 and offset-ce (Prach et al.) are the alternatives, each with
    its own cache keys."""
    cfg = pareto.ParetoConfig.full()
    model, fields = cfg.net_fields("onelip")
    assert model == "lipconvnet" and fields["layer"] == "shift" and cfg.onelip_inputs == "center"
    r = cfg.recipe("onelip")
    assert (r.optimizer, r.lr, r.schedule, r.batch_size, r.grad_clip, r.epsilon_ramp) == \
        ("adam", 1e-3, "onecycle", 256, 1.0, 0.3)
    assert cfg.recipe("paper-spectral").epsilon_ramp == 0.0
    assert cfg.sweeps("onelip") == (pareto.XI,) and len(cfg.values(pareto.XI)) >= 6
    la = cfg.onelip_loss_at(4.0, 1.0)
    assert isinstance(la, losses.LogitAnnealingLoss)
    assert (la.epsilon, la.offset, la.temperature, la.gamma, la.lipschitz) == \
        pytest.approx((36 / 255, 4.0, 0.75, 5.0, 1.0))
    eps = replace(cfg, onelip_loss="la-epsilon")
    assert eps.sweeps("onelip") == (pareto.OFFSET,)
    at = eps.onelip_loss_at(72.0, 2.0)
    assert (at.epsilon, at.offset, at.lipschitz) == pytest.approx((72 / 255, 2.0, 2.0))
    # the ε sweep's cache keys are those its first sub-runs were stored under
    assert eps.key("onelip", pareto.OFFSET, 0.0)["loss"] == {
        "name": "la", "temperature": 0.75, "offset": 2.0, "gamma": 5.0}
    assert cfg.key("onelip", pareto.XI, 2.0)["loss"] == {
        "name": "la", "temperature": 0.75, "epsilon": 36.0, "gamma": 5.0}
    # each sweep's table reads its own values
    for c, sweep, value, setting in [(eps, pareto.OFFSET, 36.0, "ε = 36/255"),
                                     (cfg, pareto.XI, 4.0, "ξ = 4")]:
        res = {"config": config_dict(replace(c, networks=("onelip",))), "saved": [],
               "networks": {"onelip": {sweep: [_sub(value, 0.44, 0.36)]}}}
        table = next(t for t in pareto.tables(res) if t["title"].startswith("onelip"))
        assert [setting, "44.0", "36.0"] == [table["rows"][c.values(sweep).index(value)][i]
                                             for i in (0, 2, 3)]
    ce = replace(cfg, onelip_loss="offset-ce", offset_temperature=0.25)
    off = ce.onelip_loss_at(36.0, 2.0)
    assert isinstance(off, losses.OffsetCrossEntropyLoss)
    assert off.offset == pytest.approx(2 * math.sqrt(2) * 2.0 * 36 / 255)
    assert common.config_key(cfg.key("onelip", "offset", 36.0)) != \
        common.config_key(ce.key("onelip", "offset", 36.0))


class _Spy(losses.LogitAnnealingLoss):
    def __init__(self):
        super().__init__(36 / 255)
        self.seen = []

    def forward(self, input, target):
        self.seen.append(self.epsilon_scale)
        return super().forward(input, target)


def test_the_epsilon_ramp_scales_the_loss_over_its_fraction_of_the_budget():
    data = _digits()
    spy = _Spy()
    vision.train_budgeted(_tiny_net(data), data, spy, vision.Recipe(batch_size=50,
                                                                    epsilon_ramp=0.5),
                          vision.Budget(epochs=1.5), seed=0)  # 6 steps: p = 0, 1/6, … 5/6
    assert spy.seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert spy.epsilon_scale == 1.0, "the loss is left at its full ε"
    with pytest.raises(ValueError, match="needs a loss with an ε"):
        vision.train_budgeted(_tiny_net(data), data, losses.TauCrossEntropyLoss(8.0),
                              vision.Recipe(epsilon_ramp=0.3), vision.Budget(epochs=1.0), seed=0)
    with pytest.raises(ValueError, match="epsilon_ramp, a fraction"):
        vision.Recipe(epsilon_ramp=-0.1)


def test_a_budget_is_cpu_seconds_or_epochs():
    with pytest.raises(ValueError, match="exactly one"):
        vision.Budget()
    with pytest.raises(ValueError, match="exactly one"):
        vision.Budget(cpu_seconds=1.0, epochs=1.0)
    assert vision.Budget(cpu_seconds=1200).text() == "20 min of CPU time"
    assert vision.Budget(epochs=3).text() == "3 epochs"


# ==== verdicts on hand-made points ==========================================================


def _sub(value, clean, cert):
    return {"value": value, "val_acc": clean, "certified": {"36": cert, "72": 0.0,
                                                             "108": 0.0},
            "cpu_seconds": 1200.0, "threads": 1, "epochs": 3.0, "steps": 270, "n_train": 45000,
            "n_val": 5000, "device": "CPU, 1 torch thread(s)"}


def _results(onelip_points, paper_spectral=None, saved=()):
    cfg = pareto.ParetoConfig(data="folder:x")
    sweep = cfg.sweeps("onelip")[0]
    nets = {"onelip": {sweep: [_sub(v, c, r) for v, (c, r) in
                               zip(cfg.values(sweep), onelip_points)]}}
    if paper_spectral is not None:
        nets["paper-spectral"] = paper_spectral
    return {"config": config_dict(cfg), "networks": nets, "saved": list(saved)}


def _verdict(results, start):
    return next(v for v in pareto.verdicts(results) if v["claim"].startswith(start))


def test_domination_verdict_on_hand_made_points():
    # one onelip point above every paper point with clean <= 80 %: dominated in every band
    top = (0.80, 0.44)
    v = _verdict(_results([top, (0.5, 0.1)]), "Fig. 3: onelip's network dominates")
    assert v["agree"], v["measured"]
    assert "0–65 %: 1 of 1 dominated" in v["measured"]
    assert "75–80 %: 5 of 5 dominated" in v["measured"]
    assert "hinge m = 20 (80.2, 14.4) gap 0.2 pt" in v["measured"], "> 80 % named, with gap"
    # lower it by 2 points of certified accuracy: (0.698, 0.437) and (0.575, 0.437) are no
    # longer covered, the gap is 1.7 points
    v = _verdict(_results([(0.80, 0.42), (0.5, 0.1)]), "Fig. 3: onelip's network dominates")
    assert not v["agree"] and "65–70 %: 1 of 2 dominated, gap 1.7 pt" in v["measured"]
    rows = pareto.domination([(0.80, 0.42)])
    gaps = {(d["sweep"], d["value"]): d["gap"] for d in rows}
    assert gaps[("margin", 100.0)] == pytest.approx(0.017)
    assert gaps[("alpha", 10.0)] == 0.0 and gaps[("alpha", 5.0)] == pytest.approx(0.017)
    assert [d["band"] for d in rows].count(None) == 9, "nine paper points above 80 % clean"


def test_a_saved_point_counts_toward_domination_and_the_70_percent_target(tmp_path):
    path = tmp_path / "cifar10-hour.json"
    path.write_text(json.dumps({
        "model": "lipconvnet", "recipe": {"loss": "offset-ce:temperature=0.25",
                                          "budget_seconds": 3600, "threads": 2},
        "validation": {"clean": 0.72, "certified": {"36": 0.58, "72": 0.4, "108": 0.2},
                       "val_size": 5000, "epochs": 30.5},
        "split": {"val_size": 5000, "split_seed": 0}, "written_by": "benchmarks/x.py"}))
    p = pareto.read_point(path)
    assert (p["val_acc"], p["certified"]["36"], p["epochs"]) == (0.72, 0.58, 30.5)
    assert p["budget"] == "60 min of wall-clock, 2 thread(s)" and "seed 0" in p["split"]
    res = _results([(0.5, 0.3)], saved=[p])
    at70 = _verdict(res, "Fig. 3: onelip's network at 70 % clean")
    assert at70["agree"] and "58.0 % certified at 70 % clean" in at70["measured"]
    assert "43.4 % certified" in at70["research"], "the paper's front interpolated at 70 %"
    res = _results([(0.5, 0.3)])
    at70 = _verdict(res, "Fig. 3: onelip's network at 70 % clean")
    assert not at70["agree"] and "does not reach 70 % clean" in at70["measured"]
    plain = tmp_path / "figures.json"
    plain.write_text(json.dumps({"clean": 0.6, "certified": {"36": 0.5}}))
    assert pareto.read_point(plain)["name"] == "figures"
    for bad in ({"clean": 0.6}, {"clean": 60, "certified": {"36": 0.5}}):
        plain.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="no validation figures") as info:
            pareto.read_point(plain)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="cannot read it"):
        pareto.read_point(tmp_path / "missing.json")


def test_certified_at_interpolates_on_the_front():
    assert pareto.certified_at([(0.6, 0.6), (0.8, 0.2)], 0.7) == pytest.approx(0.4)
    assert pareto.certified_at([(0.75, 0.5), (0.9, 0.1)], 0.7) == 0.5
    assert pareto.certified_at([(0.6, 0.6)], 0.7) is None
    # a dominated point does not bend the front
    assert pareto.certified_at([(0.6, 0.6), (0.65, 0.1), (0.8, 0.2)], 0.7) == \
        pytest.approx(0.4)


def test_order_verdict_is_the_papers_on_its_own_points_and_flips_when_reversed():
    for sweep in pareto.SWEEPS:
        pts = [(v, c, r) for v, (c, r) in pareto.PAPER[sweep].items()]
        assert pareto.order(sweep, pts)["agree"], sweep
        flipped = [(v, c, r) for (v, _, _), (_, c, r) in zip(pts, reversed(pts))]
        assert not pareto.order(sweep, flipped)["agree"], sweep
    paper = {"tau": [_sub(0.05, 0.50, 0.40), _sub(0.5, 0.55, 0.30), _sub(3.0, 0.60, 0.1)],
             "margin": [_sub(2.0, 0.5, 0.40), _sub(100.0, 0.6, 0.1)], "alpha": []}
    vs = {v["claim"]: v for v in pareto.verdicts(_results([(0.5, 0.1)], paper))}
    tau = vs["Fig. 3 order, τ-CE, the paper's VGG in onelip, SpectralConv2d (its 489,322 "
             "parameters): small τ robust"]
    assert tau["agree"] and "ρ with clean +1.00, with certified -1.00" in tau["measured"]
    hinge = next(v for k, v in vs.items() if k.startswith("Fig. 3 order, hinge"))
    assert not hinge["agree"], "large m robust: here m = 2 is the more certified"
    setting = next(v for k, v in vs.items() if "setting by setting" in k)
    assert not setting["agree"] and "0 of 5 settings within 5 points" in setting["measured"]


# ==== resume from the cache, two at a time ==================================================


def _tiny(**kw):
    return replace(pareto.ParetoConfig.quick(), n_train=120, n_val=40, taus=(0.1,),
                   margins=(36.0,), alphas=(10.0,), offsets=(0.0, 72.0), epochs=1.0,
                   networks=("paper-spectral", "onelip"), paper_batch_size=64,
                   onelip_batch_size=64,
                   paper_net=(("preset", "bethune-vgg"), ("width", 4), ("hidden", (8,))),
                   onelip_net=(("width", 4), ("blocks", 2), ("depth", 1)), **kw)


def test_pareto_resumes_from_its_cache_and_reports_what_did_not_run(tmp_path):
    cfg = _tiny()
    out = tmp_path / "claims"
    r = pareto.run(cfg, out=out, progress=False)
    assert r["subruns"]["ran"] == 5 and set(r["networks"]) == {"paper-spectral", "onelip"}
    x = r["networks"]["paper-spectral"]["alpha"][0]
    assert x["loss"] == "MulticlassHKRLoss(9, 0.07843, one_vs_all)"
    assert x["params"] > 0 and x["budget"] == "1 epoch" and x["threads"] == 1
    files = {json.loads(p.read_text())["name"]: p for p in (out / "pareto/runs").glob("*.json")}
    assert set(files) == {"paper-spectral τ=0.1", "paper-spectral m=36",
                          "paper-spectral α=10", "onelip ξ=0", "onelip ξ=4"}
    files["onelip ξ=4"].unlink()
    past = time.monotonic() - 1
    again = pareto.run(cfg, out=out, progress=False, deadline=past)
    assert again["subruns"]["cached"] == 4 and again["subruns"]["not_run"] == ["onelip ξ=4"]
    row = next(t for t in again["tables"] if t["title"].startswith("onelip"))["rows"][1]
    assert row[0] == "ξ = 4" and row[2] == "not run"
    again = pareto.run(cfg, out=out, progress=False)
    assert again["subruns"]["ran"] == 1 and again["subruns"]["cached"] == 4
    assert again["networks"]["paper-spectral"] == r["networks"]["paper-spectral"]


def test_a_cpu_point_budget_starts_no_sub_run_it_cannot_finish(tmp_path):
    cfg = _tiny(point_budget=600.0)
    deadline = time.monotonic() + 300  # less than one 600-second sub-run
    with pytest.raises(common.ClaimNotRun):
        pareto.run(cfg, out=tmp_path, progress=False, deadline=deadline)
    assert not list((tmp_path / "pareto" / "runs").glob("*.json"))
    assert cfg.expected_seconds() == pytest.approx(1.05 * 600 + 60)


def test_subruns_map_runs_two_at_a_time_in_their_own_processes_and_caches(tmp_path):
    items = [(f"s{i}", {"k": i}, ()) for i in range(2)]
    with SubRuns("c", tmp_path, total=2, progress=False) as runs:
        res = runs.map(items, common.environment, jobs=2)
        assert runs.stats()["ran"] == 2
    assert all(r["onelip"] and "torch_threads" in r for r in res)
    more = items + [("s2", {"k": 2}, ())]
    with SubRuns("c", tmp_path, total=3, progress=False, deadline=0.0, partial=True) as runs:
        got = runs.map(more, common.environment, jobs=2)
        assert got[:2] == res and got[2] is None, "cached ones read, none run past the deadline"
        assert runs.stats()["cached"] == 2 and runs.stats()["not_run"] == ["s2"]


# ==== the command line ======================================================================


def test_pareto_flags_reach_its_config_and_other_claims_refuse_them(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["reproduce", "snowflake", "--quick", "--point-budget", "5m", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert "--point-budget: snowflake has no such setting" in err and err.count("\n") == 1
    assert main(["reproduce", "pareto", "--quick", "--add-point", str(tmp_path / "no.json"),
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no.json: cannot read it" in err and err.count("\n") == 1
    from onelip.cli import build_parser
    from onelip.cli.reproduce import _overrides

    args = build_parser().parse_args(["reproduce", "pareto", "--quick", "--out", str(out),
                                      "--point-budget", "20m", "--jobs", "2", "--add-point",
                                      "a.json"])
    assert _overrides(["pareto"], args) == {"point_budget": 1200.0, "jobs": 2,
                                            "saved_points": ("a.json",)}


def test_the_quick_preset_is_valid_and_small():
    cfg = pareto.ParetoConfig.quick()
    assert cfg.point_budget is None and cfg.data == "digits"
    assert math.isfinite(cfg.epochs) and cfg.jobs == 1

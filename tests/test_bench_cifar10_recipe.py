# SPDX-License-Identifier: MIT
"""benchmarks/cifar10.py --recipe-from (issue 21): reading the one-hour recipe, the baseline
beside the new figures, each network's loss by the rule. Fake JSON files only: no CIFAR-10, no
training, no peers."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def c10():
    if "cifar10" in sys.modules:  # benchmarks/cifar10_hour.py imports it by that name
        return sys.modules["cifar10"]
    spec = importlib.util.spec_from_file_location("cifar10", REPO / "benchmarks" / "cifar10.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cifar10"] = mod
    spec.loader.exec_module(mod)
    return mod


GRID_9 = {"family": "shift", "norm": "center", "loss": "offset-ce:temperature=0.25",
          "optimizer": "nesterov", "lr": 0.05, "weight_decay": 1e-4, "epsilon_ramp": 0.3,
          "amp": False}


def _write(path: Path, d: dict) -> Path:
    path.write_text(json.dumps(d))
    return path


def _cands(clean: dict, cert: dict, loss: dict, *, titled: bool = True) -> dict:
    return {n: {**({"title": n} if titled else {}), "loss": loss[n], "clean": clean[n],
                "certified": {"36": cert[n], "72": cert[n] / 2, "108": 0.0, "255": 0.0},
                "predicted_classes": 10} for n in clean}


def test_recipe_from_an_hour_result_is_its_winners_grid_recipe(c10, tmp_path):
    d = {"grid": {"1": dict(GRID_9, family="ortho", norm="std"), "9": GRID_9},
         "winner": 9, "headline": None}
    r = c10.load_recipe(_write(tmp_path / "hour.json", d))
    assert {k: r[k] for k in GRID_9} == GRID_9
    assert "(9)" in r["from"]
    d["winner"] = None
    with pytest.raises(ValueError, match="no winner yet"):
        c10.load_recipe(_write(tmp_path / "hour.json", d))


def test_recipe_from_a_saved_network_reads_family_and_normalisation(c10, tmp_path):
    saved = {"model": "lipconvnet", "config": {"layer": "shift", "std": [1.0, 1.0, 1.0]},
             "recipe": {"loss": "ce:tau=0.25", "lr": 0.003}}
    r = c10.load_recipe(_write(tmp_path / "net.json", saved))
    # no optimizer / normalisation recorded: train()'s Adam, centred as its config says
    assert (r["family"], r["norm"], r["optimizer"], r["lr"]) == ("shift", "center", "adam",
                                                                 0.003)
    saved["config"]["std"] = [0.25, 0.24, 0.26]
    assert c10.load_recipe(_write(tmp_path / "net.json", saved))["norm"] == "std"
    saved["recipe"]["normalisation"] = "center"  # recorded: it wins
    assert c10.load_recipe(_write(tmp_path / "net.json", saved))["norm"] == "center"
    saved["family"] = "nope"
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        c10.load_recipe(_write(tmp_path / "net.json", saved))
    with pytest.raises(ValueError, match="neither a cifar10_hour result"):
        c10.load_recipe(_write(tmp_path / "other.json", {"loss": "ce:tau=1"}))


def test_choose_ranks_a_constant_classifier_last(c10):
    rows = [{"loss": "a", "clean": 0.10, "certified": {"36": 0.10}, "predicted_classes": 1},
            {"loss": "b", "clean": 0.30, "certified": {"36": 0.05}, "predicted_classes": 10},
            {"loss": "c", "error": "exit 1"}]
    assert c10.choose(rows)["loss"] == "b"
    assert c10.choose(rows[:1] + rows[2:])["loss"] == "a"  # only it left


def _args(tmp_path: Path, **kw) -> argparse.Namespace:
    base = {"recipe_from": None, "baseline": None, "peer_losses": None, "out": tmp_path}
    return argparse.Namespace(**(base | kw))


def test_prepare_recipe_reads_and_keeps_the_baseline_before_the_run(c10, tmp_path):
    hour = _write(tmp_path / "hour.json", {"grid": {"9": GRID_9}, "winner": 9})
    old = {"command": "benchmarks/cifar10.py --sweep", "written": "then", "budget_s": 1200.0,
           "loss": "ce:tau=0.5", "lr": 1e-3, "sweep": {"rows": []}, "args": {},
           "candidates": _cands({"onelip": 0.45, "deel": 0.09}, {"onelip": 0.36, "deel": 0.0},
                                {"onelip": "ce:tau=0.5", "deel": "ce:tau=0.5"})}
    _write(tmp_path / "cifar10.json", old)
    prep = c10.prepare_recipe(_args(tmp_path, recipe_from=hour))
    # default specs: the recipe's loss and the baseline's
    assert prep["losses"] == ["offset-ce:temperature=0.25", "ce:tau=0.5"]
    assert prep["baseline"]["networks"]["onelip"]["clean"] == 0.45
    kept = tmp_path / "cifar10_before_recipe.json"
    assert json.loads(kept.read_text()) == old
    _write(tmp_path / "cifar10.json", dict(old, loss="ce:tau=4"))
    c10.prepare_recipe(_args(tmp_path, recipe_from=hour))
    assert json.loads(kept.read_text()) == old  # an existing copy is never overwritten
    # a recipe run's own results carry its baseline over
    _write(tmp_path / "cifar10.json", {"recipe": {"loss": "x"}, "baseline": prep["baseline"]})
    again = c10.prepare_recipe(_args(tmp_path, recipe_from=hour, peer_losses="ce:tau=1;;"))
    assert again["baseline"]["networks"] == prep["baseline"]["networks"]
    assert again["losses"] == ["ce:tau=1"]
    with pytest.raises(SystemExit, match="--peer-losses 'bogus:x=1'"):
        c10.prepare_recipe(_args(tmp_path, recipe_from=hour, peer_losses="ce:tau=1;bogus:x=1"))
    assert c10.prepare_recipe(_args(tmp_path, recipe_from=hour,
                                    baseline=Path("none")))["baseline"] is None


def test_report_puts_each_networks_loss_and_the_baseline_beside_the_new_figures(c10, tmp_path):
    base = c10.baseline_summary(_write(tmp_path / "old.json", {
        "command": "old", "written": "then", "budget_s": 1200.0, "loss": "ce:tau=0.25",
        "lr": 1e-3, "args": {"train_limit": 0},
        "candidates": _cands({"onelip": 0.45, "orthogonium": 0.33},
                             {"onelip": 0.36, "orthogonium": 0.22},
                             {"onelip": "ce:tau=0.25", "orthogonium": "ce:tau=0.25"},
                             titled=False)}))  # the benchmark's titles: onelip (OrthoConv2d)
    cands = _cands({"onelip": 0.50, "orthogonium": 0.30}, {"onelip": 0.40, "orthogonium": 0.25},
                   {"onelip": "offset-ce:temperature=0.25", "orthogonium": "ce:tau=0.25"})
    for n, r in cands.items():
        r["title"] = c10.title_of(n, "shift")  # as the workers name them
    cands["onelip"].update(loss_class="OffsetCrossEntropyLoss",
                           loss_values={"offset": 0.4}, lipschitz_at_init=1.0,
                           lipschitz_at_init_from="init", epsilon_ramp=0.3)
    rec = dict(GRID_9, text="shift, center", source="hour.json", amp_used=False, amp_note=None)
    rec["from"] = "a fake hour result"
    result = {"recipe": rec, "candidates": cands, "baseline": base, "budget_s": 1200.0,
              "args": {"train_limit": 0}, "std": [0.25, 0.24, 0.26], "loss_rule": "rule.",
              "peer_sweep": {"budget_s": 180.0, "clock": "wall", "jobs": 2, "threads": 1,
                             "losses": ["offset-ce:temperature=0.25", "ce:tau=0.25"],
                             "rule": "rule.", "networks": {
                                 n: {"rows": [dict(cands[n], epochs_done=1.0)],
                                     "chosen": cands[n]["loss"]} for n in cands}}}
    apart = c10.before_after_markdown(result)
    text = "\n".join(apart + c10.recipe_markdown(result) + c10.peer_sweep_markdown(result))
    rows = {ln.split(" | ")[0]: ln for ln in apart if ln.startswith("| ")}
    after = rows["| onelip (OrthoConv2d) → onelip (ShiftConv2d)"]
    assert "`ce:tau=0.25`" in after and "`offset-ce:temperature=0.25`" in after
    assert after.rstrip(" |").endswith("+5.0 | +4.0")  # clean, cert@36 in points
    assert rows["| orthogonium (AOC)"].rstrip(" |").endswith("-3.0 | +3.0")
    assert "The same budget and data." in text
    assert "**(chosen)**" in text and "Normalize(mean, 1)" in text
    assert "the loss takes no L" in text  # τ-CE: no L given
    result["args"]["train_limit"] = 512
    assert "**Not the same budget or training data**" in "\n".join(
        c10.before_after_markdown(result))


def test_the_report_says_when_the_machine_speed_changed(c10):
    """A wall-clock budget buys what the machine gives: when the unchanged layers (here
    orthogonium's; onelip's changed family is left out) trained at another speed before, the
    before/after table says so with the ratio; within 25 % it says the speed matched."""
    before = {"networks": {"onelip": {"images_per_second": 235.0},
                           "orthogonium": {"images_per_second": 171.0}}}
    after = {"onelip": {"title": "onelip (ShiftConv2d)", "images_per_second": 136.0},
             "orthogonium": {"title": "orthogonium (AOC)", "images_per_second": 76.0}}
    note = c10.machine_speed_note(before, after, "shift")
    assert note.startswith("**The machine differs.**")
    assert "orthogonium (AOC) 171 → 76 images/s (0.44×)" in note and "onelip" not in note
    after["orthogonium"]["images_per_second"] = 160.0
    assert "the same machine speed" in c10.machine_speed_note(before, after, "shift")
    after["orthogonium"]["error"] = "killed"
    assert c10.machine_speed_note(before, after, "shift") is None


def test_onelips_margin_loss_gets_its_bound_at_initialisation(c10):
    import torch

    x = torch.rand(2, 3, 32, 32)
    std = [0.25, 0.2, 0.5]
    model = c10.build_network(c10.ONELIP, [0.5] * 3, std, family="ortho")
    lip, _ = c10.init_bound(c10.ONELIP, model, x)
    assert lip == pytest.approx(1 / min(std), rel=1e-5)
    model = c10.build_network(c10.ONELIP, [0.5] * 3, [1.0] * 3)
    assert c10.init_bound(c10.ONELIP, model, x)[0] == pytest.approx(1.0, rel=1e-5)

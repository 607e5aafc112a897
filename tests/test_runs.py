# SPDX-License-Identifier: MIT
"""Run folders (onelip.runs): nothing lost (``--force`` replaces only run folders, a run is
renamed into place when complete, unwritable places fail before training), nothing silently
wrong (digests of the weights and of the model config, verified on load), and any network of
onelip.nn / torch.nn layers can be a run."""

from __future__ import annotations

import inspect
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from onelip import models, runs
from onelip import nn as onn
from onelip._errors import CheckpointError, OutputError
from onelip.cli import main

TINY = ["--data", "two-moons", "--n-samples", "200", "--epochs", "1", "--width", "8",
        "--depth", "1", "--quiet"]


def _tiny_run(path: Path, **kw) -> Path:
    torch.manual_seed(0)
    model, cfg = models.build("mlp", in_features=2, num_outputs=1, hidden=[8],
                              activation="maxmin")
    return runs.save(model, path, model_name="mlp", model_config=cfg, **kw)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _one_line(capsys, rc: int, match: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onelip: error: "), lines
    assert match in lines[0], lines[0]
    return lines[0]


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def no_training(monkeypatch):
    """Make any training step fail the test: for errors that must come before training."""
    def fit(*a, **k):
        raise AssertionError("training started before the error")

    monkeypatch.setattr("onelip.train.fit", fit)


# ==== --force and where a run may go ========================================================


def test_force_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys, no_training):
    thesis = tmp_path / "p" / "thesis.tex"
    thesis.parent.mkdir()
    thesis.write_text("three years of work")
    rc = main(["train", *TINY, "--out", str(thesis.parent), "--force"])
    _one_line(capsys, rc, "is not a onelip run folder")
    assert thesis.read_text() == "three years of work"
    with pytest.raises(OutputError, match="not a onelip run folder"):
        _tiny_run(thesis.parent, overwrite=True)
    assert thesis.read_text() == "three years of work"


@pytest.mark.parametrize("out", [".", "..", "sub/..", "/"])
def test_force_refuses_the_current_folder_and_those_above(tmp_path, monkeypatch, capsys,
                                                         no_training, out):
    work = tmp_path / "work"
    _tiny_run(work)  # even a run folder: `--out .` would empty the current folder
    (work / "sub").mkdir()
    (work / "notes.txt").write_text("keep")
    monkeypatch.chdir(work)
    rc = main(["train", *TINY, "--out", out, "--force"])
    _one_line(capsys, rc, "current folder or a folder above it")
    assert (work / "notes.txt").read_text() == "keep"
    assert (work / "model.safetensors").exists()


def test_force_refuses_a_run_folder_holding_other_folders(tmp_path, capsys, no_training):
    run = _tiny_run(tmp_path / "run")
    (run / "plots").mkdir()
    (run / "plots" / "a.png").write_bytes(b"png")
    rc = main(["train", *TINY, "--out", str(run), "--force"])
    _one_line(capsys, rc, "holds folders that no run writes (plots)")
    assert (run / "plots" / "a.png").exists()


def test_force_refuses_a_run_folder_holding_a_users_file(tmp_path, capsys, no_training):
    """A real run in which the user saved a file of their own: --force would delete it."""
    run = _tiny_run(tmp_path / "run")
    (run / "thesis.tex").write_text("three years of work")
    rc = main(["train", *TINY, "--out", str(run), "--force"])
    _one_line(capsys, rc, "holds files that no run writes (thesis.tex)")
    assert (run / "thesis.tex").read_text() == "three years of work"
    with pytest.raises(OutputError, match="thesis.tex"):
        _tiny_run(run, overwrite=True)
    assert (run / "thesis.tex").exists() and runs.is_run_folder(run)


def test_force_replaces_a_run_folder_whole(tmp_path, capsys):
    run = _tiny_run(tmp_path / "run")
    (run / "certify.json").write_text("{}")  # a file of the old run: gone with it
    assert main(["train", *TINY, "--out", str(run), "--force"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors", "config.json",
                                                       "metrics.json", "model.safetensors"]
    assert _hidden(tmp_path) == [], "temporary or old folders left behind"
    runs.load(run)


def test_library_save_refuses_an_existing_run_without_overwrite(tmp_path):
    run = _tiny_run(tmp_path / "run")
    before = _snapshot(run)
    with pytest.raises(OutputError, match="already exists"):
        _tiny_run(run)
    assert _snapshot(run) == before
    _tiny_run(run, overwrite=True)
    _tiny_run(tmp_path / "empty")  # an empty folder may be filled
    (tmp_path / "empty2").mkdir()
    _tiny_run(tmp_path / "empty2")
    assert runs.is_run_folder(tmp_path / "empty2")


@pytest.mark.parametrize("where", ["under a file", "under /proc", "a file"])
def test_unwritable_out_fails_before_the_first_training_step(tmp_path, capsys, no_training,
                                                            where):
    """As root chmod does not stop writes, so unwritable places are a path under a file
    (mkdir fails with ENOTDIR) and /proc (no new files there, root or not)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {"under a file": afile / "run", "under /proc": Path("/proc/onelip-run"),
           "a file": afile}[where]
    rc = main(["train", *TINY, "--out", str(out)])
    line = _one_line(capsys, rc, str(out))
    assert "is a file" in line or "not writable" in line, line
    assert afile.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders: covered by /proc above")
def test_read_only_parent_fails_before_training(tmp_path, capsys, no_training):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _one_line(capsys, main(["train", *TINY, "--out", str(ro / "run")]), "not writable")
    finally:
        ro.chmod(0o755)


# ==== a crash leaves the old run as it was ==================================================


def test_crash_during_training_leaves_the_old_run_intact(tmp_path, capsys, monkeypatch):
    run = _tiny_run(tmp_path / "run")
    before = _snapshot(run)

    def crash(*a, **k):
        raise FloatingPointError("loss became nan at epoch 1; lower the learning rate")

    monkeypatch.setattr("onelip.train.fit", crash)
    _one_line(capsys, main(["train", *TINY, "--out", str(run), "--force"]), "loss became nan")
    assert _snapshot(run) == before
    assert _hidden(tmp_path) == []


def test_crash_while_writing_leaves_the_old_run_intact(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path / "run")
    before = _snapshot(run)

    def broken(state, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="No space"):
        _tiny_run(run, overwrite=True)
    assert _snapshot(run) == before
    assert _hidden(tmp_path) == []


def test_failed_rename_puts_the_old_run_back(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path / "run")
    before = _snapshot(run)
    real = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new run into place (the old one was moved aside)
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="Input/output"):
        _tiny_run(run, overwrite=True)
    monkeypatch.setattr(os, "rename", real)
    assert _snapshot(run) == before
    assert _hidden(tmp_path) == []


def test_every_run_file_is_written_atomically_and_readable_by_others(tmp_path, monkeypatch):
    """Files of a run get the permissions of any new file (0644 under umask 022), not the
    0600 of a temporary file; and under umask 077 they stay private."""
    seen: list[str] = []
    import onelip._io as io_mod

    real = io_mod.atomic_path

    def spy(path, **kw):
        seen.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(io_mod, "atomic_path", spy)
    monkeypatch.setattr(runs, "atomic_path", spy)
    old = os.umask(0o022)
    try:
        assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 0
        assert main(["certify", str(tmp_path / "run"), "--eps", "0.1"]) == 0
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
        assert modes == dict.fromkeys(["checkpoint.safetensors", "config.json", "metrics.json",
                                       "model.safetensors", "certify.json"], 0o644), modes
        assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755
        os.umask(0o077)
        _tiny_run(tmp_path / "private")
        assert {stat.S_IMODE(p.stat().st_mode)
                for p in (tmp_path / "private").iterdir()} == {0o600}
    finally:
        os.umask(old)
    assert sorted(set(seen)) == ["certify.json", "checkpoint.safetensors", "config.json",
                                 "metrics.json", "model.safetensors"]


# ==== integrity =============================================================================


@pytest.fixture
def trained(tmp_path) -> Path:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_changed_weight_is_refused_naming_the_weights_file(trained, capsys):
    w = trained / "model.safetensors"
    state = load_file(str(w))
    key = next(k for k in state if k.endswith("weight"))
    state[key].view(-1)[0] = 1e30  # finite, right shape: only the digest can tell
    save_file(state, str(w), metadata={"onelip_version": "0.1.0"})
    with pytest.raises(CheckpointError, match=r"model\.safetensors changed since the run"):
        runs.load(trained)
    for command in (["certify", str(trained), "--eps", "0.1"], ["inspect", str(trained)]):
        _one_line(capsys, main(command), "model.safetensors changed")


def test_edited_model_config_is_refused_naming_config_json(trained, capsys):
    c = trained / "config.json"
    cfg = json.loads(c.read_text())
    assert cfg["model"]["config"]["activation"] == "maxmin"
    cfg["model"]["config"]["activation"] = "abs"  # same weights, another network
    c.write_text(json.dumps(cfg, indent=2))
    with pytest.raises(CheckpointError, match=r"config\.json changed since the run was written"):
        runs.load(trained)
    _one_line(capsys, main(["certify", str(trained), "--eps", "0.1"]), "config.json changed")


def test_removed_integrity_record_is_refused(trained):
    c = trained / "config.json"
    cfg = json.loads(c.read_text())
    del cfg["integrity"]
    cfg["model"]["config"]["activation"] = "abs"
    c.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json changed.*integrity record"):
        runs.load(trained)


def test_other_sections_of_config_may_change(trained):
    c = trained / "config.json"
    cfg = json.loads(c.read_text())
    cfg["data"]["note"] = "relabelled by hand"
    c.write_text(json.dumps(cfg, indent=4))  # and another layout: the digest is canonical
    runs.load(trained)


def test_runs_written_without_digests_still_load(trained):
    """Older runs (no integrity entry, no digest in the weights' metadata) load unverified."""
    c, w = trained / "config.json", trained / "model.safetensors"
    cfg = json.loads(c.read_text())
    del cfg["integrity"]
    c.write_text(json.dumps(cfg))
    save_file(load_file(str(w)), str(w), metadata={"onelip_version": "0.1.0"})
    model, _ = runs.load(trained)
    assert not model.training


# ==== any network in a run folder ===========================================================


def _custom_net() -> nn.Module:
    torch.manual_seed(0)
    return onn.Sequential(
        onn.ToImage((2, 8, 8)),
        onn.OrthoConv2d(2, 4, 3, padding_mode="circular"), onn.GroupSort(2),
        onn.SpectralConv2d(4, 4, 3, input_size=(8, 8), padding=1, bias=False),
        onn.BatchCentering(4, momentum=0.1), onn.MaxMin(),
        onn.SLLConv2d(4, 6, 3),
        onn.OrthoConv2d(4, 8, 2, stride=2), onn.FullSort(),
        onn.ScaledAvgPool2d(2), onn.InvertibleDownsample(2), onn.LayerCentering(),
        onn.GlobalL2NormPool2d(), onn.Flatten(),
        onn.SLLBlock(32, 16), nn.Identity(), onn.SpectralLinear(32, 16, n_power_iterations=2),
        onn.Abs(), onn.OrthoLinear(16, 8, bias=False), onn.FrobeniusLinear(8, 3, per_row=True),
    )


def test_a_hand_built_network_is_a_run(tmp_path):
    net = _custom_net()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        net[4].running_mean.normal_()
    run = runs.save(net, tmp_path / "mine", input_shape=(2, 8, 8))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["name"] == "custom" and cfg["model"]["input_shape"] == [2, 8, 8]
    assert cfg["model"]["architecture"]["children"]["7"]["kwargs"]["stride"] == 2
    loaded, _ = runs.load(run)
    x = torch.rand(5, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    assert [type(m) for m in loaded.modules()] == [type(m) for m in net.modules()]


def test_cli_commands_work_on_a_hand_built_network(tmp_path, capsys):
    torch.manual_seed(0)
    net = onn.Sequential(onn.OrthoLinear(2, 8), onn.MaxMin(), onn.OrthoLinear(8, 1))
    run = runs.save(net, tmp_path / "mine",
                    extra={"data": {"name": "two-moons", "n_samples": 200}})
    assert main(["certify", str(run), "--eps", "0.1"]) == 0
    assert main(["inspect", str(run), "--points", "8"]) == 0
    out = tmp_path / "mine.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(out)]) == 0
    assert "max |export - model|" in capsys.readouterr().out


def test_certify_checks_a_hand_built_runs_input_shape(tmp_path, capsys):
    """The shape recorded beside a custom architecture is checked against the data, as a
    built-in model's config is: one line that names both shapes, not a layer's error."""
    torch.manual_seed(0)
    net = onn.Sequential(onn.OrthoLinear(3, 8), onn.MaxMin(), onn.OrthoLinear(8, 1))
    run = runs.save(net, tmp_path / "mine", input_shape=(3,),
                    extra={"data": {"name": "two-moons", "n_samples": 200}})
    capsys.readouterr()
    assert main(["certify", str(run), "--eps", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "samples of shape (2,), but the run takes (3,)" in err, err


def test_a_layer_of_another_package_cannot_be_saved(tmp_path):
    class Mine(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match=r"Mine cannot be described.*torch\.nn, onelip\.nn"):
        runs.save(onn.Sequential(onn.OrthoLinear(2, 2), Mine()), tmp_path / "r")
    assert not (tmp_path / "r").exists() and _hidden(tmp_path) == []


def test_an_architecture_naming_other_code_is_refused(tmp_path):
    run = runs.save(onn.Sequential(onn.OrthoLinear(2, 2)), tmp_path / "r")
    c = run / "config.json"
    cfg = json.loads(c.read_text())
    cfg["model"]["architecture"]["children"]["0"]["type"] = "os.system"
    c.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown module type 'os.system'"):
        runs.load(run)


# Layers whose constructor arguments are not all stored as attributes of the same name (so no
# description can rebuild them); onelip.nn must store them. Kept strict: fixing one fails here.
_NOT_DESCRIBABLE: dict[str, str] = {}

_IMG, _VEC = (4, 4, 4), (4,)
_EXAMPLES = {  # name: (an instance with arguments off their defaults, the shape of one input)
    "Abs": (lambda: onn.Abs(), _VEC),
    "BatchCentering": (lambda: onn.BatchCentering(4, momentum=0.2, bias=False), _IMG),
    "ChannelShift": (lambda: onn.ChannelShift(4), _IMG),
    "ConvexResidual": (lambda: onn.ConvexResidual(onn.Abs(), 0.3, learnable=True), _VEC),
    "Flatten": (lambda: onn.Flatten(), _IMG),
    "FrobeniusLinear": (lambda: onn.FrobeniusLinear(4, 2, per_row=True), _VEC),
    "FullSort": (lambda: onn.FullSort(), _VEC),
    "GlobalL2NormPool2d": (lambda: onn.GlobalL2NormPool2d(eps=1e-9), _IMG),
    "GroupSort": (lambda: onn.GroupSort(4), _VEC),
    "InvertibleDownsample": (lambda: onn.InvertibleDownsample(2), _IMG),
    "L2NormPool2d": (lambda: onn.L2NormPool2d(2, 1), _IMG),
    "LayerCentering": (lambda: onn.LayerCentering(dim=(1,)), _IMG),
    "MaxMin": (lambda: onn.MaxMin(), _VEC),
    "OrthoConv2d": (lambda: onn.OrthoConv2d(4, 8, 4, stride=2, bias=False), _IMG),
    "OrthoLinear": (lambda: onn.OrthoLinear(4, 5, bias=False), _VEC),
    "Residual": (lambda: onn.Residual(onn.Abs(), skip=0.25, scale=0.5), _VEC),
    "SLLBlock": (lambda: onn.SLLBlock(4, 3), _VEC),
    "SLLConv2d": (lambda: onn.SLLConv2d(4, 2, 5), _IMG),
    "ScaledAvgPool2d": (lambda: onn.ScaledAvgPool2d(3, 1, 1, input_size=(4, 4)), _IMG),
    "Sequential": (lambda: onn.Sequential(onn.OrthoLinear(4, 4), onn.MaxMin()), _VEC),
    "SpectralConv2d": (lambda: onn.SpectralConv2d(4, 2, 3, input_size=(4, 4), stride=2,
                                                  padding=0, n_power_iterations=2), _IMG),
    "SpectralLinear": (lambda: onn.SpectralLinear(4, 2, n_power_iterations=4), _VEC),
    "ToImage": (lambda: onn.ToImage((1, 2, 2)), _VEC),
    "AOLConv2d": (lambda: onn.AOLConv2d(4, 6, 3, stride=2, padding_mode="circular",
                                        learnable_q=True), _IMG),
    "AOLLinear": (lambda: onn.AOLLinear(4, 3, bias=False, learnable_q=True), _VEC),
    "RKOConv2d": (lambda: onn.RKOConv2d(4, 6, 3, stride=2, iterations=10), _IMG),
    "CPLConv2d": (lambda: onn.CPLConv2d(4, 6, 3, input_size=(4, 4), stride=2,
                                        inner_channels=5), _IMG),
    "CPLLinear": (lambda: onn.CPLLinear(4, 3, inner_features=6, bias=False), _VEC),
    "SOCConv2d": (lambda: onn.SOCConv2d(4, 3, 3, padding_mode="circular", train_terms=5,
                                        eval_terms=8, max_norm=1.5), _IMG),
    "ConvSeries2d": (lambda: onn.ConvSeries2d(4, 3, 5, 3, terms=4, scale=0.5), _IMG),
    "BROConv2d": (lambda: onn.BROConv2d(4, 6, 3, input_size=(4, 4), rank_ratio=0.25,
                                        eps=1e-4), _IMG),
    "BROLinear": (lambda: onn.BROLinear(4, 3, rank_ratio=0.25, bias=False), _VEC),
    "LiResConv2d": (lambda: onn.LiResConv2d(4, 6, 3, input_size=(4, 4), gamma=0.5,
                                            krylov_dim=3), _IMG),
    "ShiftConv2d": (lambda: onn.ShiftConv2d(4, 8, 3, input_size=(4, 4), alpha=0.25), _IMG),
    "SpatialShift": (lambda: onn.SpatialShift(1), _IMG),
    "PositionBias": (lambda: onn.PositionBias(4, 4, 4), _IMG),
    "BetaAbs": (lambda: onn.BetaAbs(0.25), _IMG),
    # being added to onelip.nn: tested once they are there
    "ZeroChannelPad": (lambda: onn.ZeroChannelPad(6), _IMG),
    "FirstChannels": (lambda: onn.FirstChannels(2), _IMG),
    "Normalize": (lambda: onn.Normalize([0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 2.0, 1.0]), _IMG),
}


def _onelip_modules() -> list[str]:
    return sorted(n for n, v in vars(onn).items()
                  if inspect.isclass(v) and issubclass(v, nn.Module) and v.__module__.startswith(
                      "onelip.nn") and not inspect.isabstract(v))


def test_every_onelip_layer_has_an_example():
    assert set(_onelip_modules()) <= set(_EXAMPLES), set(_onelip_modules()) - set(_EXAMPLES)


@pytest.mark.parametrize("name", sorted(_EXAMPLES))
def test_every_onelip_layer_round_trips_through_a_run(tmp_path, name):
    if not hasattr(onn, name):
        pytest.skip(f"onelip.nn has no {name} (yet)")
    torch.manual_seed(0)
    make, shape = _EXAMPLES[name]
    layer = make()
    if name in _NOT_DESCRIBABLE:
        with pytest.raises(TypeError, match="Cannot describe"):
            runs.save(layer, tmp_path / "r")
        return
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    runs.save(layer, tmp_path / "r")
    loaded, _ = runs.load(tmp_path / "r")
    assert type(loaded) is type(layer)
    x = torch.randn(2, *shape)
    layer.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), layer(x)), name
    from onelip.arch import describe

    assert describe(loaded) == describe(layer)

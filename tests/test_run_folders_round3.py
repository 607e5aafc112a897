# SPDX-License-Identifier: MIT
"""Run folders the tool never corrupts (issue 23, items 13-17 and the run parts of 9): an
export never writes into a run, a killed write leaves no file that a later run refuses, two
writers of one run are refused, a full disk or a tampered config.json is one line naming the
file, ``onelip inspect`` works on every run."""

from __future__ import annotations

from pathlib import Path

import torch

from onelip import models, runs
from onelip.cli import main


def _tiny_run(path: Path) -> Path:
    torch.manual_seed(0)
    model, cfg = models.build("mlp", in_features=2, num_outputs=1, hidden=[8])
    return runs.save(model, path, model_name="mlp", model_config=cfg)


def _one_line(capsys, rc: int, *match: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onelip: error: "), lines
    for m in match:
        assert m in lines[0], lines[0]
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ==== 13: an export never writes into a run folder ==========================================


def test_export_refuses_every_spelling_of_a_path_inside_a_run(tmp_path, capsys, monkeypatch):
    """``onelip export RUN --out RUN/model.safetensors --force`` replaced the run's own
    weights (the run no longer loaded). Every spelling of a path inside a run folder (the
    exported run's or another's; relative, with ``.`` or ``..``, through a symbolic link, a
    new file name) is refused in one line naming the run folder, and the runs are unchanged."""
    run, other = _tiny_run(tmp_path / "run"), _tiny_run(tmp_path / "other")
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    before = {r: _snapshot(r) for r in (run, other)}
    monkeypatch.chdir(tmp_path)
    for out in [run / "model.safetensors", "run/model.safetensors", "./run/./config.json",
                f"{tmp_path}/other/../run/model.safetensors", "link/model.safetensors",
                run / "model.pt2", other / "model.safetensors", run]:
        fmt = "torch" if str(out).endswith(".pt2") else "safetensors"
        rc = main(["export", "run", "--format", fmt, "--out", str(out), "--force"])
        line = _one_line(capsys, rc, "is inside the run folder", "choose --out outside it")
        inside = other if "other/model" in str(out) else run
        assert f"{inside.resolve()}:" in line, line
    assert {r: _snapshot(r) for r in (run, other)} == before
    runs.load(run)
    assert main(["export", "run", "--format", "safetensors", "--out", "run.safetensors"]) == 0
    assert (tmp_path / "run.safetensors").is_file()
    assert _snapshot(run) == before[run]

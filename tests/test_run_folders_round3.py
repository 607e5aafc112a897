# SPDX-License-Identifier: MIT
"""Run folders the tool never corrupts (issue 23, items 13-17 and the run parts of 9): an
export never writes into a run, a killed write leaves no file that a later run refuses, two
writers of one run are refused, a full disk or a tampered config.json is one line naming the
file, ``onelip inspect`` works on every run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from onelip import models, runs
from onelip._errors import OutputError
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


# ==== 14: a write killed in the middle strands nothing in a finished run ====================

_KILLED_WRITE = r"""
import os, signal, sys
import safetensors.torch, torch
from onelip import runs
real = safetensors.torch.save_file
with runs.resumable_run(sys.argv[1]) as part:
    runs.write_checkpoint(part, {"epoch": 1, "w": torch.zeros(64)})
    def half_then_killed(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        # safetensors writes a temporary file of its own beside the path it is given
        half = os.path.join(os.path.dirname(filename), ".tmpK1LL3D")
        os.rename(filename, half)
        os.truncate(half, os.path.getsize(half) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    safetensors.torch.save_file = half_then_killed
    runs.write_checkpoint(part, {"epoch": 2, "w": torch.ones(64)})
"""


def test_a_checkpoint_killed_half_written_leaves_nothing_in_the_resumed_run(tmp_path):
    """A process killed (SIGKILL) while safetensors writes its second checkpoint leaves the
    half-written temporary file in the unfinished run. Before, the resumed run carried it into
    the finished run, whose replacement (``--force``) was then refused ("holds files that no
    run writes"). Now it lies in a temporary folder of onelip's, which the resume drops (the
    checkpoint before it is intact); the finished run holds only run files."""
    import subprocess
    import sys

    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(run)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    part = runs.partial_path(run)
    stranded = sorted(p.name for p in part.iterdir() if p.name != runs.CHECKPOINT)
    assert len(stranded) == 1, stranded  # the half-written checkpoint (in its folder)
    assert runs.read_checkpoint(part)["epoch"] == 1  # the last complete one
    assert runs.lock_path(run).is_file()  # the killed writer's: taken over
    with runs.resumable_run(run, resume=True) as folder:
        assert sorted(p.name for p in folder.iterdir()) == [runs.CHECKPOINT]
        runs.write_checkpoint(folder, {"epoch": 2, "w": torch.ones(64)})
        model, cfg = models.build("mlp", in_features=2, num_outputs=1, hidden=[8])
        runs.write_model(folder, model, model_name="mlp", model_config=cfg)
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [runs.CHECKPOINT, runs.CONFIG, runs.WEIGHTS])
    assert runs.check_target(run, overwrite=True) == run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_onelips_leftovers_in_a_finished_run_never_block_force_and_a_users_files_do(tmp_path):
    """A finished run holding what a write killed in the middle left (e.g. of certify.json:
    this version's temporary folder; onelip 0.3.0's temporary file, or safetensors' own) is
    still replaced by ``overwrite`` (``--force``), which removes them; a user's file or
    folder is never taken for one, however close its name."""
    from onelip._io import atomic_path

    run = _tiny_run(tmp_path / "run")
    killed = atomic_path(run / "certify.json")  # entered and never left: as a kill leaves it
    stranded = killed.__enter__()
    stranded.write_text("{")
    old = [".certify.json.k3x9_a2b.tmp", ".tmpK1LL3D"]  # as onelip 0.3.0 left them
    for name in old:
        (run / name).write_text("{")
    for users in ["notes.txt", ".certify.json.bak", ".onelip-tmp-notes.txt.k3x9_a2b.tmp",
                  ".certify.json.K3X9_A2B.tmp", ".tmpK1LL3D.txt", "tmpK1LL3D"]:
        (run / users).write_text("mine")
        with pytest.raises(OutputError, match=f"holds files that no run writes \\({users}"):
            runs.check_target(run, overwrite=True)
        (run / users).unlink()
    (run / ".onelip-tmp-notes.txt.k3x9_a2b").mkdir()  # a folder of the user's
    with pytest.raises(OutputError, match="holds folders that no run writes"):
        runs.check_target(run, overwrite=True)
    (run / ".onelip-tmp-notes.txt.k3x9_a2b").rmdir()
    assert runs.check_target(run, overwrite=True) == run
    assert sorted(p.name for p in runs.leftovers(run)) == sorted([*old, stranded.parent.name])
    model, cfg = models.build("mlp", in_features=2, num_outputs=1, hidden=[4])
    runs.save(model, run, model_name="mlp", model_config=cfg, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [runs.CONFIG, runs.WEIGHTS]
    assert runs.load(run)[1]["model"]["config"]["hidden"] == [4]


# ==== 15: one writer a run ==================================================================


def _lock_of(run: Path, pid: int, **extra) -> Path:
    """A lock of the run ``run`` as a writer of pid ``pid`` on this host leaves it."""
    import json
    import socket

    lock = runs.lock_path(run)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                "since": "2025-01-01 00:00:00",
                                "command": "onelip train --out run", **extra}))
    return lock


@pytest.fixture
def other_process():
    """A live process that is not this one (its pid holds a lock in the tests)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p
    p.kill()
    p.wait()


def test_a_second_writer_of_a_run_is_refused_naming_the_first(tmp_path, capsys, other_process):
    """Two trainings writing the same ``--out`` at once were not prevented (each wrote the
    same ``.NAME.partial``). While a live process holds the run's lock, ``onelip train`` is
    refused before training, in one line naming that process, and the library's writers
    raise; nothing of the run or its lock is touched. Once the process is gone its lock is
    taken over, and removed when the run is in place."""
    run = tmp_path / "run"
    lock = _lock_of(run, other_process.pid)
    held = lock.read_bytes()
    rc = main(["train", "--data", "two-moons", "--n-samples", "60", "--epochs", "1",
               "--width", "4", "--depth", "1", "--quiet", "--out", str(run)])
    _one_line(capsys, rc, f"pid {other_process.pid} on ", "onelip train --out run",
              "wait until it ends or choose another --out")
    model, cfg = models.build("mlp", in_features=2, num_outputs=1, hidden=[8])
    for write in (lambda: runs.save(model, run, model_name="mlp", model_config=cfg),
                  lambda: runs.resumable_run(run, resume=True).__enter__()):
        with pytest.raises(OutputError, match=f"another process \\(pid {other_process.pid}"):
            write()
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.name]
    assert lock.read_bytes() == held
    other_process.kill()
    other_process.wait()
    runs.save(model, run, model_name="mlp", model_config=cfg)  # a dead writer's lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_lock_knows_a_reused_pid_and_this_process(tmp_path, other_process):
    """A lock whose pid now belongs to a process started at another time (the writer died and
    its pid was given again, as in a restarted container) is stale; a run this very process
    is writing is refused to a second writer of the same process."""
    if runs._process_start(other_process.pid) is None:
        pytest.skip("no /proc: process start times unknown")
    run = tmp_path / "run"
    _lock_of(run, other_process.pid, start="1")
    model, cfg = models.build("mlp", in_features=2, num_outputs=1, hidden=[8])
    runs.save(model, run, model_name="mlp", model_config=cfg)
    with runs.resumable_run(run, overwrite=True) as part:
        with pytest.raises(OutputError, match="already being written by this process"):
            runs.save(model, run, model_name="mlp", model_config=cfg, overwrite=True)
        runs.write_model(part, model, model_name="mlp", model_config=cfg)
    assert not runs.lock_path(run).exists() and runs.is_run_folder(run)


# ==== 9: a full disk, an edited config.json, inspect of any run: one line or an answer ======

TINY = ["--data", "two-moons", "--n-samples", "60", "--epochs", "1", "--width", "4",
        "--depth", "1", "--quiet"]


def test_a_full_disk_is_one_line_naming_the_file_and_what_to_do(tmp_path, capsys,
                                                                 monkeypatch):
    """A full disk while saving was safetensors' SafetensorError (a traceback) or an OSError
    naming a temporary file. Now every writer (a run, its checkpoint, its config.json, an
    export) says in one line which file could not be written, why, and what to do; nothing is
    left behind, and a checkpoint that could not be replaced is kept whole."""
    import errno

    import safetensors.torch
    from safetensors import SafetensorError

    src = _tiny_run(tmp_path / "src")
    runs.write_checkpoint(src, {"epoch": 1})
    real = safetensors.torch.save_file

    def no_space(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28) at path \"/somewhere/.tmpAb12Cd\"")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    monkeypatch.setattr("onelip.export.plain_file.save_file", no_space)  # imported by name
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=f"cannot write {out / 'run' / runs.WEIGHTS}: No "
                                          "space left on device; free space on its disk"):
        _tiny_run(out / "run")
    with pytest.raises(OutputError, match=f"{src / runs.CHECKPOINT}: No space .* \\(the last "
                                          "checkpoint, .*, is kept\\)"):
        runs.write_checkpoint(src, {"epoch": 2})
    assert runs.read_checkpoint(src)["epoch"] == 1
    rc = main(["export", str(src), "--format", "safetensors", "--out", str(out / "m.st")])
    _one_line(capsys, rc, f"cannot write {out / 'm.st'}: No space left on device")
    rc = main(["train", *TINY, "--out", str(out / "trained")])
    _one_line(capsys, rc, f"{runs.CHECKPOINT}: No space left on device; free space")
    monkeypatch.setattr(safetensors.torch, "save_file", real)

    def write_text(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OutputError, match=f"cannot write {out / 'run' / runs.CONFIG}: No "
                                          "space left on device"):
        _tiny_run(out / "run")
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, "--val-fraction", "0.2", "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("section,field,value", [
    ("splits", None, "x"), ("train", None, [1]), ("data", "name", 7),
    ("splits", "val_seed", "zz"), ("train", "val_fraction", "0.2"), ("splits", "classes", 3),
])
def test_an_edited_config_field_is_one_line_naming_the_file(trained, tmp_path, capsys,
                                                             section, field, value):
    """A field of config.json edited into another type (today: an AttributeError, or a
    message about int() that names no file) is one line naming config.json and the field, for
    every command that reads the run."""
    import json
    import shutil

    run = shutil.copytree(trained, tmp_path / "run")
    cfg = json.loads((run / runs.CONFIG).read_text())
    if field is None:
        cfg[section] = value
    else:
        cfg.setdefault(section, {})[field] = value
    (run / runs.CONFIG).write_text(json.dumps(cfg))
    where = section if field is None else f"{section}.{field}"
    for command in (["inspect", str(run)], ["certify", str(run), "--eps", "0.1", "--out",
                                            str(tmp_path / "c.json")],
                    ["export", str(run), "--format", "safetensors", "--out",
                     str(tmp_path / "m.safetensors")]):
        _one_line(capsys, main(command), f"{run / runs.CONFIG}: ", where,
                  "restore it from a backup or retrain")


def _png_folder(root: Path, classes=("cat", "dog")) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("model", [["mlp", "--width", "8", "--depth", "1"],
                                   ["convnet", "--set", "width=4", "--set", "stages=1",
                                    "--set", "depth=1"]])
def test_inspect_works_on_a_run_trained_on_an_image_folder_of_one_split(tmp_path, capsys,
                                                                        model):
    """``onelip inspect`` of a run trained on an image folder without a test split raised a
    RuntimeError (an MLP) or a misleading shape message (a convnet): it estimated on the
    empty test split. It now estimates on the run's validation split and says so."""
    import json

    images = _png_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    assert main(["train", "--data", f"folder:{images}", "--model", *model, "--epochs", "1",
                 "--val-fraction", "0.25", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("\n{") + 1:])
    assert "estimate_skipped" not in info, info
    assert info["estimate_points"] == "4 of the validation split", info
    assert 0 < info["lipschitz_estimate"] <= info["lipschitz_bound"] + 1e-6, info


# ==== 17: reproduce on one class; cifar10.py --evaluate-saved honours --only ================


@pytest.mark.parametrize("claim", ["pareto", "consistency", "memorization", "all"])
def test_reproduce_on_data_of_one_class_says_so(tmp_path, capsys, monkeypatch, claim):
    """``onelip reproduce`` on a folder of one class blamed the learning rate (or reported
    100 % accuracies). It is refused before any training, in one line saying the data have
    one class; two classes go on to the claim."""
    from onelip.experiments import report

    ran = []
    monkeypatch.setattr(report, "run_claim", lambda name, **kw: ran.append(name) or {})
    monkeypatch.setattr("onelip.cli.reproduce._print_verdicts", lambda *a: None)
    one, two = _png_folder(tmp_path / "one", ["cat"]), _png_folder(tmp_path / "two")
    for args in (["--quick"], []):
        rc = main(["reproduce", claim, *args, "--data", f"folder:{one}", "--out",
                   str(tmp_path / "c")])
        _one_line(capsys, rc, f"--data folder:{one} has one class (cat)",
                  "train classifiers, which need two classes or more")
    assert ran == [] and not (tmp_path / "c").exists()
    if claim != "all":
        assert main(["reproduce", claim, "--quick", "--data", f"folder:{two}",
                     "--out", str(tmp_path / "c")]) == 0
        assert ran == [claim]


def test_cifar10_evaluate_saved_honours_only_and_leaves_the_peers_venv_alone(tmp_path,
                                                                             monkeypatch):
    """``benchmarks/cifar10.py --evaluate-saved`` certified every saved network whatever
    ``--only`` said, and asked for the peers' venv (installing it) when any saved network was
    a peer's. A dry check (no network is certified, nothing installed): with ``--only onelip``
    it selects onelip's network alone and asks for no peers; naming a peer selects it and
    asks for them."""
    import importlib.util
    import json
    import sys

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ first
    spec = importlib.util.spec_from_file_location("_cifar10_bench_dry",
                                                  repo / "benchmarks" / "cifar10.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    for net in ("onelip", "deel", "orthogonium"):
        (models_dir / f"cifar10-{net}.json").write_text(json.dumps({"network": net}))
    asked, certified = [], []
    monkeypatch.setattr(bench, "import_working_tree_onelip",
                        lambda *, need_peers, **kw: asked.append(need_peers))
    monkeypatch.setattr(bench, "run_evaluate_saved", lambda args: certified.append(args) or 0)
    venv = tmp_path / "peers-venv"
    for only, peers in (("onelip", False), ("onelip,deel", True)):
        assert bench.main(["--evaluate-saved", "--only", only, "--data", str(tmp_path),
                           "--models", str(models_dir), "--out", str(tmp_path / "out"),
                           "--peers-venv", str(venv)]) == 0
        assert asked[-1] is peers
        assert [p.name for p in bench.saved_networks(certified[-1])] == sorted(
            f"cifar10-{n}.json" for n in only.split(","))
    assert not venv.exists()

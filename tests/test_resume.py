# SPDX-License-Identifier: MIT
"""Checkpoints and resuming (issue 11, "A checkpoint after each epoch"; issue 10, fine-tuning a
loaded run restarted the one-cycle schedule without optimiser state, 90 % → 72 %).

A run is written into ``.NAME.partial`` with a checkpoint after every epoch (model, optimiser,
schedule, generators, history: safetensors + JSON, no pickle); ``onelip train --resume NAME``
continues a killed run and ends with the weights of an uninterrupted run, bit for bit on CPU
(a real SIGKILL mid-epoch below); a finished run keeps its training state and continues from
it for more epochs."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import onelip.nn as onn
from onelip import data as datasets
from onelip import losses, runs
from onelip._errors import CheckpointError
from onelip.cli import main
from onelip.train import TrainConfig, fit, load_state

SRC = str(Path(runs.__file__).resolve().parents[1])


@pytest.fixture(autouse=True)
def _one_thread():
    """The in-process runs use one thread, like the killed subprocess (same arithmetic)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / runs.WEIGHTS))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    diff = {k: (wa[k] - wb[k]).abs().max().item() for k in wa if not torch.equal(wa[k], wb[k])}
    assert not diff, f"weights differ: {diff}"


def _one_line(capsys, rc: int, match: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("onelip: a ")]
    assert len(lines) == 1 and lines[0].startswith("onelip: error: "), lines
    assert match in lines[0], lines[0]
    return lines[0]


# ==== a real kill ===========================================================================

KILLED = ["train", "--data", "two-moons", "--n-samples", "3000", "--width", "16", "--depth",
          "2", "--batch-size", "8", "--epochs", "3", "--quiet"]  # 300 steps an epoch


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "onelip", *KILLED, "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = runs.partial_path(killed) / runs.CHECKPOINT
    deadline = time.monotonic() + 240
    try:
        while not ckpt.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.005)
        time.sleep(0.1)  # well inside epoch 2 (an epoch takes most of a second)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert load_state(runs.partial_path(killed))["epoch"] == 1, "not killed in epoch 2"
    assert not killed.exists()
    assert main([*KILLED, "--out", str(ref)]) == 0  # uninterrupted, in this process
    assert main(["train", "--resume", str(killed), "--quiet"]) == 0
    _assert_same_weights(ref, killed)
    h_ref = json.loads((ref / "metrics.json").read_text())["history"]
    h_res = json.loads((killed / "metrics.json").read_text())["history"]
    assert [r["loss"] for r in h_ref] == [r["loss"] for r in h_res]
    assert not runs.partial_path(killed).exists()


# ==== resuming through the CLI ==============================================================

DIGITS = ["train", "--data", "digits", "--width", "32", "--depth", "1", "--batch-size", "64",
          "--epochs", "3", "--lr", "5e-3", "--val-fraction", "0.1", "--quiet"]


def _interrupt_after_first_checkpoint(monkeypatch):
    real = runs.write_checkpoint

    def write(folder, state):
        real(folder, state)
        raise KeyboardInterrupt  # as Ctrl-C right after the first epoch

    monkeypatch.setattr(runs, "write_checkpoint", write)
    return real


def test_cli_resume_checks_its_arguments_and_ends_as_an_uninterrupted_run(tmp_path, capsys,
                                                                         monkeypatch):
    run, ref = tmp_path / "run", tmp_path / "ref"
    real = _interrupt_after_first_checkpoint(monkeypatch)
    assert main([*DIGITS, "--out", str(run)]) == 130
    monkeypatch.setattr(runs, "write_checkpoint", real)
    assert "continue with `onelip train --resume" in capsys.readouterr().err
    assert not run.exists() and (runs.partial_path(run) / runs.CHECKPOINT).is_file()
    rc = main(["train", "--resume", str(run), "--lr", "0.5", "--batch-size", "64"])
    _one_line(capsys, rc, "arguments differ from the original run's: --lr 0.5 (was 0.005)")
    rc = main([*DIGITS, "--out", str(run)])  # a fresh run over it: say what to do
    _one_line(capsys, rc, f"continue it with `onelip train --resume {run}` or pass --force")
    assert main(["train", "--resume", str(run), "--batch-size", "64", "--quiet"]) == 0
    assert main([*DIGITS, "--out", str(ref)]) == 0
    _assert_same_weights(ref, run)
    assert load_state(run)["epoch"] == 3  # the finished run keeps its training state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref", "run"]


def test_force_starts_over_instead_of_resuming(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = _interrupt_after_first_checkpoint(monkeypatch)
    assert main([*DIGITS, "--epochs", "2", "--out", str(run)]) == 130
    monkeypatch.setattr(runs, "write_checkpoint", real)
    assert main([*DIGITS, "--epochs", "2", "--force", "--out", str(run)]) == 0
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 2
    assert not runs.partial_path(run).exists()


def test_a_finished_run_continues_from_its_optimiser_and_schedule_state(tmp_path, capsys):
    """Issue 10: fine-tuning a loaded run restarted the one-cycle schedule without optimiser
    state (90 % → 72 %). A finished run now continues: Adam's moments and the schedule's
    position are restored, the extra epochs run at its last learning rate, accuracy holds."""
    run, more = tmp_path / "run", tmp_path / "more"
    assert main([*DIGITS, "--out", str(run)]) == 0
    rc = main(["train", "--resume", str(run)])
    _one_line(capsys, rc, "is a finished run of 3 epochs: nothing to resume; pass --epochs N")
    rc = main(["train", "--resume", str(run), "--epochs", "5"])
    _one_line(capsys, rc, "already exists; choose another --out or pass --force")
    before = _weights(run)
    assert main(["train", "--resume", str(run), "--epochs", "5", "--out", str(more),
                 "--quiet"]) == 0
    assert all(torch.equal(before[k], v) for k, v in _weights(run).items())  # run untouched
    h0 = json.loads((run / "metrics.json").read_text())["history"]
    h1 = json.loads((more / "metrics.json").read_text())["history"]
    assert len(h1) == 5 and h1[:3] == h0
    assert h1[3]["lr"] == h1[4]["lr"] == h0[2]["lr"] < 1e-5  # no new cycle: its last lr
    assert h1[4]["val_acc"] >= h0[2]["val_acc"] - 0.01
    assert main(["train", "--resume", str(run), "--epochs", "4", "--force", "--quiet"]) == 0
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 4


# ==== fit from Python =======================================================================


def test_fit_resume_is_bit_exact_with_augmentation_and_a_conv_net(tmp_path):
    """Interrupted after epoch 1 and resumed into a fresh copy of the initial model (weights,
    optimiser, schedule, data-order and augmentation generators come from the checkpoint)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = torch.rand(64, 3 * 8 * 8, generator=g)
    x[:, :64] += y[:, None] * 0.5
    d = datasets.DataSplit("toy", x.clamp(0, 1), y, x[:8], y[:8], 2, (3, 8, 8))
    torch.manual_seed(0)
    init = onn.Sequential(onn.ToImage((3, 8, 8)), onn.OrthoConv2d(3, 8, 3), onn.MaxMin(),
                          onn.Flatten(), onn.OrthoLinear(8 * 8 * 8, 1))
    cfg = TrainConfig(epochs=3, batch_size=16, lr=5e-3, augment=("crop", "flip"),
                      val_fraction=0.25, warmup_epochs=0.5, grad_clip=1.0)
    loss = losses.HingeLoss(0.5)
    ref = copy.deepcopy(init)
    h_ref = fit(ref, d, loss, cfg, progress=False)

    class Stop(Exception):
        pass

    def stop(record):
        raise Stop

    with pytest.raises(Stop):
        fit(copy.deepcopy(init), d, loss, cfg, progress=False, checkpoint_dir=tmp_path,
            on_epoch=stop)
    resumed = copy.deepcopy(init)
    h_res = fit(resumed, d, loss, cfg, progress=False, resume_from=tmp_path)
    sa, sb = ref.state_dict(), resumed.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [(r["loss"], r["val_acc"]) for r in h_ref] == [(r["loss"], r["val_acc"])
                                                          for r in h_res]
    with pytest.raises(ValueError, match=r"differs from the saved run's: lr 0.01 \(saved 0.005\)"):
        fit(copy.deepcopy(init), d, loss, TrainConfig(**{**cfg.__dict__, "lr": 1e-2}),
            progress=False, resume_from=tmp_path)


def test_checkpoint_format_round_trips_without_pickle_and_detects_changes(tmp_path):
    state = {"t": torch.arange(6.0).reshape(2, 3), "step": torch.tensor(3.0),
             "betas": (0.9, 0.999), 0: {"inf": float("inf"), "nan": float("nan")},
             "__odd": [None, True, 2, "s"], "g": torch.Generator().manual_seed(1).get_state()}
    path = runs.write_checkpoint(tmp_path, state)
    back = runs.read_checkpoint(tmp_path)
    assert torch.equal(back["t"], state["t"]) and back["step"].shape == ()
    assert back["betas"] == (0.9, 0.999) and back["__odd"] == [None, True, 2, "s"]
    assert back[0]["inf"] == float("inf") and back[0]["nan"] != back[0]["nan"]
    assert torch.equal(back["g"], state["g"])
    with safe_open(str(path), framework="pt") as f:  # a safetensors file, JSON metadata
        meta = f.metadata()
    json.loads(meta["state"])
    tensors = load_file(str(path))
    tensors[next(iter(tensors))] += 1
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="changed since it was written"):
        runs.read_checkpoint(path)
    with pytest.raises(TypeError, match="cannot store object"):
        runs.write_checkpoint(tmp_path, {"x": object()})


SPECTRAL = ["train", "--data", "digits", "--model", "convnet", "--set", "layer=spectral",
            "--set", "width=4", "--set", "stages=1", "--set", "depth=1", "--batch-size", "128",
            "--epochs", "2", "--quiet"]


def test_cli_resume_of_a_spectral_conv_net_on_more_than_40_frequencies(tmp_path, capsys,
                                                                      monkeypatch):
    """SpectralConv2d refreshes a round-robin slice of its frequencies per step when its grid
    has more than 40 (digits: 8×8 inputs, a 9 × 5 grid of 45): the slice's position is saved
    in its state_dict, so the resumed run refreshes what the uninterrupted one does (before
    0.3 it restarted at 0 and the weights differed)."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    real = _interrupt_after_first_checkpoint(monkeypatch)
    assert main([*SPECTRAL, "--out", str(run)]) == 130
    monkeypatch.setattr(runs, "write_checkpoint", real)
    state = load_state(runs.partial_path(run))
    convs = [k for k in state["model"] if k.endswith("_extra_state") and
             int(state["model"][k][0]) != 0]
    assert convs, "no SpectralConv2d moved its refresh position: the test tests nothing"
    grids = [v.numel() for k, v in state["model"].items() if k.endswith("freq_sigma")]
    assert max(grids) > 40
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert main([*SPECTRAL, "--out", str(ref)]) == 0
    _assert_same_weights(ref, run)

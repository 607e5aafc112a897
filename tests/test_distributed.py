# SPDX-License-Identifier: MIT
"""Data-parallel training: 2 gloo processes give what 1 process gives on the same global batches.

Each 2-process run is a real ``onelip train`` (``--nproc 2``, or torchrun) in subprocesses;
the reference is the same command in this process. Batches are odd-sized so that the two
shards differ by one sample, and the last batch is smaller still: the loss weighting of
uneven shards is exercised at every step. HKR/KR need the global class frequencies
(all-reduced counts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from onelip import distributed
from onelip.cli import main
from onelip.cli.launch import without_nproc

# Float32 sums in another order (two half-batch gradients all-reduced instead of one), through
# a few dozen Adam steps: measured ≤ 2e-7 on weights of size O(1).
TOL_WEIGHTS = 1e-5
TOL_LOSS = 1e-5  # relative, per-epoch mean loss

RUN_FILES = {"checkpoint.safetensors", "config.json", "metrics.json", "model.safetensors"}


def _env() -> dict:
    src = str(Path(distributed.__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def _compare(single: Path, multi: Path) -> tuple[float, float]:
    """(max relative loss difference, max absolute weight difference); asserts both."""
    h1 = json.loads((single / "metrics.json").read_text())["history"]
    h2 = json.loads((multi / "metrics.json").read_text())["history"]
    assert len(h1) == len(h2)
    loss_err = max(abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-12)
                   for a, b in zip(h1, h2))
    assert loss_err <= TOL_LOSS, f"loss histories differ (rel. {loss_err:.2e}): {h1} vs {h2}"
    assert all(r["rank_divergence"] == 0.0 for r in h2), (
        f"ranks drifted apart: {[r['rank_divergence'] for r in h2]}"
    )
    w1 = load_file(str(single / "model.safetensors"))
    w2 = load_file(str(multi / "model.safetensors"))
    assert w1.keys() == w2.keys()
    # Floating tensors within TOL_WEIGHTS; the layers' hidden state (``_extra_state``, uint8:
    # flags and the SHA-256 of the latent) has the same shape, its digest differing with the
    # last bits of the latent.
    assert all(w1[k].shape == w2[k].shape for k in w1)
    w_err = max((w1[k].double() - w2[k].double()).abs().max().item() for k in w1
                if w1[k].is_floating_point())
    assert w_err <= TOL_WEIGHTS, f"final weights differ by {w_err:.2e} > {TOL_WEIGHTS:.0e}"
    for a, b in zip(h1, h2):
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=2 / 1000)
    return loss_err, w_err


def _only_rank0_wrote(out: Path, rc: int, stdout: str, stderr: str, epochs: int) -> None:
    assert rc == 0, stderr[-3000:]
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert stdout.count("trained mlp") == 1, stdout
    for e in range(1, epochs + 1):
        assert stderr.count(f"epoch {e}/{epochs} ") == 1, stderr[-3000:]


def test_two_processes_match_one_multiclass_hkr(tmp_path, capfd, monkeypatch):
    """`onelip train --nproc 2` (multiclass HKR, digits, crop + flip augmentation) == one
    process: losses, weights. Each rank augments its shard with the draws of the global batch
    (a rank drawing for its shard alone would give sample i of every shard the same crop)."""
    args = ["train", "--data", "digits", "--width", "32", "--depth", "2", "--loss", "hkr",
            "--hinge-mode", "one_vs_all", "--epochs", "2", "--batch-size", "101",
            "--lr", "3e-3", "--augment", "crop,flip"]
    assert main([*args, "--quiet", "--out", str(tmp_path / "one")]) == 0
    capfd.readouterr()
    for k, v in _env().items():
        monkeypatch.setenv(k, v)
    # The launcher runs `python -m onelip train ...` twice, with torchrun's environment.
    rc = main([*args, "--nproc", "2", "--out", str(tmp_path / "two")])
    out, err = capfd.readouterr()
    _only_rank0_wrote(tmp_path / "two", rc, out, err, epochs=2)
    loss_err, w_err = _compare(tmp_path / "one", tmp_path / "two")
    print(f"2 vs 1 process (digits, HKR): loss rel. {loss_err:.1e}, weights {w_err:.1e}")


def test_torchrun_matches_one_binary_kr(tmp_path):
    """`torchrun --nproc_per_node 2 -m onelip train` (binary KR, two-moons) == one process.

    SGD, not Adam: under pure KR the output bias has an exactly zero gradient (E₋[1] − E₊[1]),
    and Adam turns its float rounding (≈1e-9, differently ordered in 1 and 2 processes) into
    steps of ~lr/10 — a property of Adam on zero gradients, not of data parallelism.
    """
    args = ["train", "--data", "two-moons", "--n-samples", "400", "--width", "16",
            "--depth", "2", "--loss", "kr", "--epochs", "2", "--batch-size", "49",
            "--optimizer", "sgd", "--lr", "0.05"]
    assert main([*args, "--quiet", "--out", str(tmp_path / "one")]) == 0
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "onelip", *args,
                           "--out", str(tmp_path / "two")],
                          env=_env(), capture_output=True, text=True, timeout=300)
    _only_rank0_wrote(tmp_path / "two", proc.returncode, proc.stdout, proc.stderr, epochs=2)
    loss_err, w_err = _compare(tmp_path / "one", tmp_path / "two")
    print(f"2 vs 1 process (two-moons, KR): loss rel. {loss_err:.1e}, weights {w_err:.1e}")


def test_nproc_is_stripped_and_single_process_is_unchanged():
    assert without_nproc(["train", "--nproc", "2", "--out", "x"]) == [
        "train", "--out", "x"]
    assert without_nproc(["train", "--nproc=4"]) == ["train"]
    ctx = distributed.Context("cpu")
    assert not ctx.active and ctx.world == 1 and ctx.is_main
    idx = torch.arange(7)
    assert ctx.shard(idx) is idx
    freq = ctx.frequency(torch.zeros(6, 3), torch.tensor([0, 0, 1, 2, 2, 2]))
    assert torch.allclose(freq, torch.tensor([2 / 6, 1 / 6, 3 / 6], dtype=torch.float64))
    freq = ctx.frequency(torch.zeros(4, 1), torch.tensor([-1, 1, 1, 1]))
    assert freq.tolist() == [0.25, 0.75]


def _loss_classes():
    from onelip import losses

    return [getattr(losses, name) for name in losses.__all__]


@pytest.mark.parametrize("cls", _loss_classes(), ids=lambda c: c.__name__)
def test_each_loss_declares_whether_it_takes_frequency(cls):
    """The declaration Context reads (``takes_frequency``) is what ``forward`` accepts: the
    KR and HKR losses take the global class frequencies, the others do not."""
    import inspect

    declared = cls.takes_frequency
    accepts = "frequency" in inspect.signature(cls.forward).parameters
    assert declared is accepts, f"{cls.__name__}: declares {declared}, forward takes {accepts}"
    assert distributed.Context._frequency_kw(cls()) is declared
    assert declared is (cls.__name__ in {"KRLoss", "HKRLoss", "MulticlassKRLoss",
                                         "MulticlassHKRLoss"}), cls.__name__


def test_a_loss_gets_frequency_only_if_it_declares_it():
    """A loss of one's own whose forward happens to take ``frequency`` is not sniffed: without
    ``takes_frequency = True`` it is called without it."""

    class Undeclared(torch.nn.Module):
        def forward(self, input, target, *, frequency=None):
            return input.sum()

    class Declared(Undeclared):
        takes_frequency = True

    assert not distributed.Context._frequency_kw(Undeclared())
    assert distributed.Context._frequency_kw(Declared())


def test_check_nproc_names_the_library_argument_and_the_cli_its_flag(monkeypatch):
    """The library's message says ``nproc=N``; the CLI spells the same parts ``--nproc N``."""
    from onelip._errors import ArgumentError
    from onelip.cli._common import error_text

    monkeypatch.setattr(distributed, "_cores", lambda: 2)
    with pytest.raises(ArgumentError) as info:
        distributed.check_nproc(3)
    assert str(info.value).startswith("nproc=3 is more processes than the 2 CPU cores"), info.value
    assert str(info.value).endswith("pass nproc=2 or less"), info.value
    assert "--" not in str(info.value)
    assert info.value.arguments == ("nproc", "nproc")
    cli = error_text(info.value)
    assert cli.startswith("--nproc 3 is more") and cli.endswith("pass --nproc 2 or less"), cli
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ArgumentError) as info:
        distributed.check_nproc(2, "cuda")
    assert error_text(info.value) == ("--nproc 2 needs 2 GPUs, but 0 are visible: pass "
                                      "--nproc 1 or less on CUDA (one GPU each)"), info.value
    distributed.check_nproc(2)  # as many as the cores: allowed

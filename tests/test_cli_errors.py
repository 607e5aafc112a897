# SPDX-License-Identifier: MIT
"""Every subcommand with a table of bad arguments: each is exactly one line
``onelip: error: ...`` on stderr and exit status 2, no traceback, nothing written.

In-process through ``onelip.cli.main`` (fast); a few through the console script in a real
process. Unwritable places: the tests run as root, where ``chmod`` does not stop writes, so
they use a path under a file (``FILE/run``: the folder cannot be created, ENOTDIR) and a path
under ``/proc`` (no new files there, root or not).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from onelip.cli import main

TINY = ["--data", "two-moons", "--n-samples", "200", "--epochs", "1", "--width", "8",
        "--depth", "1", "--quiet"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("onelip")
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def places(tmp_path, run_dir) -> dict[str, str]:
    afile = tmp_path / "afile.txt"
    afile.write_text("not a run")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    return {"{run}": str(run_dir), "{file}": str(afile), "{tmp}": str(tmp_path),
            "{notes}": str(notes), "{other}": str(other)}


# (argv, a part of the message); {run} a trained run, {file} an existing file, {other} a
# folder that is not a run, {notes} a JSON file that is not certify results.
CASES = {
    "train": [
        (["--model", "resnet18", "--out", "{tmp}/x"], "Unknown model 'resnet18'; known:"),
        (["--device", "tpu", "--out", "{tmp}/x"], "unknown device 'tpu'"),
        (["--device", "cuda:abc", "--out", "{tmp}/x"], "unknown device 'cuda:abc'"),
        (["--device", "cuda:99", "--out", "{tmp}/x"], "cuda:99"),
        (["--device", "cpu:1", "--out", "{tmp}/x"], "cpu:1"),
        (["--out", "{file}"], "is a file, not a run folder"),
        (["--out", "{file}/run"], "is a file, not a folder"),
        (["--out", "/proc/onelip-run"], "/proc is not writable"),
        (["--out", "{other}", "--force"], "is not a onelip run folder"),
        (["--out", "{other}"], "is not a onelip run folder"),
        (["--out", "{run}"], "already exists; choose another --out or pass --force"),
        (["--epochs", "0", "--out", "{tmp}/x"], "expected a positive integer, got 0"),
        (["--lr", "nan", "--out", "{tmp}/x"], "expected a non-negative number"),
        (["--data", "nope", "--out", "{tmp}/x"], "Unknown data set 'nope'; known:"),
        (["--set", "nofield=1", "--out", "{tmp}/x"], "has no config field 'nofield'"),
        ([], "the following arguments are required: --out"),
    ],
    "certify": [
        (["{run}", "--eps", "1e300", "--attack"], "at most 1e+06"),
        (["{run}", "--eps", "inf"], "expected a non-negative number"),
        (["{run}", "--eps", "-1"], "expected a non-negative number"),
        (["{run}", "--attack-points", "0"], "expected a positive integer"),
        (["{tmp}/nowhere"], "No run folder at"),
        (["{file}"], "is not a run folder"),
        (["{run}", "--data", "nope"], "Unknown data set 'nope'"),
        (["{run}", "--out", "{notes}"], "is not a certify results file"),
        (["{run}", "--out", "{file}/c.json"], "is a file, not a folder"),
        (["{run}", "--out", "/proc/c.json"], "/proc is not writable"),
        (["{run}", "--out", "{tmp}"], "is a folder"),
    ],
    "inspect": [
        (["{tmp}/nowhere"], "No run folder at"),
        (["{file}"], "is not a run folder"),
        (["{other}"], "config.json is missing"),
        (["{run}", "--points", "0"], "expected a positive integer"),
        ([], "the following arguments are required: run"),
    ],
    "export": [
        (["{run}", "--format", "onnx", "--out", "/proc/m.onnx"], "/proc is not writable"),
        (["{run}", "--format", "safetensors", "--out", "{file}/m.safetensors"],
         "is a file, not a folder"),
        (["{run}", "--format", "safetensors", "--out", "{file}"], "already exists"),
        (["{run}", "--format", "torch", "--out", "{tmp}/m.pt"], ".pt2"),
        (["{run}", "--format", "tflite", "--out", "{tmp}/m"], "invalid choice: 'tflite'"),
        (["{tmp}/nowhere", "--format", "safetensors", "--out", "{tmp}/m.safetensors"],
         "No run folder at"),
        (["{run}", "--format", "onnx"], "the following arguments are required: --out"),
    ],
    "reproduce": [
        (["expressivity", "--quick", "--out", "{file}"], "is a file; --out names a folder"),
        (["expressivity", "--quick", "--out", "{file}/claims"], "is a file, not a folder"),
        (["expressivity", "--quick", "--out", "/proc/claims"], "/proc is not writable"),
        (["nothing", "--out", "{tmp}/c"], "unknown claim 'nothing'"),
        (["all", "--redraw", "--out", "{tmp}/empty"], "results.json not found"),
        (["snowflake", "--quick", "--set", "grid=abc", "--out", "{tmp}/c"],
         "--set grid=abc: expected a value like 100"),
        (["snowflake", "--quick", "--set", "gird=40", "--out", "{tmp}/c"],
         "snowflake has no config field 'gird'; fields: alpha"),
        (["snowflake", "--quick", "--set", "grid", "--out", "{tmp}/c"],
         "--set expects FIELD=VALUE"),
        (["snowflake", "--quick", "--set", "grid=2", "--out", "{tmp}/c"],
         "--set: Expected iterations >= 0, grid >= 4"),
        (["pareto", "--quick", "--set", "paper_net=a", "--out", "{tmp}/c"],
         "a nested field, not settable from the command line"),
        (["all", "--quick", "--set", "epochs=2", "--out", "{tmp}/c"],
         "--set sets one claim's config: run the claims one at a time"),
        (["pareto", "--quick", "--budget", "soon", "--out", "{tmp}/c"],
         "argument --budget: expected a duration such as 540, 540s, 9m or 2h, got 'soon'"),
    ],
}

TABLE = [pytest.param(cmd, argv, match, id=f"{cmd} {' '.join(argv)}")
         for cmd, rows in CASES.items() for argv, match in rows]


def _one_line(err: str, rc: int, match: str) -> str:
    assert rc == 2, f"exit status {rc}, stderr {err!r}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith("onelip: error: "), lines[0]
    assert match in lines[0], f"{match!r} not in {lines[0]!r}"
    return lines[0]


def test_every_subcommand_has_bad_arguments_in_the_table():
    from onelip.cli import COMMANDS

    assert set(CASES) == set(COMMANDS)


@pytest.mark.parametrize("cmd,argv,match", TABLE)
def test_bad_arguments_are_one_line_and_exit_2(places, capsys, monkeypatch, cmd, argv, match):
    if "cuda:99" in argv and NO_CUDA:
        match = "CUDA is not available"

    def fit(*a, **k):
        raise AssertionError("training started before the error")

    monkeypatch.setattr("onelip.train.fit", fit)
    monkeypatch.setattr("onelip.experiments.report.run_claim", fit)
    argv = [_fill(a, places) for a in argv]
    if cmd == "train":
        argv = [*TINY, *argv]
    before = {p: p.stat().st_mtime_ns for p in Path(places["{tmp}"]).rglob("*")}
    rc = main([cmd, *argv])
    _one_line(capsys.readouterr().err, rc, match)
    after = {p: p.stat().st_mtime_ns for p in Path(places["{tmp}"]).rglob("*")}
    assert after == before, "a failed command changed or left files"


def _fill(arg: str, places: dict[str, str]) -> str:
    for k, v in places.items():
        arg = arg.replace(k, v)
    return arg


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_device_cuda_without_cuda(tmp_path, capsys):
    rc = main(["train", *TINY, "--device", "cuda", "--out", str(tmp_path / "x")])
    _one_line(capsys.readouterr().err, rc, "CUDA is not available on this machine")
    assert not (tmp_path / "x").exists()


def test_console_script_one_line_errors(tmp_path):
    """The installed console script in real processes: exit status 2, one line, for an
    in-process error path and for errors raised before any import of torch."""
    assert CONSOLE_SCRIPT.exists(), CONSOLE_SCRIPT
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, match in [
        (["train", *TINY, "--device", "tpu", "--out", str(tmp_path / "x")], "unknown device"),
        (["reproduce", "expressivity", "--quick", "--out", str(afile)], "is a file"),
    ]:
        proc = subprocess.run([str(CONSOLE_SCRIPT), *argv], capture_output=True, text=True,
                              env=env, timeout=300)
        _one_line(proc.stderr, proc.returncode, match)

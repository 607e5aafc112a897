# SPDX-License-Identifier: MIT
"""0.3 loads what 0.1 and 0.2 wrote: run folders of those versions (their state dicts have no
``_extra_state``: the layers' hidden training state is new in 0.3) certify and export as before;
a run folder of a newer version is refused with a one-line error."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from onelip import __version__, runs
from onelip._errors import CheckpointError
from onelip._io import file_sha256
from onelip.cli import main

TINY = ["--data", "two-moons", "--n-samples", "200", "--width", "8", "--depth", "2",
        "--epochs", "1", "--quiet"]


def _as_written_by(run, version: str) -> None:
    """Rewrite ``run`` as ``version`` wrote it: no _extra_state keys, its version string, the
    weights digest updated (as that version recorded it)."""
    w = run / runs.WEIGHTS
    state = {k: v for k, v in load_file(str(w)).items() if not k.endswith("_extra_state")}
    from safetensors import safe_open

    with safe_open(str(w), "pt") as f:
        meta = f.metadata()
    meta["onelip_version"] = version
    save_file(state, str(w), metadata=meta)
    cfg = json.loads((run / runs.CONFIG).read_text())
    cfg["onelip_version"] = version
    cfg["integrity"][runs.WEIGHTS] = file_sha256(w)
    (run / runs.CONFIG).write_text(json.dumps(cfg, indent=2))


def test_version_is_0_3():
    assert __version__ == "0.3.0"


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_older_run_folders_load_certify_and_export(tmp_path, version, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    before, _ = runs.load(run)
    assert any(k.endswith("_extra_state") for k in load_file(str(run / runs.WEIGHTS)))
    _as_written_by(run, version)
    assert not any(k.endswith("_extra_state") for k in load_file(str(run / runs.WEIGHTS)))
    after, _ = runs.load(run)
    a, b = before.state_dict(), after.state_dict()
    assert all((a[k] == b[k]).all() for k in a if not k.endswith("_extra_state"))
    capsys.readouterr()
    assert main(["certify", str(run), "--eps", "0.1", "--out", str(tmp_path / "c.json")]) == 0
    assert main(["export", str(run), "--format", "safetensors", "--out",
                 str(tmp_path / "plain.safetensors")]) == 0


def test_a_newer_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    cfg = json.loads((run / runs.CONFIG).read_text())
    cfg["onelip_version"] = "0.4.0"
    (run / runs.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="written by onelip 0.4.0"):
        runs.load(run)

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


class _Stop(Exception):
    pass


def _mlp():
    import torch

    import onelip.nn as onn

    torch.manual_seed(0)
    return onn.Sequential(onn.OrthoLinear(2, 8), onn.MaxMin(), onn.OrthoLinear(8, 2))


def test_a_checkpoint_of_0_2_resumes_bit_for_bit(tmp_path):
    """0.2 checkpoints named OrthoLinear's certified copies in ``snapshots`` (no
    ``_extra_state``): a run resumed from one takes the uninterrupted run's path."""
    import torch

    from onelip.losses import MulticlassHingeLoss
    from onelip.train import TrainConfig, fit, load_state

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 2, generator=g), torch.randint(0, 2, (64,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2)
    loss = MulticlassHingeLoss(margin=0.5)
    ref = _mlp()
    fit(ref, data, loss, cfg, progress=False, final_test=False)

    def stop(record):
        raise _Stop

    with pytest.raises(_Stop):
        fit(_mlp(), data, loss, cfg, progress=False, final_test=False,
            checkpoint_dir=tmp_path / "ckpt", on_epoch=stop)
    state = load_state(tmp_path / "ckpt")
    extra = {k: v for k, v in state["model"].items() if k.endswith("_extra_state")}
    assert extra
    names = ("_retracted_latent", "_guarded_latent")  # 0.2's names, position = the flag's
    state["model"] = {k: v for k, v in state["model"].items() if k not in extra}
    state["snapshots"] = {k.removesuffix("._extra_state"): [n for n, f in zip(names, v[:2])
                                                            if f] for k, v in extra.items()}
    assert any(state["snapshots"].values())
    resumed = _mlp()
    fit(resumed, data, loss, cfg, progress=False, final_test=False, resume_from=state)
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(a, b)

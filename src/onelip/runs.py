# SPDX-License-Identifier: MIT
"""Run folders: safetensors weights + a JSON config. No pickle anywhere.

(``onelip.checkpoint``, its name in 0.1, is an alias of this module for one release.)

A run folder ``runs/NAME/`` holds:

* ``model.safetensors`` — the ``state_dict`` (latent weights and persistent buffers);
* ``config.json`` — ``{"onelip_version", "model": {"name", "config"}, "data", "loss",
  "train"}``: all that is needed to rebuild the model;
* ``metrics.json`` — training history and final accuracies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onelip import __version__, models
from onelip._errors import CheckpointError
from onelip._io import atomic_path, check_state_dict, write_json

__all__ = ["CheckpointError", "load", "load_config", "save", "write_json"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save(model: nn.Module, path: str | Path, *, model_name: str, model_config: Any,
         extra: dict | None = None) -> None:
    """Write ``path/model.safetensors`` and ``path/config.json``.

    ``model_config`` is the dataclass the model was built from (:func:`onelip.models.build`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"onelip_version": __version__})
    cfg = {
        "onelip_version": __version__,
        "model": {"name": model_name, "config": models.config_dict(model_config)},
        **(extra or {}),
    }
    write_json(path / CONFIG, cfg)


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No run folder at {path}; train one with `onelip train --out {path}`")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a run folder (expected a directory)")
    cfg_path = path / CONFIG
    if not cfg_path.exists():
        raise CheckpointError(f"{cfg_path} is missing; is {path} a run folder written by onelip?")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the run folder is corrupt")
    if (not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict)
            or "name" not in cfg["model"]):
        raise CheckpointError(f"{cfg_path} has no model section; the run folder is corrupt")
    if not isinstance(cfg.get("data", {}), dict):
        raise CheckpointError(f"{cfg_path}: the data section is not an object; the run folder "
                              "is corrupt")
    version = cfg.get("onelip_version")
    if not isinstance(version, str) or version.split(".")[:2] != __version__.split(".")[:2]:
        raise CheckpointError(
            f"{path} was written by onelip {version}, this is onelip {__version__}; "
            "load it with that version or retrain"
        )
    return cfg


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of run folder ``path`` and load its weights; returns (model, config).

    Raises:
        CheckpointError: missing folder or files, corrupt safetensors or JSON, another onelip
            version, missing/unexpected keys or other shapes — with what to do about it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg = load_config(path)
    try:
        model, _ = models.build(cfg["model"]["name"], **cfg["model"].get("config", {}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG} describes a model onelip cannot build: {e}")
    wpath = path / WEIGHTS
    if not wpath.exists():
        raise CheckpointError(f"{wpath} is missing; the run did not finish or was moved")
    try:
        state = load_file(str(wpath), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath} is not a readable safetensors file ({e}); retrain or "
                              "restore it from a backup")
    check_state_dict(state, model.state_dict(), source=wpath, architecture=f"the architecture in {CONFIG}")
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, cfg

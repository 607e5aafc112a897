# SPDX-License-Identifier: MIT
"""The plain model as one safetensors file: folded weights, and the architecture (module
types, constructor arguments, children: :mod:`onelip.arch`) as JSON in its metadata
(:func:`save_plain`, :func:`load_plain`). Loading instantiates only classes of ``torch.nn`` and
``onelip.nn``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from onelip import __version__
from onelip._errors import CheckpointError
from onelip._io import atomic_path, check_state_dict, read_safetensors
from onelip.arch import build, describe
from onelip.export.plain import to_plain

__all__ = ["PLAIN_FORMAT", "load_plain", "save_plain"]

PLAIN_FORMAT = "onelip-plain/1"


def save_plain(model: nn.Module, path: str | Path) -> Path:
    """Write the plain model of ``model`` as one safetensors file: folded weights, and the
    architecture (JSON: module types, constructor arguments, children) in its metadata.

    Read it back with :func:`load_plain`, or with any safetensors reader (the keys are the
    plain model's ``state_dict`` keys; ``metadata["architecture"]`` describes the layers).
    """
    path = Path(path)
    plain = to_plain(model).cpu()
    state = {k: v.detach().contiguous() for k, v in plain.state_dict().items()}
    try:
        architecture = json.dumps(describe(plain))
    except TypeError as e:
        raise TypeError(f"{e}; use the 'torch' or 'onnx' format") from None
    meta = {"format": PLAIN_FORMAT, "onelip_version": __version__,
            "architecture": architecture}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_plain(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a plain model written by :func:`save_plain` (or ``onelip export --format
    safetensors``), in eval mode.

    Only classes of ``torch.nn`` and ``onelip.nn`` are instantiated (files of 0.1 naming
    ``onelip.export.Residual`` / ``ChannelShift`` load as their ``onelip.nn`` twins), from
    JSON arguments: loading runs no code from the file.

    Raises:
        CheckpointError: missing or corrupt file, another format, unknown module types,
            missing/unexpected keys or other shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No file at {path}")
    state, meta = read_safetensors(path, map_location=map_location)
    if meta.get("format") != PLAIN_FORMAT:
        raise CheckpointError(f"{path} is not a plain onelip export (format "
                              f"{meta.get('format')!r}, expected {PLAIN_FORMAT!r})")
    try:
        model = build(json.loads(meta["architecture"]))
    except (KeyError, json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the architecture in its metadata is unreadable ({e})")
    check_state_dict(state, model.state_dict(), source=path, architecture="its architecture")
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    model.load_state_dict(state)
    return model.to(map_location).eval()

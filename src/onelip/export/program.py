# SPDX-License-Identifier: MIT
"""``torch.export`` programs (``.pt2``) of the plain model that run without onelip, with no
pickled payload (:func:`to_torch_program`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from onelip._io import atomic_path
from onelip.export.onnx import _default_input, _quiet_exporter
from onelip.export.plain import to_plain

__all__ = ["to_torch_program"]


def to_torch_program(model: nn.Module, path: str | Path, *,
                     input_shape: Sequence[int] | None = None,
                     example_input: Tensor | None = None, dynamic_batch: bool = True) -> Path:
    """Write the plain model as a ``torch.export`` program (``.pt2``); returns its path.

    Load it with PyTorch alone (no onelip needed)::

        prog = torch.export.load("model.pt2")
        logits = prog.module()(x)

    The file holds the graph (JSON) and the weights as raw bytes; the sample inputs are left
    out, so nothing in it is pickled (checked after writing).
    """
    path = Path(path)
    plain = to_plain(model).cpu()
    x = _default_input(plain, input_shape, example_input)
    dyn = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with atomic_path(path, suffix=".pt2") as tmp:
        with _quiet_exporter():
            prog = torch.export.export(plain, (x,), dynamic_shapes=dyn)
        prog._example_inputs = None  # Note: torch.save'd (pickled) in the archive otherwise
        torch.export.save(prog, str(tmp))
        _check_no_pickle(tmp)
    return path


def _check_no_pickle(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename.endswith("model_weights_config.json") or info.filename.endswith(
                    "model_constants_config.json"):
                cfg = json.loads(z.read(info))
                pickled = [k for k, v in cfg.get("config", {}).items() if v.get("use_pickle")]
                if pickled:
                    raise RuntimeError(f"torch.export would pickle tensors {pickled}")
            elif "sample_inputs" in info.filename and info.file_size:
                raise RuntimeError("torch.export kept pickled sample inputs")

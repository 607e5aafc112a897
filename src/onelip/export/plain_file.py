# SPDX-License-Identifier: MIT
"""The plain model as one safetensors file: folded weights, and the architecture (module
types, constructor arguments, children) as JSON in its metadata (:func:`save_plain`,
:func:`load_plain`). Loading instantiates only classes of ``torch.nn`` and ``onelip.nn``."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from onelip import __version__
from onelip import nn as onn
from onelip._errors import CheckpointError
from onelip._io import atomic_path, check_state_dict
from onelip.export.plain import to_plain

__all__ = ["PLAIN_FORMAT", "load_plain", "save_plain"]

PLAIN_FORMAT = "onelip-plain/1"
_NAMESPACES = ("torch.nn", "onelip.nn")
# 0.1 wrote the plain blocks as onelip.export.Residual / ChannelShift; they live in onelip.nn.
_LEGACY = {"onelip.export.Residual": "onelip.nn.Residual",
           "onelip.export.ChannelShift": "onelip.nn.ChannelShift"}
_SKIP_ARGS = {"self", "device", "dtype"}


def _namespace_of(cls: type) -> str:
    spaces = {"torch.nn": nn, "onelip.nn": onn}
    for name, mod in spaces.items():
        if getattr(mod, cls.__name__, None) is cls:
            return f"{name}.{cls.__name__}"
    raise TypeError(
        f"{cls.__module__}.{cls.__name__} cannot be described in the safetensors format (only "
        f"classes of {', '.join(_NAMESPACES)}); use the 'torch' or 'onnx' format"
    )


def _jsonable(v: Any) -> bool:
    if isinstance(v, (bool, int, str)) or v is None:
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (tuple, list)):
        return all(_jsonable(e) for e in v)
    return False


def _describe(m: nn.Module) -> dict:
    """The architecture of a plain module as JSON: type, constructor kwargs, children."""
    spec: dict = {"type": _namespace_of(type(m))}
    children = dict(m.named_children())
    kwargs: dict = {}
    sig = inspect.signature(type(m).__init__)
    for name, p in sig.parameters.items():
        if name in _SKIP_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in children:
            continue
        if name == "bias" and (isinstance(getattr(m, "bias", None), Tensor)
                               or getattr(m, "bias", 0) is None):
            kwargs["bias"] = m.bias is not None
            continue
        if hasattr(m, name) and _jsonable(getattr(m, name)):
            v = getattr(m, name)
            kwargs[name] = list(v) if isinstance(v, tuple) else v
        elif p.default is p.empty:
            raise TypeError(f"Cannot describe {type(m).__name__}: no attribute for its "
                            f"required argument {name!r}")
    spec["kwargs"] = kwargs
    if children:
        spec["children"] = {k: _describe(c) for k, c in children.items()}
    return spec


def _resolve(type_name: str) -> type:
    type_name = _LEGACY.get(type_name, type_name)
    space, _, name = type_name.rpartition(".")
    mods = {"torch.nn": nn, "onelip.nn": onn}
    cls = getattr(mods[space], name, None) if space in mods else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"unknown module type {type_name!r} in the architecture; "
                              f"allowed: classes of {', '.join(_NAMESPACES)}")
    return cls


def _build(spec: dict) -> nn.Module:
    cls = _resolve(spec["type"])
    kwargs = dict(spec.get("kwargs", {}))
    children = {k: _build(c) for k, c in spec.get("children", {}).items()}
    params = inspect.signature(cls.__init__).parameters
    for k in [k for k in children if k in params]:
        kwargs[k] = children.pop(k)
    m = cls(**kwargs)
    for k, c in children.items():
        m.add_module(k, c)
    return m


def save_plain(model: nn.Module, path: str | Path) -> Path:
    """Write the plain model of ``model`` as one safetensors file: folded weights, and the
    architecture (JSON: module types, constructor arguments, children) in its metadata.

    Read it back with :func:`load_plain`, or with any safetensors reader (the keys are the
    plain model's ``state_dict`` keys; ``metadata["architecture"]`` describes the layers).
    """
    path = Path(path)
    plain = to_plain(model).cpu()
    state = {k: v.detach().contiguous() for k, v in plain.state_dict().items()}
    meta = {"format": PLAIN_FORMAT, "onelip_version": __version__,
            "architecture": json.dumps(_describe(plain))}
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
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})")
    if meta.get("format") != PLAIN_FORMAT:
        raise CheckpointError(f"{path} is not a plain onelip export (format "
                              f"{meta.get('format')!r}, expected {PLAIN_FORMAT!r})")
    try:
        model = _build(json.loads(meta["architecture"]))
    except (KeyError, json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the architecture in its metadata is unreadable ({e})")
    check_state_dict(state, model.state_dict(), source=path, architecture="its architecture")
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    model.load_state_dict(state)
    return model.to(map_location).eval()

# SPDX-License-Identifier: MIT
"""Architecture descriptions of module trees: JSON of module types, constructor arguments and
children (:func:`describe`), and the tree rebuilt from it (:func:`build`). No pickle: building
instantiates only classes of ``torch.nn`` and ``onelip.nn``, from JSON keyword arguments.

Used by run folders of hand-built networks (:mod:`onelip.runs`) and by the plain safetensors
export (:mod:`onelip.export.plain_file`).

A description is ``{"type": "onelip.nn.OrthoLinear", "kwargs": {...}, "children": {...}}``.
A module is describable when each of its constructor arguments (but ``device`` / ``dtype``,
``*args`` / ``**kwargs`` and arguments that are its child modules) is stored on it as an
attribute of the same name holding a JSON value (``bias`` may be stored as the bias tensor or
``None``). Three readings of an attribute are allowed: a tuple is written as a list, and an
``(n, n)`` pair stored for an argument annotated ``int`` (``kernel_size=3`` kept as ``(3, 3)``)
is written as ``n``, and a 0-dim float tensor stored for an argument annotated ``float`` (a
learnable scalar such as ``ConvexResidual(lam=..., learnable=True)``) as its current value (the
parameter itself comes back from the weights). For ``onelip.nn`` classes a missing or
non-JSON attribute is an error (:func:`describe` names the argument); for ``torch.nn``
classes an argument left at a default that is not stored (e.g. ``nn.PReLU(init=...)``, which
only initialises a parameter) is left out.
Containers (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``) are described by their
children alone.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from torch import Tensor, nn

from onelip import nn as onn
from onelip._errors import CheckpointError

__all__ = ["NAMESPACES", "build", "describe"]

NAMESPACES = ("torch.nn", "onelip.nn")
"""The module namespaces whose classes a description may name."""

_SPACES = {"torch.nn": nn, "onelip.nn": onn}
# 0.1 wrote the plain blocks as onelip.export.Residual / ChannelShift; they live in onelip.nn.
_LEGACY = {"onelip.export.Residual": "onelip.nn.Residual",
           "onelip.export.ChannelShift": "onelip.nn.ChannelShift"}
_SKIP_ARGS = {"self", "device", "dtype"}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_INT_ANNOTATIONS = (int, "int", "int | None", "Optional[int]", "None | int")
_FLOAT_ANNOTATIONS = (float, "float")
_MISSING = object()


def _namespace_of(cls: type) -> str:
    for name, mod in _SPACES.items():
        if getattr(mod, cls.__name__, None) is cls:
            return f"{name}.{cls.__name__}"
    raise TypeError(
        f"{cls.__module__}.{cls.__name__} cannot be described as an architecture (only "
        f"classes of {', '.join(NAMESPACES)} can)"
    )


def _jsonable(v: Any) -> bool:
    if isinstance(v, (bool, int, str)) or v is None:
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (tuple, list)):
        return all(_jsonable(e) for e in v)
    return False


def _json_value(v: Any) -> Any:
    return [_json_value(e) for e in v] if isinstance(v, (tuple, list)) else v


def describe(m: nn.Module) -> dict:
    """The architecture of ``m`` as JSON: ``{"type", "kwargs", "children"}``.

    Raises:
        TypeError: a module of another namespace than ``torch.nn`` / ``onelip.nn``, or a
            ``onelip.nn`` module whose constructor argument is not stored as an attribute of
            the same name (the message names the class and the argument).

    Example:
        >>> from onelip import nn as onn
        >>> spec = describe(onn.Sequential(onn.OrthoLinear(2, 4, bias=False), onn.MaxMin()))
        >>> spec["children"]["0"]["type"], spec["children"]["0"]["kwargs"]
        ('onelip.nn.OrthoLinear', {'in_features': 2, 'out_features': 4, 'bias': False})
        >>> type(build(spec)[1]).__name__
        'MaxMin'
    """
    cls = type(m)
    spec: dict = {"type": _namespace_of(cls)}
    children = dict(m.named_children())
    kwargs: dict = {}
    strict = spec["type"].startswith("onelip.nn.")
    if not isinstance(m, _CONTAINERS):
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if (name in _SKIP_ARGS or name in children
                    or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)):
                continue
            v = getattr(m, name, _MISSING)
            if name == "bias" and (isinstance(v, Tensor) or v is None):
                kwargs["bias"] = v is not None
                continue
            if (p.annotation in _INT_ANNOTATIONS and isinstance(v, tuple) and len(v) == 2
                    and v[0] == v[1] and isinstance(v[0], int)):
                v = v[0]  # kernel_size=3 stored as (3, 3)
            if (p.annotation in _FLOAT_ANNOTATIONS and isinstance(v, Tensor) and v.ndim == 0
                    and v.is_floating_point()):
                v = float(v)  # a learnable scalar (ConvexResidual's lam): its current value
            if v is not _MISSING and _jsonable(v):
                kwargs[name] = _json_value(v)
            elif strict or p.default is p.empty:
                what = ("no attribute" if v is _MISSING
                        else f"an attribute of type {type(v).__name__}, not a JSON value,")
                raise TypeError(
                    f"Cannot describe {cls.__name__}: it has {what} for its constructor "
                    f"argument {name!r} (a describable module stores each argument as an "
                    "attribute of the same name)"
                )
    spec["kwargs"] = kwargs
    if children:
        spec["children"] = {k: describe(c) for k, c in children.items()}
    return spec


def _resolve(type_name: Any) -> type:
    if not isinstance(type_name, str):
        raise CheckpointError(f"module type {type_name!r} in the architecture is not a string")
    type_name = _LEGACY.get(type_name, type_name)
    space, _, name = type_name.rpartition(".")
    cls = getattr(_SPACES[space], name, None) if space in _SPACES else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"unknown module type {type_name!r} in the architecture; "
                              f"allowed: classes of {', '.join(NAMESPACES)}")
    return cls


def build(spec: dict) -> nn.Module:
    """The module tree described by ``spec`` (from :func:`describe`), freshly initialised.

    Raises:
        CheckpointError: a type outside ``torch.nn`` / ``onelip.nn`` or a malformed entry.
        TypeError, ValueError: arguments the class refuses.
    """
    if not isinstance(spec, dict):
        raise CheckpointError(f"an architecture entry is not an object: {spec!r:.60}")
    cls = _resolve(spec.get("type"))
    kwargs = spec.get("kwargs", {})
    kids = spec.get("children", {})
    if not isinstance(kwargs, dict) or not isinstance(kids, dict):
        raise CheckpointError(f"the kwargs/children of {spec.get('type')} are not objects")
    kwargs = dict(kwargs)
    children = {k: build(c) for k, c in kids.items()}
    params = inspect.signature(cls.__init__).parameters
    for k in [k for k in children if k in params]:
        kwargs[k] = children.pop(k)
    m = cls(**kwargs)
    for k, c in children.items():
        m.add_module(k, c)
    return m

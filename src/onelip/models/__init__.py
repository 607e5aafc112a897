# SPDX-License-Identifier: MIT
"""Ready-made 1-Lipschitz architectures, each built from a frozen dataclass config.

``build(name, **fields)`` returns ``(model, config)``; :func:`config_dict` of the config is
JSON and rebuilds the same architecture (:mod:`onelip.runs`). The table of architectures
(:data:`MODELS`) and of named presets (:data:`PRESETS`, ``onelip train --set preset=NAME``) is
static: :mod:`.mlp`, :mod:`.convnet` and :mod:`.lipresnet` define, this module lists.

All models take the flat (N, C·H·W) tensors of :mod:`onelip.data` (convolutional ones also
image batches (N, C, H, W)) and are 1-Lipschitz as a whole in eval mode.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields
from types import MappingProxyType
from typing import Any, Callable

from torch import nn

from onelip.models._common import activation
from onelip.models.convnet import (
    BETHUNE_VGG,
    TUTORIAL_CONVNET,
    TUTORIAL_CONVNET_STRIDED,
    ConvNetConfig,
    convnet,
)
from onelip.models.lipconvnet import LIPCONVNET_PRESETS, LipConvNetConfig, lipconvnet
from onelip.models.lipresnet import LIRESNET, LipResNetConfig, lipresnet
from onelip.models.mlp import MLPConfig, mlp

__all__ = [
    "BETHUNE_VGG",
    "LIPCONVNET_PRESETS",
    "LIRESNET",
    "LipConvNetConfig",
    "MODELS",
    "PRESETS",
    "TUTORIAL_CONVNET",
    "TUTORIAL_CONVNET_STRIDED",
    "ConvNetConfig",
    "LipResNetConfig",
    "MLPConfig",
    "activation",
    "available",
    "build",
    "config_defaults",
    "config_dict",
    "config_fields",
    "convnet",
    "lipconvnet",
    "lipresnet",
    "mlp",
    "presets",
]

MODELS: MappingProxyType[str, tuple[type, Callable[[Any], nn.Module]]] = MappingProxyType({
    "mlp": (MLPConfig, mlp),
    "convnet": (ConvNetConfig, convnet),
    "lipresnet": (LipResNetConfig, lipresnet),
    "lipconvnet": (LipConvNetConfig, lipconvnet),
})
"""name -> (config dataclass, builder)."""

PRESETS: MappingProxyType[str, MappingProxyType] = MappingProxyType({
    "convnet": MappingProxyType({
        "tutorial": MappingProxyType(TUTORIAL_CONVNET),
        "tutorial-strided": MappingProxyType(TUTORIAL_CONVNET_STRIDED),
        "bethune-vgg": MappingProxyType(BETHUNE_VGG),
    }),
    "lipconvnet": MappingProxyType({k: MappingProxyType(v) for k, v in
                                    LIPCONVNET_PRESETS.items()}),
    "lipresnet": MappingProxyType({
        "liresnet": MappingProxyType(LIRESNET),
    }),
})
"""model name -> preset name -> config fields."""


def available() -> list[str]:
    return sorted(MODELS)


def _entry(name: str) -> tuple[type, Callable[[Any], nn.Module]]:
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known: {', '.join(available())}")
    return MODELS[name]


def config_fields(name: str) -> set[str]:
    return {f.name for f in fields(_entry(name)[0])}


def config_defaults(name: str) -> dict[str, Any]:
    """Default value of each config field of model ``name`` (fields without one are left out)."""
    out = {}
    for f in fields(_entry(name)[0]):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def presets(model: str) -> dict[str, dict[str, Any]]:
    """The named presets of ``model``: preset name -> config fields (copies)."""
    return {k: dict(v) for k, v in PRESETS.get(model, {}).items()}


def build(name: str, **kwargs) -> tuple[nn.Module, Any]:
    """Build model ``name`` from config fields; unknown fields are an error."""
    cls, builder = _entry(name)
    unknown = set(kwargs) - config_fields(name)
    if unknown:
        raise ValueError(f"Unknown config fields for model {name!r}: {sorted(unknown)}")
    cfg = cls(**kwargs)
    return builder(cfg), cfg


def config_dict(cfg: Any) -> dict:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

# SPDX-License-Identifier: MIT
"""Ready-made 1-Lipschitz architectures, each built from a dataclass config.

``build(name, **fields)`` returns ``(model, config)``; ``asdict(config)`` is JSON and rebuilds
the same architecture (:mod:`onelip.checkpoint`).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable

from torch import nn

from onelip import nn as onn

__all__ = ["MLPConfig", "build", "available", "register"]

_LINEAR = {"ortho": onn.OrthoLinear, "spectral": onn.SpectralLinear}


def activation(name: str, *, group_size: int = 2) -> nn.Module:
    acts: dict[str, Callable[[], nn.Module]] = {
        "groupsort": lambda: onn.GroupSort(group_size),
        "maxmin": lambda: onn.MaxMin(),
        "fullsort": lambda: onn.FullSort(),
        "abs": lambda: onn.Abs(),
    }
    if name not in acts:
        raise ValueError(f"Unknown activation {name!r}; expected one of {', '.join(acts)}")
    return acts[name]()


@dataclass(frozen=True)
class MLPConfig:
    """A dense 1-Lipschitz MLP: Flatten → [Linear → activation] × len(hidden) → head."""

    in_features: int = 784
    """Input size D (inputs of any shape are flattened)."""
    num_outputs: int = 10
    """K logits, or 1 for a binary classifier sign(f)."""
    hidden: tuple[int, ...] = (512, 512, 512)
    """Widths of the hidden layers."""
    layer: str = "ortho"
    """'ortho' (OrthoLinear) or 'spectral' (SpectralLinear)."""
    activation: str = "maxmin"
    """'maxmin', 'groupsort', 'fullsort' or 'abs'."""
    group_size: int = 2
    """Group size for 'groupsort'."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.layer not in _LINEAR:
            raise ValueError(f"Unknown layer {self.layer!r}; expected one of {', '.join(_LINEAR)}")
        if self.in_features < 1 or self.num_outputs < 1 or any(h < 1 for h in self.hidden):
            raise ValueError("Expected positive in_features, num_outputs and hidden widths")


def mlp(cfg: MLPConfig) -> onn.Sequential:
    lin = _LINEAR[cfg.layer]
    layers: list[nn.Module] = [nn.Flatten()]
    width = cfg.in_features
    for h in cfg.hidden:
        layers += [lin(width, h), activation(cfg.activation, group_size=cfg.group_size)]
        width = h
    if cfg.num_outputs == 1:
        layers.append(onn.FrobeniusLinear(width, 1))
    else:
        layers.append(lin(width, cfg.num_outputs))
    return onn.Sequential(*layers)


_REGISTRY: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {"mlp": (MLPConfig, mlp)}


def register(name: str, config_cls: type, builder: Callable[[Any], nn.Module]) -> None:
    """Add an architecture ``name`` built by ``builder(config_cls(**fields))``."""
    _REGISTRY[name] = (config_cls, builder)


def available() -> list[str]:
    return sorted(_REGISTRY)


def config_fields(name: str) -> set[str]:
    return {f.name for f in fields(_REGISTRY[name][0])}


def config_defaults(name: str) -> dict[str, Any]:
    """Default value of each config field of model ``name`` (fields without one are left out)."""
    out = {}
    for f in fields(_REGISTRY[name][0]):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


_PRESETS: dict[str, dict[str, dict[str, Any]]] = {}


def register_preset(model: str, preset: str, config: dict[str, Any]) -> None:
    """Name a set of config fields of ``model`` (``onelip train --set preset=NAME``)."""
    _PRESETS.setdefault(model, {})[preset] = dict(config)


def presets(model: str) -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in _PRESETS.get(model, {}).items()}


def build(name: str, **kwargs) -> tuple[nn.Module, Any]:
    """Build model ``name`` from config fields; unknown fields are an error."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; known: {', '.join(available())}")
    cls, builder = _REGISTRY[name]
    unknown = set(kwargs) - config_fields(name)
    if unknown:
        raise ValueError(f"Unknown config fields for model {name!r}: {sorted(unknown)}")
    cfg = cls(**kwargs)
    return builder(cfg), cfg


def config_dict(cfg: Any) -> dict:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# Convolutional architectures register themselves (convnet, lipresnet).
from onelip import models_conv as _models_conv  # noqa: E402,F401

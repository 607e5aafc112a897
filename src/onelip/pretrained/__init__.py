# SPDX-License-Identifier: MIT
"""Networks trained by the project, shipped inside the package: no download.

Each shipped model is a folder of this package, ``onelip/pretrained/<name>/``, holding

* ``config.json`` + ``model.safetensors``: a run folder as :func:`onelip.runs.write_model`
  writes it (the model's name and config, the SHA-256 digests of both, the classes and the input
  shape under ``splits``), read back by :func:`onelip.runs.load` (weights through safetensors,
  never a pickle);
* ``card.json``: the model card: the data it was trained on, the split its figures are
  measured on (a validation split, never a test split), the recipe, the CPU time, the
  validation clean and certified accuracies, the certificate and whether it is valid, and the
  commands that produced it. ``docs/pretrained.md`` shows the cards.

The certificate of a shipped classifier: no L2 perturbation of norm below
margin/(√2·L) changes its decision, L = ``model.lipschitz_bound()`` (the whole network's
certified bound, its input ``Normalize`` included), in the units of its input (pixels in
[0, 1] for the CIFAR-10 models).

The folders are package data (``pyproject.toml``): found through :mod:`importlib.resources`,
in an installed wheel as in an editable install. Nothing here writes into them; this module
keeps no state and registers nothing.

Example:
    >>> from onelip import pretrained
    >>> "cifar10-xs" in pretrained.names()
    True
    >>> pretrained.card("cifar10-xs")["data"]["classes"][:3]
    ['airplane', 'automobile', 'bird']
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from torch import nn

from onelip import runs

__all__ = ["CARD", "PREFIX", "card", "load", "names", "path", "root"]

CARD = "card.json"
"""The model card of a shipped model (beside its ``config.json`` and ``model.safetensors``)."""
PREFIX = "pretrained:"
"""How the command line names a shipped model where it takes a run folder
(``onelip certify pretrained:cifar10-xs``)."""


def root() -> Path:
    """The folder of this package, which holds one sub-folder per shipped model.

    Raises:
        ValueError: the package is not installed as files (e.g. imported from a zip archive).
    """
    here = resources.files(__name__)
    if not isinstance(here, Path):
        raise ValueError(f"onelip.pretrained is not installed as files ({here}); install "
                         "onelip from a wheel or a source folder to use its pretrained models")
    return here


def _is_model(folder: Path) -> bool:
    return (folder / CARD).is_file() and runs.is_run_folder(folder)


def names() -> list[str]:
    """The names of the shipped models, sorted.

    Example:
        >>> names() == sorted(names())
        True
    """
    return sorted(p.name for p in root().iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")) and _is_model(p))


def path(name: str) -> Path:
    """The folder of the shipped model ``name`` (a run folder plus ``card.json``); read it,
    never write into it.

    Raises:
        ValueError: ``name`` is not a shipped model (the message lists them).
    """
    known = names()
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"unknown pretrained model {name!r}; the shipped ones are: "
                         f"{', '.join(known) or '(none)'}")
    return root() / name


def load(name: str) -> nn.Module:
    """The shipped model ``name``: rebuilt from its ``config.json``, its weights read from
    ``model.safetensors`` (digests verified), float32, in eval mode, on the CPU.

    Example:
        >>> import torch
        >>> model = load("cifar10-xs")
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])

    Raises:
        ValueError: ``name`` is not a shipped model.
        onelip.runs.CheckpointError: the folder's files changed since they were written.
    """
    model, _ = runs.load(path(name), map_location="cpu")
    return model.float().eval()


def card(name: str) -> dict:
    """The model card of ``name`` (``card.json``): data, split, recipe, CPU time, validation
    figures, the certificate and its validity, the commands that produced the model."""
    return json.loads((path(name) / CARD).read_text(encoding="utf-8"))

# SPDX-License-Identifier: MIT
r"""Export: onelip models to plain PyTorch layers, ONNX, a ``torch.export`` program, safetensors.

* :func:`to_plain` — a *new* model made of plain ``nn.Linear`` / ``nn.Conv2d`` whose weights
  are the folded constrained weights (no parametrization, no Björck, no power iteration),
  plus onelip's parameter-free activations and pooling. It computes the **eval-mode**
  function of the original (the one certificates are about) and leaves the original as it was.
* :func:`to_onnx` — the plain model as ONNX (dynamic batch axis), through the
  ``torch.export``-based exporter; GroupSort becomes Min/Max (group 2) or TopK.
* :func:`to_torch_program` — the plain model as a ``torch.export`` program (``.pt2``) that runs
  in PyTorch without onelip: ``torch.export.load(path).module()(x)``.
* :func:`save_plain` / :func:`load_plain` — the plain model's folded weights as one
  safetensors file, its architecture as JSON in the file's metadata.
* :func:`save` / :func:`load` — run folders of *onelip* models (latent weights in safetensors
  + ``config.json``), re-exported from :mod:`onelip.runs`.

No pickle anywhere: safetensors and JSON are data; :func:`load_plain` only instantiates module
classes of ``torch.nn`` and ``onelip.nn``, from JSON keyword arguments; the ``.pt2`` files
written here hold no pickled payload (their weights are raw bytes and the sample inputs are
dropped).

**Export hook for layer authors.** One mechanism: every onelip layer with weights defines
``export()``, returning plain modules that compute its eval-mode function; the walk
(:func:`onelip.nn.export_tree`) handles containers, parameter-free modules and plain torch
layers. A onelip layer with parameters and no ``export()`` is an error, never a silent copy.

Modules: :mod:`.plain` (:func:`to_plain`), :mod:`.onnx`, :mod:`.program` (``torch.export``),
:mod:`.plain_file` (safetensors + architecture JSON).
"""

from __future__ import annotations

from onelip._errors import CheckpointError
from onelip.export.onnx import onnx_max_error, to_onnx
from onelip.export.plain import to_plain
from onelip.export.plain_file import PLAIN_FORMAT, load_plain, save_plain
from onelip.export.program import to_torch_program
from onelip.nn.plain import ChannelShift, Residual

__all__ = [
    "PLAIN_FORMAT",
    "ChannelShift",
    "CheckpointError",
    "Residual",
    "load",
    "load_plain",
    "onnx_max_error",
    "save",
    "save_plain",
    "to_onnx",
    "to_plain",
    "to_torch_program",
]


def save(model, path, **kwargs):
    """:func:`onelip.runs.save` (a run folder of a onelip model), kept here from 0.1.

    Imported when called, so that ``import onelip.export`` does not load the model zoo.
    """
    from onelip import runs

    return runs.save(model, path, **kwargs)


def load(path, **kwargs):
    """:func:`onelip.runs.load` (model and config of a run folder), kept here from 0.1."""
    from onelip import runs

    return runs.load(path, **kwargs)

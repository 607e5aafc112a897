# SPDX-License-Identifier: MIT
"""ONNX export of the plain model (:func:`to_onnx`) and its check with onnxruntime
(:func:`onnx_max_error`)."""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from onelip._io import _umask, atomic_path
from onelip.export.plain import to_plain
from onelip.nn.utils import eval_mode

__all__ = ["onnx_max_error", "to_onnx"]


def _default_input(model: nn.Module, input_shape: Sequence[int] | None,
                   example_input: Tensor | None) -> Tensor:
    """An example batch (batch size ≥ 2: torch.export specialises sizes 0 and 1)."""
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    if example_input is not None:
        x = example_input.detach().cpu()
        if x.shape[0] < 2:
            x = x.expand(2, *x.shape[1:]).clone()
        _check_input(model, x)
        return x
    if input_shape is None:
        first = next((m for m in model.modules() if hasattr(m, "in_features")), None)
        if first is None or any(hasattr(m, "in_channels") for m in model.modules()):
            raise ValueError("Cannot infer the input shape of this model; pass input_shape= "
                             "(one sample, e.g. (1, 28, 28)) or example_input=")
        input_shape = (first.in_features,)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *input_shape, generator=gen, dtype=dtype)
    _check_input(model, x)
    return x


def _expected_input(model: nn.Module) -> str:
    """What one input sample of ``model`` looks like, as far as its first layer says."""
    for m in model.modules():
        if hasattr(m, "input_shape") and not list(m.children()):
            shape = tuple(m.input_shape)
            return f"{shape} or ({math.prod(shape)},)"
        if hasattr(m, "in_channels"):
            return f"({m.in_channels}, H, W)"
        if hasattr(m, "in_features"):
            return f"({m.in_features},)"
    return "unknown"


def _check_input(model: nn.Module, x: Tensor) -> None:
    """Run ``model`` on the example batch first: a shape it does not take is a one-line
    ``ValueError`` here, instead of the exporter's multi-line report."""
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        msg = " ".join(_ANSI.sub("", str(e)).split())
        raise ValueError(
            f"the model does not take inputs of shape {tuple(x.shape[1:])} (one sample): "
            f"{msg}; pass input_shape= of one sample, expected {_expected_input(model)}"
        ) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextmanager
def _quiet_exporter():
    """Silence the exporter's INFO/WARNING logs (e.g. 'torchvision is not installed')."""
    names = ["torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export",
             "torch._export"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _require(module: str, what: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs the '{module}' package, which is not installed: "
            "pip install 'onelip[export]'"
        ) from e


def to_onnx(model: nn.Module, path: str | Path, *, input_shape: Sequence[int] | None = None,
            example_input: Tensor | None = None, opset_version: int | None = None,
            dynamic_batch: bool = True) -> Path:
    """Write ``model``'s eval-mode function as an ONNX file; returns its path.

    The model is exported through :func:`to_plain` (plain Gemm/Conv with folded weights) with
    ``torch.onnx.export(dynamo=True)`` (the ``torch.export``-based exporter, onnxscript),
    weights inside the one file. The input is named ``input`` and its first axis ``batch``
    is dynamic; the output is ``logits``. With onnxruntime, outputs match PyTorch within 1e-5
    (float32; see :func:`onnx_max_error`).

    Args:
        model: any model :func:`to_plain` accepts.
        path: the ``.onnx`` file to write (replaced atomically).
        input_shape: the shape of one sample, e.g. ``(784,)`` or ``(3, 32, 32)``; inferred
            for dense models.
        example_input: a batch to trace with (instead of ``input_shape``).
        opset_version: ONNX opset; default: the exporter's.
        dynamic_batch: make the batch axis dynamic. Default: ``True``.

    Raises:
        ValueError: the model does not take inputs of ``input_shape`` (the message says the
            shape its first layer expects), or the shape cannot be inferred.
        ImportError: ``onnx`` or ``onnxscript`` is not installed.
    """
    _require("onnx", "to_onnx")
    _require("onnxscript", "to_onnx")
    path = Path(path)
    plain = to_plain(model).cpu()
    x = _default_input(plain, input_shape, example_input)
    dyn = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    nbytes = sum(p.numel() * p.element_size() for p in plain.parameters())
    with atomic_path(path, suffix=".onnx") as tmp:
        with _quiet_exporter():
            torch.onnx.export(plain, (x,), str(tmp), dynamo=True, dynamic_shapes=dyn,
                              input_names=["input"], output_names=["logits"],
                              opset_version=opset_version, verbose=False,
                              external_data=nbytes > 1.5 * 2**30)
        side = Path(str(tmp) + ".data")
        if side.exists():
            os.chmod(side, 0o666 & ~_umask())
            os.replace(side, Path(str(path) + ".data"))
    return path


def onnx_max_error(model: nn.Module, path: str | Path, x: Tensor) -> float:
    """max |ONNX(x) − model(x)| with onnxruntime (CPU), ``model`` in eval mode."""
    ort = _require("onnxruntime", "onnx_max_error")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy()})[0]
    with eval_mode(model), torch.no_grad():
        ref = model(x)
    return float((torch.from_numpy(out).to(ref.device, ref.dtype) - ref).abs().max())

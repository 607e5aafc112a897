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
  + ``config.json``), re-exported from :mod:`onelip.checkpoint`.

No pickle anywhere: safetensors and JSON are data; :func:`load_plain` only instantiates module
classes of ``torch.nn``, ``onelip.nn`` and this module, from JSON keyword arguments; the
``.pt2`` files written here hold no pickled payload (their weights are raw bytes and the
sample inputs are dropped).

**Export hook for layer authors.** :func:`to_plain` asks each module, in this order:

1. ``module.export()`` if the class defines it: return a new plain module computing the
   eval-mode function (``nn.Linear``/``nn.Conv2d``/``nn.ConvTranspose2d`` with folded weights,
   parameter-free onelip modules, :class:`Residual`, ``nn.Sequential`` of those);
2. an exporter registered with :func:`register` for the class (or a base class);
3. containers (``nn.Sequential``, ``onelip.nn.Sequential``, ``nn.ModuleList``,
   ``nn.ModuleDict``): the same container of exported children;
4. modules without parameters or buffers of their own (activations, pooling, ``nn.Flatten``,
   or a user's ``nn.Module`` that only *calls* its children): a copy whose children are
   exported — a module whose ``forward`` reads its children's weights must use 1. or 2.;
5. plain torch leaf modules (``nn.Linear``, ``nn.Conv2d``, …): a copy.

A onelip layer with parameters and none of 1.–2. is an error, never a silent copy.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import os
import tempfile
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from onelip import __version__
from onelip.checkpoint import CheckpointError, load, save
from onelip.nn import BatchCentering, FrobeniusLinear, OrthoLinear, SpectralLinear
from onelip.nn._base import LipschitzModule

__all__ = [
    "ChannelShift",
    "CheckpointError",
    "Residual",
    "load",
    "load_plain",
    "onnx_max_error",
    "register",
    "save",
    "save_plain",
    "to_onnx",
    "to_plain",
    "to_torch_program",
]

# ==== to_plain ==============================================================================

Exporter = Callable[[nn.Module], nn.Module]
_EXPORTERS: dict[type, Exporter] = {}


def register(cls: type) -> Callable[[Exporter], Exporter]:
    """Register ``fn(module) -> plain module`` as the exporter of ``cls`` and its subclasses.

    The alternative to an ``export()`` method, for classes one cannot edit::

        @onelip.export.register(MyLayer)
        def _(m):
            return nn.Linear(...)
    """

    def deco(fn: Exporter) -> Exporter:
        _EXPORTERS[cls] = fn
        return fn

    return deco


class Residual(nn.Module):
    r"""Plain residual block :math:`y = a\,x + b\,\mathrm{body}(x)`: what residual layers
    (ConvexResidual: :math:`a = 1-\lambda, b = \lambda`; SLL: :math:`a = b = 1` with the
    scaling folded into ``body``'s weights) export to.

    Args:
        body: plain module with output shape = input shape.
        skip: a, the factor of the identity branch. Default: 1.
        scale: b, the factor of the body. Default: 1.
    """

    def __init__(self, body: nn.Module, *, skip: float = 1.0, scale: float = 1.0) -> None:
        super().__init__()
        self.body = body
        self.skip = float(skip)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip * x + self.scale * self.body(x)

    def extra_repr(self) -> str:
        return f"skip={self.skip}, scale={self.scale}"


class ChannelShift(nn.Module):
    r"""Plain per-channel translation :math:`y = x + b` (b broadcast over axis 1): what
    :class:`onelip.nn.BatchCentering` exports to (:math:`b = \beta - \mu_{running}`).

    Shape:
        :math:`(N, C, *) \to (N, C, *)`.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.bias = nn.Parameter(torch.zeros(self.num_features))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view((1, -1) + (1,) * (x.dim() - 2))

    def extra_repr(self) -> str:
        return f"{self.num_features}"


def _plain_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    out_f, in_f = weight.shape
    lin = nn.Linear(in_f, out_f, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    lin.weight.copy_(weight)
    if bias is not None:
        lin.bias.copy_(bias)
    return lin


@register(OrthoLinear)
@register(SpectralLinear)
@register(FrobeniusLinear)
def _export_dense(m: nn.Module) -> nn.Linear:
    # Note: effective_weight() is the exact eval-mode weight in both modes (OrthoLinear's
    # train-mode *forward* is a one-step Björck surrogate; its effective_weight() is not).
    return _plain_linear(m.effective_weight().detach(), m.bias)


@register(BatchCentering)
def _export_batch_centering(m: nn.Module) -> ChannelShift:
    # eval mode: y = x − μ_running + β, a translation.
    shift = -m.running_mean.detach()
    if m.bias is not None:
        shift = shift + m.bias.detach()
    out = ChannelShift(m.num_features).to(device=shift.device, dtype=shift.dtype)
    out.bias.copy_(shift)
    return out


def _registered(cls: type) -> Exporter | None:
    for base in cls.__mro__:
        if base in _EXPORTERS:
            return _EXPORTERS[base]
    return None


def _own_tensors(m: nn.Module) -> list[str]:
    return [n for n, _ in m.named_parameters(recurse=False)] + [
        n for n, _ in m.named_buffers(recurse=False)
    ]


def _export_module(m: nn.Module) -> nn.Module:
    if isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return _export_module(m.module)
    if hasattr(m, "_orig_mod") and type(m).__name__ == "OptimizedModule":  # torch.compile
        return _export_module(m._orig_mod)
    hook = getattr(type(m), "export", None)
    if callable(hook):
        return m.export()
    fn = _registered(type(m))
    if fn is not None:
        return fn(m)
    if type(m) in (nn.Sequential, _onelip_sequential()):
        return nn.Sequential(OrderedDict((k, _export_module(c)) for k, c in m.named_children()))
    if type(m) is nn.ModuleList:
        return nn.ModuleList(_export_module(c) for c in m)
    if type(m) is nn.ModuleDict:
        return nn.ModuleDict({k: _export_module(c) for k, c in m.items()})
    own = _own_tensors(m)
    if isinstance(m, LipschitzModule) and own:
        raise TypeError(
            f"{type(m).__name__} has parameters or buffers ({', '.join(own)}) but no export: "
            "give it an export() method returning plain modules, or register an exporter "
            "with onelip.export.register"
        )
    children = list(m.named_children())
    if own and children:
        raise TypeError(
            f"Cannot export {type(m).__name__}: it has its own tensors ({', '.join(own)}) and "
            "children; give it an export() method"
        )
    # A parameter-free module (activation, pooling, flatten, a user's wrapper that calls its
    # children) or a plain torch leaf (nn.Linear, nn.Conv2d): a copy, children exported.
    new = _copy_shell(m)
    for name, child in children:
        setattr(new, name, _export_module(child))
    return new


def _copy_shell(m: nn.Module) -> nn.Module:
    """A deep copy of ``m`` without copying its children (they are replaced anyway)."""
    memo = {id(c): None for c in m.children()}
    new = copy.deepcopy(m, memo)
    return new


def _onelip_sequential() -> type:
    from onelip.nn import Sequential

    return Sequential


@torch.no_grad()
def to_plain(model: nn.Module) -> nn.Module:
    r"""A new model of plain torch layers computing ``model``'s eval-mode function.

    Constrained layers become ``nn.Linear`` / ``nn.Conv2d`` holding their folded weight
    (``effective_weight()``: polar factor, :math:`W/\sigma_{\max}`, …); onelip's
    parameter-free activations and pooling are copied; containers keep their structure
    (``onelip.nn.Sequential`` becomes ``nn.Sequential``); ``DistributedDataParallel``,
    ``DataParallel`` and ``torch.compile`` wrappers are unwrapped. ``model`` is not modified
    (its training mode and weights stay as they were).

    The plain model is in eval mode, on the device and in the dtype of ``model``; in float32
    its outputs equal the eval-mode outputs of ``model`` within 1e-6 (the same ops on the same
    weights: in practice bit for bit).

    Raises:
        TypeError: a module with constrained weights that has no exporter (see the module
            docstring for the hook to implement).

    Example:
        >>> from onelip import nn as onn
        >>> net = onn.Sequential(onn.OrthoLinear(4, 8), onn.GroupSort(2), onn.OrthoLinear(8, 2))
        >>> plain = to_plain(net)
        >>> x = torch.randn(3, 4)
        >>> bool((plain(x) - net.eval()(x)).abs().max() < 1e-6)
        True
    """
    plain = _export_module(model)
    leftover = [type(m).__name__ for m in plain.modules()
                if isinstance(m, LipschitzModule) and _own_tensors(m)]
    assert not leftover, f"exporters returned constrained layers: {leftover}"
    return plain.eval()


# ==== example inputs ========================================================================


def _default_input(model: nn.Module, input_shape: Sequence[int] | None,
                   example_input: Tensor | None) -> Tensor:
    """An example batch (batch size ≥ 2: torch.export specialises sizes 0 and 1)."""
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    if example_input is not None:
        x = example_input.detach().cpu()
        if x.shape[0] < 2:
            x = x.expand(2, *x.shape[1:]).clone()
        return x
    if input_shape is None:
        first = next((m for m in model.modules() if hasattr(m, "in_features")), None)
        if first is None or any(hasattr(m, "in_channels") for m in model.modules()):
            raise ValueError("Cannot infer the input shape of this model; pass input_shape= "
                             "(one sample, e.g. (1, 28, 28)) or example_input=")
        input_shape = (first.in_features,)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, *input_shape, generator=gen, dtype=dtype)


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
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _atomic_target(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(tmp)


# ==== ONNX ==================================================================================


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
    """
    _require("onnx", "to_onnx")
    _require("onnxscript", "to_onnx")
    path = Path(path)
    plain = to_plain(model).cpu()
    x = _default_input(plain, input_shape, example_input)
    dyn = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    nbytes = sum(p.numel() * p.element_size() for p in plain.parameters())
    tmp = _atomic_target(path, ".onnx")
    try:
        with _quiet_exporter():
            torch.onnx.export(plain, (x,), str(tmp), dynamo=True, dynamic_shapes=dyn,
                              input_names=["input"], output_names=["logits"],
                              opset_version=opset_version, verbose=False,
                              external_data=nbytes > 1.5 * 2**30)
        os.replace(tmp, path)
        side = Path(str(tmp) + ".data")
        if side.exists():
            os.replace(side, Path(str(path) + ".data"))
    finally:
        tmp.unlink(missing_ok=True)
    return path


def onnx_max_error(model: nn.Module, path: str | Path, x: Tensor) -> float:
    """max |ONNX(x) − model(x)| with onnxruntime (CPU), ``model`` in eval mode."""
    ort = _require("onnxruntime", "onnx_max_error")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy()})[0]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(x)
    finally:
        model.train(was)
    return float((torch.from_numpy(out).to(ref.device, ref.dtype) - ref).abs().max())


# ==== torch.export program ==================================================================


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
    tmp = _atomic_target(path, ".pt2")
    try:
        with _quiet_exporter():
            prog = torch.export.export(plain, (x,), dynamic_shapes=dyn)
        prog._example_inputs = None  # Note: torch.save'd (pickled) in the archive otherwise
        torch.export.save(prog, str(tmp))
        _check_no_pickle(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


# ==== plain safetensors + architecture JSON =================================================

PLAIN_FORMAT = "onelip-plain/1"
_NAMESPACES = ("torch.nn", "onelip.nn", "onelip.export")
_SKIP_ARGS = {"self", "device", "dtype"}


def _namespace_of(cls: type) -> str:
    import onelip.nn as onn

    spaces = {"torch.nn": nn, "onelip.nn": onn, "onelip.export": _this_module()}
    for name, mod in spaces.items():
        if getattr(mod, cls.__name__, None) is cls:
            return f"{name}.{cls.__name__}"
    raise TypeError(
        f"{cls.__module__}.{cls.__name__} cannot be described in the safetensors format (only "
        f"classes of {', '.join(_NAMESPACES)}); use the 'torch' or 'onnx' format"
    )


def _this_module():
    import sys

    return sys.modules[__name__]


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
    import onelip.nn as onn

    space, _, name = type_name.rpartition(".")
    mods = {"torch.nn": nn, "onelip.nn": onn, "onelip.export": _this_module()}
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
    from safetensors.torch import save_file

    path = Path(path)
    plain = to_plain(model).cpu()
    state = {k: v.detach().contiguous() for k, v in plain.state_dict().items()}
    meta = {"format": PLAIN_FORMAT, "onelip_version": __version__,
            "architecture": json.dumps(_describe(plain))}
    tmp = _atomic_target(path, ".safetensors")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_plain(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a plain model written by :func:`save_plain` (or ``onelip export --format
    safetensors``), in eval mode.

    Only classes of ``torch.nn``, ``onelip.nn`` and ``onelip.export`` are instantiated, from
    JSON arguments: loading runs no code from the file.

    Raises:
        CheckpointError: missing or corrupt file, another format, unknown module types,
            missing/unexpected keys or other shapes.
    """
    from safetensors import SafetensorError, safe_open

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
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the architecture: missing keys "
                              f"{missing[:5]}, unexpected keys {unexpected[:5]}")
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{path}: weights have other shapes than the architecture: "
                              f"{bad[:5]}")
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    model.load_state_dict(state)
    return model.to(map_location).eval()

# SPDX-License-Identifier: MIT
"""``onelip export RUN --format torch|onnx|safetensors --out FILE``.

Formats (all written atomically; an existing FILE is kept unless ``--force``):

* ``torch``: a ``torch.export`` program (``.pt2``): ``torch.export.load(FILE).module()(x)``
  runs it with PyTorch alone;
* ``onnx``: ONNX with a dynamic batch axis (input ``input``, output ``logits``);
* ``safetensors``: the folded plain weights, architecture JSON in the metadata:
  ``onelip.export.load_plain(FILE)``.

After writing, the export is loaded back and compared with the run's model on 64 random
inputs; the command prints that error and the export time.

``RUN`` may be ``pretrained:NAME``, a model shipped with onelip (:mod:`onelip.pretrained`);
``--out`` is required and may not lie inside the package's (read-only) pretrained folders, nor
inside a run folder (the exported run's or any other, whatever the spelling of the path:
symbolic links and ``..`` are resolved), whose own files an export would replace.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from onelip.cli._common import PRETRAINED_HELP, CLIError, refuse_inside_pretrained, resolve_run

__all__ = ["add_arguments", "run"]

FORMATS = ("torch", "onnx", "safetensors")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help=PRETRAINED_HELP)
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="torch (.pt2 program), onnx, or safetensors (plain weights + JSON)")
    p.add_argument("--out", required=True, type=Path, help="file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def _input_shape(cfg: dict) -> tuple[int, ...] | None:
    """The shape of one input sample: recorded with the model, or that of its data set; None
    when the run says neither (a network saved by ``onelip.runs.save`` without them)."""
    if "input_shape" in cfg["model"]:
        return tuple(int(s) for s in cfg["model"]["input_shape"])
    mcfg = cfg["model"].get("config", {})
    if "input_shape" in mcfg:
        return tuple(int(s) for s in mcfg["input_shape"])
    if "in_features" in mcfg:
        return (int(mcfg["in_features"]),)
    from onelip import data as datasets

    d = cfg.get("data", {})
    if "name" not in d:
        return None
    return tuple(datasets.load(d["name"], **{k: v for k, v in d.items() if k != "name"})
                 .input_shape)


def _dense_input_shape(model) -> tuple[int, ...] | None:
    """(in_features,) of a network of dense layers; None when it has convolutions."""
    mods = list(model.modules())
    if any(hasattr(m, "in_channels") or hasattr(m, "input_shape") for m in mods):
        return None
    first = next((m for m in mods if hasattr(m, "in_features")), None)
    return None if first is None else (int(first.in_features),)


def run(args: argparse.Namespace) -> int:
    """Export a trained run to torch (.pt2), ONNX or plain safetensors."""
    import torch

    from onelip import export, runs
    from onelip._io import unwritable_reason

    out: Path = args.out
    folder, _ = resolve_run(args.run)
    refuse_inside_pretrained(out)
    inside = runs.enclosing_run(out)
    if inside is not None:  # whatever its spelling: never a run's own files
        beside = ("beside it" if inside.name.startswith(".") else
                  f"e.g. {inside.with_name(inside.name + (out.suffix or '.' + args.format))}")
        raise CLIError(f"--out {out} is inside the run folder {inside}: an export never "
                       "writes into a run folder (it would replace or sit among the run's "
                       f"own files); choose --out outside it, {beside}")
    if out.exists() and not args.force:
        raise CLIError(f"{out} already exists; choose another --out or pass --force to "
                         "overwrite it")
    if out.is_dir():
        raise CLIError(f"{out} is a directory; --out must be a file")
    if args.format == "torch" and out.suffix != ".pt2":
        raise CLIError(f"--format torch writes a torch.export program, whose file name must "
                         f"end in .pt2 (torch.export.load expects it), but got --out {out}")
    reason = unwritable_reason(out.parent)
    if reason is not None:
        raise CLIError(f"cannot write --out {out}: {reason}")
    model, cfg = runs.load(folder)
    shape = _input_shape(cfg) or _dense_input_shape(model)
    if shape is None:
        raise CLIError(f"{args.run} records neither an input shape nor a data set; save the "
                       "network with onelip.runs.save(..., input_shape=...) to export it")
    t0 = time.perf_counter()
    try:
        if args.format == "onnx":
            export.to_onnx(model, out, input_shape=shape)
        elif args.format == "torch":
            export.to_torch_program(model, out, input_shape=shape)
        else:
            export.save_plain(model, out)
    except ImportError as e:
        raise CLIError(str(e)) from e
    seconds = time.perf_counter() - t0

    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        if args.format == "onnx":
            try:
                err = export.onnx_max_error(model, out, x)
            except ImportError:
                err = None
        elif args.format == "torch":
            err = float((torch.export.load(str(out)).module()(x) - ref).abs().max())
        else:
            err = float((export.load_plain(out)(x) - ref).abs().max())
    check = "not checked (onnxruntime missing)" if err is None else f"{err:.1e}"
    print(f"exported {args.run} -> {out} ({args.format}, {out.stat().st_size:,} bytes) in "
          f"{seconds:.2f}s; max |export - model| on 64 random inputs: {check}")
    return 0

# SPDX-License-Identifier: MIT
"""What every command shares: the one-line user error, argument types and the help format."""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

__all__ = ["FLAGS", "MAX_EPS", "PRETRAINED_HELP", "CLIError", "HelpFormatter", "LazyDefault",
           "Parser", "data_source", "device", "eps_float", "error_text", "nonneg_float",
           "positive_float", "positive_int", "refuse_inside_pretrained", "resolve_run",
           "set_item", "typed_value", "warn"]

MAX_EPS = 1e6
"""Largest ``--eps``: an L2 radius in input units (inputs are in [0, 1] or standardised)."""


class CLIError(Exception):
    """A user error: printed as one line ``onelip: error: ...``, exit status 2."""


FLAGS = MappingProxyType({
    "lr": "--lr",
    "amp": "--amp",
    "epsilon_ramp": "--epsilon-ramp",
    "epochs": "--epochs {value}",
    "path": "--out",
    "overwrite": "--force",
    "resume": "--resume {value}",
    "train_run": "train one with `onelip train --out {value}`",
    "nproc": "--nproc {value}",
    "resize": "--resize H W",
    "layout": "--layout NHWC or NCHW (onelip train)",
    "hidden": "--width (or --set hidden=...)",
    "n_samples": " (--n-samples)",  # after "n_samples >= 10" in the library's message
    "data": "--data folder:DIR",
    "quick": "--quick",
})
"""Library argument (:class:`onelip._errors.Argument` ``name``) -> how the command line says
it, in the messages of the library errors the CLI shows (``{value}``: the argument's value)."""


def error_text(err: BaseException) -> str:
    """The message of a library error as the CLI shows it: the library arguments it names
    (:class:`onelip._errors.NamesArguments`) spelled as flags (:data:`FLAGS`)."""
    from onelip._errors import NamesArguments

    return err.message(FLAGS) if isinstance(err, NamesArguments) else str(err)


def warn(message: str) -> None:
    """One line ``onelip: warning: ...`` on stderr."""
    import sys

    print(f"onelip: warning: {message}", file=sys.stderr)


class LazyDefault:
    """An option's default read only when needed: by ``--help``, or by :meth:`resolve` once
    the command runs (so that building the parser loads nothing heavy, e.g. torch)."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self._read = read

    @property
    def value(self) -> Any:
        return self._read()

    def __str__(self) -> str:
        return str(self.value)

    @staticmethod
    def resolve(args: argparse.Namespace) -> None:
        """Replace the options of ``args`` left at a lazy default by its value."""
        for dest, v in vars(args).items():
            if isinstance(v, LazyDefault):
                setattr(args, dest, v.value)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, and ``{models}`` / ``{datasets}`` /
    ``{pretrained}`` in help texts replaced by the known names (looked up only when help is
    shown: importing the tables loads torch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        default = default.value if isinstance(default, LazyDefault) else default
        if (default in (None, False, [], argparse.SUPPRESS) or action.required
                or "%(default)" in text or not action.option_strings):
            return text
        return text + " (default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        return _lists(super()._expand_help(action))

    def _format_text(self, text: str) -> str:
        return super()._format_text(_lists(text))


def _lists(text: str) -> str:
    if "{models}" in text:
        from onelip import models

        text = text.replace("{models}", ", ".join(models.available()))
    if "{datasets}" in text:
        from onelip import data

        text = text.replace("{datasets}", ", ".join(data.available()))
    if "{conv_layers}" in text or "{dense_layers}" in text:
        from onelip import nn as onn

        text = text.replace("{conv_layers}", ", ".join(onn.CONV_LAYERS))
        text = text.replace("{dense_layers}", ", ".join(onn.DENSE_LAYERS))
    if "{pretrained}" in text:
        from onelip import pretrained

        text = text.replace("{pretrained}", ", ".join(pretrained.names()))
    return text


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, no usage dump
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}")
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s}")
    return v


def positive_float(s: str) -> float:
    v = nonneg_float(s)
    if v == 0:
        raise argparse.ArgumentTypeError("expected a positive number, got 0")
    return v


_DURATION = re.compile(r"(\d+(?:\.\d*)?)\s*([smh]?)")


def duration(s: str) -> float:
    """A wall-clock duration in seconds: ``540``, ``540s``, ``9m``, ``2.5h`` (0 allowed)."""
    m = _DURATION.fullmatch(s.strip().lower())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 540, 540s, 9m or 2h, got {s!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def eps_float(s: str) -> float:
    """A certification radius: finite, >= 0 and at most :data:`MAX_EPS`; a fraction such as
    ``36/255`` is read as its value."""
    num, slash, den = s.partition("/")
    if slash:
        v = nonneg_float(num) / positive_float(den)
        if v > MAX_EPS:
            raise argparse.ArgumentTypeError(f"expected a radius of at most {MAX_EPS:g}, "
                                             f"got {s}")
        return v
    v = nonneg_float(s)
    if v > MAX_EPS:
        raise argparse.ArgumentTypeError(
            f"expected a radius of at most {MAX_EPS:g} (an L2 distance in input units), got {s}")
    return v


_DEVICE = re.compile(r"(cpu|cuda|mps)(:(\d+))?")


def device(s: str) -> str:
    """A device this machine has: ``cpu``, ``cuda``, ``cuda:N`` (N < the number of GPUs) or
    ``mps``."""
    m = _DEVICE.fullmatch(s.strip())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"unknown device {s!r}; expected cpu, cuda, cuda:N (N a GPU index) or mps")
    import torch

    kind, index = m.group(1), m.group(3)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{s}: CUDA is not available on this machine (no GPU, or a PyTorch built "
                "without CUDA); use --device cpu")
        n = torch.cuda.device_count()
        if index is not None and int(index) >= n:
            raise argparse.ArgumentTypeError(
                f"{s}: this machine has {n} GPU{'s' if n != 1 else ''} (cuda:0"
                f"{f' to cuda:{n - 1}' if n > 1 else ''})")
    elif kind == "mps":
        if index not in (None, "0") or not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{s}: MPS is not available on this machine; "
                                             "use --device cpu")
    elif index not in (None, "0"):
        raise argparse.ArgumentTypeError(f"{s}: expected cpu (there is one CPU device)")
    return s.strip()


PRETRAINED_HELP = ("run folder written by `onelip train`, or pretrained:NAME, a model shipped "
                   "with onelip (read-only; docs/pretrained.md): {pretrained}")
"""The help of the RUN argument of the commands that read a run (certify, inspect, export)."""


def resolve_run(run: str | Path) -> tuple[Path, bool]:
    """(folder, shipped) of a RUN argument: a run folder as given, or ``pretrained:NAME``
    resolved to the folder of that model inside the package (``shipped`` True: nothing may
    be written there). An unknown NAME is a one-line :class:`CLIError` listing the names."""
    from onelip import pretrained

    text = str(run)
    if not text.startswith(pretrained.PREFIX):
        return Path(run), False
    try:
        return pretrained.path(text[len(pretrained.PREFIX):]), True
    except ValueError as e:
        raise CLIError(str(e)) from None


def data_source(name: str | None) -> str | None:
    """The resolved file or folder of a data set name with a path (``folder:DIR``,
    ``npz:FILE``, ``idx:DIR``, ``cifar10:DIR``): absolute, symbolic links and ``.``/``..``
    resolved, so that ``folder:D``, ``folder:D/``, ``folder:./D/.`` and a link to D give the
    same; None for a built-in set (``mnist-5k``) or a name without a path."""
    prefix, sep, arg = (name or "").partition(":")
    if not sep or not arg or prefix not in ("folder", "npz", "idx", "cifar10"):
        return None
    return os.path.realpath(os.path.expanduser(arg))


def refuse_inside_pretrained(out: Path, flag: str = "--out") -> None:
    """A :class:`CLIError` if ``out`` lies inside the package's pretrained models (read-only)."""
    from onelip import pretrained

    try:
        inside = Path(os.path.abspath(out)).resolve().is_relative_to(pretrained.root().resolve())
    except ValueError:  # the package is not installed as files: nothing to protect
        return
    if inside:
        raise CLIError(f"{flag} {out} is inside onelip's pretrained models, which are "
                       f"read-only; choose another {flag}")


def set_item(item: str) -> tuple[str, str]:
    """One ``--set FIELD=VALUE`` item → (field, value), or a one-line :class:`CLIError`."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CLIError(f"--set expects FIELD=VALUE, got {item!r}")
    return key, value


def _number(text: str) -> int | float:
    """``text`` as an int, else a float; ValueError if it is neither."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _tuple_value(key: str, value: str, default: tuple | list) -> tuple:
    """``--set key=1,2,3`` (or ``(1, 2, 3)``, ``[1, 2, 3]``) for a tuple field of default
    ``default``: the elements typed like its first one, or numbers (int, else float) when
    the default is empty (e.g. lipconvnet's ``mean=0.49,0.48,0.45``)."""
    if default and isinstance(default[0], (tuple, list)):
        raise CLIError(f"--set {key}: a nested field, not settable from the command "
                       "line (use the Python API)")
    text = value.strip()
    if text[:1] + text[-1:] in ("()", "[]"):
        text = text[1:-1]
    items = [v.strip() for v in text.split(",") if v.strip()]
    kind = type(default[0]) if default else None
    try:
        return tuple(_number(v) if kind is None else kind(v) for v in items)
    except ValueError:
        example = ",".join(str(v) for v in default) if default else "0.5,0.5,0.5"
        what = {None: "numbers", int: "integers", float: "numbers"}.get(kind, "values")
        raise CLIError(f"--set {key}={value}: expected comma-separated {what} like "
                       f"{example}") from None


def typed_value(key: str, value: str, default):
    """``--set key=value``: parse ``value`` like ``default`` (bool, int, float, str, or a
    tuple: comma-separated, optionally in parentheses or brackets, of the first element's
    type, or of numbers for an empty default; a None default keeps the string, or a number
    when it reads as one; ``none`` gives None)."""
    if isinstance(default, (tuple, list)):
        return _tuple_value(key, value, default)
    try:
        if default is None:
            if value.lower() == "none":
                return None
            for kind in (int, float):
                try:
                    return kind(value)
                except ValueError:
                    pass
            return value
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise CLIError(f"--set {key}={value}: expected a value like {default!r}") from None
    return value

# SPDX-License-Identifier: MIT
"""What every command shares: the one-line user error and argument types."""

from __future__ import annotations

import argparse
import math

__all__ = ["CLIError", "Parser", "nonneg_float", "positive_float", "positive_int"]


class CLIError(Exception):
    """A user error: printed as one line ``onelip: error: ...``, exit status 2."""


class Parser(argparse.ArgumentParser):
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

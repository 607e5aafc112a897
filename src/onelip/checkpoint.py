# SPDX-License-Identifier: MIT
"""Deprecated alias of :mod:`onelip.runs` (its name in onelip 0.1), kept for one release."""

from __future__ import annotations

from onelip.runs import (
    CONFIG,
    CUSTOM,
    WEIGHTS,
    CheckpointError,
    OutputError,
    check_target,
    is_run_folder,
    load,
    load_config,
    new_run,
    save,
    write_json,
    write_model,
)

__all__ = ["CONFIG", "CUSTOM", "WEIGHTS", "CheckpointError", "OutputError", "check_target",
           "is_run_folder", "load", "load_config", "new_run", "save", "write_json",
           "write_model"]

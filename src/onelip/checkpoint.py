# SPDX-License-Identifier: MIT
"""Deprecated alias of :mod:`onelip.runs` (its name in onelip 0.1), kept for one release."""

from __future__ import annotations

from onelip.runs import CONFIG, WEIGHTS, CheckpointError, load, load_config, save, write_json

__all__ = ["CONFIG", "WEIGHTS", "CheckpointError", "load", "load_config", "save", "write_json"]

# SPDX-License-Identifier: MIT
"""The exceptions onelip raises for user errors (a leaf: imports nothing of onelip)."""

from __future__ import annotations

__all__ = ["CheckpointError", "OutputError"]


class CheckpointError(ValueError):
    """A run folder or weight file that cannot be loaded; the message says what is wrong and
    what to do."""


class OutputError(ValueError):
    """A place onelip cannot or will not write to: a file where a folder is needed, a folder
    that is not a run folder where a run would replace it, a read-only folder; the message
    says what to do."""

# SPDX-License-Identifier: MIT
"""The exceptions onelip raises for user errors (a leaf: imports nothing of onelip)."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A run folder or weight file that cannot be loaded; the message says what is wrong and
    what to do."""

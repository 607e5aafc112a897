# SPDX-License-Identifier: MIT
"""What ran a benchmark: CPU, threads, load, library versions, onelip's git revision.
Shared by the benchmarks (each adds its own fields, e.g. the device)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys

from _peers import REPO


def _cpu_name() -> str:
    from onelip.experiments.common import cpu_model

    return cpu_model() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                              capture_output=True, text=True).stdout.strip() or None
    except OSError:
        return None


def machine_info(**extra) -> dict:
    """The machine and software of this process, plus ``extra`` fields."""
    import torch

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "deel-torchlip": _version("deel-torchlip"),
        "orthogonium": _version("orthogonium"), "onelip_git": _git_revision(),
        "python_executable": sys.executable,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    info.update(extra)
    return info

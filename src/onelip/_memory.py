# SPDX-License-Identifier: MIT
"""How much memory this process may still take (a leaf: imports nothing of onelip), so that a
request that cannot fit is refused before anything is allocated, with the size it needs,
instead of a ``MemoryError`` or the kernel's out-of-memory kill half way through.

* :func:`available_bytes`: the memory the system says is available (``MemAvailable``), or less
  when a control group caps the process;
* :func:`size_text`: a byte count for a message (``"1.8 GB"``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_bytes", "size_text"]


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes() -> int | None:
    """Bytes this process may still allocate: the smaller of the system's available memory
    and what is left of a control group's limit (cgroup v2 or v1); None when neither is
    known (then nothing is refused)."""
    known = [_meminfo_available()]
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, now = _read_int(limit), _read_int(used)
        if cap is not None and now is not None and cap < 1 << 60:  # v1 "no limit" is ~2**63
            known.append(max(cap - now, 0))
            break
    known = [k for k in known if k is not None]
    return min(known) if known else None


def size_text(n: float) -> str:
    """``n`` bytes as a short text: ``"512 B"``, ``"154 MB"``, ``"1.8 GB"``, ``"3.6 TB"``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{int(n)} B"

# SPDX-License-Identifier: MIT
"""``onelip train --nproc N``: re-run the same command in N local processes with torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); the
training side of data parallelism is :mod:`onelip.distributed`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["launch", "without_nproc"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(argv: Sequence[str], nproc: int, *, poll_s: float = 0.05) -> int:
    """Run ``python -m onelip *argv`` in ``nproc`` local processes, as torchrun would.

    Sets ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and, unless set, ``OMP_NUM_THREADS`` (the cores
    divided among the processes). If one process fails, the others are terminated. Returns
    the first non-zero exit status, or 0.
    """
    if nproc < 1:
        raise ValueError(f"Expected nproc >= 1, but got nproc={nproc}")
    src = str(Path(__file__).resolve().parents[2])  # so children import this onelip
    base = dict(os.environ)
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
                PYTHONPATH=os.pathsep.join(p for p in (src, base.get("PYTHONPATH")) if p))
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    procs = [subprocess.Popen([sys.executable, "-m", "onelip", *argv],
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(nproc)]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                _stop(procs)
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_s)
    except BaseException:
        _stop(procs)
        raise


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

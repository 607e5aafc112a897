# SPDX-License-Identifier: MIT
"""Shared pytest setup: few threads (the test machine is small and shared), seeded RNGs."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# One or two threads: several test processes share two cores, and small matmuls gain nothing.
_THREADS = max(1, min(2, int(os.environ.get("OMP_NUM_THREADS", "1"))))
torch.set_num_threads(_THREADS)


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch, numpy and random before every test; the seed is returned for reuse."""
    s = 0
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
    return s

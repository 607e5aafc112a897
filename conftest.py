# SPDX-License-Identifier: MIT
"""Doctests of src/onelip (collected with --doctest-modules): ``torch`` is in their namespace,
and they run seeded on one thread, like the tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_torch(doctest_namespace):
    doctest_namespace["torch"] = torch
    torch.manual_seed(0)

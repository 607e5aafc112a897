# SPDX-License-Identifier: MIT
"""``torch.compile`` (inductor, CPU) gives the eager outputs and gradients, in train and eval mode.

Layers keep their stateful parts (power-iteration vectors, the eval-mode weight cache, the
train-mode guard) outside the graph (``torch.compiler.disable``); these tests check that the
compiled model still computes the same function. Compared on twin copies, since a train-mode
forward updates power-iteration buffers.
"""

from __future__ import annotations

import copy

import pytest
import torch

from onelip import models

# inductor reorders float32 reductions; a few ulps of the logits (O(1)).
TOL = 1e-5

CASES = {
    "ortho-groupsort": dict(layer="ortho", activation="groupsort", group_size=4, num_outputs=3),
    "spectral-maxmin-binary": dict(layer="spectral", activation="maxmin", num_outputs=1),
}


@pytest.fixture(scope="module", autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("case", list(CASES))
def test_compile_matches_eager_train_and_eval(case):
    model, _ = models.build("mlp", in_features=8, hidden=[16, 16], **CASES[case])
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin)
    x = torch.randn(6, 8)

    # Train mode: outputs and gradients.
    model.train()
    compiled.train()
    eager_out = model(x)
    comp_out = compiled(x)
    err = (eager_out - comp_out).abs().max().item()
    assert err <= TOL, f"train-mode outputs differ by {err:.2e} > {TOL:.0e}"
    eager_out.square().sum().backward()
    comp_out.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        gerr = (p.grad - q.grad).abs().max().item()
        assert gerr <= TOL * max(1.0, p.grad.abs().max().item()), (
            f"train-mode gradient of {name} differs by {gerr:.2e}"
        )

    # Eval mode (exact cached weights): the same function.
    model.eval()
    compiled.eval()
    with torch.no_grad():
        e = model(x)
        c = compiled(x)
    err = (e - c).abs().max().item()
    assert err <= TOL, f"eval-mode outputs differ by {err:.2e} > {TOL:.0e}"

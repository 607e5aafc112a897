# SPDX-License-Identifier: MIT
"""Accuracy and loss in eval mode: :func:`evaluate_accuracy` (public), :func:`_measure` (the
validation and final test of a run) and the per-batch counts the loop keeps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onelip._validation import binary_scores_and_signs, class_indices, is_binary_output
from onelip.nn.utils import eval_mode

__all__ = ["evaluate_accuracy"]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      *, batch_size: int = 1024) -> float:
    """Fraction of ``x`` classified as ``y`` in eval mode (each submodule's mode restored).

    One output: predicted sign(f) (f = 0 counts as the negative class), labels in {0, 1} or
    {−1, +1}; K outputs: argmax, labels in [0, K).
    """
    correct = 0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i:i + batch_size])
            if is_binary_output(out):
                f, sign = binary_scores_and_signs(out, y[i:i + batch_size])
                hit = (f > 0) == (sign > 0)
            else:
                hit = out.argmax(1) == class_indices(out, y[i:i + batch_size])
            correct += int(hit.sum())
    return correct / max(x.shape[0], 1)


def _hits(out: Tensor, y: Tensor) -> Tensor:
    """Correct predictions in a batch whose labels the loss has already checked (no host
    synchronisation): sign for one output ({0,1} or {−1,+1} labels), argmax for K."""
    out = out.detach()
    if is_binary_output(out):
        return ((out.reshape(-1) > 0) == (y.reshape(-1) > 0)).sum()
    return (out.argmax(1) == y.reshape(-1)).sum()


def _class_counts(out: Tensor, y: Tensor) -> Tensor:
    if is_binary_output(out):
        return torch.bincount((y.reshape(-1) > 0).long(), minlength=2)
    return torch.bincount(y.reshape(-1).long(), minlength=out.shape[1])


@torch.no_grad()
def _measure(model: nn.Module, source, prepare, loss: nn.Module,
             autocast) -> tuple[float, float]:
    """(accuracy, mean loss) of ``source`` in eval mode (every rank measures all of it)."""
    hits = torch.zeros((), dtype=torch.int64, device=prepare.device)
    total = torch.zeros((), dtype=torch.float64, device=prepare.device)
    count = 0
    with eval_mode(model):
        for x, y, _ in source.batches(1024, None, None):
            y = y.to(prepare.device)
            with autocast():
                out = model(prepare(x, train=False))
            out = out.float()
            value = loss(out, y)
            hits += _hits(out, y)
            total += value.detach().double() * y.shape[0]
            count += int(y.shape[0])
    return int(hits) / max(count, 1), float(total) / max(count, 1)

# SPDX-License-Identifier: MIT
"""Private argument and shape validation shared by layers, losses and certificates."""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"Expected reduction to be one of {REDUCTIONS}, but got reduction={reduction!r}"
        )


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` to per-sample values of shape (N,)."""
    check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def check_positive(name: str, value: float, *, strict: bool = True) -> None:
    ok = value > 0 if strict else value >= 0
    if not ok:
        sign = "positive" if strict else "non-negative"
        raise ValueError(f"Expected {name} to be {sign}, but got {name}={value}")


def is_binary_output(out: Tensor) -> bool:
    """The one rule for "is this a binary classifier's output": one score per sample, shape
    (N,) or (N, 1) (classified by its sign). (N, K) with K >= 2 is multiclass."""
    return out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)


def binary_signs(target: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The one meaning of binary labels (losses, certificates, the attack): signs ±1, (N,).

    Labels (integer, float or bool, any shape holding N values) are all in {0, 1} or all in
    {-1, +1}: 1 -> +1, 0 or -1 -> -1. Anything else (2, 0.5, NaN, or 0 and -1 in one tensor,
    a mix of the two encodings) is a ValueError naming the values.

    Args:
        dtype: of the signs; default ``target``'s if floating point, else the default dtype.
    """
    if dtype is None:
        dtype = target.dtype if target.is_floating_point() else torch.get_default_dtype()
    t = target.reshape(-1).to(dtype)
    is_pm1 = bool(((t == 1) | (t == -1)).all())
    is_01 = bool(((t == 0) | (t == 1)).all())
    if not (is_pm1 or is_01):
        values = sorted(set(target.reshape(-1).unique().tolist()))
        raise ValueError(
            "Expected binary labels in {0, 1} or {-1, +1} (one encoding per tensor), but got "
            f"values {values[:6]}{' ...' if len(values) > 6 else ''}"
        )
    # {0, 1} -> {-1, +1}; an all-ones batch is the same in both encodings.
    return t if is_pm1 else 2 * t - 1


def binary_scores_and_signs(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten binary scores to (N,) and map labels to signs ±1 (:func:`binary_signs`).

    Args:
        input: scores f(x), shape (N,) or (N, 1) (:func:`is_binary_output`).
        target: labels, shape (N,) or (N, 1), in {0, 1} or {-1, +1}.
    """
    if not is_binary_output(input):
        raise ValueError(
            "Expected binary scores of shape (N,) or (N, 1), but got shape "
            f"{tuple(input.shape)}; for K classes use the Multiclass* losses"
        )
    input = input.reshape(-1)
    target = target.reshape(-1)
    if target.shape[0] != input.shape[0]:
        raise ValueError(
            f"Expected {input.shape[0]} labels for {input.shape[0]} scores, "
            f"but got {target.shape[0]}"
        )
    return input, binary_signs(target, input.dtype)


def class_indices(input: Tensor, target: Tensor) -> Tensor:
    """Check (N, K) scores against (N,) integer labels in [0, K); return labels as int64."""
    if input.dim() != 2:
        raise ValueError(
            f"Expected scores of shape (N, K), but got shape {tuple(input.shape)}"
        )
    if input.shape[1] < 2:
        raise ValueError(
            "Expected at least 2 classes (K >= 2) for a multiclass loss, but got K=1; "
            "use the binary loss for a single output"
        )
    target = target.reshape(-1)
    if target.shape[0] != input.shape[0]:
        raise ValueError(
            f"Expected {input.shape[0]} labels for {input.shape[0]} rows of scores, "
            f"but got {target.shape[0]}"
        )
    if target.is_floating_point():
        if not bool((target == target.round()).all()):
            raise ValueError("Expected integer class labels, but got fractional values")
        target = target.long()
    target = target.long()
    k = input.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
        raise IndexError(
            f"Expected class labels in [0, {k}), but got values in "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    return target


def check_finite(name: str, x: Tensor) -> None:
    """ValueError unless every value of ``x`` is finite (no NaN, no ±inf)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values; clean the input first")

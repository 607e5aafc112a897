# SPDX-License-Identifier: MIT
"""The train/test split every loader returns (:class:`DataSplit`), a seeded split helper,
:func:`validation_split` (a fixed-seed stratified validation part carved from the training
data), and :func:`check_split`, the check every split passes before training
(:func:`onelip.data.load` runs it)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

__all__ = ["VAL_SEED", "DataSplit", "check_split", "fingerprint", "fingerprint_change",
           "split", "split_fingerprint", "validation_indices", "validation_split"]

VAL_SEED = 0
"""The seed of :func:`validation_split` unless told otherwise: the same validation part
whatever the training seed, so that runs of several seeds are measured on the same points."""


@dataclass(frozen=True)
class DataSplit:
    """Train and test tensors of one data set.

    ``x_*``: float32 (N, D), or uint8 (N, D) pixels 0..255 of images (``folder:`` and
    ``npz:`` keep them so, a quarter of the memory; :func:`as_float` or ``fit`` make them
    float32 in [0, 1], per batch in ``fit``); ``y_*``: int64 (N,) class indices;
    ``num_classes`` K; ``input_shape`` the shape of one sample as a model sees it, e.g.
    (1, 28, 28).
    ``x_val``, ``y_val``: an optional validation part carved from the training data
    (:func:`validation_split`; ``None`` when there is none): :func:`onelip.train.fit` measures
    every epoch on it, never on the test part.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    def __repr__(self) -> str:
        val = f", val={tuple(self.x_val.shape)}" if self.x_val is not None else ""
        return (f"DataSplit({self.name!r}, train={tuple(self.x_train.shape)}{val}, "
                f"test={tuple(self.x_test.shape)}, classes={self.num_classes}, "
                f"input_shape={self.input_shape})")


def _cover_classes(y: np.ndarray, te: np.ndarray, tr: np.ndarray, k: int) -> None:
    """Give the test part ``te`` at least one index of each class that has two or more samples,
    in place: for a class missing from it, the first such index of ``tr`` is swapped with the
    last test index of the most frequent test class. A no-op whenever every class is already in
    the test part (every split of a reasonably sized set), so such splits are unchanged."""
    for c in range(k):
        if len(te) < 2 or (y[te] == c).any():
            continue
        in_train = np.flatnonzero(y[tr] == c)
        if len(in_train) < 2:  # keep one in train: check_split's callers say what is wrong
            continue
        counts = np.bincount(y[te], minlength=k)
        if counts.max() < 2:
            continue
        j = np.flatnonzero(y[te] == counts.argmax())[-1]
        i = in_train[0]
        te[j], tr[i] = tr[i], te[j]


def split(name: str, x: np.ndarray, y: np.ndarray, n_test: int, seed: int, k: int,
           shape: tuple[int, ...]) -> DataSplit:
    """A seeded random split with ``n_test`` test points; each class with at least two points
    gets one in the test part when the test part has room (see :func:`_cover_classes`)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    te, tr = idx[:n_test].copy(), idx[n_test:].copy()
    y = np.asarray(y)
    if y.size and np.issubdtype(y.dtype, np.integer) and y.min() >= 0:
        _cover_classes(y, te, tr, k)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return DataSplit(name, xt[tr], yt[tr], xt[te], yt[te], k, shape)


def as_float(x: Tensor) -> Tensor:
    """Features as a model takes them: uint8 pixels (N, ...) → float32 / 255 in [0, 1] (a
    new tensor of the same shape); float features are returned as they are. For the parts of
    a :class:`DataSplit` that are used outside ``fit`` (certifying, a Lipschitz estimate)."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def validation_indices(y: Tensor, fraction: float, *, seed: int = VAL_SEED
                       ) -> tuple[Tensor, Tensor]:
    """(train indices, validation indices) of labels ``y``: a stratified split with a fixed
    seed, each class contributing ``round(fraction · n_c)`` samples (at least one when it has
    two or more, never all of them). Both index tensors are sorted, so the remaining training
    data keeps its order."""
    if not (0.0 < fraction < 1.0):
        raise ValueError(f"Expected a validation fraction in (0, 1), but got {fraction}")
    y = torch.as_tensor(y).reshape(-1)
    rng = np.random.default_rng(seed)
    labels = y.numpy() if y.device.type == "cpu" else y.cpu().numpy()
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue  # a class of one sample stays in training
        k = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
        val.append(rng.permutation(idx)[:k])
    v = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[v] = False
    return torch.from_numpy(np.flatnonzero(keep)), torch.from_numpy(v.astype(np.int64))


def validation_split(d: DataSplit, fraction: float, *, seed: int = VAL_SEED) -> DataSplit:
    """``d`` with a validation part carved from its training part: a fixed-seed stratified
    split (:func:`validation_indices`); the test part is left as it is.

    Same data, fraction and seed, same split: ``onelip certify --split val`` carves it again
    from the recorded fraction. ``fit(..., TrainConfig(val_fraction=F))`` calls this.

    Example:
        >>> from onelip.data import digits
        >>> d = validation_split(digits(), 0.1)
        >>> len(d.x_val), len(d.x_train)
        (143, 1294)

    Raises:
        ValueError: a fraction outside (0, 1), a split that already has a validation part, or
            too few samples to carve one.
    """
    if d.x_val is not None:
        raise ValueError(f"data set {d.name!r} already has a validation part "
                         f"({len(d.x_val)} samples)")
    tr, va = validation_indices(d.y_train, fraction, seed=seed)
    if len(va) == 0:
        raise ValueError(f"data set {d.name!r}: {len(d.y_train)} training samples are too few "
                         f"to carve a validation split (fraction {fraction:g}); give more data")
    return replace(d, x_train=d.x_train[tr], y_train=d.y_train[tr], x_val=d.x_train[va],
                   y_val=d.y_train[va])


_CHUNK = 4096  # samples hashed at a time: bounded temporaries whatever the size of the set


def _canonical(x: Tensor) -> tuple[bytes, np.ndarray]:
    """(tag, array) of a chunk of samples as :func:`fingerprint` hashes them: images (uint8, or
    floats that are k/255 for integers k in 0..255) as uint8, anything else as float32. So the
    same images hash alike whether a loader keeps them as uint8 or as floats in [0, 1]."""
    if x.dtype == torch.uint8:
        return b"u8", x.contiguous().numpy()
    x = x.to(torch.float32)
    scaled = x * 255.0
    q = torch.round(scaled)
    if x.numel() == 0 or (float((q - scaled).abs().max()) <= 1e-3 and float(q.min()) >= 0
                          and float(q.max()) <= 255):
        return b"u8", q.to(torch.uint8).numpy()
    return b"f32", x.contiguous().numpy()


def fingerprint(x: Tensor, y: Tensor, index: Tensor | None = None) -> str:
    """A SHA-256 digest (32 hex digits) of the samples ``x[index]`` and labels ``y[index]``
    (all of them without ``index``), in order: any added, removed, reordered, changed or
    relabelled sample changes it.

    Shapes: x (N, ...), y (N,), index (M,) integer positions. Image values hash as uint8
    (:func:`_canonical`), so uint8 and float [0, 1] copies of the same images agree.
    """
    x, y = x.detach().cpu(), y.detach().cpu()
    idx = torch.arange(len(y)) if index is None else torch.as_tensor(index).cpu().long()
    h = hashlib.sha256(b"onelip-fingerprint/1")
    h.update(repr(tuple(x.shape[1:])).encode())
    for start in range(0, len(idx), _CHUNK):
        part = idx[start:start + _CHUNK]
        tag, arr = _canonical(x[part])
        h.update(tag)
        h.update(arr)
        h.update(y[part].to(torch.int64).numpy())
    return h.hexdigest()[:32]


def split_fingerprint(d: DataSplit, fraction: float = 0.0, *, seed: int = VAL_SEED) -> dict:
    """What identifies the training part of ``d`` and the validation split carved from it
    (:func:`validation_split` with ``fraction`` and ``seed``), for a run to record and for
    :func:`fingerprint_change` to compare later.

    Returns a JSON-able dict: ``n`` (training samples before the carving), ``class_counts``
    (samples per class), ``labels`` (:func:`fingerprint` of the labels alone: the carving is a
    function of them), ``train`` (the samples left for training) and, for ``fraction`` > 0,
    ``val`` (the validation samples), each a :func:`fingerprint`.
    """
    y = d.y_train.detach().cpu()
    counts = torch.bincount(y, minlength=d.num_classes) if len(y) else torch.zeros(
        d.num_classes, dtype=torch.int64)
    out = {"n": int(len(y)), "class_counts": [int(c) for c in counts],
           "labels": fingerprint(torch.zeros(len(y), 0), y)}
    if fraction > 0:
        tr, va = validation_indices(y, fraction, seed=seed)
        out["train"] = fingerprint(d.x_train, y, tr)
        out["val"] = fingerprint(d.x_train, y, va)
    else:
        out["train"] = fingerprint(d.x_train, y)
    return out


def fingerprint_change(recorded: dict, now: dict, *, part: str = "val",
                       classes: list[str] | None = None, unit: str = "sample") -> str | None:
    """What changed between two :func:`split_fingerprint` records, as a phrase for a message
    ("3 samples more than at training (cat 8 -> 11)"), or None when the ``part`` ("val" or
    "train") is the same samples with the same labels.

    ``classes``: the class names (index = label) to name the classes that changed; ``unit``:
    what a sample is called ("image" for an image folder).
    """
    old_counts, new_counts = list(recorded.get("class_counts", [])), now["class_counts"]
    if recorded.get("n") != now["n"] or old_counts != new_counts:
        width = max(len(old_counts), len(new_counts))
        old_counts += [0] * (width - len(old_counts))
        new_counts = list(new_counts) + [0] * (width - len(new_counts))
        diffs = [(c, a, b) for c, (a, b) in enumerate(zip(old_counts, new_counts)) if a != b]
        names = [classes[c] if classes and c < len(classes) else f"class {c}"
                 for c, _, _ in diffs]
        detail = ", ".join(f"{name} {a} -> {b}" for name, (_, a, b) in zip(names, diffs[:5]))
        if len(diffs) > 5:
            detail += f" and {len(diffs) - 5} more classes"
        delta = now["n"] - int(recorded.get("n") or 0)
        added, removed = (sum(max(b - a, 0) for _, a, b in diffs),
                          sum(max(a - b, 0) for _, a, b in diffs))
        if delta and (delta == added or -delta == removed):
            head = (f"{abs(delta)} {unit}{'s' if abs(delta) != 1 else ''} "
                    f"{'added' if delta > 0 else 'removed'} since training")
        else:
            head = f"{added} added and {removed} removed per class since training"
        return f"{head} ({detail})" if detail else head
    if recorded.get("labels") != now["labels"]:
        return (f"the same number of {unit}s per class, but reordered or relabelled since "
                "training")
    if recorded.get(part) != now.get(part):
        what = "validation" if part == "val" else "training"
        return (f"the same number of {unit}s and labels, but {what} {unit}s changed since "
                "training")
    return None


def _counted(values, counts, limit: int = 5, unit: str = "sample") -> str:
    """``"200 (1 sample), 201 (3 samples)"`` for arrays or tensors of values and counts."""
    items = [f"{v} ({n} {unit}{'s' if n != 1 else ''})"
             for v, n in zip(values.tolist()[:limit], counts.tolist()[:limit])]
    more = f" and {len(values) - limit} more values" if len(values) > limit else ""
    return ", ".join(items) + more


def check_split(d: DataSplit, *, allow_empty_test: bool = False) -> DataSplit:
    """Check ``d`` before any training step; return it unchanged.

    Verifies: float (or uint8 image) features of shape (N, D) (or (N, *input_shape)) with D
    the size of ``input_shape`` and the same in both parts; a non-empty train and test part
    (the test part may be empty with ``allow_empty_test``: a user's image folder without a
    test split); finite values; integer labels, one per sample, in [0, num_classes) with
    num_classes >= 2.

    Raises:
        ValueError: naming the data set, what is wrong and what to do, in one line.
    """
    where = f"data set {d.name!r}"
    k = d.num_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"{where}: num_classes is {k!r}; a classifier needs an integer number "
                         "of classes >= 2")
    try:
        shape = tuple(int(s) for s in d.input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"{where}: input_shape {d.input_shape!r} is not a shape of positive "
                         "sizes such as (2,) or (1, 28, 28)")
    dim = math.prod(shape)
    parts = [("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)]
    if d.x_val is not None or d.y_val is not None:
        parts.append(("validation", d.x_val, d.y_val))
    for part, x, y in parts:
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise ValueError(f"{where}: the {part} features and labels must be torch tensors, "
                             f"got {type(x).__name__} and {type(y).__name__}")
        if x.dim() < 2 or math.prod(x.shape[1:]) != dim:
            raise ValueError(f"{where}: {part} features have shape {tuple(x.shape)}, but samples "
                             f"of input_shape {shape} need (N, {dim}) or (N, "
                             f"{', '.join(map(str, shape))}); reshape them or fix input_shape")
        if len(x) == 0 and part == "test" and allow_empty_test:
            continue
        if len(x) == 0:
            raise ValueError(f"{where}: the {part} split is empty (0 samples); give it samples "
                             f"(a run needs both a train and a test split)")
        if y.shape != (len(x),):
            raise ValueError(f"{where}: {len(x)} {part} samples but labels of shape "
                             f"{tuple(y.shape)}; give one integer label per sample")
        if not x.is_floating_point() and x.dtype != torch.uint8:
            raise ValueError(f"{where}: {part} features are {x.dtype}; convert them to float32 "
                             "(images scaled to [0, 1]) or to uint8 pixels 0..255")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{where}: {part} labels are {y.dtype}; labels must be integer "
                             "class indices 0..K-1 (not one-hot, not floats)")
        # two reductions (NaN propagates through max and min, ±inf shows in one of them)
        # instead of a bool tensor the size of the data: 0.2 s, not 3 s, on CIFAR-10
        if x.is_floating_point() and x.numel() and not (torch.isfinite(x.amax())
                                                        and torch.isfinite(x.amin())):
            bad = ~torch.isfinite(x)
            n_nan = int(torch.isnan(x).sum())
            raise ValueError(f"{where}: {part} features hold {n_nan} NaN and "
                             f"{int(bad.sum()) - n_nan} infinite values (of {x.numel()}); "
                             "fix or drop those samples before training")
        out = (y < 0) | (y >= k)
        if out.any():
            vals, counts = torch.unique(y[out], return_counts=True)
            raise ValueError(f"{where}: {part} labels must be in 0..{k - 1} (num_classes={k}), "
                             f"but hold {_counted(vals, counts)}; relabel or drop those samples")
    for part, x in (("test", d.x_test), ("validation", d.x_val)):
        if x is not None and d.x_train.shape[1:] != x.shape[1:]:
            raise ValueError(f"{where}: train samples have shape {tuple(d.x_train.shape[1:])} "
                             f"but {part} samples {tuple(x.shape[1:])}; both need the same "
                             "shape")
    return d

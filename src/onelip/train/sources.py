# SPDX-License-Identifier: MIT
"""Where a run's batches come from: tensors kept on the device (:class:`_Tensors`), a
``Dataset`` or a ``DataLoader`` (:class:`_Loader`), each batch made ready for the model on the
device (:class:`_Prepare`); :func:`sources` picks them from what :func:`~onelip.train.fit` was
given, and the data order (:data:`Sampler`) is fit's generator's unless a sampler is given.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, NamedTuple

import torch
from torch import Tensor

from onelip.data import DataSplit
from onelip.data._split import validation_split
from onelip.data.augment import augment as _augment
from onelip.distributed import Context
from onelip.train.config import TrainConfig

__all__ = ["Sampler", "Sources", "sources"]

Sampler = Callable[[int, torch.Generator], Tensor]
"""The data order of an epoch: ``sampler(n, generator)`` is called when an epoch starts with
the number of training samples and fit's seeded generator (draw from it, so that a run is
reproducible and resumes bit for bit), and returns the indices of the epoch's samples in
training order: a 1-D integer tensor of ``n`` indices in [0, n), repeats allowed (sampling
with replacement). The default is ``torch.randperm(n, generator=generator)``."""


def _permutation(n: int, gen: torch.Generator) -> Tensor:
    return torch.randperm(n, generator=gen)


def _order(sampler: Sampler, n: int, gen: torch.Generator) -> Tensor:
    """``sampler``'s order for an epoch, checked (the default's is not)."""
    order = sampler(n, gen)
    if sampler is _permutation:
        return order
    if not (isinstance(order, Tensor) and order.dim() == 1 and order.numel() == n
            and not order.is_floating_point() and order.dtype != torch.bool):
        raise ValueError(f"the sampler must return a 1-D integer tensor of {n} indices (one "
                         f"per training sample), but returned "
                         f"{tuple(order.shape) if isinstance(order, Tensor) else type(order)}")
    if n and not (0 <= int(order.min()) and int(order.max()) < n):
        raise ValueError(f"the sampler returned indices outside [0, {n})")
    return order


def _exact_uint8(x: Tensor) -> Tensor | None:
    """``x`` as uint8 if it is exactly ``uint8 / 255`` in float32 (images), else None."""
    if x.dtype != torch.float32 or x.numel() == 0:
        return None
    out = torch.empty(x.shape, dtype=torch.uint8)
    flat_in, flat_out = x.reshape(-1), out.view(-1)
    chunk = 1 << 22
    for i in range(0, flat_in.numel(), chunk):
        part = flat_in[i:i + chunk]
        q = part.mul(255.0).round_()
        if not bool(((q >= 0) & (q <= 255)).all()):
            return None
        q8 = q.to(torch.uint8)
        if not torch.equal(q8.to(torch.float32).div_(255.0), part):
            return None
        flat_out[i:i + chunk] = q8
    return out


class _Prepare:
    """A batch as the model gets it, on the device: uint8 → float32/255, augmentation on
    (N, C, H, W), channels_last on CUDA."""

    def __init__(self, device: torch.device, cfg: TrainConfig, image: tuple[int, ...] | None,
                 generator: torch.Generator | None) -> None:
        self.device = device
        self.image = image
        self.augment = cfg.augment
        self.generator = generator
        self.channels_last = cfg.channels_last and device.type == "cuda"

    def __call__(self, x: Tensor, *, train: bool, rows: Tensor | None = None,
                 total: int | None = None) -> Tensor:
        """``rows`` / ``total``: the batch is a shard of a global batch of ``total`` (DDP); the
        augmentation draws are those of the global batch (:mod:`onelip.data.augment`)."""
        x = x.to(self.device, non_blocking=True)
        image = self.image if self.image is not None else (
            tuple(x.shape[1:]) if x.dim() == 4 else None)
        if train and self.augment:
            if image is None:
                raise ValueError(f"augmentation {', '.join(self.augment)} needs image batches "
                                 f"(N, C, H, W), but got {tuple(x.shape)}")
        as_image = image is not None and (
            (train and self.augment) or self.channels_last or x.dim() == 4)
        if as_image:
            x = x.reshape(x.shape[0], *image)
            if train and self.augment:
                x = _augment(x, self.augment, generator=self.generator, rows=rows,
                             total=total)
        if not x.is_floating_point():
            x = x.to(torch.float32).div_(255.0)
        if as_image and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class _Tensors:
    """Samples held on the device (uint8 when exact), batches by index."""

    def __init__(self, x: Tensor, y: Tensor, device: torch.device,
                 sampler: Sampler = _permutation) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} samples but {y.shape[0]} labels")
        if x.is_floating_point():
            small = _exact_uint8(x.cpu() if x.device.type != "cpu" else x)
            x = small if small is not None else x
        elif x.dtype != torch.uint8:
            raise ValueError(f"features must be float or uint8 images, but are {x.dtype}")
        self.x, self.y = x.to(device), y.to(device)
        self.n = int(x.shape[0])
        self.sampler = sampler

    def steps(self, batch_size: int) -> int:
        return math.ceil(self.n / batch_size)

    def batches(self, batch_size: int, gen: torch.Generator | None, ddp: Context | None
                ) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Global batches of ``batch_size`` in the sampler's order of ``gen`` (None: in
        order); with ``ddp``, this rank's shard of each."""
        if gen is None:
            for i in range(0, self.n, batch_size):
                yield self.x[i:i + batch_size], self.y[i:i + batch_size], \
                    min(batch_size, self.n - i)
            return
        order = _order(self.sampler, self.n, gen).to(self.x.device)
        for i in range(0, self.n, batch_size):
            idx = order[i:i + batch_size]
            mine = ddp.shard(idx) if ddp is not None else idx  # this rank's part
            yield self.x[mine], self.y[mine], idx.numel()


class _OrderSampler(torch.utils.data.Sampler):
    """The data order of the tensor path (the sampler's draw from fit's generator when an
    epoch starts), for a map-style Dataset."""

    def __init__(self, n: int, gen: torch.Generator | None,
                 sampler: Sampler = _permutation) -> None:
        self.n, self.gen, self.sampler = n, gen, sampler

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.gen is None:
            return iter(range(self.n))
        return iter(_order(self.sampler, self.n, self.gen).tolist())


class _Loader:
    """Batches of a DataLoader (the user's, or one fit builds around a Dataset with its own
    order); under DDP every rank reads the global batch and keeps its shard."""

    def __init__(self, source, batch_size: int, gen: torch.Generator | None,
                 device: torch.device, *, shuffle: bool, sampler: Sampler | None = None
                 ) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        if isinstance(source, DataLoader):
            if isinstance(getattr(source, "sampler", None), DistributedSampler):
                raise ValueError("give fit the DataLoader of the whole data set (no "
                                 "DistributedSampler): it shards each global batch itself")
            if sampler is not None:
                raise ValueError("a DataLoader has its own order: give fit its dataset with "
                                 "sampler=, or give the DataLoader a sampler")
            self.loader = source
            self.own = False
        else:
            self.loader = DataLoader(source, batch_size=batch_size,
                                     sampler=_OrderSampler(len(source), gen if shuffle else None,
                                                           sampler or _permutation),
                                     pin_memory=device.type == "cuda")
            self.own = True
        try:
            self._steps = len(self.loader)
        except TypeError:
            raise ValueError("fit needs a DataLoader with a length (the schedule needs the "
                             "number of steps); give its dataset a __len__") from None
        try:
            self.n = len(self.loader.dataset)
        except TypeError:
            self.n = -1

    def steps(self, batch_size: int) -> int:
        return self._steps

    def batches(self, batch_size: int, gen, ddp: Context | None
                ) -> Iterator[tuple[Tensor, Tensor, int]]:
        for item in self.loader:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError("fit's DataLoader must yield (x, y) batches, but yielded "
                                 f"{type(item).__name__}")
            x, y = item
            x, y = torch.as_tensor(x), torch.as_tensor(y)
            n = int(x.shape[0])
            if ddp is not None and ddp.active:
                x = x.tensor_split(ddp.world)[ddp.rank]
                y = y.tensor_split(ddp.world)[ddp.rank]
            yield x, y, n


def _source(data, device: torch.device, batch_size: int, gen, *, shuffle: bool = True,
            sampler: Sampler | None = None):
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        return _Tensors(data[0], data[1], device, sampler or _permutation)
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return _Tensors(data.tensors[0], data.tensors[1], device, sampler or _permutation)
    if isinstance(data, (DataLoader, Dataset)):
        return _Loader(data, batch_size, gen, device, shuffle=shuffle, sampler=sampler)
    raise TypeError(f"fit takes a DataSplit, a Dataset or a DataLoader yielding (x, y), not "
                    f"{type(data).__name__}")




def _image_shape(data) -> tuple[int, ...] | None:
    """(C, H, W) of image data, when known up front."""
    if isinstance(data, DataSplit):
        shape = tuple(int(s) for s in data.input_shape)
        return shape if len(shape) == 3 else None
    from torch.utils.data import Dataset

    if isinstance(data, Dataset) and hasattr(data, "__getitem__"):
        try:
            x = data[0][0]
        except Exception:  # noqa: BLE001 - an unusual Dataset: decided at the first batch
            return None
        x = torch.as_tensor(x)
        return tuple(x.shape) if x.dim() == 3 else None
    return None


class Sources(NamedTuple):
    """What a run trains and measures on."""

    train: _Tensors | _Loader
    """The training batches."""
    val: _Tensors | _Loader | None
    """The validation batches, measured after every epoch (None: none)."""
    split: DataSplit | None
    """The DataSplit given (its test part is measured once, at the end), else None."""
    image: tuple[int, ...] | None
    """(C, H, W) of image data when known up front, else None."""


def sources(data, val, config: TrainConfig, device: torch.device, gen: torch.Generator,
            sampler: Sampler | None = None) -> Sources:
    """The training and validation batches of :func:`~onelip.train.fit`'s ``data`` and
    ``val`` (with ``config.val_fraction``, carved from a DataSplit's training part), in
    ``sampler``'s order of ``gen``; ValueError for data that cannot be used so."""
    image = _image_shape(data)
    if config.augment and image is None and isinstance(data, DataSplit):
        raise ValueError(f"augmentation ({', '.join(config.augment)}) is for images, but data "
                         f"set {data.name!r} has input_shape {tuple(data.input_shape)}; "
                         "drop it for this data")
    if config.val_fraction > 0:
        if not isinstance(data, DataSplit):
            raise ValueError("val_fraction carves a validation split from a DataSplit; for a "
                             "Dataset or DataLoader pass val= instead")
        if val is not None or data.x_val is not None:
            raise ValueError("val_fraction and a validation part given (val= or "
                             "DataSplit.x_val): use one of them")
        data = validation_split(data, config.val_fraction)
    if isinstance(data, DataSplit):
        if data.x_val is not None:
            if val is not None:
                raise ValueError("the DataSplit has a validation part and val= is given; use "
                                 "one of them")
            val = (data.x_val, data.y_val)
        train = _Tensors(data.x_train, data.y_train, device, sampler or _permutation)
    else:
        train = _source(data, device, config.batch_size, gen, sampler=sampler)
    val_src = _source(val, device, config.batch_size, None, shuffle=False) \
        if val is not None else None
    if train.steps(config.batch_size) < 1:
        raise ValueError("the training data is empty")
    return Sources(train, val_src, data if isinstance(data, DataSplit) else None, image)

# SPDX-License-Identifier: MIT
"""What the four claims share: cached sub-runs, progress, verdicts, baselines, data subsets.

A *sub-run* is one unit of work (usually one training run) whose result is a JSON dict. It is
stored as ``DIR/<claim>/runs/<key>.json`` where ``key`` hashes its full config (and
:data:`SCHEMA`); a finished sub-run is loaded, never recomputed, so an interrupted claim resumes
where it stopped and a second run of a finished claim costs only the plotting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from onelip import __version__
from onelip._io import atomic_path
from onelip._validation import binary_signs, is_binary_output
from onelip.data import DataSplit, as_float
from onelip.nn.utils import eval_mode

__all__ = [
    "SCHEMA",
    "BCELoss",
    "ClaimNotRun",
    "SubRuns",
    "Verdict",
    "config_dict",
    "config_from",
    "config_key",
    "cpu_model",
    "data_label",
    "device_name",
    "environment",
    "label_noise",
    "lipschitz_mlp",
    "plain_mlp",
    "rounded",
    "save_png",
    "scores",
    "spearman",
    "subset",
    "table",
    "train",
]

SCHEMA = 1
"""Bumped when a change in the experiment code makes cached sub-runs stale."""


# ==== configs, keys, JSON ===================================================================


def config_dict(cfg: Any) -> dict:
    """A frozen dataclass config as plain JSON (tuples become lists)."""
    assert is_dataclass(cfg), "config_dict expects a dataclass instance"

    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in fields(cfg)}


def config_from(cls: type, d: dict) -> Any:
    """The config dataclass ``cls`` rebuilt from its :func:`config_dict` (lists → tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def config_key(config: dict) -> str:
    """A 16-hex-digit hash of a sub-run's config (canonical JSON) and :data:`SCHEMA`."""
    blob = json.dumps({"schema": SCHEMA, **config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rounded(x: Any, digits: int = 4) -> Any:
    """Round floats (and arrays/tensors, to nested lists) for compact JSON; NaN/inf -> None."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return rounded(x.tolist(), digits)
    if isinstance(x, (list, tuple)):
        return [rounded(v, digits) for v in x]
    if isinstance(x, dict):
        return {k: rounded(v, digits) for k, v in x.items()}
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return round(x, digits) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (None where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def environment() -> dict:
    """Where a sub-run is computed: versions, the CPU (model, count, torch threads) and the
    GPU the sub-runs train on (``gpu``: its name when CUDA is available, else None)."""
    import platform

    return {"onelip": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def data_label(name: str) -> str:
    """A data set's name for reports and figures: ``folder:DIR`` becomes ``folder A/B`` (the
    last two parts of DIR, not the local path); other names are kept.

    >>> data_label("folder:/home/me/data/cifar10/train"), data_label("mnist-5k")
    ('folder cifar10/train', 'mnist-5k')
    """
    if name.startswith("folder:"):
        return "folder " + "/".join(Path(name[len("folder:"):]).parts[-2:])
    return name


def device_name(device: str) -> str:
    """Where a sub-run trained, for the report: the GPU's name, or the CPU's thread count."""
    if device == "cuda":
        return f"GPU {torch.cuda.get_device_name()}"
    return f"CPU, {torch.get_num_threads()} torch thread(s)"


def _write_json(path: Path, obj: Any) -> None:
    """Compact JSON, written atomically (:func:`onelip._io.atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


# ==== verdicts and tables ===================================================================


@dataclass(frozen=True)
class Verdict:
    """One row of a claim's verdict table."""

    claim: str
    """The part of the claim being checked, in a few words."""
    research: str
    """What the research says."""
    measured: str
    """What we measured (numbers)."""
    agree: bool
    """Whether the measurement agrees with the research."""

    def as_dict(self) -> dict:
        return asdict(self)


def spearman(a, b) -> float:
    """Spearman's rank correlation of two sequences (ties by order; 0.0 when one is
    constant)."""
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def table(title: str, columns: list[str], rows: list[list[Any]]) -> dict:
    """A table for report.md: ``{"title", "columns", "rows"}`` (cells already formatted)."""
    assert all(len(r) == len(columns) for r in rows), "every row needs one cell per column"
    return {"title": title, "columns": columns, "rows": [[str(c) for c in r] for r in rows]}


# ==== cached sub-runs with progress =========================================================


class ClaimNotRun(Exception):
    """A claim stopped by its time budget before it had enough sub-runs to report on.
    ``stats`` is :meth:`SubRuns.stats` at that point (the finished sub-runs stay cached)."""

    def __init__(self, claim: str, stats: dict, *, needs: str = "all of them"):
        self.claim, self.stats, self.needs = claim, stats, needs
        super().__init__(f"{claim}: the time budget was spent after {stats['ran']} sub-run(s) "
                         f"ran and {stats['cached']} came from the cache, of {stats['total']}")


class SubRuns:
    """Runs and caches the sub-runs of one claim, with progress.

    ``runs(name, config, compute)`` returns ``compute()``'s JSON dict, from
    ``DIR/<claim>/runs/<key>.json`` when a sub-run with the same config finished before.
    With ``out=None`` nothing is cached (everything runs in memory).

    Time budget: with ``deadline`` (a :func:`time.monotonic` value), no sub-run *starts* after
    it; cached ones are still read. A claim that can report on part of its sub-runs
    (``partial=True``: the sweeps of pareto and consistency) gets None for each one not run,
    and :meth:`stats` lists them under ``not_run``; any other claim raises
    :class:`ClaimNotRun` at the first sub-run it cannot have.

    Progress: a rich bar over the claim's sub-runs on a TTY; otherwise one line per sub-run on
    stderr (``[claim 3/12] name: ran in 4.2s`` or ``... cached``). ``progress=False`` is silent.
    """

    def __init__(self, claim: str, out: Path | None, *, total: int, progress: bool = True,
                 deadline: float | None = None, partial: bool = False):
        self.claim = claim
        self.deadline = deadline
        self.partial = partial
        self.not_run: list[str] = []
        self.dir = None if out is None else Path(out) / claim / "runs"
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.total = total
        self.done = 0
        self.ran = 0
        self.cached = 0
        self.compute_seconds = 0.0  # what the sub-runs cost when they ran, cached ones too
        self._envs: dict[str, list] = {}  # environment (JSON) -> [env, count]
        self.progress = progress
        self._bar = None
        if progress and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn(f"[bold]{claim}[/bold]"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), transient=False)
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def note(self, text: str) -> None:
        """Show ``text`` (e.g. the current epoch) next to the bar, on a TTY only."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def __call__(self, name: str, config: dict,
                 compute: Callable[[], dict]) -> dict | None:
        found, result = self._cached(name, config)
        if found:
            return result
        if self._spent(name):
            return None
        self.note(name)
        t0 = time.perf_counter()
        result = compute()
        self._store(name, config, time.perf_counter() - t0, environment(), result)
        return result

    def map(self, items: list[tuple[str, dict, tuple]], compute: Callable[..., dict], *,
            jobs: int = 1) -> list[dict | None]:
        """``[self(name, config, lambda: compute(*args)) for name, config, args in items]``,
        with up to ``jobs`` sub-runs computing at once, each in a fresh process of its own
        (``spawn``): ``compute`` must be a module-level function and ``args`` must pickle.
        The cached sub-runs are read first; the others start in order, none after the
        deadline (the budget's rule of :meth:`__call__`). A sub-run that raises stops the
        starts; the ones computing finish and are stored, then the error is raised."""
        if jobs < 1:
            raise ValueError(f"Expected jobs >= 1, but got {jobs}")
        if jobs == 1:
            return [self(name, config, lambda a=args: compute(*a))
                    for name, config, args in items]
        import multiprocessing
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        out: list[dict | None] = [None] * len(items)
        queue = deque()
        for i, (name, config, _) in enumerate(items):
            found, result = self._cached(name, config)
            if found:
                out[i] = result
            else:
                queue.append(i)
        if not queue:
            return out
        error: BaseException | None = None
        running: dict = {}
        with ProcessPoolExecutor(max_workers=jobs, max_tasks_per_child=1,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            while queue or running:
                while queue and len(running) < jobs and error is None:
                    i = queue.popleft()
                    if self._spent(items[i][0]):
                        continue
                    self.note(items[i][0])
                    if self._bar is None and self.progress:
                        print(f"[{self.claim}] {items[i][0]}: started", file=sys.stderr,
                              flush=True)
                    running[pool.submit(_timed, compute, items[i][2])] = i
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        seconds, env, result = fut.result()
                    except Exception as e:  # noqa: BLE001 - raised below, after the others
                        error = error or e
                        continue
                    self._store(items[i][0], items[i][1], seconds, env, result)
                    out[i] = result
        if error is not None:
            raise error
        return out

    def _path(self, config: dict) -> Path | None:
        return None if self.dir is None else self.dir / f"{config_key(config)}.json"

    def _cached(self, name: str, config: dict) -> tuple[bool, dict | None]:
        """(True, result) of a finished sub-run with this config, counted; else (False,
        None)."""
        path = self._path(config)
        if path is not None and path.exists():
            try:
                stored = json.loads(path.read_text())
                if stored.get("config") == json.loads(json.dumps(config)):
                    self._advance(name, "cached")
                    self.cached += 1
                    self.compute_seconds += float(stored.get("seconds", 0.0))
                    self._count_env(stored.get("environment"))
                    return True, stored["result"]
            except (json.JSONDecodeError, KeyError):
                pass  # a torn or foreign file: recompute it
        return False, None

    def _spent(self, name: str) -> bool:
        """Whether the deadline has passed: then ``name`` is recorded as not run (or, for a
        claim that needs all its sub-runs, :class:`ClaimNotRun` is raised)."""
        if self.deadline is None or time.monotonic() < self.deadline:
            return False
        self.not_run.append(name)
        if not self.partial:
            raise ClaimNotRun(self.claim, self.stats())
        self._advance(name, "not run (the time budget is spent)")
        return True

    def _store(self, name: str, config: dict, seconds: float, env: dict,
               result: dict) -> None:
        self.compute_seconds += seconds
        self._count_env(env)
        path = self._path(config)
        if path is not None:
            _write_json(path, {"name": name, "config": config, "seconds": round(seconds, 2),
                               "onelip_version": __version__, "environment": env,
                               "result": result})
        self.ran += 1
        self._advance(name, f"ran in {seconds:.1f}s")

    def _advance(self, name: str, what: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"{name}: {what}")
        elif self.progress:
            print(f"[{self.claim} {self.done}/{self.total}] {name}: {what}", file=sys.stderr,
                  flush=True)

    def _count_env(self, env: dict | None) -> None:
        key = json.dumps(env, sort_keys=True)
        self._envs.setdefault(key, [env, 0])[1] += 1

    def stats(self) -> dict:
        """``{"ran", "cached", "total", "not_run", "compute_seconds", "environments"}`` so
        far; ``not_run`` names the sub-runs the time budget left out, ``environments`` lists
        where the sub-runs were computed (``None``: not recorded) with their counts."""
        return {"ran": self.ran, "cached": self.cached, "total": self.total,
                "not_run": list(self.not_run),
                "compute_seconds": round(self.compute_seconds, 1),
                "environments": [{"environment": e, "subruns": n}
                                 for e, n in self._envs.values()]}

    def require_some(self) -> None:
        """Raise :class:`ClaimNotRun` when no sub-run at all is at hand (all left out by the
        time budget): there is nothing to report on."""
        if self.not_run and self.ran + self.cached == 0:
            raise ClaimNotRun(self.claim, self.stats(), needs="at least one")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "SubRuns":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _timed(compute: Callable[..., dict], args: tuple) -> tuple[float, dict, dict]:
    """``compute(*args)`` in a worker process of :meth:`SubRuns.map`: (seconds,
    :func:`environment` of the worker, result)."""
    t0 = time.perf_counter()
    result = compute(*args)
    return time.perf_counter() - t0, environment(), result


# ==== models ================================================================================


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """The CPU RNG seeded with ``seed`` for the block (CPU initialisation draws from it, as
    after ``torch.manual_seed(seed)``), then restored to its state before."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def lipschitz_mlp(in_features: int, num_outputs: int, hidden: tuple[int, ...], *,
                  group_size: int = 2, seed: int = 0) -> nn.Module:
    """onelip's 1-Lipschitz MLP: OrthoLinear + GroupSort (MaxMin when ``group_size=2``),
    FrobeniusLinear head for 1 output. Initialised from ``seed`` (the global RNG is left as
    it was)."""
    from onelip import models

    act = {"activation": "maxmin"} if group_size == 2 else {"activation": "groupsort",
                                                             "group_size": group_size}
    with _seeded(seed):
        model, _ = models.build("mlp", in_features=in_features, num_outputs=num_outputs,
                                hidden=tuple(hidden), **act)
    return model


def plain_mlp(in_features: int, num_outputs: int, hidden: tuple[int, ...], *,
              seed: int = 0) -> nn.Sequential:
    """The unconstrained baseline: the same widths with ``nn.Linear`` + ReLU, initialised
    from ``seed`` (the global RNG is left as it was)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    with _seeded(seed):
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


class BCELoss(nn.Module):
    """Binary cross-entropy on one logit: the unconstrained baseline's loss for two classes.
    Labels in {0, 1} or {−1, +1}, as for onelip's losses. Shape: input (N,) or (N, 1),
    target (N,)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        f = input.reshape(-1)
        prob = (binary_signs(target, f.dtype) + 1) / 2  # {-1, +1} -> {0, 1}
        return nn.functional.binary_cross_entropy_with_logits(f, prob)


# ==== data ==================================================================================


def subset(data: DataSplit, *, n_train: int | None = None, n_test: int | None = None,
           seed: int = 0) -> DataSplit:
    """A random subset of the train and test sets (``None`` keeps all); fixed by ``seed``.
    Features come back as float (uint8 pixels of ``folder:`` / ``npz:`` → [0, 1]): the
    experiments that take a subset measure their models on it outside ``fit``."""
    gen = torch.Generator().manual_seed(seed)

    def pick(x, y, n):
        if n is None or n >= x.shape[0]:
            return as_float(x), y
        idx = torch.randperm(x.shape[0], generator=gen)[:n]
        return as_float(x[idx]), y[idx]

    xtr, ytr = pick(data.x_train, data.y_train, n_train)
    xte, yte = pick(data.x_test, data.y_test, n_test)
    return DataSplit(data.name, xtr, ytr, xte, yte, data.num_classes, data.input_shape)


def label_noise(data: DataSplit, rate: float, *, seed: int = 0) -> DataSplit:
    """Replace the training label of a fraction ``rate`` of the points by a *different* class,
    drawn uniformly (test labels untouched)."""
    if not 0 <= rate < 1:
        raise ValueError(f"Expected a noise rate in [0, 1), but got {rate}")
    if rate == 0:
        return data
    gen = torch.Generator().manual_seed(seed + 7919)
    y = data.y_train.clone()
    n = y.shape[0]
    idx = torch.randperm(n, generator=gen)[: int(round(rate * n))]
    shift = torch.randint(1, data.num_classes, (idx.numel(),), generator=gen)
    y[idx] = (y[idx] + shift) % data.num_classes
    return DataSplit(data.name, data.x_train, y, data.x_test, data.y_test, data.num_classes,
                     data.input_shape)


# ==== training ==============================================================================


def train(model: nn.Module, data: DataSplit, loss: nn.Module, *, epochs: int, lr: float,
          batch_size: int = 128, seed: int = 0, runs: SubRuns | None = None,
          name: str = "") -> list[dict]:
    """:func:`onelip.train.fit` with Adam + one-cycle, reporting epochs to ``runs``' bar."""
    from onelip.train import TrainConfig, fit

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    hook = None
    if runs is not None:
        def hook(record: dict) -> None:
            runs.note(f"{name} epoch {record['epoch']}/{epochs}")
    return fit(model, data, loss, cfg, progress=False, on_epoch=hook)


@torch.no_grad()
def scores(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Model outputs in eval mode (each submodule's mode restored after), batched; one-output
    models give shape (N,)."""
    with eval_mode(model):
        out = torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    return out.reshape(-1) if is_binary_output(out) else out


# ==== figures ===============================================================================


def save_png(fig, path: Path, *, dpi: int = 80, colors: int = 128) -> None:
    """Save a matplotlib figure as a small PNG: ``dpi`` 80, quantised to ``colors`` colours
    (the figures are line art; this keeps committed reports light)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=colors, dither=Image.Dither.NONE)
    img.save(path, format="PNG", optimize=True)

# SPDX-License-Identifier: MIT
"""The timing protocol and training helpers shared by the layer benchmarks (dense, conv):
interleaved rounds in a fresh random order, and short regression training runs."""

from __future__ import annotations

import gc
import os
import random
import time


def retract(layer) -> None:
    """``layer.retract_()`` where the layer has one (onelip's orthogonal layers)."""
    fn = getattr(layer, "retract_", None)
    if callable(fn):
        fn()


def train_steps(layer, task, steps: int, lr: float, opt=None):
    """``steps`` Adam steps (lr) on ``task.sample()`` → (x, target), mean squared error,
    ``retract`` after each step (what ``onelip.train.fit`` does). Returns the optimizer."""
    import torch

    opt = opt or torch.optim.Adam(layer.parameters(), lr=lr)
    layer.train()
    for _ in range(steps):
        x, t = task.sample()
        opt.zero_grad(set_to_none=True)
        (layer(x) - t).square().mean().backward()
        opt.step()
        retract(layer)
    return opt


def run_rounds(calls: dict, kinds, names: list[str], rounds: int, reps: int, warmup: int,
               seed: int, slow_s: float = float("inf")):
    """Round-robin over every (measurement kind, candidate) of ``calls[kind][name]`` in a
    fresh random order per round, garbage collection off while timing.

    A sample is the mean of ``reps`` consecutive calls, or of one call for candidates slower
    than ``slow_s`` in every warm-up round (one such call is long enough to time).
    Returns (times[kind][name] in seconds per call, load averages, reps used per task).
    """
    tasks = [(k, n) for k in kinds for n in names]
    times = {k: {n: [] for n in names} for k in kinds}
    n_reps = {t: reps for t in tasks}
    fastest = {t: float("inf") for t in tasks}
    rng = random.Random(seed)
    load = []
    gc.collect()
    gc.disable()
    try:
        for r in range(warmup + rounds):
            order = tasks[:]
            rng.shuffle(order)
            for task in order:
                fn, k = calls[task[0]][task[1]], n_reps[task]
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                dt = (time.perf_counter() - t0) / k
                if r >= warmup:
                    times[task[0]][task[1]].append(dt)
                else:
                    fastest[task] = min(fastest[task], dt)
                    if r == warmup - 1 and fastest[task] > slow_s:
                        n_reps[task] = 1
            gc.collect()
            if r >= warmup and (r - warmup) % max(1, rounds // 10) == 0:
                load.append(os.getloadavg()[0])
                print(f"[bench] round {r - warmup + 1}/{rounds}  load {load[-1]:.2f}",
                      flush=True)
    finally:
        gc.enable()
    return times, load, {f"{k} | {n}": v for (k, n), v in n_reps.items()}

# SPDX-License-Identifier: MIT
"""The optimiser and the learning-rate schedule of a run (:func:`make_optimizer`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from onelip.train.config import TrainConfig

__all__ = ["make_optimizer"]


def make_optimizer(model: nn.Module, cfg: TrainConfig, steps: int, steps_per_epoch: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """(optimiser, schedule) over ``model``'s trainable parameters for a run of ``steps``
    steps: AdamW, SGD (momentum 0.9, plain or Nesterov) or NAdam (decoupled weight decay);
    one-cycle, cosine or constant, after ``cfg.warmup_epochs`` of warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "nadam":
        opt = torch.optim.NAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                decoupled_weight_decay=True)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                              nesterov=cfg.optimizer == "nesterov")
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle":
        kw = {"pct_start": min(max(warm, 1) / steps, 0.99)} if warm else {}
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, **kw)
    elif warm:  # a linear ramp, then the schedule (closed form)
        cosine = cfg.schedule == "cosine"

        def factor(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            if not cosine:
                return 1.0
            return 0.5 * (1.0 + math.cos(math.pi * min(s - warm, steps - warm)
                                         / max(steps - warm, 1)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched

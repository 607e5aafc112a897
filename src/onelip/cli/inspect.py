# SPDX-License-Identifier: MIT
"""``onelip inspect RUN``: the model, its parameters, its certified bound and a lower bound."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onelip.cli._common import positive_int

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder written by `onelip train`")
    p.add_argument("--points", type=positive_int, default=64,
                   help="test points for the Lipschitz estimate")


def run(args: argparse.Namespace) -> int:
    """Print a run's model, its certified bound and a Lipschitz lower bound."""
    from onelip import certify, runs
    from onelip import data as datasets

    model, cfg = runs.load(args.run)
    n_params = sum(p.numel() for p in model.parameters())
    bound = certify.lipschitz_bound(model)
    info = {"model": cfg["model"], "parameters": n_params, "lipschitz_bound": bound}
    data_cfg = cfg.get("data", {})
    try:
        data = datasets.load(data_cfg["name"], **{k: v for k, v in data_cfg.items()
                                                 if k != "name"})
        info["lipschitz_estimate"] = certify.estimate_lipschitz(model, data.x_test[:args.points])
    except (KeyError, ValueError, FileNotFoundError) as e:
        info["lipschitz_estimate"] = None
        info["estimate_skipped"] = str(e)
    print(model)
    print(json.dumps(info, indent=2))
    return 0

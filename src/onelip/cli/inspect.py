# SPDX-License-Identifier: MIT
"""``onelip inspect RUN``: the model, its parameters, its certified bound and a lower bound.

``RUN`` may be ``pretrained:NAME``, a model shipped with onelip (:mod:`onelip.pretrained`):
its card's summary is shown; it ships no data, so the lower bound is skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onelip.cli._common import PRETRAINED_HELP, positive_int, resolve_run

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help=PRETRAINED_HELP)
    p.add_argument("--points", type=positive_int, default=64,
                   help="test points for the Lipschitz estimate")


def run(args: argparse.Namespace) -> int:
    """Print a run's model, its certified bound and a Lipschitz lower bound."""
    from onelip import certify, pretrained, runs
    from onelip import data as datasets

    folder, shipped = resolve_run(args.run)
    model, cfg = runs.load(folder)
    n_params = sum(p.numel() for p in model.parameters())
    bound = certify.lipschitz_bound(model)
    info = {"model": cfg["model"], "parameters": n_params, "lipschitz_bound": bound}
    if shipped:
        info["pretrained"] = {"folder": str(folder),
                              "summary": pretrained.card(folder.name).get("summary")}
    data_cfg = cfg.get("data", {})
    info["lipschitz_estimate"] = None
    if "name" not in data_cfg:
        info["estimate_skipped"] = "the run records no data set" + (
            " (pretrained models ship none)" if shipped else "")
    else:
        try:
            data = datasets.load(data_cfg["name"], **{k: v for k, v in data_cfg.items()
                                                     if k != "name"})
            x = datasets.as_float(data.x_test[:args.points])  # uint8 pixels → [0, 1]
            info["lipschitz_estimate"] = certify.estimate_lipschitz(model, x)
        except (KeyError, ValueError, FileNotFoundError) as e:
            info["estimate_skipped"] = str(e)
    print(model)
    print(json.dumps(info, indent=2))
    return 0

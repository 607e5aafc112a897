# SPDX-License-Identifier: MIT
"""``onelip inspect RUN``: the model, its parameters, its certified bound and a lower bound.

``RUN`` may be ``pretrained:NAME``, a model shipped with onelip (:mod:`onelip.pretrained`):
its card's summary is shown; it ships no data, so the lower bound is skipped. The lower bound
is estimated on the run's test split, or where its data has none (an image folder of one
split), on its validation split (else its training data); the output names which.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onelip.cli._common import PRETRAINED_HELP, error_text, positive_int, resolve_run

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help=PRETRAINED_HELP)
    p.add_argument("--points", type=positive_int, default=64,
                   help="points for the Lipschitz estimate: of the run's test split, or "
                        "where its data has none, of its validation (else training) split")


def _points(cfg: dict, data):
    """(inputs, the split's name) for the Lipschitz estimate: the test split of the run's data;
    where it has none (an image folder of one split, an npz without test arrays), the run's
    validation split (carved again as it was for training), else its training data. Never
    empty: a data set has training samples."""
    from onelip import data as datasets

    if len(data.x_test):
        return data.x_test, "test"
    fraction = cfg.get("train", {}).get("val_fraction") or 0.0
    if isinstance(fraction, (int, float)) and 0 < fraction < 1:
        seed = cfg.get("splits", {}).get("val_seed", datasets.VAL_SEED)
        part = datasets.validation_split(data, float(fraction), seed=int(seed))
        if len(part.x_val):
            return part.x_val, "validation"
    return data.x_train, "training"


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
        except (KeyError, ValueError, TypeError, OSError) as e:  # moved, changed, unreadable
            info["estimate_skipped"] = (f"cannot read the run's data {data_cfg['name']}: "
                                        + " ".join(error_text(e).split()))
        else:
            x, where = _points(cfg, data)
            x = datasets.as_float(x[:args.points])  # uint8 pixels → [0, 1]
            info["lipschitz_estimate"] = certify.estimate_lipschitz(model, x)
            info["estimate_points"] = f"{len(x)} of the {where} split"
    print(model)
    print(json.dumps(info, indent=2))
    return 0

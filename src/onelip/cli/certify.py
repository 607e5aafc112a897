# SPDX-License-Identifier: MIT
"""``onelip certify RUN``: certified accuracy at each ε, optionally checked by an attack."""

from __future__ import annotations

import argparse
from pathlib import Path

from onelip.cli._common import CLIError, nonneg_float, positive_int

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder written by `onelip train`")
    p.add_argument("--data", default=None, help="data set (default: the one trained on)")
    p.add_argument("--eps", type=nonneg_float, nargs="+", default=[0.5, 1.0, 1.58])
    p.add_argument("--attack", action="store_true", help="also run the L2 PGD attack")
    p.add_argument("--attack-points", type=positive_int, default=200)
    p.add_argument("--attack-steps", type=positive_int, default=30)


def run(args: argparse.Namespace) -> int:
    """Certified accuracy of a run on its test split (and an attack that checks it)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from onelip import certify, data as datasets, runs

    model, cfg = runs.load(args.run)
    data_name = args.data or cfg.get("data", {}).get("name")
    if data_name is None:
        raise CLIError("the run does not say which data it was trained on; pass --data")
    extra = {k: v for k, v in cfg.get("data", {}).items() if k != "name"} if not args.data else {}
    data = datasets.load(data_name, **extra)
    x, y = data.x_test, data.y_test
    eps = sorted(set(args.eps))
    bound = certify.lipschitz_bound(model)
    res = certify.certified_accuracy(model, x, y, eps, lipschitz=bound)
    result: dict = {
        "data": data_name, "n_test": int(x.shape[0]), "lipschitz_bound": bound,
        "clean": res["clean"],
        "certified": {str(e): v for e, v in res["certified"].items()},
    }
    split = certify.split_last_linear(model)
    if split is not None:
        ll = certify.certified_accuracy(model, x, y, eps, method="last_layer")
        result["certified_last_layer"] = {str(e): v for e, v in ll["certified"].items()}
        ok = (res["radii"] > 0)
        gain = (ll["radii"][ok] / res["radii"][ok]).median() if ok.any() else torch.tensor(1.0)
        result["last_layer_median_gain"] = float(gain)
    if args.attack:
        n = min(args.attack_points, x.shape[0])
        att = certify.attack_l2(model, x[:n], y[:n], max_eps=max(eps) * 2 + 0.5,
                                steps=args.attack_steps, restarts=2, bisection=8)
        correct = res["radii"][:n] > 0
        result["attack"] = {
            "points": n,
            "robust": {str(e): att.robust_accuracy(e, correct) for e in eps},
            "certified_same_points": {str(e): float(((res["radii"][:n] > e)).float().mean())
                                      for e in eps},
        }
        r = res["radii"][:n]
        ratio = (att.min_norm[correct & torch.isfinite(att.min_norm)]
                 / r[correct & torch.isfinite(att.min_norm)])
        if ratio.numel():
            result["attack"]["median_adv_over_radius"] = float(ratio.median())
            result["attack"]["violations"] = int((ratio < 1 - 1e-4).sum())
    runs.write_json(args.run / "certify.json", result)

    table = Table(title=f"{args.run} on {data_name} test ({x.shape[0]} points), "
                        f"L ≤ {bound:.4f}")
    table.add_column("ε")
    table.add_column("certified (margin/√2)")
    if "certified_last_layer" in result:
        table.add_column("certified (last layer)")
    if args.attack:
        table.add_column(f"empirical robust ({result['attack']['points']} pts)")
    table.add_row("0 (clean)", f"{res['clean']:.2%}",
                  *([f"{res['clean']:.2%}"] if "certified_last_layer" in result else []),
                  *([""] if args.attack else []))
    for e in eps:
        row = [f"{e:g}", f"{res['certified'][e]:.2%}"]
        if "certified_last_layer" in result:
            row.append(f"{result['certified_last_layer'][str(e)]:.2%}")
        if args.attack:
            row.append(f"{result['attack']['robust'][str(e)]:.2%}")
        table.add_row(*row)
    console = Console(width=120)
    console.print(table)
    att_res = result.get("attack", {})
    if "median_adv_over_radius" in att_res:
        console.print(f"attack on {att_res['points']} points: median(adversarial norm / certified "
                      f"radius) = {att_res['median_adv_over_radius']:.3f} (1 = tight); "
                      f"certificates violated: {att_res['violations']}")
    return 0

# SPDX-License-Identifier: MIT
"""``onelip certify RUN``: certified accuracy at each ε, optionally checked by an attack.

Results are kept: ``RUN/certify.json`` (or ``--out FILE``) holds one entry per set of settings
(data, ε, attack), a new run of the same settings replacing its entry and leaving the others::

    {"format": "onelip-certify/2", "latest": KEY, "results": {KEY: {...}, ...}}

A ``certify.json`` of the earlier format (one result) is kept under the key ``"earlier"``.
The table is printed even when the results cannot be written (a warning says so).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onelip.cli._common import CLIError, eps_float, positive_int, warn

__all__ = ["FORMAT", "add_arguments", "run"]

FORMAT = "onelip-certify/2"
RESULTS = "certify.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder written by `onelip train`")
    p.add_argument("--data", default=None, help="data set (default: the one trained on)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which part of the data: test; val, the run's validation split "
                        "(--val-fraction); train, the rest of its training data. Another "
                        "--data without a test split (an image folder) is certified whole")
    p.add_argument("--eps", type=eps_float, nargs="+", default=[0.5, 1.0, 1.58],
                   help="L2 radii to certify")
    p.add_argument("--attack", action="store_true", help="also run the L2 PGD attack")
    p.add_argument("--attack-points", type=positive_int, default=200,
                   help="test points attacked (the first ones)")
    p.add_argument("--attack-steps", type=positive_int, default=30,
                   help="PGD steps per restart and radius")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results file to add to (default: RUN/{RESULTS})")


def _settings(data_name: str, eps: list[float], args: argparse.Namespace) -> tuple[str, dict]:
    settings = {"data": data_name, "eps": eps,
                "attack": ({"points": args.attack_points, "steps": args.attack_steps}
                           if args.attack else None)}
    key = f"data={data_name} eps={','.join(f'{e:g}' for e in eps)}"
    if args.attack:
        key += f" attack={args.attack_points}x{args.attack_steps}"
    if getattr(args, "split", "test") != "test":
        key, settings["split"] = f"{key} split={args.split}", args.split
    return key, settings


def _read_results(path: Path) -> dict:
    """The results file at ``path`` ({} if none); CLIError if it is another kind of file."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CLIError(f"{path} exists and is not a certify results file ({e}); choose "
                       "another --out or move it") from None
    if isinstance(old, dict) and old.get("format") == FORMAT and isinstance(
            old.get("results"), dict):
        return old["results"]
    if isinstance(old, dict) and "certified" in old and "clean" in old:
        return {"earlier": old}  # one result, as written before results were kept
    raise CLIError(f"{path} exists and is not a certify results file; choose another --out "
                   "or move it")


def run(args: argparse.Namespace) -> int:
    """Certified accuracy of a run on its test split (and an attack that checks it)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from onelip import certify, runs
    from onelip import data as datasets
    from onelip._io import unwritable_reason
    from onelip._validation import is_binary_output

    target = args.out if args.out is not None else args.run / RESULTS
    if args.out is not None:  # asked for explicitly: refuse before computing anything
        if args.out.is_dir():
            raise CLIError(f"--out {args.out} is a folder; --out names a results file")
        reason = unwritable_reason(args.out.parent)
        if reason is not None:
            raise CLIError(f"cannot write --out {args.out}: {reason}")
        _read_results(args.out)
    model, cfg = runs.load(args.run)
    data_name = args.data or cfg.get("data", {}).get("name")
    if data_name is None:
        raise CLIError("the run does not say which data it was trained on; pass --data")
    own = not args.data or args.data == cfg.get("data", {}).get("name")  # the run's own data
    extra = {k: v for k, v in cfg.get("data", {}).items() if k != "name"} if own else {}
    data = datasets.load(data_name, **extra)
    from onelip.cli.train import run_data

    x, y = run_data(cfg, data, args.split, own_data=own)  # CLIError: other classes or shape
    if x.shape[0] == 0:
        raise CLIError(f"the test split of {data_name} is empty: nothing to certify; pass "
                       "--data with a data set that has test points")
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
        r = res["radii"][:n]  # the certificates of the attacked points
        correct = r > 0
        result["attack"] = {
            "points": n,
            "clean_same_points": float(correct.float().mean()),
            "robust": {str(e): att.robust_accuracy(e, correct) for e in eps},
            "certified_same_points": {str(e): float((r > e).float().mean()) for e in eps},
        }
        found = correct & torch.isfinite(att.min_norm)
        ratio = att.min_norm[found] / r[found]
        if ratio.numel():
            result["attack"]["median_adv_over_radius"] = float(ratio.median())
            result["attack"]["violations"] = int((ratio < 1 - 1e-4).sum())
    key, settings = _settings(data_name, eps, args)
    result = {"settings": settings, **result}

    n_test = int(x.shape[0])
    table = Table(title=f"{args.run} on {data_name} {args.split} ({n_test} points), "
                        f"L ≤ {bound:.4f}")
    table.add_column("ε")
    with torch.no_grad():  # radius |f|/L for one output; multiclass: margin/(√2 L)
        binary = is_binary_output(model(x[:1]))
    kind = "|f|/L" if binary else "margin/(√2 L)"
    table.add_column(f"certified ({kind})\nall {n_test} pts")
    if "certified_last_layer" in result:
        table.add_column(f"certified (last layer)\nall {n_test} pts")
    if args.attack:  # both on the attacked points, so that they compare
        n = result["attack"]["points"]
        table.add_column(f"certified ({kind})\nfirst {n} pts (attacked)")
        table.add_column(f"empirical robust\nfirst {n} pts (attacked)")
    attack_clean = (2 * [f"{result['attack']['clean_same_points']:.2%}"] if args.attack
                    else [])
    table.add_row("0 (clean)", f"{res['clean']:.2%}",
                  *([f"{res['clean']:.2%}"] if "certified_last_layer" in result else []),
                  *attack_clean)
    for e in eps:
        row = [f"{e:g}", f"{res['certified'][e]:.2%}"]
        if "certified_last_layer" in result:
            row.append(f"{result['certified_last_layer'][str(e)]:.2%}")
        if args.attack:
            row.append(f"{result['attack']['certified_same_points'][str(e)]:.2%}")
            row.append(f"{result['attack']['robust'][str(e)]:.2%}")
        table.add_row(*row)
    console = Console(width=120)
    console.print(table)
    att_res = result.get("attack", {})
    if "median_adv_over_radius" in att_res:
        console.print(f"attack on {att_res['points']} points: median(adversarial norm / certified "
                      f"radius) = {att_res['median_adv_over_radius']:.3f} (1 = tight); "
                      f"certificates violated: {att_res['violations']}")
    _write(target, key, result, explicit=args.out is not None)
    return 0


def _write(target: Path, key: str, result: dict, *, explicit: bool) -> None:
    """Add ``result`` under ``key`` to the results file; a warning (the table is printed) if
    it cannot be written."""
    from onelip._io import write_json

    try:
        results = _read_results(target)
    except CLIError as e:
        if explicit:
            raise
        warn(f"{e}; the results above are not saved (pass --out FILE to save them elsewhere)")
        return
    results.pop(key, None)
    results[key] = result  # the latest last
    try:
        write_json(target, {"format": FORMAT, "latest": key, "results": results})
    except OSError as e:
        if explicit:
            raise CLIError(f"cannot write --out {target}: {e.strerror or e}") from None
        warn(f"cannot write {target} ({e.strerror or e}); the results above are not saved "
             "(pass --out FILE to save them elsewhere)")

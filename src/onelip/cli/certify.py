# SPDX-License-Identifier: MIT
"""``onelip certify RUN``: certified accuracy at each ε, optionally checked by an attack.

Results are kept: ``RUN/certify.json`` (or ``--out FILE``) holds one entry per set of settings
(data, ε, attack), a new run of the same settings replacing its entry and leaving the others::

    {"format": "onelip-certify/2", "latest": KEY, "results": {KEY: {...}, ...}}

A ``certify.json`` of the earlier format (one result) is kept under the key ``"earlier"``.
The table is printed even when the results cannot be written (a warning says so).

``RUN`` may be ``pretrained:NAME``, a model shipped with onelip (:mod:`onelip.pretrained`):
it records its classes and input shape but no data, so ``--data`` is required (an image
folder, ``folder:DIR``, of the same classes: labels are the sorted sub-folder names, which
must be the model's classes in its recorded order), and its folder is read-only: the results
are kept only with ``--out FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onelip.cli._common import (
    PRETRAINED_HELP,
    CLIError,
    data_source,
    eps_float,
    positive_int,
    refuse_inside_pretrained,
    resolve_run,
    warn,
)

__all__ = ["FORMAT", "add_arguments", "run"]

FORMAT = "onelip-certify/2"
RESULTS = "certify.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help=PRETRAINED_HELP)
    p.add_argument("--data", default=None,
                   help="data set (default: the one trained on; pretrained:NAME needs one, "
                        "e.g. folder:DIR, an image folder of its classes)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which part of the data: test; val, the run's validation split "
                        "(--val-fraction); train, the rest of its training data. Another "
                        "--data without a test split (an image folder) is certified whole")
    p.add_argument("--resize", type=positive_int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize the images of --data folder:DIR to H x W (default: the run's "
                        "own --resize, if it was trained with one)")
    p.add_argument("--eps", type=eps_float, nargs="+", default=[0.5, 1.0, 1.58],
                   help="L2 radii to certify")
    p.add_argument("--attack", action="store_true", help="also run the L2 PGD attack")
    p.add_argument("--attack-points", type=positive_int, default=200,
                   help="test points attacked (the first ones)")
    p.add_argument("--attack-steps", type=positive_int, default=30,
                   help="PGD steps per restart and radius")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results file to add to (default: RUN/{RESULTS}; for "
                        "pretrained:NAME none: the results are printed only)")


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
    # The numbers are onelip.certify.evaluate's; this command loads the run and its data,
    # prints them as a table and keeps them in the results file.
    from rich.console import Console
    from rich.table import Table

    from onelip import certify, runs
    from onelip._io import unwritable_reason

    folder, shipped = resolve_run(args.run)
    # a shipped model's folder is read-only: its results are kept only where --out says
    target = args.out if args.out is not None else None if shipped else folder / RESULTS
    if args.out is not None:  # asked for explicitly: refuse before computing anything
        refuse_inside_pretrained(args.out)
        if args.out.is_dir():
            raise CLIError(f"--out {args.out} is a folder; --out names a results file")
        reason = unwritable_reason(args.out.parent)
        if reason is not None:
            raise CLIError(f"cannot write --out {args.out}: {reason}")
        _read_results(args.out)
    model, cfg = runs.load(folder)
    data_name, data, own = _load_data(args, cfg, shipped)
    from onelip.cli.train import run_data

    x, y = run_data(cfg, data, args.split, own_data=own)  # CLIError: other classes or shape
    from onelip.data import as_float

    x = as_float(x)  # folder: and npz: pixels are uint8 (0..255): [0, 1], as fit trains on
    if x.shape[0] == 0:
        raise CLIError(f"the test split of {data_name} is empty: nothing to certify; pass "
                       "--data with a data set that has test points")
    eps = sorted(set(args.eps))
    attack = (certify.AttackSettings(points=args.attack_points, steps=args.attack_steps)
              if args.attack else None)
    report = certify.evaluate(model, x, y, eps=eps, attack=attack)
    result: dict = {"data": data_name, "split": args.split, **report.to_dict()}
    key, settings = _settings(data_name, eps, args)
    result = {"settings": settings, **result}

    n_test = report.n
    table = Table(title=f"{args.run} on {data_name} {args.split} ({n_test} points), "
                        f"L ≤ {report.lipschitz_bound:.4f}")
    table.add_column("ε")
    kind = "|f|/L" if report.binary else "margin/(√2 L)"
    last_layer, att = report.certified_last_layer, report.attack
    table.add_column(f"certified ({kind})\nall {n_test} pts")
    if last_layer is not None:
        table.add_column(f"certified (last layer)\nall {n_test} pts")
    if att is not None:  # both on the attacked points, so that they compare
        table.add_column(f"certified ({kind})\nfirst {att.points} pts (attacked)")
        table.add_column(f"empirical robust\nfirst {att.points} pts (attacked)")
    table.add_row("0 (clean)", f"{report.clean:.2%}",
                  *([f"{report.clean:.2%}"] if last_layer is not None else []),
                  *(2 * [f"{att.clean_same_points:.2%}"] if att is not None else []))
    for e in eps:
        row = [f"{e:g}", f"{report.certified[e]:.2%}"]
        if last_layer is not None:
            row.append(f"{last_layer[e]:.2%}")
        if att is not None:
            row.append(f"{att.certified_same_points[e]:.2%}")
            row.append(f"{att.robust[e]:.2%}")
        table.add_row(*row)
    console = Console(width=120)
    console.print(table)
    if own and args.split != "test":
        console.print("these points are the run's validation split: held out from training, "
                      "not a test set" if args.split == "val" else
                      "these points are the run's training data: not held out")
    if att is not None and att.median_adv_over_radius is not None:
        console.print(f"attack on {att.points} points: median(adversarial norm / certified "
                      f"radius) = {att.median_adv_over_radius:.3f} (1 = tight); "
                      f"certificates violated: {att.violations}")
    if target is None:
        console.print(f"results not saved: {args.run} is read-only (pass --out FILE to keep "
                      "them)")
    else:
        _write(target, key, result, explicit=args.out is not None)
    return 0


def _load_data(args: argparse.Namespace, cfg: dict, shipped: bool):
    """(name, DataSplit, own) of the data to certify on: ``--data`` or the run's own.

    ``own`` is True when the data are those the run was trained on: given the same way, the
    same folder or file spelled otherwise (``folder:D/``, ``folder:./D/.``, a link to D:
    compared resolved), or a copy (the same samples and labels: :func:`onelip.data.
    split_fingerprint`). Their test split is the only held-out part; ``--split val`` is carved
    again only if the data still hold the samples recorded at training (else a one-line
    error naming the change; a warning where the run records no fingerprint).
    """
    from onelip import data as datasets

    recorded, splits = cfg.get("data", {}), cfg.get("splits", {})
    trained_on = recorded.get("name")
    name = args.data or trained_on
    if name is None and shipped:
        classes = splits.get("classes") or []
        shape = "×".join(str(s) for s in splits.get("input_shape", []))
        raise CLIError(f"{args.run} ships no data: pass --data folder:DIR, an image folder "
                       f"of {shape or 'its'} images in the classes {', '.join(classes)}")
    if name is None:
        raise CLIError("the run does not say which data it was trained on; pass --data")
    source = data_source(name)
    # where the run's data were (recorded resolved; older runs: the name, from here)
    trained_at = splits.get("source") or data_source(trained_on)
    same_place = source is not None and source == trained_at and \
        name.partition(":")[0] == (trained_on or "").partition(":")[0]
    own = args.data is None or name == trained_on or same_place
    resize = _resize(args, recorded, name, own)
    if own:
        kwargs = {k: v for k, v in recorded.items() if k != "name"}
    else:
        kwargs = {"resize": resize} if resize is not None else {}
    data = datasets.load(name, **kwargs)
    fraction = float(cfg.get("train", {}).get("val_fraction") or 0.0)
    seed = int(splits.get("val_seed", datasets.VAL_SEED))
    record = splits.get("fingerprint")
    copy = False
    if not own and isinstance(record, dict) and len(data.y_train) == record.get("n"):
        now = datasets.split_fingerprint(data, fraction, seed=seed)
        if all(datasets.fingerprint_change(record, now, part=p) is None
               for p in ("train", "val") if p in record):
            own = copy = True
    if not own:
        return name, data, False
    what = "a copy of the data" if copy else "the data"
    if args.split == "test" and len(data.x_test) == 0:
        where = "" if name == trained_on else f" ({trained_on})"
        raise CLIError(f"the test split of {name} is empty: it is {what} the run was trained "
                       f"on{where}, all of it the run's training and validation data, not "
                       "held-out test data; pass --split val (the run's validation split), or "
                       "--data a set the run never saw")
    if args.split in ("val", "train") and not (args.split == "val" and fraction <= 0):
        _check_unchanged(args, name, data, record, fraction, seed, splits.get("classes"))
    if copy:
        print(f"onelip: note: {name} holds the data the run was trained on (the same "
              f"samples and labels as {trained_on}): its {args.split} split is the run's",
              file=sys.stderr)
    return (name if copy else trained_on or name), data, True


def _check_unchanged(args: argparse.Namespace, name: str, data, record, fraction: float,
                     seed: int, classes) -> None:
    """A CLIError naming the change if ``data`` no longer hold the samples the run's
    ``--split`` (val or train) was carved from; a warning if the run records nothing."""
    from onelip import data as datasets

    what = "validation" if args.split == "val" else "training"
    if not isinstance(record, dict):
        warn(f"{args.run} records no fingerprint of its training data (trained before onelip "
             f"recorded one): its {what} split is carved again from what {name} holds now "
             "and cannot be verified")
        return
    now = datasets.split_fingerprint(data, fraction, seed=seed)
    unit = "image" if name.startswith(("folder:", "npz:")) else "sample"
    change = datasets.fingerprint_change(record, now, part=args.split, classes=classes,
                                         unit=unit)
    if change is not None:
        raise CLIError(f"{name} changed since the run was trained: {change}; the run's "
                       f"{what} split cannot be carved from it as it was: restore the data, or "
                       "certify on --data a set the run never saw")


def _resize(args: argparse.Namespace, recorded: dict, name: str, own: bool):
    """The (H, W) to resize the images of ``name`` to: ``--resize``, else the run's own for
    its data and for another image folder; None for no resizing."""
    given = list(args.resize) if getattr(args, "resize", None) is not None else None
    trained = recorded.get("resize")
    if given is not None and not name.startswith("folder:"):
        raise CLIError(f"--resize is for image folders (folder:DIR), not {name}")
    if own:
        if given is not None and given != (list(trained) if trained else None):
            was = (f"resized to {trained[0]} {trained[1]}" if trained else
                   "at the images' own size")
            raise CLIError(f"--resize {given[0]} {given[1]}: the run was trained on {name} "
                           f"{was}; leave --resize out to certify the images it was trained on")
        return trained
    if given is not None:
        return given
    return list(trained) if trained and name.startswith("folder:") else None


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

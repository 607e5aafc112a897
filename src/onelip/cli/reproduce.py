# SPDX-License-Identifier: MIT
"""``onelip reproduce CLAIM [--quick] --out DIR``: the paper's claims and experiments.

    onelip reproduce expressivity --quick --out runs/claims
    onelip reproduce pareto --quick --data folder:cifar10/train --out runs/claims
    onelip reproduce all --data folder:DIR --out docs/claims  # full run, writes report.md
    onelip reproduce all --redraw --out docs/claims # figures + report from results.json only
    onelip reproduce pareto --data folder:DIR --out docs/claims --budget 9m  # part of it
    onelip reproduce pareto --data folder:DIR --out docs/claims/pareto-cpu --point-budget 20m \
        --jobs 2 --add-point benchmarks/models/cifar10-hour.json   # Fig. 3 on the CPU

The work is done by :mod:`onelip.experiments.report`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from onelip.cli._common import CLIError, duration, positive_int, set_item, typed_value

__all__ = ["add_arguments", "run"]

_CHOICES = ("expressivity", "optimal-transport", "generalization", "tradeoff", "pareto",
            "consistency", "memorization", "snowflake", "all")
_NEEDS_DATA = ("pareto", "consistency", "memorization")
"""Claims whose full protocol trains on a user's images (CIFAR-10): ``--data`` is required."""
_FIELD_FLAGS = {"point_budget": "--point-budget", "jobs": "--jobs", "saved_points": "--add-point"}
"""Config fields with a flag of their own (a claim without the field refuses the flag)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("claim", help=f"one of {', '.join(_CHOICES)}")
    p.add_argument("--quick", action="store_true",
                   help="tiny presets: each claim in under a minute (not evidence)")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for results.json, report.md, figures and cached sub-runs")
    p.add_argument("--redraw", action="store_true",
                   help="only redraw figures and report.md from DIR/results.json")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--data", default=None, metavar="NAME",
                   help="images for the claims that take them (pareto, consistency, "
                        "memorization), e.g. folder:DIR for CIFAR-10 as image files; replaces "
                        "the preset's data (with --quick too: the quick settings on your data)")
    p.add_argument("--set", dest="config_set", action="append", default=[],
                   metavar="FIELD=VALUE",
                   help="a field of one claim's config on top of its preset (full, or "
                        "--quick), repeatable, e.g. `consistency --quick --set taus=0.5,4 "
                        "--set min_steps=1000` (lists: comma-separated; none: None); "
                        "recorded in the report's mode line and configuration")
    p.add_argument("--budget", type=duration, default=None, metavar="DURATION",
                   help="start no sub-run after this much wall time (e.g. 540, 9m, 2h; 0: "
                        "report from the cached sub-runs alone). The report names every "
                        "sub-run left out as not run; the same command later continues from "
                        "the cache")
    p.add_argument("--point-budget", type=duration, default=None, metavar="DURATION",
                   help="pareto: the CPU time (of its own process) every sub-run trains for, "
                        "e.g. 20m; the tables state the epochs it bought")
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="pareto: sub-runs at once, each in a process of its own (one torch "
                        "thread each by default)")
    p.add_argument("--add-point", dest="add_point", action="append", default=[],
                   metavar="JSON",
                   help="pareto: a saved network's figures as one more onelip point (the JSON "
                        "beside its weights, e.g. benchmarks/models/cifar10-hour.json); "
                        "repeatable")


def _print_verdicts(name: str, results: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    stats = results.get("subruns", {})
    verdicts = results.get("verdicts", [])
    agree = sum(v["agree"] for v in verdicts)
    left = len(stats.get("not_run", []))
    missing = "" if not left else (
        f", [bold]{left} not run[/] (time budget)" if not results.get("stopped") else
        ", [bold]stopped by the time budget: not reported[/]")
    table = Table(title=f"{name} ({results.get('mode')}): {agree}/{len(verdicts)} agree; "
                        f"sub-runs: {stats.get('ran', 0)} ran, {stats.get('cached', 0)} cached"
                        f"{missing}", show_lines=True)
    for col in ("check", "research says", "we measured", "agree"):
        table.add_column(col, overflow="fold")
    for v in verdicts:
        table.add_row(escape(v["claim"]), escape(v["research"]), escape(v["measured"]),
                      "yes" if v["agree"] else "[bold red]no[/]")
    Console(width=140).print(table)


def _overrides(names: list[str], args: argparse.Namespace) -> dict:
    """``--set FIELD=VALUE`` items → {field: value}, typed from the preset's value; checked
    by building the config (a bad value fails here, before any training)."""
    import dataclasses

    from onelip.experiments import report

    flags = {field: flag for field, flag in _FIELD_FLAGS.items() if _given(args, field)}
    if len(names) != 1:
        what = ", ".join(flags.values()) or "--set"
        raise CLIError(f"{what} sets one claim's config: run the claims one at a time "
                       f"(onelip reproduce CLAIM {what} ...)")
    cfg = report.claim_config(names[0], quick=args.quick, data=args.data)
    fields = {f.name for f in dataclasses.fields(cfg)}
    out: dict = {}
    for field, flag in flags.items():
        if field not in fields:
            raise CLIError(f"{flag}: {names[0]} has no such setting (only pareto takes "
                           f"{flag})")
        out[field] = tuple(args.add_point) if field == "saved_points" else \
            getattr(args, field)
    for item in args.config_set:
        key, value = set_item(item)
        if key not in fields:
            raise CLIError(f"{names[0]} has no config field {key!r}; fields: "
                           f"{', '.join(sorted(fields))}")
        out[key] = typed_value(key, value, getattr(cfg, key))
    try:
        report.claim_config(names[0], quick=args.quick, data=args.data, overrides=out)
    except (TypeError, ValueError) as e:
        used = [*flags.values(), *(["--set"] if args.config_set else [])]
        raise CLIError(f"{', '.join(used)}: {e}") from None
    return out


def _given(args: argparse.Namespace, field: str) -> bool:
    """Whether the flag of config field ``field`` (:data:`_FIELD_FLAGS`) was given."""
    if field == "saved_points":
        return bool(getattr(args, "add_point", []))
    return getattr(args, field, None) is not None


def _check_classes(name: str, need: list[str]) -> None:
    """A one-line CLIError when ``--data`` is an image folder of one class: the claims that
    take data train classifiers (such a folder gave 100 % accuracies, or a training that
    "diverged", blaming the learning rate). Its classes are its sub-folders, read without
    decoding an image (an npz file of one label is refused by its loader)."""
    from onelip.data.images import folder_classes

    prefix, _, arg = name.partition(":")
    classes = folder_classes(arg) if prefix == "folder" else []
    if len(classes) == 1:
        raise CLIError(f"--data {name} has one class ({classes[0]}): {', '.join(need)} "
                       "train classifiers, which need two classes or more (one sub-folder of "
                       "images per class)")


def run(args: argparse.Namespace) -> int:
    """Reproduce a claim of the paper (or all) and write DIR/report.md."""
    from onelip._io import unwritable_reason
    from onelip.experiments import report

    if args.claim not in _CHOICES:
        raise CLIError(f"unknown claim {args.claim!r}; expected one of {', '.join(_CHOICES)}")
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out} is a file; --out names a folder (for results.json, "
                       "report.md, figures and sub-runs)")
    reason = unwritable_reason(args.out)
    if reason is not None:
        raise CLIError(f"cannot write into --out {args.out}: {reason}")
    if args.redraw:
        path = report.redraw(args.out)
        print(f"redrew figures and {path} from {args.out / report.RESULTS}")
        return 0
    names = list(report.CLAIMS) if args.claim == "all" else [args.claim]
    need = [n for n in names if n in _NEEDS_DATA]
    if need and not args.quick and args.data is None:
        raise CLIError(f"{', '.join(need)}: the full protocol trains on CIFAR-10: pass --data "
                       "folder:DIR (the training images as an image folder), or use --quick")
    if need and args.data is not None:
        _check_classes(args.data, need)
    given = args.config_set or any(_given(args, f) for f in _FIELD_FLAGS)
    overrides = _overrides(names, args) if given else None
    deadline = None if args.budget is None else time.monotonic() + args.budget
    for name in names:
        results = report.run_claim(name, quick=args.quick, out=args.out,
                                   progress=not args.quiet, data=args.data,
                                   overrides=overrides, deadline=deadline)
        _print_verdicts(name, results)
    print(f"report: {args.out / report.REPORT}", file=sys.stdout)
    return 0

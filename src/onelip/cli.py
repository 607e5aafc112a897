# SPDX-License-Identifier: MIT
"""The ``onelip`` command: thin and typed; every command calls a library function.

    onelip train   --data mnist-5k --model mlp --loss hinge --margin 1 --epochs 20 --out runs/x
    onelip certify runs/x --eps 0.5 1.0 1.58 [--attack]
    onelip inspect runs/x
    onelip export  runs/x --format torch|onnx|safetensors --out FILE   (docs/export.md)
    onelip train   ... --nproc 4    (or torchrun -m onelip train ...; docs/distributed.md)

Errors (unknown data set, missing run, corrupt weights, bad numbers, unknown options) print
one line ``onelip: error: ...`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

__all__ = ["main"]

# Subcommands register here: name -> (add_arguments, run).
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], int]]] = {}


class CLIError(Exception):
    """A user error: printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def command(name: str):
    def deco(pair):
        _COMMANDS[name] = pair
        return pair
    return deco


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}")
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s}")
    return v


def _positive_float(s: str) -> float:
    v = _nonneg_float(s)
    if v == 0:
        raise argparse.ArgumentTypeError("expected a positive number, got 0")
    return v


# ==== train =================================================================================


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="mnist-5k", help="data set name (see onelip.data)")
    p.add_argument("--model", default="mlp", help="architecture (see onelip.models)")
    p.add_argument("--layer", default=None, help="'ortho' or 'spectral' linear layers")
    p.add_argument("--width", type=_positive_int, default=None,
                   help="hidden width (mlp), first-stage channels (convnet, lipresnet)")
    p.add_argument("--depth", type=_positive_int, default=None,
                   help="hidden layers (mlp), convolutions per stage (convnet)")
    p.add_argument("--activation", default=None, help="maxmin, groupsort, fullsort, abs")
    p.add_argument("--set", dest="model_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any field of the model's config, repeatable, e.g. --set stages=2 "
                        "--set hidden=64 --set downsample=l2pool (lists: comma-separated); "
                        "`--set preset=tutorial` gives convnet the deel-torchlip tutorial's size")
    p.add_argument("--loss", default="hinge", choices=["kr", "hinge", "hkr", "ce"])
    p.add_argument("--alpha", type=_nonneg_float, default=10.0, help="HKR weight of the hinge")
    p.add_argument("--margin", type=_nonneg_float, default=1.0, help="hinge margin m (full)")
    p.add_argument("--tau", type=_positive_float, default=8.0, help="τ of cross-entropy")
    p.add_argument("--hinge-mode", default="top2", choices=["top2", "one_vs_all"])
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "constant"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-samples", type=_positive_int, default=None,
                   help="points for the 2-D toy sets")
    p.add_argument("--out", required=True, type=Path, help="run folder to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--nproc", type=_positive_int, default=1,
                   help="data-parallel processes on this machine (gloo on CPU, NCCL on CUDA); "
                        "see docs/distributed.md for torchrun and several nodes")


def _model_fields(name: str, args: argparse.Namespace, data) -> dict:
    from onelip import models

    fields = models.config_fields(name)
    out_dim = 1 if data.num_classes == 2 else data.num_classes
    kw: dict = {}
    if "in_features" in fields:
        kw["in_features"] = int(data.x_train.shape[1])
    if "input_shape" in fields:
        kw["input_shape"] = list(data.input_shape)
    kw["num_outputs"] = out_dim
    preset, explicit = _parse_model_set(name, args.model_set, fields)
    kw.update(preset)  # then the flags and the other --set fields override the preset's
    if args.layer is not None:
        kw["layer"] = args.layer
    if args.activation is not None:
        kw["activation"] = args.activation
    if "width" in fields:  # convolutional models: --width/--depth set their own fields
        if args.width is not None:
            kw["width"] = args.width
        if args.depth is not None and "depth" in fields:
            kw["depth"] = args.depth
    elif "hidden" in fields and (args.width is not None or args.depth is not None):
        kw["hidden"] = [args.width or 512] * (args.depth or 3)
    kw.update(explicit)
    return kw


def _parse_model_set(name: str, items: list[str], fields: set[str]) -> tuple[dict, dict]:
    """``--set FIELD=VALUE`` → (preset fields, explicit fields), typed from the dataclass
    defaults. Presets come first whatever their place on the command line: ``--width`` and
    ``--set width=...`` override them."""
    from onelip import models

    defaults = models.config_defaults(name)
    preset: dict = {}
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--set expects FIELD=VALUE, got {item!r}")
        if key == "preset":
            presets = models.presets(name)
            if value not in presets:
                raise CLIError(f"unknown preset {value!r} for model {name!r}; known: "
                               f"{', '.join(sorted(presets)) or 'none'}")
            preset.update(presets[value])
            continue
        if key not in fields:
            raise CLIError(f"model {name!r} has no config field {key!r}; fields: "
                           f"{', '.join(sorted(fields))}")
        out[key] = _typed(key, value, defaults.get(key))
    return preset, out


def _typed(key: str, value: str, default):
    """Parse ``value`` like ``default`` (bool, int, float, str, or a comma-separated tuple)."""
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, (tuple, list)):
            kind = type(default[0]) if default else int
            return tuple(kind(v) for v in value.split(",") if v.strip())
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise CLIError(f"--set {key}={value}: expected a value like {default!r}") from None
    return value


def _train(args: argparse.Namespace) -> int:
    from onelip import checkpoint, data as datasets, losses, models
    from onelip.train import TrainConfig, fit

    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.force:
        raise CLIError(f"{out} already exists; choose another --out or pass --force to overwrite")
    from onelip import distributed

    if args.nproc > 1 and not distributed.in_worker():  # re-run in N processes (torchrun-like)
        return distributed.launch(distributed.without_nproc(args.argv), args.nproc)
    extra = {"n_samples": args.n_samples} if args.n_samples else {}
    data = datasets.load(args.data, **extra)
    model_kw = _model_fields(args.model, args, data)
    import torch

    torch.manual_seed(args.seed)  # same seed, same initial weights (and on every rank)
    model, model_cfg = models.build(args.model, **model_kw)
    loss = losses.build_loss(args.loss, num_classes=model_kw["num_outputs"], alpha=args.alpha,
                             margin=args.margin, tau=args.tau, hinge_mode=args.hinge_mode)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, schedule=args.schedule, seed=args.seed,
                      device=args.device)
    t0 = time.perf_counter()
    with distributed.process_group(cfg.device):
        history = fit(model, data, loss, cfg, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    if not distributed.is_main():  # only rank 0 writes files and prints
        return 0
    if out.exists() and args.force:
        shutil.rmtree(out)
    from dataclasses import asdict

    checkpoint.save(model.cpu(), out, model_name=args.model, model_config=model_cfg, extra={
        "data": {"name": args.data, **extra},
        "loss": {"name": args.loss, "alpha": args.alpha, "margin": args.margin,
                 "tau": args.tau, "hinge_mode": args.hinge_mode},
        "train": asdict(cfg),
    })
    metrics = {"history": history, "train_seconds": seconds,
               "final": history[-1] if history else {}}
    checkpoint.write_json(out / "metrics.json", metrics)
    last = history[-1]
    print(f"trained {args.model} on {args.data} in {seconds:.1f}s: train acc "
          f"{last['train_acc']:.4f}, test acc {last['test_acc']:.4f} -> {out}")
    return 0


command("train")((_train_args, _train))


# ==== certify ===============================================================================


def _certify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder written by `onelip train`")
    p.add_argument("--data", default=None, help="data set (default: the one trained on)")
    p.add_argument("--eps", type=_nonneg_float, nargs="+", default=[0.5, 1.0, 1.58])
    p.add_argument("--attack", action="store_true", help="also run the L2 PGD attack")
    p.add_argument("--attack-points", type=_positive_int, default=200)
    p.add_argument("--attack-steps", type=_positive_int, default=30)


def _certify(args: argparse.Namespace) -> int:
    import torch

    from onelip import certify, checkpoint, data as datasets
    from rich.console import Console
    from rich.table import Table

    model, cfg = checkpoint.load(args.run)
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
    checkpoint.write_json(args.run / "certify.json", result)

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


command("certify")((_certify_args, _certify))


# ==== inspect ===============================================================================


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder written by `onelip train`")
    p.add_argument("--points", type=_positive_int, default=64,
                   help="test points for the Lipschitz estimate")


def _inspect(args: argparse.Namespace) -> int:
    from onelip import certify, checkpoint, data as datasets

    model, cfg = checkpoint.load(args.run)
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


command("inspect")((_inspect_args, _inspect))

from onelip import _cli_reproduce  # noqa: E402,F401  (registers `onelip reproduce`)

from onelip._cli_export import export_args, export_run  # noqa: E402

command("export")((export_args, export_run))


# ==== main ==================================================================================


def build_parser() -> argparse.ArgumentParser:
    from onelip import __version__

    parser = _Parser(prog="onelip", description="Provably robust 1-Lipschitz networks.")
    parser.add_argument("--version", action="version", version=f"onelip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (add, _) in _COMMANDS.items():
        add(sub.add_parser(name, help=(_COMMANDS[name][1].__doc__ or name)))
    return parser


def main(argv: list[str] | None = None) -> int:
    from onelip.checkpoint import CheckpointError

    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return _COMMANDS[args.command][1](args)
    except CLIError as e:
        print(f"onelip: error: {e}", file=sys.stderr)
    except (CheckpointError, ValueError, FileNotFoundError, IndexError, TypeError,
            FloatingPointError) as e:
        print(f"onelip: error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("onelip: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

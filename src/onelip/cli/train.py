# SPDX-License-Identifier: MIT
"""``onelip train``: train a model on a data set and write a run folder."""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from onelip.cli._common import CLIError, device, nonneg_float, positive_float, positive_int
from onelip.cli.launch import launch, without_nproc

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="mnist-5k", help="data set: {datasets}")
    p.add_argument("--model", default="mlp", help="architecture: {models}")
    p.add_argument("--layer", default=None, help="'ortho' or 'spectral' linear layers")
    p.add_argument("--width", type=positive_int, default=None,
                   help="hidden width (mlp), first-stage channels (convnet, lipresnet)")
    p.add_argument("--depth", type=positive_int, default=None,
                   help="hidden layers (mlp), convolutions per stage (convnet)")
    p.add_argument("--activation", default=None, help="maxmin, groupsort, fullsort, abs")
    p.add_argument("--set", dest="model_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any field of the model's config, repeatable, e.g. --set stages=2 "
                        "--set hidden=64 --set downsample=l2pool (lists: comma-separated); "
                        "`--set preset=tutorial` gives convnet the deel-torchlip tutorial's size")
    p.add_argument("--loss", default="hinge", choices=["kr", "hinge", "hkr", "ce"],
                   help="Kantorovich-Rubinstein, hinge, HKR or cross-entropy")
    p.add_argument("--alpha", type=nonneg_float, default=10.0, help="HKR weight of the hinge")
    p.add_argument("--margin", type=nonneg_float, default=1.0, help="hinge margin m (full)")
    p.add_argument("--tau", type=positive_float, default=8.0, help="τ of cross-entropy")
    p.add_argument("--hinge-mode", default="top2", choices=["top2", "one_vs_all"],
                   help="multiclass hinge on the top-2 margin or one-vs-all")
    p.add_argument("--epochs", type=positive_int, default=20, help="passes over the data")
    p.add_argument("--batch-size", type=positive_int, default=128, help="samples per step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                   help="AdamW or SGD with momentum 0.9")
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "constant"],
                   help="learning-rate schedule")
    p.add_argument("--seed", type=int, default=0,
                   help="initial weights and data order: same seed, same weights")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--n-samples", type=positive_int, default=None,
                   help="points for the 2-D toy sets")
    p.add_argument("--out", required=True, type=Path,
                   help="run folder to write (a new or empty folder)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing run folder (only a run folder: never another "
                        "folder); the old run is deleted once the new one is complete")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--nproc", type=positive_int, default=1,
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


def run(args: argparse.Namespace) -> int:
    """Train a 1-Lipschitz network and write a run folder."""
    import torch

    from onelip import data as datasets
    from onelip import distributed, losses, models, runs
    from onelip.train import TrainConfig, fit

    out: Path = args.out
    # before any training step: a place a run may not go, or cannot be written
    runs.check_target(out, overwrite=args.force, flag="--force", option="--out")
    if args.nproc > 1 and not distributed.in_worker():  # re-run in N processes (torchrun-like)
        return launch(without_nproc(args.argv), args.nproc)
    extra = {"n_samples": args.n_samples} if args.n_samples else {}
    data = datasets.load(args.data, **extra)
    model_kw = _model_fields(args.model, args, data)
    torch.manual_seed(args.seed)  # same seed, same initial weights (and on every rank)
    model, model_cfg = models.build(args.model, **model_kw)
    loss = losses.build_loss(args.loss, num_classes=model_kw["num_outputs"], alpha=args.alpha,
                             margin=args.margin, tau=args.tau, hinge_mode=args.hinge_mode)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, schedule=args.schedule, seed=args.seed,
                      device=args.device)
    main = distributed.is_main()  # only rank 0 writes files and prints
    # The run is written into a temporary folder beside --out (created now, so that an
    # unwritable place fails before training) and renamed into place when complete.
    with (runs.new_run(out, overwrite=args.force, flag="--force", option="--out") if main
          else nullcontext()) as folder:
        t0 = time.perf_counter()
        with distributed.process_group(cfg.device):
            history = fit(model, data, loss, cfg, progress=not args.quiet)
        seconds = time.perf_counter() - t0
        if not main:
            return 0
        runs.write_model(folder, model.cpu(), model_name=args.model, model_config=model_cfg,
                         extra={
                             "data": {"name": args.data, **extra},
                             "loss": {"name": args.loss, "alpha": args.alpha,
                                      "margin": args.margin, "tau": args.tau,
                                      "hinge_mode": args.hinge_mode},
                             "train": asdict(cfg),
                         })
        metrics = {"history": history, "train_seconds": seconds,
                   "final": history[-1] if history else {}}
        runs.write_json(folder / "metrics.json", metrics)
    last = history[-1]
    print(f"trained {args.model} on {args.data} in {seconds:.1f}s: train acc "
          f"{last['train_acc']:.4f}, test acc {last['test_acc']:.4f} -> {out}")
    return 0

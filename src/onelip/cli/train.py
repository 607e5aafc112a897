# SPDX-License-Identifier: MIT
"""``onelip train``: train a model on a data set and write a run folder.

The run is written into ``.NAME.partial`` beside ``--out`` with a checkpoint after every epoch
(:func:`onelip.runs.resumable_run`) and renamed into place when complete; ``onelip train
--resume NAME`` continues a killed run (same final weights, bit for bit on CPU), and ``onelip
train --resume NAME --epochs N`` continues a finished one from its saved optimiser and schedule
state (``--force`` to replace it, or ``--out NEW``). Per-epoch metrics are measured on a
validation split (``--val-fraction``), never on the test split (``--eval-test`` measures it once
at the end).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from onelip.cli._common import (
    CLIError,
    LazyDefault,
    Parser,
    data_source,
    device,
    eps_float,
    error_text,
    nonneg_float,
    positive_float,
    positive_int,
    set_item,
    typed_value,
)
from onelip.cli.launch import launch, without_nproc

__all__ = ["add_arguments", "run", "run_data"]

# onelip train's options that are library arguments of other names: the resume rule
# (onelip.train.resume) names the library's; the TrainConfig fields have their own names.
_AS_LIBRARY = {"out": "checkpoint_dir", "resume": "resume_from", "force": "overwrite",
               "quiet": "progress", "eval_test": "final_test", "nproc": "world_size"}


def _default(name: str) -> LazyDefault:
    """The default of :class:`~onelip.train.TrainConfig`'s field ``name`` (read when needed)."""

    def read():
        from dataclasses import fields

        from onelip.train import TrainConfig

        return next(f.default for f in fields(TrainConfig) if f.name == name)

    return LazyDefault(read)


def _hinge_mode_default() -> LazyDefault:
    """The default ``mode`` of :class:`~onelip.losses.MulticlassHingeLoss` (read when needed)."""

    def read():
        import inspect

        from onelip.losses import MulticlassHingeLoss

        return inspect.signature(MulticlassHingeLoss).parameters["mode"].default

    return LazyDefault(read)


def fraction(s: str) -> float:
    v = nonneg_float(s)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {s}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="mnist-5k", help="data set: {datasets}")
    p.add_argument("--model", default="mlp", help="architecture: {models}")
    p.add_argument("--layer", default=None,
                   help="layer family: {conv_layers} (convolutional models); {dense_layers} "
                        "(mlp); docs/layers.md")
    p.add_argument("--width", type=positive_int, default=None,
                   help="hidden width (mlp), first-stage channels (convnet, lipresnet)")
    p.add_argument("--depth", type=positive_int, default=None,
                   help="hidden layers (mlp), convolutions per stage (convnet)")
    p.add_argument("--activation", default=None, help="maxmin, groupsort, fullsort, abs, betaabs")
    p.add_argument("--set", dest="model_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any field of the model's config, repeatable, e.g. --set stages=2 "
                        "--set hidden=64 --set downsample=l2pool (lists: comma-separated); "
                        "`--set preset=tutorial` gives convnet the deel-torchlip tutorial's size")
    p.add_argument("--loss", default="hinge",
                   choices=["kr", "hinge", "hkr", "ce", "offset-ce", "emma", "la"],
                   help="Kantorovich-Rubinstein, hinge, HKR, cross-entropy, or the records' "
                        "margin-aware losses: offset cross-entropy, EMMA, logit annealing "
                        "(docs/losses.md)")
    p.add_argument("--alpha", type=nonneg_float, default=10.0, help="HKR weight of the hinge")
    p.add_argument("--margin", type=nonneg_float, default=1.0, help="hinge margin m (full)")
    p.add_argument("--tau", type=positive_float, default=8.0, help="τ of cross-entropy")
    p.add_argument("--hinge-mode", default=_hinge_mode_default(), choices=["top2", "one_vs_all"],
                   help="multiclass hinge on the top-2 margin or one-vs-all")
    p.add_argument("--epsilon", type=eps_float, default=36 / 255,
                   help="ε of offset-ce, emma, la: the radius to certify, in input units "
                        "(default 36/255)")
    p.add_argument("--offset", type=nonneg_float, default=None,
                   help="offset ξ of the true logit (offset-ce: default 2·√2·L·ε, L the "
                        "network's certified bound; la: 2.0)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="temperature T of offset-ce (default 0.25), emma (1), la (0.75)")
    p.add_argument("--gamma", type=nonneg_float, default=5.0,
                   help="focal exponent γ of la")
    p.add_argument("--epsilon-ramp", type=nonneg_float, default=_default("epsilon_ramp"),
                   metavar="EPOCHS",
                   help="ramp the loss's ε (offset-ce: its offset) from 0 over this many "
                        "epochs (offset-ce, emma, la)")
    # the training options' defaults are TrainConfig's (_Default); their choices its
    p.add_argument("--epochs", type=positive_int, default=_default("epochs"),
                   help="passes over the data")
    p.add_argument("--batch-size", type=positive_int, default=_default("batch_size"),
                   help="samples per step")
    p.add_argument("--lr", type=positive_float, default=_default("lr"), help="peak learning rate")
    p.add_argument("--optimizer", default=_default("optimizer"),
                   choices=["adam", "sgd", "nesterov", "nadam"],
                   help="AdamW, SGD with momentum 0.9, SGD with Nesterov momentum 0.9, or "
                        "NAdam")
    p.add_argument("--weight-decay", type=nonneg_float, default=_default("weight_decay"),
                   help="decoupled weight decay (adam, nadam) or L2 (sgd, nesterov)")
    p.add_argument("--schedule", default=_default("schedule"),
                   choices=["onecycle", "cosine", "constant"], help="learning-rate schedule")
    p.add_argument("--seed", type=int, default=_default("seed"),
                   help="initial weights and data order: same seed, same weights")
    p.add_argument("--device", type=device, default=_default("device"),
                   help="cpu, cuda, cuda:N or mps")
    p.add_argument("--n-samples", type=positive_int, default=None,
                   help="points for the 2-D toy sets")
    p.add_argument("--val-fraction", type=fraction, default=_default("val_fraction"),
                   help="carve this fraction of the training data as a validation split "
                        "(fixed seed, stratified) and measure every epoch on it")
    p.add_argument("--augment", default=None, metavar="LIST",
                   help="per-batch augmentation of images on the device: crop (pad 4, random "
                        "crop), flip (horizontal), comma-separated, e.g. crop,flip")
    p.add_argument("--resize", type=positive_int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize the images of folder:DIR to H x W")
    p.add_argument("--layout", type=str.upper, choices=("NHWC", "NCHW"), default=None,
                   help="the layout of the images of npz:FILE, channels last (NHWC) or first "
                        "(NCHW), where the shape leaves it open (e.g. 4x4 RGB images)")
    p.add_argument("--warmup-epochs", type=nonneg_float, default=_default("warmup_epochs"),
                   help="learning-rate warm-up in epochs (onecycle: its rising phase, 0 = 30 "
                        "%% of the run; cosine/constant: a linear ramp)")
    p.add_argument("--grad-clip", type=nonneg_float, default=_default("grad_clip"),
                   help="clip the gradient norm to this value (0: off)")
    p.add_argument("--amp", action="store_true", default=_default("amp"),
                   help="bf16 autocast of the forward on CUDA, or on a CPU with AVX-512 BF16 "
                        "or AMX (refused elsewhere); certificates stay float32")
    p.add_argument("--compile", action="store_true", default=_default("compile"),
                   help="train through torch.compile")
    p.add_argument("--eval-test", action="store_true",
                   help="measure the test split once, after training (never per epoch)")
    p.add_argument("--out", default=None, type=Path,
                   help="run folder to write (a new or empty folder); required unless "
                        "--resume")
    p.add_argument("--resume", default=None, type=Path, metavar="RUN",
                   help="continue the killed run RUN from its last checkpoint (the other "
                        "options may be left out; those given must be the original's), or "
                        "continue a finished run RUN for more --epochs (into --out NEW, or "
                        "RUN itself with --force)")
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
        key, value = set_item(item)
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
        out[key] = typed_value(key, value, defaults.get(key))
    return preset, out


def _given(argv: list[str]) -> set[str]:
    """The destinations of the options given explicitly on the command line ``argv``
    (``["train", ...]``)."""
    p = Parser(prog="onelip train")
    add_arguments(p)
    for action in p._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    rest = list(argv)
    if "train" in rest:
        rest = rest[rest.index("train") + 1:]
    try:
        ns, _ = p.parse_known_args(rest)
    except CLIError:
        return set()
    return set(vars(ns))


def _jsonable(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _recorded_args(args: argparse.Namespace) -> dict:
    return {k: _jsonable(v) for k, v in vars(args).items() if k not in ("argv", "command")}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _resume_args(args: argparse.Namespace, out: Path):
    """(args merged with the original run's, its training state, "partial" or "finished")."""
    from onelip import runs
    from onelip.train import load_state, resume

    part = runs.partial_path(out)
    if (part / runs.CHECKPOINT).is_file():
        source, kind = part, "partial"
    elif args.resume is not None and (Path(args.resume) / runs.CHECKPOINT).is_file() \
            and runs.is_run_folder(args.resume):
        source, kind = Path(args.resume), "finished"
    elif args.resume is not None and runs.is_run_folder(args.resume):
        raise CLIError(f"{args.resume} holds no training state ({runs.CHECKPOINT}: it was "
                       "written before runs kept one); train it again")
    else:
        raise CLIError(f"nothing to resume at {args.resume}: no unfinished run ({part}) and no "
                       "finished run there")
    state = load_state(source)
    saved = state.get("extra", {}).get("args")
    if not isinstance(saved, dict):
        raise CLIError(f"{source} was not written by `onelip train` (no arguments recorded); "
                       "resume it from Python with fit(..., resume_from=...)")
    given = _given(args.argv)
    lib = {dest: _AS_LIBRARY.get(dest, dest) for dest in given}  # the rule's names
    dest_of = {name: dest for dest, name in lib.items()}
    diffs = resume.differences({lib[d]: saved.get(d) for d in given},
                               {lib[d]: _jsonable(getattr(args, d)) for d in sorted(given)})
    if diffs:
        raise CLIError(f"--resume {args.resume}: arguments differ from the original run's: "
                       + ", ".join(f"{_flag(dest_of[d.name])} {d.now} (was {d.saved})"
                                   for d in diffs)
                       + "; leave them out or start a new run")
    for dest, value in saved.items():
        if dest in given and resume.may_differ(lib[dest]):
            continue
        if dest in ("out", "resume"):
            continue
        setattr(args, dest, value)
    if args.resize is not None:
        args.resize = list(args.resize)
    done = int(state["epoch"])
    try:
        resume.check_epochs(done, args.epochs, finished=kind == "finished")
    except resume.ResumeError as e:
        if e.finished:
            raise CLIError(f"{source} is a finished run of {done} epochs: nothing to resume; "
                           f"pass --epochs N > {done} to continue training it (with --force "
                           "to replace it, or --out NEW)") from None
        raise CLIError(f"--epochs {args.epochs}: the unfinished run has already trained "
                       f"{done} epochs") from None
    if kind == "finished":
        args.force = "force" in given and args.force
    else:
        args.force = bool(args.force or saved.get("force"))
    return args, state, kind


def _folder_classes(name: str) -> list[str] | None:
    """The class names of ``folder:DIR`` (sorted sub-folder names, as the loader reads them)."""
    prefix, sep, arg = name.partition(":")
    if prefix != "folder" or not sep:
        return None
    from onelip.data.images import folder_classes

    return folder_classes(arg) or None


def _data_kwargs(args: argparse.Namespace) -> dict:
    extra: dict = {}
    if args.n_samples:
        extra["n_samples"] = args.n_samples
    if args.resize is not None:
        if not args.data.startswith("folder:"):
            raise CLIError(f"--resize is for image folders (folder:DIR), not {args.data}")
        extra["resize"] = [int(v) for v in args.resize]
    if getattr(args, "layout", None) is not None:
        if not args.data.startswith("npz:"):
            raise CLIError(f"--layout is for .npz arrays (npz:FILE), not {args.data}")
        extra["layout"] = args.layout
    return extra


def run_data(cfg: dict, data, split: str, *, own_data: bool):
    """(x, y) of ``split`` ('test', 'val' or 'train') of ``data`` for certifying the run of
    config ``cfg``; CLIError (one line) for a split the data lacks, or data of other classes
    or another sample shape than the run was trained on.

    ``own_data``: ``data`` is the data the run was trained on: 'val' is its validation split
    (carved again from the recorded fraction and seed), 'train' the rest of its training part.
    Another set (``onelip certify --data``): 'test' is its test split, or all of it when it has
    none (an image folder of one split), 'train' its training part."""
    from onelip import data as datasets

    where = data.name
    model_cfg = cfg.get("model", {}).get("config", {})
    outputs = model_cfg.get("num_outputs")
    if outputs is not None and outputs != (1 if data.num_classes == 2 else data.num_classes):
        trained = 2 if outputs == 1 else outputs
        raise CLIError(f"{where} has {data.num_classes} classes, but the run was trained on "
                       f"{trained}: certify it on data of the same classes")
    # a built-in model's config, else the shape recorded beside a custom architecture
    shape = model_cfg.get("input_shape") or cfg.get("model", {}).get("input_shape")
    dim = math.prod(shape) if shape else model_cfg.get("in_features")
    if dim is not None and math.prod(data.input_shape) != dim:
        raise CLIError(f"{where} has samples of shape {tuple(data.input_shape)}, but the run "
                       f"takes {tuple(shape) if shape else (dim,)}: certify it on data of the "
                       "same shape (an image folder: --resize H W)")
    classes = cfg.get("splits", {}).get("classes")
    theirs = _folder_classes(where)
    if classes and theirs is not None and list(classes) != theirs:
        raise CLIError(f"{where} has classes {', '.join(theirs)}, but the run was trained on "
                       f"{', '.join(classes)}: labels would mean other classes")
    fraction = float(cfg.get("train", {}).get("val_fraction") or 0.0)
    if split == "test":
        if len(data.x_test):
            return data.x_test, data.y_test
        if not own_data:  # another folder of one split: all of it is new to the run
            return data.x_train, data.y_train
        raise CLIError(f"the test split of {where} is empty: nothing to certify; pass "
                       "--split val (the run's validation split) or --data another set of the "
                       "same classes")
    if not own_data:
        if split == "val":
            raise CLIError("--split val is the run's validation split, carved from the data it "
                           "was trained on; with --data another set use --split test")
        return data.x_train, data.y_train
    if fraction <= 0:
        if split == "val":
            raise CLIError("the run has no validation split (trained without --val-fraction); "
                           "use --split test or --split train")
        return data.x_train, data.y_train
    seed = int(cfg.get("splits", {}).get("val_seed", datasets.VAL_SEED))
    parts = datasets.validation_split(data, fraction, seed=seed)
    return (parts.x_val, parts.y_val) if split == "val" else (parts.x_train, parts.y_train)


def _check_place(args: argparse.Namespace, out: Path, kind: str | None) -> None:
    """Before any training step: the processes, and a place the run may go and can be
    written to."""
    from onelip import distributed, runs

    if args.nproc > 1 and not distributed.in_worker():
        try:
            distributed.check_nproc(args.nproc, args.device)
        except ValueError as e:
            raise CLIError(error_text(e)) from None
    try:
        runs.check_target(out, overwrite=args.force)
    except runs.OutputError as e:
        raise CLIError(error_text(e)) from None
    part = runs.partial_path(out)
    if kind != "partial" and (part / runs.CHECKPOINT).is_file() and not args.force:
        raise CLIError(f"an unfinished run of {out} is in {part}; continue it with `onelip "
                       f"train --resume {out}` or pass --force to start over")


def _build(args: argparse.Namespace):
    """(data, its loader options, model, model config, loss, TrainConfig) of the command."""
    import torch

    from onelip import data as datasets
    from onelip import models
    from onelip.train import TrainConfig

    extra = _data_kwargs(args)
    data = datasets.load(args.data, **extra)
    if len(data.x_test) == 0 and args.val_fraction <= 0:
        raise CLIError(f"{args.data} has no test split: pass --val-fraction F (e.g. 0.1) to "
                       "measure every epoch on a validation split carved from the training "
                       "data, and certify afterwards on another set (onelip certify --data)")
    if args.eval_test and len(data.x_test) == 0:
        raise CLIError(f"--eval-test: {args.data} has no test split")
    labels = torch.unique(data.y_train)
    if labels.numel() < 2:
        raise CLIError(f"{args.data}: the training data has {labels.numel()} class; a "
                       "classifier needs at "
                       "least two: give each class its own sub-folder (DIR/<class>/*.jpg)")
    model_kw = _model_fields(args.model, args, data)
    torch.manual_seed(args.seed)  # same seed, same initial weights (and on every rank)
    model, model_cfg = models.build(args.model, **model_kw)
    loss = _loss(args, model, model_kw["num_outputs"])
    augment = tuple(a.strip() for a in (args.augment or "").split(",") if a.strip())
    try:
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          optimizer=args.optimizer, weight_decay=args.weight_decay,
                          epsilon_ramp=args.epsilon_ramp, schedule=args.schedule, seed=args.seed,
                          device=args.device, val_fraction=args.val_fraction, augment=augment,
                          warmup_epochs=args.warmup_epochs, grad_clip=args.grad_clip,
                          amp=args.amp, compile=args.compile)
    except ValueError as e:
        raise CLIError(error_text(e)) from None
    if augment and len(data.input_shape) != 3:
        raise CLIError(f"--augment is for images, but {args.data} has samples of shape "
                       f"{tuple(data.input_shape)}; drop --augment for this data")
    return data, extra, model, model_cfg, loss, cfg


_MARGIN_LOSSES = ("offset-ce", "emma", "la")


def _loss(args: argparse.Namespace, model, num_outputs: int):
    """The loss of the command; the margin-aware ones get the network's certified bound L
    (their ε is a radius in input units, their logit margins L·√2·ε)."""
    from onelip import losses
    from onelip.certify import lipschitz_bound

    kw: dict = {}
    if args.loss in _MARGIN_LOSSES:
        kw = {"offset": args.offset, "temperature": args.temperature, "epsilon": args.epsilon,
              "gamma": args.gamma, "lipschitz": float(lipschitz_bound(model))}
    try:
        return losses.build_loss(args.loss, num_classes=num_outputs, alpha=args.alpha,
                                 margin=args.margin, tau=args.tau, hinge_mode=args.hinge_mode,
                                 **kw)
    except ValueError as e:
        raise CLIError(f"--loss {args.loss}: {error_text(e)}") from None


def _loss_record(args: argparse.Namespace, loss) -> dict:
    """What config.json records of the loss: its options, and for the margin-aware ones the
    values they were built with (L, the offset and temperature the defaults gave)."""
    rec = {"name": args.loss, "alpha": args.alpha, "margin": args.margin, "tau": args.tau,
           "hinge_mode": args.hinge_mode}
    if args.loss in _MARGIN_LOSSES:
        rec.update({"epsilon": args.epsilon, "gamma": args.gamma,
                    "epsilon_ramp": args.epsilon_ramp,
                    **{k: getattr(loss, k) for k in ("offset", "temperature", "lipschitz")
                       if hasattr(loss, k)}})
    return rec


def _record(args: argparse.Namespace, data, extra: dict, cfg, loss=None) -> dict:
    """What config.json records of the data, its splits, the loss and the training."""
    from onelip import data as datasets

    n_val = 0
    if args.val_fraction > 0:
        n_val = len(datasets.validation_indices(data.y_train, args.val_fraction)[1])
    classes = _folder_classes(args.data)
    return {
        "data": {"name": args.data, **extra},
        "splits": {"val_fraction": args.val_fraction, "val_seed": datasets.VAL_SEED,
                   "n_train": int(len(data.x_train)) - n_val, "n_val": n_val,
                   "n_test": int(len(data.x_test)), "num_classes": data.num_classes,
                   "input_shape": list(data.input_shape),
                   **({"classes": classes} if classes else {}),
                   # what certify checks: the data's place, and what identifies the splits
                   "source": data_source(args.data),
                   "fingerprint": datasets.split_fingerprint(data, args.val_fraction)},
        "loss": _loss_record(args, loss),
        "train": asdict(cfg),
    }


def _summary(args: argparse.Namespace, history: list[dict], seconds: float, out: Path) -> str:
    last = history[-1]
    line = f"trained {args.model} on {args.data} in {seconds:.1f}s: train acc " \
           f"{last['train_acc']:.4f} (running)"
    if "val_acc" in last:
        line += f", val acc {last['val_acc']:.4f}, val loss {last['val_loss']:.4f}"
    if "test_acc" in last:
        line += f", test acc {last['test_acc']:.4f}"
    return f"{line} -> {out}"


def run(args: argparse.Namespace) -> int:
    """Train a 1-Lipschitz network and write a run folder."""
    import torch

    from onelip import distributed, runs
    from onelip.nn.utils import serial_kernel_build
    from onelip.train import TrainingDiverged, fit

    LazyDefault.resolve(args)
    if args.out is None and args.resume is None:
        raise CLIError("the following arguments are required: --out (or --resume RUN)")
    out: Path = args.out if args.out is not None else args.resume
    state, kind = None, None
    if args.resume is not None:
        args, state, kind = _resume_args(args, out)
    _check_place(args, out, kind)
    if args.nproc > 1 and not distributed.in_worker():  # re-run in N processes (torchrun-like)
        return launch(without_nproc(args.argv), args.nproc)
    data, extra, model, model_cfg, loss, cfg = _build(args)
    main = distributed.is_main()  # only rank 0 writes files and prints
    part = runs.partial_path(out)
    if not args.quiet and main:
        print(f"onelip: a checkpoint after every epoch in {part} (continue a killed run with "
              f"`onelip train --resume {out}`)", file=sys.stderr)
    # The run is written into .NAME.partial beside --out (created now, so that an unwritable
    # place fails before training), checkpointed after every epoch, renamed into place when
    # complete; a killed run leaves it for --resume.
    with (runs.resumable_run(out, overwrite=args.force, resume=kind == "partial") if main
          else nullcontext()) as folder:
        t0 = time.perf_counter()
        serial = serial_kernel_build() if torch.device(cfg.device).type == "cpu" \
            else nullcontext()
        try:
            with distributed.process_group(cfg.device), serial:
                history = fit(model, data, loss, cfg, progress=not args.quiet,
                              final_test=args.eval_test, checkpoint_dir=folder,
                              checkpoint_extra={"args": _recorded_args(args)},
                              resume_from=state)
        except TrainingDiverged as e:
            if main:
                runs.discard_partial(out)  # nothing worth resuming
            raise CLIError(error_text(e)) from None
        except KeyboardInterrupt:
            if main and folder is not None and (folder / runs.CHECKPOINT).is_file():
                print(f"onelip: continue with `onelip train --resume {out}`", file=sys.stderr)
            raise
        seconds = time.perf_counter() - t0
        if not main:
            return 0
        if state is not None and state.get("history"):
            seconds += sum(r.get("seconds", 0.0) for r in state["history"])
        runs.write_model(folder, model.cpu(), model_name=args.model, model_config=model_cfg,
                         extra=_record(args, data, extra, cfg, loss))
        runs.write_json(folder / "metrics.json", {"history": history, "train_seconds": seconds,
                                                  "final": history[-1] if history else {}})
    print(_summary(args, history, seconds, out))
    return 0

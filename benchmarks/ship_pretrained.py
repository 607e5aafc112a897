# SPDX-License-Identifier: MIT
"""Ship a benchmark's saved network inside the package as a pretrained model (issue 21).

    .venv/bin/python benchmarks/ship_pretrained.py benchmarks/models/cifar10-onelip.json \\
        cifar10-xs [--force] [--note TEXT] [--train-command CMD] [--validate CIFAR10_DIR]
    .venv/bin/python benchmarks/ship_pretrained.py --docs      # docs/pretrained.md's cards only

**Source.** A network saved by ``benchmarks/cifar10.py``, ``benchmarks/layers_cifar10.py`` or
``benchmarks/cifar10_hour.py``: ``<x>.safetensors`` (its state dict) + ``<x>.json``
(``{"model": "lipconvnet", "config"}``, or ``cifar10.py``'s ``{"network": "onelip", "width",
"mean", "std"}``; the classes, the recipe, the validation figures, the split). The run record
the benchmark wrote beside it (its results file, ``--record``; default: the one of the script
that wrote the network) gives the CPU and wall-clock time, the threads, the machine, the
attack and the command; the record must describe the same network (the same validation
figures and bound), or the conversion stops. Every field of the card comes from these two
files or from the checks below: the optimizer, lr, weight decay, ε ramp, bf16, loss spec
(and its resolved values) and input normalisation the JSON's recipe records (a JSON that
records no optimizer was trained by ``train()``'s default, Adam), the threads the recipe or
the record names, the inputs said standardised or, where every std is 1, centred only.

**Checks.** The model is rebuilt with :func:`onelip.models.build` and its weights loaded
(safetensors, strict keys). Its certified Lipschitz bound is recomputed the way the benchmark
computed it (``benchmarks/_certify.py``: every layer bounded from the operator it applies in
eval mode where it is one convolution or dense layer, its own ``lipschitz_bound()`` where it is
not, times a float32 safety factor) and must equal the JSON's ``lipschitz_upper`` within 1e-6
relative: the weights are the ones the figures were measured with. The bound the package's
certificate uses, ``model.lipschitz_bound()`` (L), must be at least the bound the layers need
(the same product without the safety factor): otherwise the conversion stops. With
``--validate DIR`` (the CIFAR-10 folder it was trained on) the validation figures are measured
again by the package's own certificate (:func:`reproduce`) and the card says where they differ.

**Writes** ``src/onelip/pretrained/<name>/`` (``--dest``): ``config.json`` +
``model.safetensors`` through :func:`onelip.runs.write_model` (float32; the ``splits`` section
records the classes and the input shape, which ``onelip certify pretrained:NAME --data
folder:DIR`` checks against the folder's class names), and ``card.json`` (:func:`make_card`).
An existing entry is replaced only with ``--force`` (the new one is written beside it and
renamed into place). Then the generated part of ``docs/pretrained.md`` is rewritten from
every shipped ``card.json`` (:func:`card_markdown`), so the docs cannot drift from the cards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
DEST = REPO / "src" / "onelip" / "pretrained"
DOCS = REPO / "docs" / "pretrained.md"
CARD_FORMAT = "onelip-model-card/1"
BOUND_RTOL = 1e-6
MAX_MB = 16.0
FAR_FROM_CONVERGED_EPOCHS = 50  # Prach et al.'s XS networks ran 127 to 837 epochs
# The results file each benchmark writes its run records into (--record's default).
RECORDS = {"benchmarks/cifar10.py": "benchmarks/results/cifar10.json",
           "benchmarks/layers_cifar10.py": "benchmarks/results/layers_cifar10.json",
           "benchmarks/cifar10_hour.py": "benchmarks/results/cifar10_hour.json"}
# The optimizer a recipe records (benchmarks/cifar10.py make_optimizer's names) as the card
# says it; a JSON that records none was trained by train()'s default, "adam".
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW (decoupled weight decay)",
              "nesterov": "SGD with Nesterov momentum 0.9", "sgd": "SGD with momentum 0.9",
              "nadam": "NAdam (decoupled weight decay)"}
# What every writer's train() does (benchmarks/cifar10.py), beside the recorded hyper-parameters.
FIXED_RECIPE = {
    "schedule": "one-cycle over the time budget (30 % warm-up from lr/25, cosine decay)",
    "augmentation": "random crop (padding 4) + horizontal flip, per batch",
    "retract_each_step": True,
}


class ShipError(SystemExit):
    """A conversion that must not go on: one line on stderr, exit status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(f"[ship_pretrained] {message}")


def rel(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (the card names no local folder)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


# ==== the source network ====================================================================


def model_kwargs(meta: dict) -> dict:
    """The keyword arguments of ``onelip.models.build("lipconvnet", ...)`` for a saved
    network's JSON."""
    if meta.get("model") == "lipconvnet" and isinstance(meta.get("config"), dict):
        cfg = dict(meta["config"])
        if "input_shape" in cfg:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        for k in ("mean", "std"):
            if cfg.get(k) is not None:
                cfg[k] = tuple(cfg[k])
        return cfg
    if meta.get("network") == "onelip":  # benchmarks/cifar10.py: lipconvnet(width, mean, std)
        return {"width": int(meta["width"]), "mean": tuple(meta["mean"]),
                "std": tuple(meta["std"])}
    raise ShipError("the JSON describes neither a lipconvnet ('model': 'lipconvnet') nor "
                    "benchmarks/cifar10.py's onelip network ('network': 'onelip'); only "
                    "networks onelip.models builds can be shipped")


def rebuild(json_path: Path):
    """(model in eval mode, its config dataclass, the JSON) of a saved network."""
    import torch
    from safetensors.torch import load_file

    from onelip import models

    meta = json.loads(json_path.read_text())
    weights = json_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise ShipError(f"{weights} is missing (the network's weights beside {json_path})")
    model, cfg = models.build("lipconvnet", **model_kwargs(meta))
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ShipError(f"{weights} does not fit the model its JSON describes (missing "
                        f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        model(torch.zeros(1, *cfg.input_shape))  # eval caches built once
    return model, cfg, meta


def bounds(model, input_shape) -> dict:
    """The benchmark's certified bound of ``model`` recomputed (``benchmarks/_certify.py``)
    beside the package's ``lipschitz_bound()``; which layers were bounded how."""
    import torch
    import torch.nn.utils.parametrize as P

    sys.path.insert(0, str(BENCHMARKS))
    from _certify import certified_body_bound, exact_body_bound, split_head

    from onelip.nn.normalize import Normalize

    sample = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with P.cached(), torch.no_grad():
        body, w, _ = split_head(model)
        l_body, rows = certified_body_bound(body, sample)
        w_norm = float(torch.linalg.matrix_norm(w.double(), ord=2))
        lip = float(model.lipschitz_bound())
    own: dict[str, int] = {}
    for r in rows:
        if r["kind"].startswith("onelip lipschitz_bound()"):
            own[r["layer"]] = own.get(r["layer"], 0) + 1
    norm = math.prod(float(m.lipschitz_bound()) for m in model.modules()
                     if isinstance(m, Normalize))
    return {"lipschitz_bound": lip, "normalize_bound": norm,
            "independent_bound": l_body * w_norm, "needed": exact_body_bound(rows) * w_norm,
            "head_norm": w_norm, "layers": len(rows) + 1, "own_bound_layers": own}


def reproduce(model, meta: dict, data: str, cache_dir: str | None) -> dict:
    """The validation figures again, by the package's own certificate: the benchmark's split
    of the training images of ``data`` (its ``load_images`` and ``split``, the JSON's size and
    seed), :func:`onelip.certify.evaluate` on ``model`` (margin/(√2·L), L =
    ``lipschitz_bound()``), compared with the JSON's figures (images counted at each ε)."""
    import types

    sys.path.insert(0, str(BENCHMARKS))
    from cifar10 import load_images, split

    from onelip import certify

    sp = meta.get("split", {})
    args = types.SimpleNamespace(data=data, cache_dir=cache_dir, worker=True, train_limit=0,
                                 val_size=int(sp.get("val_size", 5000)),
                                 split_seed=int(sp.get("split_seed", 0)))
    x, y, classes, _ = load_images(args)
    if classes != list(meta["classes"]):
        raise ShipError(f"{data} has the classes {classes}, the network {meta['classes']}")
    _, _, xv, yv = split(x, y, args)
    keys = sorted(meta["validation"]["certified"], key=_eps_key)
    r = certify.evaluate(model, xv.float() / 255, yv, eps=[float(k) / 255 for k in keys])
    n = len(yv)
    mine = {"clean": r.clean, **{f"{k}/255": r.certified[float(k) / 255] for k in keys}}
    theirs = {"clean": meta["validation"]["clean"],
              **{f"{k}/255": meta["validation"]["certified"][k] for k in keys}}
    return {"by": "onelip.certify.evaluate (margin/(√2·L), L = lipschitz_bound()) on the "
                  f"shipped model, the same {n:,} validation images",
            "clean": r.clean, "certified": {k: mine[k] for k in mine if k != "clean"},
            "images_differing": {k: round(abs(mine[k] - theirs[k]) * n) for k in mine}}


def find_record(record_path: Path, stem: str, meta: dict) -> tuple[dict, dict]:
    """(the run record of the network saved as ``stem``, the results file holding it): of the
    dicts whose ``saved`` names it, anywhere in the file, the one whose figures are the JSON's
    (:func:`record_matches`; a results file may keep superseded runs saved under the same
    name, e.g. ``layers_cifar10.json``'s ``default_lr_main``)."""
    root = json.loads(record_path.read_text())
    todo, named = [root], []
    while todo:
        d = todo.pop(0)
        if isinstance(d, dict):
            if isinstance(d.get("saved"), str) and Path(d["saved"]).name == stem:
                named.append(d)
            todo.extend(d.values())
        elif isinstance(d, list):
            todo.extend(d)
    if not named:
        raise ShipError(f"{rel(record_path)} holds no run record of {stem} (no 'saved' naming "
                        "it); pass --record FILE, or --record none to ship without one")
    for d in named:
        if record_matches(d, meta):
            return d, root
    raise ShipError(f"the {len(named)} run record(s) of {stem} in {rel(record_path)} are of "
                    "another network than the JSON (other validation figures or bound): "
                    "re-run the benchmark's report, or pass --record")


def record_matches(record: dict, meta: dict) -> bool:
    """Whether a run record's validation figures and bound are the saved JSON's."""
    val = meta["validation"]
    return (math.isclose(record.get("clean", -1), val["clean"], rel_tol=1e-9)
            and math.isclose(record.get("lipschitz_upper", -1), val["lipschitz_upper"],
                             rel_tol=1e-9)
            and record.get("certified") == val["certified"])


# ==== the card ==============================================================================


def _eps_key(k: str) -> float:
    return float(k)


def _eps_arg(k: str) -> str:
    """``--eps`` for the radius k/255: rounded up at the sixth decimal (never smaller)."""
    return f"{math.ceil(float(k) / 255 * 1e6) / 1e6:g}"


def card_recipe(meta: dict) -> tuple[dict, float, str, int | None]:
    """(the card's recipe, the time budget in seconds, its clock "cpu" or "wall", the torch
    threads the JSON records or None) of a saved network's JSON: its recorded recipe (loss,
    its resolved values, lr, weight decay, ε ramp, bf16, normalisation, batch, clipping) with
    the optimizer it records named (:data:`OPTIMIZERS`; none recorded: ``adam``, ``train()``'s
    default) and what ``train()`` always does (:data:`FIXED_RECIPE`)."""
    recipe = dict(meta["recipe"])
    clock = "cpu" if "budget_cpu_seconds" in recipe else "wall"
    if recipe.pop("clock", clock) != clock:
        raise ShipError(f"the JSON's recipe records the clock {meta['recipe']['clock']!r} but "
                        f"a {'CPU' if clock == 'cpu' else 'wall-clock'} budget: fix the JSON")
    budget = recipe.pop("budget_cpu_seconds", None) or recipe.pop("budget_seconds", None)
    threads = recipe.pop("threads", None)
    optimizer = recipe.pop("optimizer", "adam")
    if optimizer not in OPTIMIZERS:
        raise ShipError(f"the JSON's recipe names the optimizer {optimizer!r}; the card knows "
                        f"{', '.join(OPTIMIZERS)} (benchmarks/cifar10.py make_optimizer): add "
                        "it to OPTIMIZERS")
    for k in ("schedule", "retract_each_step"):
        recipe.pop(k, None)
    recipe.update({"optimizer": OPTIMIZERS[optimizer], **FIXED_RECIPE})
    return recipe, budget, clock, threads


def card_input(input_shape, std, normalisation: str | None = None) -> str:
    """What the card says the network does to its input: standardised (Normalize(mean, std))
    or, where every std is 1, centred only; ``normalisation`` (the recipe's ``"std"`` or
    ``"center"``, where recorded) must agree with ``std``."""
    centred = all(float(s) == 1.0 for s in std)
    if normalisation is not None and normalisation != ("center" if centred else "std"):
        raise ShipError(f"the JSON's recipe records the normalisation {normalisation!r} but "
                        f"its config has std {list(std)}: these are not the same network")
    c, h, w = input_shape
    head = (f"{'RGB' if c == 3 else f'{c}-channel'} {h}×{w}, pixels in [0, 1]; the network's "
            "first layer (Normalize) ")
    if centred:
        return head + ("centres them (the training split's per-channel mean subtracted), not "
                       "scaled (std = 1): the Normalize bound is 1")
    return head + "standardises them with the training split's per-channel mean and std"


def card_training(record: dict | None, *, budget: float, clock: str, epochs: float,
                  threads: int | None = None) -> dict:
    """The card's ``training`` section from the run record (``benchmarks/cifar10.py``'s
    ``train()`` result and the worker's clocks): the clock the budget ran on is
    ``train_seconds``, the other one ``train_wall_seconds`` (CPU budget) or
    ``train_cpu_seconds`` (wall-clock budget), where recorded; the threads the JSON's recipe
    records (``threads``) or else the record's machine, which must agree."""
    rec = record or {}
    machine = rec.get("machine") or {}
    if threads is None:
        threads = machine.get("threads")
    elif machine.get("threads") not in (None, threads):
        raise ShipError(f"the JSON's recipe records {threads} threads, its run record "
                        f"{machine['threads']}: pass the run record of this network (--record)")
    if clock == "cpu":
        cpu_s, wall_s = rec.get("train_seconds"), rec.get("train_wall_seconds")
    else:
        cpu_s, wall_s = rec.get("train_cpu_seconds"), rec.get("train_seconds")
    return {"budget_seconds": budget, "clock": clock, "cpu_seconds": cpu_s,
            "wall_seconds": wall_s, "epochs": epochs,
            "images_seen": rec.get("images_seen"), "steps": rec.get("steps"),
            "threads": threads,
            "machine": (f"{machine.get('cpu')}, {machine.get('cpu_count')} cores, "
                        f"torch {machine.get('torch')}") if machine else None,
            "date": machine.get("date"), "onelip_git": machine.get("onelip_git")}


def _threads(n: int | None) -> str | None:
    """'one CPU thread', '2 CPU threads'; None where not recorded."""
    if n is None:
        return None
    return "one CPU thread" if n == 1 else f"{n} CPU threads"


def make_card(name: str, json_path: Path, meta: dict, model, cfg, b: dict,
              record: dict | None, results: dict | None, record_path: Path | None,
              *, note: str | None, train_command: str | None, ship_command: str,
              reproduced: dict | None = None) -> dict:
    """What the model card says, from the saved network's JSON, its run record and the
    checks (every figure copied or computed, none typed in)."""
    from onelip import __version__

    recipe, budget, clock, threads = card_recipe(meta)
    val = meta["validation"]
    epochs = val.get("epochs", val.get("epochs_done"))
    rec = record or {}
    training = card_training(record, budget=budget, clock=clock, epochs=epochs,
                             threads=threads)
    for cmd in (rec.get("command"), (results or {}).get("command")):
        if train_command is None and isinstance(cmd, str) and "--report-only" not in cmd:
            train_command = cmd
    if train_command is None:
        raise ShipError("the run record holds no training command (only a --report-only "
                        "one, or none); pass --train-command")
    layer_cls = type(next(m for m in model.modules()
                          if type(m).__name__ not in ("Sequential",)
                          and hasattr(m, "lipschitz_bound")
                          and any(True for _ in m.parameters()))).__name__
    params = sum(p.numel() for p in model.parameters())
    classes = list(meta["classes"])
    certified_keys = sorted(val["certified"], key=_eps_key)
    certified = {f"{k}/255": float(val["certified"][k]) for k in certified_keys}
    own = b["own_bound_layers"]
    own_text = ", ".join(f"{n} {c}" for c, n in sorted(own.items()))
    split = meta.get("split", {})
    n_val = int(split.get("val_size", val.get("val_size")))
    limit = int(split.get("train_limit") or 0)
    n_train = int(rec.get("train_size", min(limit or 50_000, 50_000 - n_val)))
    on_threads = _threads(training["threads"])
    size = "XS" if cfg.width == 16 else f"of width {cfg.width}"
    summary = (f"ConvNet {size} (Prach et al., CVPR 2024) with {layer_cls} convolutions, "
               f"{params:,} parameters, trained on the CIFAR-10 training images "
               f"for {budget / 60:g} minutes of {'CPU' if clock == 'cpu' else 'wall-clock'} "
               f"time{f' on {on_threads}' if on_threads else ''} ({epochs:.1f} epochs) by "
               f"{meta['written_by']}: "
               f"{_pct(val['clean'])} clean and {_pct(certified.get('36/255'))} "
               f"certified at ε = 36/255 on its {n_val:,}-image validation split.")
    if epochs < FAR_FROM_CONVERGED_EPOCHS:
        summary += (" A short CPU-budget network, far from converged: Prach et al.'s ConvNet "
                    "XS reaches 68.5–71.7 % clean / 55.0–58.2 % certified at 36/255 after "
                    "2 hours (127–837 epochs) on an A100 GPU, depending on the layer.")
    if note:
        summary += " " + note
    return {
        "format": CARD_FORMAT,
        "name": name,
        "summary": summary,
        "model": {"name": "lipconvnet", "preset": "xs" if cfg.width == 16 else None,
                  "layer": cfg.layer, "layer_class": layer_cls, "width": cfg.width,
                  "parameters": params, "input_shape": list(cfg.input_shape),
                  "num_outputs": cfg.num_outputs, "dtype": "float32"},
        "data": {"name": meta.get("data", "CIFAR-10 (JPEG)"),
                 "source": "the 50,000 training images of a CIFAR-10 JPEG folder "
                           "(DIR/train/<class>/*.jpg); its test split was never read",
                 "classes": classes,
                 "input": card_input(cfg.input_shape, cfg.std, recipe.get("normalisation")),
                 "mean": list(cfg.mean), "std": list(cfg.std)},
        "split": {"train": n_train, "validation": n_val,
                  "seed": int(split.get("split_seed", 0)),
                  "how": "torch.randperm over the 50,000 training images (in the folder's "
                         "sorted order) with torch.Generator().manual_seed(seed); the first "
                         f"{n_val:,} are the validation split, "
                         + (f"the next {n_train:,} (--train-limit) train the network "
                            if limit else "the rest train the network ")
                         + "(benchmarks/cifar10.py split)"},
        "recipe": recipe,
        "training": training,
        "validation": {"images": n_val, "clean": float(val["clean"]), "certified": certified,
                       "how": "benchmarks/_certify.py (as recorded by the benchmark): the "
                              "last-layer radius min_j (f_y − f_j)/(L_body ‖w_y − w_j‖) with "
                              "L_body the independent bound of the body; with the head's "
                              "orthonormal rows it is margin/(√2·L_body)",
                       "reproduced": reproduced},
        "certificate": {
            "radius": "margin/(√2·L), margin = f_y(x) − max_{j≠y} f_j(x)",
            "lipschitz_bound": b["lipschitz_bound"],
            "normalize_bound": b["normalize_bound"],
            "space": "pixel space: the L2 distance between images with pixels in [0, 1] "
                     "(ε = k/255)",
            "independent_bound": b["independent_bound"],
            "needed": b["needed"],
            "valid": bool(b["lipschitz_bound"] >= b["needed"]),
            "checked": (f"benchmarks/_certify.py bounded each of the {b['layers']} layers "
                        "from the operator it applies in eval mode"
                        + (f" (except {own_text}: their own lipschitz_bound(), which the "
                           "test suite attacks)" if own else "")
                        + "; L is at least the product of these bounds (needed); with a 1e-6 "
                          "float32 margin per layer the product (independent_bound) is the "
                          "bound the benchmark recorded, within 1e-6"),
        },
        "attack": ({k: rec["attack"].get(k) for k in ("points", "found", "violations",
                                                       "median_ratio", "protocol")}
                   if rec.get("attack") else None),
        "source": {"json": rel(json_path), "weights": rel(json_path.with_suffix(".safetensors")),
                   "weights_sha256": hashlib.sha256(
                       json_path.with_suffix(".safetensors").read_bytes()).hexdigest(),
                   "written_by": meta.get("written_by"),
                   "record": rel(record_path) if record_path is not None else None},
        "commands": {"train": train_command, "ship": ship_command,
                     "load": f"onelip.pretrained.load({name!r})",
                     "certify": f"onelip certify pretrained:{name} --data folder:DIR --eps "
                                + " ".join(_eps_arg(k) for k in certified_keys),
                     "export": f"onelip export pretrained:{name} --format onnx --out "
                               f"{name}.onnx"},
        "onelip_version": __version__,
    }


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _minutes(s) -> str:
    return "not recorded" if s is None else f"{s / 60:.1f} min"


def card_markdown(card: dict) -> str:
    """The model card of ``card`` (a ``card.json``) as Markdown: docs/pretrained.md's
    generated part is these, one per shipped model."""
    m, d, s, r, t = card["model"], card["data"], card["split"], card["recipe"], card["training"]
    v, c, a, cmd = card["validation"], card["certificate"], card["attack"], card["commands"]
    eps = list(v["certified"])
    if t["clock"] == "cpu":
        time_text = (f"{t['budget_seconds'] / 60:g} min of CPU time (budget): "
                     + ("CPU s not recorded" if t["cpu_seconds"] is None
                        else f"{t['cpu_seconds']:,.0f} CPU s")
                     + f", {_minutes(t['wall_seconds'])} wall clock")
    else:
        time_text = (f"{t['budget_seconds'] / 60:g} min of wall-clock time (budget): "
                     + ("not recorded" if t["wall_seconds"] is None
                        else f"{t['wall_seconds']:,.0f} s")
                     + ("; CPU time not recorded" + (" (one thread: at most the wall time)"
                                                     if t["threads"] == 1 else "")
                        if t["cpu_seconds"] is None
                        else f" wall clock, {t['cpu_seconds']:,.0f} CPU s"))
    recipe_text = "".join([
        {"center": "inputs centred (Normalize std = 1), ",
         "std": "inputs standardised (Normalize mean, std), "}.get(r.get("normalisation"), ""),
        f"loss `{r['loss']}`",
        (" (" + ", ".join(f"{k} {x:g}" for k, x in r["loss_values"].items()) + ")"
         if r.get("loss_values") else ""),
        f", {r['optimizer']} lr {r['lr']:g}",
        f", weight decay {r['weight_decay']:g}" if r.get("weight_decay") else "",
        (f", ε ramp over the first {100 * r['epsilon_ramp']:g} % of the budget (the loss's ε "
         "from 0)" if r.get("epsilon_ramp") else ""),
        ", forward under bf16 autocast" if r.get("amp") else "",
        f", {r['schedule']}, batch {r['batch_size']}, gradient clipping at {r['clip']:g}, "
        f"{r['augmentation']}",
        ", retract_ after each step" if r.get("retract_each_step") else ""])
    lines = [
        f"### `{card['name']}`", "",
        card["summary"], "",
        "| | |", "|---|---|",
        f"| network | `lipconvnet` (ConvNet XS, width {m['width']}), `layer={m['layer']}` "
        f"({m['layer_class']}), {m['parameters']:,} parameters, float32, input "
        f"{'×'.join(map(str, m['input_shape']))}, {m['num_outputs']} outputs |",
        f"| data | {d['name']}: {d['source']}; classes (label order) "
        f"{', '.join(d['classes'])} |",
        f"| split | {s['train']:,} training / {s['validation']:,} validation images, seed "
        f"{s['seed']}; every figure is on the validation split |",
        f"| recipe | {recipe_text} |",
        f"| training | {time_text}, "
        + ("threads not recorded" if t["threads"] is None
           else f"{t['threads']} thread{'' if t['threads'] == 1 else 's'}")
        + f"; {t['epochs']:.2f} epochs; "
        f"{t['machine']}; onelip {t['onelip_git']} |",
        f"| certificate | radius {c['radius']}; L = {c['lipschitz_bound']:.6f} "
        f"(`lipschitz_bound()`, Normalize's 1/min σ = {c['normalize_bound']:.6f} included); "
        f"{c['space']} |",
        f"| valid | {'yes' if c['valid'] else '**no**'}: L ≥ {c['needed']:.6f}; "
        f"{c['checked']} |",
    ]
    if a is not None:
        lines.append(f"| attack | {a['points']} validation points attacked ({a['protocol']}): "
                     f"{a['found']} adversarials found, {a['violations']} closer than their "
                     f"certificate; median adversarial norm / certified radius "
                     f"{a['median_ratio']:.2f} |")
    rep = v.get("reproduced")
    if rep is not None:
        diff = {k: n for k, n in rep["images_differing"].items() if n}
        lines.append(f"| reproduced | {rep['by']}: "
                     + ("the same figures (as many images at each ε) |" if not diff else
                        "other figures: " + ", ".join(f"{k} by {n} images"
                                                      for k, n in diff.items()) + " |"))
    lines += [
        f"| produced by | `{cmd['train']}`, then `{cmd['ship']}` |",
        "",
        f"On the validation split ({v['images']:,} images):",
        "",
        "| clean | " + " | ".join(f"certified at ε = {e}" for e in eps) + " |",
        "|---:|" + "---:|" * len(eps),
        f"| {_pct(v['clean'])} | " + " | ".join(_pct(v["certified"][e]) for e in eps) + " |",
        "",
    ]
    return "\n".join(lines)


def _cards(root: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(root.glob("*/card.json")) if not p.parent.name.startswith(".")]


def overview_markdown(cards: list[dict]) -> str:
    """One row per shipped model: name, network, budget, validation clean / certified@36."""
    lines = ["| name | network | training | validation clean / certified at 36/255 |",
             "|---|---|---|---|"]
    for c in cards:
        m, t, v = c["model"], c["training"], c["validation"]
        lines.append(f"| `{c['name']}` | ConvNet XS, {m['layer_class']} | "
                     f"{t['budget_seconds'] / 60:g} min of "
                     f"{'CPU' if t['clock'] == 'cpu' else 'wall-clock'} time, "
                     f"{t['epochs']:.1f} epochs | {_pct(v['clean'])} / "
                     f"{_pct(v['certified'].get('36/255'))} |")
    return "\n".join(lines) + "\n"


def docs_sections(root: Path = DEST) -> dict[str, str]:
    """The generated parts of docs/pretrained.md, by marker name, from every ``card.json``
    under ``root``: ``overview`` (a table) and ``cards`` (:func:`card_markdown` of each)."""
    cards = _cards(root)
    return {"overview": overview_markdown(cards),
            "cards": "\n".join(card_markdown(c) for c in cards)}


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- BEGIN {name}: generated by benchmarks/ship_pretrained.py from card.json, "
            "do not edit -->", f"<!-- END {name} -->")


def render_docs(text: str, root: Path = DEST) -> str:
    """``text`` (docs/pretrained.md) with each generated part rewritten."""
    for name, body in docs_sections(root).items():
        begin, end = _markers(name)
        if text.count(begin) != 1 or text.count(end) != 1:
            raise ShipError(f"{rel(DOCS)} needs one {begin!r} and one {end!r} line")
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text = f"{head}{begin}\n\n{body}\n{end}{tail}"
    return text


def write_docs(docs: Path = DOCS, root: Path = DEST) -> None:
    """Rewrite the generated parts of ``docs`` from the shipped cards."""
    docs.write_text(render_docs(docs.read_text(encoding="utf-8"), root), encoding="utf-8")


# ==== writing the entry =====================================================================


def _keep_identical_weights(old: Path, new: Path) -> None:
    """Where ``new``'s weights are ``old``'s (the same tensors and metadata), keep ``old``'s
    file byte for byte (safetensors writes its metadata in no fixed order) and its digest in
    ``new``'s config.json: re-shipping the same network changes no binary file."""
    from safetensors import safe_open

    from onelip._io import file_sha256, write_json

    def read(path: Path):
        with safe_open(str(path), "pt") as f:
            return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    a, b = old / "model.safetensors", new / "model.safetensors"
    (meta_a, ta), (meta_b, tb) = read(a), read(b)
    if meta_a != meta_b or ta.keys() != tb.keys() or not all(
            ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape
            and bool((ta[k] == tb[k]).all()) for k in ta):
        return
    shutil.copyfile(a, b)
    cfg = json.loads((new / "config.json").read_text())
    cfg["integrity"]["model.safetensors"] = file_sha256(b)
    write_json(new / "config.json", cfg)


def write_entry(dest: Path, name: str, model, cfg, card: dict, *, force: bool) -> Path:
    """Write ``dest/name/`` (config.json + model.safetensors + card.json) beside it, then
    rename it into place (an existing entry only with ``force``)."""
    from onelip import runs

    target = dest / name
    if target.exists() and not force:
        raise ShipError(f"{rel(target)} exists; pass --force to replace it")
    classes = card["data"]["classes"]
    shape = list(cfg.input_shape)
    extra = {"data": {"description": card["data"]["source"], "classes": classes,
                      "input_shape": shape, "range": [0.0, 1.0]},
             "splits": {"classes": classes, "num_classes": len(classes),
                        "input_shape": shape},
             "pretrained": {"name": name, "card": "card.json"}}
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{name}.", suffix=".tmp"))
    try:
        runs.write_model(tmp, model, model_name="lipconvnet", model_config=cfg,
                         input_shape=shape, extra=extra)
        (tmp / "card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        os.chmod(tmp, 0o755)
        size = sum(f.stat().st_size for f in tmp.iterdir()) / 2**20
        if size > MAX_MB:
            raise ShipError(f"the entry would take {size:.1f} MB (more than {MAX_MB:g}); "
                            "pretrained models ship inside the package: keep them small")
        if target.exists():
            _keep_identical_weights(target, tmp)
        loaded, _ = runs.load(tmp)  # what the package will load, digests verified
        import torch

        x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            if not torch.equal(loaded(x), model(x)):
                raise ShipError("the written entry does not reproduce the model's outputs")
        if target.exists():
            aside = dest / f".{name}.old"
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(target, aside)
            os.rename(tmp, target)
            shutil.rmtree(aside)
        else:
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ship(args) -> Path:
    import torch

    torch.set_num_threads(1)
    json_path = Path(args.source)
    if json_path.suffix != ".json" or not json_path.is_file():
        raise ShipError(f"{json_path}: expected a saved network's .json (benchmarks/models/)")
    if not args.name or args.name.startswith((".", "_")) or "/" in args.name \
            or args.name != args.name.strip():
        raise ShipError(f"{args.name!r}: a name is a plain folder name (e.g. cifar10-xs)")
    if (Path(args.dest) / args.name).exists() and not args.force:  # before any work
        raise ShipError(f"{rel(Path(args.dest) / args.name)} exists; pass --force to "
                        "replace it")
    model, cfg, meta = rebuild(json_path)
    b = bounds(model, cfg.input_shape)
    want = float(meta["validation"]["lipschitz_upper"])
    if not math.isclose(b["independent_bound"], want, rel_tol=BOUND_RTOL):
        raise ShipError(f"the certified bound recomputed from the weights, "
                        f"{b['independent_bound']:.9g}, is not the JSON's lipschitz_upper "
                        f"{want:.9g} (within {BOUND_RTOL:g} relative): these weights are not "
                        "the ones the figures were measured with")
    if not b["lipschitz_bound"] >= b["needed"]:
        raise ShipError(f"lipschitz_bound() = {b['lipschitz_bound']:.9g} is below the bound "
                        f"its layers need ({b['needed']:.9g}): its certificate would not be "
                        "valid; not shipped")
    reproduced = (reproduce(model, meta, args.validate, args.cache_dir)
                  if args.validate else None)
    record = results = record_path = None
    if args.record != "none":
        record_path = Path(args.record) if args.record else REPO / RECORDS.get(
            meta.get("written_by", ""), "")
        if not record_path.is_file():
            raise ShipError(f"no run record at {rel(record_path)}; pass --record FILE or "
                            "--record none")
        record, results = find_record(record_path, json_path.stem, meta)
    ship_command = "benchmarks/ship_pretrained.py " + shlex.join(
        [rel(json_path), args.name] + (["--note", args.note] if args.note else [])
        + (["--train-command", args.train_command] if args.train_command else [])
        + (["--record", rel(args.record) if args.record != "none" else "none"]
           if args.record else [])
        + (["--validate", args.validate] if args.validate else [])
        + (["--cache-dir", args.cache_dir] if args.validate and args.cache_dir else []))
    card = make_card(args.name, json_path, meta, model, cfg, b, record, results, record_path,
                     note=args.note, train_command=args.train_command,
                     ship_command=ship_command, reproduced=reproduced)
    target = write_entry(Path(args.dest), args.name, model, cfg, card, force=args.force)
    print(f"[ship_pretrained] {rel(json_path)} -> {rel(target)}: L = "
          f"{b['lipschitz_bound']:.6f} (independent {b['independent_bound']:.6f}, needed "
          f"{b['needed']:.6f}), clean {card['validation']['clean']:.1%}, "
          f"{sum(f.stat().st_size for f in target.iterdir()) / 2**20:.1f} MB")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="?", help="the saved network's JSON (benchmarks/models/)")
    p.add_argument("name", nargs="?", help="the pretrained model's name (e.g. cifar10-xs)")
    p.add_argument("--force", action="store_true", help="replace an existing entry")
    p.add_argument("--note", default=None, help="a sentence appended to the card's summary")
    p.add_argument("--train-command", default=None,
                   help="the command that trained the network (default: the run record's)")
    p.add_argument("--record", default=None,
                   help="the benchmark results file holding the run record (default: the "
                        "writer's); 'none' ships without one")
    p.add_argument("--validate", default=None, metavar="DIR",
                   help="the CIFAR-10 image folder the network was trained on: its validation "
                        "figures are measured again by onelip.certify.evaluate and the card "
                        "says whether they are the same")
    p.add_argument("--cache-dir", default=None, help="--validate's decoded-image cache")
    p.add_argument("--dest", default=str(DEST), help="where the entries go")
    p.add_argument("--docs", action="store_true",
                   help="only rewrite docs/pretrained.md's cards from the shipped card.json")
    args = p.parse_args(argv)
    if not args.docs:
        if not (args.source and args.name):
            p.error("give SOURCE and NAME, or --docs")
        ship(args)
    if Path(args.dest).resolve() == DEST.resolve():
        write_docs()
        print(f"[ship_pretrained] {rel(DOCS)}: cards rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

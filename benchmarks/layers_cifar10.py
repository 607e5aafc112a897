# SPDX-License-Identifier: MIT
"""Prach et al.'s layer comparison at a budget this machine has: ConvNet XS (CVPR 2024,
LAYERS.md §1) built from each onelip convolution family, one recipe, the same CPU budget each,
certified the same way, on CIFAR-10 (JPEG) (issue 20).

    .venv/bin/python benchmarks/layers_cifar10.py --data /tmp/cifar --cache-dir /tmp/onelip-cache
    .venv/bin/python benchmarks/layers_cifar10.py --data /tmp/cifar --families ortho,aol \\
        --budget 20s --train-limit 2000 --attack 5 --out /tmp/l10-smoke        # a smoke run
    .venv/bin/python benchmarks/layers_cifar10.py --report-only                # table only

**Networks.** :func:`onelip.models.lipconvnet.lipconvnet` at width 16 (ConvNet XS: Normalize,
zero-channel padding 3 → 16, a 1×1 convolution, five blocks of five convolutions + MaxMin —
3×3, the last block 1×1 — each ending in first-channels + 2×2 invertible downsampling, flatten,
an ``OrthoLinear`` 512 → 10 head) with ``layer=<family>`` for every family of
:data:`onelip.nn.CONV_LAYERS` (``--families``): only the convolutions differ.

**Budget.** Each network trains for ``--budget`` (default 20 minutes) of **CPU time of its own
process** (``time.process_time``, one torch thread), ``--jobs`` (2) networks at a time. A CPU
budget rather than a wall-clock one: the machine is shared (other runs, the test suite), and
CPU time is what a network gets to learn with whatever else runs beside it. ``images/s`` is
per CPU second too; the wall-clock time is recorded beside it.

**Recipe** (the same for every family; issue 21's recipe search has not landed): loss
``--loss`` (``ce:tau=0.25``: τ-cross-entropy, the loss ``benchmarks/cifar10.py`` chose on the
validation split), Adam, one-cycle over the budget (30 % warm-up from lr/25, cosine decay),
batch 256, gradient clipping at 1, random crop (padding 4) + flip, ``retract_`` after each
step. **Learning rate per family** (``--probe-lrs``): each family is trained
``--probe-budget`` with each candidate and the main run uses the one with the highest
validation certified accuracy at 36/255 (ties within 0.5 point: the higher clean accuracy,
then the smaller lr), among the probes that predict more than one class (when none does:
``--lr``); without ``--probe-lrs`` every family uses ``--lr`` (1e-3, chosen by
``benchmarks/cifar10.py``'s validation sweep for OrthoConv2d). The rule applied is written
into the result file.

**Data.** The 50,000 training images of ``--data`` only (a test split is never opened), a
fixed-seed validation split of 5,000; every figure is on it.

**Certificate** (``benchmarks/_certify.py``, as ``cifar10.py``): the last-layer radius
min_j (f_y − f_j)/(L_body ‖w_y − w_j‖); L_body the product of per-layer bounds, each
recomputed from the operator the layer applies in eval mode where the layer is one
convolution (OrthoConv2d, SpectralConv2d, AOL, LiResNet: certified symbol norm of the kernel
as applied) and the layer's own ``lipschitz_bound()`` where it is not (CPL, SOC, BRO, SLL,
shift: the suite's tests attack those claims). A minimal-norm attack on the first
``--attack`` validation points checks that no certificate is violated.

**Cost.** After training, the time of a training step at batch 256 (one thread, median of
``--step-rounds``) of the network and of its plain twin (the same network with ``nn.Conv2d`` /
``nn.Linear`` of the same shapes), and the peak RSS of the process.

Every finished run is cached as ``<runs>/<family>-lr<lr>-<budget>s.json`` (default
``benchmarks/results/layers_cifar10_runs``): a re-run skips it, so the benchmark resumes.
Writes ``<out>/layers_cifar10.{json,md}`` and each main network under ``--models``
(``layers-cifar10-<family>.safetensors`` + ``.json``: the config to rebuild it, the recipe and
the validation figures), to be certified later on data the benchmark never saw
(:func:`load_saved`).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info as _machine_info  # noqa: E402
from _peers import REPO  # noqa: E402
from cifar10 import (  # noqa: E402
    channel_stats,
    count_params,
    evaluate,
    load_images,
    parse_duration,
    peak_rss_mb,
    plain_twin,
    split,
    time_steps,
    train,
)
from fashion_mnist import make_loss  # noqa: E402

DATA_NAME = "CIFAR-10 (JPEG)"
WIDTH = 16  # ConvNet XS
DEFAULT_FAMILIES = ("ortho", "spectral", "sll", "aol", "cpl", "soc", "bro", "liresnet", "shift")
# Prach et al. (CVPR 2024), ConvNet XS, 2 h on one A100 (their Table 8 epochs, Table 9
# clean / certified@36/255 on CIFAR-10, %): LAYERS.md §1. onelip's OrthoConv2d is BCOP/AOC.
PRACH_XS_2H = {
    "ortho": {"layer": "BCOP", "epochs": 127, "clean": 69.0, "cert36": 55.0},
    "aol": {"layer": "AOL", "epochs": 837, "clean": 68.5, "cert36": 55.6},
    "cpl": {"layer": "CPL", "epochs": 836, "clean": 71.7, "cert36": 58.2},
    "sll": {"layer": "SLL", "epochs": 735, "clean": 69.9, "cert36": 56.4},
    "soc": {"layer": "SOC", "epochs": 371, "clean": 68.9, "cert36": 55.1},
}
TIE = 0.005


def network_config(family: str, mean, std):
    from onelip.models.lipconvnet import LipConvNetConfig

    return LipConvNetConfig(width=WIDTH, layer=family, mean=tuple(mean), std=tuple(std))


def build(family: str, mean, std, *, seed: int):
    import torch

    from onelip.models.lipconvnet import lipconvnet

    torch.manual_seed(seed)
    return lipconvnet(network_config(family, mean, std))


def load_saved(json_path: str | Path):
    """(model in eval mode, meta) of a network saved by this benchmark."""
    from safetensors.torch import load_file

    from onelip.models.lipconvnet import LipConvNetConfig, lipconvnet

    json_path = Path(json_path)
    meta = json.loads(json_path.read_text())
    cfg = dict(meta["config"])
    cfg["input_shape"] = tuple(cfg["input_shape"])
    model = lipconvnet(LipConvNetConfig(**cfg))
    model.load_state_dict(load_file(str(json_path.with_suffix(".safetensors"))))
    return model.eval(), meta


def run_key(family: str, lr: float, budget_s: float) -> str:
    return f"{family}-lr{lr:g}-{budget_s:.0f}s"


# ==== one network (a worker process) ========================================================


def run_worker(args) -> int:
    import dataclasses

    import torch

    job = json.loads(Path(args.worker).read_text())
    torch.set_num_threads(args.threads)
    x, y, classes, load_s = load_images(args)
    xtr, ytr, xva, yva = split(x, y, args)
    del x, y
    mean, std = channel_stats(xtr)
    rss_data = peak_rss_mb()
    fam, lr, budget = job["family"], job["lr"], job["budget_s"]
    model = build(fam, mean, std, seed=args.seed)
    label = job["label"]
    print(f"[{label}] {count_params(model):,} parameters, loss {args.loss}, lr {lr:g}, "
          f"budget {budget:.0f} CPU s, {torch.get_num_threads()} thread(s)", flush=True)
    loss_fn = make_loss(args.loss)
    info = {"family": fam, "class": type(next(m for m in model.modules()
                                               if type(m).__name__ != "Sequential"
                                               and hasattr(m, "lipschitz_bound")
                                               and any(True for _ in m.parameters()))).__name__,
            "role": job["role"], "lr": lr, "loss": args.loss, "budget_cpu_seconds": budget,
            "params": count_params(model), "batch_size": args.batch_size, "clip": args.clip,
            "train_size": int(xtr.shape[0]), "val_size": int(xva.shape[0]),
            "data_load_seconds": load_s, "load_average_start": os.getloadavg()[0],
            "machine": _machine_info(threads_per_run=args.threads)}
    wall0 = time.perf_counter()
    try:
        info.update(train(model, loss_fn, xtr, ytr, budget_s=budget, batch_size=args.batch_size,
                          lr=lr, clip=args.clip, retract=True, device="cpu", seed=args.seed,
                          label=label, clock=time.process_time))
    except FloatingPointError as exc:  # diverged: recorded, not fatal for the benchmark
        info["diverged"] = str(exc)
        Path(job["result"]).write_text(json.dumps(info, indent=1) + "\n")
        return 0
    info["train_wall_seconds"] = time.perf_counter() - wall0
    info["load_average_end"] = os.getloadavg()[0]
    info["peak_rss_mb"] = peak_rss_mb()
    info["peak_rss_after_data_mb"] = rss_data
    info.update(evaluate("onelip", model, xva, yva, attack_n=job["attack"]))
    print(f"[{label}] {info['epochs_done']:.2f} epochs, {info['images_per_second']:.0f} img/CPU-s;"
          f" val clean {info['clean']:.4f}, cert@36 {info['certified']['36']:.4f}", flush=True)
    if job.get("save"):
        from safetensors.torch import save_file

        path = Path(job["save"])
        rel = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().clone().contiguous()
                   for k, v in model.state_dict().items()}
        save_file(tensors, str(path.with_suffix(".safetensors")),
                  metadata={"format": "onelip-benchmark-layers-cifar10/1", "family": fam})
        cfg = dataclasses.asdict(network_config(fam, mean, std))
        meta = {"model": "lipconvnet", "config": cfg, "family": fam, "classes": classes,
                "data": DATA_NAME,
                "recipe": {k: info[k] for k in ("loss", "lr", "budget_cpu_seconds",
                                                "batch_size", "clip")},
                "validation": {"clean": info["clean"], "certified": info["certified"],
                               "lipschitz_upper": info["lipschitz_upper"],
                               "val_size": info["val_size"], "epochs": info["epochs_done"]},
                "split": {"val_size": args.val_size, "split_seed": args.split_seed},
                "written_by": "benchmarks/layers_cifar10.py",
                "rebuild": "import sys; sys.path.insert(0, 'benchmarks'); from layers_cifar10 "
                           f"import load_saved; model, meta = load_saved('{rel}.json')"}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        info["saved"] = str(rel)
    if job.get("time_steps"):
        n = args.step_rounds
        idx = slice(0, args.batch_size)
        twin = plain_twin(model)
        steps = {}
        for name, net, retract in (("network", copy.deepcopy(model), True),
                                   ("plain_twin", twin, False)):
            for prm in net.parameters():  # evaluate() froze them
                prm.requires_grad_(True)
            steps[name] = time_steps(net, loss_fn, xtr[idx], ytr[idx], device="cpu", steps=n,
                                     warmup=2, retract=retract, batch_size=args.batch_size,
                                     clip=args.clip, seed=args.seed)
        info["step"] = steps
        info["step_ratio_to_plain_twin"] = (steps["network"]["step_ms_median"]
                                            / steps["plain_twin"]["step_ms_median"])
    Path(job["result"]).write_text(json.dumps(info, indent=1) + "\n")
    return 0


# ==== orchestration =========================================================================


def run_jobs(args, jobs: list[dict]) -> None:
    """Each job in its own process, ``--jobs`` at a time; each writes its cached result."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), str(REPO / "benchmarks")]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < args.jobs:
            job = pending.pop(0)
            jp = Path(job["result"]).with_suffix(".job.json")
            jp.write_text(json.dumps(job))
            argv = [sys.executable, str(Path(__file__).resolve()), *args.argv, "--worker",
                    str(jp)]
            log = open(Path(job["result"]).with_suffix(".log"), "w")
            print(f"[layers] start {job['label']}", flush=True)
            running.append((job, jp, log, subprocess.Popen(argv, env=env, cwd=REPO,
                                                          stdout=log, stderr=log)))
        time.sleep(1.0)
        for item in list(running):
            job, jp, log, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            jp.unlink(missing_ok=True)
            ok = proc.returncode == 0 and Path(job["result"]).exists()
            if not ok:  # cached as a failure (delete the file to retry it)
                Path(job["result"]).write_text(json.dumps(
                    {"family": job["family"], "lr": job["lr"], "role": job["role"],
                     "error": f"exit {proc.returncode}",
                     "log": str(Path(job["result"]).with_suffix(".log"))}, indent=1) + "\n")
            print(f"[layers] {job['label']} {'done' if ok else f'failed (exit {proc.returncode})'}"
                  , flush=True)


def cached(runs: Path, key: str) -> dict | None:
    p = runs / f"{key}.json"
    return json.loads(p.read_text()) if p.exists() else None


def score(r: dict) -> tuple:
    if r is None or "clean" not in r:
        return (-1.0, -1.0)
    return (r["certified"]["36"], r["clean"])


def learned(r: dict) -> bool:
    """A probe that predicts more than one class (a constant classifier's accuracy is its
    class's share: differences between two are noise, not a better lr)."""
    return score(r)[0] >= 0 and r.get("predicted_classes", 2) > 1


def choose_lr(rows: list[dict], default: float) -> dict:
    """Highest validation cert@36 (ties within 0.5 point: higher clean, then smaller lr),
    among the probes that learned; none learned: the row of ``default`` (``--lr``)."""
    ok = [r for r in rows if learned(r)]
    if not ok:
        return min(rows, key=lambda r: (r["lr"] != default, r["lr"]))
    best = max(score(r)[0] for r in ok)
    tied = [r for r in ok if score(r)[0] >= best - TIE]
    top = max(r["clean"] for r in tied)
    return min((r for r in tied if r["clean"] >= top - 1e-12), key=lambda r: r["lr"])


def plan(args, runs: Path, models: Path) -> tuple[list[dict], dict]:
    """The jobs still to run (probes first, then main runs whose lr is known) and the lr
    chosen per family so far."""
    jobs, chosen = [], {}
    probe_s = parse_duration(args.probe_budget)
    for fam in args.families:
        if args.probe_lrs:
            rows = []
            for lr in args.probe_lrs:
                key = run_key(fam, lr, probe_s)
                r = cached(runs, key)
                if r is None:
                    jobs.append({"family": fam, "lr": lr, "budget_s": probe_s, "role": "probe",
                                 "label": key, "attack": 0, "result": str(runs / f"{key}.json")})
                rows.append(r)
            if any(r is None for r in rows):
                continue
            chosen[fam] = choose_lr(rows, args.lr)["lr"]
        else:
            chosen[fam] = args.lr
    for fam, lr in chosen.items():
        key = run_key(fam, lr, args.budget_s)
        if cached(runs, key) is None:
            jobs.append({"family": fam, "lr": lr, "budget_s": args.budget_s, "role": "main",
                         "label": key, "attack": args.attack, "time_steps": True,
                         "save": str(models / f"layers-cifar10-{fam}"),
                         "result": str(runs / f"{key}.json")})
    return jobs, chosen


# ==== report ================================================================================


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _rank(values: dict) -> dict:
    order = sorted(values, key=lambda k: -values[k])
    return {k: i + 1 for i, k in enumerate(order)}


def collect(args, runs: Path) -> dict:
    probe_s = parse_duration(args.probe_budget)
    fams = {}
    for fam in args.families:
        probes = [cached(runs, run_key(fam, lr, probe_s)) for lr in (args.probe_lrs or [])]
        probes = [p for p in probes if p is not None]
        if args.probe_lrs and len(probes) == len(args.probe_lrs):
            lr = choose_lr(probes, args.lr)["lr"]
        elif args.probe_lrs:
            lr = None
        else:
            lr = args.lr
        main = cached(runs, run_key(fam, lr, args.budget_s)) if lr is not None else None
        other = None  # the main run at the default lr, where the probes chose another
        if lr is not None and lr != args.lr:
            other = cached(runs, run_key(fam, args.lr, args.budget_s))
        fams[fam] = {"lr": lr, "probes": probes, "main": main, "default_lr_main": other,
                     "prach_xs_2h": PRACH_XS_2H.get(fam)}
    return fams


def write_report(args, fams: dict) -> None:
    done = {f: d["main"] for f, d in fams.items() if d["main"] and "clean" in d["main"]}
    ours = _rank({f: r["certified"]["36"] for f, r in done.items()})
    prach = _rank({f: fams[f]["prach_xs_2h"]["cert36"] for f in done
                   if fams[f]["prach_xs_2h"]})
    both = [f for f in done if fams[f]["prach_xs_2h"]]
    ours_common = _rank({f: done[f]["certified"]["36"] for f in both})
    rule = (f"lr per family from {{{', '.join(f'{v:g}' for v in args.probe_lrs)}}} by a "
            f"{parse_duration(args.probe_budget) / 60:g}-CPU-minute probe each: the highest "
            "validation cert@36/255 (ties within 0.5 point: higher clean, then smaller lr) "
            "among the probes that predict more than one class; when none does, the default "
            f"lr {args.lr:g}"
            if args.probe_lrs else
            f"one lr for every family, {args.lr:g} (the lr benchmarks/cifar10.py chose on the "
            "validation split for OrthoConv2d); no per-family search")
    res = {"written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "benchmarks/layers_cifar10.py " + " ".join(args.argv),
           "data": DATA_NAME, "split": {"val_size": args.val_size, "seed": args.split_seed},
           "budget_cpu_seconds": args.budget_s, "loss": args.loss, "lr_rule": rule,
           "machine": _machine_info(threads_per_run=args.threads), "families": fams,
           "rank_cert36": ours, "rank_prach": prach}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "layers_cifar10.json").write_text(json.dumps(res, indent=1) + "\n")
    L = [f"# CIFAR-10 (JPEG): onelip's layer families side by side (ConvNet XS, "
         f"{args.budget_s / 60:g} CPU-minutes each)",
         "",
         f"Written by `{res['command']}` on {res['written']}. Every figure is on the "
         f"**{DATA_NAME} validation split** ({args.val_size} of the 50,000 training images, "
         f"fixed seed {args.split_seed}; the test split is never read), in pixel space "
         "(ε = k/255).", "",
         f"Each network: ConvNet XS (width 16) with `layer=<family>`, trained for "
         f"{args.budget_s / 60:g} minutes of its own process's CPU time on one thread, two "
         f"networks at a time; loss `{args.loss}`, Adam, one-cycle over the budget, batch "
         f"{args.batch_size}, clipping at {args.clip:g}, crop + flip, `retract_` after each "
         f"step. **Learning rate rule:** {rule}.", "",
         "| family | class | lr | params | epochs | images/CPU-s | wall min | load "
         "| step ÷ plain twin "
         "| peak RSS MB | clean | cert@36 | cert@72 | cert@108 | attack violations "
         "| Prach XS 2 h: layer, epochs, clean / cert@36 | rank (ours / Prach) |",
         "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for fam, d in fams.items():
        r, p = d["main"], d["prach_xs_2h"]
        pr = f"{p['layer']}, {p['epochs']}, {p['clean']:.1f} / {p['cert36']:.1f}" if p else "—"
        if r is None:
            L.append(f"| {fam} | | {d['lr'] or '—'} | | | | | | | | not run yet | | | | | {pr} | |")
            continue
        if "clean" not in r:
            why = "diverged" if "diverged" in r else f"failed ({r.get('error', '?')})"
            L.append(f"| {fam} | {r.get('class', '')} | {r['lr']:g} | | | | | | | | {why} "
                     f"| | | | | {pr} | |")
            continue
        att = r.get("attack", {})
        rk = f"{ours[fam]}" + (f" / {prach[fam]}" if fam in prach else "")
        L.append(
            f"| {fam} | {r['class']} | {r['lr']:g} | {r['params']:,} | {r['epochs_done']:.2f} "
            f"| {r['images_per_second']:.0f} | {r['train_wall_seconds'] / 60:.1f} "
            f"| {r['load_average_start']:.1f} → {r['load_average_end']:.1f} "
            f"| {r.get('step_ratio_to_plain_twin', float('nan')):.2f} "
            f"| {r['peak_rss_mb']:.0f} | {_pct(r['clean'])}"
            f"{' (one class)' if r.get('predicted_classes') == 1 else ''} "
            f"| {_pct(r['certified']['36'])} "
            f"| {_pct(r['certified']['72'])} | {_pct(r['certified']['108'])} "
            f"| {att.get('violations', '—')} / {att.get('found', '—')} | {pr} | {rk} |")
    L += ["", "Rank = by validation cert@36/255 among the families run here (ours) and by "
          "Prach et al.'s 2 h XS cert@36 among those they compared. Among the families in "
          "both: ours " + ", ".join(f"{f} {ours_common[f]}" for f in sorted(
              ours_common, key=ours_common.get)) + "; Prach "
          + ", ".join(f"{f} {prach[f]}" for f in sorted(prach, key=prach.get)) + ".", "",
          "Columns: 'images/CPU-s' = augmented training images per CPU second of the "
          "network's process; 'wall min' = its training wall-clock time (longer than the "
          "CPU budget when the machine was busy); 'load' = the 1-minute load average at the "
          "start and end of training (2 cores; 2 = the two runs alone): a busy machine also "
          "lowers the images per CPU second (shared caches and memory bandwidth), so runs "
          "under a higher load reached fewer epochs in the same CPU budget; "
          "'step ÷ plain twin' = median time of a "
          "training step at batch 256 on one thread, the network against the same network "
          "with plain `nn.Conv2d`/`nn.Linear` layers (benchmarks/cifar10.py `plain_twin`); "
          "'peak RSS' = the process's maxrss (the 150 MB uint8 data set included); "
          "'attack violations' = points of the first attacked ones whose adversarial found "
          "is closer than their certificate / points attacked successfully: must be 0; "
          "'(one class)': the network predicts a single class on the whole validation split "
          "(it did not learn; its certified accuracy is that class's share).", "",
          "Certificate: the last-layer radius with L_body the product of per-layer certified "
          "bounds (benchmarks/_certify.py): recomputed from the kernel as applied for the "
          "families that are one convolution in eval mode, the layer's own "
          "`lipschitz_bound()` for the others (tested by the suite, with negative controls).",
          ""]
    if any(d["probes"] for d in fams.values()):
        L += ["## Learning-rate probes (validation split)", "",
              "| family | lr | epochs | clean | cert@36 | chosen |",
              "|---|---:|---:|---:|---:|---|"]
        for fam, d in fams.items():
            for p in d["probes"]:
                ok = "clean" in p
                L.append(f"| {fam} | {p['lr']:g} | {p.get('epochs_done', 0):.2f} | "
                         f"{_pct(p['clean']) if ok else 'diverged'} | "
                         f"{_pct(p['certified']['36']) if ok else ''} | "
                         f"{'yes' if p['lr'] == d['lr'] else ''} |")
        L.append("")
    others = {f: d["default_lr_main"] for f, d in fams.items()
              if d.get("default_lr_main") and "clean" in d["default_lr_main"]}
    if others:
        L += [f"## The same budget at the default lr {args.lr:g} (not chosen by the rule)", "",
              "Main runs of an earlier round, before the probes, kept for what the lr choice "
              "changed (same recipe and budget):", "",
              "| family | lr | epochs | clean | cert@36 | chosen lr: clean / cert@36 |",
              "|---|---:|---:|---:|---:|---|"]
        for fam, r in others.items():
            m_ = fams[fam]["main"]
            chosen = (f"{fams[fam]['lr']:g}: {_pct(m_['clean'])} / "
                      f"{_pct(m_['certified']['36'])}" if m_ and "clean" in m_ else "not run")
            L.append(f"| {fam} | {r['lr']:g} | {r.get('epochs_done', 0):.2f} | "
                     f"{_pct(r['clean'])} | {_pct(r['certified']['36'])} | {chosen} |")
        L.append("")
    m = res["machine"]
    L += [f"Machine: {m.get('cpu', '')}, torch {m.get('torch', '')}.", ""]
    (out / "layers_cifar10.md").write_text("\n".join(L))
    print(f"[layers] wrote {out / 'layers_cifar10.md'}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=str, help="CIFAR-10 image folder (DIR/train/<class>/)")
    ap.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    ap.add_argument("--budget", default="20m", help="CPU time per main run (20m)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--probe-lrs", default="", help="comma-separated lrs to probe per family")
    ap.add_argument("--probe-budget", default="3m")
    ap.add_argument("--loss", default="ce:tau=0.25")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--attack", type=int, default=50)
    ap.add_argument("--step-rounds", type=int, default=7)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--train-limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=str, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--runs", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv)]
    if "--worker" in args.argv:
        i = args.argv.index("--worker")
        del args.argv[i:i + 2]
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    args.probe_lrs = [float(v) for v in args.probe_lrs.split(",") if v.strip()]
    args.budget_s = parse_duration(args.budget)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    default_out = (REPO / "benchmarks" / "results").resolve()
    runs = args.runs or args.out / "layers_cifar10_runs"
    models = args.models or ((REPO / "benchmarks" / "models")
                             if args.out.resolve() == default_out else args.out / "models")
    runs.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        if not args.data:
            raise SystemExit("[layers] --data DIR is required (the CIFAR-10 image folder)")
        from onelip import nn as onn

        unknown = [f for f in args.families if f not in onn.CONV_LAYERS]
        if unknown:
            raise SystemExit(f"[layers] unknown families {unknown}; onelip.nn.CONV_LAYERS has "
                             f"{', '.join(onn.CONV_LAYERS)}")
        t0 = time.perf_counter()
        while True:  # probes first; their choice unlocks the main runs
            jobs, _ = plan(args, runs, models)
            if not jobs:
                break
            run_jobs(args, jobs)
        print(f"[layers] all runs done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    write_report(args, collect(args, runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

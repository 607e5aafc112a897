# SPDX-License-Identifier: MIT
"""Dense 1-Lipschitz layers side by side: onelip against nn.Linear and the peers.

    make bench                       # or: .venv/bin/python benchmarks/dense.py [options]

Candidates, all timed in ONE process, interleaved round-robin (the machine is shared):

* ``nn.Linear``                                   (the plain layer: the unit of every ratio)
* ``onelip OrthoLinear``, ``onelip SpectralLinear`` (this working tree, ``src/``)
* ``deel-torchlip SpectralLinear``                (spectral norm + Björck, PyPI)
* ``orthogonium OrthoLinear``                     (power iteration + 12 Björck steps, PyPI)

The peers live in their own virtual environment (default ``benchmarks/.peers-venv``; override
with ``--peers-venv PATH`` or ``ONELIP_PEERS_VENV``). If this interpreter cannot import them,
the script creates that environment when missing (``python -m venv``, then
``pip install torch==2.13.0 deel-torchlip orthogonium``) and re-executes itself inside it with
``PYTHONPATH=src``, so the working tree's onelip and the peers share one process.

Measured, at 512→512 and batch 256 (``--width``, ``--batch``), float32, ``--threads`` 2:

* ``fwd_bwd@init``: ``zero_grad; y = layer(x); ((y - t)**2).mean().backward()`` on a freshly
  constructed layer (every candidate starts orthogonal, the peers' best case);
* ``fwd_bwd@trained``: the same, after 25 training steps (``--train-steps``) of each layer;
* ``step``: one full training step — zero_grad, forward, backward, ``Adam.step()`` and, for
  onelip OrthoLinear, ``retract_()`` (what ``onelip.train.fit`` does after each step);
  these layers keep training through the whole run;
* ``eval``: ``layer(x)`` in eval mode under ``torch.no_grad()``, after one warm-up call.

Every round runs every (measurement, candidate) pair once, ``--reps`` calls each, in a fresh
random order; a ratio is taken within a round (same load) and its median over rounds is
reported with the median and minimum times.

Tightness: the latent weight of each constrained layer is overwritten by a random start
(Gaussian ``randn``, the same ×1000, and an ill-conditioned U·diag(logspace(0,-5))·Vᵀ); then
one training forward (which builds the peers' eval caches), ``retract_()`` for onelip
OrthoLinear, and the exact singular values (float64 SVD) of the operator each layer *applies*,
read from its impulse response ``layer([0; I])``, in eval mode and in train mode; again after
25 Adam steps (lr 1e-3) on a regression task.

Writes ``benchmarks/results/dense.json`` (every sample, machine information) and
``benchmarks/results/dense.md`` (tables, PASS/FAIL per target). ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info as _machine_info  # noqa: E402
from _peers import DEFAULT_PEERS_VENV, REPO, import_working_tree_onelip  # noqa: E402
from _timing import retract, run_rounds, train_steps  # noqa: E402

# Targets of the issue.
TARGET_TRAIN_VS_DEEL = 0.5
TARGET_EVAL_VS_LINEAR = 1.05
TARGET_SIGMA_MIN = 0.999
TOL_SIGMA_MAX = 1e-5  # float32 forward on unit vectors: rounding ~1e-7

LINEAR = "nn.Linear"
O_ORTHO = "onelip OrthoLinear"
O_SPECTRAL = "onelip SpectralLinear"
DEEL = "deel-torchlip SpectralLinear"
ORTHOGONIUM = "orthogonium OrthoLinear"
# The measured alternative: OrthoLinear with its retracted fast path switched off, so that
# every training forward applies the one-step Björck map (onelip's scheme before the fast path).
O_ORTHO_B1 = "onelip OrthoLinear, Björck-1 forward"
CANDIDATES = [LINEAR, O_ORTHO, O_SPECTRAL, DEEL, ORTHOGONIUM]
KINDS = ["fwd_bwd@init", "fwd_bwd@trained", "step", "eval"]
KIND_TITLES = {
    "fwd_bwd@init": "train fwd+bwd, fresh layer",
    "fwd_bwd@trained": "train fwd+bwd, after training",
    "step": "full train step (+Adam, +retract_)",
    "eval": "eval forward (no_grad)",
}


# ==== environment: the peers' venv and the re-exec ==========================================


# ==== layers ================================================================================


def make_layer(name: str, d_in: int, d_out: int, seed: int):
    import torch

    torch.manual_seed(seed)
    if name == LINEAR:
        return torch.nn.Linear(d_in, d_out)
    if name == O_ORTHO:
        from onelip.nn import OrthoLinear

        return OrthoLinear(d_in, d_out)
    if name == O_ORTHO_B1:
        from onelip.nn import OrthoLinear

        class Bjorck1OrthoLinear(OrthoLinear):
            def _retracted(self) -> bool:
                return False

        return Bjorck1OrthoLinear(d_in, d_out)
    if name == O_SPECTRAL:
        from onelip.nn import SpectralLinear

        return SpectralLinear(d_in, d_out)
    if name == DEEL:
        from deel.torchlip import SpectralLinear

        return SpectralLinear(d_in, d_out)
    if name == ORTHOGONIUM:
        from orthogonium.layers.linear import OrthoLinear

        return OrthoLinear(d_in, d_out)
    raise KeyError(name)


def latent_weight(layer):
    """The trainable weight the optimizer updates: ``weight`` for onelip and nn.Linear, the
    parametrization's ``original`` for the peers (torch.nn.utils.parametrize)."""
    import torch.nn.utils.parametrize as P

    if P.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def operator_matrix(layer, d_in: int):
    """The matrix the layer applies, from one batched call on ``[0; I]`` (float64)."""
    import torch

    basis = torch.cat([torch.zeros(1, d_in), torch.eye(d_in)])
    with torch.no_grad():
        out = layer(basis).double()
    return (out[1:] - out[:1]).mT  # (out, in)


def singular_range(layer, d_in: int) -> tuple[float, float]:
    import torch

    s = torch.linalg.svdvals(operator_matrix(layer, d_in))
    return float(s.min()), float(s.max())


class Task:
    """A regression task: x ~ N(0, I), target x Aᵀ with a random A of spectral norm ~1."""

    def __init__(self, d_in: int, d_out: int, batch: int, seed: int):
        import torch

        self.gen = torch.Generator().manual_seed(seed)
        self.a = torch.randn(d_out, d_in, generator=self.gen) / (d_in**0.5 + d_out**0.5)
        self.d_in, self.batch = d_in, batch

    def sample(self):
        import torch

        x = torch.randn(self.batch, self.d_in, generator=self.gen)
        return x, x @ self.a.mT


# ==== timing ================================================================================


def build_timing_callables(args, names: list[str]):
    import torch

    task = Task(args.width, args.width, args.batch, seed=1)
    x, t = task.sample()
    calls: dict[str, dict[str, object]] = {k: {} for k in KINDS}
    keep = []  # keep layers and optimizers alive
    for name in names:
        fresh = make_layer(name, args.width, args.width, seed=0).train()
        # One layer trained with its own loop, then copied: the copies share its state.
        stepper = make_layer(name, args.width, args.width, seed=0)
        opt = train_steps(stepper, Task(args.width, args.width, args.batch, seed=2),
                          args.train_steps, args.lr)
        trained = copy.deepcopy(stepper).train()
        evaluated = copy.deepcopy(stepper).eval()
        stepper.train()
        with torch.no_grad():
            evaluated(x)  # warm-up: builds eval caches
        keep.append((fresh, trained, stepper, opt, evaluated))

        def fwd_bwd(layer):
            def run():
                layer.zero_grad(set_to_none=True)
                (layer(x) - t).square().mean().backward()
            return run

        def step(layer=stepper, opt=opt):
            opt.zero_grad(set_to_none=True)
            (layer(x) - t).square().mean().backward()
            opt.step()
            retract(layer)

        def evaluate(layer=evaluated):
            with torch.no_grad():
                layer(x)

        calls["fwd_bwd@init"][name] = fwd_bwd(fresh)
        calls["fwd_bwd@trained"][name] = fwd_bwd(trained)
        calls["step"][name] = step
        calls["eval"][name] = evaluate
    return calls, keep


def summarize(times, names: list[str]) -> dict:
    out: dict = {}
    for kind in KINDS:
        lin = times[kind][LINEAR]
        deel = times[kind].get(DEEL)
        out[kind] = {}
        for name in names:
            ts = times[kind][name]
            row = {
                "median_ms": 1e3 * statistics.median(ts),
                "min_ms": 1e3 * min(ts),
                "x_linear_median": statistics.median(a / b for a, b in zip(ts, lin)),
                "x_linear_of_mins": min(ts) / min(lin),
            }
            if deel is not None:
                row["x_deel_median"] = statistics.median(a / b for a, b in zip(ts, deel))
                row["x_deel_of_mins"] = min(ts) / min(deel)
            out[kind][name] = row
    return out


# ==== profile of onelip OrthoLinear =========================================================


def profile_onelip_step(args) -> list[dict]:
    """Self-CPU time per op of onelip OrthoLinear's full training step (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    task = Task(args.width, args.width, args.batch, seed=1)
    x, t = task.sample()
    layer = make_layer(O_ORTHO, args.width, args.width, seed=0)
    opt = train_steps(layer, Task(args.width, args.width, args.batch, seed=2),
                      args.train_steps, args.lr)
    n = 20 if not args.quick else 3

    def step():
        opt.zero_grad(set_to_none=True)
        (layer(x) - t).square().mean().backward()
        opt.step()
        layer.retract_()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    rows = []
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]:
        rows.append({"op": e.key, "calls_per_step": e.count / n,
                     "self_ms_per_step": e.self_cpu_time_total / 1e3 / n,
                     "share": e.self_cpu_time_total / total})
    return rows


# ==== tightness =============================================================================


def starts(d_in: int, d_out: int):
    import torch

    gen = torch.Generator().manual_seed(3)

    def spectrum(svals):
        r = min(d_in, d_out)
        u = torch.linalg.qr(torch.randn(d_out, r, generator=gen, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(d_in, r, generator=gen, dtype=torch.float64))[0]
        return ((u * svals) @ v.T).float()

    return {
        "randn": lambda: torch.randn(d_out, d_in, generator=gen),
        "randn*1e3": lambda: 1e3 * torch.randn(d_out, d_in, generator=gen),
        "cond1e5": lambda: spectrum(torch.logspace(0, -5, min(d_in, d_out),
                                                   dtype=torch.float64)),
    }


def tightness(args, names: list[str]) -> dict:
    import torch

    d = args.width
    res: dict = {}
    for start, make in starts(d, d).items():
        res[start] = {}
        w0 = make()  # the same start for every layer
        for name in names:
            if name == LINEAR:
                continue
            layer = make_layer(name, d, d, seed=0)
            with torch.no_grad():
                latent_weight(layer).copy_(w0)
            task = Task(d, d, args.batch, seed=4)
            layer.train()
            x, _ = task.sample()
            layer(x)  # one training forward: the peers' eval caches come from it
            retract(layer)
            row = {}
            layer.eval()
            row["start_eval"] = singular_range(layer, d)
            layer.train()
            row["start_train"] = singular_range(layer, d)
            train_steps(layer, task, args.train_steps, args.lr)
            layer.eval()
            row["trained_eval"] = singular_range(layer, d)
            layer.train()
            row["trained_train"] = singular_range(layer, d)
            res[start][name] = row
            print(f"[bench] tightness {start:10s} {name:30s} "
                  + "  ".join(f"{k} [{a:.6f}, {b:.7f}]" for k, (a, b) in row.items()),
                  flush=True)
    return res


# ==== report ================================================================================


def machine_info(args) -> dict:
    return _machine_info()


def targets(summary: dict, tight: dict) -> list[dict]:
    rows = []
    for name in (O_ORTHO, O_SPECTRAL):
        for kind in ("fwd_bwd@init", "fwd_bwd@trained", "step"):
            v = summary[kind][name]["x_deel_median"]
            rows.append({"target": f"{name}: {KIND_TITLES[kind]} <= "
                                   f"{TARGET_TRAIN_VS_DEEL}x deel-torchlip SpectralLinear",
                         "value": v, "pass": v <= TARGET_TRAIN_VS_DEEL})
        v = summary["eval"][name]["x_linear_median"]
        rows.append({"target": f"{name}: eval forward <= {TARGET_EVAL_VS_LINEAR}x nn.Linear",
                     "value": v, "pass": v <= TARGET_EVAL_VS_LINEAR})
    lo = min(r["start_eval"][0] for r in (tight[s][O_ORTHO] for s in tight))
    lo = min(lo, min(tight[s][O_ORTHO]["trained_eval"][0] for s in tight))
    hi = max(max(r[k][1] for k in r) for r in (tight[s][O_ORTHO] for s in tight))
    rows.append({"target": f"{O_ORTHO}: eval sigma_min >= {TARGET_SIGMA_MIN} from every start "
                           "(min over starts, before and after training)",
                 "value": lo, "pass": lo >= TARGET_SIGMA_MIN})
    rows.append({"target": f"{O_ORTHO}: sigma_max <= 1 + {TOL_SIGMA_MAX:g} (eval and train, "
                           "every start)", "value": hi, "pass": hi <= 1 + TOL_SIGMA_MAX})
    return rows


def write_markdown(path: Path, result: dict) -> None:
    m, a = result["machine"], result["config"]
    s, tight, names = result["timing"], result["tightness"], result["candidates"]
    L = [
        "# Dense 1-Lipschitz layers: onelip vs nn.Linear and the peers",
        "",
        f"Written by `benchmarks/dense.py` on {m['date']} — {m['cpu']}, torch {m['torch']}, "
        f"{m['threads']} threads; deel-torchlip {m['deel-torchlip']}, orthogonium "
        f"{m['orthogonium']}; onelip `{m['onelip_git']}`.",
        f"{a['width']}→{a['width']}, batch {a['batch']}, float32. {a['rounds']} rounds; a "
        f"sample is the mean of {a['reps']} calls (1 for calls over 20 ms); all candidates "
        "interleaved in a fresh random order each round, in one process. × columns: median of "
        "the per-round ratios (same load). The machine is shared (2 cores): medians of times "
        "carry other people's load, minima are closer to the undisturbed cost. Load average "
        f"during the run: {', '.join(f'{x:.1f}' for x in result['load'])}.",
        "",
    ]
    if a.get("quick"):
        L += ["**Smoke run (`--quick`): too few rounds for the verdicts below to mean anything.**",
              ""]
    L += ["## Time", ""]
    for kind in KINDS:
        L += [f"**{KIND_TITLES[kind]}** (`{kind}`)", "",
              "| layer | median ms | min ms | × nn.Linear | × deel-torchlip "
              "| × nn.Linear, min/min |",
              "|---|---:|---:|---:|---:|---:|"]
        for n in names:
            r = s[kind][n]
            L.append(f"| {n} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                     f"{r['x_linear_median']:.2f} | {r['x_deel_median']:.2f} | "
                     f"{r['x_linear_of_mins']:.2f} |")
        L.append("")
    L += [
        "`fwd_bwd@init`: a freshly constructed layer (every candidate starts orthogonal: "
        "deel-torchlip's Björck loop then stops after one iteration, its best case). "
        f"`fwd_bwd@trained`: after {a['train_steps']} Adam steps (lr {a['lr']}) with "
        "each library's own loop (onelip OrthoLinear: `retract_()` after each step). `step`: "
        "zero_grad, forward, backward, `Adam.step()`, `retract_()` (onelip OrthoLinear only), "
        "on layers that keep training through the run.",
        "",
        "## Tightness (exact singular values of the operator each layer applies)",
        "",
        "Latent weight overwritten by a start, one training forward (builds the peers' eval "
        "caches), `retract_()` for onelip OrthoLinear; σ from the float64 SVD of the impulse "
        f"response `layer([0; I])`. Then {a['train_steps']} Adam steps (lr {a['lr']}, "
        "`retract_()` after each for onelip OrthoLinear).",
        "",
        "| start | layer | eval σ_min / σ_max | train σ_min / σ_max | after training: eval "
        "| after training: train |",
        "|---|---|---|---|---|---|",
    ]
    for start in tight:
        for n, r in tight[start].items():
            cells = [f"{r[k][0]:.6f} / {r[k][1]:.7f}" for k in
                     ("start_eval", "start_train", "trained_eval", "trained_train")]
            L.append(f"| {start} | {n} | " + " | ".join(cells) + " |")
    L += ["", "onelip SpectralLinear only claims σ_max = 1 (exactly in eval mode; in training "
          "σ̂ from one power-iteration step lags after the latent is overwritten); its σ_min "
          "is that of the latent. onelip OrthoLinear: eval operator polar(W); train operator the "
          "retracted latent W itself (while W equals the output of the last `retract_()`), "
          f"the one-step Björck map W(1.5I − 0.5WᵀW) otherwise — always, for “{O_ORTHO_B1}”, "
          "the same layer with that fast path switched off (the scheme before it).", ""]
    if result.get("profile"):
        L += ["## Where onelip OrthoLinear's training step spends its time", "",
              "torch.profiler, self CPU time of torch ops per step (same shapes; the value "
              "comparison of the latent runs in NumPy and is not listed):", "",
              "| op | calls/step | ms/step | share |", "|---|---:|---:|---:|"]
        for r in result["profile"]:
            L.append(f"| `{r['op']}` | {r['calls_per_step']:.1f} | "
                     f"{r['self_ms_per_step']:.2f} | {100 * r['share']:.0f}% |")
        L.append("")
    L += ["## Targets", ""]
    for t in result["targets"]:
        L.append(f"- **{'PASS' if t['pass'] else 'FAIL'}** — {t['target']}: {t['value']:.4g}")
    if O_ORTHO_B1 in names:
        L += ["", f"For reference, “{O_ORTHO_B1}” (no target): "
              + ", ".join(f"{KIND_TITLES[k]} ×{s[k][O_ORTHO_B1]['x_deel_median']:.3g} "
                          "deel-torchlip" for k in ("fwd_bwd@init", "fwd_bwd@trained", "step"))
              + f", eval ×{s['eval'][O_ORTHO_B1]['x_linear_median']:.3g} nn.Linear."]
    L.append("")
    path.write_text("\n".join(L))


# ==== main ==================================================================================


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers-venv", type=Path,
                   default=Path(os.environ.get("ONELIP_PEERS_VENV", DEFAULT_PEERS_VENV)),
                   help="virtual environment with torch==2.13.0, deel-torchlip, orthogonium "
                        "(created if missing; default benchmarks/.peers-venv or "
                        "$ONELIP_PEERS_VENV)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                   help="where dense.json and dense.md are written")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--reps", type=int, default=3, help="calls per timed sample")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--train-steps", type=int, default=25)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 5 rounds, 1 call, 1 warm-up round")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: rewrite dense.md in --out from its dense.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        result = json.loads((args.out / "dense.json").read_text())
        write_markdown(args.out / "dense.md", result)
        print(f"[bench] rewrote {args.out / 'dense.md'} from {args.out / 'dense.json'}")
        return 0
    if args.quick:
        args.rounds, args.reps, args.warmup = 5, 1, 1
    import_working_tree_onelip(script=__file__, venv=args.peers_venv)
    import torch

    torch.set_num_threads(args.threads)

    names = list(CANDIDATES)
    from onelip.nn import OrthoLinear

    if hasattr(OrthoLinear, "_retracted"):
        names.insert(2, O_ORTHO_B1)
    t0 = time.perf_counter()
    tight = tightness(args, names)
    print(f"[bench] tightness done in {time.perf_counter() - t0:.0f} s", flush=True)
    calls, _keep = build_timing_callables(args, names)
    print(f"[bench] timing set-up done at {time.perf_counter() - t0:.0f} s", flush=True)
    times, load, reps_used = run_rounds(calls, KINDS, names, args.rounds, args.reps,
                                        args.warmup, args.seed, slow_s=0.02)
    summary = summarize(times, names)
    print(f"[bench] timing done at {time.perf_counter() - t0:.0f} s", flush=True)
    prof = profile_onelip_step(args)
    result = {
        "machine": machine_info(args),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "candidates": names,
        "timing": summary,
        "tightness": tight,
        "profile": prof,
        "load": load,
        "reps_per_sample": reps_used,
        "samples_s": times,
    }
    result["targets"] = targets(summary, tight)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dense.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(args.out / "dense.md", result)
    for kind in KINDS:
        print(f"[bench] {KIND_TITLES[kind]}: " + ", ".join(
            f"{n} x{summary[kind][n]['x_linear_median']:.2f}" for n in names))
    for t in result["targets"]:
        print(f"[bench] {'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']:.4g}")
    print(f"[bench] wrote {args.out / 'dense.json'} and {args.out / 'dense.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

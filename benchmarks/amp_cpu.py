# SPDX-License-Identifier: MIT
"""bf16 autocast on the CPU: the training step of every model preset with and without it,
onelip's network and its plain twin, side by side (issue 21).

    .venv/bin/python benchmarks/amp_cpu.py                        # writes results/amp_cpu.*
    .venv/bin/python benchmarks/amp_cpu.py --rounds 1 --batch-size 8 --out /tmp/amp  # smoke

Each preset of :data:`onelip.models.PRESETS` (10 classes, CIFAR-sized 3×32×32 input; the
mlp on the flattened input) is timed for one training step (forward, τ-CE loss on float32
logits, backward, Adam step, ``retract_``) at ``--batch-size`` (256) on ``--threads`` (1)
torch threads: float32, and the forward under ``torch.autocast("cpu", torch.bfloat16)``,
which is what ``TrainConfig(amp=True)`` does. The plain twin (``onelip.export.plain`` of the
same network: ``nn.Conv2d`` / ``nn.Linear`` of the same shapes) is timed the same way, so the
ratio separates what bf16 does to the convolutions from what it does to onelip's
constraint math (which stays float32 under autocast). Rounds are interleaved in a fresh
random order (``benchmarks/_timing.run_rounds``); a figure is the median over rounds.

The measurement forces autocast whatever :func:`onelip.train.config.bf16_support` says, so
that the file shows why ``--amp`` is refused on a CPU without native bf16 (AVX-512 BF16 or
AMX): there oneDNN emulates bf16 and the step gets slower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402
from _peers import REPO  # noqa: E402
from _timing import run_rounds  # noqa: E402

INPUT = (3, 32, 32)


def cases() -> list[tuple[str, str, dict]]:
    """(label, model name, config fields) of every preset, and the mlp."""
    from onelip import models

    out = [("mlp", "mlp", {"in_features": 3 * 32 * 32})]
    for model in models.MODELS:
        for preset in models.presets(model):
            out.append((f"{model}:{preset}", model,
                        {"input_shape": INPUT, **models.presets(model)[preset]}))
    return out


def make_step(model, x, y, *, amp: bool, onelip_net: bool):
    import torch

    from onelip.nn.utils import batched_kernel_build, retract_

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step():
        kernels = batched_kernel_build(model) if onelip_net else nullcontext()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), kernels:
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if onelip_net:
            retract_(model)

    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated labels (default: all)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)

    import torch

    from onelip import models
    from onelip.export import plain
    from onelip.train.config import bf16_support

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, *INPUT)
    y = torch.randint(0, 10, (args.batch_size,))
    wanted = {s for s in args.only.split(",") if s}
    calls: dict = {"step": {}}
    names = []
    for label, model_name, fields in cases():
        if wanted and label not in wanted:
            continue
        net, _ = models.build(model_name, num_outputs=10, **fields)
        twin = plain.to_plain(net)
        for p in twin.parameters():
            p.requires_grad_(True)
        for kind, model, is_onelip in (("onelip", net, True), ("plain", twin, False)):
            for amp in (False, True):
                key = f"{label}|{kind}|{'bf16' if amp else 'fp32'}"
                calls["step"][key] = make_step(model, x, y, amp=amp, onelip_net=is_onelip)
                names.append(key)
    times, load, _ = run_rounds(calls, ["step"], names, rounds=args.rounds, reps=1,
                                warmup=args.warmup, seed=0)
    med = {k: statistics.median(v) for k, v in times["step"].items()}
    ok, why = bf16_support("cpu")
    rows = []
    for label, _, _ in cases():
        if wanted and label not in wanted:
            continue
        r = {"preset": label}
        for kind in ("onelip", "plain"):
            f32, b16 = med[f"{label}|{kind}|fp32"], med[f"{label}|{kind}|bf16"]
            r[f"{kind}_fp32_ms"], r[f"{kind}_bf16_ms"] = 1e3 * f32, 1e3 * b16
            r[f"{kind}_bf16_ratio"] = b16 / f32
        r["onelip_over_plain_fp32"] = r["onelip_fp32_ms"] / r["plain_fp32_ms"]
        rows.append(r)
    result = {"machine": machine_info(cpu_capability=torch.backends.cpu.get_cpu_capability(),
                                      bf16_native=ok, bf16_refusal=why),
              "batch_size": args.batch_size, "threads": args.threads, "rounds": args.rounds,
              "load_average": load, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "amp_cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    m = result["machine"]
    lines = ["# bf16 autocast on the CPU: training step per model preset", "",
             f"Written by `benchmarks/amp_cpu.py` on {m['date']}: {m['cpu']}, torch "
             f"{m['torch']}, CPU capability {m['cpu_capability']}, {args.threads} thread(s), "
             f"batch {args.batch_size}, 3×32×32 input, median of {args.rounds} interleaved "
             f"rounds (load average {min(load):.1f}–{max(load):.1f}).", "",
             ("**Native bf16: yes** — `--amp` is accepted on this CPU." if ok else
              f"**Native bf16: no** — `--amp` is refused on this CPU: {why}."), "",
             "| preset | onelip fp32 ms | onelip bf16 ms | bf16 / fp32 | plain fp32 ms | "
             "plain bf16 ms | bf16 / fp32 | onelip / plain (fp32) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['onelip_fp32_ms']:.1f} | {r['onelip_bf16_ms']:.1f} "
                     f"| {r['onelip_bf16_ratio']:.2f} | {r['plain_fp32_ms']:.1f} | "
                     f"{r['plain_bf16_ms']:.1f} | {r['plain_bf16_ratio']:.2f} | "
                     f"{r['onelip_over_plain_fp32']:.2f} |")
    lines += ["", "bf16 / fp32 < 1: autocast pays. The plain twin has the same convolutions "
              "without onelip's constraint math, which stays float32 under autocast."]
    (args.out / "amp_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# SPDX-License-Identifier: MIT
"""Batched kernel builds (issue 11, "GPU speed"): the training kernels of every OrthoConv2d of a
network built layer by layer, or group by group (``onelip.nn.batched_kernel_build``, what
``onelip.train.fit`` does).

For each network (lipconvnet XS and S, the paper's VGG): the number of operations (aten calls,
counted by the profiler: on a GPU, about the number of kernel launches) of building every
kernel with its backward and of ``retract_``, and the time of the build and of a full training
step (forward, backward, Adam, retraction) on this machine, per-layer and batched interleaved
in random order (``_timing.run_rounds``). Writes ``benchmarks/results/kernel_build.{json,md}``.

    python benchmarks/kernel_build.py [--device cuda] [--threads 1,2] [--rounds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _machine import machine_info  # noqa: E402
from _timing import run_rounds  # noqa: E402

NETWORKS = {  # name -> (model, preset)
    "lipconvnet XS": ("lipconvnet", "xs"),
    "lipconvnet S": ("lipconvnet", "s"),
    "paper VGG (bethune-vgg)": ("convnet", "bethune-vgg"),
}


def build(model: str, preset: str, device: str):
    import onelip.models as M

    extra = {"input_shape": (3, 32, 32)} if model == "convnet" else {}
    net, _ = M.build(model, **M.presets(model)[preset], **extra)
    return net.to(device).train()


# aten calls that launch no device kernel: views, metadata and allocations.
NO_LAUNCH = {"aten::" + n for n in (
    "as_strided", "view", "reshape", "_reshape_alias", "transpose", "permute", "unsqueeze",
    "squeeze", "expand", "resolve_conj", "resolve_neg", "alias", "t", "select", "slice",
    "detach", "empty", "empty_strided", "empty_like", "lift_fresh", "_unsafe_view", "unbind",
    "split", "chunk", "narrow", "diagonal", "mT", "numpy_T", "to", "_to_copy_view",
    "is_nonzero", "item", "_local_scalar_dense", "result_type", "contiguous", "flatten",
    "unflatten", "movedim", "expand_as", "view_as", "broadcast_to", "squeeze_", "unsqueeze_",
    "set_", "conj", "_conj", "_neg_view", "zeros_like_view")}


def aten_ops(fn) -> tuple[int, int]:
    """(aten calls, those of them that can launch a device kernel: no views, allocations)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ev = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    return sum(e.count for e in ev), sum(e.count for e in ev if e.key not in NO_LAUNCH)


def measure(name: str, args, *, timing: bool = True) -> dict:
    import torch

    from onelip.nn import OrthoConv2d
    from onelip.nn.utils import batched_kernel_build, retract_

    model, preset = NETWORKS[name]
    net = build(model, preset, args.device)
    convs = [m for m in net.modules() if isinstance(m, OrthoConv2d)]
    groups = {m._batch_key() for m in convs}
    cuda = args.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def kernels(batched: bool):
        def run():
            with batched_kernel_build(net) if batched else contextlib.nullcontext():
                ks = [m._train_kernel() for m in convs]
            sum(k.sum() for k in ks).backward()
            sync()
        return run

    def retract_per_layer():
        for m in convs:  # one layer at a time, what retract_ did before batching
            OrthoConv2d.retract_(m)
        sync()

    def retract_batched():
        retract_(net)
        sync()

    x = torch.rand(args.batch, 3, 32, 32, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)

    def step(batched: bool):
        def run():
            with batched_kernel_build(net) if batched else contextlib.nullcontext():
                out = net(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            (retract_batched if batched else retract_per_layer)()
        return run

    row = {"network": name, "model": model, "preset": preset, "ortho_convs": len(convs),
           "groups": len(groups),
           "ops": {"build per-layer": aten_ops(kernels(False)),
                   "build batched": aten_ops(kernels(True)),
                   "retract per-layer": aten_ops(retract_per_layer),
                   "retract batched": aten_ops(retract_batched)},
           "times_ms": {}}
    calls = {"build": {"per-layer": kernels(False), "batched": kernels(True)},
             "step": {"per-layer": step(False), "batched": step(True)}}
    for threads in args.threads if timing else ():
        torch.set_num_threads(threads)
        times, load, _ = run_rounds(calls, ["build", "step"], ["per-layer", "batched"],
                                    args.rounds, 1, 2, args.seed)
        row["times_ms"][str(threads)] = {
            k: {n: 1e3 * statistics.median(v) for n, v in d.items()} for k, d in times.items()}
        row["times_ms"][str(threads)]["ratio"] = {
            k: statistics.median(b / a for a, b in zip(d["per-layer"], d["batched"]))
            for k, d in times.items()}
        row["times_ms"][str(threads)]["load"] = load
        print(f"[bench] {name}, {threads} thread(s): {row['times_ms'][str(threads)]}",
              flush=True)
    return row


def write(out: Path, res: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_build.json").write_text(json.dumps(res, indent=1) + "\n")
    m = res["machine"]
    L = ["# Batched kernel builds: every OrthoConv2d of a network built layer by layer or "
         "group by group", "",
         f"Written by `{res['command']}` on {res['written']} ({res['seconds']:.0f} s) — "
         f"{m.get('cpu', '?')}, device `{res['device']}`, torch {m.get('torch', '?')}, "
         f"onelip `{m.get('onelip_git', '?')}`.", "",
         "*Batched*: `onelip.nn.batched_kernel_build` around the forward (the layers of equal "
         "latent shapes built in one batched call per group) and `onelip.nn.retract_` "
         "(one float64 Cholesky QR per latent and group), what `onelip.train.fit` runs. "
         "*Per-layer*: each layer builds its own kernel and is retracted on its own "
         "(onelip before this change).", "",
         "## Operations", "",
         "aten calls counted by the profiler, all of them and (in brackets) those that can "
         "launch a device kernel (views, reshapes and allocations left out: about the kernel "
         "launches on a GPU).", "",
         "| network | OrthoConv2d | groups | build+backward per-layer | batched | × | "
         "retract per-layer | batched | × |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(v):
        return f"{v[0]:,} ({v[1]:,})"

    def ratio(a, b):
        return f"×{b[0] / a[0]:.2f} (×{b[1] / a[1]:.2f})"

    for r in res["rows"]:
        o = r["ops"]
        L.append(f"| {r['network']} | {r['ortho_convs']} | {r['groups']} | "
                 f"{cell(o['build per-layer'])} | {cell(o['build batched'])} | "
                 f"{ratio(o['build per-layer'], o['build batched'])} | "
                 f"{cell(o['retract per-layer'])} | {cell(o['retract batched'])} | "
                 f"{ratio(o['retract per-layer'], o['retract batched'])} |")
    L += ["", f"## Time on `{res['device']}` (median of {res['rounds']} interleaved rounds; "
          f"× = median of per-round ratios batched / per-layer; step at batch "
          f"{res['batch']}, 32×32×3)", "",
          "| network | threads | kernels+backward per-layer ms | batched ms | × | "
          "train step per-layer ms | batched ms | × | load |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        for th, t in r["times_ms"].items():
            L.append(f"| {r['network']} | {th} | {t['build']['per-layer']:.1f} | "
                     f"{t['build']['batched']:.1f} | ×{t['ratio']['build']:.2f} | "
                     f"{t['step']['per-layer']:.1f} | {t['step']['batched']:.1f} | "
                     f"×{t['ratio']['step']:.2f} | "
                     f"{', '.join(f'{v:.1f}' for v in t['load'])} |")
    (out / "kernel_build.md").write_text("\n".join(L) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated torch thread counts (CPU)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(NETWORKS), help="comma-separated networks")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--ops-only", action="store_true",
                   help="recount the operations into the existing kernel_build.json")
    args = p.parse_args(argv)
    args.threads = [int(t) for t in str(args.threads).split(",")]
    if args.device.startswith("cuda"):
        args.threads = args.threads[:1]
    t0 = time.time()
    import torch

    if args.ops_only:
        res = json.loads((args.out / "kernel_build.json").read_text())
        for r in res["rows"]:
            r["ops"] = measure(r["network"], args, timing=False)["ops"]
        write(args.out, res)
        print(f"[bench] recounted the operations into {args.out / 'kernel_build.md'}")
        return 0

    torch.manual_seed(args.seed)
    res = {"command": "python benchmarks/kernel_build.py " + " ".join(argv or sys.argv[1:]),
           "device": args.device, "rounds": args.rounds, "batch": args.batch, "rows": []}
    for n in args.only.split(","):  # the files are rewritten after each network
        res["rows"].append(measure(n, args))
        res.update(written=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=time.time() - t0,
                   machine=machine_info())
        write(args.out, res)
    print(f"[bench] wrote {args.out / 'kernel_build.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

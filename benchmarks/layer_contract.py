# SPDX-License-Identifier: MIT
"""What the 0.3 layer contract costs (issue 19: the layers moved onto ``ConstrainedLayer``; the
forward now dispatches through its ``forward`` / ``train_forward`` / ``eval_forward``): the same
networks timed with the sources of a git revision (default: the 0.2 tip, ``fd7080f``) and with
this tree, each in its own subprocess, alternating A B A B ... so that machine load falls on
both alike.

Per network and mode: the median over rounds of the best per-call time within a round (a
training step: forward, backward, Adam, retraction; an eval forward without gradients), one
torch thread. Writes ``benchmarks/results/layer_contract.{json,md}``.

    python benchmarks/layer_contract.py [--base fd7080f] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _machine import machine_info  # noqa: E402

# The timed program, run with PYTHONPATH at one version's src/; prints one JSON line.
PROGRAM = r'''
import json, sys, time
import torch
torch.set_num_threads(1)
import onelip.nn as onn
try:
    from onelip.nn.utils import retract_
except ImportError:  # 0.2
    from onelip.nn import retract_

def nets():
    torch.manual_seed(0)
    yield "dense MLP 64 (overhead-bound), batch 8", onn.Sequential(
        onn.OrthoLinear(64, 64), onn.MaxMin(), onn.OrthoLinear(64, 64), onn.MaxMin(),
        onn.SLLBlock(64), onn.OrthoLinear(64, 10)), torch.randn(8, 64), 200
    yield "dense MLP 256, batch 256", onn.Sequential(
        onn.OrthoLinear(256, 256), onn.MaxMin(), onn.SpectralLinear(256, 256), onn.MaxMin(),
        onn.SLLBlock(256), onn.FrobeniusLinear(256, 10)), torch.randn(256, 256), 20
    yield "conv 16 ch 16x16, batch 64", onn.Sequential(
        onn.OrthoConv2d(16, 16), onn.MaxMin(), onn.SpectralConv2d(16, 16, input_size=(16, 16)),
        onn.MaxMin(), onn.SLLConv2d(16), onn.Flatten(), onn.OrthoLinear(16 * 16 * 16, 10)
    ), torch.randn(64, 16, 16, 16), 5

def best(fn, n):
    out = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out = min(out, (time.perf_counter() - t0) / n)
    return out

res = {}
for name, net, x, n in nets():
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    def step():
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        retract_(net)
    step()
    train = best(step, n)
    net.eval()
    with torch.no_grad():
        net(x)
        ev = best(lambda: net(x), 4 * n)
    res[name] = {"train_step_s": train, "eval_forward_s": ev}
import onelip
print(json.dumps({"version": onelip.__version__, "times": res}))
'''


def _sources(rev: str, into: Path) -> Path:
    """The ``src/`` of git revision ``rev``, unpacked into ``into``."""
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _time(src: Path) -> dict:
    env = {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # {"version": ..., "times": {...}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="fd7080f", help="git revision to compare with (0.2 tip)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base_src = _sources(args.base, Path(tmp))
        rounds: dict[str, list[dict]] = {"base": [], "this": []}
        for r in range(args.rounds):
            for key, src in (("base", base_src), ("this", ROOT / "src")):
                rounds[key].append(_time(src))
                print(f"round {r + 1}/{args.rounds} {key} done", file=sys.stderr)
    versions = {k: sorted({r["version"] for r in v}) for k, v in rounds.items()}
    assert versions["base"] != versions["this"], f"both sides ran the same sources: {versions}"
    rows = []
    for net in rounds["base"][0]["times"]:
        for what in ("train_step_s", "eval_forward_s"):
            a = statistics.median(r["times"][net][what] for r in rounds["base"])
            b = statistics.median(r["times"][net][what] for r in rounds["this"])
            rows.append({"network": net, "measure": what, "base_s": a, "this_s": b,
                         "ratio": b / a})
    result = {"machine": machine_info(torch_threads=1), "base": args.base,
              "versions": versions,
              "rounds": args.rounds, "rows": rows, "raw": rounds}
    out = HERE / "results"
    (out / "layer_contract.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# The 0.3 layer contract against 0.2: time per call", "",
             f"Base: git `{args.base}` (0.2); this: the working tree. {args.rounds} rounds, "
             "alternating; median over rounds of the best of 3 within a round; one torch "
             "thread. Ratio = this / base (below 1: faster).", "",
             "| network | measure | 0.2 | 0.3 | ratio |", "|---|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['network']} | {row['measure'].removesuffix('_s')} | "
                     f"{row['base_s'] * 1e3:.3f} ms | {row['this_s'] * 1e3:.3f} ms | "
                     f"{row['ratio']:.3f} |")
    m = result["machine"]
    lines += ["", f"Machine: {m.get('cpu', m)}", ""]
    (out / "layer_contract.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

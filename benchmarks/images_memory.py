# SPDX-License-Identifier: MIT
"""Peak memory (RSS) of an image folder through onelip, before and after the folder and npz
pipelines kept their images as uint8 (issue 23, item 10).

Each measurement is a child process (``os.wait4`` gives its own peak RSS, ``ru_maxrss``) that
imports onelip from one source tree: ``--before`` (a ``git worktree`` of the commit before
the change) or ``--after`` (this checkout). Three stages, each in a fresh process:

* ``cold load``: ``onelip.data.load("folder:DIR")`` into an empty cache (Pillow decodes every
  file);
* ``load``: the same from the cache;
* ``train``: ``onelip train --data folder:DIR --model lipconvnet --set preset=xs
  --val-fraction 0.1`` (the command a user runs), stopped after ``--steps`` training steps:
  the data, the validation split, fit's copy on the device, the model, Adam and a step's
  activations are all alive by then.

Writes the key ``peak_rss`` of ``benchmarks/results/images.json`` and the section "Peak
memory" of ``images.md`` (``benchmarks/images.py`` keeps both when it rewrites the files).

    git worktree add /tmp/before <commit before the change>
    nice -n 19 python benchmarks/images_memory.py --data /tmp/cifar --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## Peak memory (issue 23)"

# The child: the stage, the data folder, the steps, a scratch folder (argv[1:5]).
CHILD = r"""
import os, sys
stage, data, steps, scratch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import torch
torch.set_num_threads(1)
if stage in ("cold load", "load"):
    from onelip import data as odata
    d = odata.load(f"folder:{data}", progress=False)
    print("images", *d.x_train.shape, d.x_train.dtype, file=sys.stderr)
    raise SystemExit(0)
import importlib
sources = importlib.import_module("onelip.train.sources")  # the module, not fit's function
batches = sources._Tensors.batches

def limited(self, batch_size, gen, ddp):  # the training source (gen given): stop after steps
    for i, b in enumerate(batches(self, batch_size, gen, ddp)):
        if gen is not None and i == steps:
            print(f"stopped after {steps} steps", file=sys.stderr)
            raise SystemExit(0)
        yield b

sources._Tensors.batches = limited
from onelip.cli import main
raise SystemExit(main(["train", "--data", f"folder:{data}", "--model", "lipconvnet", "--set",
                       "preset=xs", "--val-fraction", "0.1", "--epochs", "1", "--batch-size",
                       "128", "--quiet", "--out", os.path.join(scratch, "run")]))
"""


def measure(src: Path, stage: str, data: str, steps: int, cache: Path) -> dict:
    """Peak RSS (bytes) and CPU seconds of one stage in a fresh child importing ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "ONELIP_CACHE": str(cache),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, stage, data, str(steps), scratch],
                                env=env, stderr=subprocess.PIPE, text=True)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"[images_memory] {stage} with {src} failed ({proc.returncode}):\n{err}")
    return {"peak_rss_bytes": usage.ru_maxrss * 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": time.perf_counter() - t0, "log": err.strip().splitlines()[-3:]}


def section(rss: dict, timings_at: str | None = None) -> list[str]:
    """The "Peak memory" section of images.md from the ``peak_rss`` record; ``timings_at``:
    the onelip revision the timings above it were measured at."""
    mb = 2 ** 20
    L = [SECTION, "",
         f"Written by `{rss['command']}` on {rss['written']}: each stage a fresh child process "
         f"(one torch thread), its own peak resident set (`ru_maxrss` from `os.wait4`). Before: "
         f"onelip `{rss['before_commit']}`; after: onelip `{rss['after_commit']}`. Data: "
         f"{rss['images']:,} images of `{rss['data']}` ({rss['pixels_bytes'] / 1e6:.0f} MB "
         f"of uint8 pixels, {4 * rss['pixels_bytes'] / 1e6:.0f} MB as float32); "
         f"train = `onelip train --data folder:{rss['data']} --model lipconvnet --set preset=xs "
         f"--val-fraction 0.1 --batch-size 128`, stopped after {rss['steps']} steps.", "",
         "| stage | before: peak RSS | after: peak RSS | after / before |",
         "|---|---:|---:|---:|"]
    for stage in rss["stages"]:
        b, a = rss["before"][stage]["peak_rss_bytes"], rss["after"][stage]["peak_rss_bytes"]
        L.append(f"| {stage} | {b / mb:,.0f} MiB | {a / mb:,.0f} MiB | {a / b:.2f} |")
    L += ["", "Before, `load_folder` returned float32 pixels, and the "
          "validation split and fit's packing back to uint8 each copied them; after, the "
          "DataSplit holds the uint8 pixels of the cache and each batch becomes float32 on "
          "the device (`onelip.data.as_float` for what is certified)."
          + (f" The timings above were measured at onelip `{timings_at}`." if timings_at
             else "")]
    return L


def _commit(src: Path) -> str:
    out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=src, text=True,
                         capture_output=True).stdout.strip()
    return out or "unknown"


def write(out: Path, rss: dict) -> None:
    """Add ``peak_rss`` to images.json and the section to images.md (replacing older ones)."""
    js = out / "images.json"
    res = json.loads(js.read_text()) if js.is_file() else {}
    res["peak_rss"] = rss
    js.write_text(json.dumps(res, indent=1) + "\n")
    md = out / "images.md"
    text = md.read_text() if md.is_file() else "# The image pipeline\n"
    text = text.split("\n" + SECTION)[0].rstrip("\n") + "\n"
    at = res.get("machine", {}).get("onelip_git")
    md.write_text(text + "\n" + "\n".join(section(rss, at)) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="an image folder (folder:DIR)")
    p.add_argument("--before", required=True, type=Path, help="src/ of the code before")
    p.add_argument("--after", type=Path, default=HERE.parent / "src", help="src/ of the code "
                   "after (default: this checkout)")
    p.add_argument("--steps", type=int, default=30, help="training steps before stopping")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    stages = ("cold load", "load", "train")
    rss: dict = {"command": "python benchmarks/images_memory.py "
                 + " ".join(argv if argv is not None else sys.argv[1:]),
                 "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "data": args.data,
                 "steps": args.steps, "stages": list(stages),
                 "before_commit": _commit(args.before), "after_commit": _commit(args.after)}
    partial = args.out / "images_memory.partial.json"  # stages measured by a stopped run
    done = json.loads(partial.read_text()) if partial.is_file() else {}
    if done.get("key") != [str(args.before), str(args.after), args.data, args.steps]:
        done = {"key": [str(args.before), str(args.after), args.data, args.steps]}
    for name, src in (("before", args.before), ("after", args.after)):
        with tempfile.TemporaryDirectory() as cache:
            rss[name] = {}
            for stage in stages:
                if stage != "cold load" and stage in done.get(name, {}) and \
                        "cold load" in done[name]:
                    rss[name][stage] = done[name][stage]
                    continue
                if stage == "cold load" and all(s in done.get(name, {}) for s in stages):
                    rss[name][stage] = done[name][stage]
                    continue
                rss[name][stage] = measure(src, stage, args.data, args.steps, Path(cache))
                done.setdefault(name, {})[stage] = rss[name][stage]
                partial.write_text(json.dumps(done))
                r = rss[name][stage]
                print(f"{name} {stage}: peak RSS {r['peak_rss_bytes'] / 2 ** 20:,.0f} MiB, "
                      f"CPU {r['cpu_s']:.1f} s", flush=True)
    partial.unlink(missing_ok=True)
    line = next(x for x in rss["after"]["load"]["log"] if x.startswith("images "))
    rss["images"], rss["pixels_bytes"] = int(line.split()[1]), int(line.split()[1]) * int(
        line.split()[2])  # uint8: a byte a value
    write(args.out, rss)
    print("\n".join(section(rss)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# SPDX-License-Identifier: MIT
"""The image pipeline's speed targets (issue 11): decoding an image folder the first time
(< 1 minute for the 50,000 CIFAR-10 JPEGs), reading it back from the cache (< 2 s), and the
on-device augmentation (< 5 % of a training step).

Each stage is timed as a user meets it: ``read_image_folder`` into a fresh cache (cold), then
from the cache; ``onelip.data.load("folder:DIR")`` (cache read, uint8 DataSplit, the split
checks); and ``fit``'s copy of the training set to the device (uint8, as loaded). The
augmentation (crop with padding 4 + flip, uint8 → float) is timed against a full training
step of lipconvnet XS (``batched_kernel_build`` forward, backward, Adam, ``retract_``) at the
same batch. Writes ``benchmarks/results/images.{json,md}``.

    python benchmarks/images.py --data /tmp/cifar/train [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _machine import machine_info  # noqa: E402

TARGETS = {"cold decode": 60.0, "from the cache": 2.0, "augmentation share": 0.05}


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="an image folder (DIR/<class>/)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from onelip import data as odata
    from onelip import models as M
    from onelip.data.augment import augment
    from onelip.data.images import read_image_folder
    from onelip.nn.utils import batched_kernel_build, retract_
    from onelip.train import _Tensors

    res: dict = {"command": "python benchmarks/images.py " + " ".join(argv or sys.argv[1:]),
                 "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "data": str(args.data),
                 "device": args.device, "threads": args.threads, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ONELIP_CACHE"] = cache
        t = time.perf_counter()
        arrays = read_image_folder(args.data, progress=False)
        res["cold decode s"] = time.perf_counter() - t
        res["images"] = int(arrays.x.shape[0])
        res["shape"] = list(arrays.x.shape[1:])
        res["cache MB"] = sum(f.stat().st_size for f in Path(cache).rglob("*")
                              if f.is_file()) / 2 ** 20
        ts, _ = timed(lambda: read_image_folder(args.data, progress=False), args.repeats)
        res["cached read s"] = ts
        ts, split = timed(lambda: odata.load(f"folder:{args.data}", progress=False),
                          args.repeats)
        res["load s"] = ts
        device = torch.device(args.device)
        ts, _ = timed(lambda s=split: _Tensors(s.x_train, s.y_train, device), args.repeats)
        res["fit packing s"] = ts
        del split
    x = torch.from_numpy(arrays.x[: args.batch * 4]).to(device)
    y = torch.from_numpy(arrays.y[: args.batch * 4]).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    idx = torch.arange(args.batch, device=device)
    net, _ = M.build("lipconvnet", **M.presets("lipconvnet")["xs"])
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def aug():
        out = augment(x[idx], ("crop", "flip"), generator=g).float().div_(255)
        sync()
        return out

    def step():
        xb = aug()
        with batched_kernel_build(net):
            out = net(xb)
        loss = torch.nn.functional.cross_entropy(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        retract_(net)
        sync()

    step()
    aug_s, step_s = [], []
    for _ in range(args.repeats):  # interleaved: same load
        aug_s += timed(aug, 3)[0]
        step_s += timed(step, 1)[0]
    res["augment ms"] = [1e3 * v for v in aug_s]
    res["step ms"] = [1e3 * v for v in step_s]
    med = statistics.median
    share = med(aug_s) / med(step_s)
    res["augmentation share"] = share
    res["machine"] = machine_info()
    rows = [("cold decode", res["cold decode s"], "first read: Pillow decode of every file "
             "+ writing the uint8 cache"),
            ("from the cache", med(res["cached read s"]), "`read_image_folder` from the cache "
             "(fingerprint of the listing + reading the uint8 arrays)"),
            ("`onelip.data.load` from the cache", med(res["load s"]), "+ uint8 DataSplit + "
             "split checks"),
            ("fit's data on the device", med(res["fit packing s"]), "the uint8 pixels moved "
             "to the device as they are (float per batch)")]
    res["targets"] = {
        "cold decode": res["cold decode s"] < TARGETS["cold decode"],
        "from the cache": med(res["load s"]) + med(res["fit packing s"])
        < TARGETS["from the cache"],
        "augmentation share": share < TARGETS["augmentation share"]}
    args.out.mkdir(parents=True, exist_ok=True)
    old = args.out / "images.json"  # the peak memory of images_memory.py is kept
    if old.is_file() and "peak_rss" in json.loads(old.read_text()):
        res["peak_rss"] = json.loads(old.read_text())["peak_rss"]
    (args.out / "images.json").write_text(json.dumps(res, indent=1) + "\n")
    m = res["machine"]
    L = ["# The image pipeline: decoding, the cache, augmentation", "",
         f"Written by `{res['command']}` on {res['written']} — {m['cpu']} ({m['cpu_count']} "
         f"CPUs), {args.threads} torch threads, device `{args.device}`, torch {m['torch']}, "
         f"onelip `{m['onelip_git']}`, load average at the end {m['load_average']:.2f}.", "",
         f"{res['images']:,} images {tuple(res['shape'])} (C, H, W) of `{args.data}`; cache "
         f"{res['cache MB']:.0f} MB (uint8 .npz, no pickles). Medians of {args.repeats} "
         "repeats (the cold decode: one, into a fresh cache; the files themselves may sit in "
         "the operating system's page cache, so a first read from a cold disk adds its read "
         "time).", "",
         "| stage | seconds | what |", "|---|---:|---|"]
    L += [f"| {name} | {v:.2f} | {what} |" for name, v, what in rows]
    warm = med(res["load s"]) + med(res["fit packing s"])
    L += ["", f"Augmentation (crop, padding 4, + flip, uint8 → float32) of a batch of "
          f"{args.batch}: {med(aug_s) * 1e3:.2f} ms; a full training step of lipconvnet XS "
          f"at that batch: {med(step_s) * 1e3:.0f} ms; share {share * 100:.2f} %.", "",
          "## Targets (issue 11)", "",
          "| target | measured | met |", "|---|---|---|",
          f"| decoding the images the first time < 60 s | {res['cold decode s']:.1f} s | "
          f"{'yes' if res['targets']['cold decode'] else 'no'} |",
          f"| from the cache < 2 s (data ready for `fit`: `load` + packing) | {warm:.2f} s | "
          f"{'yes' if res['targets']['from the cache'] else 'no'} |",
          f"| augmentation < 5 % of a training step | {share * 100:.2f} % | "
          f"{'yes' if res['targets']['augmentation share'] else 'no'} |"]
    if "peak_rss" in res:
        from images_memory import section

        L += [""] + section(res["peak_rss"], m["onelip_git"])
    (args.out / "images.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

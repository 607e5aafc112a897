# SPDX-License-Identifier: MIT
r"""Claim 1 — expressivity: 1-Lipschitz networks fit any boundary.

Any classifier whose class regions are closed is the sign of a 1-Lipschitz function, the
signed distance to its boundary (Béthune et al. 2022, §3). We check that

* on two-moons, circles, spiral and checkerboard, the 1-Lipschitz MLP (OrthoLinear +
  GroupSort of group 4, Frobenius head, hinge loss with margin m) reaches the training
  accuracy of an unconstrained MLP of the same widths (nn.Linear + ReLU, binary
  cross-entropy);
* its f is close to the signed distance :math:`s(x)` to the *true* class boundary, on a grid:
  Pearson correlation and :math:`\max_{grid}|f - s|`;
* on mnist-5k and fashion-mnist, with a large τ of cross-entropy, its clean accuracy
  (OrthoLinear + MaxMin) is within 1 point of the unconstrained network of the same widths.

**The true boundary.** The data are noisy samples of noiseless class *supports*: the two
half-circles of two-moons, the two circles of circles, the two spiral arms, the cells of the
checkerboard. The true classifier labels a point by its nearest support (for small noise, the
Bayes classifier); its boundary is the set of points equidistant from both supports (the cell
edges for the checkerboard). We compute that label map on a fine grid (nearest neighbour among
dense noiseless samples of the supports), and the signed distance to its boundary with an
exact Euclidean distance transform (``scipy.ndimage.distance_transform_edt``; error ≤ one grid
step). Positive s means class 1, like f. The grid covers the data's bounding box; the label map
is computed on a box padded by 1 so that the distance transform sees the boundary beyond it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onelip import data as datasets
from onelip.experiments import common
from onelip.experiments.common import SubRuns, Verdict, rounded, table

__all__ = ["CLAIM", "ExpressivityConfig", "plot", "run", "signed_distance_grid"]

CLAIM = "expressivity"
TOY_NOISE = {"two-moons": 0.05, "circles": 0.03, "spiral": 0.0, "checkerboard": 0.0}
"""Noise of each 2-D set: small enough for the classes to stay separable."""


@dataclass(frozen=True)
class ExpressivityConfig:
    """Claim 1: fit 2-D boundaries; match unconstrained accuracy on images."""

    toy_sets: tuple[str, ...] = ("two-moons", "circles", "spiral", "checkerboard")
    """The 2-D data sets (binary)."""
    toy_samples: int = 1250
    """Points per 2-D set (80 % train, 20 % test)."""
    toy_hidden: tuple[int, ...] = (128, 128, 128)
    """Hidden widths of both 2-D networks."""
    toy_group_size: int = 4
    """GroupSort group size of the 1-Lipschitz 2-D network (2 = MaxMin)."""
    toy_epochs: int = 400
    """Epochs on the 2-D sets."""
    toy_lr: float = 5e-3
    """Peak learning rate (Adam, one-cycle) on the 2-D sets."""
    margin: float = 0.05
    """Hinge margin m of the 1-Lipschitz network on the 2-D sets."""
    grid: int = 300
    """Side of the grid on which f is compared to the signed distance."""
    near: float = 0.5
    """"Near the data": grid points within this distance of a training point, where the data
    determine the boundary (far from all data, any classifier only extrapolates)."""
    plot_grid: int = 60
    """Side of the grid stored for the figure."""
    image_sets: tuple[str, ...] = ("mnist-5k", "fashion-mnist")
    """Image data sets (10 classes)."""
    image_train: int | None = 10000
    """Training points kept per image set (None: all); mnist-5k has 4,000."""
    image_test: int | None = None
    """Test points kept per image set (None: all)."""
    image_hidden: tuple[int, ...] = (512, 512, 512)
    """Hidden widths of both image networks."""
    image_epochs: int = 20
    """Epochs on the image sets."""
    image_lr: float = 1e-3
    """Peak learning rate on the image sets."""
    taus: tuple[float, ...] = (8.0, 64.0)
    """τ values of the 1-Lipschitz networks' cross-entropy on images ("large τ"; one network
    each). 8 is the best τ of an earlier prototype's calibration (docs/claims.md, claim 4),
    64 a larger one."""
    seed: int = 0
    """Seeds data, initialisation and shuffling."""

    def __post_init__(self) -> None:
        unknown = set(self.toy_sets) - set(TOY_NOISE)
        if unknown:
            raise ValueError(f"Unknown 2-D sets {sorted(unknown)}; expected {list(TOY_NOISE)}")
        if self.margin <= 0 or any(t <= 0 for t in self.taus):
            raise ValueError("Expected a positive margin and taus")

    @classmethod
    def quick(cls) -> "ExpressivityConfig":
        """A smoke run: small nets, few epochs, mnist-5k only (a subset)."""
        return cls(toy_samples=500, toy_hidden=(32, 32), toy_epochs=60, grid=120,
                   plot_grid=40, image_sets=("mnist-5k",), image_train=1000, image_test=500,
                   image_hidden=(64,), image_epochs=3, taus=(64.0,))

    @classmethod
    def full(cls) -> "ExpressivityConfig":
        """14 sub-runs (the compute they took is recorded in docs/claims/report.md);
        fashion-mnist subsampled to 10,000 training images (all 10,000 test images)."""
        return cls()


# ==== the true boundary =====================================================================


def _supports(name: str, *, n_samples: int, seed: int) -> list[np.ndarray] | None:
    """Dense noiseless samples of each class's support, in data coordinates
    (None for the checkerboard, whose label map is explicit)."""
    if name == "two-moons":
        from sklearn.datasets import make_moons

        raw, _ = make_moons(n_samples=n_samples, noise=TOY_NOISE[name], random_state=seed)
        dense, y = make_moons(n_samples=20000, shuffle=False)
    elif name == "circles":
        from sklearn.datasets import make_circles

        raw, _ = make_circles(n_samples=n_samples, noise=TOY_NOISE[name], factor=0.5,
                              random_state=seed)
        dense, y = make_circles(n_samples=20000, factor=0.5, shuffle=False)
    elif name == "spiral":
        dense, y = datasets.spiral_points(40000, noise=0.0, seed=seed + 1)
        return [2 * dense[y == k] for k in (0, 1)]  # the loader scales by 2
    else:
        return None
    mu, sd = raw.mean(0), raw.std(0)  # the loader's standardisation
    return [(dense[y == k] - mu) / sd for k in (0, 1)]


def _true_labels(name: str, pts: np.ndarray, supports) -> np.ndarray:
    if supports is None:  # checkerboard on [-2, 2]² (the loader scales [-1, 1]² by 2)
        return datasets.checkerboard_label(pts / 2)
    from scipy.spatial import cKDTree

    d0, _ = cKDTree(supports[0]).query(pts)
    d1, _ = cKDTree(supports[1]).query(pts)
    return (d1 < d0).astype(np.int64)


def signed_distance_grid(name: str, lo: np.ndarray, hi: np.ndarray, n: int, *,
                         n_samples: int, seed: int, pad: float = 1.0) -> np.ndarray:
    """Signed distance to the true boundary on an n×n grid over [lo, hi] (positive: class 1).

    Shape: (n, n), indexed [row = y, column = x].
    """
    from scipy.ndimage import distance_transform_edt

    h = (hi - lo) / (n - 1)  # (2,) grid steps
    k = np.ceil(pad / h).astype(int)  # extra cells on each side
    xs = lo[0] + h[0] * np.arange(-k[0], n + k[0])
    ys = lo[1] + h[1] * np.arange(-k[1], n + k[1])
    gx, gy = np.meshgrid(xs, ys)  # (Ny, Nx)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    labels = _true_labels(name, pts, _supports(name, n_samples=n_samples, seed=seed))
    inside = labels.reshape(gx.shape) == 1
    sampling = (h[1], h[0])
    # Distance from each cell to the nearest cell of the other class; the boundary lies
    # between the two, half a step closer on average.
    d_in = distance_transform_edt(inside, sampling=sampling)
    d_out = distance_transform_edt(~inside, sampling=sampling)
    half = 0.5 * float(np.mean(h))
    sd = np.where(inside, d_in - half, -(d_out - half))
    return sd[k[1]:k[1] + n, k[0]:k[0] + n]


# ==== sub-runs ==============================================================================


def _grid(lo, hi, n) -> torch.Tensor:
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    gx, gy = np.meshgrid(xs, ys)
    return torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)


def _toy_run(cfg: ExpressivityConfig, name: str, kind: str, runs: SubRuns) -> dict:
    data = datasets.load(name, n_samples=cfg.toy_samples, noise=TOY_NOISE[name], seed=cfg.seed)
    if kind == "lipschitz":
        model = common.lipschitz_mlp(2, 1, cfg.toy_hidden, group_size=cfg.toy_group_size,
                                     seed=cfg.seed)
        from onelip.losses import HingeLoss

        loss = HingeLoss(cfg.margin)
    else:
        model = common.plain_mlp(2, 1, cfg.toy_hidden, seed=cfg.seed)
        loss = common.BCELoss()
    t0 = time.perf_counter()
    hist = common.train(model, data, loss, epochs=cfg.toy_epochs, lr=cfg.toy_lr, batch_size=100,
                        seed=cfg.seed, runs=runs, name=f"{kind} {name}")
    seconds = time.perf_counter() - t0
    x_all = torch.cat([data.x_train, data.x_test]).numpy()
    lo, hi = x_all.min(0) - 0.25, x_all.max(0) + 0.25
    sd = signed_distance_grid(name, lo, hi, cfg.grid, n_samples=cfg.toy_samples, seed=cfg.seed)
    pts = _grid(lo, hi, cfg.grid)
    f = common.scores(model, pts).numpy().reshape(cfg.grid, cfg.grid)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(data.x_train.numpy()).query(pts.numpy())
    near = (dist <= cfg.near).reshape(cfg.grid, cfg.grid)
    sd_coarse = signed_distance_grid(name, lo, hi, cfg.plot_grid, n_samples=cfg.toy_samples,
                                     seed=cfg.seed)
    f_coarse = common.scores(model, _grid(lo, hi, cfg.plot_grid)).numpy()
    # Agreement of sign(f) with the true classifier on the grid, and f vs s.
    grids = rounded({"f": f_coarse.reshape(cfg.plot_grid, cfg.plot_grid), "sd": sd_coarse}, 3)
    return {**grids, **rounded({
        "train_acc": hist[-1]["train_acc"], "test_acc": hist[-1]["test_acc"],
        "seconds": seconds,
        "corr": float(np.corrcoef(f.ravel(), sd.ravel())[0, 1]),
        "max_dev": float(np.abs(f - sd).max()),
        "mean_dev": float(np.abs(f - sd).mean()),
        "grid_agreement": float(((f > 0) == (sd > 0)).mean()),
        "near_fraction": float(near.mean()),
        "corr_near": float(np.corrcoef(f[near], sd[near])[0, 1]),
        "max_dev_near": float(np.abs(f - sd)[near].max()),
        "mean_dev_near": float(np.abs(f - sd)[near].mean()),
        "grid_agreement_near": float(((f > 0) == (sd > 0))[near].mean()),
        "extent": [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])],
    })}


def _image_run(cfg: ExpressivityConfig, name: str, tau: float | None, runs: SubRuns) -> dict:
    data = common.subset(datasets.load(name), n_train=cfg.image_train, n_test=cfg.image_test,
                         seed=cfg.seed)
    d = int(data.x_train.shape[1])
    if tau is not None:
        from onelip.losses import TauCrossEntropyLoss

        model = common.lipschitz_mlp(d, data.num_classes, cfg.image_hidden, seed=cfg.seed)
        loss = TauCrossEntropyLoss(tau)
        kind = f"1-Lip τ={tau:g}"
    else:
        model = common.plain_mlp(d, data.num_classes, cfg.image_hidden, seed=cfg.seed)
        loss = torch.nn.CrossEntropyLoss()
        kind = "unconstrained"
    t0 = time.perf_counter()
    hist = common.train(model, data, loss, epochs=cfg.image_epochs, lr=cfg.image_lr,
                        seed=cfg.seed, runs=runs, name=f"{kind} {name}")
    return rounded({"train_acc": hist[-1]["train_acc"], "test_acc": hist[-1]["test_acc"],
                    "n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0]),
                    "seconds": time.perf_counter() - t0})


def _points(cfg: ExpressivityConfig, name: str, n: int = 400) -> dict:
    data = datasets.load(name, n_samples=cfg.toy_samples, noise=TOY_NOISE[name], seed=cfg.seed)
    return rounded({"x": data.x_train[:n], "y": data.y_train[:n]}, 3)


# ==== the claim =============================================================================


def run(cfg: ExpressivityConfig, *, out: Path | None = None, progress: bool = True,
        deadline: float | None = None) -> dict:
    """Run claim 1; returns the JSON results (figures are drawn from them by :func:`plot`)."""
    kinds = ("lipschitz", "unconstrained")
    total = 2 * len(cfg.toy_sets) + (len(cfg.taus) + 1) * len(cfg.image_sets)
    base = common.config_dict(cfg)
    toy: dict = {}
    images: dict = {}
    with SubRuns(CLAIM, out, total=total, progress=progress,
                 deadline=deadline) as runs:
        for name in cfg.toy_sets:
            toy[name] = {"points": _points(cfg, name)}
            for kind in kinds:
                key = {"claim": CLAIM, "part": "toy", "set": name, "kind": kind, "metrics": 2,
                       **{k: v for k, v in base.items() if not k.startswith("image")
                          and k != "taus"}}
                toy[name][kind] = runs(f"{kind} {name}", key,
                                       lambda: _toy_run(cfg, name, kind, runs))
            toy[name]["unconstrained"].pop("sd", None)  # the same grid twice
        for name in cfg.image_sets:
            images[name] = {"lipschitz": {}}
            for tau in (*cfg.taus, None):
                kind = "unconstrained" if tau is None else "lipschitz"
                key = {"claim": CLAIM, "part": "image", "set": name, "kind": kind,
                       **{k: v for k, v in base.items() if k.startswith("image")},
                       "seed": cfg.seed, **({} if tau is None else {"tau": tau})}
                label = "unconstrained" if tau is None else f"1-Lip τ={tau:g}"
                r = runs(f"{label} {name}", key, lambda: _image_run(cfg, name, tau, runs))
                if tau is None:
                    images[name]["unconstrained"] = r
                else:
                    images[name]["lipschitz"][f"{tau:g}"] = r
        stats = runs.stats()
    return {"claim": CLAIM, "config": base, "toy": toy, "images": images,
            "tables": _tables(toy, images, cfg), "verdicts": _verdicts(toy, images, cfg),
            "subruns": stats}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _tables(toy: dict, images: dict, cfg: ExpressivityConfig) -> list[dict]:
    rows = []
    for name, r in toy.items():
        lip, unc = r["lipschitz"], r["unconstrained"]
        rows.append([name, _pct(lip["train_acc"]), _pct(unc["train_acc"]), _pct(lip["test_acc"]),
                     _pct(unc["test_acc"]), f"{lip['corr']:.3f} / {lip['corr_near']:.3f}",
                     f"{lip['max_dev']:.2f} / {lip['max_dev_near']:.2f}",
                     f"{lip['mean_dev']:.3f} / {lip['mean_dev_near']:.3f}",
                     f"{_pct(lip['grid_agreement'])} / {_pct(lip['grid_agreement_near'])}",
                     f"{unc['corr']:.3f} / {unc['corr_near']:.3f}"])
    t1 = table(f"2-D sets: accuracy (%), and the 1-Lipschitz f (hinge, m = {cfg.margin:g}) vs "
               f"the signed distance s to the true boundary on a {cfg.grid}×{cfg.grid} grid — "
               f"whole grid / near the data (within {cfg.near:g} of a training point)",
               ["set", "train 1-Lip", "train plain", "test 1-Lip", "test plain",
                "corr(f, s)", "max |f−s|", "mean |f−s|", "sign(f) = sign(s) (%)",
                "corr(logit, s), plain"], rows)
    rows = []
    for name, r in images.items():
        unc = r["unconstrained"]
        for tau, lip in r["lipschitz"].items():
            rows.append([name, f"{lip['n_train']:,} / {lip['n_test']:,}", tau,
                         _pct(lip["train_acc"]), _pct(unc["train_acc"]), _pct(lip["test_acc"]),
                         _pct(unc["test_acc"]),
                         f"{100 * (lip['test_acc'] - unc['test_acc']):+.1f}"])
    t2 = table(f"Images: clean accuracy (%), 1-Lipschitz (τ-CE) vs unconstrained (ReLU, CE), "
               f"hidden {list(cfg.image_hidden)}, {cfg.image_epochs} epochs",
               ["set", "train / test", "τ", "train 1-Lip", "train plain", "test 1-Lip",
                "test plain", "Δ test (pt)"], rows)
    return [t1, t2]


def verdicts(results: dict) -> list[dict]:
    """The verdict rows, recomputed from the stored results alone."""
    return _verdicts(results["toy"], results["images"], _config(results["config"]))


def _config(d: dict) -> ExpressivityConfig:
    return common.config_from(ExpressivityConfig, d)


def _verdicts(toy: dict, images: dict, cfg: ExpressivityConfig) -> list[dict]:
    out = []
    if toy:
        accs = {n: (r["lipschitz"]["train_acc"], r["unconstrained"]["train_acc"])
                for n, r in toy.items()}
        out.append(Verdict(
            "2-D: 1-Lip train acc = unconstrained",
            "100 % on separable data, like an unconstrained net",
            ", ".join(f"{n} {_pct(a)}/{_pct(b)}" for n, (a, b) in accs.items())
            + " (1-Lip/plain, %; agree: within 0.5 pt)",
            all(a >= b - 0.005 for a, b in accs.values())).as_dict())
        near = {n: r["lipschitz"]["corr_near"] for n, r in toy.items()}
        corr = [r["lipschitz"]["corr"] for r in toy.values()]
        dev = [r["lipschitz"]["max_dev_near"] for r in toy.values()]
        out.append(Verdict(
            "2-D: f ≈ signed distance to the boundary",
            "the signed distance is a 1-Lipschitz solution (f can be it)",
            "corr(f, s) near the data " + ", ".join(f"{n} {c:.3f}" for n, c in near.items())
            + f" (whole grid {min(corr):.3f}–{max(corr):.3f}); max |f−s| near the data "
            f"{min(dev):.2f}–{max(dev):.2f} (agree: corr near the data ≥ 0.9)",
            min(near.values()) >= 0.9).as_dict())
    for tau in cfg.taus:
        rows = {n: (r["lipschitz"][f"{tau:g}"], r["unconstrained"]) for n, r in images.items()}
        if rows:
            train = {n: a["train_acc"] - b["train_acc"] for n, (a, b) in rows.items()}
            test = {n: a["test_acc"] - b["test_acc"] for n, (a, b) in rows.items()}
            out.append(Verdict(
                f"images, τ = {tau:g}: 1-Lip fits the training set like unconstrained",
                "any decision boundary can be fitted by a 1-Lipschitz classifier (the "
                "expressivity result, Fig. 1; Fig. 4: at large τ train accuracy 1.00 like an "
                "unconstrained net): training accuracy within 1 point of the unconstrained "
                "net's. Restated: the earlier check 'test accuracy within 1 point at large τ' "
                "is not the paper's claim",
                "train " + ", ".join(f"{n} {100 * g:+.1f} pt" for n, g in train.items())
                + "; test (not the claim) " + ", ".join(f"{n} {100 * g:+.1f} pt"
                                                       for n, g in test.items())
                + f". Protocol: {', '.join(rows)} MLP {list(cfg.image_hidden)}, "
                f"{cfg.image_epochs} epochs (the paper: a CIFAR-10 VGG)",
                all(g >= -0.01 for g in train.values())).as_dict())
    return out


# ==== figures ===============================================================================


def plot(results: dict, outdir: Path) -> list[str]:
    """Draw the claim's figures from its results; returns the PNG file names."""
    from matplotlib.figure import Figure

    toy = results["toy"]
    if not toy:
        return []
    names = list(toy)
    fig = Figure(figsize=(3.0 * len(names), 8.4), layout="constrained")
    axes = fig.subplots(3, len(names), squeeze=False)
    rows = [("sd", None, "true signed distance s"), ("f", "lipschitz", "1-Lipschitz f (hinge)"),
            ("f", "unconstrained", "unconstrained logit")]
    for j, name in enumerate(names):
        pts = toy[name]["points"]
        x, y = np.asarray(pts["x"]), np.asarray(pts["y"])
        for i, (field, kind, title) in enumerate(rows):
            ax = axes[i][j]
            r = toy[name][kind or "lipschitz"]
            ext = r["extent"]
            z = np.asarray(r[field], dtype=float)
            n = z.shape[0]
            gx, gy = np.meshgrid(np.linspace(ext[0], ext[1], n), np.linspace(ext[2], ext[3], n))
            ax.contourf(gx, gy, z > 0, levels=[-0.5, 0.5, 1.5], colors=["#f4c7c3", "#c6dbef"])
            # s and the 1-Lipschitz f share levels (distances); the logit gets its own.
            lim = float(np.nanmax(np.abs(np.asarray(toy[name]["lipschitz"]["sd"]))))
            levels = np.linspace(-lim, lim, 15) if kind != "unconstrained" else 15
            ax.contour(gx, gy, z, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
            ax.contour(gx, gy, z, levels=[0], colors="k", linewidths=1.5)
            ax.scatter(x[:, 0], x[:, 1], c=np.where(y == 1, "#08519c", "#a50f15"), s=3)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel(title, fontsize=9)
            if kind is not None:
                ax.text(0.02, 0.02, f"train {100 * r['train_acc']:.1f}%"
                        + (f"\ncorr(f,s) {r['corr']:.2f}" if kind == "lipschitz" else ""),
                        transform=ax.transAxes, fontsize=7,
                        bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
    fig.suptitle("Decision boundaries (thick) and level sets of f; the 1-Lipschitz f's levels are "
                 "distances", fontsize=10)
    name = "expressivity_boundaries.png"
    common.save_png(fig, Path(outdir) / name)
    return [name]


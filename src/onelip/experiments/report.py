# SPDX-License-Identifier: MIT
"""Run claims, merge their results into ``DIR/results.json``, draw figures, write ``report.md``.

Figures are drawn **only** from ``results.json`` (each claim's ``plot(results, outdir)``), so
:func:`redraw` rebuilds every PNG and the report without training anything.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from types import MappingProxyType, ModuleType

from onelip._io import atomic_path
from onelip.experiments import (  # the claim modules (none of them imports this one)
    consistency,
    expressivity,
    generalization,
    memorization,
    optimal_transport,
    pareto,
    snowflake,
    tradeoff,
)

__all__ = ["CLAIMS", "claim_config", "claim_module", "redraw", "run_claim", "write_report"]

CLAIMS = MappingProxyType({
    "expressivity": (expressivity, expressivity.ExpressivityConfig),
    "optimal-transport": (optimal_transport, optimal_transport.OptimalTransportConfig),
    "generalization": (generalization, generalization.GeneralizationConfig),
    "tradeoff": (tradeoff, tradeoff.TradeoffConfig),
    "pareto": (pareto, pareto.ParetoConfig),
    "consistency": (consistency, consistency.ConsistencyConfig),
    "snowflake": (snowflake, snowflake.SnowflakeConfig),
    "memorization": (memorization, memorization.MemorizationConfig),
})
"""Claim name -> (its module in onelip.experiments, its config class), in the paper's order."""

_TITLES = {
    "expressivity": "1. Expressivity — 1-Lipschitz networks fit any boundary",
    "optimal-transport": "2. Optimal transport — the most robust classifier is the WGAN "
                         "discriminator",
    "generalization": "3. Generalization — 1-Lipschitz networks generalize",
    "tradeoff": "4. Trade-off — the loss's hyper-parameters set accuracy against robustness",
    "pareto": "5. Pareto front on CIFAR-10 — the paper's Fig. 3",
    "consistency": "6. Consistency on CIFAR-10 fractions — the paper's Fig. 4",
    "snowflake": "7. Snowflake — a 1-Lipschitz network fits a fractal boundary (the paper's "
                 "Fig. 1a)",
    "memorization": "8. Memorization — a 1-Lipschitz MLP fits random labels (the paper's "
                    "random-labels experiment)",
}
RESULTS = "results.json"
REPORT = "report.md"


def claim_module(name: str) -> ModuleType:
    """The module of claim ``name`` (``ValueError`` for an unknown one)."""
    if name not in CLAIMS:
        raise ValueError(f"Unknown claim {name!r}; expected one of {', '.join(CLAIMS)} or all")
    return CLAIMS[name][0]


def claim_config(name: str, *, quick: bool = False, data: str | None = None,
                 overrides: dict | None = None):
    """The config claim ``name`` runs with: its ``quick()`` or ``full()`` preset, ``data``
    (e.g. ``folder:DIR``) in place of the preset's data set for the claims whose config has a
    ``data`` field (the others ignore it), then ``overrides`` (field → value; ``ValueError``
    for a field the config lacks)."""
    import dataclasses

    claim_module(name)  # ValueError for an unknown claim
    cfg_cls = CLAIMS[name][1]
    cfg = cfg_cls.quick() if quick else cfg_cls.full()
    names = {f.name for f in dataclasses.fields(cfg)}
    if data is not None and "data" in names:
        cfg = dataclasses.replace(cfg, data=data)
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise ValueError(f"{name} has no config field {', '.join(map(repr, unknown))}; "
                         f"fields: {', '.join(sorted(names))}")
    return dataclasses.replace(cfg, **(overrides or {}))


def run_claim(name: str, *, quick: bool = False, out: Path | None = None,
              progress: bool = True, data: str | None = None,
              overrides: dict | None = None, deadline: float | None = None) -> dict:
    """Run claim ``name`` with the config of :func:`claim_config`; with ``out``, cache its
    sub-runs there, merge its results into ``out/results.json`` and rewrite the report. The
    mode is recorded as ``quick`` or ``full``, with the overridden fields after it.

    ``deadline`` (a :func:`time.monotonic` value): no sub-run starts after it. The sweeps
    (pareto, consistency) then report on the sub-runs at hand and name the others in
    ``results["subruns"]["not_run"]``; a claim that needs all its sub-runs, or has none, is
    recorded as ``"stopped": True`` with no verdicts (its finished sub-runs stay cached)."""
    from onelip.experiments.common import ClaimNotRun, config_dict

    mod = claim_module(name)
    cfg = claim_config(name, quick=quick, data=data, overrides=overrides)
    t0 = time.perf_counter()
    try:
        results = mod.run(cfg, out=out, progress=progress, deadline=deadline)
    except ClaimNotRun as e:
        results = {"claim": name, "config": config_dict(cfg), "stopped": True,
                   "needs": e.needs, "subruns": e.stats, "tables": [], "verdicts": []}
    results["mode"] = "quick" if quick else "full"
    if overrides:
        results["overrides"] = sorted(overrides)
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    results["environment"] = _environment()
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        merged = _load(out)
        if results.get("stopped") and name in merged and not merged[name].get("stopped"):
            # a budget that ran out does not erase a claim reported before (its sub-runs and
            # the earlier results stay; the same command continues from the cache)
            print(f"{name}: not reported (the time budget was spent); {out / RESULTS} keeps "
                  "its earlier report of this claim", file=sys.stderr)
            return results
        merged[name] = results
        _save(out, {k: merged[k] for k in CLAIMS if k in merged})
        write_report(merged, out, draw={name})  # the other claims' figures are as drawn
        _save(out, {k: merged[k] for k in CLAIMS if k in merged})  # with their file names
    return results


def _environment() -> dict:
    from onelip.experiments.common import environment

    return {**environment(), "machine": platform.machine()}


def _where(stats: dict) -> str:
    """Where the sub-runs were computed, e.g. '11 on the CPU (AMD EPYC 7B13), torch 2.13.0,
    2 CPUs, 1 torch thread(s)' or '36 on GPU NVIDIA H200 (torch 2.13.0)'."""
    parts = []
    for item in stats.get("environments", []):
        e = item["environment"]
        if e is None:
            parts.append(f"{item['subruns']} in an unrecorded environment")
        elif e.get("gpu"):
            parts.append(f"{item['subruns']} on GPU {e['gpu']} (torch {e['torch']})")
        else:
            cpu = f" ({e['cpu_model']})" if e.get("cpu_model") else ""
            parts.append(f"{item['subruns']} on the CPU{cpu}, torch {e['torch']}, "
                         f"{e['cpus']} CPUs, {e['torch_threads']} torch thread(s)")
    return "; ".join(parts) or "nowhere yet"


def _mode(r: dict) -> str:
    """'quick', 'full', or either with the fields set on top of the preset (their values are
    in the configuration below)."""
    mode = str(r.get("mode", "?"))
    over = r.get("overrides")
    return f"{mode} preset with {', '.join(over)} set" if over else mode


def _load(out: Path) -> dict:
    path = Path(out) / RESULTS
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to start over") from e


def _save(out: Path, results: dict) -> None:
    with atomic_path(Path(out) / RESULTS) as tmp:
        tmp.write_text(json.dumps(results, separators=(",", ":")) + "\n")


def redraw(out: Path) -> Path:
    """Redraw every figure, recompute every claim's verdicts (``<claim>.verdicts(results)``,
    from the stored measurements alone) and, for the claims that have one,
    ``<claim>.tables(results)``, and rewrite ``report.md`` and ``results.json``."""
    out = Path(out)
    if not (out / RESULTS).exists():
        raise FileNotFoundError(f"{out / RESULTS} not found; run `onelip reproduce` first")
    results = _load(out)
    for name, r in results.items():  # the verdicts (and tables), recomputed by today's code
        if name in CLAIMS and not r.get("stopped"):
            mod = claim_module(name)
            r["verdicts"] = mod.verdicts(r)
            if callable(getattr(mod, "tables", None)):
                r["tables"] = mod.tables(r)
    _save(out, results)
    return write_report(results, out)


# ==== markdown ==============================================================================


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _partial(results: dict) -> str:
    """'' for a claim with all its sub-runs, else e.g. 'partial: 12 of 36 sub-runs'."""
    stats = results.get("subruns", {})
    left = len(stats.get("not_run", []))
    if not left:
        return ""
    total = stats.get("total", 0)
    return f"partial: {total - left} of {total} sub-runs"


def _verdict_rows(results: dict) -> list[list[str]]:
    part = _partial(results)
    pre = f"[{part}] " if part else ""
    return [[v["claim"], v["research"], pre + v["measured"], "yes" if v["agree"] else "**no**"]
            for v in results.get("verdicts", [])]


def _budget_line(r: dict) -> list[str]:
    """The report's lines on the sub-runs a time budget left out (none when all ran)."""
    stats = r.get("subruns", {})
    left = stats.get("not_run", [])
    if not left:
        return []
    done, total = stats.get("ran", 0) + stats.get("cached", 0), stats.get("total", 0)
    if r.get("stopped"):
        return [f"**Not reported: the time budget was spent** with {done} of {total} sub-runs "
                f"finished (cached under `<claim>/runs/`); its report needs "
                f"{r.get('needs', 'all of them')}. The same command continues from the cache.",
                ""]
    return [f"**Partial: {done} of {total} sub-runs.** Not run (the time budget was spent; "
            "the same command continues from the cache): " + ", ".join(left) + ". The tables, "
            "figure and verdicts use the sub-runs at hand.", ""]


def _summary_paragraph(mod: ModuleType) -> str:
    """The claim module's docstring after its title line, as markdown."""
    import re

    doc = (mod.__doc__ or "").strip().split("\n\n", 1)
    text = doc[1].strip() if len(doc) > 1 else ""
    text = re.sub(r":math:`([^`]*)`", r"$\1$", text)
    return text.replace("``", "`")


def write_report(results: dict, out: Path, *, draw: set[str] | None = None) -> Path:
    """Draw each claim's figures into ``out`` and write ``out/report.md``; returns its path.

    ``draw``: the claims whose figures are drawn (default: all). Another claim keeps the
    figures it recorded (``results[claim]["figures"]``, set here) if those files are all in
    ``out``; else they are drawn too. (Drawing is most of a cached re-run's time: ``reproduce
    all`` rewrites the report after each claim.)"""
    out = Path(out)
    modes = {_mode(r) for r in results.values()}
    lines = ["# Reproducing *Pay attention to your loss* (Béthune et al., NeurIPS 2022)", ""]
    if modes == {"quick"}:
        lines += ["> **QUICK MODE** — tiny networks, few epochs and small subsets, meant for "
                  "the test suite. These numbers are *not* evidence for or against the claims; "
                  "run `onelip reproduce all --out DIR` for the full report.", ""]
    elif "quick" in modes:
        lines += ["> **Mixed modes**: the claims marked *quick* below ran with tiny presets; "
                  "their numbers are not evidence.", ""]
    lines += ["Generated by `onelip reproduce` from `results.json` (figures are drawn from it "
              "alone: `onelip reproduce all --redraw --out DIR` redraws them without training). "
              "Each claim's sub-runs are cached under `<claim>/runs/`.", ""]
    summary = []
    for name, r in results.items():
        summary += [[name, *row] for row in _verdict_rows(r)]
    stopped = [n for n, r in results.items() if r.get("stopped")]
    partial = [f"{n} ({_partial(r)})" for n, r in results.items()
               if _partial(r) and not r.get("stopped")]
    if summary or stopped:
        agree = sum(row[-1] == "yes" for row in summary)
        lines += ["## Verdicts", "", f"{agree} of {len(summary)} checks agree with the "
                  "research." + (f" Partial (time budget): {', '.join(partial)}." if partial
                                 else "")
                  + (f" **Not reported** (the time budget was spent): {', '.join(stopped)}."
                     if stopped else ""), "",
                  _md_table(["claim", "check", "research says", "we measured", "agree"],
                            summary), ""]
    for name, r in results.items():
        mod = claim_module(name)
        stats = r.get("subruns", {})
        lines += [f"## {_TITLES[name]}", "",
                  f"*Mode: {_mode(r)}; {stats.get('ran', 0) + stats.get('cached', 0)} "
                  f"sub-runs, {stats.get('compute_seconds', 0):.0f} s of compute in all, "
                  f"computed {_where(stats)}.*", "", *_budget_line(r),
                  _summary_paragraph(mod), ""]
        if not r.get("stopped"):
            lines += ["### Verdict", "", _md_table(["check", "research says", "we measured",
                                                    "agree"], _verdict_rows(r)), ""]
            for t in r.get("tables", []):
                lines += [f"### {t['title']}", "", _md_table(t["columns"], t["rows"]), ""]
            kept = r.get("figures")
            if (draw is not None and name not in draw and isinstance(kept, list)
                    and all((out / str(p)).is_file() for p in kept)):
                pngs = kept
            else:
                pngs = [str(p) for p in mod.plot(r, out)]
                r["figures"] = pngs
            for png in pngs:
                lines += [f"![{name}]({png})", ""]
        cfg = json.dumps(r.get("config", {}), separators=(", ", ": "))
        lines += ["<details><summary>configuration</summary>", "", f"`{cfg}`", "",
                  "</details>", ""]
    path = out / REPORT
    path.write_text("\n".join(lines))
    return path

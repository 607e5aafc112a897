# SPDX-License-Identifier: MIT
"""The claims and experiments of Béthune et al., *Pay attention to your loss* (NeurIPS 2022),
reproduced.

One module per claim, each with a frozen config dataclass (``quick()`` / ``full()`` presets),
``run(cfg, *, out=None, progress=True) -> dict`` (JSON results, sub-runs cached under
``out/<claim>/runs/``) and ``plot(results, outdir) -> list[str]`` (PNGs drawn from the results
alone):

* :mod:`~onelip.experiments.expressivity` — 1-Lipschitz networks fit any boundary;
* :mod:`~onelip.experiments.optimal_transport` — the most robust classifier is the WGAN
  discriminator (KR networks vs exact transport with POT);
* :mod:`~onelip.experiments.generalization` — train/test gap against the data size;
* :mod:`~onelip.experiments.tradeoff` — τ, m and α set the accuracy/robustness trade-off;
* :mod:`~onelip.experiments.pareto` — the CIFAR-10 accuracy/robustness front (Fig. 3);
* :mod:`~onelip.experiments.consistency` — train/validation accuracy against the training
  fraction and τ on CIFAR-10 (Fig. 4);
* :mod:`~onelip.experiments.memorization` — random labels (the authors' random-labels
  experiment);
* :mod:`~onelip.experiments.snowflake` — the Von Koch snowflake (Fig. 1a).

:mod:`~onelip.experiments.common` holds the sub-run cache and the verdicts' helpers, and
:mod:`~onelip.experiments.vision` the image data and networks the CIFAR-10 claims share.

:mod:`~onelip.experiments.report` runs them and writes ``report.md``; the command line is
``onelip reproduce CLAIM|all [--quick] --out DIR``.
"""

__all__ = ["common", "consistency", "expressivity", "generalization", "memorization",
           "optimal_transport", "pareto", "report", "snowflake", "tradeoff", "vision"]

# SPDX-License-Identifier: MIT
"""onelip: provably robust 1-Lipschitz neural networks in PyTorch.

Exact 1-Lipschitz layers (:mod:`onelip.nn`), the losses that set the accuracy/robustness
trade-off (:mod:`onelip.losses`), certificates (:mod:`onelip.certify`), data
(:mod:`onelip.data`), training (:mod:`onelip.train`) and a CLI (``onelip``).
"""

__version__ = "0.3.0"

__all__ = ["__version__"]

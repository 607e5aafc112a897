# SPDX-License-Identifier: MIT
"""``python -m onelip ...``: the ``onelip`` command (what ``torchrun -m onelip`` runs)."""

import sys

from onelip.cli import main

if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: MIT
"""``python -m onelip.cli``: the same as ``python -m onelip``."""

import sys

from onelip.cli import main

if __name__ == "__main__":
    sys.exit(main())

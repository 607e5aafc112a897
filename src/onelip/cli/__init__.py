# SPDX-License-Identifier: MIT
"""The ``onelip`` command: thin and typed; every command calls a library function.

    onelip train   --data mnist-5k --model mlp --loss hinge --margin 1 --epochs 20 --out runs/x
    onelip certify runs/x --eps 0.5 1.0 1.58 [--attack] [--out FILE]
    onelip inspect runs/x
    onelip export  runs/x --format torch|onnx|safetensors --out FILE   (docs/export.md)
    onelip train   ... --nproc 4    (or torchrun -m onelip train ...; docs/distributed.md)

One module a command (:mod:`.train`, :mod:`.certify`, :mod:`.inspect`, :mod:`.export`,
:mod:`.reproduce`), each with ``add_arguments(parser)`` and ``run(args) -> int``, listed in the
static table :data:`COMMANDS`.

Errors (unknown data set, missing run, corrupt or changed weights, bad numbers, unknown
options, unusable devices, places that cannot be written) print one line
``onelip: error: ...`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from types import MappingProxyType

from onelip import __version__
from onelip._errors import CheckpointError
from onelip.cli import certify, export, inspect, reproduce, train
from onelip.cli._common import CLIError, Parser, error_text

__all__ = ["COMMANDS", "CLIError", "build_parser", "main"]

COMMANDS = MappingProxyType({
    "train": train,
    "certify": certify,
    "inspect": inspect,
    "export": export,
    "reproduce": reproduce,
})
"""command name -> its module (``add_arguments(parser)``, ``run(args) -> int``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="onelip", description="Provably robust 1-Lipschitz networks.")
    parser.add_argument("--version", action="version", version=f"onelip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, module in COMMANDS.items():
        doc = module.run.__doc__ or name
        module.add_arguments(sub.add_parser(name, help=doc, description=doc))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return COMMANDS[args.command].run(args)
    except CLIError as e:
        print(f"onelip: error: {e}", file=sys.stderr)
    except (CheckpointError, ValueError, FileNotFoundError, IndexError, TypeError,
            FloatingPointError) as e:
        print(f"onelip: error: {_one_line(e)}", file=sys.stderr)
    except OSError as e:  # a file system error not foreseen above: still one line
        where = f" ({e.filename})" if e.filename else ""
        print(f"onelip: error: {e.strerror or e}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("onelip: interrupted", file=sys.stderr)
        return 130
    return 2


def _one_line(e: BaseException) -> str:
    return " ".join(error_text(e).split()) or type(e).__name__

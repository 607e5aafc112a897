# SPDX-License-Identifier: MIT
"""The library speaks in its own words: its errors name library arguments (``n_samples``,
``resize=(H, W)``, ``lr``), and the CLI spells them as its flags where it shows them
(``cli._common.FLAGS``), without rewriting messages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onelip import data as datasets
from onelip._errors import ArgumentError
from onelip.cli import main
from onelip.cli._common import FLAGS, error_text

SRC = Path(__file__).resolve().parents[1] / "src" / "onelip"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _raised_strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield node.lineno, sub.value


def test_no_library_error_names_a_cli_flag():
    """Every string in a ``raise`` outside ``onelip.cli`` is free of ``--flag`` words."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "cli" in path.relative_to(SRC).parts[:1]:
            continue
        for line, text in _raised_strings(ast.parse(path.read_text())):
            if FLAG.search(text):
                found.append(f"{path.relative_to(SRC)}:{line}: {text!r}")
    assert not found, "library errors naming CLI flags:\n" + "\n".join(found)


def test_n_samples_is_named_as_the_library_and_the_cli_call_it(capsys):
    with pytest.raises(ArgumentError) as err:
        datasets.load("two-moons", n_samples=3)
    assert "n_samples >= " in str(err.value) and "--" not in str(err.value)
    assert err.value.arguments == ("n_samples",)
    assert "n_samples >= 10 (--n-samples), got 3" in error_text(err.value)
    assert main(["train", "--data", "two-moons", "--n-samples", "3", "--out", "x"]) == 2
    assert "n_samples >= 10 (--n-samples), got 3" in capsys.readouterr().err


def test_images_of_different_sizes_name_resize(tmp_path):
    for cls, size in (("a", (4, 4)), ("b", (5, 4))):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((*size, 3), np.uint8)).save(tmp_path / "train" / cls /
                                                                 f"{i}.png")
    with pytest.raises(ArgumentError) as err:
        datasets.load(f"folder:{tmp_path}")
    assert "resize=(H, W)" in str(err.value) and "--resize" not in str(err.value)
    assert error_text(err.value).endswith("pass --resize H W")


def test_every_argument_the_library_names_has_a_flag():
    """The arguments named in the library's errors are spelled by the CLI (a new one needs its
    line in FLAGS); found by reading every ``Argument("name", ...)`` in the sources."""
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Argument" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    assert names, "no Argument parts found: the scan is broken"
    assert names <= set(FLAGS), f"arguments without a CLI spelling: {sorted(names - set(FLAGS))}"

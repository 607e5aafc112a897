# SPDX-License-Identifier: MIT
"""Architecture rules for ``onelip``: no import cycles, no upward imports between layers.

Every ``import`` / ``from ... import`` statement in every module under ``src/onelip`` is read
with :mod:`ast` -- including imports inside functions and under ``if TYPE_CHECKING`` -- and
relative imports are resolved. ``from pkg import X`` counts as importing ``pkg.X`` when that
module exists on disk, else as importing ``pkg`` itself.

A *unit* is a top-level module or package of ``onelip`` ("" is the root ``__init__``). Layers,
lowest first; a unit may always import itself, and may import what ``ALLOWED`` lists:

* rank 0, leaves: the root ``onelip/__init__`` (imports nothing of onelip), ``_errors``,
  ``_validation``, ``_io``, ``_memory``. Leaves may import each other but nothing else, not
  even the root.
* rank 1: ``functional`` -- leaves.
* rank 2: ``nn`` -- leaves, functional.
* rank 3: ``losses``, ``certify``, ``models``, ``data``, ``arch`` (architecture descriptions
  of module trees) -- leaves, functional, nn; not each other.
* rank 4: ``runs``, ``checkpoint``, ``distributed``, ``export``, ``pretrained`` (the models
  shipped in the package) -- anything of rank <= 3, and not each other, except that
  ``export``, ``pretrained`` and ``checkpoint`` (an alias of runs) may import ``runs``.
* rank 5: ``train`` -- anything of rank <= 4. A package (``config``, ``sources``, ``optim``,
  ``state``, ``resume``, ``loop``, ``evaluate``; ``fit`` in its ``__init__``) whose modules
  never import its ``__init__``: the facade sits on top of them.
* rank 6: ``experiments`` -- anything of rank <= 5.
* rank 7: ``cli`` and ``__main__`` -- anything of rank <= 6; ``__main__`` may import ``cli``.

Outside the leaves, every unit may import the root (``from onelip import __version__``).
A module whose unit is not in ``ALLOWED`` fails the test: place it in the table.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "onelip"

_LEAVES = {"", "_errors", "_validation", "_io", "_memory"}
_R1 = _LEAVES | {"functional"}
_R2 = _R1 | {"nn"}
_R3 = _R2 | {"losses", "certify", "models", "data", "arch"}
_R4 = _R3 | {"runs", "checkpoint", "distributed", "export", "pretrained"}
_R5 = _R4 | {"train"}
_R6 = _R5 | {"experiments"}

# unit -> units it may import (itself is always allowed, see _allowed).
ALLOWED: dict[str, set[str]] = {
    "": set(),
    "_errors": {"_validation", "_io"},
    "_validation": {"_errors", "_io"},
    "_io": {"_errors", "_validation"},
    "_memory": set(),
    "functional": _R1,
    "nn": _R2,
    "losses": _R2,
    "certify": _R2,
    "models": _R2,
    "data": _R2,
    "arch": _R2,
    "runs": _R3,
    "checkpoint": _R3 | {"runs"},
    "distributed": _R3,
    "export": _R3 | {"runs"},
    "pretrained": _R3 | {"runs"},
    "train": _R4,
    "experiments": _R5,
    "cli": _R6,
    "__main__": _R6 | {"cli"},
}


def _module_name(path: Path) -> str:
    parts = ("onelip",) + path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _existing(name: str) -> str:
    """Longest prefix of dotted ``name`` that is a module of onelip on disk."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def _imports(module: str) -> list[tuple[str, int]]:
    """(imported onelip module, line) for every import statement of ``module``."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                assert base, f"{module} (line {node.lineno}): relative import beyond onelip"
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            names = [f"{src}.{a.name}" if f"{src}.{a.name}" in MODULES else src
                     for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            if name == "onelip" or name.startswith("onelip."):
                out.append((_existing(name), node.lineno))
    return out


EDGES: list[tuple[str, str, int]] = [
    (mod, dst, line) for mod in MODULES for dst, line in _imports(mod) if dst != mod
]


def _allowed(src_unit: str, dst_unit: str) -> bool:
    return dst_unit == src_unit or dst_unit in ALLOWED.get(src_unit, set())


def test_every_module_is_placed_in_the_layer_table():
    unknown = sorted(m for m in MODULES if _unit(m) not in ALLOWED)
    assert not unknown, (
        "modules outside the known units -- add their unit to ALLOWED in "
        "tests/test_architecture.py (and the docstring), or move them into a package:\n  "
        + "\n  ".join(f"{m} (unit {_unit(m)!r}, {MODULES[m].relative_to(SRC.parent)})"
                      for m in unknown))


def test_no_upward_imports_between_layers():
    bad = [f"{s} -> {d} (line {n})" for s, d, n in EDGES
           if _unit(s) in ALLOWED and not _allowed(_unit(s), _unit(d))]
    assert not bad, ("imports that break the layer table (see ALLOWED in "
                     "tests/test_architecture.py):\n  " + "\n  ".join(bad))


def _cycles() -> list[list[str]]:
    """The shortest cycle through each module that lies on one, without duplicates."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for s, d, _ in EDGES:
        graph.setdefault(s, set()).add(d)
    reach: dict[str, set[str]] = {}
    for root in graph:  # plain BFS reachability: the graph has only a few dozen nodes
        seen, todo = set(), [root]
        while todo:
            for w in graph.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        reach[root] = seen
    cycles: dict[tuple[str, ...], None] = {}
    for v in sorted(graph):
        comp = {w for w in reach[v] if v in reach.get(w, ())}
        prev: dict[str, str] = {}
        queue = deque([v])
        while comp and queue:  # BFS inside v's component: shortest cycle through v
            u = queue.popleft()
            if v in graph[u]:
                path = [u]
                while path[-1] != v:
                    path.append(prev[path[-1]])
                path.reverse()
                i = path.index(min(path))  # rotate so duplicates compare equal
                cycles[tuple(path[i:] + path[:i])] = None
                break
            for w in sorted(graph[u] & comp - {v} - prev.keys()):
                prev[w] = u
                queue.append(w)
    return [list(c) + [c[0]] for c in cycles]


def test_no_import_cycles():
    lines: dict[tuple[str, str], int] = {}
    for s, d, n in EDGES:
        lines.setdefault((s, d), n)
    msgs = ["  cycle:\n" + "\n".join(f"    {a} -> {b} (line {lines[a, b]})"
                                     for a, b in zip(c, c[1:]))
            for c in _cycles()]
    assert not msgs, "import cycles between onelip modules:\n" + "\n".join(msgs)


def test_train_modules_do_not_import_the_train_facade():
    bad = [f"{m} (line {line})" for m in MODULES if m.startswith("onelip.train.")
           for name, line in _imports(m) if name == "onelip.train"]
    assert not bad, f"modules of onelip.train import its __init__: {bad}"


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("onelip.export", ["onelip.models", "onelip.data", "onelip.cli"]),
        ("onelip.nn", ["onelip.export", "onelip.models", "onelip.certify"]),
    ],
)
def test_import_does_not_load_heavier_modules(module, forbidden):
    code = (f"import sys, {module}\n"
            f"print('\\n'.join(m for m in sys.modules if m.startswith('onelip')))")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, f"`import {module}` failed:\n{proc.stderr}"
    loaded = set(proc.stdout.split())
    bad = sorted(m for m in loaded
                 if any(m == f or m.startswith(f + ".") for f in forbidden))
    assert not bad, f"`import {module}` loads {bad}; it must not load any of {forbidden}"

# SPDX-License-Identifier: MIT
"""Verdicts are recomputed from the stored measurements alone (``reproduce --redraw``), cite
the paper's figures, and the restated checks say what they replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from onelip.experiments import report

CLAIMS_DIR = Path(__file__).resolve().parents[1] / "docs" / "claims"


@pytest.fixture
def stored(tmp_path):
    if not (CLAIMS_DIR / "results.json").exists():
        pytest.skip("docs/claims/results.json is not in this checkout")
    out = tmp_path / "claims"
    out.mkdir()
    shutil.copy(CLAIMS_DIR / "results.json", out / "results.json")
    return out


def _verdicts(out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    return {(name, v["claim"]): v for name, c in r.items() for v in c["verdicts"]}


def test_each_claim_module_recomputes_its_stored_verdicts(stored):
    results = json.loads((stored / "results.json").read_text())
    for name, r in results.items():
        assert report.claim_module(name).verdicts(r) == r["verdicts"], name


def test_redraw_flips_a_verdict_when_a_stored_number_changes(stored):
    key = ("tradeoff", "m ↑ ⇒ clean acc ↓")
    report.redraw(stored)
    assert not _verdicts(stored)[key]["agree"]
    r = json.loads((stored / "results.json").read_text())
    for i, row in enumerate(r["tradeoff"]["sweeps"]["margin"]):  # make it fall with m
        row["clean"] = 0.97 - 0.02 * i
    (stored / "results.json").write_text(json.dumps(r))
    report.redraw(stored)
    v = _verdicts(stored)[key]
    assert v["agree"] and "97.0 → 95.0" in v["measured"]
    assert "19 of 20" not in (stored / "report.md").read_text()


def test_verdicts_cite_the_paper_and_name_what_was_restated(stored):
    report.redraw(stored)
    vs = _verdicts(stored)
    restated = [v for v in vs.values() if "Restated" in v["research"]]
    assert len(restated) >= 4, "four old checks were misstatements of the paper"
    for (name, claim), v in vs.items():
        if name in ("expressivity", "generalization", "tradeoff") and "images" in claim \
                or "τ" in claim or "m ↑" in claim:
            assert "Fig." in v["research"], (name, claim)
            assert "Protocol" in v["measured"], (name, claim)

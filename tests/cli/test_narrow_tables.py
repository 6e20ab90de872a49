"""Tables in a narrow terminal (issue 28: `check` and `ablate` at 100 columns split run ids, numbers
and words, `refere`/`nce`, `fc1:4.0` / `2e-06`): no cell is ever split; whole columns are left out
(and named) instead, and below the width of the columns that tell rows apart each row is a block."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import invoke
from rich.console import Console

from widecli.cli.render import console as consoles
from widecli.cli.render.fit import table
from widecli.data.registry import shape_of
from widecli.methods import plan_weights
from widecli.recipes import expand, load_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def terminal(monkeypatch):
    """widecli's output console at a given width (every renderer prints through it); returns it, to
    read what was printed."""
    def make(width: int):
        console = Console(width=width, file=io.StringIO(), record=True, highlight=False)
        monkeypatch.setattr(consoles, "out", console)
        return console
    return make


@pytest.mark.parametrize("width", [100, 60])
def test_check_at_100_columns_never_splits_a_run_id_or_number(terminal, width):
    console = terminal(width)
    recipe = ROOT / "recipes" / "paper" / "mlp_mnist.yaml"
    res = invoke("check", recipe, "--device", "cpu")
    assert res.exit_code == 0, res.output
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    words = text.split()
    r = load_recipe(recipe)
    shape, classes = shape_of(r.data)
    for s in expand(r):
        assert s.run_id in words   # whole, never `926272c7` + `4523`
        if width == 100:
            assert f"{plan_weights(s, shape, classes).connectivity:.4f}" in words
    if width == 100:
        assert "left out to fit 100 columns: per-layer connectivity" in " ".join(words)


def test_ablate_tables_leave_columns_out_instead_of_splitting(terminal):
    console = terminal(100)
    df = pd.DataFrame([{"arm": "reference", "widened": "first", "rule": "leveling", "method": "sparse",
                        "baseline": "57.07 ± 0.35", "best wide (f, connectivity)": "61.93 ± 0.47 (f=8, 0.14)",
                        "dense wide": "64.53 (f=8)", "selected by": "validation",
                        "fraction [95% CI]": "0.65 [0.58, 0.84]", "Δ best vs reference [95% CI]": "+0.00 [+0.00, +0.00]",
                        "CI excludes 0": "no", "note": "sparse wide below the baseline at every factor"},
                       {"arm": "widen=fc1:4.0", "widened": "fc1", "rule": "custom", "method": "sparse",
                        "baseline": "57.07 ± 0.35", "best wide (f, connectivity)": "58.07 ± 2.02 (f=4, 2e-06)",
                        "dense wide": "64.90 (f=4)", "selected by": "test", "fraction [95% CI]": "0.13 [-0.04, 0.37]",
                        "Δ best vs reference [95% CI]": "-3.86 [-4.10, -3.40]", "CI excludes 0": "yes", "note": "-"}])
    consoles.out.print(table(df, "Table 1 per arm"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    note = re.search(r"left out to fit 100 columns: (.*) \(", " ".join(text.split()))
    dropped = note.group(1).split(", ") if note else []
    flat = " ".join(text.split())
    for col in df.columns:
        if col not in dropped:
            assert all(str(v) in flat for v in df[col]), col   # every cell of a shown column whole
    assert "reference" in text.split() and "widen=fc1:4.0" in text.split()


def test_below_the_key_columns_each_row_is_a_block(terminal):
    console = terminal(24)
    df = pd.DataFrame([{"arm": "widen=fc1,fc2:leveling", "method": "sparse", "f=2": "57.07 ± 0.35"}])
    consoles.out.print(table(df, "per factor", keep=2))   # arm and method tell rows apart
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 24
    flat = " ".join(text.split())
    assert "arm widen=fc1,fc2:leveling" in flat and "method sparse" in flat and "f=2 57.07 ± 0.35" in flat

"""The committed studies stay valid: every run of every study recipe is finished in results/studies/.

Guards run identity: a change to RunSpec hashing or canonicalization would silently orphan the
committed results (a sweep would retrain them all).
"""

from pathlib import Path

import pytest
from helpers import invoke

from widecli.analysis.frame import load_frame, studies
from widecli.execute.worklist import run_statuses
from widecli.recipes import expand, load_recipe

ROOT = Path(__file__).resolve().parent.parent
STUDY_RESULTS = ROOT / "results" / "studies"
STUDIES = sorted((ROOT / "recipes" / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_run_of_a_committed_study_is_finished(path):
    specs = expand(load_recipe(path))
    planned = run_statuses(specs, STUDY_RESULTS)
    todo = [p.run_id for p in planned if p.status != "finished"]
    assert not todo, f"{path.name}: {len(todo)} of {len(planned)} runs not finished in results/studies/"


def test_committed_report_regenerates(tmp_path):
    df = load_frame(STUDY_RESULTS)
    # Diverged runs are results (the official variant's linear bottlenecks at lr 5); none failed.
    assert len(df) >= 500 and set(df["status"]) <= {"ok", "diverged"} and (df["status"] == "ok").mean() > 0.99
    assert len(studies(df)) >= 10


def test_committed_report_regenerates_byte_for_byte(tmp_path):
    """`widecli report results/ --table1` rebuilds the committed results/studies/report.md and .txt exactly."""
    res = invoke("report", STUDY_RESULTS, "--table1", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    for name in ("report.md", "report.txt"):
        assert (tmp_path / name).read_bytes() == (STUDY_RESULTS / name).read_bytes(), name


def _table_rows(markdown: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first markdown table whose first column is `first_header`."""
    for block in markdown.split("\n\n"):
        lines = [line for line in block.strip().splitlines() if line.startswith("|")]
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
        if cells and cells[0][0] == first_header:
            return cells[0], cells[2:]
    raise AssertionError(f"no table with a {first_header!r} column")


def test_the_studies_readme_table1_rows_are_rows_of_the_committed_report():
    """results/studies/README.md quotes Table 1 rows by hand; each must be a row of report.md."""
    header, quoted = _table_rows((STUDY_RESULTS / "README.md").read_text(), "study")
    r_header, report = _table_rows((STUDY_RESULTS / "report.md").read_text(), "recipe")
    assert len(quoted) >= 10
    for row in quoted:
        q = dict(zip(header, row, strict=True))
        matches = [dict(zip(r_header, r, strict=True)) for r in report
                   if r[0] == q["study"] and f"epochs={q['epochs']}," in r[r_header.index("settings")] + ","
                   and "scope=all" in r[r_header.index("settings")] and "mask=random" in r[r_header.index("settings")]]
        matches = [m for m in matches if (m["widened"], m["rule"]) == (q["widened"], q["rule"])]
        assert len(matches) == 1, row
        assert {k: matches[0][k] for k in header[5:]} == {k: q[k] for k in header[5:]}, row

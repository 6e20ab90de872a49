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

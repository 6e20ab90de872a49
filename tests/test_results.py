"""The committed studies stay valid: every run of every study recipe is finished in results/.

Guards run identity: a change to RunSpec hashing or canonicalization would silently orphan the
committed results (a sweep would retrain them all).
"""

from pathlib import Path

import pytest

from widecli import recipe, report, sweep

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted((ROOT / "recipes" / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_run_of_a_committed_study_is_finished(path):
    specs = recipe.expand(recipe.load(path))
    planned = sweep.plan(specs, ROOT / "results")
    todo = [p.run_id for p in planned if p.status != "finished"]
    assert not todo, f"{path.name}: {len(todo)} of {len(planned)} runs not finished in results/"


def test_committed_report_regenerates(tmp_path):
    df = report.load_frame(ROOT / "results")
    assert len(df) >= 500 and set(df["status"]) == {"ok"}
    assert len(report.studies(df)) >= 10

"""The run path's stop hook (execute.run.run_group `stop`): asked after every epoch, it ends a group
early (a pruned tuning trial); the stopped runs are not stored as finished runs, their leases are
released, and the same runs train to the end when asked again."""

from __future__ import annotations

import torch

from widecli.execute.worklist import status_of
from widecli.execute.run import run_group
from widecli.recipes import expand, load_recipe
from widecli.store import lock
from widecli.store import runs as store


def test_a_stopped_group_leaves_nothing_stored_and_its_leases_free(make_recipe, tmp_path):
    # with in-run checkpoints: a stopped group must not leave one behind to "resume" from
    r = load_recipe(make_recipe({"widen": {"factors": [1]}, "seeds": [0, 1],
                                 "train": {"epochs": 6, "checkpoint_every": 1}}))
    specs = expand(r)
    asked = []

    def stop(epoch, epochs, rows):
        asked.append((epoch, epochs, len(rows)))
        return epoch == 2

    report = run_group(specs, tmp_path, torch.device("cpu"), stop=stop, record_failures=False)
    assert asked == [(1, 6, 2), (2, 6, 2)]             # asked every epoch, with each run's last row
    assert [s.run_id for s in report.stopped] == [s.run_id for s in specs] and not report.trained
    assert all(status_of(tmp_path, s)[0] == "new" for s in specs)       # nothing half-written left
    assert not any(store.run_dir(tmp_path, s).exists() for s in specs)
    assert all(lock.lock_owner(tmp_path, s) is None for s in specs)
    journal = (tmp_path / r.name / lock.LOCKS / "journal.log").read_text().split("\n")
    assert sum(line.endswith("stopped") for line in journal) == 2

    report = run_group(specs, tmp_path, torch.device("cpu"), stop=lambda *a: False, record_failures=False)
    assert len(report.trained) == 2 and not report.stopped
    assert all(store.read_result(store.run_dir(tmp_path, s))["final"]["epochs_run"] == 6 for s in specs)

"""Plots read back from the figures (issue 21): accuracy axes stop at 100%, the connectivity axis at
1 (and its panel is left out without sparse runs), coinciding curves stay visible, titles label every
setting, the weight budget and what the error bars are, close factor ticks do not overlap."""

from __future__ import annotations

from pathlib import Path

import pytest

from widecli.analysis import plots
from widecli.analysis.frame import load_frame, studies
from widecli.store import runs as store

STUDIES = Path(__file__).resolve().parents[2] / "results" / "studies"


def study(recipe: str, name_part: str):
    return next(s for s in studies(load_frame(STUDIES, [recipe])) if name_part in s.name)


@pytest.fixture(scope="module")
def mnist_1000():
    """Train accuracy at 100% with error bars (the axis once ran to 104%), sparse under dense at f=1."""
    return study("mnist1d_ablation", "first-leveling-epochs=1000")


def test_accuracy_axes_stop_at_100_percent(mnist_1000):
    fig = plots.study_figure(mnist_1000)
    test_ax, train_ax, conn_ax = fig.axes
    assert train_ax.get_ylim()[1] <= 100.5 and test_ax.get_ylim()[1] <= 100.5
    assert train_ax.get_ylim()[0] >= 0


def test_connectivity_axis_ends_at_1(mnist_1000):
    conn_ax = plots.study_figure(mnist_1000).axes[2]
    left, right = conn_ax.get_xlim()
    assert right == pytest.approx(1.0) and 0 < left < 0.14  # up to connectivity 1 (never past it)
    assert "connectivity" in conn_ax.get_xlabel()


def test_no_connectivity_panel_without_sparse_runs(mnist_1000):
    from dataclasses import replace

    rows = mnist_1000.rows
    dense_only = replace(mnist_1000, rows=rows[rows["method"] != "sparse"], sparse=False)
    assert len(plots.study_figure(dense_only).axes) == 2  # (it once drew an empty panel from 1 to 10)
    assert len(plots.study_figure(mnist_1000).axes) == 3


def test_coinciding_curves_stay_visible(mnist_1000):
    test_ax = plots.study_figure(mnist_1000).axes[0]
    lines = {c.get_label(): c.lines[0] for c in test_ax.containers}  # errorbar: (data line, caps, bars)
    assert lines["sparse"].get_marker() != lines["dense"].get_marker()
    # offset along the factor axis: the two f=1 points (the shared baseline) do not sit on each other
    assert lines["sparse"].get_xdata()[0] != lines["dense"].get_xdata()[0]
    assert lines["sparse"].get_zorder() > lines["dense"].get_zorder()


def test_title_labels_every_setting_the_budget_and_the_error_bars(mnist_1000):
    title = plots.study_figure(mnist_1000)._suptitle.get_text()
    assert "epochs=1000" in title and "rule=leveling" in title and "widened=first" in title
    assert "budget 2,624 weights" in title and "error bars: std over seeds" in title and "3 seeds" in title
    assert "· 1000" not in title  # no unlabelled numbers
    assert "nan" not in title and "{}" not in title


def test_close_factor_ticks_turn_instead_of_overlapping():
    fig = plots.study_figure(study("mnist5k_official", "first-custom"))  # factors ... 64, 79.375
    labels = fig.axes[0].get_xticklabels()
    assert "79.38" in [t.get_text() for t in labels]
    assert all(t.get_rotation() == 45 for t in labels)
    fig = plots.study_figure(study("digits_cnn", "all-leveling"))  # factors 1, 2, 4, 8, 16: room enough
    assert all(t.get_rotation() == 0 for t in fig.axes[0].get_xticklabels())


def test_learning_curves_one_line_per_method_and_factor(mnist_1000):
    metrics = store.read_metrics(STUDIES, ["mnist1d_ablation"])
    fig = plots.curves_figure(mnist_1000, metrics)
    test_ax = fig.axes[0]
    labels = sorted(line.get_label() for line in test_ax.get_lines())
    assert labels == ["baseline f=1", "dense f=2", "dense f=4", "dense f=8", "sparse f=2", "sparse f=4", "sparse f=8"]
    assert max(len(line.get_xdata()) for line in test_ax.get_lines()) == 1000  # every epoch
    assert test_ax.get_ylim() == (0, 100.5)

"""Paired-by-seed bootstrap intervals, checked as properties over generated per-seed accuracies."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widecli.analysis import stats

accuracy = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def cells(draw, k: int = 2, min_seeds: int = 2):
    """k cells of per-seed accuracies over the same seeds (arbitrary seed labels and order)."""
    seeds = draw(st.lists(st.integers(0, 10_000), min_size=min_seeds, max_size=8, unique=True))
    return [pd.Series([draw(accuracy) for _ in seeds], index=seeds) for _ in range(k)]


@given(cells(), st.lists(st.floats(-0.2, 0.2), min_size=8, max_size=8))
@settings(max_examples=60, deadline=None)
def test_seed_effects_shared_by_both_cells_cancel(pair, offsets):
    base, other = pair
    shift = pd.Series(offsets[:len(base)], index=base.index)
    lo, hi, n = stats.delta_interval(base, other)
    lo2, hi2, n2 = stats.delta_interval(base + shift, other + shift)
    assert n == n2 == len(base)
    assert (lo2, hi2) == pytest.approx((lo, hi), abs=1e-9)


@given(cells())
@settings(max_examples=60, deadline=None)
def test_the_interval_lies_within_the_per_seed_differences_and_ignores_seed_order(pair):
    base, other = pair
    diff = other - base
    lo, hi, _ = stats.delta_interval(base, other)
    assert diff.min() - 1e-12 <= lo <= hi <= diff.max() + 1e-12
    order = list(reversed(base.index))
    assert stats.delta_interval(base[order], other[order]) == (lo, hi, len(base))
    assert stats.delta_interval(base, other) == (lo, hi, len(base))  # byte-for-byte reproducible


@given(cells(k=3))
@settings(max_examples=60, deadline=None)
def test_the_fraction_interval_lies_within_the_per_seed_ratios(cells3):
    base, wide, dense = cells3
    dense = base + (dense - base).abs() + 0.01                 # dense above baseline on every seed
    lo, hi, _ = stats.fraction_interval(base, wide, dense)
    ratios = (wide - base) / (dense - base)
    # A ratio of means is a weighted mean of the per-seed ratios (weights: the dense gains > 0).
    assert ratios.min() - 1e-9 <= lo <= hi <= ratios.max() + 1e-9


def test_a_constant_gain_has_a_point_interval_and_one_seed_has_none():
    base = pd.Series([0.8, 0.7, 0.9], index=[3, 1, 2])
    lo, hi, n = stats.delta_interval(base, base + 0.05)
    assert (lo, hi, n) == (pytest.approx(0.05), pytest.approx(0.05), 3)
    assert stats.excludes_zero(lo, hi) is True
    lo, hi, n = stats.delta_interval(base[[1]], base[[1]] + 0.05)
    assert math.isnan(lo) and math.isnan(hi) and n == 1 and stats.excludes_zero(lo, hi) is None
    assert stats.as_text(lo, hi) == ""
    # Only seeds present in both cells are paired.
    assert stats.delta_interval(base, pd.Series([0.85, 0.75], index=[3, 9]))[2] == 1


def test_pairing_narrows_the_interval_when_seeds_share_an_effect():
    """Seed effects of +-5 points shared by both cells: the paired interval of a steady +1 point
    gain excludes 0, where resampling the cells independently would not."""
    rng = np.random.default_rng(1)
    effect = pd.Series(rng.normal(0, 0.05, 6))
    base = 0.8 + effect
    wide = base + 0.01 + pd.Series(rng.normal(0, 0.002, 6))
    lo, hi, _ = stats.delta_interval(base, wide)
    assert 0 < lo < 0.01 < hi < 0.02
    assert stats.excludes_zero(lo, hi)

"""Paired-by-seed bootstrap intervals for the claims a report makes.

Runs of one study share their seeds (the seed sets init, masks and data order), so the natural
comparison pairs them: the gain of the sparse-wide model over the baseline is measured seed by seed,
and the seed-to-seed spread that both share cancels. The interval is the percentile bootstrap over
seeds (resampling whole seeds with replacement), with a fixed generator so that a report is the same
byte for byte every time it is written.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

REPS = 10_000       # bootstrap resamples
SEED = 0            # fixed: reports are reproducible byte for byte
LEVEL = 0.95


def paired(cells: list[pd.Series]) -> tuple[np.ndarray, list]:
    """The per-seed values of the seeds every cell has, as [cells, seeds]."""
    common = sorted(set.intersection(*(set(c.index) for c in cells))) if cells else []
    return np.array([[float(c[s]) for s in common] for c in cells]).reshape(len(cells), len(common)), common


def _resample(values: np.ndarray) -> np.ndarray:
    """Bootstrap means [REPS, cells]: each resample draws the seeds with replacement (the same seeds
    for every cell: the pairing)."""
    n = values.shape[1]
    idx = np.random.default_rng(SEED).integers(0, n, size=(REPS, n))
    return values[:, idx].mean(axis=2).T


def _interval(samples: np.ndarray) -> tuple[float, float]:
    kept = samples[~np.isnan(samples)]
    if not len(kept):
        return math.nan, math.nan
    lo, hi = np.percentile(kept, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def delta_interval(base: pd.Series, other: pd.Series) -> tuple[float, float, int]:
    """95% interval of mean(other - base) over the paired seeds, and the number of pairs (an
    interval needs two)."""
    values, common = paired([base, other])
    if len(common) < 2:
        return math.nan, math.nan, len(common)
    means = _resample(values)
    return (*_interval(means[:, 1] - means[:, 0]), len(common))


def fraction_interval(base: pd.Series, wide: pd.Series, dense: pd.Series) -> tuple[float, float, int]:
    """95% interval of (wide - base) / (dense - base), each resample's ratio of means (as the point
    value is), over the seeds all three share. A resample whose dense gain is 0 has no ratio and is
    left out; one whose gain is negative gives a negative or huge ratio, and widens the interval as it
    should."""
    values, common = paired([base, wide, dense])
    if len(common) < 2:
        return math.nan, math.nan, len(common)
    means = _resample(values)
    gain = means[:, 2] - means[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(gain != 0, (means[:, 1] - means[:, 0]) / gain, np.nan)
    return (*_interval(ratio), len(common))


def excludes_zero(lo: float, hi: float) -> bool | None:
    """Whether an interval lies wholly on one side of 0; None where there is no interval."""
    if math.isnan(lo) or math.isnan(hi):
        return None
    return lo > 0 or hi < 0


def as_text(lo: float, hi: float) -> str:
    """An interval as a CSV cell, `[lo, hi]` in full precision (JSON), empty where there is none."""
    return "" if math.isnan(lo) or math.isnan(hi) else json.dumps([lo, hi])

"""Terminal bar charts (`widecli report --charts`): a study's accuracy per method and factor as text
bars, from the bars analysis.summary.accuracy_bars computes."""

from __future__ import annotations

import pandas as pd

from widecli.analysis.summary import AccuracyBars


def text_chart(bars: AccuracyBars, width: int = 60) -> str:
    """Accuracy vs factor as text bars per method, scaled between the lowest and highest mean; ▲ / ▼:
    above / below the baseline."""
    lo, hi = bars.low, bars.high
    span = max(hi - lo, 1e-9)
    bar_w = max(10, width - 34)
    lines = [f"{bars.study}: test accuracy vs widening factor (bars span {100 * lo:.2f}%..{100 * hi:.2f}%)"]
    for method, f, m in bars.bars:
        n = 1 + round((m - lo) / span * (bar_w - 1))
        tag = "baseline" if f == 1 else method
        mark = "" if f == 1 or pd.isna(bars.baseline) else (" ▲" if m > bars.baseline else " ▼")
        lines.append(f"{tag:>20} f={f:<5g} {'█' * n:<{bar_w}} {100 * m:6.2f}%{mark}")
    return "\n".join(lines)

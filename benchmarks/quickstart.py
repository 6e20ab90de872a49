"""The README's quick-start figures, measured: `widecli sweep recipes/quickstart.yaml` as a new user
runs it (a fresh process, a fresh results folder, default settings), its wall time, its Table 1 row
(baseline, best sparse wide and its factor, dense wide) and how close the sweep's own estimate after
its first group came to the real total. Writes benchmarks/results/quickstart.txt, which the README
quotes (tests/test_readme_figures.py checks that it does), and, for the getting-started page (which
includes them), what a newcomer sees next on the same results: `widecli report --table1 --format md`
(quickstart_table1.md), `widecli report --charts` (quickstart_charts.txt) and the per-arm Table 1 of
`widecli ablate --widen-layers all` (quickstart_ablate.md; 12 more runs).

    nice -n 5 python benchmarks/quickstart.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"
OUT = ROOT / "benchmarks" / "results" / "quickstart.txt"
TABLE1, CHARTS, ABLATE = (ROOT / "benchmarks" / "results" / name
                          for name in ("quickstart_table1.md", "quickstart_charts.txt", "quickstart_ablate.md"))


def widecli(*args: str) -> str:
    """Run a widecli command as a user would (a fresh process); its stdout without the 'written:' lines."""
    run = subprocess.run([sys.executable, "-m", "widecli.cli.app", *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    if run.returncode:
        sys.exit(run.stdout + run.stderr)
    return "\n".join(line for line in run.stdout.splitlines() if not line.startswith("written:")).strip() + "\n"


def per_arm_table(results: Path) -> str:
    """The 'Table 1 per arm' section of the ablation's markdown file."""
    [md] = sorted((results / "quickstart").glob("ablate-*.md"))
    text = md.read_text()
    return text[text.index("## Table 1 per arm"):].strip() + "\n"


def minutes(seconds: float) -> str:
    """`1 min 56 s`: how the README writes a duration."""
    s = int(round(seconds))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def seconds(text: str) -> float:
    """`2m05s` / `45s` / `1h02m` (cli.render.console.duration) -> seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return 3600 * h + 60 * mi + s


def main() -> None:
    from widecli.analysis.report import table1_of

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        start = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "widecli.cli.app", "sweep", str(RECIPE), "--results", str(results)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.monotonic() - start
        if run.returncode:
            sys.exit(run.stdout + run.stderr)
        t = table1_of(results, ["quickstart"]).iloc[0]
        out = Path(tmp) / "report"
        TABLE1.write_text(widecli("report", str(results), "--table1", "--format", "md", "--out", str(out)))
        CHARTS.write_text(widecli("report", str(results), "--charts", "--out", str(out)))
        widecli("ablate", str(RECIPE), "--widen-layers", "all", "--results", str(results))
        ABLATE.write_text(per_arm_table(results))
    estimate = re.search(r"estimated total ~(\S+) ", run.stdout)
    eta = seconds(estimate.group(1)) if estimate else float("nan")
    pm = lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}%"  # noqa: E731
    lines = [
        "# widecli sweep recipes/quickstart.yaml: a fresh process and results folder, default settings",
        f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, load average at start {load[0]:.1f} "
        f"(other users), nice 5",
        "runs: 14",
        f"wall time: {minutes(wall)}",
        f"baseline: {pm(t['baseline'], t['baseline_std'])}",
        f"sparse wide: {pm(t['sparse'], t['sparse_std'])} at f = {t['sparse_factor']:g} "
        f"(connectivity {t['sparse_connectivity']:.2f})",
        f"dense wide: {pm(t['dense'], t['dense_std'])} at f = {t['dense_factor']:g}",
        f"estimate after the first group: {minutes(eta)} (real total / estimate = {wall / eta:.2f})",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

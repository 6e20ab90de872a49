"""The README's quick-start figures are the committed benchmark output (benchmarks/quickstart.py writes
benchmarks/results/quickstart.txt): a new user's fresh run can be compared with them, and they cannot
drift from what the benchmark measured. The figures are looked up in the README's quick-start section
by its heading, not by line numbers (the README is being restructured)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_section(text: str) -> str:
    """The README section whose heading says quick start, up to the next heading of its level or above."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"#+\s.*quick[ -]?start", line, re.IGNORECASE))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((j for j in range(start + 1, len(lines))
                if re.match(rf"#{{1,{level}}}\s", lines[j])), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def measured() -> dict[str, str]:
    out = {}
    for line in (ROOT / "benchmarks" / "results" / "quickstart.txt").read_text().splitlines():
        if not line.startswith("#") and ": " in line:
            key, value = line.split(": ", 1)
            out[key] = value
    return out


def test_the_quick_start_quotes_the_committed_benchmark_output():
    section = quickstart_section((ROOT / "README.md").read_text())
    m = measured()
    sparse = re.fullmatch(r"(.+%) at f = (\S+) \(connectivity (\S+)\)", m["sparse wide"])
    dense = re.fullmatch(r"(.+%) at f = (\S+)", m["dense wide"])
    figures = [m["wall time"], m["baseline"], f"{sparse.group(1)} at f = {sparse.group(2)}",
               f"(connectivity {sparse.group(3)})", f"{dense.group(1)} at f = {dense.group(2)}"]
    for figure in figures:
        assert figure in section, f"README quick start does not quote {figure!r} (benchmarks/results/quickstart.txt)"


def test_the_benchmark_estimate_after_the_first_group_was_within_2x():
    ratio = float(re.search(r"real total / estimate = (\S+)\)", measured()["estimate after the first group"]).group(1))
    assert 0.5 <= ratio <= 2.0


def test_the_getting_started_page_shows_the_committed_outputs_and_quotes_them():
    """docs/getting-started.md includes the benchmark's report, chart and ablation outputs (never a
    hand-copied table) and its prose quotes the same wall time and Table 1 figures."""
    page = (ROOT / "docs" / "getting-started.md").read_text()
    for name in ("quickstart_table1.md", "quickstart_charts.txt", "quickstart_ablate.md"):
        assert f"```widecli:include benchmarks/results/{name}" in page, name
        assert (ROOT / "benchmarks" / "results" / name).is_file(), name
    section = quickstart_section(page)
    m = measured()
    for figure in (m["wall time"], m["baseline"].split(" ± ")[0], m["sparse wide"].split(" ± ")[0],
                   m["dense wide"].split(" ± ")[0]):
        assert figure in section, f"getting started does not quote {figure!r} (benchmarks/results/quickstart.txt)"
    table1 = (ROOT / "benchmarks" / "results" / "quickstart_table1.md").read_text()
    assert m["baseline"].rstrip("%") in table1 and m["sparse wide"].split("%")[0] in table1

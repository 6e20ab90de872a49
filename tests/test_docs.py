"""The README stays short and the documentation's links stay true: README.md under 300 lines with no
section markers, every relative link and image in README.md, docs/ and the studies' README pointing at a
file that exists, and CI running the README's test command. (`mkdocs build --strict` checks the site
itself, anchors and API names included; this test needs no MkDocs.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "results" / "studies" / "README.md", *sorted(DOCS.rglob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCED = re.compile(r"^( *)(```|~~~).*?^\1\2[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
TEST_COMMAND = 'pip install -e ".[dev,ray,slurm,export]" && pytest -q'


def mounts() -> tuple[str, ...]:
    """The repository folders docs/hooks.py publishes into the site at the same path (its MOUNTS)."""
    for node in ast.parse((DOCS / "hooks.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MOUNTS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("docs/hooks.py has no MOUNTS")


def relative_links(text: str) -> list[str]:
    """Link and image targets outside code, without URLs, mail addresses or bare #anchors."""
    text = INLINE_CODE.sub("", FENCED.sub("", text))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t)]


def resolves(page: Path, target: str) -> bool:
    path = (page.parent / target.split("#", 1)[0]).resolve()
    if path.exists():
        return True
    # A page under docs/ may link to a mounted folder at its site path, docs/<mount>/...
    if DOCS in path.parents:
        rel = path.relative_to(DOCS).as_posix()
        return any(rel.startswith(m + "/") for m in mounts()) and (ROOT / rel).exists()
    return False


def test_readme_is_at_most_300_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move the detail into docs/ (limit 300)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_section_markers(page):
    assert "<!-- section:" not in page.read_text() and "<!-- end section" not in page.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(page):
    links = relative_links(page.read_text())
    broken = [t for t in links if not resolves(page, t)]
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_every_page_links_somewhere_checkable():
    """The link pattern finds links at all (a regex that matched nothing would pass every page)."""
    assert len(relative_links((ROOT / "README.md").read_text())) >= 10
    assert relative_links("[a](x.md) ![b](p/y.png) [c](https://e.org) [d](#top) `[e](z.md)`") == ["x.md", "p/y.png"]


def test_ci_runs_the_readme_test_command_and_the_strict_docs_build():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme and TEST_COMMAND in ci
    assert "mkdocs build --strict" in ci

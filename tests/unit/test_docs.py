"""The docs the code leans on: every cited definition exists, and the README stays a user's page."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"definitions §(\d+(?:\.\d+)*)")


def _cited() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for folder in ("pytest_icl", "tests", "benchmarks", "tasks"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".yml", ".md") and path.is_file():
                for number in CITATION.findall(path.read_text(encoding="utf-8")):
                    cited.setdefault(number, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_cited_definition_has_its_section():
    headings = set(re.findall(r"^#+ §(\d+(?:\.\d+)*)\b", (ROOT / "docs" / "definitions.md").read_text(encoding="utf-8"), re.M))
    cited = _cited()
    assert cited, "the search found no citation at all: the pattern is wrong"
    missing = {number: sorted(files) for number, files in cited.items() if number not in headings}
    assert not missing, f"cited but not defined in docs/definitions.md: {missing}"


def test_the_readme_is_short_and_has_both_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 15 * 1024
    assert "pytest tasks --icl-report icl-report" in text and "&& pytest tests" in text

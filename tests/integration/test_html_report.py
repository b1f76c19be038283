"""--icl-report's index.html and plots, from a real run compared with a (perturbed) baseline and
from a run with --icl-controls, and the pages as headless Chromium renders them from disk
(skipped when Chromium is absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from markupsafe import escape

from tests.integration.test_baseline import MODEL_ID, TASK, Stored, shifted, stored  # noqa: F401 (stored is a fixture)

PNG = b"\x89PNG\r\n\x1a\n"
PAIR = f"{MODEL_ID}-{TASK}"


@dataclass
class Report:
    folder: Path
    result: pytest.RunResult


@pytest.fixture(scope="module")
def report(stored: Stored) -> Report:  # noqa: F811
    """A compare run with --icl-report against a baseline whose SimAOU was 0.3 higher."""
    path = stored.project.copy(stored.path, "html-baseline.json", shifted("simaou", by=0.3))
    result = stored.project.run(f"--icl-baseline={path}", "--icl-report=html-report")
    return Report(stored.project.folder / "html-report", result)


@pytest.fixture(scope="module")
def controls_report(stored: Stored) -> Report:  # noqa: F811
    """A run with the controls that have per-layer curves (shuffled, lcgd), output and two seeds.

    untrained is left out to save its two extra model runs (~11 s); the unit tests cover its rows.
    """
    result = stored.project.run("--icl-controls=shuffled,lcgd,output,seeds", "--icl-seeds=2", "--icl-report=controls-report")
    return Report(stored.project.folder / "controls-report", result)


def _verdict_plots(row: dict) -> tuple[str, ...]:
    """The verdicts figure, drawn for a row decided over draws."""
    return ("verdicts",) if row.get("verdicts") else ()


def test_the_report_folder_holds_the_page_plots_and_results(report: Report):
    report.result.stdout.fnmatch_lines([f"report: {report.folder / 'index.html'}"])
    (row,) = json.loads((report.folder / "results.json").read_text())["rows"]
    names = sorted(p.name for p in (report.folder / "plots").iterdir())
    assert names == sorted(
        f"{PAIR}-{kind}.png" for kind in ("simaou", "simam", "kendall", "baseline-layers", "baseline-metrics", *_verdict_plots(row))
    )
    for name in names:
        assert (report.folder / "plots" / name).read_bytes().startswith(PNG)
    assert not list(report.folder.rglob("*.tmp"))
    assert row["properties"]["baseline"] == "failed"


def test_the_page_links_its_plots_relatively_and_shows_the_comparison(report: Report):
    page = (report.folder / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == sorted(f"plots/{p.name}" for p in (report.folder / "plots").iterdir())
    assert "http://" not in page and "https://" not in page
    assert '<span class="badge regressed" title="regressed">regressed</span>' in page
    simaou_line = next(line for line in page.splitlines() if line.startswith("<tr") and "<td>simaou</td>" in line)
    assert 'class="bad"' in simaou_line and "lower" in simaou_line


def test_the_controls_are_shown_beside_their_metrics(controls_report: Report):
    folder = controls_report.folder
    (row,) = json.loads((folder / "results.json").read_text())["rows"]
    assert set(row["controls"]) == {"shuffled", "lcgd", "output", "seeds"}
    names = sorted(p.name for p in (folder / "plots").iterdir())
    assert names == sorted(
        f"{PAIR}-{kind}.png"
        for kind in ("simaou", "simam", "kendall", "controls-simaou", "controls-simam_delta", "controls-kendall", *_verdict_plots(row))
    )  # fmt: skip
    page = (folder / "index.html").read_text(encoding="utf-8")
    table = page.split("<table class=controls>", 1)[1].split("</table>", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("<tr><td>")]
    checks = [o for name in ("shuffled", "lcgd", "output") for o in row["controls"][name]["outcomes"]]
    assert len([line for line in lines if not line.startswith("<tr><td>seeds")]) == len(checks)
    for line, check in zip(lines, checks):  # each check beside the real value, to 4 digits, as results.json has it
        value = "n/a" if check["value"] is None else f"{check['value']:.4f}"
        assert f"<td class=num>{value}</td>" in line, line
    seeds = [line for line in lines if line.startswith("<tr><td>seeds")]
    over = "(over seeds " + ", ".join(str(s) for s in row["controls"]["seeds"]["seeds"]) + ")"
    assert any(over in line and " ± " in line for line in seeds)
    # Every property's outcome, inconclusive included, has its badge (the tiny random model decides which).
    for name, outcome in row["properties"].items():
        assert f'<span class="badge {outcome}" title="{outcome}">{name}' in page


def test_each_property_shows_its_estimate_interval_margin_and_outcome(controls_report: Report):
    """The page beside results.json: per property the estimate of metric − control, its 95% interval,
    the margin and the outcome's badge; the draws (a single one marked); closed gates; left-out layers."""
    (row,) = json.loads((controls_report.folder / "results.json").read_text())["rows"]
    if not row.get("verdicts"):
        pytest.skip("this version's rows carry no verdicts over draws")
    page = (controls_report.folder / "index.html").read_text(encoding="utf-8")
    section = page.split(f'<section id="{PAIR}">', 1)[1].split("</section>", 1)[0]
    table = section.split("<table class=verdicts>", 1)[1].split("</table>", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("<tr") and 'class="extra"' not in line]

    def signed(x):
        return "n/a" if x is None else f"{x:+.4f}"

    assert len(lines) == len(row["verdicts"])
    for line, (name, v) in zip(lines, row["verdicts"].items()):
        assert f">{name}</td>" in line, line
        interval = "n/a" if v["low"] is None or v["high"] is None else f"[{signed(v['low'])}, {signed(v['high'])}]"
        assert f"<td class=num>{signed(v['estimate'])}</td><td class=num>{interval}</td><td class=num>{v['margin']:+g}</td>" in line
        assert f'<span class="badge {v["outcome"]}" title="{v["outcome"]}">{v["outcome"]}</span>' in line
    assert f"Decided over {row['draws']} demonstration draw" in section
    assert ("single draw" in section) == (row["draws"] == 1)
    for name, gate in row["gates"].items():
        assert f"<td>{name}</td>" in section and str(escape(gate["reason"])) in section
        if not gate["open"]:
            assert str(escape(gate["reason"])) in page.split("<h2>Per pair</h2>", 1)[0]  # in the summary too
    assert "left out of SimAM∆" in section


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--virtual-time-budget=5000",
]  # fmt: skip


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_chromium_renders_the_page_from_disk_with_every_plot(report: Report, tmp_path: Path):
    # Moved elsewhere, the folder still works: nothing in it points outside it.
    moved = shutil.copytree(report.folder, tmp_path / "moved")
    url = (moved / "index.html").as_uri()
    dom = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
    )  # fmt: skip
    assert 'data-images="ok"' in dom.stdout, dom.stderr[-2000:]
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--screenshot={screenshot}", "--window-size=1400,1800", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    data = screenshot.read_bytes()
    assert data.startswith(PNG) and len(data) > 50_000  # a blank page is a few kB


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_chromium_loads_every_control_plot(controls_report: Report):
    url = (controls_report.folder / "index.html").as_uri()
    dom = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
    )  # fmt: skip
    assert 'data-images="ok"' in dom.stdout, dom.stderr[-2000:]
    (row,) = json.loads((controls_report.folder / "results.json").read_text())["rows"]
    assert dom.stdout.count('<img src="plots/') == 6 + len(_verdict_plots(row)) and "<h4>Controls</h4>" in dom.stdout

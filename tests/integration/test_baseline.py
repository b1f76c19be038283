"""--icl-baseline end to end: update then compare, regressions with their diff, key mismatches,
cross-dtype comparisons, failed and interrupted updates, corrupt files, and pytest-xdist.

Most tests share one project (:func:`stored`): one task, the tiny GPT-2, and a baseline written
once with ``--icl-baseline-update``. A task's hash covers its data files' absolute paths, so the
runs that compare with that baseline run in the same folder, each with its own copy of the file.
Compare runs select ``-k baseline``: the tiny random model's property outcomes are noise here.

The project's conftest.py simulates trouble when told through the environment:
``ICL_TEST_CRASH_REPLACE=NAME`` makes ``os.replace`` onto a file called NAME raise (a crash
between writing the temporary file and renaming it), ``ICL_TEST_INTERRUPT=1`` raises
KeyboardInterrupt (Ctrl-C) in the third property test, after the pair's row exists.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.icl_project import INNER_TIMEOUT_S, LEAKY_VARIABLES, TEST_INI, hermetic_env, write_task

MODEL_ID = "tiny-gpt2"
TASK = "antonyms"
BASELINE_ITEM = f"test_icl[{MODEL_ID}-{TASK}-baseline]"


def esc(text: str) -> str:
    """``text`` as a literal inside an fnmatch pattern (``[`` opens a character class there)."""
    return text.replace("[", "[[]")


CONFTEST = """
import os

import pytest

if os.environ.get("ICL_TEST_CRASH_REPLACE"):
    _replace = os.replace

    def _crash(source, target):
        if os.fspath(target).endswith(os.environ["ICL_TEST_CRASH_REPLACE"]):
            raise OSError("simulated crash while renaming")
        return _replace(source, target)

    os.replace = _crash


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if os.environ.get("ICL_TEST_INTERRUPT") and item.name.endswith("-simaou]"):
        raise KeyboardInterrupt
"""


class Project:
    """A task folder plus a runner: ``pytest ARGS`` in a subprocess with a hermetic environment."""

    def __init__(self, folder: Path, models: list[Path], tasks: dict[str, dict]):
        self.folder = folder
        self.models = models
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pytest.ini").write_text(TEST_INI)  # one draw, gates open: see icl_project.TEST_INI
        (folder / "conftest.py").write_text(CONFTEST)
        for name, icl in tasks.items():
            write_task(folder / "tasks", name, icl=icl)

    def run(self, *args: str, env: dict[str, str] | None = None, limit: int = 4) -> pytest.RunResult:
        # "--icl-model=PATH" and "--icl-baseline=FILE", never separate: an existing path given on
        # its own would count as a test path when pytest picks its rootdir.
        base = ["-p", "no:cacheprovider", f"--icl-limit={limit}", *(f"--icl-model={m}" for m in self.models)]
        environment = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
        environment.update(hermetic_env(self.folder / "home"), HOME=str(self.folder / "home"), **(env or {}))
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", f"--basetemp={self.folder / 'basetemp'}", *base, *args],
            cwd=self.folder, env=environment, capture_output=True, text=True, timeout=INNER_TIMEOUT_S, check=False,
        )  # fmt: skip
        return pytest.RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(), time.perf_counter() - start)

    def copy(self, source: Path, name: str, change=None) -> Path:
        """A copy of a baseline file, its first row passed through ``change`` if given."""
        data = json.loads(source.read_text())
        if change is not None:
            change(data["rows"][0])
        target = self.folder / name
        target.write_text(json.dumps(data, indent=1))
        return target


@dataclass
class Stored:
    project: Project
    path: Path  # the baseline file written by the update run
    update: pytest.RunResult

    @property
    def row(self) -> dict:
        return json.loads(self.path.read_text())["rows"][0]


@functools.cache
def _stored(folder: Path, model: Path) -> Stored:
    # Memoised outside pytest's fixture cache so test_html_report.py, which imports the fixture,
    # shares this run instead of making its own.
    # The task's tolerances say Kendall may drop by up to 1.0: test_a_perturbed_metric relies on it.
    project = Project(folder, [model], {TASK: {"shots": 2, "tolerances": {"kendall": 1.0}}})
    update = project.run("--icl-baseline=baseline.json", "--icl-baseline-update")
    return Stored(project, folder / "baseline.json", update)


@pytest.fixture(scope="session")
def stored(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2: Path) -> Stored:
    """One task × the tiny GPT-2, its baseline written by ``--icl-baseline-update``."""
    return _stored(tmp_path_factory.getbasetemp() / "baseline-project", tiny_gpt2)


def shifted(*metrics: str, by: float):
    """A row change: each metric's value, interval and per-layer curve moved up by ``by``."""

    def change(row: dict) -> None:
        for metric in metrics:
            row["values"][metric] += by
            row["intervals"][metric] = [bound + by for bound in row["intervals"][metric]]
            row["layers"][metric] = [value + by for value in row["layers"][metric]]

    return change


# ---- update, then compare


def test_update_writes_one_row_per_pair(stored: Stored):
    stored.update.stdout.fnmatch_lines([f"baseline: wrote {stored.path} (1 row: 1 added, 0 refreshed, 0 kept)"])
    data = json.loads(stored.path.read_text())
    assert data["format"] == "pytest-icl-baseline" and data["schema"] == 1
    (row,) = data["rows"]
    assert (row["model_id"], row["task"], row["dtype"], row["shots"], row["eval"]) == (MODEL_ID, TASK, "float32", 2, 4)
    assert row["weights_hash"] and row["task_hash"] and row["stored_at"]
    assert set(row["properties"]) == {"accuracy", "rec2ftp", "simaou", "simam", "kendall"}  # no baseline item when updating
    assert row["layers"]["simaou"] and row["intervals"]["simaou"]
    assert BASELINE_ITEM not in "\n".join(stored.update.outlines)


def test_compare_with_the_unchanged_model_passes_and_leaves_the_file(stored: Stored):
    path = stored.project.copy(stored.path, "same.json")
    before = path.read_bytes()

    result = stored.project.run(f"--icl-baseline={path}", "-k", "baseline", "-v")

    result.assert_outcomes(passed=1, deselected=5)
    result.stdout.fnmatch_lines([f"*{esc(BASELINE_ITEM)} PASSED*", f"baseline: 1 pair(s) compared with {path}: 1 passed"])
    assert path.read_bytes() == before


def test_a_perturbed_metric_fails_with_the_diff(stored: Stored):
    """SimAOU regresses (default tolerance); Kendall is let off by the task YAML, SimAM after by the CLI."""
    path = stored.project.copy(stored.path, "perturbed.json", shifted("simaou", "kendall", "simam_after", by=0.3))
    old, new = json.loads(path.read_text())["rows"][0]["values"], stored.row["values"]

    result = stored.project.run(f"--icl-baseline={path}", "--icl-tolerance=simam_after=1", "-k", "baseline")

    result.assert_outcomes(failed=1, deselected=5)
    result.stdout.fnmatch_lines(
        [
            f"[[]{MODEL_ID}-{TASK}] baseline {path}: 1 metric(s) regressed (simaou) against the stored row of {MODEL_ID} (float32, cpu, stored *",
            "*metric*stored*stored 95% CI*new*new 95% CI*change*tolerance*worse if*verdict",
            f"*simaou *{old['simaou']:.4f}*{new['simaou']:.4f}*-0.3000*0.0200*lower*REGRESSED",
            f"*simam_after *{old['simam_after']:.4f}*{new['simam_after']:.4f}*-0.3000*1.0000*lower*ok",
            f"*kendall *{old['kendall']:.4f}*{new['kendall']:.4f}*-0.3000*1.0000*lower*ok",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        [f"baseline: 1 pair(s) compared with {path}: 1 regressed", f"FAILED tasks/{TASK}/{TASK}.yaml::{esc(BASELINE_ITEM)} - *"]
    )


def test_a_key_mismatch_is_reported_not_compared(stored: Stored):
    path = stored.project.copy(stored.path, "mismatch.json")

    result = stored.project.run(f"--icl-baseline={path}", "--icl-shots=1", "-k", "baseline")

    result.assert_outcomes(failed=1, deselected=5)
    result.stdout.fnmatch_lines(
        [
            f"[[]{MODEL_ID}-{TASK}] baseline {path}: key mismatch, not compared. The stored row was made with a different task_hash, shots. *",
            "*field*stored*this run",
            "*task_hash*",
            "*shots*2*1",
        ]
    )
    result.stdout.no_fnmatch_line("*REGRESSED*")


def test_bfloat16_against_the_float32_row(stored: Stored):
    """The change-of-model case: same weights in bfloat16, compared with the stored float32 row."""
    path = stored.project.copy(stored.path, "fp32.json")

    result = stored.project.run(
        f"--icl-baseline={path}", f"--icl-baseline-model={MODEL_ID}", "--icl-dtype=bfloat16", "--icl-report=rep-bf16", "-k", "baseline"
    )

    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    result.stdout.fnmatch_lines([f"baseline: 1 pair(s) compared with {path}: 1 [pr]*"])  # passed or regressed
    result.stdout.no_fnmatch_line("*mismatch*")
    (row,) = json.loads((stored.project.folder / "rep-bf16" / "results.json").read_text())["rows"]
    assert row["dtype"] == "bfloat16"
    page = (stored.project.folder / "rep-bf16" / "index.html").read_text()
    assert f"Against the stored row of {MODEL_ID} (float32, cpu)" in page


# ---- nothing lost


def test_a_crash_while_writing_leaves_the_old_file(stored: Stored):
    path = stored.project.copy(stored.path, "crash.json")
    before = path.read_bytes()

    result = stored.project.run(
        f"--icl-baseline={path}", "--icl-baseline-update", "--icl-shots=1", env={"ICL_TEST_CRASH_REPLACE": "crash.json"}
    )

    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["baseline: could not update, the previous file is unchanged: simulated crash while renaming"])
    assert path.read_bytes() == before
    assert not list(stored.project.folder.glob(".crash.json.*"))  # the temporary file is gone too


def test_an_interrupted_update_leaves_the_old_file(stored: Stored):
    path = stored.project.copy(stored.path, "interrupted.json")
    before = path.read_bytes()

    result = stored.project.run(f"--icl-baseline={path}", "--icl-baseline-update", "--icl-shots=1", env={"ICL_TEST_INTERRUPT": "1"})

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"baseline: run interrupted, {path} not updated (left as it was)"])
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"format": "pytest-icl-baseline", "rows": [',
            "ERROR: baseline file {path} is corrupt: not valid JSON (Expecting value at line 1, column *). It was left untouched: *",
        ),
        (
            '{"name": "my-package", "version": "1.0"}',
            "ERROR: {path} is not a pytest-icl baseline file: expected a JSON object with a 'rows' list. *",
        ),
    ],
    ids=["corrupt", "foreign"],
)
@pytest.mark.parametrize("update", [False, True], ids=["compare", "update"])
def test_a_corrupt_or_foreign_file_is_a_usage_error_and_never_overwritten(project, content, message, update):
    project.task()
    path = project.path / "bad.json"
    path.write_text(content)

    result = project.run(f"--icl-baseline={path}", *(["--icl-baseline-update"] if update else []))

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message.format(path=path)])
    result.stdout.no_fnmatch_line("*collected*")
    assert path.read_text() == content


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--icl-baseline=missing.json"], "ERROR: baseline file */missing.json does not exist. Create it with --icl-baseline-update."),
        (["--icl-baseline-update"], "ERROR: --icl-baseline-update needs --icl-baseline FILE"),
        (["--icl-baseline-model=x"], "ERROR: --icl-baseline-model needs --icl-baseline FILE"),
        (
            ["--icl-baseline=b.json", "--icl-baseline-update", "--icl-baseline-model=x"],
            "ERROR: --icl-baseline-model * cannot be combined with --icl-baseline-update",
        ),
        (["--icl-tolerance=simaou"], "ERROR: --icl-tolerance: 'simaou' is not allowed; give METRIC=VALUE with METRIC one of acc_zsl, *"),
        (
            ["--icl-tolerance=simam_before=0.1"],
            "ERROR: --icl-tolerance: 'simam_before=0.1' is not allowed; give METRIC=VALUE * (simam_before is not compared with the baseline *",
        ),
    ],
    ids=["missing", "update-alone", "model-alone", "update-and-model", "tolerance-form", "tolerance-control"],
)
def test_baseline_option_errors(project, args, message):
    project.task()

    result = project.run(*args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


# ---- pytest-xdist


def test_two_xdist_workers_write_one_file_with_every_row(tmp_path: Path, tiny_gpt2: Path, tiny_gpt_neo: Path):
    """2 models x 2 tasks on 2 workers (one model each): 4 rows, none lost or doubled; then compare there too."""
    project = Project(tmp_path, [tiny_gpt2, tiny_gpt_neo], {"antonyms": {"shots": 2}, "opposites": {"shots": 2}})
    path = tmp_path / "baseline.json"

    update = project.run("--icl-baseline=baseline.json", "--icl-baseline-update", "-n", "2", "-v")

    update.stdout.fnmatch_lines([f"baseline: wrote {path} (4 rows: 4 added, 0 refreshed, 0 kept)"])
    ran = ("PASSED", "FAILED", "UNDECIDED", "INCONCLUSIVE", "XFAIL", "XPASS")  # every outcome an item can have here
    workers = {line.split("]")[0].lstrip("[") for line in update.outlines if line.startswith("[gw") and any(word in line for word in ran)}
    assert workers == {"gw0", "gw1"}
    rows = json.loads(path.read_text())["rows"]
    assert sorted((r["model_id"], r["task"]) for r in rows) == [
        ("tiny-gpt-neo", "antonyms"), ("tiny-gpt-neo", "opposites"), ("tiny-gpt2", "antonyms"), ("tiny-gpt2", "opposites"),
    ]  # fmt: skip

    compare = project.run("--icl-baseline=baseline.json", "-n", "2", "-k", "baseline")

    compare.assert_outcomes(passed=4)
    compare.stdout.fnmatch_lines([f"baseline: 4 pair(s) compared with {path}: 4 passed"])
    assert json.loads(path.read_text())["rows"] == rows


def test_a_refresh_keeps_the_rows_of_pairs_it_did_not_run(stored: Stored):
    """Another task's row, stored earlier, survives an update that only runs this task."""
    other = copy.deepcopy(stored.row)
    other["task"] = "elsewhere"
    path = stored.project.copy(stored.path, "merge.json")
    data = json.loads(path.read_text())
    data["rows"].append(other)
    path.write_text(json.dumps(data))

    result = stored.project.run(f"--icl-baseline={path}", "--icl-baseline-update", "-k", "accuracy")

    result.stdout.fnmatch_lines([f"baseline: wrote {path} (2 rows: 0 added, 1 refreshed, 1 kept)"])
    rows = {r["task"]: r for r in json.loads(path.read_text())["rows"]}
    assert set(rows) == {TASK, "elsewhere"}
    assert rows["elsewhere"] == other

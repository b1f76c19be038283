"""``--icl-report DIR`` is a store of pairs: later runs add to it, a rerun resumes, nothing is lost.

* a run with another ``--icl-task`` into the same folder keeps the first run's pair;
* the same command again computes nothing (``resumed: N pair(s)``, the same rows and outcomes),
  and ``--icl-rerun`` computes the pair again and says it replaced the stored one;
* a run interrupted by a failing pair keeps the pair it finished, and the next run computes only
  the missing pair;
* two runs writing into one folder at the same time keep both pairs (the folder's lock);
* ``python -m pytest_icl diff`` flags a regression planted in one stored pair.

Progress lines go to stderr when it is not a terminal (as here): one per finished stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tests.integration.icl_project import INNER_TIMEOUT_S, LEAKY_VARIABLES, hermetic_env

THRESHOLDS = ("--icl-threshold", "accuracy=-1", "--icl-threshold", "simam=2")


def _rows(folder) -> dict:
    rows = json.loads((folder / "results.json").read_text(encoding="utf-8"))["rows"]
    return {(row["model_id"], row["task"]): row for row in rows}


def _computed(result) -> list[str]:
    """The pairs whose ICL stage ran (the plain progress lines on stderr)."""
    return sorted({line.split("] ", 1)[1].split(":")[0] for line in result.stderr.lines if ": ICL" in line and " done, " in line})


def test_runs_add_pairs_resume_and_rerun(project):
    project.task("antonyms")
    project.task("opposites")
    report = project.path / "rep"

    first = project.run("--icl-task", "antonyms", f"--icl-report={report}", *THRESHOLDS)
    second = project.run("--icl-task", "opposites", f"--icl-report={report}", *THRESHOLDS)

    assert first.ret == second.ret == 1, second.stdout.str()[-2000:]  # simam=2 fails
    rows = _rows(report)
    assert set(rows) == {("tiny-gpt2", "antonyms"), ("tiny-gpt2", "opposites")}  # the first run's pair is kept
    assert len(list((report / "pairs").glob("*.json"))) == 2
    assert _computed(second) == ["tiny-gpt2-opposites"]
    second.stderr.fnmatch_lines(["[[]pytest-icl[]] tiny-gpt2: model loaded, * s", "[[]pytest-icl[]] tiny-gpt2-opposites: ICL* done, * s"])

    again = project.run("--icl-task", "opposites", f"--icl-report={report}", *THRESHOLDS, "-rA")

    assert again.ret == 1
    assert _computed(again) == []  # nothing computed
    again.stdout.fnmatch_lines([f"resumed: 1 pair(s) from {report}*"])
    assert again.parseoutcomes().get("failed") == second.parseoutcomes().get("failed")
    assert again.parseoutcomes().get("passed") == second.parseoutcomes().get("passed")
    assert _rows(report) == rows  # the same rows, values and outcomes
    again.stdout.fnmatch_lines(["*simam*: failed*"])  # the stored verdict's message

    rerun = project.run("--icl-task", "opposites", f"--icl-report={report}", *THRESHOLDS, "--icl-rerun")

    assert rerun.ret == 1
    assert _computed(rerun) == ["tiny-gpt2-opposites"]
    rerun.stdout.fnmatch_lines(["replaced: 1 stored pair(s) with this run's result: tiny-gpt2-opposites (float32, k=4, seed *)"])
    assert "resumed:" not in rerun.stdout.str()
    assert set(_rows(report)) == set(rows)
    assert _rows(report)["tiny-gpt2", "opposites"]["values"] == rows["tiny-gpt2", "opposites"]["values"]


def test_control_items_resume_with_their_stored_verdicts(project):
    project.task("antonyms")
    report = project.path / "rep"
    args = ("--icl-controls", "seeds,output", "--icl-seeds", "2", "--icl-shuffled", "on", f"--icl-report={report}", *THRESHOLDS, "-v")

    first = project.run(*args)
    again = project.run(*args)

    assert _computed(first) == ["tiny-gpt2-antonyms"] and _computed(again) == []
    stored = _rows(report)["tiny-gpt2", "antonyms"]["controls"]
    for name in ("seeds", "output"):
        outcome = stored[name]["verdict"]["outcome"]
        assert outcome in ("passed", "failed", "undecided", "inconclusive")
        for run in (first, again):  # the same item outcome, computed or read back
            run.stdout.fnmatch_lines([f"*test_icl[[]tiny-gpt2-antonyms-{name}[]] {outcome.upper()}*"])
    assert first.parseoutcomes() == again.parseoutcomes()


def test_an_interrupted_run_resumes_with_the_missing_pair(project):
    project.task("antonyms")
    broken = project.task("opposites")
    train = broken.parent / "train.jsonl"
    saved = train.read_text()
    train.unlink()
    report = project.path / "rep"

    first = project.run(f"--icl-report={report}", *THRESHOLDS)

    assert first.ret == 1
    first.stdout.fnmatch_lines(["*train.jsonl*"])
    assert set(_rows(report)) == {("tiny-gpt2", "antonyms")}  # the finished pair is kept

    train.write_text(saved)
    second = project.run(f"--icl-report={report}", *THRESHOLDS)

    assert second.ret == 1, second.stdout.str()[-2000:]
    assert _computed(second) == ["tiny-gpt2-opposites"]  # only the missing pair
    second.stdout.fnmatch_lines([f"resumed: 1 pair(s) from {report}*"])
    rows = _rows(report)
    assert set(rows) == {("tiny-gpt2", "antonyms"), ("tiny-gpt2", "opposites")}
    assert rows["tiny-gpt2", "antonyms"]["properties"]["accuracy"] == "passed"


def _popen(project, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
    env.update(hermetic_env(project.path / "home"))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--icl-model={project.model}", "--icl-limit", "6", *args]
    return subprocess.Popen(command, cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_concurrent_runs_into_one_folder_keep_both_pairs(project):
    project.task("antonyms")
    project.task("opposites")
    report = project.path / "rep"

    runs = [_popen(project, "--icl-task", task, f"--icl-report={report}", *THRESHOLDS) for task in ("antonyms", "opposites")]
    outputs = [run.communicate(timeout=INNER_TIMEOUT_S)[0] for run in runs]

    assert [run.returncode for run in runs] == [1, 1], outputs[0][-2000:] + outputs[1][-2000:]
    assert set(_rows(report)) == {("tiny-gpt2", "antonyms"), ("tiny-gpt2", "opposites")}
    manifest = json.loads((report / "manifest.json").read_text())
    assert len(manifest["shards"]) == 2  # each run recorded (its own set of pairs)
    assert sorted(p.name for p in report.glob("samples_*.jsonl")) == [
        "samples_tiny-gpt2_antonyms.jsonl",
        "samples_tiny-gpt2_opposites.jsonl",
    ]


def test_diff_flags_a_planted_regression(project):
    from pytest_icl.report.baseline import COMPARED

    project.task("antonyms")
    old = project.path / "old"
    result = project.run(f"--icl-report={old}", *THRESHOLDS)
    assert result.ret == 1
    new = project.path / "new"
    shutil.copytree(old, new)
    (pair,) = (new / "pairs").glob("*.json")
    document = json.loads(pair.read_text())
    metric = next(name for name in COMPARED if name in document["row"]["values"])
    document["row"]["values"][metric] = -5.0
    document["row"]["intervals"][metric] = [-5.0, -5.0]
    pair.write_text(json.dumps(document))

    same = subprocess.run([sys.executable, "-m", "pytest_icl", "diff", str(old), str(old)], capture_output=True, text=True, check=False)
    planted = subprocess.run([sys.executable, "-m", "pytest_icl", "diff", str(old), str(new)], capture_output=True, text=True, check=False)

    assert same.returncode == 0, same.stdout + same.stderr
    assert planted.returncode == 1, planted.stdout + planted.stderr
    assert metric in planted.stdout and "antonyms" in planted.stdout

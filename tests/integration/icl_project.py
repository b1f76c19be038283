"""Helpers for the integration tests: task projects, hermetic environments, the shared suite run.

See conftest.py for the fixtures and for why the tests are built the way they are.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

INNER_TIMEOUT_S = 300  # a hung inner run fails its test instead of hanging the suite

# (word, antonym): 8 demonstrations' worth of training rows and 8 eval rows.
PAIRS = (
    ("hot", "cold"), ("big", "small"), ("happy", "sad"), ("early", "late"),
    ("open", "closed"), ("up", "down"), ("fast", "slow"), ("light", "dark"),
    ("old", "new"), ("good", "bad"), ("yes", "no"), ("true", "false"),
    ("one", "two"), ("rain", "sun"), ("sports", "food"), ("positive", "negative"),
)  # fmt: skip


def antonym_rows(pairs=PAIRS) -> list[dict]:
    """Two-way choices; the gold answer alternates between first and second place."""
    rows = []
    for index, (word, antonym) in enumerate(pairs):
        choices = [antonym, word] if index % 2 == 0 else [word, antonym]
        rows.append({"word": word, "choices": choices, "label": choices.index(antonym)})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def task_config(name: str, *, icl: dict | None = None, **overrides) -> dict:
    """An lm-eval multiple_choice config reading train.jsonl / test.jsonl beside the YAML."""
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": "train.jsonl", "test": "test.jsonl"}},
        "output_type": "multiple_choice",
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        "fewshot_config": {"sampler": "first_n"},
        "doc_to_text": "Word: {{word}}\nAntonym:",
        "doc_to_target": "label",
        "doc_to_choice": "choices",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "metadata": {"version": 1.0, "icl": {"shots": 4, **(icl or {})}},
    }
    config.update(overrides)
    return config


def write_task(tasks_folder: Path, name: str, *, rows: list[dict] | None = None, icl: dict | None = None, **overrides) -> Path:
    """``tasks_folder/<name>/<name>.yaml`` with its jsonl data; returns the YAML path."""
    folder = Path(tasks_folder) / name
    rows = antonym_rows() if rows is None else rows
    half = len(rows) // 2
    write_jsonl(folder / "train.jsonl", rows[:half])
    write_jsonl(folder / "test.jsonl", rows[half:])
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task_config(name, icl=icl, **overrides), sort_keys=False), encoding="utf-8")
    return path


def hermetic_env(home: Path) -> dict[str, str]:
    """Caches in ``home``, no network, no settings leaking in from the outer run."""
    return {
        "HF_HOME": str(home / "hf"),
        "HF_DATASETS_CACHE": str(home / "hf" / "datasets"),
        "PYTEST_ICL_CACHE": str(home / "pytest-icl"),
        "HF_HUB_OFFLINE": "1",  # also skips the plugin's 2 s hub probe
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


# Outer variables that would change what an inner run does or prints. CI and BUILD_NUMBER make
# pytest >= 8 print its short summary untruncated, so an inner run's output would differ between a
# developer's terminal and a CI machine.
LEAKY_VARIABLES = (
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "TRANSFORMERS_OFFLINE",
    "CI",
    "BUILD_NUMBER",
)


# The inner projects' ini. A tiny random model has no ICL effect, so the gates would make every
# similarity item inconclusive; the wiring tests here force outcomes with margins (accuracy=-1
# passes, NAME=2 fails) and need the gates open. One draw without the shuffled-label control keeps
# each inner run fast. The defaults themselves (3 draws, shuffled control, gates on) are run on
# purpose, with explicit flags, in test_verdict_outcomes.py; flags beat the ini.
TEST_INI = "[pytest]\nicl_seeds = 1\nicl_shuffled = off\nicl_accuracy_gate = off\n"


class IclProject:
    """A pytester project plus the defaults every inner run needs."""

    def __init__(self, pytester: pytest.Pytester, model: Path):
        self.pytester = pytester
        self.path = pytester.path
        self.model = model
        pytester.makeini(TEST_INI)  # also anchors rootdir, so the default task folder is <project>/tasks

    def task(self, name: str = "antonyms", *, folder: str = "tasks", **kwargs) -> Path:
        return write_task(self.path / folder, name, **kwargs)

    def run(self, *args: str, model: Path | str | None = "default", limit: int | None = 6) -> pytest.RunResult:
        """``pytest ARGS`` in a subprocess, with ``--icl-model`` (the tiny GPT-2 unless told) and ``--icl-limit``."""
        base = ["-p", "no:cacheprovider"]
        if model is not None:
            # "--icl-model=PATH", never "--icl-model PATH": pytest picks its rootdir and ini file before
            # plugin options are known, so a separate existing path would count as a test path there.
            base.append(f"--icl-model={self.model if model == 'default' else model}")
        if limit is not None:
            base += ["--icl-limit", str(limit)]
        return self.pytester.runpytest_subprocess(*base, *args, timeout=INNER_TIMEOUT_S)


# ---- the shared suite runs: 2 models x 2 tasks, serial and with xdist


SUITE_TASKS = ("antonyms", "opposites")
SUITE_MODELS = ("tiny-gpt2", "tiny-gpt-neo")
SUITE_PROPERTIES = ("accuracy", "rec2ftp", "simaou", "simam", "kendall")
# accuracy always passes and simam always fails; the other three are whatever the tiny models give.
SUITE_THRESHOLDS = ("--icl-threshold", "accuracy=-1", "--icl-threshold", "simam=2")


@dataclass
class SuiteRun:
    result: pytest.RunResult
    report: Path  # the --icl-report folder
    args: list[str]

    @property
    def output(self) -> str:
        return self.result.stdout.str()


def run_pytest(folder: Path, *args: str) -> pytest.RunResult:
    """``pytester.runpytest_subprocess`` for a project that outlives one test (module or session scope).

    Same command line (``python -m pytest --basetemp=...``) and the same hermetic environment as the
    ``project`` fixture gives; HOME is the project's ``home`` folder, as pytester sets HOME too.
    """
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
    env.update(hermetic_env(folder / "home"), HOME=str(folder / "home"))
    if not (folder / "pytest.ini").exists():
        (folder / "pytest.ini").write_text(TEST_INI)  # also anchors rootdir: the default task folder is <folder>/tasks
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", f"--basetemp={folder / 'basetemp'}", "-p", "no:cacheprovider", *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=INNER_TIMEOUT_S, check=False,
    )  # fmt: skip
    return pytest.RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(), time.perf_counter() - start)


def run_suite(folder: Path, models: list[Path], extra: list[str]) -> SuiteRun:
    """The 2 models x 2 tasks suite with ``--icl-report``; session-scoped so several test files share it."""
    for name in SUITE_TASKS:
        write_task(folder / "tasks", name)
    report = folder / "report"
    args = ["-v", "--icl-limit", "6", f"--icl-report={report}", *SUITE_THRESHOLDS, *extra]
    args += [f"--icl-model={model}" for model in models]
    return SuiteRun(result=run_pytest(folder, *args), report=report, args=args)


def suite_ids() -> list[str]:
    """Node ids of the suite run, in the order a serial run executes them (grouped by model)."""
    return [
        f"tasks/{task}/{task}.yaml::test_icl[{model}-{task}-{prop}]"
        for model in SUITE_MODELS
        for task in SUITE_TASKS
        for prop in SUITE_PROPERTIES
    ]


@dataclass(frozen=True)
class Reported:
    node: str
    outcome: str  # PASSED, FAILED, ERROR, SKIPPED, XFAIL, XPASS
    worker: str | None  # gw0, gw1, ... under xdist


_WORDS = "PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS|UNDECIDED|INCONCLUSIVE"  # the last two: verdicts that are neither
_SERIAL_LINE = re.compile(rf"^(\S+::\S+) ({_WORDS})\b")
_XDIST_LINE = re.compile(rf"^\[(gw\d+)\] \[\s*\d+%\] ({_WORDS}) (\S+::\S+)")


def reported(result: pytest.RunResult) -> list[Reported]:
    """The per-item lines of a ``-v`` run, in the order they were printed (serial or xdist format)."""
    found = []
    for line in result.outlines:
        if match := _SERIAL_LINE.match(line):
            found.append(Reported(match[1], match[2], None))
        elif match := _XDIST_LINE.match(line):
            found.append(Reported(match[3], match[2], match[1]))
    return found

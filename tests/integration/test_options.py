"""Command-line options and ini settings: CLI beats ini beats the task YAML (bad values: test_bad_inputs.py)."""

from __future__ import annotations

import json

import pytest


def test_ini_settings_apply_and_the_command_line_wins(project):
    """Precedence: command line > ini > the task YAML's ``icl:`` key (which says shots: 4)."""
    project.task()
    project.pytester.makeini(
        f"""
        [pytest]
        icl_model = {project.model}
        icl_limit = 3
        icl_shots = 3
        icl_seed = 7
        icl_lr = 0.05
        icl_report = out
        icl_threshold = accuracy=-1
        """
    )

    result = project.run("--icl-shots", "2", "--icl-position", "prompt", "-k", "accuracy", model=None, limit=None)

    result.assert_outcomes(passed=1, deselected=4)
    (row,) = json.loads((project.path / "out" / "results.json").read_text())["rows"]
    assert row["model_id"] == "tiny-gpt2"
    assert (row["shots"], row["eval"], row["seed"], row["lr"], row["position"]) == (2, 3, 7, 0.05, "prompt")
    assert row["counts"]["shots"] == 2  # two FT steps were taken
    result.stdout.fnmatch_lines(["tiny-gpt2  antonyms  2  3  *"])


def test_icl_tasks_ini_names_the_task_folders(project):
    project.task("first", folder="suites/a")
    project.task("second", folder="suites/b")
    project.task("elsewhere", folder="tasks")  # the default folder, replaced by the ini setting
    project.pytester.makeini("[pytest]\nicl_tasks = suites/a suites/b\n")

    result = project.run("--collect-only", "-q")

    collected = [line for line in result.outlines if "::" in line]
    assert [line.split("::")[0] for line in collected[::5]] == ["suites/a/first/first.yaml", "suites/b/second/second.yaml"]
    result.stdout.fnmatch_lines(["10 tests collected*"])


def test_default_task_folder_is_rootdir_tasks(project):
    """Only task YAMLs under <rootdir>/tasks are collected; ``_*.yaml`` files are include-only bases."""
    project.task()
    project.task("outside", folder="other")
    (project.path / "tasks" / "_base.yaml").write_text("output_type: multiple_choice\n")
    (project.path / "tasks" / "antonyms" / "notes.txt").write_text("task: not yaml\n")

    result = project.run("--collect-only", "-q")

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["tasks/antonyms/antonyms.yaml::test_icl[[]tiny-gpt2-antonyms-accuracy]", "5 tests collected*"])
    result.stdout.no_fnmatch_line("*outside*")
    result.stdout.no_fnmatch_line("*_base*")

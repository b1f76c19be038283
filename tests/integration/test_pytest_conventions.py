"""pytest's own conventions hold for generated items: --lf, --durations, JUnit, ini paths, foreign projects."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.icl_project import INNER_TIMEOUT_S, LEAKY_VARIABLES, hermetic_env


def test_last_failed_reruns_only_the_failure(project):
    """A property fails (simam margin 2 is unreachable); ``--lf`` then runs that item alone."""
    project.task()
    common = ["-p", "cacheprovider", f"--icl-model={project.model}", "--icl-limit", "4", "--icl-threshold", "simam=2",
              "--icl-threshold", "accuracy=-1", "--icl-accuracy-gate", "off"]  # fmt: skip

    first = project.pytester.runpytest_subprocess(*common, "-k", "simam or accuracy", timeout=INNER_TIMEOUT_S)
    again = project.pytester.runpytest_subprocess(*common, "--lf", "-v", timeout=INNER_TIMEOUT_S)

    first.assert_outcomes(failed=1, passed=1, deselected=3)
    again.stdout.fnmatch_lines(["*run-last-failure: rerun previous 1 failure*", "*test_icl[[]tiny-gpt2-antonyms-simam[]] FAILED*"])
    assert "accuracy" not in "".join(line for line in again.outlines if "::test_icl[" in line)


@pytest.fixture(scope="module")
def junit_run(tmp_path_factory, tiny_gpt2) -> tuple[pytest.RunResult, Path]:
    from tests.integration.icl_project import run_pytest, write_task

    folder = tmp_path_factory.mktemp("junit")
    write_task(folder / "tasks", "antonyms")
    xml = folder / "junit.xml"
    result = run_pytest(folder, f"--icl-model={tiny_gpt2}", "--icl-limit", "4", f"--junitxml={xml}", "--durations=2", "-vv")
    return result, xml


VERDICT_KEYS = {"icl.outcome", "icl.estimate", "icl.ci_low", "icl.ci_high", "icl.margin", "icl.draws"}


def test_junit_keeps_each_item_s_verdict_under_the_default_family(junit_run):
    """pytest's default junit_family is xunit2. pytest 9.2 writes an item's user_properties as the
    testcase's <properties> under every family (what Jenkins and GitLab read); only the
    record_property fixture, which the plugin does not use, warns that xunit2 does not allow them."""
    result, xml = junit_run
    cases = list(ET.parse(xml).getroot().iter("testcase"))
    assert len(cases) == 5 and all(case.get("file") is None for case in cases)  # xunit2: no xunit1 attributes
    for case in cases:
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert VERDICT_KEYS <= set(properties), case.get("name")
        assert properties["icl.outcome"] in ("passed", "failed", "undecided", "inconclusive")
        for key in VERDICT_KEYS - {"icl.outcome"}:
            float(properties[key])
    assert "incompatible with junit_family" not in result.stdout.str()


def test_junit_gets_headline_scalars_once_per_pair(junit_run):
    _, xml = junit_run
    cases = ET.parse(xml).getroot().iter("testcase")
    with_properties = []
    for case in cases:
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        if properties:
            with_properties.append((case.get("name"), properties))
    headline = [(name, props) for name, props in with_properties if "icl.acc_zsl" in props]
    assert len(headline) == 1  # one pair, one item carries its headline numbers
    assert all("icl.outcome" in props for _, props in with_properties)  # every property item its verdict
    _, properties = headline[0]
    properties = {k: v for k, v in properties.items() if k != "icl.outcome"}
    assert {"icl.acc_zsl", "icl.acc_icl", "icl.acc_ft", "icl.simaou", "icl.kendall"} <= set(properties)
    for value in properties.values():
        float(value)  # JSON scalars, not a row's repr


def test_durations_show_the_analysis_in_the_setup_of_the_pair_s_first_item(junit_run):
    result, _ = junit_run
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "slowest 2 durations" in line)
    slowest = lines[start + 1]
    assert " setup " in slowest and "test_icl[tiny-gpt2-antonyms-" in slowest


def test_ini_model_paths_are_relative_to_the_ini_file(tmp_path, tiny_gpt2):
    from tests.integration.icl_project import write_task

    write_task(tmp_path / "tasks", "antonyms")
    (tmp_path / "models").mkdir()
    os.symlink(tiny_gpt2, tmp_path / "models" / "tiny-gpt2")
    (tmp_path / "pytest.ini").write_text("[pytest]\nicl_model = models/tiny-gpt2\nicl_limit = 4\n")
    (tmp_path / "sub").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
    env.update(hermetic_env(tmp_path / "home"))

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", str(tmp_path / "tasks")],
        cwd=tmp_path / "sub", env=env, capture_output=True, text=True, timeout=INNER_TIMEOUT_S, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_icl[tiny-gpt2-antonyms-accuracy]" in done.stdout


def test_a_foreign_project_is_untouched(pytester):
    """An Ansible-style tasks/ folder and other YAML files: its own tests run, nothing of ours is collected."""
    pytester.makeini("[pytest]\n")
    (pytester.path / "tasks").mkdir()
    (pytester.path / "tasks" / "main.yml").write_text("- name: install nginx\n  apt: {name: nginx}\n")
    (pytester.path / "tasks" / "vars.yaml").write_text("hosts: all\nvars: {port: 80}\n")
    (pytester.path / "config.yaml").write_text("{{ templated: not yaml\n")
    pytester.makepyfile(test_app="def test_app():\n    assert 1 + 1 == 2\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*ERROR*")
    result.stdout.no_fnmatch_line("*test_icl*")


def test_named_task_file_wins_over_the_lm_eval_builtin_of_the_same_name(project):
    """``--icl-task sst2`` is the project's sst2.yaml (named on the command line, not collected)."""
    project.task("sst2", folder="suites")  # outside the collected paths
    project.pytester.makeini("[pytest]\nicl_tasks = suites\n")
    (project.path / "elsewhere").mkdir()

    result = project.run("--collect-only", "--icl-task", "sst2", "elsewhere")

    result.stdout.fnmatch_lines(["*<IclItem test_icl[[]tiny-gpt2-sst2-accuracy[]]>*"])
    result.stdout.fnmatch_lines(["*<TaskFile suites/sst2/sst2.yaml>*"])
    result.stdout.fnmatch_lines(
        ["icl: --icl-task sst2 is the task file *suites/sst2/sst2.yaml; lm-eval's built-in task 'sst2' is not used"]
    )


# ---- pytest 9's native TOML configuration: typed values


def _table(result: pytest.RunResult) -> list[str]:
    """The results table's row and the verdict lines: what a run computed, without its timings."""
    return [line for line in result.outlines if line.startswith("tiny-gpt2  ")]


def test_typed_toml_values_give_the_run_the_flags_give(project):
    """``[tool.pytest]`` keeps TOML's types (``icl_shots = 2``, ``icl_lr = 0.01``, ``icl_shuffled = false``);
    a string ini key would refuse them. A list option takes a TOML list."""
    project.task()
    common = ("-k", "accuracy", "--icl-limit", "4")
    flags = project.run(*common, "--icl-shots", "2", "--icl-lr", "0.01", "--icl-threshold", "accuracy=-1", limit=None)
    (project.path / "tox.ini").unlink()  # the TEST_INI pytester.makeini wrote
    (project.path / "pyproject.toml").write_text(
        f"[tool.pytest]\nicl_model = [{str(project.model)!r}]\nicl_shots = 2\nicl_lr = 0.01\nicl_seeds = 1\n"
        "icl_shuffled = false\nicl_accuracy_gate = false\nicl_threshold = ['accuracy=-1']\n"
    )

    toml = project.run(*common, model=None, limit=None)

    assert flags.ret == toml.ret == pytest.ExitCode.OK, toml.stdout.str()[-2000:]
    assert _table(toml) == _table(flags) != []  # the row and the verdicts, number for number
    toml.stdout.fnmatch_lines(["*configfile: pyproject.toml*", "icl: antonyms: k = 2 (--icl-shots / icl_shots)*"])


def test_the_ini_table_of_pyproject_still_takes_strings(project):
    project.task()
    (project.path / "tox.ini").unlink()  # the TEST_INI pytester.makeini wrote
    (project.path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nicl_shots = "2"\nicl_seeds = "1"\n')

    result = project.run("--collect-only")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    result.stdout.fnmatch_lines(["icl: antonyms: k = 2 (--icl-shots / icl_shots)*"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("icl_shots = 0", "icl_shots (ini): '0' is not allowed; give a whole number ≥ 1"),  # 0 == False: not 'not given'
        ("icl_shuffled = 'maybe'", "icl_shuffled (ini): 'maybe' is not allowed; give on or off"),
        ("icl_rerun = 'perhaps'", "icl_rerun (ini): 'perhaps' is not allowed; give on or off"),  # a flag: true, false, 'on', 'off'
    ],
)
def test_a_bad_toml_value_is_a_usage_error(project, line, message):
    project.task()
    (project.path / "tox.ini").unlink()  # the TEST_INI pytester.makeini wrote
    (project.path / "pyproject.toml").write_text(f"[tool.pytest]\n{line}\n")

    result = project.run("--collect-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


# ---- --icl-task: what it leaves out, and names it does not know


def test_items_of_other_tasks_are_reported_as_deselected(project):
    project.task("antonyms")
    project.task("opposites")

    result = project.run("--collect-only", "-q", "--icl-task", "antonyms")

    assert result.ret == pytest.ExitCode.OK
    assert result.parseoutcomes()["deselected"] == 5  # opposites' five property items
    result.stdout.fnmatch_lines(["5/10 tests collected (5 deselected)*"])


def test_an_unknown_task_name_is_a_usage_error_naming_close_ones(project):
    project.task("antonyms")

    result = project.run("--icl-task", "antonym")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --icl-task: no task named 'antonym' (did you mean antonyms*?): no task file*"])
    assert "model loaded" not in result.stderr.str()  # refused at collection, before any model loads
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_task_name_two_files_define_is_refused_at_start_under_xdist_too(project):
    """Checked on the controller before the workers collect: exit 4 with the message, not an INTERNALERROR."""
    project.task("antonyms")
    project.task("antonyms", folder="tasks/copy")

    result = project.run("-n", "2", "--icl-task", "antonyms")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --icl-task: task 'antonyms' is defined by 2 files: *; rename all but one."])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


# ---- the header: each task's notes, once


def test_the_header_says_when_k_is_overridden_once_per_task(project):
    project.task("antonyms")
    project.task("opposites")

    result = project.run("--collect-only", "--icl-shots", "2", "--icl-model=smollm2-135m")  # two models, never loaded here

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*20 tests collected*"])

    notes = [line for line in result.outlines if line.startswith("icl: ")]
    assert notes == [
        f"icl: {task}: k = 2 (--icl-shots / icl_shots); the YAML sets no num_fewshot, so lm-eval runs it zero-shot (give --num_fewshot 2 to compare)"
        for task in ("antonyms", "opposites")
    ]

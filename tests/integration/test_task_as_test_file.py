"""A user's test file: ``@pytest.mark.icl_task(...)`` plus the ``icl_analysis`` fixture and its own assertions."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.integration.icl_project import reported, run_pytest, write_task

EXAMPLES = Path(__file__).parents[1] / "examples"

USER_TESTS = """
    import pytest

    SEEN = []

    @pytest.mark.icl_task("tasks/antonyms/antonyms.yaml")
    def test_accuracy_is_a_fraction(icl_analysis, icl_session):
        SEEN.append(icl_analysis)
        assert 0 <= icl_analysis.values["acc_icl"] <= 1
        assert icl_analysis.task.name == "antonyms" and icl_analysis.counts["eval"] == 6
        assert icl_session.options.limit == 6

    @pytest.mark.icl_task("tasks/antonyms/antonyms.yaml")
    def test_check_gives_a_verdict_and_a_message(icl_analysis, icl_model):
        assert SEEN == [icl_analysis]  # the same analysis object: the task ran once for both tests
        check = icl_analysis.check("simaou")
        assert check.message.startswith("SimAOU above the fair random-update SimAOU: ")
        assert check.passed == (check.outcome == "passed") and check.outcome in ("passed", "failed", "undecided", "inconclusive")
        low, high = check.interval
        assert check.outcome != "passed" or low > check.margin
        assert icl_analysis.check("accuracy", margin=-1).passed
        assert icl_model.spec.id == icl_analysis.model_id == "tiny-gpt2"

    def test_an_ordinary_test(request):
        assert request.node.get_closest_marker("icl_task") is None

    @pytest.mark.icl_task({
        "task": "inline",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": "checks/tasks/antonyms/train.jsonl", "test": "checks/tasks/antonyms/test.jsonl"}},
        "output_type": "multiple_choice",
        "training_split": "train",
        "test_split": "test",
        "doc_to_text": "{{word}} ->",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metadata": {"icl": {"shots": 2}},
    })
    def test_inline_config(icl_analysis):
        assert icl_analysis.task.name == "inline"
        assert len(icl_analysis.task.demonstrations) == 2
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_gpt2) -> pytest.RunResult:
    """One run (~15 s) of both the user file above (in checks/) and the shipped example (in examples/).

    Neither folder is <rootdir>/tasks, so their task YAMLs generate no test_icl items.
    """
    folder = tmp_path_factory.mktemp("user-tests")
    write_task(folder / "checks" / "tasks", "antonyms")
    (folder / "checks" / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    shutil.copytree(EXAMPLES, folder / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    # The inline config's relative data_files are read from the working directory: the folder.
    return run_pytest(folder, f"--icl-model={tiny_gpt2}", "--icl-limit", "6", "-v", "checks", "examples")


@pytest.fixture(scope="module")
def outcomes(run) -> dict[str, str]:
    return {line.node: line.outcome for line in reported(run)}


def test_marked_tests_get_the_shared_analysis(outcomes):
    user = {node.removeprefix("checks/test_user.py::"): outcome for node, outcome in outcomes.items() if node.startswith("checks/")}
    assert user == {
        "test_an_ordinary_test": "PASSED",
        "test_accuracy_is_a_fraction[tiny-gpt2]": "PASSED",
        "test_check_gives_a_verdict_and_a_message[tiny-gpt2]": "PASSED",
        "test_inline_config[tiny-gpt2]": "PASSED",
    }


def test_tests_without_a_model_run_first_then_each_model_in_turn(outcomes):
    assert list(outcomes)[0] == "checks/test_user.py::test_an_ordinary_test"


def test_every_analysed_task_gets_a_row_in_the_table(run):
    run.stdout.fnmatch_lines(["*= ICL vs finetuning =*", "model * task *"])
    lines = run.outlines[: next((i for i, line in enumerate(run.outlines) if "verdicts: metric" in line), len(run.outlines))]
    table = sorted(line.split()[1:3] for line in lines if line.startswith("tiny-gpt2  "))
    assert table == [["antonyms", "4"], ["inline", "2"], ["mytask", "4"], ["mytask_question", "2"]]
    assert all(line.rstrip().endswith("  -") for line in lines if line.startswith("tiny-gpt2  "))  # no property items


def test_example_runs_on_a_model(run, outcomes):
    example = {
        node.removeprefix("examples/test_mytask.py::"): outcome for node, outcome in outcomes.items() if node.startswith("examples/")
    }
    assert len(example) == 7
    for name in (
        "test_the_task_is_the_one_we_meant[tiny-gpt2]",
        "test_accuracies_are_fractions_of_the_eval_set[tiny-gpt2]",
        "test_an_inline_task_is_analysed_too[tiny-gpt2]",
    ):
        assert example[name] == "PASSED", name
    claims = {name: outcome for name, outcome in example.items() if "finetuning" in name or "margin" in name}
    # a tiny random model: any; the example skips undecided and inconclusive claims with the reason
    assert len(claims) == 4 and set(claims.values()) <= {"PASSED", "FAILED", "SKIPPED"}
    failed = sum(outcome == "FAILED" for outcome in claims.values())
    assert run.stdout.str().count(": failed; ") >= failed  # each failure says which claim and why


def test_icl_analysis_without_a_task_marker_says_what_is_missing(project):
    project.pytester.makepyfile(test_user="def test_unmarked(icl_analysis):\n    pass\n")

    result = project.run()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*icl_analysis needs @pytest.mark.icl_task(TASK)*"])


@pytest.fixture
def example(project):
    """tests/examples copied into the project (as examples/, outside the default task folder)."""
    shutil.copytree(EXAMPLES, project.path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return project


def test_example_is_skipped_unless_a_model_is_named(example):
    """So that ``pytest tests`` in this repository never runs it on the default SmolLM2 by accident;
    the summary says how to run it, without -rs."""
    result = example.run("examples", model=None)

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=7)
    result.stdout.fnmatch_lines(["7 example test(s) skipped, no model named; run them with: pytest examples --icl-model smollm2-135m"])

    listed = example.run("-rs", "examples", model=None)

    listed.stdout.fnmatch_lines(
        ["SKIPPED [[]*] examples/test_mytask.py:*: example: needs a model named; run: pytest examples --icl-model smollm2-135m"]
    )

"""Example: a task as a test file, with your own assertions.

pytest-icl turns every task YAML under ``tasks/`` into generated tests, one per property
(``test_icl[<model>-<task>-<property>]``). When you want your own assertions instead, write a
test file like this one: mark a test with the task and ask for the ``icl_analysis`` fixture.

Run it with the model(s) you want to test::

    pytest tests/examples --icl-model smollm2-135m              # the embedded model: 4 passed, 3 skipped
    pytest tests/examples --icl-model gpt2 --icl-model=./my-model   # an alias, hub id or local folder; each test runs once per model

Without ``--icl-model`` these tests are skipped, saying how to run them (``conftest.py`` here), so
that ``pytest tests`` never loads a real model by accident.

The task (``tasks/mytask``) is a made-up rule that the demonstrations teach: zero-shot SmolLM2-135M
gets none right, with 4 demonstrations in the prompt most. FT, one SGD step per demonstration, learns
nothing there, so the similarity claims are inconclusive (skipped with the reason): there is no
learning on the FT side to compare with. pytest-icl's own suite runs this file on a tiny random model
(``tests/integration/test_task_as_test_file.py``), whose accuracy is at chance: that is why the
property tests below may fail there, while the other tests must pass on any model.

What the fixture gives (an ``IclResult``):

* ``icl_analysis.values``: every metric and its control, e.g. ``acc_zsl``, ``acc_icl``, ``acc_ft``,
  ``simaou`` and ``simaou_fair_random``, ``simam_before``/``simam_after``, ``kendall``/``kendall_random``;
* ``icl_analysis.intervals``: 95 % bootstrap intervals of those metrics over the eval examples;
* ``icl_analysis.layers``: per-layer curves; ``icl_analysis.counts``: eval size, shots, fixes, ...;
* ``icl_analysis.task``: the frozen task (demonstrations, eval examples, prompts, settings);
* ``icl_analysis.check(name, margin=None)``: one property (``accuracy``, ``rec2ftp``, ``simaou``,
  ``simam``, ``kendall``) decided over the demonstration draws: ``.outcome`` (passed, failed,
  undecided or inconclusive), ``.estimate`` and ``.interval`` of metric − control, ``.passed``
  and a readable ``.message``.

The analysis runs once per task x model and is shared by every test marked with the same task.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).parent

# A task marker takes a YAML path (relative to this file), an lm-eval task name, or a config dict.
mytask = pytest.mark.icl_task("tasks/mytask/mytask.yaml")


@mytask
def test_the_task_is_the_one_we_meant(icl_analysis):
    task = icl_analysis.task
    assert task.name == "mytask"
    assert len(task.demonstrations) == task.settings.shots == 4
    assert icl_analysis.counts["eval"] == len(task.eval_examples)
    # ICL sees the k demonstrations before each query; zero-shot sees the query alone.
    example = task.eval_examples[0]
    assert example.text.endswith(" ->")
    assert task.prompt(example).endswith(example.text)
    assert task.prompt(example).count(" ->") == 4 + 1


@mytask
def test_accuracies_are_fractions_of_the_eval_set(icl_analysis):
    n, draws = icl_analysis.counts["eval"], icl_analysis.counts.get("draws", 1)
    assert icl_analysis.values["acc_zsl"] * n == pytest.approx(round(icl_analysis.values["acc_zsl"] * n))  # ZSL runs once
    for setting in ("zsl", "icl", "ft"):
        accuracy = icl_analysis.values[f"acc_{setting}"]  # ICL and FT: the mean over the demonstration draws
        assert 0.0 <= accuracy <= 1.0
        assert accuracy * n * draws == pytest.approx(round(accuracy * n * draws))  # whole examples right in each draw


@mytask
@pytest.mark.parametrize("name", ["simaou", "simam", "kendall"])
def test_icl_behaves_like_finetuning(icl_analysis, name):
    """The claims of Dai et al. (2023), each against its control; the margins default to 0."""
    check = icl_analysis.check(name)
    _skip_unless_decided(check)
    assert check.passed, check.message


@mytask
def test_icl_helps_by_a_clear_margin(icl_analysis):
    """A stricter claim than the default: ICL beats zero-shot by 10 points."""
    check = icl_analysis.check("accuracy", margin=0.10)
    _skip_unless_decided(check)
    assert check.passed, check.message


def _skip_unless_decided(check):
    # Undecided (the interval straddles the margin) and inconclusive (a gate is closed: no ICL
    # effect, or FT learned nothing) are neither a pass nor a failure: say so, with the numbers.
    if check.outcome in ("undecided", "inconclusive"):
        pytest.skip(f"{check.outcome}: {check.message}")


# The same task given inline, e.g. to try another prompt format without a new YAML file.
# Relative data_files in an inline config are read from the working directory, so anchor them here.
inline_task = pytest.mark.icl_task(
    {
        "task": "mytask_question",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {split: str(HERE / f"tasks/mytask/{split}.jsonl") for split in ("train", "test")}},
        "output_type": "multiple_choice",
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        "doc_to_text": "Which comes first in '{{syllables}}'?\nAnswer:",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metadata": {"icl": {"shots": 2}},
    }
)


@inline_task
def test_an_inline_task_is_analysed_too(icl_analysis, icl_model):
    assert icl_analysis.task.name == "mytask_question"
    assert len(icl_analysis.task.demonstrations) == 2
    assert icl_analysis.model_id == icl_model.spec.id  # the model this test runs for
